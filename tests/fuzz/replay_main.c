/*
** replay_main.c
** Replays a fuzz target's committed corpus without libFuzzer, so
** `make test` checks every input found so far still decodes without a
** crash (and, under the sanitizer build, without memory errors).
** Usage: replay_NAME DIR  -> one "ok - ..." line per file.
*/
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main (int argc, char **argv) {
  DIR *d;
  struct dirent *e;
  int n = 0;
  if (argc < 2) {
    fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  d = opendir(argv[1]);
  if (d == NULL) {
    printf("skip - replay %s: no corpus directory\n", argv[1]);
    return 0;
  }
  while ((e = readdir(d)) != NULL) {
    char path[4096];
    FILE *f;
    uint8_t *buf;
    long size;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof(path), "%s/%s", argv[1], e->d_name);
    f = fopen(path, "rb");
    if (f == NULL)
      continue;
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(size > 0 ? (size_t)size : 1);
    if (buf != NULL && fread(buf, 1, (size_t)size, f) == (size_t)size) {
      LLVMFuzzerTestOneInput(buf, (size_t)size);
      n++;
    }
    free(buf);
    fclose(f);
  }
  closedir(d);
  printf("ok - replayed %d corpus inputs from %s\n", n, argv[1]);
  return 0;
}
