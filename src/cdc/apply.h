/*
** apply.h
** Applies decoded source transactions to the target database: the write
** half of CDC.  Lua-free; one Applier per target connection, used by one
** thread.
**
** The caller groups source transactions: apply_txn() adds one whole
** source transaction to the open target transaction (a group),
** apply_commit() ends it with the source position (end LSN and commit
** time of its last source transaction) recorded in the same target
** transaction, so progress and data are durable atomically and resuming
** from apply_progress() never loses or repeats a change.  A source
** transaction is never split.
**
** Nothing waits for the target inside a group, and a commit does not
** wait either: every statement goes into one libpq pipeline that is
** never synchronised while data flows, so the next group is sent while
** earlier groups' COMMIT results are still on their way.  Results are
** read as they arrive; a COMMIT's result calls the on_commit callback
** with that group's position, and only then is the group confirmed
** (the caller tells the source).  Because the pipeline has no sync
** point between groups, an error in group k makes the server skip
** everything after it: groups before k are committed, k and every later
** group are lost, and the caller resumes from apply_progress().
**
** Inside a group, changes are buffered into segments.  A small segment
** is sent row by row as prepared statements.  A segment of at least
** set_threshold changes takes the set-based path: the net effect per key
** is computed and applied with one DELETE, one UPDATE for whole rows,
** one UPDATE per set of unchanged-TOAST columns and one INSERT per
** table, each taking all its rows as one binary text[] parameter of
** row literals (no COPY: COPY cannot be pipelined).  A set-based
** statement can fail where source order would not (two rows swapping a
** unique value): apply_set_failure() then names the table, and the
** caller replays from the committed position with that table applied
** row by row (ApplyOptions.row_only).
**
** Session: session_replication_role = replica (triggers and foreign-key
** checks off, as PostgreSQL's own subscriber does), the source's output
** settings (DateStyle, TimeZone, ...) so text comparisons for REPLICA
** IDENTITY FULL tables see the same text the source sent.
**
** Records given to apply_txn() are the ones the receiver stored: one flag
** byte (APPLY_REC_STREAMED when the message came inside a stream block and
** so carries an xid) followed by the pgoutput message.
*/
#ifndef PGTIDE_APPLY_H
#define PGTIDE_APPLY_H

#include <stddef.h>
#include <stdint.h>

#include "cdc/cdcerr.h"
#include "cdc/pgoutput.h"
#include "cdc/spill.h"

#define APPLY_REC_STREAMED 1

typedef enum ApplyProgressMode {
  APPLY_PROGRESS_AUTO = 0,       /* origin when permitted, else table */
  APPLY_PROGRESS_ORIGIN,         /* pg_replication_origin_* on the target */
  APPLY_PROGRESS_TABLE           /* row in pgtide.cdc_progress */
} ApplyProgressMode;

/* A table whose copy came from a later snapshot than the slot's (the
   full load resumed after a crash under a new snapshot): its copy already
   holds every source transaction ending at or before lsn, so the
   applier skips that table's changes in those transactions. */
typedef struct ApplySync {
  const char *schema, *table;
  PgLsn lsn;
} ApplySync;

typedef struct ApplyStats ApplyStats;

/* Called (on the applying thread, from inside apply_* calls) when the
   target reports a group committed: its position and the statistics as
   of its end (cumulative for this Applier). */
typedef void (*ApplyCommitFn)(void *ctx, PgLsn end_lsn, int64_t commit_ts, const ApplyStats *stats);

