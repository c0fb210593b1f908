/*
** fullload.h
** The parallel full-load engine: a consistent copy of every table of a
** source database into an existing schema on a target.
**
**   plan   one catalog pass on the source (inside the snapshot) turns
**          the tables into units: a whole table, or one range of a big
**          table (primary-key quantiles, or CTID block ranges when there
**          is no usable key).  Partitioned tables appear as their
**          leaves; generated columns are left out of the column lists;
**          each unit knows whether it can travel in COPY binary format.
**   run    N worker threads, each with its own source connection (in a
**          REPEATABLE READ transaction that imported the one shared
**          snapshot) and target connection, take units largest first.
**          A whole-table unit is TRUNCATE + COPY ... FREEZE in one target
**          transaction; a range unit of a table already partly loaded
**          is DELETE of the range + COPY in one transaction, so a unit
**          that was in flight at a crash is redone without duplicates.
**
** The caller owns the main thread: fullload_wait() returns finished
** units one by one (to be recorded in the runbook state) and draws
** progress.  Lua-free; the binding is src/load/load_lua.c;
** src/load/load_internal.h maps the files.
*/
#ifndef PGTIDE_FULLLOAD_H
#define PGTIDE_FULLLOAD_H

#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "load/copy_relay.h"

typedef enum FlUnitKind {
  FL_WHOLE = 0,      /* the whole table */
  FL_KEYRANGE,       /* a range of a single-column key */
  FL_CTIDRANGE       /* a range of heap blocks */
} FlUnitKind;

typedef enum FlUnitState {
  FL_PENDING = 0, FL_RUNNING, FL_DONE, FL_SKIPPED, FL_FAILED
} FlUnitState;

/* One unit of work.  The planned fields are owned strings (free with
   fullload_unit_clear); the runtime fields belong to the engine. */
typedef struct FlUnit {
  char *id;             /* stable, unique: "public.t" or "public.t[2/8]" */
  char *nspname;        /* schema and table (a leaf when partitioned) */
  char *relname;
  char *columns;        /* quoted column list, generated columns excluded */
  char *where;          /* range predicate; NULL for a whole table */
  FlUnitKind kind;
  int part, nparts;     /* 1-based part number and count (1/1 when whole) */
  int binary;           /* COPY in binary format */
  int64_t est_bytes;    /* planned share of the table's size */
  int64_t est_rows;
  /* runtime */
  CopyCounters live;    /* rows and bytes while copying */
  _Atomic int state;    /* FlUnitState */
  int64_t rows;         /* rows stored (when done) */
  int64_t bytes;        /* bytes relayed (when done) */
  double seconds;       /* copy duration (when done) */
  int attempts;
  int needs_delete;     /* range unit of a partly loaded table: DELETE the range first */
} FlUnit;

void fullload_unit_clear(FlUnit *u);

/* A list of units (a plan). */
typedef struct FlPlan {
  FlUnit *units;
  int n, cap;
} FlPlan;

/* Append a unit; the strings are copied.  Returns the new unit. */
FlUnit *fullload_plan_add(FlPlan *p, const char *id, const char *nspname, const char *relname,
                          const char *columns, const char *where, FlUnitKind kind,
                          int part, int nparts, int binary, int64_t est_bytes, int64_t est_rows);
void fullload_plan_free(FlPlan *p);
/* Sort largest first (stable on id for equal sizes). */
void fullload_plan_sort(FlPlan *p);

typedef struct FlPlanOptions {
  const char *const *tables;   /* "schema.table" to include (partitioned parents expand); NULL: all */
  int ntables;
  const char *const *exclude;  /* same form, to leave out */
  int nexclude;
  int64_t split_threshold;     /* split tables larger than this (bytes); <= 0: never */
  int max_parts;               /* cap on ranges per table (default 16) */
  int target_version;          /* target server version: binary only when compatible */
  int format;                  /* 0 auto, 1 always text, 2 binary where types allow */
  int jobs;                    /* > 0: a table that is split gets at least this many parts */
} FlPlanOptions;

