/*
** test_pgoutput.c
** The pgoutput decoder (src/cdc/pgoutput.c) and the replication frame
** parser (src/cdc/stream.c): hand-built messages of every kind, every
** truncation of each and a catalogue of malformed ones (errors, never a
** crash; run under `make asan` for the memory side), then real bytes
** from a PostgreSQL 15 cluster read with pg_logical_slot_peek_binary_changes
** in protocol 1 and in protocol 2 with streaming, checking every field.
*/
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdc/pgoutput.h"
#include "cdc/stream.h"
#include "cdc_testlib.h"
#include "test.h"
#include "util/buf.h"

/* {====================== message builder ====================== */

static void p8 (Buf *b, unsigned v) { buf_putc(b, (char)(v & 0xff)); }
static void p16 (Buf *b, unsigned v) { p8(b, v >> 8); p8(b, v); }
static void p32 (Buf *b, uint32_t v) { p16(b, v >> 16); p16(b, v & 0xffff); }
static void p64 (Buf *b, uint64_t v) { p32(b, (uint32_t)(v >> 32)); p32(b, (uint32_t)v); }
static void pstr (Buf *b, const char *s) { buf_append(b, s, strlen(s) + 1); }
static void ptext (Buf *b, const char *s) { p8(b, 't'); p32(b, (uint32_t)strlen(s)); buf_puts(b, s); }

static PgoDecoder dec1, dec2;
static PgoMsg msg;
static char err[512];

static int decode (PgoDecoder *d, const Buf *b) {
  return pgo_decode(d, (const uint8_t *)b->data, b->len, &msg, err, sizeof(err));
}

/* A catalogue of valid messages used for truncation tests. */
#define MAXCAT 64
static Buf cat[MAXCAT];
static int cat_streamed[MAXCAT];
static int ncat;

static void remember (const Buf *b, int streamed) {
  if (ncat < MAXCAT) {
    buf_init(&cat[ncat]);
    buf_append(&cat[ncat], b->data, b->len);
    cat_streamed[ncat++] = streamed;
  }
}

/* }============================================================= */

static void test_begin_commit (void) {
  Buf b = BUF_INIT;
  p8(&b, 'B'); p64(&b, 0x16B374D848ULL); p64(&b, 700000000000000LL); p32(&b, 7777);
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_BEGIN);
  CHECK(msg.lsn == 0x16B374D848ULL);
  CHECK(msg.ts == 700000000000000LL);
  CHECK_INT(msg.xid, 7777);
  remember(&b, 0);
  buf_reset(&b);
  p8(&b, 'C'); p8(&b, 0); p64(&b, 0x100); p64(&b, 0x180); p64(&b, 12345);
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_COMMIT);
  CHECK(msg.lsn == 0x100 && msg.end_lsn == 0x180 && msg.ts == 12345);
  remember(&b, 0);
  buf_free(&b);
}

static void build_relation (Buf *b, int streamed, uint32_t xid) {
  p8(b, 'R');
  if (streamed) p32(b, xid);
  p32(b, 16390); pstr(b, "public"); pstr(b, "orders"); p8(b, 'd'); p16(b, 3);
  p8(b, 1); pstr(b, "id"); p32(b, 23); p32(b, 0xffffffffu);
  p8(b, 0); pstr(b, "note"); p32(b, 25); p32(b, 0xffffffffu);
  p8(b, 0); pstr(b, "amount"); p32(b, 1700); p32(b, (12 << 16 | 2) + 4);
}

static void test_relation_type (void) {
  Buf b = BUF_INIT;
  build_relation(&b, 0, 0);
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_RELATION);
  CHECK_INT(msg.relid, 16390);
  CHECK_STR(msg.nspname, "public");
  CHECK_STR(msg.relname, "orders");
  CHECK_INT(msg.replident, 'd');
  CHECK_INT(msg.ncols, 3);
  CHECK_INT(msg.cols[0].flags, 1);
  CHECK_STR(msg.cols[0].name, "id");
  CHECK_INT(msg.cols[0].typoid, 23);
  CHECK_INT(msg.cols[0].typmod, -1);
  CHECK_STR(msg.cols[2].name, "amount");
  CHECK_INT(msg.cols[2].typoid, 1700);
  CHECK_INT(msg.cols[2].typmod, (12 << 16 | 2) + 4);
  remember(&b, 0);
  buf_reset(&b);
  p8(&b, 'Y'); p32(&b, 16400); pstr(&b, "public"); pstr(&b, "mood");
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_TYPE);
  CHECK_INT(msg.typoid, 16400);
  CHECK_STR(msg.nspname, "public");
  CHECK_STR(msg.relname, "mood");
  remember(&b, 0);
  buf_free(&b);
}

