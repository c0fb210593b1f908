/*
** validate_workers.c
** Running a pass: the tables' units of work go into one queue (biggest
** table first), 'jobs' worker threads take them, each with its own
** source and target connection, while the calling thread draws progress
** and watches for an interrupt.  The worker finishing a table's last
** unit finishes the table.  Also the small shared-state helpers (fatal
** stop, table failure, counters) the comparison files call.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/interrupt.h"
#include "util/log.h"
#include "util/redact.h"
#include "validate/validate_internal.h"

/* {======================================================================
** Shared state: fatal stop, table failure, counters, the queue
** ======================================================================= */

/* Stop the run (the first message wins) and wake every waiter. */
void vrun_fatal (Run *run, const char *msg) {
  pthread_mutex_lock(&run->mu);
  if (!run->fatal) {
    run->fatal = 1;
    strlcpy_(run->fatal_msg, msg, sizeof(run->fatal_msg));
  }
  pthread_cond_broadcast(&run->cv);
  pthread_mutex_unlock(&run->mu);
}

/* Mark the table failed (the first message wins, redacted). */
void vtable_fail (VTable *t, const char *msg) {
  pthread_mutex_lock(&t->mu);
  if (t->error == NULL)
    t->error = redact_str(msg);
  pthread_mutex_unlock(&t->mu);
}

/* Has the table failed (checked under its lock)? */
int vtable_failed (VTable *t) {
  int f;
  pthread_mutex_lock(&t->mu);
  f = t->error != NULL;
  pthread_mutex_unlock(&t->mu);
  return f;
}

/* Count n more source rows compared (for progress). */
void vrun_add_rows (Run *run, int64_t n) {
  pthread_mutex_lock(&run->mu);
  run->rows_done += n;
  pthread_mutex_unlock(&run->mu);
}

/* }====================================================================== */

/* {======================================================================
** Worker threads
** ======================================================================= */

/* In a snapshot transaction a failed statement would abort it: each unit
   runs inside a savepoint (on both connections). */
static int sp_begin (Worker *w, char *err, size_t errlen) {
  if (!w->run->snapshot)
    return 0;
  if (vexec(&w->src, "SAVEPOINT pgtide_unit", err, errlen) != 0 ||
      vexec(&w->tgt, "SAVEPOINT pgtide_unit", err, errlen) != 0)
    return -1;
  return 0;
}

/* Release the unit's savepoint, or roll back to it when the unit failed. */
static int sp_end (Worker *w, int ok, char *err, size_t errlen) {
  const char *sql = ok ? "RELEASE SAVEPOINT pgtide_unit"
                       : "ROLLBACK TO SAVEPOINT pgtide_unit; RELEASE SAVEPOINT pgtide_unit";
  if (!w->run->snapshot)
    return 0;
  if (vexec(&w->src, sql, err, errlen) != 0 || vexec(&w->tgt, sql, err, errlen) != 0)
    return -1;
  return 0;
}

/* A unit failed: the table is marked; a lost connection, an interrupt or
   a snapshot transaction that cannot recover stops the run. */
static void unit_failed (Worker *w, VTable *t, const char *msg) {
  char err[ERRLEN];
  vtable_fail(t, msg);
  if (vconn_broken(&w->src) || vconn_broken(&w->tgt) || interrupt_requested() ||
      sp_end(w, 0, err, sizeof(err)) != 0)
    vrun_fatal(w->run, interrupt_requested() ? "interrupted" : msg);
}

/* The table's last unit is done: turn its differences into report rows
   (keyed tables), set its status and time. */