/*
** Build the plan on 'src' (which should already be inside the snapshot
** the load will use, though ranges are open-ended so any snapshot's rows
** are covered).  Returns 0, or -1 with err set.
*/
int fullload_plan(PGconn *src, const FlPlanOptions *opts, FlPlan *plan, char *err, size_t errlen);
/* The same on a new connection to 'source' (in a fresh snapshot). */
int fullload_plan_conninfo(const char *source, const FlPlanOptions *opts, FlPlan *plan,
                           char *err, size_t errlen);

/* Split predicates, exposed for tests: the WHERE of part i (0-based) of
   n, given n-1 boundary literals (already SQL: quoted and cast). */
char *fullload_keyrange_where(const char *column_sql, const char *const *bounds, int n, int i);
char *fullload_ctidrange_where(int64_t pages, int n, int i);

/*
** Statements to run once every unit of a table is loaded (its indexes
** and keys, then VACUUM ANALYZE), pipelined with the copy of other
** tables.  They run on separate target connections of the workers:
** statements of one group in order, different groups in parallel (each
** picked up by a free worker), and 'final' once every group is done.  A
** statement whose 'check' query (may be NULL) returns a row is skipped;
** deadlocks are retried; any other failure is logged and ends its group:
** the caller's own post-data pass is expected to finish the job.
*/
typedef struct FlAfter {
  const char *nspname, *relname;
  const char *const *statements;
  const char *const *checks;   /* parallel to statements; NULL entries allowed; may be NULL */
  const int *groups;           /* parallel to statements; NULL: all in one group */
  int n;
  const char *final;           /* may be NULL */
} FlAfter;

/*
** Tables to verify as soon as they are loaded, while others are still
** being copied (FullLoadOptions.checks).  A check names a table as the
** validation compares it (a partitioned table as a whole, "schema.table",
** either part may be double-quoted) and the loaded tables it consists of
** (its leaves).  Once every one of them is loaded in this run and its
** statement groups (indexes and keys) are done, the check is compared
** row by row (src/validate, offline mode) on a worker, reading the
** source under the load's own snapshot: the rows the target received are
** exactly that snapshot's, whatever the source did since, and nothing
** else writes to a table before the load is over.  A check whose tables
** were not all loaded whole in this run (some units loaded before a
** restart, under another snapshot) is not run: the caller compares it
** later.  Ready checks are batched (small tables share one validation
** run); a batch uses the workers idle at that moment.
*/
typedef struct FlCheck {
  const char *name;
  const char *const *nspnames;   /* the loaded tables it consists of */
  const char *const *relnames;
  int n;
} FlCheck;

typedef enum FlCheckStatus {
  FL_CHECK_NOT_RUN = 0,          /* not all its tables loaded in this run, or the load stopped */
  FL_CHECK_EQUAL,
  FL_CHECK_DIFFERENT,
  FL_CHECK_FAILED                /* could not be compared (error says why) */
} FlCheckStatus;

typedef struct FlCheckResult {
  const char *name;              /* owned by the load */
  FlCheckStatus status;
  int64_t source_rows, target_rows;
  int64_t missing, extra, changed;
  double seconds;                /* the validation run this check was part of */
  char error[256];
} FlCheckResult;

typedef struct FullLoadOptions {
  const char *source;          /* conninfo strings */
  const char *target;
  int jobs;                    /* worker threads; <= 0: number of cores */
  const char *snapshot;        /* exported snapshot id, or NULL to export one */
  const char *const *done;     /* ids of units already loaded (skipped) */
  int ndone;
  int progress;                /* draw progress (status line on a TTY, log lines otherwise) */
  double log_interval;         /* seconds between plain progress lines (default 10) */
  int retries;                 /* reconnect attempts per unit on a lost connection (default 2) */
  const FlPlanOptions *plan;   /* used to plan inside the snapshot when no plan is given */
  const FlAfter *after;        /* per-table statements (copied by fullload_start) */
  int nafter;
  const char *after_setup;     /* SQL run first on each connection used for them */
  const FlCheck *checks;       /* tables to verify as they finish (copied by fullload_start) */
  int nchecks;
} FullLoadOptions;

