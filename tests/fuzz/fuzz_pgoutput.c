/*
** fuzz_pgoutput.c
** libFuzzer target for the CDC wire decoders: the pgoutput message
** decoder (src/cdc/pgoutput.c) and the replication CopyData frame parser
** (src/cdc/stream.c).  Lua-free.  Any crash, leak or sanitizer report is
** a bug: malformed input must give an error.
**
** Input format (so the fuzzer explores decoder state across messages):
**   byte 0: bit 0 protocol 2 (else 1), bit 1 start inside a stream
**           block, bit 2 the rest is one CopyData frame ('w' or 'k')
**           whose XLogData payload is decoded;
**   then messages, each a 2-byte big-endian length and that many bytes
**   (the last one takes what is left).  Each message is copied into a
**   buffer of exactly its size so any overread is caught by ASan.
*/
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/pgoutput.h"
#include "cdc/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile size_t sink;

/* Read every byte the decoded message points at. */
static void touch (const PgoMsg *m) {
  size_t total = 0;
  int i;
  const PgoTuple *tups[2];
  tups[0] = &m->oldtup;
  tups[1] = &m->newtup;
  total += strlen(m->nspname) + strlen(m->relname) + strlen(m->prefix) + strlen(m->origin);
  for (i = 0; i < m->ncols; i++)
    total += strlen(m->cols[i].name) + m->cols[i].flags + m->cols[i].typoid;
  for (int t = 0; t < 2; t++)
    for (i = 0; i < tups[t]->ncols; i++) {
      const PgoValue *v = &tups[t]->vals[i];
      uint32_t k;
      for (k = 0; k < v->len; k++)
        total += (unsigned char)v->data[k];
      total += (unsigned char)v->kind;
    }
  for (i = 0; i < m->nrels; i++)
    total += m->relids[i];
  for (uint32_t k = 0; k < m->content_len; k++)
    total += (unsigned char)m->content[k];
  sink += total;
}

static void decode_one (PgoDecoder *d, PgoMsg *m, const uint8_t *p, size_t n) {
  char err[256];
  uint8_t *copy = malloc(n > 0 ? n : 1);
  if (copy == NULL)
    return;
  if (n > 0)
    memcpy(copy, p, n);
  if (pgo_decode(d, copy, n, m, err, sizeof(err)) == 0)
    touch(m);
  else
    sink += strlen(err);
  free(copy);
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  PgoDecoder d;
  PgoMsg m;
  size_t pos = 1;
  if (size == 0)
    return 0;
  pgo_decoder_init(&d, (data[0] & 1) ? 2 : 1);
  if (data[0] & 2) {
    d.in_stream = 1;
    d.stream_xid = 7;
  }
  pgo_msg_init(&m);
  if (data[0] & 4) {
    StreamFrame f;
    char err[256];
    uint8_t *copy = malloc(size - 1 > 0 ? size - 1 : 1);
    if (copy != NULL) {
      memcpy(copy, data + 1, size - 1);
      if (stream_parse_frame(copy, size - 1, &f, err, sizeof(err)) == 0 && f.kind == 'w')
        decode_one(&d, &m, f.data, f.len);
      free(copy);
    }
  } else {
    while (pos < size) {
      size_t n;
      if (size - pos >= 2) {
        n = ((size_t)data[pos] << 8) | data[pos + 1];
        pos += 2;
      } else {
        n = size - pos;
      }
      if (n > size - pos)
        n = size - pos;
      decode_one(&d, &m, data + pos, n);
      pos += n;
    }
  }
  pgo_msg_free(&m);
  return 0;
}