static void finish_table (Worker *w, VTable *t) {
  char err[ERRLEN];
  if (!vtable_failed(t) && t->nkey > 0) {
    if (sp_begin(w, err, sizeof(err)) != 0 ||
        vreport_finish_keyed(&w->src, &w->tgt, w->run, t, err, sizeof(err)) != 0)
      unit_failed(w, t, err);
    else if (sp_end(w, 1, err, sizeof(err)) != 0)
      unit_failed(w, t, err);
  }
  vtable_set_status(t);
  t->res->seconds = vnow() - t->started;
  pthread_mutex_lock(&w->run->mu);
  w->run->tables_done++;
  pthread_mutex_unlock(&w->run->mu);
}

/* Append units to the queue and wake the workers (callers hold no lock). */
void vrun_enqueue (Run *run, const Unit *u, int n) {
  pthread_mutex_lock(&run->mu);
  if (run->nunits + n > run->capunits) {
    run->capunits = (run->nunits + n) * 2;
    run->units = xrealloc(run->units, sizeof(Unit) * (size_t)run->capunits);
  }
  memcpy(run->units + run->nunits, u, sizeof(Unit) * (size_t)n);
  run->nunits += n;
  pthread_cond_broadcast(&run->cv);
  pthread_mutex_unlock(&run->mu);
}

/* Run one unit (see UnitKind); 0, or -1 with a message in err. */
static int run_unit (Worker *w, VTable *t, const Unit *u, char *err, size_t errlen) {
  char *const *lo, *const *hi;
  switch (u->kind) {
    case U_MULTISET:
      return vmultiset_compare(w, t, err, errlen);
    case U_SCAN:
      return vscan_part(w, t, u->part, err, errlen);
    case U_CHUNK:
    case U_DRILL:
      lo = u->chunk > 0 ? &t->bounds[(u->chunk - 1) * t->nkey] : NULL;
      hi = u->chunk < t->nbounds ? &t->bounds[u->chunk * t->nkey] : NULL;
      return vchunk_compare(w, t, lo, hi, 0, u->kind == U_CHUNK, err, errlen);
  }
  return 0;
}

/*
** A worker: takes units until the queue is empty and no unit is in
** flight (a unit in flight may still add drill units), or the run is
** stopped.  Each unit runs in a savepoint of the worker's snapshot
** transactions; the worker that finishes a table's last unit finishes
** the table.
*/
static void *worker_main (void *arg) {
  Worker *w = arg;
  Run *run = w->run;
  char err[ERRLEN];
  for (;;) {
    Unit u;
    VTable *t;
    int left;
    pthread_mutex_lock(&run->mu);
    while (!run->fatal && run->next >= run->nunits && run->inflight > 0)
      pthread_cond_wait(&run->cv, &run->mu);
    if (run->fatal || run->next >= run->nunits) {
      pthread_mutex_unlock(&run->mu);
      break;
    }
    u = run->units[run->next++];
    run->inflight++;
    pthread_mutex_unlock(&run->mu);
    if (interrupt_requested())
      vrun_fatal(run, "interrupted");
    t = &run->tables[u.table];
    pthread_mutex_lock(&t->mu);
    if (t->started == 0)
      t->started = vnow();
    pthread_mutex_unlock(&t->mu);
    if (!run->fatal && !vtable_failed(t)) {
      int rc = sp_begin(w, err, sizeof(err));
      if (rc == 0)
        rc = run_unit(w, t, &u, err, sizeof(err));
      if (rc != 0)
        unit_failed(w, t, err);
      else if (sp_end(w, 1, err, sizeof(err)) != 0)
        unit_failed(w, t, err);
    }
    if (u.kind == U_SCAN) {
      int last;
      pthread_mutex_lock(&t->mu);
      last = --t->scans_left == 0;
      pthread_mutex_unlock(&t->mu);
      if (last && !vtable_failed(t) && !run->fatal)
        vscan_finished(w, t);
    }
    pthread_mutex_lock(&t->mu);
    left = --t->chunks_left;
    pthread_mutex_unlock(&t->mu);
    if (left == 0 && !run->fatal)
      finish_table(w, t);
    pthread_mutex_lock(&run->mu);
    run->inflight--;
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
  }
  pthread_mutex_lock(&run->mu);
  run->running--;
  pthread_cond_broadcast(&run->cv);
  pthread_mutex_unlock(&run->mu);
  return NULL;
}

