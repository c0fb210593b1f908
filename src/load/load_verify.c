/*
** load_verify.c
** The full load's per-table verification (fullload.h, FlCheck): the
** checks' bookkeeping (the tables each waits for, the ready queue, the
** batches the workers take), and a batch of loaded tables compared row
** by row with the validation core (src/validate, offline mode), the
** source read under the load's own snapshot.  Runs on a load worker's
** thread.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "load/load_internal.h"
#include "validate/validate.h"

#define LOCK_TIMEOUT_MS 2000

/* Whether report table r is validation name 'name' (schema.table, parts
   possibly quoted; no schema means public). */
static int same_table (const VTableResult *r, const char *name) {
  char *schema = NULL, *table = NULL;
  int same;
  if (validate_parse_name(name, &schema, &table) != 0)
    return 0;
  same = strcmp(schema, r->schema) == 0 && strcmp(table, r->name) == 0;
  free(schema);
  free(table);
  return same;
}

/*
** See fullload.h.  Differences are only counted here: a table that
** differs is compared again, with the full report, by the caller.
**
** The lock timeout: the load's copy sessions keep their snapshot
** transactions, and with them a lock on every table they copied, until
** the load ends.  An application statement that needs an exclusive lock
** on such a table (TRUNCATE, ALTER TABLE) waits for that, and any new
** lock request queues behind it: a comparison that waited there would
** wait for the end of the load, which waits for the comparison.  So
** the comparison gives up after LOCK_TIMEOUT_MS instead (the table is
** then compared by the caller after the load).
*/
int fl_verify (const char *source, const char *target, const char *snapshot, const char *const *names,
               int n, int jobs, int (*cancel)(void *ud), void *ud, FlCheckResult *results) {
  VOptions o;
  VReport r;
  char err[512];
  int i, j, rc;
  validate_options_init(&o);
  o.source = source;
  o.target = target;
  o.tables = names;
  o.ntables = n;
  o.jobs = jobs > 0 ? jobs : 1;
  o.max_rows = 1;
  o.progress = 0;
  o.mode = VMODE_OFFLINE;
  o.source_snapshot = snapshot;
  o.cancel = cancel;
  o.cancel_ud = ud;
  o.lock_timeout_ms = LOCK_TIMEOUT_MS;
  rc = validate_run(&o, &r, err, sizeof(err));
  for (i = 0; i < n; i++) {
    FlCheckResult *c = &results[i];
    const VTableResult *t = NULL;
    c->seconds = r.seconds;
    for (j = 0; j < r.ntables && t == NULL; j++)
      if (same_table(&r.tables[j], names[i]))
        t = &r.tables[j];
    if (rc != 0 || t == NULL) {
      c->status = FL_CHECK_FAILED;
      strlcpy_(c->error, rc != 0 ? err : "not in the validation report", sizeof(c->error));
      continue;
    }
    c->source_rows = t->source_rows;
    c->target_rows = t->target_rows;
    c->missing = t->missing;
    c->extra = t->extra;
    c->changed = t->changed;
    switch (t->status) {
      case VT_EQUAL:
        c->status = FL_CHECK_EQUAL;
        break;
      case VT_DIFFERENT:
        c->status = FL_CHECK_DIFFERENT;
        break;
      default:
        c->status = FL_CHECK_FAILED;
        strlcpy_(c->error, t->error != NULL ? t->error : validate_status_name(t->status), sizeof(c->error));
        break;
    }
  }
  validate_report_free(&r);
  return rc == 0 ? 0 : -1;
}

/* Table t is loaded and its indexes are built (caller holds the lock):
   the checks waiting for it alone are ready. */
void fl_table_ready (FullLoad *fl, int t) {
  int c, i;
  for (c = 0; c < fl->nchecks; c++) {
    CheckState *cs = &fl->checks[c];
    if (cs->remaining <= 0)
      continue;
    for (i = 0; i < cs->ntables; i++)
      if (cs->tables[i] == t && --cs->remaining == 0)
        fl->check_q[fl->cq_tail++] = c;
  }
}

