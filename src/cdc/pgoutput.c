/*
** pgoutput.c
** Decoder for pgoutput messages (see pgoutput.h for the contract).
**
** The message layouts are those of PostgreSQL's "Logical Replication
** Message Formats" (protocol versions 1 and 2).  A Reader walks the input
** with checked reads; the first failed read records what was expected and
** every later read fails too, so the decode functions can read a whole
** message and test for failure once at the end.
*/
#include "cdc/pgoutput.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"

typedef struct Reader {
  const uint8_t *p;
  size_t len, pos;
  const char *failed;            /* NULL, or what could not be read */
} Reader;

uint64_t pgo_get_u64 (const uint8_t *p) {
  return ((uint64_t)pgo_get_u32(p) << 32) | pgo_get_u32(p + 4);
}

uint32_t pgo_get_u32 (const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* Store v big-endian (network order) in p[0..4). */
void pgo_put_u32 (uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Store v big-endian (network order) in p[0..8). */
void pgo_put_u64 (uint8_t *p, uint64_t v) {
  int i;
  for (i = 7; i >= 0; i--) {
    p[i] = (uint8_t)(v & 0xff);
    v >>= 8;
  }
}

/* Whether n more bytes are there; if not, the reader fails with 'what'
   (the first failure sticks: later reads return zero values). */
static int need (Reader *r, size_t n, const char *what) {
  if (r->failed != NULL)
    return 0;
  if (r->len - r->pos < n) {
    r->failed = what;
    return 0;
  }
  return 1;
}

/* Big-endian integer readers: 0 once the reader failed. */
static uint8_t rd_u8 (Reader *r, const char *what) {
  if (!need(r, 1, what))
    return 0;
  return r->p[r->pos++];
}

static uint16_t rd_u16 (Reader *r, const char *what) {
  uint16_t v;
  if (!need(r, 2, what))
    return 0;
  v = (uint16_t)((r->p[r->pos] << 8) | r->p[r->pos + 1]);
  r->pos += 2;
  return v;
}

static uint32_t rd_u32 (Reader *r, const char *what) {
  uint32_t v;
  if (!need(r, 4, what))
    return 0;
  v = pgo_get_u32(r->p + r->pos);
  r->pos += 4;
  return v;
}

static uint64_t rd_u64 (Reader *r, const char *what) {
  uint64_t v;
  if (!need(r, 8, what))
    return 0;
  v = pgo_get_u64(r->p + r->pos);
  r->pos += 8;
  return v;
}

/* A NUL-terminated string inside the input; "" after a failure. */
static const char *rd_str (Reader *r, const char *what) {
  const uint8_t *nul;
  const char *s;
  if (r->failed != NULL)
    return "";
  nul = r->pos < r->len ? memchr(r->p + r->pos, '\0', r->len - r->pos) : NULL;
  if (nul == NULL) {
    r->failed = what;
    return "";
  }
  s = (const char *)(r->p + r->pos);
  r->pos = (size_t)(nul - r->p) + 1;
  return s;
}

/* 'n' bytes inside the input; NULL after a failure. */
static const char *rd_bytes (Reader *r, size_t n, const char *what) {
  const char *s;
  if (!need(r, n, what))
    return NULL;
  s = (const char *)(r->p + r->pos);
  r->pos += n;
  return s;
}

/* Bytes left to read (0 after a failure). */
static size_t left (const Reader *r) {
  return r->failed != NULL ? 0 : r->len - r->pos;
}

/* Make room for n values in m->valbuf (reused between messages). */
static void grow_vals (PgoMsg *m, size_t n) {
  if (n > m->valcap) {
    size_t cap = m->valcap ? m->valcap : 16;
    while (cap < n)
      cap *= 2;
    m->valbuf = xrealloc(m->valbuf, cap * sizeof(PgoValue));
    m->valcap = cap;
  }
}

/*
** TupleData.  Both tuples of an Update share valbuf: the new tuple's
** values follow the old ones, so 'base' is the first free slot.  Each
** column takes at least one byte, so ncols is bounded by the bytes left
** before any allocation.  Returns the number of slots used.
*/
static size_t rd_tuple (Reader *r, PgoMsg *m, PgoTuple *t, size_t base) {
  int i, n = (int)rd_u16(r, "tuple column count");
  t->ncols = 0;
  t->vals = NULL;
  if (r->failed != NULL)
    return 0;
  if ((size_t)n > left(r)) {
    r->failed = "tuple columns (count larger than the message)";
    return 0;
  }
  grow_vals(m, base + (size_t)n);
  for (i = 0; i < n && r->failed == NULL; i++) {
    PgoValue *v = &m->valbuf[base + (size_t)i];
    v->kind = (char)rd_u8(r, "column kind");
    v->len = 0;
    v->data = NULL;
    switch (v->kind) {
      case PGO_VAL_NULL:
      case PGO_VAL_UNCHANGED:
        break;
      case PGO_VAL_TEXT:
      case PGO_VAL_BINARY:
        v->len = rd_u32(r, "column length");
        if (r->failed == NULL && v->len > 0x7fffffffu)
          r->failed = "column length (negative)";
        else
          v->data = rd_bytes(r, v->len, "column value");
        break;
      default:
        if (r->failed == NULL)
          r->failed = "column kind (not one of n, u, t, b)";
        break;
    }
  }
  if (r->failed != NULL)
    return 0;
  t->ncols = n;
  /* vals is set by the caller once valbuf stops moving */
  return (size_t)n;
}

/* Changes inside a stream block carry the (sub)transaction xid first. */
static void rd_stream_xid (Reader *r, const PgoDecoder *d, PgoMsg *m) {
  if (d->in_stream) {
    m->xid = rd_u32(r, "xid");
    if (r->failed == NULL && m->xid == 0)
      r->failed = "xid (0 is invalid)";
  }
}

/* Relation: id, names, replica identity and the columns (name, type,
   typmod, key flag) into m->colbuf. */
static void dec_relation (Reader *r, const PgoDecoder *d, PgoMsg *m) {
  int i, n;
  rd_stream_xid(r, d, m);
  m->relid = rd_u32(r, "relation id");
  m->nspname = rd_str(r, "namespace");
  m->relname = rd_str(r, "relation name");
  m->replident = (char)rd_u8(r, "replica identity");
  n = (int)rd_u16(r, "column count");
  if (r->failed != NULL)
    return;
  if (m->relname[0] == '\0') {
    r->failed = "relation name (empty)";
    return;
  }
  if (strchr("dnfi", m->replident) == NULL || m->replident == '\0') {
    r->failed = "replica identity (not one of d, n, f, i)";
    return;
  }
  /* each column: flags, at least a NUL name, type oid, typmod */
  if ((size_t)n * 10 > left(r)) {
    r->failed = "columns (count larger than the message)";
    return;
  }
  if ((size_t)n > m->colcap) {
    size_t cap = m->colcap ? m->colcap : 16;
    while (cap < (size_t)n)
      cap *= 2;
    m->colbuf = xrealloc(m->colbuf, cap * sizeof(PgoColumn));
    m->colcap = cap;
  }
  for (i = 0; i < n && r->failed == NULL; i++) {
    PgoColumn *c = &m->colbuf[i];
    c->flags = rd_u8(r, "column flags");
    c->name = rd_str(r, "column name");
    c->typoid = rd_u32(r, "column type");
    c->typmod = (int32_t)rd_u32(r, "column typmod");
    if (r->failed == NULL && c->name[0] == '\0')
      r->failed = "column name (empty)";
  }
  m->ncols = n;
  m->cols = m->colbuf;
}

/* Insert, Update, Delete: the relation and the tuples the tags announce
   (old key or old row, new row). */
static void dec_change (Reader *r, const PgoDecoder *d, PgoMsg *m) {
  size_t used = 0;
  uint8_t tag;
  rd_stream_xid(r, d, m);
  m->relid = rd_u32(r, "relation id");
  tag = rd_u8(r, "tuple tag");
  if (r->failed != NULL)
    return;
  if (m->kind == PGO_INSERT) {
    if (tag != 'N') {
      r->failed = "tuple tag (Insert needs N)";
      return;
    }
    used = rd_tuple(r, m, &m->newtup, 0);
  } else if (m->kind == PGO_DELETE) {
    if (tag != 'K' && tag != 'O') {
      r->failed = "tuple tag (Delete needs K or O)";
      return;
    }
    m->old_kind = (char)tag;
    used = rd_tuple(r, m, &m->oldtup, 0);
  } else {  /* Update: optional K/O old tuple, then N */
    if (tag == 'K' || tag == 'O') {
      m->old_kind = (char)tag;
      used = rd_tuple(r, m, &m->oldtup, 0);
      tag = rd_u8(r, "tuple tag");
      if (r->failed != NULL)
        return;
    }
    if (tag != 'N') {
      r->failed = "tuple tag (Update needs N)";
      return;
    }
    rd_tuple(r, m, &m->newtup, used);
  }
  if (r->failed != NULL)
    return;
  /* valbuf no longer moves: point the tuples into it */
  if (m->oldtup.ncols > 0)
    m->oldtup.vals = m->valbuf;
  if (m->newtup.ncols > 0)
    m->newtup.vals = m->valbuf + (m->kind == PGO_UPDATE ? used : 0);
}

/* Truncate: options (CASCADE, RESTART IDENTITY) and relation ids into
   m->relbuf. */
static void dec_truncate (Reader *r, const PgoDecoder *d, PgoMsg *m) {
  uint32_t n, i;
  rd_stream_xid(r, d, m);
  n = rd_u32(r, "relation count");
  m->flags = rd_u8(r, "truncate options");
  if (r->failed != NULL)
    return;
  if (n == 0 || n > left(r) / 4) {
    r->failed = "relation count (0 or larger than the message)";
    return;
  }
  if (m->flags & ~(PGO_TRUNCATE_CASCADE | PGO_TRUNCATE_RESTART_IDENTITY)) {
    r->failed = "truncate options (unknown bits)";
    return;
  }
  if (n > m->relcap) {
    m->relbuf = xrealloc(m->relbuf, n * sizeof(uint32_t));
    m->relcap = n;
  }
  for (i = 0; i < n; i++)
    m->relbuf[i] = rd_u32(r, "relation id");
  m->nrels = (int)n;
  m->relids = m->relbuf;
}

/* Logical decoding message: flags, LSN, prefix and content. */
static void dec_message (Reader *r, const PgoDecoder *d, PgoMsg *m) {
  rd_stream_xid(r, d, m);
  m->flags = rd_u8(r, "message flags");
  m->lsn = rd_u64(r, "message lsn");
  m->prefix = rd_str(r, "message prefix");
  m->content_len = rd_u32(r, "message length");
  if (r->failed == NULL && m->content_len > 0x7fffffffu)
    r->failed = "message length (negative)";
  m->content = rd_bytes(r, m->content_len, "message content");
}

/* A decoder for protocol version proto_version, outside any stream. */
void pgo_decoder_init (PgoDecoder *d, int proto_version) {
  d->proto_version = proto_version;
  d->in_stream = 0;
  d->stream_xid = 0;
}

void pgo_msg_init (PgoMsg *m) {
  memset(m, 0, sizeof(*m));
}

/* Free the buffers m owns and reset it for reuse. */
void pgo_msg_free (PgoMsg *m) {
  free(m->valbuf);
  free(m->colbuf);
  free(m->relbuf);
  pgo_msg_init(m);
}

/* Reset the per-message fields, keeping the reusable storage. */
static void msg_clear (PgoMsg *m) {
  PgoValue *vb = m->valbuf;
  PgoColumn *cb = m->colbuf;
  uint32_t *rb = m->relbuf;
  size_t vc = m->valcap, cc = m->colcap, rc = m->relcap;
  memset(m, 0, sizeof(*m));
  m->valbuf = vb; m->valcap = vc;
  m->colbuf = cb; m->colcap = cc;
  m->relbuf = rb; m->relcap = rc;
  m->nspname = m->relname = m->prefix = m->origin = "";
}

/* The protocol's name of a message kind, for messages and tests. */
const char *pgo_kind_name (int kind) {
  switch (kind) {
    case PGO_BEGIN: return "Begin";
    case PGO_COMMIT: return "Commit";
    case PGO_ORIGIN: return "Origin";
    case PGO_RELATION: return "Relation";
    case PGO_TYPE: return "Type";
    case PGO_INSERT: return "Insert";
    case PGO_UPDATE: return "Update";
    case PGO_DELETE: return "Delete";
    case PGO_TRUNCATE: return "Truncate";
    case PGO_MESSAGE: return "Message";
    case PGO_STREAM_START: return "Stream Start";
    case PGO_STREAM_STOP: return "Stream Stop";
    case PGO_STREAM_COMMIT: return "Stream Commit";
    case PGO_STREAM_ABORT: return "Stream Abort";
    default: return "unknown";
  }
}

/* Format a decoding error into err (when given); returns -1. */
static int fail (char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (err != NULL && errlen > 0)
    vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* See pgoutput.h: one message, by its kind byte; the decoder's stream
   state changes only when the whole message decoded. */
int pgo_decode (PgoDecoder *d, const uint8_t *data, size_t len, PgoMsg *m,
                char *err, size_t errlen) {
  Reader r;
  int kind, streaming_kind;
  msg_clear(m);
  if (data == NULL || len == 0)
    return fail(err, errlen, "pgoutput: empty message");
  r.p = data;
  r.len = len;
  r.pos = 1;
  r.failed = NULL;
  kind = data[0];
  m->kind = (PgoKind)kind;
  streaming_kind = kind == PGO_STREAM_START || kind == PGO_STREAM_STOP ||
                   kind == PGO_STREAM_COMMIT || kind == PGO_STREAM_ABORT;
  if (streaming_kind && d->proto_version < 2)
    return fail(err, errlen, "pgoutput: %s message needs protocol version 2 (negotiated %d)",
                pgo_kind_name(kind), d->proto_version);
  switch (kind) {
    case PGO_BEGIN:
      m->lsn = rd_u64(&r, "final lsn");
      m->ts = (int64_t)rd_u64(&r, "commit time");
      m->xid = rd_u32(&r, "xid");
      break;
    case PGO_COMMIT:
      m->flags = rd_u8(&r, "flags");
      m->lsn = rd_u64(&r, "commit lsn");
      m->end_lsn = rd_u64(&r, "end lsn");
      m->ts = (int64_t)rd_u64(&r, "commit time");
      break;
    case PGO_ORIGIN:
      m->lsn = rd_u64(&r, "origin lsn");
      m->origin = rd_str(&r, "origin name");
      break;
    case PGO_RELATION:
      dec_relation(&r, d, m);
      break;
    case PGO_TYPE:
      rd_stream_xid(&r, d, m);
      m->typoid = rd_u32(&r, "type oid");
      m->nspname = rd_str(&r, "type namespace");
      m->relname = rd_str(&r, "type name");
      break;
    case PGO_INSERT:
    case PGO_UPDATE:
    case PGO_DELETE:
      dec_change(&r, d, m);
      break;
    case PGO_TRUNCATE:
      dec_truncate(&r, d, m);
      break;
    case PGO_MESSAGE:
      dec_message(&r, d, m);
      break;
    case PGO_STREAM_START:
      m->xid = rd_u32(&r, "xid");
      m->flags = rd_u8(&r, "first segment flag");
      break;
    case PGO_STREAM_STOP:
      break;
    case PGO_STREAM_COMMIT:
      m->xid = rd_u32(&r, "xid");
      m->flags = rd_u8(&r, "flags");
      m->lsn = rd_u64(&r, "commit lsn");
      m->end_lsn = rd_u64(&r, "end lsn");
      m->ts = (int64_t)rd_u64(&r, "commit time");
      break;
    case PGO_STREAM_ABORT:
      m->xid = rd_u32(&r, "xid");
      m->subxid = rd_u32(&r, "subtransaction xid");
      break;
    default:
      if (kind >= 0x20 && kind < 0x7f)
        return fail(err, errlen, "pgoutput: unknown message type '%c'", kind);
      return fail(err, errlen, "pgoutput: unknown message type 0x%02x", kind);
  }
  if (r.failed != NULL)
    return fail(err, errlen, "pgoutput: malformed %s message: bad or truncated %s (at byte %zu of %zu)",
                pgo_kind_name(kind), r.failed, r.pos, len);
  if (r.pos != len)
    return fail(err, errlen, "pgoutput: malformed %s message: %zu unexpected trailing bytes",
                pgo_kind_name(kind), len - r.pos);
  /* stream block state: checked last so a failed decode changes nothing */
  switch (kind) {
    case PGO_STREAM_START:
      if (d->in_stream)
        return fail(err, errlen, "pgoutput: Stream Start for xid %u inside the stream block of xid %u",
                    m->xid, d->stream_xid);
      if (m->xid == 0)
        return fail(err, errlen, "pgoutput: Stream Start with invalid xid 0");
      d->in_stream = 1;
      d->stream_xid = m->xid;
      break;
    case PGO_STREAM_STOP:
      if (!d->in_stream)
        return fail(err, errlen, "pgoutput: Stream Stop outside a stream block");
      d->in_stream = 0;
      d->stream_xid = 0;
      break;
    case PGO_STREAM_COMMIT:
    case PGO_STREAM_ABORT:
    case PGO_BEGIN:
    case PGO_COMMIT:
      if (d->in_stream)
        return fail(err, errlen, "pgoutput: %s inside a stream block", pgo_kind_name(kind));
      if ((kind == PGO_STREAM_COMMIT || kind == PGO_STREAM_ABORT) && m->xid == 0)
        return fail(err, errlen, "pgoutput: %s with invalid xid 0", pgo_kind_name(kind));
      break;
    default:
      break;
  }
  return 0;
}

/* See pgoutput.h: "X/Y" with 1 to 8 hex digits on each side. */
int pgo_lsn_parse (const char *s, PgLsn *lsn) {
  uint64_t hi = 0, lo = 0;
  int nh = 0, nl = 0;
  if (s == NULL)
    return -1;
  for (; *s != '/'; s++, nh++) {
    int c = (unsigned char)*s, v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else return -1;
    if (nh >= 8) return -1;
    hi = hi * 16 + (uint64_t)v;
  }
  for (s++; *s != '\0'; s++, nl++) {
    int c = (unsigned char)*s, v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else return -1;
    if (nl >= 8) return -1;
    lo = lo * 16 + (uint64_t)v;
  }
  if (nh == 0 || nl == 0)
    return -1;
  *lsn = (hi << 32) | lo;
  return 0;
}

char *pgo_lsn_format (PgLsn lsn, char buf[PGO_LSN_BUFSZ]) {
  snprintf(buf, PGO_LSN_BUFSZ, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
  return buf;
}

double pgo_time_to_unix (int64_t pgts) {
  return (double)(pgts + PGO_EPOCH_OFFSET_US) / 1e6;
}

int64_t pgo_time_from_unix (double unix_seconds) {
  return (int64_t)(unix_seconds * 1e6) - PGO_EPOCH_OFFSET_US;
}