static void test_insert (void) {
  Buf b = BUF_INIT;
  p8(&b, 'I'); p32(&b, 16390); p8(&b, 'N'); p16(&b, 3);
  ptext(&b, "42"); p8(&b, 'n'); p8(&b, 't'); p32(&b, 0);
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_INSERT);
  CHECK_INT(msg.relid, 16390);
  CHECK_INT(msg.old_kind, 0);
  CHECK_INT(msg.newtup.ncols, 3);
  CHECK_INT(msg.newtup.vals[0].kind, 't');
  CHECK_INT(msg.newtup.vals[0].len, 2);
  CHECK(memcmp(msg.newtup.vals[0].data, "42", 2) == 0);
  CHECK_INT(msg.newtup.vals[1].kind, 'n');
  CHECK_INT(msg.newtup.vals[2].kind, 't');
  CHECK_INT(msg.newtup.vals[2].len, 0);
  remember(&b, 0);
  /* binary value */
  buf_reset(&b);
  p8(&b, 'I'); p32(&b, 1); p8(&b, 'N'); p16(&b, 1); p8(&b, 'b'); p32(&b, 4); p32(&b, 42);
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.newtup.vals[0].kind, 'b');
  CHECK_INT(msg.newtup.vals[0].len, 4);
  remember(&b, 0);
  buf_free(&b);
}

static void test_update_delete (void) {
  Buf b = BUF_INIT;
  /* no old tuple; an unchanged TOAST column */
  p8(&b, 'U'); p32(&b, 16390); p8(&b, 'N'); p16(&b, 3); ptext(&b, "1"); p8(&b, 'u'); ptext(&b, "9.50");
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_UPDATE);
  CHECK_INT(msg.old_kind, 0);
  CHECK_INT(msg.oldtup.ncols, 0);
  CHECK_INT(msg.newtup.ncols, 3);
  CHECK_INT(msg.newtup.vals[1].kind, 'u');
  CHECK(memcmp(msg.newtup.vals[2].data, "9.50", 4) == 0);
  remember(&b, 0);
  /* key change: old key tuple */
  buf_reset(&b);
  p8(&b, 'U'); p32(&b, 16390); p8(&b, 'K'); p16(&b, 3); ptext(&b, "1"); p8(&b, 'n'); p8(&b, 'n');
  p8(&b, 'N'); p16(&b, 3); ptext(&b, "2"); ptext(&b, "note"); p8(&b, 'n');
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.old_kind, 'K');
  CHECK_INT(msg.oldtup.ncols, 3);
  CHECK(msg.oldtup.vals[0].kind == 't' && msg.oldtup.vals[0].data[0] == '1');
  CHECK_INT(msg.oldtup.vals[1].kind, 'n');
  CHECK(msg.newtup.vals[0].kind == 't' && msg.newtup.vals[0].data[0] == '2');
  CHECK(msg.newtup.vals[1].len == 4 && memcmp(msg.newtup.vals[1].data, "note", 4) == 0);
  CHECK(msg.newtup.vals != msg.oldtup.vals);
  remember(&b, 0);
  /* REPLICA IDENTITY FULL: whole old row */
  buf_reset(&b);
  p8(&b, 'U'); p32(&b, 5); p8(&b, 'O'); p16(&b, 2); ptext(&b, "a"); p8(&b, 'n');
  p8(&b, 'N'); p16(&b, 2); ptext(&b, "a"); ptext(&b, "b");
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.old_kind, 'O');
  CHECK_INT(msg.oldtup.ncols, 2);
  CHECK_INT(msg.newtup.ncols, 2);
  CHECK(msg.newtup.vals[1].data[0] == 'b');
  remember(&b, 0);
  /* deletes */
  buf_reset(&b);
  p8(&b, 'D'); p32(&b, 16390); p8(&b, 'K'); p16(&b, 3); ptext(&b, "7"); p8(&b, 'n'); p8(&b, 'n');
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_DELETE);
  CHECK_INT(msg.old_kind, 'K');
  CHECK(msg.oldtup.vals[0].data[0] == '7');
  remember(&b, 0);
  buf_reset(&b);
  p8(&b, 'D'); p32(&b, 5); p8(&b, 'O'); p16(&b, 2); ptext(&b, "a"); ptext(&b, "b");
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.old_kind, 'O');
  remember(&b, 0);
  buf_free(&b);
}