typedef struct ApplyOptions {
  const char *origin;            /* progress name: origin name / table key */
  const char *identity;          /* table mode: the migration recorded with the row
                                    (a row of another migration is refused); NULL: none */
  ApplyProgressMode progress;
  int set_threshold;             /* changes per segment for the set path; 0 never */
  size_t segment_bytes;          /* max raw bytes buffered per segment */
  int segment_changes;           /* max changes per segment */
  int replica_role;              /* SET session_replication_role = replica */
  const char *session_sql;       /* extra SET statements (source output settings) */
  volatile int *abort_flag;      /* set by another thread: stop waiting */
  const ApplySync *sync;         /* tables copied under later snapshots; must
                                    outlive the Applier (the Cdc owns it) */
  int nsync;
  const char *const *row_only;   /* tables ("schema.table") applied row by row: their
                                    set-based apply failed; borrowed */
  int nrow_only;
  ApplyCommitFn on_commit;       /* a group is committed on the target */
  void *on_commit_ctx;
} ApplyOptions;

struct ApplyStats {
  uint64_t inserts, updates, deletes, truncates;
  uint64_t txns, commits;        /* source transactions, target commits */
  uint64_t row_changes;          /* changes sent as single statements */
  uint64_t set_segments, set_changes, set_rows;   /* set path use */
  uint64_t fallbacks;            /* set segments replayed row by row */
  uint64_t missing;              /* UPDATE/DELETE that found no row */
  uint64_t bytes;                /* raw change bytes applied */
  uint64_t skipped;              /* changes already in a table's copy (ApplySync) */
};

typedef struct Applier Applier;

/* Connect and prepare the session (role, settings, progress origin or
   table).  NULL with err on failure. */
Applier *apply_open(const char *conninfo, const ApplyOptions *opt, CdcError *err);
void apply_close(Applier *a);

/* The committed source position (0 when nothing was applied yet). */
int apply_progress(Applier *a, PgLsn *lsn, CdcError *err);

/* Apply one complete source transaction, which ends at end_lsn, into the
   open group (BEGIN is sent before the first).  Sends without waiting
   for results (it only waits when the connection's buffers are full, or
   once to read the target's catalog for a table seen the first time).
   On error the group and every group in flight are lost: the caller
   closes the Applier and resumes from apply_progress(). */
int apply_txn(Applier *a, SpillBuf *txn, PgLsn end_lsn, CdcError *err);

/* End the open group: send the progress record (end_lsn/commit_ts) and
   COMMIT, and ask the server to send the results.  Does not wait: the
   group is in flight until on_commit reports it. */
int apply_commit(Applier *a, PgLsn end_lsn, int64_t commit_ts, CdcError *err);

/* Groups sent and not yet reported committed. */
int apply_inflight(const Applier *a);

/* Read the results that arrive within timeout_ms (0: only those already
   there), calling on_commit for committed groups.  -1 with err when a
   statement failed or the connection broke. */
int apply_poll(Applier *a, int timeout_ms, CdcError *err);

/* Wait until at most n groups are in flight (honouring the abort flag).
   -1 with err when a statement failed, the connection broke, or the wait
   was aborted. */
int apply_wait(Applier *a, int n, CdcError *err);

/* After a failure: the table ("schema.table") whose set-based statement
   failed (replay with it row by row), or NULL when the failure was not a
   set-based statement's.  Valid until apply_close. */
const char *apply_set_failure(const Applier *a);

int apply_in_group(const Applier *a);
const ApplyStats *apply_stats(const Applier *a);
/* "origin" or "table" */
const char *apply_progress_name(const Applier *a);
/* Backend PID of the apply connection (tests terminate it). */
int apply_backend_pid(const Applier *a);

/* Drop the progress origin and/or table row of 'name' on the target
   (cleanup; 'mode' says which, AUTO both).  Missing objects are not
   errors; a row recorded for another migration than 'identity' (when
   not NULL) is kept. */
int apply_drop_progress(const char *conninfo, const char *name, ApplyProgressMode mode,
                        const char *identity, CdcError *err);

/* Run sql with n text parameters on conn, which must be idle (not in
   pipeline mode).  A result other than COMMAND_OK or TUPLES_OK becomes
   err ("what: server message").  When out is not NULL it gets the result
   (the caller PQclears it).  0, or -1 with err. */
int apply_exec(PGconn *conn, const char *sql, int n, const char *const *vals, PGresult **out,
               const char *what, CdcError *err);

#endif
