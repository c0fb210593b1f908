/*
** test_cdc_spill.c
** Transaction buffers (src/cdc/spill.c): records stay in memory under
** the cap, move to an unlinked file past it, read back in order across
** the file/memory boundary (including records larger than the read
** chunk), and truncate at a recorded offset (subtransaction abort) in
** either part.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>

#include "cdc/spill.h"
#include "test.h"
#include "util/buf.h"

static char dir[] = "/tmp/pgtide-spilltest.XXXXXX";

/* Record i: a deterministic pattern of a deterministic length. */
static size_t rec_len (int i) {
  if (i % 97 == 5)
    return SPILL_CHUNK + 12345u;   /* bigger than a read chunk */
  return (size_t)(i * 37 % 3000);
}

static void rec_fill (Buf *b, int i) {
  size_t n = rec_len(i), k;
  buf_reset(b);
  for (k = 0; k < n; k++)
    buf_putc(b, (char)((i * 7 + (int)k) & 0xff));
}

static int files_in_dir (void) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

static int read_all (SpillBuf *sb, int first, int count) {
  SpillReader r;
  const uint8_t *rec;
  size_t len;
  CdcError err;
  Buf want = BUF_INIT;
  int i = first, got, bad = 0;
  spill_reader_init(&r, sb);
  while ((got = spill_read(&r, &rec, &len, &err)) == 1) {
    rec_fill(&want, i);
    if (len != want.len || (len > 0 && memcmp(rec, want.data, len) != 0)) {
      fprintf(stderr, "record %d differs (len %zu, want %zu)\n", i, len, want.len);
      bad++;
    }
    i++;
  }
  if (got < 0) {
    fprintf(stderr, "read error: %s\n", err.message);
    bad++;
  }
  spill_reader_free(&r);
  buf_free(&want);
  if (i - first != count) {
    fprintf(stderr, "read %d records, want %d\n", i - first, count);
    bad++;
  }
  return bad;
}

static void test_memory_only (void) {
  SpillBuf sb;
  CdcError err;
  Buf rec = BUF_INIT;
  int i;
  spill_init(&sb, dir, 64u << 20);
  for (i = 0; i < 50; i++) {
    if (i % 97 == 5)
      continue;
    rec_fill(&rec, i);
    CHECK_INT(spill_append(&sb, rec.data, rec.len, &err), 0);
  }
  CHECK_INT(spill_spilled(&sb), 0);
  CHECK_INT(sb.nrecords, 49);
  /* skip record 5 when reading: build the same sequence */
  spill_free(&sb);
  spill_init(&sb, dir, 64u << 20);
  for (i = 6; i < 50; i++) {
    rec_fill(&rec, i);
    CHECK_INT(spill_append(&sb, rec.data, rec.len, &err), 0);
  }
  CHECK_INT(read_all(&sb, 6, 44), 0);
  spill_free(&sb);
  buf_free(&rec);
}

static void test_spilled (void) {
  SpillBuf sb;
  CdcError err;
  Buf rec = BUF_INIT;
  int i, n = 2000;
  uint64_t off_at_1500 = 0, nrec_at_1500 = 0;
  spill_init(&sb, dir, 256u << 10);   /* 256 kB cap */
  for (i = 0; i < n; i++) {
    if (i == 1500) {
      off_at_1500 = spill_size(&sb);
      nrec_at_1500 = sb.nrecords;
    }
    rec_fill(&rec, i);
    CHECK_INT(spill_append(&sb, rec.data, rec.len, &err), 0);
  }
  CHECK_INT(spill_spilled(&sb), 1);
  CHECK(spill_mem(&sb) <= 2 * SPILL_CHUNK + 64);
  CHECK_INT(files_in_dir(), 0);        /* unlinked as soon as created */
  CHECK_INT(read_all(&sb, 0, n), 0);
  /* truncate inside the file part */
  CHECK_INT(spill_truncate(&sb, off_at_1500, nrec_at_1500, &err), 0);
  CHECK_INT(read_all(&sb, 0, 1500), 0);
  /* append after truncation continues the sequence */
  for (i = 1500; i < 1600; i++) {
    rec_fill(&rec, i);
    CHECK_INT(spill_append(&sb, rec.data, rec.len, &err), 0);
  }
  CHECK_INT(read_all(&sb, 0, 1600), 0);
  CHECK_INT(spill_truncate(&sb, spill_size(&sb) + 1, 0, &err), -1);
  spill_free(&sb);
  buf_free(&rec);
}

static void test_truncate_memory_part (void) {
  SpillBuf sb;
  CdcError err;
  Buf rec = BUF_INIT;
  int i;
  uint64_t off = 0, nr = 0;
  spill_init(&sb, dir, 1u << 20);
  for (i = 0; i < 40; i++) {
    if (i == 30) {
      off = spill_size(&sb);
      nr = sb.nrecords;
    }
    if (i % 97 == 5)
      continue;
    rec_fill(&rec, i);
    CHECK_INT(spill_append(&sb, rec.data, rec.len, &err), 0);
  }
  CHECK_INT(spill_truncate(&sb, off, nr, &err), 0);
  CHECK_INT(sb.nrecords, 29);
  spill_free(&sb);
  /* zero cap: everything goes to the file, still readable */
  spill_init(&sb, dir, 0);
  for (i = 6; i < 30; i++) {
    rec_fill(&rec, i);
    CHECK_INT(spill_append(&sb, rec.data, rec.len, &err), 0);
  }
  CHECK_INT(spill_spilled(&sb), 1);
  CHECK_INT(read_all(&sb, 6, 24), 0);
  spill_free(&sb);
  buf_free(&rec);
}

static void test_unwritable_dir (void) {
  SpillBuf sb;
  CdcError err;
  cdc_err_clear(&err);
  spill_init(&sb, "/nonexistent/pgtide", 0);
  CHECK_INT(spill_append(&sb, "abc", 3, &err), -1);
  CHECK_INT(err.kind, CDC_ERR_IO);
  CHECK(strstr(err.message, "/nonexistent/pgtide") != NULL);
  spill_free(&sb);
}

int main (void) {
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  RUN_TEST(test_memory_only);
  RUN_TEST(test_spilled);
  RUN_TEST(test_truncate_memory_part);
  RUN_TEST(test_unwritable_dir);
  rmdir(dir);
  return TEST_SUMMARY();
}