static void test_truncate_origin_message (void) {
  Buf b = BUF_INIT;
  p8(&b, 'T'); p32(&b, 2); p8(&b, 3); p32(&b, 100); p32(&b, 200);
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_TRUNCATE);
  CHECK_INT(msg.nrels, 2);
  CHECK_INT(msg.flags, PGO_TRUNCATE_CASCADE | PGO_TRUNCATE_RESTART_IDENTITY);
  CHECK(msg.relids[0] == 100 && msg.relids[1] == 200);
  remember(&b, 0);
  buf_reset(&b);
  p8(&b, 'O'); p64(&b, 0xABCDEF); pstr(&b, "node_a");
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_ORIGIN);
  CHECK(msg.lsn == 0xABCDEF);
  CHECK_STR(msg.origin, "node_a");
  remember(&b, 0);
  buf_reset(&b);
  p8(&b, 'M'); p8(&b, 1); p64(&b, 0x42); pstr(&b, "pfx"); p32(&b, 3); buf_append(&b, "a\0b", 3);
  CHECK_INT(decode(&dec1, &b), 0);
  CHECK_INT(msg.kind, PGO_MESSAGE);
  CHECK_INT(msg.flags, 1);
  CHECK_STR(msg.prefix, "pfx");
  CHECK_INT(msg.content_len, 3);
  CHECK(memcmp(msg.content, "a\0b", 3) == 0);
  remember(&b, 0);
  buf_free(&b);
}

static void test_streaming (void) {
  Buf b = BUF_INIT;
  PgoDecoder d;
  pgo_decoder_init(&d, 2);
  p8(&b, 'S'); p32(&b, 900); p8(&b, 1);
  CHECK_INT(decode(&d, &b), 0);
  CHECK_INT(msg.kind, PGO_STREAM_START);
  CHECK_INT(msg.xid, 900);
  CHECK_INT(msg.flags, 1);
  CHECK_INT(d.in_stream, 1);
  /* a second Stream Start inside the block is an error, state kept */
  CHECK_INT(decode(&d, &b), -1);
  CHECK(strstr(err, "inside the stream block") != NULL);
  CHECK_INT(d.in_stream, 1);
  remember(&b, 0);
  /* changes in a block carry the (sub)transaction xid */
  buf_reset(&b);
  build_relation(&b, 1, 901);
  CHECK_INT(decode(&d, &b), 0);
  CHECK_INT(msg.xid, 901);
  CHECK_STR(msg.relname, "orders");
  remember(&b, 1);
  buf_reset(&b);
  p8(&b, 'I'); p32(&b, 901); p32(&b, 16390); p8(&b, 'N'); p16(&b, 1); ptext(&b, "5");
  CHECK_INT(decode(&d, &b), 0);
  CHECK_INT(msg.xid, 901);
  CHECK_INT(msg.relid, 16390);
  remember(&b, 1);
  buf_reset(&b);
  p8(&b, 'M'); p32(&b, 900); p8(&b, 1); p64(&b, 1); pstr(&b, "x"); p32(&b, 0);
  CHECK_INT(decode(&d, &b), 0);
  CHECK_INT(msg.xid, 900);
  remember(&b, 1);
  /* xid 0 inside a block is invalid */
  buf_reset(&b);
  p8(&b, 'I'); p32(&b, 0); p32(&b, 16390); p8(&b, 'N'); p16(&b, 0);
  CHECK_INT(decode(&d, &b), -1);
  /* Begin inside a block is an error */
  buf_reset(&b);
  p8(&b, 'B'); p64(&b, 1); p64(&b, 1); p32(&b, 1);
  CHECK_INT(decode(&d, &b), -1);
  buf_reset(&b);
  p8(&b, 'E');
  CHECK_INT(decode(&d, &b), 0);
  CHECK_INT(msg.kind, PGO_STREAM_STOP);
  CHECK_INT(d.in_stream, 0);
  CHECK_INT(decode(&d, &b), -1);            /* Stop outside a block */
  CHECK(strstr(err, "outside") != NULL);
  remember(&b, 0);
  buf_reset(&b);
  p8(&b, 'c'); p32(&b, 900); p8(&b, 0); p64(&b, 0x500); p64(&b, 0x580); p64(&b, 99);
  CHECK_INT(decode(&d, &b), 0);
  CHECK_INT(msg.kind, PGO_STREAM_COMMIT);
  CHECK(msg.xid == 900 && msg.lsn == 0x500 && msg.end_lsn == 0x580 && msg.ts == 99);
  remember(&b, 0);
  buf_reset(&b);
  p8(&b, 'A'); p32(&b, 900); p32(&b, 901);
  CHECK_INT(decode(&d, &b), 0);
  CHECK_INT(msg.kind, PGO_STREAM_ABORT);
  CHECK(msg.xid == 900 && msg.subxid == 901);
  remember(&b, 0);
  /* protocol 1 has no streaming messages */
  CHECK_INT(decode(&dec1, &b), -1);
  CHECK(strstr(err, "protocol version 2") != NULL);
  buf_free(&b);
}

/* Every strict prefix of every valid message fails, and so does one
   extra trailing byte: bounds are checked everywhere. */