/* 1234 -> "1234", 12345 -> "12k", 1.5e6 -> "1.5M" */
static void human_count (char *out, size_t n, double v) {
  if (v >= 1e9) snprintf(out, n, "%.1fG", v / 1e9);
  else if (v >= 1e6) snprintf(out, n, "%.1fM", v / 1e6);
  else if (v >= 1e4) snprintf(out, n, "%.0fk", v / 1e3);
  else snprintf(out, n, "%.0f", v);
}

/* }====================================================================== */

/* {======================================================================
** A pass: queue, workers, progress
** ======================================================================= */

/* Wait for the workers, drawing progress (TTY status line, or a plain
   line every 10 s).  An interrupt stops the workers at their next unit
   (their running statements are cancelled by vwait). */
static void progress_loop (Run *run) {
  int tty = log_stderr_is_tty();
  double last = vnow(), start = last;
  pthread_mutex_lock(&run->mu);
  while (run->running > 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&run->cv, &run->mu, &ts);
    if (interrupt_requested() && !run->fatal) {
      run->fatal = 1;
      strlcpy_(run->fatal_msg, "interrupted", sizeof(run->fatal_msg));
      pthread_cond_broadcast(&run->cv);
    }
    if (run->o->progress && run->running > 0) {
      double done = (double)run->rows_done, total = (double)run->rows_total;
      int td = run->tables_done, tt = run->tables_total;
      char a[32], b[32], line[256];
      double pct = total > 0 ? 100.0 * done / total : 0;
      if (pct > 99) pct = 99;
      human_count(a, sizeof(a), done);
      human_count(b, sizeof(b), total);
      snprintf(line, sizeof(line), "validating: %2.0f%%  %s of ~%s rows  %d/%d tables  %.0f s",
               pct, a, b, td, tt, vnow() - start);
      pthread_mutex_unlock(&run->mu);
      if (tty) {
        log_status(line);
      } else if (vnow() - last >= 10) {
        log_info("%s", line);
        last = vnow();
      }
      pthread_mutex_lock(&run->mu);
    }
  }
  pthread_mutex_unlock(&run->mu);
  if (tty && run->o->progress)
    log_status(NULL);
}

/* Biggest tables first (their units start early). */
static int est_cmp (const void *a, const void *b) {
  const VTable *x = *(VTable *const *)a, *y = *(VTable *const *)b;
  return x->est_rows < y->est_rows ? 1 : x->est_rows > y->est_rows ? -1 : 0;
}

/*
** Reset the tables sel[0..nsel-1] and queue their units, biggest table
** first: one per chunk (range queries), per block range (scan) or per
** table (multiset).  Returns the number of units.
*/
static int queue_units (Run *run, VTable **sel, int nsel) {
  VTable **order = xcalloc((size_t)nsel + 1, sizeof(VTable *));
  int i, k, nunits = 0;
  memcpy(order, sel, sizeof(VTable *) * (size_t)nsel);
  qsort(order, (size_t)nsel, sizeof(VTable *), est_cmp);
  run->units = NULL;
  run->nunits = run->next = run->inflight = 0;
  run->rows_done = run->rows_total = 0;
  run->tables_done = 0;
  run->tables_total = nsel;
  for (i = 0; i < nsel; i++) {
    VTable *t = order[i];
    int nch = t->nkey > 0 ? t->nbounds + 1 : 1;
    int nu = t->nscan > 0 ? t->nscan : nch, side;
    vtable_reset(t);
    t->started = 0;
    t->chunks_left = nu;
    t->scans_left = t->nscan;
    t->res->nchunks = nch;
    for (side = 0; side < 2 && t->nscan > 0; side++) {
      t->acc_cnt[side] = xcalloc((size_t)nch, sizeof(int64_t));
      t->acc_sum[side] = xcalloc((size_t)nch, sizeof(__int128));
    }
    run->rows_total += (int64_t)t->est_rows;
    run->units = xrealloc(run->units, sizeof(Unit) * (size_t)(nunits + nu));
    for (k = 0; k < nu; k++) {
      Unit *u = &run->units[nunits++];
      u->table = (int)(t - run->tables);
      u->kind = t->nkey == 0 ? U_MULTISET : t->nscan > 0 ? U_SCAN : U_CHUNK;
      u->chunk = u->kind == U_CHUNK ? k : 0;
      u->part = u->kind == U_SCAN ? k : 0;
    }
  }
  run->capunits = run->nunits = nunits;
  free(order);
  return nunits;
}

