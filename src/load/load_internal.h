/*
** load_internal.h
** Shared by the files of the full load (src/load); not for callers,
** whose API is fullload.h (engine), copy_relay.h (one COPY relayed)
** and parallel_sql.h (statements on N connections).
**
** Files, in the order a load runs:
**   load_plan.c        the planner: tables in scope, sizes, units
**                      (whole, key ranges, CTID ranges), range WHEREs
**   fullload.c         life cycle: snapshot holder, start, wait (events
**                      and progress drawing), cancel, finish
**   load_resume.c      units grouped by table; done units skipped and
**                      split tables prepared so every redo is idempotent
**   load_workers.c     worker threads: sessions in the snapshot, one
**                      unit per transaction, retries, the work queue
**   copy_relay.c       one COPY TO STDOUT relayed into one COPY FROM STDIN
**   load_after.c       per-table post-load statements (index and key
**                      groups, then the final VACUUM ANALYZE)
**   load_verify.c      per-table checks under the load's snapshot
**                      (bookkeeping, batches, the validation call)
**   load_progress.c    progress figures, the summary line, the status
**                      line or log lines
**   parallel_sql.c     independent statements on N connections (the
**                      post-data step, VACUUM)
**   load_lua.c         the Lua module core.load (binding only)
**
** Naming: functions of fullload.h start with fullload_; functions
** shared between these files start with fl_ (declared here); the rest
** are static.  Types keep the Fl prefix of fullload.h.
**
** Locking: FullLoad.mu guards the queues, counters and unit states
** that workers change; unit live counters are relaxed atomics.
*/
#ifndef PGTIDE_LOAD_INTERNAL_H
#define PGTIDE_LOAD_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "load/fullload.h"
#include "pg/pgconn.h"
#include "util/buf.h"
#include "util/log.h"

typedef struct FlTable {
  int first_unit;          /* any unit of the table (for its names) */
  int units;
  int64_t est_bytes;
  int pending;             /* units still to load in this run */
  int after;               /* index into FullLoad.afters, -1: none */
  double index_seconds;    /* time its index/key groups took (under mu) */
} FlTable;

/* A copy of one FlAfter (statements owned). */
typedef struct AfterList {
  char **statements, **checks;
  int *groups;             /* statements of one group run in order; groups in parallel */
  int n;
  char *final;             /* run once every group is done (may be NULL) */
  int *group_ids;          /* the distinct groups */
  int ngroups;
  int remaining;           /* groups not finished yet */
} AfterList;

/* A queued piece of a table's statements: one group, or the final one. */
typedef struct AfterTask {
  int table;
  int group;               /* index into group_ids, -1 for the final statement */
} AfterTask;

/* A check's bookkeeping (its result is in FullLoad.check_res). */
typedef struct CheckState {
  int *tables;             /* indexes into FullLoad.tables */
  int ntables;
  int remaining;           /* tables not ready yet; -1: will not run */
  int64_t est_bytes;
} CheckState;

#define CHECK_BATCH_TABLES 250            /* small tables share one validation run */

#define CHECK_BATCH_BYTES (64LL << 20)    /* ... up to about this much data */

struct FullLoad {
  FlPlan plan;
  char *source, *target, *snapshot;
  char encoding[64];
  int jobs, progress, retries;
  double log_interval;
  PGconn *holder;          /* source connection holding (or exporting) the snapshot */
  pthread_t *threads;
  int nthreads;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int next;                /* next unit to consider */
  int *events;             /* finished units not yet returned */
  int ev_head, ev_tail;
  int running;             /* workers alive */
  _Atomic int stop;
  int failed;
  char errmsg[PGCONN_ERRLEN + 256];
  char sqlstate[6];
  double t0, last_draw, last_log;
  int status_shown;
  double base_fraction;    /* share already done at start (skipped units) */
  int *unit_table;         /* unit index -> table index */
  FlTable *tables;
  int ntables;
  int units_running;       /* units being copied now */
  AfterList *afters;       /* per-table statements (FullLoadOptions.after) */
  int nafters;
  char *after_setup;
  AfterTask *after_q;      /* statement groups ready to run */
  int aq_head, aq_tail;
  int tasks, tasks_done;   /* tables with statements to run / finished */
  double copy_end;         /* when the last unit was loaded (0 until then) */
  CheckState *checks;      /* per-table verification (FullLoadOptions.checks) */
  FlCheckResult *check_res;
  int nchecks;
  int *check_q;            /* ready checks */
  int cq_head, cq_tail;
  int checks_run, checks_done;   /* checks that will run / have run */
  int busy;                /* workers doing a unit, statements or checks now */
};

/* fullload.c */
double fl_now_s(void);
int fl_should_stop(void *arg);

/* load_resume.c */
int fl_find_table(FullLoad *fl, const char *nsp, const char *rel);
void fl_index_tables(FullLoad *fl);
int fl_prepare_units(FullLoad *fl, PGconn *dst, const FullLoadOptions *o, char *err, size_t errlen);

/* load_workers.c */
int fl_session_setup(PGconn *conn, const char *encoding, int target, char *err, size_t errlen);
PGconn *fl_open_source(FullLoad *fl, char *err, size_t errlen);
PGconn *fl_open_target(FullLoad *fl, char *err, size_t errlen);
void fl_record_failure(FullLoad *fl, const FlUnit *u, const char *msg, const char *sqlstate);
void *fl_worker_main(void *arg);

/* load_after.c */
void fl_setup_afters(FullLoad *fl, const FullLoadOptions *o);
void fl_queue_after(FullLoad *fl, int t);
void fl_free_afters(FullLoad *fl);
void fl_run_after(FullLoad *fl, int t, int group, PGconn **conn);

/* load_verify.c */
void fl_table_ready(FullLoad *fl, int t);
void fl_setup_checks(FullLoad *fl, const FullLoadOptions *o);
void fl_free_checks(FullLoad *fl);
void fl_run_checks(FullLoad *fl, int first, int n, int jobs);

/*
** Compare 'names' (validation names) between source and target with the
** validation core, the source read under 'snapshot', with 'jobs'
** connections per side; one result per name, in order (results[i].name
** is not set).  Cancels its statements once cancel(ud) returns non-zero.
** Returns 0, or -1 when the comparison could not run at all (every
** result FAILED with the reason).
*/
int fl_verify(const char *source, const char *target, const char *snapshot, const char *const *names,
              int n, int jobs, int (*cancel)(void *ud), void *ud, FlCheckResult *results);

/* load_progress.c */
double fl_done_fraction(FullLoad *fl, int include_running);
void fl_draw_progress(FullLoad *fl, int force);

#endif
