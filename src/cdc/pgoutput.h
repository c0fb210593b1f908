/*
** pgoutput.h
** Decoder for the messages of PostgreSQL's built-in logical decoding
** output plugin "pgoutput": protocol version 1 and version 2 (streaming
** of large in-progress transactions).  Lua-free and libpq-free: it only
** turns bytes into a PgoMsg, so it can be unit-tested and fuzzed alone.
**
** Zero copy: strings and column values in a decoded PgoMsg point into
** the input bytes, which must stay alive and unchanged while the message
** is used.  Strings are NUL-terminated in the protocol, so they are valid
** C strings; column values are not (use len).  The arrays (columns,
** tuple values, truncated relation ids) are owned by the PgoMsg and
** reused from one decode to the next: pgo_msg_free() releases them.
**
** Bounds: every read is checked against the input length, counts are
** checked against the bytes left before anything is allocated, and a
** message must be consumed exactly.  Malformed input returns -1 with a
** message naming the message type and what was wrong; it never reads
** out of bounds and never allocates more than a small multiple of the
** input size.
*/
#ifndef PGTIDE_PGOUTPUT_H
#define PGTIDE_PGOUTPUT_H

#include <stddef.h>
#include <stdint.h>

typedef uint64_t PgLsn;          /* a WAL position; 0 is "invalid" */

#define PGO_LSN_BUFSZ 20         /* "FFFFFFFF/FFFFFFFF" + NUL */
#define PGO_EPOCH_OFFSET_US 946684800000000LL  /* 2000-01-01 minus 1970-01-01 */

typedef enum PgoKind {
  PGO_BEGIN = 'B',
  PGO_COMMIT = 'C',
  PGO_ORIGIN = 'O',
  PGO_RELATION = 'R',
  PGO_TYPE = 'Y',
  PGO_INSERT = 'I',
  PGO_UPDATE = 'U',
  PGO_DELETE = 'D',
  PGO_TRUNCATE = 'T',
  PGO_MESSAGE = 'M',
  PGO_STREAM_START = 'S',
  PGO_STREAM_STOP = 'E',
  PGO_STREAM_COMMIT = 'c',
  PGO_STREAM_ABORT = 'A'
} PgoKind;

/* Column value kinds inside TupleData. */
#define PGO_VAL_NULL 'n'
#define PGO_VAL_UNCHANGED 'u'    /* unchanged TOASTed value: not sent */
#define PGO_VAL_TEXT 't'
#define PGO_VAL_BINARY 'b'

/* Relation column flag: part of the replica identity (key). */
#define PGO_COL_KEY 1

/* Truncate options. */
#define PGO_TRUNCATE_CASCADE 1
#define PGO_TRUNCATE_RESTART_IDENTITY 2

typedef struct PgoValue {
  char kind;                     /* PGO_VAL_* */
  uint32_t len;                  /* bytes of data ('t' and 'b' only) */
  const char *data;              /* into the input; not NUL-terminated */
} PgoValue;

typedef struct PgoTuple {
  int ncols;
  PgoValue *vals;                /* ncols entries, owned by the PgoMsg */
} PgoTuple;

typedef struct PgoColumn {
  uint8_t flags;                 /* PGO_COL_KEY */
  const char *name;
  uint32_t typoid;
  int32_t typmod;
} PgoColumn;

typedef struct PgoMsg {
  PgoKind kind;
  uint32_t xid;     /* Begin; streamed changes: the (sub)transaction;
                       Stream Start/Commit/Abort: the top-level xid */
  /* Begin: lsn = final (commit) LSN.  Commit and Stream Commit: lsn =
     commit LSN, end_lsn = end of the commit record.  Origin: lsn = the
     commit LSN on the origin.  Message: lsn of the message. */
  PgLsn lsn, end_lsn;
  int64_t ts;                    /* commit time, microseconds since 2000-01-01 */
  uint8_t flags;                 /* Commit flags, Message flags (1 = transactional),
                                    Truncate options, Stream Start first-segment */
  uint32_t subxid;               /* Stream Abort */
  /* Relation, Insert, Update, Delete */
  uint32_t relid;
  const char *nspname, *relname; /* Relation; Type: namespace and type name */
  char replident;                /* Relation: 'd', 'n', 'f' or 'i' */
  int ncols;
  PgoColumn *cols;               /* Relation columns, owned */
  uint32_t typoid;               /* Type */
  char old_kind;                 /* Update/Delete: 'K' (key), 'O' (full old), 0 */
  PgoTuple oldtup, newtup;       /* Delete uses oldtup only */
  int nrels;                     /* Truncate */
  uint32_t *relids;              /* owned */
  const char *prefix;            /* Message */
  const char *content;           /* Message payload (not NUL-terminated) */
  uint32_t content_len;
  const char *origin;            /* Origin name */
  /* reusable storage behind the pointers above */
  PgoValue *valbuf;
  size_t valcap;
  PgoColumn *colbuf;
  size_t colcap;
  uint32_t *relbuf;
  size_t relcap;
} PgoMsg;

/*
** Decoder state across messages: the negotiated protocol version and
** whether we are inside a Stream Start/Stop block (where change messages
** carry an xid).
*/
typedef struct PgoDecoder {
  int proto_version;             /* 1 or 2 */
  int in_stream;
  uint32_t stream_xid;           /* top-level xid of the open stream block */
} PgoDecoder;

void pgo_decoder_init(PgoDecoder *d, int proto_version);
void pgo_msg_init(PgoMsg *m);
void pgo_msg_free(PgoMsg *m);

/*
** Decode one pgoutput message (the payload of an XLogData frame).  On
** success fills 'm' (pointing into 'data') and updates the decoder
** state; returns 0.  On malformed input returns -1 and writes a message
** to err; the decoder state is unchanged.
*/
int pgo_decode(PgoDecoder *d, const uint8_t *data, size_t len, PgoMsg *m,
               char *err, size_t errlen);

/* Name of a message kind ("Begin", "Insert", ...), "unknown" otherwise. */
const char *pgo_kind_name(int kind);

/* Parse "X/Y" (hex) into *lsn; 0 on success, -1 when malformed. */
int pgo_lsn_parse(const char *s, PgLsn *lsn);
/* Format as "X/Y" (uppercase hex, as PostgreSQL prints it); returns buf. */
char *pgo_lsn_format(PgLsn lsn, char buf[PGO_LSN_BUFSZ]);

/* PostgreSQL timestamps (microseconds since 2000-01-01 UTC) to and from
   Unix time in seconds. */
double pgo_time_to_unix(int64_t pgts);
int64_t pgo_time_from_unix(double unix_seconds);

/* Big-endian readers and writers shared with the streaming protocol
   code and the applier's binary parameters. */
uint64_t pgo_get_u64(const uint8_t *p);
uint32_t pgo_get_u32(const uint8_t *p);
void pgo_put_u32(uint8_t *p, uint32_t v);
void pgo_put_u64(uint8_t *p, uint64_t v);

#endif
