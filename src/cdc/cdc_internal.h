/*
** cdc_internal.h
** What the files of the CDC worker share: the transaction and the Cdc
** structs and the functions one file calls in another.  The public API
** is cdc.h (the worker, slots, cleanup) and apply.h (the apply engine);
** nothing outside src/cdc/ includes this header.
**
** Where things are (the design is described in cdc.h and docs/cdc.md):
**
**   cdc.c              entry points: cdc_start(), status, waits, pause,
**                      resume, stop, free; clock and wakeup helpers
**   cdc_session.c      a session: source checks and settings, applier,
**                      replication connection, receiver thread; closing
**   cdc_receiver.c     the receiver thread: stream -> pgoutput ->
**                      transaction buffers -> queue; keepalives, status
**   cdc_queue.c        source transactions and the receiver -> applier
**                      queue
**   cdc_worker.c       the supervisor thread (reconnects with backoff)
**                      and the apply loop (groups, commits, pause)
**   cdc_monitor.c      the monitor thread: source WAL position and the
**                      slot's retained WAL, for lag
**   cdc_status.c       lag and state_dir/cdc-status.json
**   cdc_slot.c         slots and publications on the source; cleanup
**   cdc_lua.c          the Lua binding core.cdc (the only Lua file)
**
**   stream.c           the replication protocol: slot creation,
**                      START_REPLICATION, CopyBoth frames, standby status
**   pgoutput.c         the pgoutput decoder (protocol 1 and 2)
**   spill.c            transaction buffers that move to disk past a cap
**   cdcerr.c           the error record shared by these files
**   apply*.c           the apply engine; apply_internal.h maps its files
**
** Threads: the supervisor (cdc_worker.c, runs the apply loop), a
** session's receiver (cdc_receiver.c) and the monitor (cdc_monitor.c).
** Everything in a Cdc that more than one of them touches is under its
** 'mu'; 'cond' signals status changes (applied position, state, stop),
** 'qcond' the queue.  The receiver owns 'repl' while it runs, the
** monitor owns 'monitor', the supervisor the Applier.
**
** Ownership: the Cdc owns its strings, the queue's transactions and the
** session's connections; cdc_free() frees everything.  Functions
** returning int give 0 or -1 with a CdcError; none raises.
*/
#ifndef PGTIDE_CDC_INTERNAL_H
#define PGTIDE_CDC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include <libpq-fe.h>

#include "cdc/cdc.h"

/* {======================================================================
** Types
** ======================================================================= */

/* A subtransaction of a streamed transaction: where its changes start
   in the buffer (a Stream Abort of it truncates there). */
typedef struct SubXact {
  uint32_t xid;
  uint64_t off, nrecords;        /* where its first change starts */
} SubXact;

/* A source transaction being received or waiting to be applied. */
typedef struct Txn {
  struct Txn *next;
  uint32_t xid;
  PgLsn end_lsn;
  int64_t commit_ts;
  SpillBuf buf;
  SubXact *subs;                 /* streamed transactions only */
  int nsubs, subcap;
  int counted_spill;
} Txn;

/* The worker (see the threads and ownership above). */
struct Cdc {
  /* configuration (strings owned) */
  char *source, *target, *slot, *publication, *origin, *state_dir, *identity;
  ApplySync *sync;               /* owned copy of cfg.sync */
  int status_file;               /* write state_dir/cdc-status.json (a state_dir was given) */
  CdcConfig cfg;
  char *session_sql;             /* the source's output settings for the applier */

  pthread_mutex_t mu;
  pthread_cond_t cond;           /* status changes: applied position, state, stop */
  pthread_cond_t qcond;          /* the queue: a transaction for a waiting applier,
                                    room for a waiting receiver */
  int applier_waiting, recv_waiting;   /* who sleeps on qcond */
  pthread_t thread;
  int thread_started;
  pthread_t monitor_thread;      /* cdc_monitor_main */
  int monitor_started;
  int stop;                      /* stop requested */
  int abort_wait;                /* give up waiting on the target (read by the Applier) */
  int finished;                  /* supervisor exited */
  CdcStatus st;
  double caught_up_time;

  /* queue, receiver -> applier */
  Txn *qhead, *qtail;
  int applier_busy;
  int recv_open;                 /* receiver holds an open transaction */
  _Atomic uint64_t recv_msgs;    /* messages received (a progress signal, no lock) */

  /* the current session */
  int session_stop;
  int recv_failed;
  CdcError recv_err;
  pthread_t recv_thread;
  int recv_started;
  PGconn *repl;                  /* owned by the receiver while it runs */
  PGconn *monitor;
  Applier *applier;
  PgLsn session_start;
  int group_open;                /* the applier has an uncommitted group (under mu) */
  ApplyStats published;          /* this session's applier statistics already added to st */
  char **row_only;               /* tables applied row by row (their set-based apply failed) */
  int nrow_only;

  double last_status_file;
};

/* }====================================================================== */

/* {======================================================================
** Functions one file calls in another
** ======================================================================= */

/* cdc.c */
double cdc_now(void);                             /* wall-clock seconds */
void cdc_deadline(struct timespec *ts, double secs);
void cdc_wake(Cdc *c);                            /* caller holds mu */
int cdc_stopping(Cdc *c);

/* cdc_queue.c */
Txn *cdc_txn_new(Cdc *c, uint32_t xid);
void cdc_txn_free(Txn *t);
size_t cdc_queued_mem(Cdc *c);
void cdc_queue_clear(Cdc *c);                     /* caller holds mu */

/* cdc_status.c */
void cdc_update_lag(Cdc *c);                      /* caller holds mu */
void cdc_status_write(Cdc *c, int force);

/* cdc_monitor.c */
void *cdc_monitor_main(void *arg);

/* cdc_receiver.c */
void *cdc_receiver_main(void *arg);

/* cdc_session.c */
int cdc_session_open(Cdc *c, CdcError *err);
void cdc_session_close(Cdc *c);

/* cdc_worker.c */
void cdc_group_committed(void *ctx, PgLsn end_lsn, int64_t commit_ts, const ApplyStats *stats);
void *cdc_supervisor_main(void *arg);

/* }====================================================================== */

#endif