typedef struct FullLoad FullLoad;

/* A finished unit, as fullload_wait() returns it. */
typedef struct FlEvent {
  int unit;                    /* index into the plan */
} FlEvent;

typedef struct FlTableProgress {
  const char *nspname, *relname;   /* borrowed from the plan */
  int units, units_done;
  int64_t rows, bytes, est_bytes;
  double index_seconds;            /* building its indexes and keys after its copy */
} FlTableProgress;

typedef struct FlProgress {
  int units, units_done, units_skipped, units_running;
  int64_t rows, bytes;         /* copied in this run */
  int64_t est_bytes;           /* the whole plan's size estimate */
  double percent;              /* 0..100 */
  double elapsed;              /* seconds since start */
  double copy_seconds;         /* seconds until the last unit was loaded (elapsed until then) */
  double mb_per_s;             /* relayed MB/s over the copy */
  double eta;                  /* seconds, -1 when unknown */
  int finished;                /* every worker has exited */
  int tasks, tasks_done;       /* per-table statement lists (FlAfter) queued and finished */
  int checks, checks_done;     /* checks that will run / have run */
  FlTableProgress *tables;     /* per table, largest first (owned: fullload_progress_free) */
  int ntables;
} FlProgress;

/*
** Start the load of 'plan' (ownership moves to the engine; NULL or empty:
** plan now with opts->plan, inside the snapshot).  Exports a
** snapshot unless opts->snapshot is set, prepares split tables (a table
** split in ranges with no range loaded yet, or split by CTID and not
** complete, is truncated first), and starts the workers.  Returns NULL
** with err set when nothing could start.
*/
FullLoad *fullload_start(FlPlan *plan, const FullLoadOptions *opts, char *err, size_t errlen);

/*
** Wait up to timeout_ms for the next finished unit.  Returns 1 with *ev
** set, 0 on timeout, -1 when every worker has exited and every event has
** been returned.  Draws progress when opts.progress is set.
*/
int fullload_wait(FullLoad *fl, int timeout_ms, FlEvent *ev);

/* The plan being loaded (read-only for the caller). */
const FlPlan *fullload_plan_of(FullLoad *fl);
/* The snapshot the workers use. */
const char *fullload_snapshot(FullLoad *fl);

/* The checks' results (FullLoadOptions.checks, in that order): *out
   points into the load, valid until fullload_finish.  Read them once
   fullload_wait returned -1.  Returns the count. */
int fullload_checks(FullLoad *fl, const FlCheckResult **out);

/* Fill a progress snapshot (free its tables with fullload_progress_free). */
void fullload_progress(FullLoad *fl, FlProgress *p);
void fullload_progress_free(FlProgress *p);
/* One line: "42% 3/10 units 1.2 GB 85.3 MB/s ETA 0:32". */
void fullload_progress_line(const FlProgress *p, char *out, size_t outlen);

/* Ask this load's workers to stop (abandon in-flight units). */
void fullload_cancel(FullLoad *fl);

/*
** Join the workers and release everything.  Returns 0 when every unit is
** done, 1 when the load was stopped by a request, -1 when a unit failed
** (err names the unit and the cause; *failed_sqlstate when not NULL gets
** the SQLSTATE or "").  The plan is freed with the load.
*/
int fullload_finish(FullLoad *fl, char *err, size_t errlen, char failed_sqlstate[6]);

/* Format a byte count: "512 B", "1.5 MB", "2.0 GB". */
void fullload_format_bytes(int64_t n, char *out, size_t outlen);

#endif