static void test_truncations (void) {
  int i;
  size_t n;
  for (i = 0; i < ncat; i++) {
    Buf *b = &cat[i];
    for (n = 0; n < b->len; n++) {
      PgoDecoder d;
      uint8_t *copy = malloc(n ? n : 1);   /* exact size: ASan sees any overread */
      pgo_decoder_init(&d, 2);
      d.in_stream = cat_streamed[i];
      d.stream_xid = cat_streamed[i] ? 900 : 0;
      memcpy(copy, b->data, n);
      if (pgo_decode(&d, copy, n, &msg, err, sizeof(err)) != -1) {
        test_failed_checks++;
        fprintf(stderr, "message %d ('%c') truncated to %zu of %zu bytes decoded\n", i, b->data[0], n, b->len);
      }
      free(copy);
    }
    {
      PgoDecoder d;
      Buf x = BUF_INIT;
      pgo_decoder_init(&d, 2);
      d.in_stream = cat_streamed[i];
      buf_append(&x, b->data, b->len);
      buf_putc(&x, 0);
      CHECK_INT(pgo_decode(&d, (const uint8_t *)x.data, x.len, &msg, err, sizeof(err)), -1);
      buf_free(&x);
    }
  }
  CHECK(ncat >= 18);
}

static int bad (PgoDecoder *d, const Buf *b, const char *want) {
  int rc = decode(d, b);
  if (rc != -1) {
    fprintf(stderr, "expected an error containing \"%s\", decoded fine\n", want);
    return 0;
  }
  if (strstr(err, want) == NULL) {
    fprintf(stderr, "error \"%s\" does not contain \"%s\"\n", err, want);
    return 0;
  }
  return 1;
}

static void test_malformed (void) {
  Buf b = BUF_INIT;
  CHECK_INT(pgo_decode(&dec1, NULL, 0, &msg, err, sizeof(err)), -1);
  p8(&b, 'Z');
  CHECK(bad(&dec1, &b, "unknown message type 'Z'"));
  buf_reset(&b); p8(&b, 0x01);
  CHECK(bad(&dec1, &b, "0x01"));
  /* two-phase messages (protocol 3) are not negotiated */
  buf_reset(&b); p8(&b, 'P');
  CHECK(bad(&dec1, &b, "unknown message type"));
  /* column kind */
  buf_reset(&b); p8(&b, 'I'); p32(&b, 1); p8(&b, 'N'); p16(&b, 1); p8(&b, 'x');
  CHECK(bad(&dec1, &b, "column kind"));
  /* column count far larger than the message */
  buf_reset(&b); p8(&b, 'I'); p32(&b, 1); p8(&b, 'N'); p16(&b, 0xffff); p8(&b, 'n');
  CHECK(bad(&dec1, &b, "count larger"));
  buf_reset(&b); p8(&b, 'R'); p32(&b, 1); pstr(&b, "s"); pstr(&b, "t"); p8(&b, 'd'); p16(&b, 5000);
  CHECK(bad(&dec1, &b, "count larger"));
  /* value length: negative, and past the end */
  buf_reset(&b); p8(&b, 'I'); p32(&b, 1); p8(&b, 'N'); p16(&b, 1); p8(&b, 't'); p32(&b, 0xffffffffu);
  CHECK(bad(&dec1, &b, "negative"));
  buf_reset(&b); p8(&b, 'I'); p32(&b, 1); p8(&b, 'N'); p16(&b, 1); p8(&b, 't'); p32(&b, 100); buf_puts(&b, "ab");
  CHECK(bad(&dec1, &b, "column value"));
  /* unterminated string */
  buf_reset(&b); p8(&b, 'Y'); p32(&b, 1); pstr(&b, "ns"); buf_puts(&b, "typ");
  CHECK(bad(&dec1, &b, "type name"));
  buf_reset(&b); p8(&b, 'O'); p64(&b, 1); buf_puts(&b, "abc");
  CHECK(bad(&dec1, &b, "origin name"));
  /* relation fields */
  buf_reset(&b); p8(&b, 'R'); p32(&b, 1); pstr(&b, "s"); pstr(&b, "t"); p8(&b, 'x'); p16(&b, 0);
  CHECK(bad(&dec1, &b, "replica identity"));
  buf_reset(&b); p8(&b, 'R'); p32(&b, 1); pstr(&b, "s"); pstr(&b, ""); p8(&b, 'd'); p16(&b, 0);
  CHECK(bad(&dec1, &b, "relation name"));
  buf_reset(&b); p8(&b, 'R'); p32(&b, 1); pstr(&b, "s"); pstr(&b, "t"); p8(&b, 'd'); p16(&b, 1);
  p8(&b, 0); pstr(&b, ""); p32(&b, 23); p32(&b, 0);
  CHECK(bad(&dec1, &b, "column name"));
  /* tuple tags */
  buf_reset(&b); p8(&b, 'I'); p32(&b, 1); p8(&b, 'K'); p16(&b, 0);
  CHECK(bad(&dec1, &b, "Insert needs N"));
  buf_reset(&b); p8(&b, 'D'); p32(&b, 1); p8(&b, 'N'); p16(&b, 0);
  CHECK(bad(&dec1, &b, "Delete needs K or O"));
  buf_reset(&b); p8(&b, 'U'); p32(&b, 1); p8(&b, 'K'); p16(&b, 0); p8(&b, 'K'); p16(&b, 0);
  CHECK(bad(&dec1, &b, "Update needs N"));
  /* truncate */
  buf_reset(&b); p8(&b, 'T'); p32(&b, 0); p8(&b, 0);
  CHECK(bad(&dec1, &b, "relation count"));
  buf_reset(&b); p8(&b, 'T'); p32(&b, 0x40000000u); p8(&b, 0); p32(&b, 1);
  CHECK(bad(&dec1, &b, "relation count"));
  buf_reset(&b); p8(&b, 'T'); p32(&b, 1); p8(&b, 8); p32(&b, 1);
  CHECK(bad(&dec1, &b, "unknown bits"));
  /* message length */
  buf_reset(&b); p8(&b, 'M'); p8(&b, 1); p64(&b, 1); pstr(&b, "p"); p32(&b, 0x80000000u);
  CHECK(bad(&dec1, &b, "negative"));
  /* trailing garbage */
  buf_reset(&b); p8(&b, 'C'); p8(&b, 0); p64(&b, 1); p64(&b, 2); p64(&b, 3); p8(&b, 9);
  CHECK(bad(&dec1, &b, "trailing"));
  /* stream abort/commit with xid 0 */
  buf_reset(&b); p8(&b, 'A'); p32(&b, 0); p32(&b, 0);
  CHECK(bad(&dec2, &b, "invalid xid"));
  buf_reset(&b); p8(&b, 'S'); p32(&b, 0); p8(&b, 1);
  CHECK(bad(&dec2, &b, "invalid xid"));
  CHECK_INT(dec2.in_stream, 0);
  buf_free(&b);
}