/*
** Copy the checks (FullLoadOptions.checks).  A check runs only when each
** of its tables is in the plan with every unit to load in this run (one
** snapshot for all its rows); the others keep FL_CHECK_NOT_RUN.  Call
** after fl_setup_afters (pending counts).
*/
void fl_setup_checks (FullLoad *fl, const FullLoadOptions *o) {
  int c, i;
  fl->nchecks = o->nchecks > 0 ? o->nchecks : 0;
  fl->checks = xcalloc((size_t)fl->nchecks + 1, sizeof(CheckState));
  fl->check_res = xcalloc((size_t)fl->nchecks + 1, sizeof(FlCheckResult));
  fl->check_q = xcalloc((size_t)fl->nchecks + 1, sizeof(int));
  for (c = 0; c < fl->nchecks; c++) {
    const FlCheck *k = &o->checks[c];
    CheckState *cs = &fl->checks[c];
    fl->check_res[c].name = xstrdup(k->name);
    cs->tables = xcalloc((size_t)k->n + 1, sizeof(int));
    cs->remaining = k->n > 0 ? 0 : -1;
    for (i = 0; i < k->n && cs->remaining >= 0; i++) {
      int t = fl_find_table(fl, k->nspnames[i], k->relnames[i]), j, dup = 0;
      if (t < 0 || fl->tables[t].pending != fl->tables[t].units) {
        cs->remaining = -1;
        break;
      }
      for (j = 0; j < cs->ntables; j++)
        dup |= cs->tables[j] == t;
      if (!dup) {
        cs->tables[cs->ntables++] = t;
        cs->remaining++;
        cs->est_bytes += fl->tables[t].est_bytes;
      }
    }
    if (cs->remaining > 0)
      fl->checks_run++;
  }
}

void fl_free_checks (FullLoad *fl) {
  int c;
  for (c = 0; c < fl->nchecks; c++) {
    free(fl->checks[c].tables);
    free((char *)fl->check_res[c].name);
  }
  free(fl->checks);
  free(fl->check_res);
  free(fl->check_q);
}

/*
** Verify the checks check_q[first .. first + n) in one validation run
** with 'jobs' connections per side, the source under the load's
** snapshot, and record their results.
*/
void fl_run_checks (FullLoad *fl, int first, int n, int jobs) {
  const char **names = xcalloc((size_t)n + 1, sizeof(char *));
  FlCheckResult *res = xcalloc((size_t)n + 1, sizeof(FlCheckResult));
  int i, equal = 0, different = 0, failed = 0;
  double t0 = fl_now_s();
  for (i = 0; i < n; i++)
    names[i] = fl->check_res[fl->check_q[first + i]].name;
  fl_verify(fl->source, fl->target, fl->snapshot, names, n, jobs, fl_should_stop, fl, res);
  pthread_mutex_lock(&fl->mu);
  for (i = 0; i < n; i++) {
    FlCheckResult *r = &fl->check_res[fl->check_q[first + i]];
    const char *name = r->name;
    if (fl_should_stop(fl) && res[i].status == FL_CHECK_FAILED)
      res[i].status = FL_CHECK_NOT_RUN;    /* cancelled with the load */
    *r = res[i];
    r->name = name;
    equal += r->status == FL_CHECK_EQUAL;
    different += r->status == FL_CHECK_DIFFERENT;
    failed += r->status == FL_CHECK_FAILED;
  }
  fl->checks_done += n;
  pthread_cond_broadcast(&fl->cond);
  pthread_mutex_unlock(&fl->mu);
  {
    char what[300];
    if (n == 1)
      snprintf(what, sizeof(what), "%s", names[0]);
    else
      snprintf(what, sizeof(what), "%d tables", n);
    log_msg(fl_now_s() - t0 >= 1.0 || different + failed > 0 ? LOG_INFO : LOG_DEBUG,
            "verified %s under the load's snapshot in %.1fs (%d connection%s a side): %d equal%s", what,
            fl_now_s() - t0, jobs, jobs == 1 ? "" : "s", equal,
            different + failed > 0 ? "; the others are compared again later" : "");
  }
  for (i = 0; i < n; i++)
    if (res[i].status == FL_CHECK_DIFFERENT || res[i].status == FL_CHECK_FAILED)
      log_info("  %s: %s%s%s", names[i], res[i].status == FL_CHECK_DIFFERENT ? "differs" : "not compared",
               res[i].error[0] ? ": " : "", res[i].error);
  free(names);
  free(res);
}

/* See fullload.h. */
int fullload_checks (FullLoad *fl, const FlCheckResult **out) {
  *out = fl->check_res;
  return fl->nchecks;
}
