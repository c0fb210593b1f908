/*
** cdc.h
** The CDC worker: a background supervisor thread that applies the
** replication stream to the target, and a receiver thread per session
** that reads it from the source.  Lua-free; src/cdc/cdc_lua.c is its
** binding ("core.cdc").
**
**   receiver thread                      supervisor (apply) thread
**   replication conn + monitor conn      target conn (Applier, pipelined)
**   frames -> pgoutput -> Txn buffers    pops whole transactions in
**   (spilled past the memory cap)  --->  commit order, groups them,
**   standby status every second          sends each group with its progress
**   (flush = applied position)     <---  and COMMIT without waiting (up to
**                                        'inflight' groups), publishes a
**                                        group's position when its COMMIT
**                                        result arrives
**
** A session is one (receiver, applier) pair started from the progress
** recorded on the target.  Any failure ends the session; retryable ones
** (lost connections, terminated backends, deadlocks) start a new session
** after a backoff, others put the worker in the failed state with the
** error.  Because the target commits data and progress atomically and
** the source only learns positions that are committed, a new session
** (or a new process after kill -9) resumes exactly where the target is.
**
** Every public function is thread-safe: the status is a copy taken
** under the worker's mutex.
*/
#ifndef PGTIDE_CDC_H
#define PGTIDE_CDC_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "cdc/apply.h"
#include "cdc/cdcerr.h"
#include "cdc/pgoutput.h"
#include "cdc/stream.h"

typedef struct CdcConfig {
  const char *source, *target;   /* conninfo strings */
  const char *slot;              /* logical slot on the source (must exist) */
  const char *publication;       /* comma-separated publication names */
  const char *origin;            /* progress name on the target (default: slot) */
  const char *state_dir;         /* spill files and cdc-status.json (default: spill
                                    files in /tmp, no status file) */
  int proto_version;             /* 0: highest the source supports */
  int streaming;                 /* -1 auto (on with protocol 2), 0 off, 1 on */
  size_t memory_cap;             /* bytes of change data held in RAM (default 64 MB) */
  int group_txns;                /* source transactions per target commit (default 10000) */
  int inflight;                  /* target transactions in flight: sent, COMMIT result
                                    not yet back (default 8) */
  int batch;                     /* changes per apply segment (default 20000) */
  int set_threshold;             /* segment size that uses the set path (default 500; 0 never) */
  ApplyProgressMode progress;    /* where the target records progress */
  const char *identity;          /* the migration recorded with a progress row */
  int replica_role;              /* session_replication_role = replica (default 1) */
  int status_interval_ms;        /* standby status interval (default 1000) */
  int receive_timeout_ms;        /* silence from the source that counts as a lost
                                    connection (default 60000; we ask for a reply
                                    every status interval) */
  const ApplySync *sync;         /* tables copied under later snapshots than the
                                    slot's: their changes up to each one's LSN are
                                    skipped (see apply.h) */
  int nsync;
} CdcConfig;

typedef enum CdcState {
  CDC_STARTING = 0,
  CDC_STREAMING,
  CDC_PAUSED,
  CDC_RECONNECTING,
  CDC_STOPPED,
  CDC_FAILED
} CdcState;

typedef struct CdcStatus {
  CdcState state;
  PgLsn received_lsn;            /* last WAL position seen from the source */
  PgLsn applied_lsn;             /* every transaction ending at or before is on the target */
  PgLsn commit_lsn;              /* end LSN of the last transaction applied */
  PgLsn source_lsn;              /* source's current WAL position (sampled each second) */
  PgLsn pause_lsn;               /* 0 when no pause is requested */
  PgLsn start_lsn;               /* where the current session started */
  uint64_t lag_bytes;
  double lag_seconds;
  double last_commit_time;       /* source commit time of the last applied txn (Unix s) */
  int64_t retained_bytes;        /* WAL the slot holds on the source, -1 unknown */
  uint64_t queued_txns, queued_bytes, spilled_txns, received_txns, received_bytes;
  ApplyStats stats;              /* cumulative over sessions */
  double recv_wait_s;            /* receiver blocked on a full queue (apply is the bottleneck) */
  double apply_idle_s;           /* applier waiting for transactions (the source is) */
  int reconnects;
  int proto_version, streaming;
  char progress[8];              /* "origin" / "table" */
  int apply_pid, stream_pid;     /* backend PIDs of the current session (tests) */
  CdcError error;                /* last error (the fatal one when failed) */
} CdcStatus;

typedef struct Cdc Cdc;

/* Start: validates the configuration, connects the first session
   synchronously (so a missing slot or an unreachable target is
   reported here), then runs in the background.  NULL with err. */
Cdc *cdc_start(const CdcConfig *cfg, CdcError *err);

void cdc_get_status(Cdc *c, CdcStatus *out);
const char *cdc_state_name(CdcState s);

/* Wait until applied_lsn >= lsn.  1 reached, 0 timed out, -1 the worker
   failed or stopped (see the status error). */
int cdc_wait_applied(Cdc *c, PgLsn lsn, double timeout_s);

/* Stop applying after the last transaction ending at or before lsn
   (a consistent point); cdc_resume() lifts it.  A pause is reached when
   applied_lsn >= lsn. */
void cdc_pause_at(Cdc *c, PgLsn lsn);
void cdc_resume(Cdc *c);

/* Stop: finish the transaction group in flight (up to timeout_s, then
   abandon it: it is rolled back and will be applied again on resume),
   stop both threads, close connections.  Idempotent. */
void cdc_stop(Cdc *c, double timeout_s);
void cdc_free(Cdc *c);             /* stops first if needed */

/* A slot created with an exported snapshot: the replication connection
   stays open (idle) so the snapshot remains importable until closed. */
typedef struct CdcSlot {
  PGconn *conn;
  SlotInfo info;
} CdcSlot;

/*
** Create the publication when missing (FOR ALL TABLES, or FOR TABLE the
** comma-separated 'tables' list), then the slot with an exported
** snapshot.  The publication must exist before the slot, or decoding
** the slot's first changes fails.  A temporary slot is dropped with its
** session (cdc_slot_close): it only marks a snapshot's position.  NULL
** with err (an existing slot is a CDC_ERR_CONFIG error with sqlstate
** 42710).
*/
CdcSlot *cdc_slot_create(const char *source, const char *slot, const char *publication,
                         const char *tables, int temporary, CdcError *err);
void cdc_slot_close(CdcSlot *s);

typedef struct CdcSlotInfo {
  int exists, active;
  PgLsn restart_lsn, confirmed_lsn, current_lsn;
  int64_t retained_bytes;
  char wal_status[16];
} CdcSlotInfo;

int cdc_slot_info(const char *source, const char *slot, CdcSlotInfo *out, CdcError *err);

/* What cdc_drop removes; any field may be NULL (mode: AUTO tries both
   progress kinds). */
typedef struct CdcDrop {
  const char *source, *slot, *publication;   /* on the source */
  const char *target, *origin;               /* on the target: the progress record */
  ApplyProgressMode progress;                /* which kind of record was used */
  const char *identity;                      /* table rows of other migrations are kept */
} CdcDrop;

/* Drop what exists of: the slot and publication on the source, the
   progress origin / row on the target. */
int cdc_drop(const CdcDrop *d, CdcError *err);

#endif