static void test_lsn_time (void) {
  PgLsn l = 1;
  char buf[PGO_LSN_BUFSZ];
  CHECK_INT(pgo_lsn_parse("0/0", &l), 0);
  CHECK(l == 0);
  CHECK_INT(pgo_lsn_parse("16/B374D848", &l), 0);
  CHECK(l == 0x16B374D848ULL);
  CHECK_STR(pgo_lsn_format(l, buf), "16/B374D848");
  CHECK_INT(pgo_lsn_parse("ffffffff/ffffffff", &l), 0);
  CHECK_STR(pgo_lsn_format(l, buf), "FFFFFFFF/FFFFFFFF");
  CHECK_INT(pgo_lsn_parse("", &l), -1);
  CHECK_INT(pgo_lsn_parse("/", &l), -1);
  CHECK_INT(pgo_lsn_parse("1/", &l), -1);
  CHECK_INT(pgo_lsn_parse("/1", &l), -1);
  CHECK_INT(pgo_lsn_parse("G/1", &l), -1);
  CHECK_INT(pgo_lsn_parse("123456789/0", &l), -1);
  CHECK_INT(pgo_lsn_parse("1/2/3", &l), -1);
  CHECK_INT(pgo_lsn_parse(NULL, &l), -1);
  CHECK(pgo_time_to_unix(0) == 946684800.0);
  CHECK(pgo_time_from_unix(946684801.5) == 1500000);
}

static void test_stream_frames (void) {
  Buf b = BUF_INIT;
  StreamFrame f;
  uint8_t st[STREAM_STATUS_LEN];
  p8(&b, 'w'); p64(&b, 0x10); p64(&b, 0x20); p64(&b, 555); buf_puts(&b, "Bxyz");
  CHECK_INT(stream_parse_frame((const uint8_t *)b.data, b.len, &f, err, sizeof(err)), 0);
  CHECK(f.kind == 'w' && f.start == 0x10 && f.wal_end == 0x20 && f.send_time == 555);
  CHECK(f.len == 4 && memcmp(f.data, "Bxyz", 4) == 0);
  CHECK_INT(stream_parse_frame((const uint8_t *)b.data, 24, &f, err, sizeof(err)), -1);
  buf_reset(&b);
  p8(&b, 'k'); p64(&b, 0x99); p64(&b, 1); p8(&b, 1);
  CHECK_INT(stream_parse_frame((const uint8_t *)b.data, b.len, &f, err, sizeof(err)), 0);
  CHECK(f.kind == 'k' && f.wal_end == 0x99 && f.reply_requested == 1);
  CHECK_INT(stream_parse_frame((const uint8_t *)b.data, b.len - 1, &f, err, sizeof(err)), -1);
  buf_reset(&b);
  p8(&b, 'q');
  CHECK_INT(stream_parse_frame((const uint8_t *)b.data, b.len, &f, err, sizeof(err)), -1);
  CHECK_INT(stream_parse_frame(NULL, 0, &f, err, sizeof(err)), -1);
  stream_build_status(st, 0x1122334455667788ULL, 0x10, 0x20, 7, 1);
  CHECK_INT(st[0], 'r');
  CHECK(pgo_get_u64(st + 1) == 0x1122334455667788ULL);
  CHECK(pgo_get_u64(st + 9) == 0x10 && pgo_get_u64(st + 17) == 0x20 && pgo_get_u64(st + 25) == 7);
  CHECK_INT(st[33], 1);
  CHECK_INT(stream_proto_for_server(150004), 2);
  CHECK_INT(stream_proto_for_server(130010), 1);
  {
    CdcError e;
    CHECK_INT(stream_check_name("slot", "pgtide_m1", &e), 0);
    CHECK_INT(stream_check_name("slot", "Bad-Name", &e), -1);
    CHECK_INT(stream_check_name("slot", "", &e), -1);
  }
  buf_free(&b);
}