/* Start the worker threads, wait for them (drawing progress) and join
   them.  A thread that cannot start stops the run. */
static void run_workers (Run *run, Worker *ws, int nw) {
  int i;
  run->running = 0;
  for (i = 0; i < nw; i++) {
    pthread_mutex_lock(&run->mu);
    run->running++;    /* before the thread exists, so it can never go below 0 */
    pthread_mutex_unlock(&run->mu);
    if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
      pthread_mutex_lock(&run->mu);
      run->running--;
      pthread_mutex_unlock(&run->mu);
      vrun_fatal(run, "cannot start a worker thread");
      break;
    }
    ws[i].started = 1;
  }
  progress_loop(run);
  for (i = 0; i < nw; i++)
    if (ws[i].started)
      pthread_join(ws[i].th, NULL);
}

/* End the workers' snapshot transactions and close their connections,
   adding the bytes they received to the report. */
static void close_workers (Run *run, Worker *ws, int nw) {
  int i;
  for (i = 0; i < nw; i++) {
    char e2[ERRLEN];
    if (ws[i].src.c != NULL && PQtransactionStatus(ws[i].src.c) != PQTRANS_IDLE)
      vexec(&ws[i].src, "COMMIT", e2, sizeof(e2));
    if (ws[i].tgt.c != NULL && PQtransactionStatus(ws[i].tgt.c) != PQTRANS_IDLE)
      vexec(&ws[i].tgt, "COMMIT", e2, sizeof(e2));
    vconn_close(&ws[i].src, &run->r->bytes_source);
    vconn_close(&ws[i].tgt, &run->r->bytes_target);
  }
}

/*
** Compare the tables sel[0..nsel-1] with up to 'jobs' workers, each with
** its own source and target connection ('snapshot': all reading the
** run's shared snapshots).  Returns 0, or -1 when the pass stopped
** (connection, snapshot, interrupt) with the reason in err.
*/
int vrun_pass (Run *run, VTable **sel, int nsel, int snapshot, char *err, size_t errlen) {
  const VOptions *o = run->o;
  Worker *ws = NULL;
  int i, nw = 0, rc = -1, nunits = queue_units(run, sel, nsel);
  run->snapshot = snapshot;
  if (nunits == 0) {
    rc = 0;
    goto out;
  }
  nw = o->jobs < nunits ? o->jobs : nunits;
  ws = xcalloc((size_t)nw, sizeof(Worker));
  for (i = 0; i < nw; i++) {
    ws[i].run = run;
    if (vconn_open(&ws[i].src, o->source, "source", o, err, errlen) != 0 ||
        vconn_open(&ws[i].tgt, o->target, "target", o, err, errlen) != 0)
      goto out;
  }
  if (snapshot && vsnapshot_setup(run, ws, nw, err, errlen) != 0)
    goto out;
  run_workers(run, ws, nw);
  if (run->fatal) {
    strlcpy_(err, run->fatal_msg, errlen);
    goto out;
  }
  rc = 0;
out:
  close_workers(run, ws, nw);
  free(ws);
  free(run->units);
  run->units = NULL;
  return rc;
}

/* }====================================================================== */
