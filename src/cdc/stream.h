/*
** stream.h
** The logical replication side of CDC, over a replication connection
** (pgconn_open(..., PGCONN_REPLICATION)): slot creation with an exported
** snapshot, START_REPLICATION for pgoutput, reading CopyBoth frames
** (XLogData and primary keepalives) and sending standby status updates.
** Lua-free; the frame parser and status builder are pure functions so
** they can be unit-tested without a server.
**
** Flow control is the caller's: stream_read() never blocks longer than
** its timeout, and the caller decides which LSNs to confirm.  Only LSNs
** whose transactions are committed on the target may be sent as flush
** positions, otherwise a crash could lose changes the slot no longer
** keeps.
*/
#ifndef PGTIDE_STREAM_H
#define PGTIDE_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "cdc/cdcerr.h"
#include "cdc/pgoutput.h"

#define STREAM_STATUS_LEN 34     /* 'r' + 3 LSNs + time + reply flag */

typedef struct StreamFrame {
  char kind;                     /* 'w' XLogData, 'k' keepalive */
  PgLsn start;                   /* XLogData: WAL start of the data */
  PgLsn wal_end;                 /* server's WAL end (position sent so far) */
  int64_t send_time;             /* server clock, microseconds since 2000 */
  int reply_requested;           /* keepalive: answer immediately */
  const uint8_t *data;           /* XLogData payload (a pgoutput message) */
  size_t len;
} StreamFrame;

typedef struct SlotInfo {
  char name[64];
  PgLsn lsn;                     /* consistent point */
  char snapshot[64];             /* exported snapshot name, "" if none */
  char plugin[64];
} SlotInfo;

/* Parse one CopyData payload from the server.  0, or -1 with err. */
int stream_parse_frame(const uint8_t *buf, size_t len, StreamFrame *f,
                       char *err, size_t errlen);

/* Build a standby status update into out (STREAM_STATUS_LEN bytes). */
void stream_build_status(uint8_t *out, PgLsn write, PgLsn flush, PgLsn apply,
                         int64_t now_pg, int reply);

/* Slot and publication names: 1-63 of [a-z0-9_] (PostgreSQL's rule for
   slot names, which we also apply to derived publication and origin
   names).  0 when valid, -1 with err. */
int stream_check_name(const char *what, const char *name, CdcError *err);

/* Highest pgoutput protocol version for a server: 2 from PostgreSQL 14
   (streaming of in-progress transactions), 1 before. */
int stream_proto_for_server(int server_version);

/*
** CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput, with
** EXPORT_SNAPSHOT when export is set (the snapshot stays valid until
** the next command on this connection or until it closes).  Fills out.
** Waits as long as the server does (slot creation waits for the
** transactions in progress to end).
*/
int stream_create_slot(PGconn *repl, const char *slot, int temporary, int export_snapshot,
                       SlotInfo *out, CdcError *err);

/* The two halves of stream_create_slot, for a caller that bounds the
   wait itself (PQsendQuery, then its own wait on the result). */
int stream_create_slot_send(PGconn *repl, const char *slot, int temporary, int export_snapshot,
                            CdcError *err);
int stream_create_slot_result(PGconn *repl, const PGresult *res, SlotInfo *out, CdcError *err);

/*
** START_REPLICATION SLOT slot LOGICAL start (proto_version, publication_names
** from the comma-separated 'publications', streaming 'on' when asked and
** proto >= 2).  start 0 lets the server resume at the slot's confirmed
** position.  On success the connection is in CopyBoth mode.
*/
int stream_start(PGconn *repl, const char *slot, PgLsn start, int proto,
                 const char *publications, int streaming, CdcError *err);

/*
** Wait up to timeout_ms for one CopyData message.  Returns its length
** with *buf set (the caller PQfreemem()s it), 0 when nothing arrived in
** time, -1 on error or when the server ended the stream (err filled).
*/
int stream_read(PGconn *repl, int timeout_ms, char **buf, CdcError *err);

/* Send a standby status update and flush.  0, or -1 with err. */
int stream_send_status(PGconn *repl, PgLsn write, PgLsn flush, PgLsn apply,
                       int reply, CdcError *err);

/* The current time as a PostgreSQL timestamp. */
int64_t stream_now_pg(void);

#endif