/* {====================== real bytes ====================== */

static TestCluster cl;
static PGconn *pc;

/* Peek the slot's binary changes; returns the result (binary format). */
static PGresult *peek (const char *slot, const char *opts) {
  char sql[512];
  PGresult *res;
  snprintf(sql, sizeof(sql), "SELECT data FROM pg_logical_slot_peek_binary_changes('%s', NULL, NULL, %s)",
           slot, opts);
  res = PQexecParams(pc, sql, 0, NULL, NULL, NULL, NULL, 1);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    fprintf(stderr, "peek failed: %s", PQerrorMessage(pc));
    PQclear(res);
    return NULL;
  }
  return res;
}

static int val_is (const PgoValue *v, const char *text) {
  return v->kind == 't' && v->len == strlen(text) && memcmp(v->data, text, v->len) == 0;
}

static void test_real_v1 (void) {
  PGresult *res;
  int i, n, step = 0;
  PgoDecoder d;
  uint32_t t1 = 0, t2 = 0, t3 = 0, xid = 0;
  PgLsn begin_final = 0;
  char *big;
  if (pc == NULL)
    SKIP("no PostgreSQL cluster (tests/lib/pgcluster.sh start failed)");
  tc_exec(pc, "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');"
              "CREATE TABLE t1 (id int PRIMARY KEY, name text, big text, m mood);"
              "ALTER TABLE t1 ALTER COLUMN big SET STORAGE EXTERNAL;"
              "CREATE TABLE t2 (a int, b text); ALTER TABLE t2 REPLICA IDENTITY FULL;"
              "CREATE TABLE t3 (id serial PRIMARY KEY, ref int);"
              "CREATE PUBLICATION p FOR ALL TABLES;");
  tc_exec(pc, "SELECT pg_create_logical_replication_slot('s1', 'pgoutput')");
  tc_exec(pc, "INSERT INTO t1 VALUES (1, 'one', repeat('x', 5000), 'ok')");
  tc_exec(pc, "UPDATE t1 SET name = 'uno' WHERE id = 1");
  tc_exec(pc, "UPDATE t1 SET id = 2 WHERE id = 1");
  tc_exec(pc, "INSERT INTO t2 VALUES (1, NULL)");
  tc_exec(pc, "UPDATE t2 SET b = 'x'");
  tc_exec(pc, "DELETE FROM t2");
  tc_exec(pc, "DELETE FROM t1 WHERE id = 2");
  tc_exec(pc, "BEGIN; INSERT INTO t3 (ref) VALUES (1); "
              "SELECT pg_logical_emit_message(true, 'pfx', 'hello'); COMMIT");
  tc_exec(pc, "TRUNCATE t3 RESTART IDENTITY CASCADE");
  res = peek("s1", "'proto_version', '1', 'publication_names', 'p', 'messages', 'true'");
  CHECK(res != NULL);
  if (res == NULL)
    return;
  n = PQntuples(res);
  big = malloc(5001);
  memset(big, 'x', 5000);
  big[5000] = '\0';
  pgo_decoder_init(&d, 1);
  /* expected: kind sequence over the nine transactions */
  {
    static const char want[] = "BYRIC" "BUC" "BUC" "BRIC" "BUC" "BDC" "BDC" "BRIMC" "BRTC";
    CHECK_INT(n, (int)strlen(want));
    for (i = 0; i < n && i < (int)strlen(want); i++) {
      const uint8_t *data = (const uint8_t *)PQgetvalue(res, i, 0);
      size_t len = (size_t)PQgetlength(res, i, 0);
      if (pgo_decode(&d, data, len, &msg, err, sizeof(err)) != 0) {
        test_failed_checks++;
        fprintf(stderr, "message %d: %s\n", i, err);
        continue;
      }
      if (msg.kind != (PgoKind)want[i]) {
        test_failed_checks++;
        fprintf(stderr, "message %d is %s, want '%c'\n", i, pgo_kind_name(msg.kind), want[i]);
        continue;
      }
      switch (msg.kind) {
        case PGO_BEGIN:
          step++;
          begin_final = msg.lsn;
          xid = msg.xid;
          CHECK(msg.lsn != 0 && msg.xid != 0);
          CHECK(pgo_time_to_unix(msg.ts) > 1.6e9);
          break;
        case PGO_COMMIT:
          CHECK(msg.lsn == begin_final);
          CHECK(msg.end_lsn > msg.lsn);
          CHECK_INT(msg.flags, 0);
          break;
        case PGO_TYPE:
          CHECK_STR(msg.nspname, "public");
          CHECK_STR(msg.relname, "mood");
          break;
        case PGO_RELATION:
          if (step == 1) {
            t1 = msg.relid;
            CHECK_STR(msg.nspname, "public");
            CHECK_STR(msg.relname, "t1");
            CHECK_INT(msg.replident, 'd');
            CHECK_INT(msg.ncols, 4);
            CHECK_STR(msg.cols[0].name, "id");
            CHECK_INT(msg.cols[0].flags, PGO_COL_KEY);
            CHECK_INT(msg.cols[0].typoid, 23);
            CHECK_INT(msg.cols[1].flags, 0);
            CHECK_INT(msg.cols[1].typoid, 25);
            CHECK_STR(msg.cols[3].name, "m");
            CHECK(msg.cols[3].typoid >= 16384);
          } else if (step == 4) {
            t2 = msg.relid;
            CHECK_STR(msg.relname, "t2");
            CHECK_INT(msg.replident, 'f');
            CHECK_INT(msg.cols[0].flags, PGO_COL_KEY);   /* FULL: every column */
            CHECK_INT(msg.cols[1].flags, PGO_COL_KEY);
          } else {
            t3 = msg.relid;
            CHECK_STR(msg.relname, "t3");
          }
          break;
        case PGO_INSERT:
          if (step == 1) {
            CHECK(msg.relid == t1);
            CHECK(val_is(&msg.newtup.vals[0], "1"));
            CHECK(val_is(&msg.newtup.vals[1], "one"));
            CHECK(val_is(&msg.newtup.vals[2], big));
            CHECK(val_is(&msg.newtup.vals[3], "ok"));
          } else if (step == 4) {
            CHECK(msg.relid == t2);
            CHECK(val_is(&msg.newtup.vals[0], "1"));
            CHECK_INT(msg.newtup.vals[1].kind, 'n');
          } else {
            CHECK(msg.relid == t3);
            CHECK(val_is(&msg.newtup.vals[0], "1") && val_is(&msg.newtup.vals[1], "1"));
          }
          break;
        case PGO_UPDATE:
          if (step == 2) {         /* name changed, TOASTed big unchanged */
            CHECK_INT(msg.old_kind, 0);
            CHECK(val_is(&msg.newtup.vals[1], "uno"));
            CHECK_INT(msg.newtup.vals[2].kind, 'u');
          } else if (step == 3) {  /* key change: old key sent */
            CHECK_INT(msg.old_kind, 'K');
            CHECK(val_is(&msg.oldtup.vals[0], "1"));
            CHECK_INT(msg.oldtup.vals[1].kind, 'n');
            CHECK(val_is(&msg.newtup.vals[0], "2"));
            CHECK_INT(msg.newtup.vals[2].kind, 'u');
          } else {                 /* REPLICA IDENTITY FULL */
            CHECK(msg.relid == t2);
            CHECK_INT(msg.old_kind, 'O');
            CHECK(val_is(&msg.oldtup.vals[0], "1"));
            CHECK_INT(msg.oldtup.vals[1].kind, 'n');
            CHECK(val_is(&msg.newtup.vals[1], "x"));
          }
          break;
        case PGO_DELETE:
          if (step == 6) {
            CHECK_INT(msg.old_kind, 'O');
            CHECK(val_is(&msg.oldtup.vals[1], "x"));
          } else {
            CHECK(msg.relid == t1);
            CHECK_INT(msg.old_kind, 'K');
            CHECK(val_is(&msg.oldtup.vals[0], "2"));
          }
          break;
        case PGO_MESSAGE:
          CHECK_INT(msg.flags, 1);
          CHECK_STR(msg.prefix, "pfx");
          CHECK(msg.content_len == 5 && memcmp(msg.content, "hello", 5) == 0);
          break;
        case PGO_TRUNCATE:
          CHECK_INT(msg.nrels, 1);
          CHECK(msg.relids[0] == t3);
          CHECK_INT(msg.flags, PGO_TRUNCATE_CASCADE | PGO_TRUNCATE_RESTART_IDENTITY);
          break;
        default:
          break;
      }
    }
  }
  CHECK(t1 != 0 && t2 != 0 && t3 != 0 && xid != 0);
  free(big);
  PQclear(res);
}

