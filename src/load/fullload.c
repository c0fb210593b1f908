/*
** fullload.c
** The full load's life cycle (see fullload.h and load_internal.h):
** fullload_start opens the snapshot holder, plans inside it when no
** plan was given, prepares the units and starts the workers;
** fullload_wait hands finished units to the caller while drawing
** progress; fullload_finish joins the workers and frees the load.
*/
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "load/load_internal.h"
#include "pg/pgsql.h"
#include "util/cpu.h"
#include "util/interrupt.h"

#define DEFAULT_RETRIES 4    /* pauses of 1, 2, 4, 8 s: a server restart fits */

/* Monotonic clock in seconds: durations, rates, deadlines. */
double fl_now_s (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether the load 'arg' is stopping: a failure or fullload_cancel, a
   stop request, or SIGINT/SIGTERM.  The stop callback of the relay,
   the statements and the checks. */
int fl_should_stop (void *arg) {
  FullLoad *fl = arg;
  return fl->stop || interrupt_stop_requested() || interrupt_requested();
}

/*
** See fullload.h.  Takes over the plan's units (the caller's plan is left
** empty), opens the snapshot holder (exporting a snapshot, or importing
** opts.snapshot to check it), plans inside it when no plan was given,
** marks the units already done, prepares the target, and starts the
** workers.  NULL with err when nothing could start.
*/
FullLoad *fullload_start (FlPlan *plan, const FullLoadOptions *o, char *err, size_t errlen) {
  FullLoad *fl = xcalloc(1, sizeof(FullLoad));
  PGconn *dst = NULL;
  char e[PGCONN_ERRLEN];
  int i, pending = 0;
  if (plan != NULL) {
    fl->plan = *plan;
    memset(plan, 0, sizeof(*plan));
  }
  fl->source = xstrdup(o->source);
  fl->target = xstrdup(o->target);
  fl->jobs = o->jobs > 0 ? o->jobs : cpu_count();
  fl->progress = o->progress;
  fl->log_interval = o->log_interval > 0 ? o->log_interval : 10.0;
  fl->retries = o->retries > 0 ? o->retries : (o->retries < 0 ? 0 : DEFAULT_RETRIES);
  pthread_mutex_init(&fl->mu, NULL);
  pthread_cond_init(&fl->cond, NULL);
  fl->t0 = fl_now_s();

  /* the snapshot holder: exports one, or imports the given one to check
     it early (and learns the encoding both sides will use) */
  fl->holder = pgconn_open(fl->source, "source", PGCONN_NORMAL, err, errlen);
  if (fl->holder == NULL)
    goto fail;
  strlcpy_(fl->encoding, PQparameterStatus(fl->holder, "server_encoding") ?
           PQparameterStatus(fl->holder, "server_encoding") : "", sizeof(fl->encoding));
  if (o->snapshot != NULL && o->snapshot[0] != '\0') {
    PGconn *h = fl->holder;
    fl->snapshot = xstrdup(o->snapshot);
    fl->holder = NULL;
    PQfinish(h);
    fl->holder = fl_open_source(fl, err, errlen);
    if (fl->holder == NULL)
      goto fail;
  } else {
    PGresult *res;
    if (fl_session_setup(fl->holder, fl->encoding, 0, e, sizeof(e)) < 0 ||
        pgsql_exec(fl->holder, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", e, sizeof(e), NULL) < 0) {
      snprintf(err, errlen, "source: %s", e);
      goto fail;
    }
    if (pgsql_exec_params(fl->holder, "SELECT pg_export_snapshot()", 0, NULL, &res, e, sizeof(e),
                          NULL) < 0) {
      snprintf(err, errlen, "cannot export a snapshot on the source: %s", e);
      goto fail;
    }
    fl->snapshot = xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
  }
  dst = fl_open_target(fl, err, errlen);
  if (dst == NULL)
    goto fail;
  if (fl->plan.n == 0 && o->plan != NULL) {
    FlPlanOptions po = *o->plan;
    po.target_version = PQserverVersion(dst);
    if (po.jobs == 0)
      po.jobs = fl->jobs;
    if (fullload_plan(fl->holder, &po, &fl->plan, err, errlen) < 0)
      goto fail;
  }
  fl_index_tables(fl);
  if (fl_prepare_units(fl, dst, o, err, errlen) < 0)
    goto fail;
  fl_setup_afters(fl, o);
  fl_setup_checks(fl, o);
  PQfinish(dst);
  dst = NULL;
  fl->events = xcalloc((size_t)fl->plan.n + 1, sizeof(int));
  fl->base_fraction = fl_done_fraction(fl, 0);
  for (i = 0; i < fl->plan.n; i++)
    pending += fl->plan.units[i].state == FL_PENDING;
  fl->nthreads = fl->jobs < pending ? fl->jobs : pending;
  {
    char b[32];
    int64_t total = 0;
    for (i = 0; i < fl->plan.n; i++)
      total += fl->plan.units[i].est_bytes;
    fullload_format_bytes(total, b, sizeof(b));
    log_info("full load: %d tables, %d units (%d already done), about %s, %d jobs, snapshot %s",
             fl->ntables, fl->plan.n, fl->plan.n - pending, b, fl->nthreads, fl->snapshot);
  }
  fl->threads = xcalloc((size_t)fl->nthreads + 1, sizeof(pthread_t));
  fl->running = fl->nthreads;
  for (i = 0; i < fl->nthreads; i++) {
    if (pthread_create(&fl->threads[i], NULL, fl_worker_main, fl) != 0) {
      pthread_mutex_lock(&fl->mu);
      fl->running -= fl->nthreads - i;
      fl->nthreads = i;
      pthread_mutex_unlock(&fl->mu);
      fl_record_failure(fl, NULL, "cannot start worker threads", NULL);
      break;
    }
  }
  fl->last_log = fl_now_s();
  return fl;

fail:
  if (dst != NULL)
    PQfinish(dst);
  {
    char dummy[8];
    fullload_finish(fl, dummy, sizeof(dummy), NULL);
  }
  return NULL;
}

const FlPlan *fullload_plan_of (FullLoad *fl) {
  return &fl->plan;
}

const char *fullload_snapshot (FullLoad *fl) {
  return fl->snapshot;
}

/* See fullload.h: the next finished unit, drawing progress while
   waiting; -1 once the workers have exited and every event was read. */
int fullload_wait (FullLoad *fl, int timeout_ms, FlEvent *ev) {
  double deadline = fl_now_s() + (timeout_ms > 0 ? timeout_ms / 1000.0 : 0);
  int rc = 0;
  if (interrupt_requested() || interrupt_stop_requested())
    fl->stop = 1;
  pthread_mutex_lock(&fl->mu);
  for (;;) {
    if (fl->ev_head < fl->ev_tail) {
      ev->unit = fl->events[fl->ev_head++];
      rc = 1;
      break;
    }
    if (fl->running == 0) {
      rc = -1;
      break;
    }
    if (fl_now_s() >= deadline)
      break;
    {
      struct timespec ts;
      double until = deadline, step = fl_now_s() + 0.25;
      if (step < until)
        until = step;
      clock_gettime(CLOCK_REALTIME, &ts);
      {
        double wait = until - fl_now_s();
        long ns;
        if (wait < 0)
          wait = 0;
        ts.tv_sec += (time_t)wait;
        ns = ts.tv_nsec + (long)((wait - floor(wait)) * 1e9);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
      }
      pthread_cond_timedwait(&fl->cond, &fl->mu, &ts);
    }
    if (interrupt_requested() || interrupt_stop_requested())
      fl->stop = 1;
    pthread_mutex_unlock(&fl->mu);
    fl_draw_progress(fl, 0);
    pthread_mutex_lock(&fl->mu);
  }
  pthread_mutex_unlock(&fl->mu);
  fl_draw_progress(fl, 0);
  return rc;
}

void fullload_cancel (FullLoad *fl) {
  fl->stop = 1;
}

/* See fullload.h: joins the workers, closes the snapshot holder, frees
   the load and its plan; 0 done, 1 stopped, -1 failed (err set). */
int fullload_finish (FullLoad *fl, char *err, size_t errlen, char failed_sqlstate[6]) {
  int i, rc = 0, incomplete = 0;
  pthread_mutex_lock(&fl->mu);
  if (fl->running > 0)       /* finished early (an error in the caller): stop the workers */
    fl->stop = 1;
  pthread_mutex_unlock(&fl->mu);
  for (i = 0; i < fl->nthreads; i++)
    pthread_join(fl->threads[i], NULL);
  if (fl->status_shown) {
    log_status(NULL);
    fl->status_shown = 0;
  }
  for (i = 0; i < fl->plan.n; i++) {
    int st = fl->plan.units[i].state;
    incomplete += st != FL_DONE && st != FL_SKIPPED;
  }
  err[0] = '\0';
  if (failed_sqlstate != NULL)
    failed_sqlstate[0] = '\0';
  if (fl->failed) {
    strlcpy_(err, fl->errmsg, errlen);
    if (failed_sqlstate != NULL)
      strlcpy_(failed_sqlstate, fl->sqlstate, 6);
    rc = -1;
  } else if (incomplete > 0) {
    snprintf(err, errlen, "full load stopped with %d of %d units not loaded", incomplete, fl->plan.n);
    rc = 1;
  }
  if (fl->holder != NULL) {
    PGresult *res = PQexec(fl->holder, "COMMIT");
    PQclear(res);
    PQfinish(fl->holder);
  }
  fullload_plan_free(&fl->plan);
  fl_free_afters(fl);
  fl_free_checks(fl);
  free(fl->threads);
  free(fl->events);
  free(fl->unit_table);
  free(fl->tables);
  free(fl->source);
  free(fl->target);
  free(fl->snapshot);
  pthread_mutex_destroy(&fl->mu);
  pthread_cond_destroy(&fl->cond);
  free(fl);
  return rc;
}
