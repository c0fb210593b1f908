/*
** copy_relay.h
** Moving one COPY stream from a source connection to a target
** connection: `COPY ... TO STDOUT` on the source, `COPY ... FROM STDIN`
** on the target, and the bytes relayed unchanged in between.  No row
** is parsed: what the source sends is what the target receives, in the
** same format (binary or text), so the relay costs one memcpy per row.
**
** Rows are regrouped into CopyData messages of about 64 kB on the way
** out (COPY FROM does not need message and row boundaries to match), so
** the target sees few large messages instead of one per row.  Memory
** stays bounded by that buffer plus the largest single row.
**
** Lua-free; used by the full-load workers (load_workers.c) and its tests.
*/
#ifndef PGTIDE_COPY_RELAY_H
#define PGTIDE_COPY_RELAY_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

/* Live counters, updated as the relay runs and readable from other
   threads (relaxed atomics: progress display, not synchronisation). */
typedef struct CopyCounters {
  _Atomic int64_t rows;     /* CopyData messages received (about one per row) */
  _Atomic int64_t bytes;    /* payload bytes relayed */
} CopyCounters;

/* The outcome of one relay. */
typedef struct CopyRelayResult {
  int64_t rows_out;        /* rows the source reported ("COPY n") */
  int64_t rows_in;         /* rows the target reported */
  int64_t bytes;           /* payload bytes relayed */
  int failed_side;         /* on error: 0 none, 1 source, 2 target */
  char sqlstate[6];        /* on error, when the server sent one */
} CopyRelayResult;

typedef enum CopyRelayStatus {
  COPY_RELAY_OK = 0,
  COPY_RELAY_ERROR = -1,   /* err and result->failed_side say what failed */
  COPY_RELAY_STOPPED = -2  /* should_stop() returned non-zero: both COPYs abandoned */
} CopyRelayStatus;

/*
** Run 'out_sql' (a COPY ... TO STDOUT) on 'src' and 'in_sql' (a
** COPY ... FROM STDIN) on 'dst' and relay every byte.  Both connections
** must be idle; any transaction control (BEGIN, TRUNCATE, COMMIT) is the
** caller's.  'counters' (may be NULL) is updated while data flows.
** 'should_stop' (may be NULL) is polled at least every 200 ms; when it
** returns non-zero the relay abandons both COPYs and returns
** COPY_RELAY_STOPPED: the target COPY is ended with an error (so its
** transaction is aborted) and the source is cancelled.
** On success both row counts are checked to be equal.
*/
CopyRelayStatus copy_relay(PGconn *src, PGconn *dst, const char *out_sql, const char *in_sql,
                           CopyCounters *counters, int (*should_stop)(void *), void *stop_arg,
                           CopyRelayResult *result, char *err, size_t errlen);

/* Parse the row count of a "COPY n" command tag, -1 when absent. */
int64_t copy_tag_rows(const char *tag);

/* Whether two servers may exchange COPY binary data at all (the type
   checks are per column, see load_plan.c): same major version. */
int copy_binary_versions_ok(int src_version, int dst_version);

#endif