/* Protocol 2 with streaming: a large committed transaction with an
   aborted subtransaction and a large rolled-back one are streamed. */
static void test_real_streaming (void) {
  PGresult *res;
  PgoDecoder d;
  int i, n, starts = 0, stops = 0, commits = 0, aborts = 0, inblock = 0, top_aborts = 0;
  int top_inserts = 0, first_top = 0;
  uint32_t block_xid = 0, committed_xid = 0;
  if (pc == NULL)
    SKIP("no PostgreSQL cluster (tests/lib/pgcluster.sh start failed)");
  tc_exec(pc, "SELECT pg_create_logical_replication_slot('s2', 'pgoutput')");
  tc_exec(pc, "BEGIN; INSERT INTO t2 SELECT g, repeat('y', 100) FROM generate_series(1, 3000) g;"
              "SAVEPOINT sp; INSERT INTO t2 SELECT g, 'z' FROM generate_series(1, 3000) g;"
              "ROLLBACK TO sp; INSERT INTO t2 VALUES (-1, 'end'); COMMIT");
  tc_exec(pc, "BEGIN; INSERT INTO t2 SELECT g, repeat('w', 100) FROM generate_series(1, 20000) g; ROLLBACK");
  /* an abort record is not flushed by itself: a commit flushes it, so
     peek (which reads up to the flush position) sees it */
  tc_exec(pc, "SELECT txid_current()");
  tc_exec(pc, "SELECT pg_sleep(1)");
  res = peek("s2", "'proto_version', '2', 'publication_names', 'p', 'streaming', 'on'");
  CHECK(res != NULL);
  if (res == NULL)
    return;
  n = PQntuples(res);
  pgo_decoder_init(&d, 2);
  for (i = 0; i < n; i++) {
    if (pgo_decode(&d, (const uint8_t *)PQgetvalue(res, i, 0), (size_t)PQgetlength(res, i, 0),
                   &msg, err, sizeof(err)) != 0) {
      test_failed_checks++;
      fprintf(stderr, "message %d: %s\n", i, err);
      break;
    }
    switch (msg.kind) {
      case PGO_STREAM_START:
        starts++;
        inblock = 1;
        block_xid = msg.xid;
        break;
      case PGO_STREAM_STOP:
        stops++;
        inblock = 0;
        break;
      case PGO_STREAM_COMMIT:
        first_top = 1;
        commits++;
        committed_xid = msg.xid;
        CHECK(msg.end_lsn > msg.lsn && msg.lsn != 0);
        break;
      case PGO_STREAM_ABORT:
        aborts++;
        if (msg.subxid == msg.xid)
          top_aborts++;
        break;
      case PGO_INSERT:
        if (inblock && msg.xid == block_xid && first_top == 0)
          top_inserts++;
        /* fall through */
      case PGO_RELATION:
        if (inblock)
          CHECK(msg.xid != 0);
        break;
      case PGO_BEGIN:
      case PGO_COMMIT:
        CHECK(!inblock);
        break;
      default:
        break;
    }
  }
  CHECK(starts >= 2);
  CHECK_INT(starts, stops);
  CHECK_INT(commits, 1);
  CHECK(committed_xid != 0 && block_xid != 0);
  CHECK_INT(top_aborts, 1);
  CHECK(aborts >= 1);
  /* the 3000 rows before the savepoint came in blocks under the top xid
     (the row after ROLLBACK TO belongs to the re-established savepoint) */
  CHECK_INT(top_inserts, 3000);
  PQclear(res);
}

/* }============================================================= */

int main (void) {
  pgo_decoder_init(&dec1, 1);
  pgo_decoder_init(&dec2, 2);
  pgo_msg_init(&msg);
  RUN_TEST(test_begin_commit);
  RUN_TEST(test_relation_type);
  RUN_TEST(test_insert);
  RUN_TEST(test_update_delete);
  RUN_TEST(test_truncate_origin_message);
  RUN_TEST(test_streaming);
  RUN_TEST(test_truncations);
  RUN_TEST(test_malformed);
  RUN_TEST(test_lsn_time);
  RUN_TEST(test_stream_frames);
  if (tc_start(&cl, "pgoutput", "logical_decoding_work_mem = 64kB") == 0)
    pc = tc_connect(cl.conninfo);
  RUN_TEST(test_real_v1);
  RUN_TEST(test_real_streaming);
  if (pc != NULL)
    PQfinish(pc);
  tc_stop(&cl);
  pgo_msg_free(&msg);
  for (int i = 0; i < ncat; i++)
    buf_free(&cat[i]);
  return TEST_SUMMARY();
}
