/*
** validate.c
** Row-level data validation: the entry point (see validate.h for the
** method and validate_internal.h for where each part lives).
** validate_run() opens the planning connections, plans the tables,
** compares them in one pass of worker threads, re-checks in RECHECK
** mode, and totals the report.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "validate/validate_internal.h"

/* The defaults documented in validate.h. */
void validate_options_init (VOptions *o) {
  memset(o, 0, sizeof(*o));
  o->jobs = 1;
  o->chunk_rows = 20000;
  o->max_rows = 100;
  o->max_value_len = 64;
  o->mode = VMODE_OFFLINE;
  o->recheck_times = 3;
  o->recheck_delay = 10;
  o->statement_timeout_s = 3600;
  o->point_timeout_s = 300;
  o->scan = 1;
  o->scan_split_pages = 8192;
}

/* Free everything the run's tables own (not the report's strings). */
static void run_free (Run *run) {
  int i, j;
  for (i = 0; i < run->ntables; i++) {
    VTable *t = &run->tables[i];
    for (j = 0; j < t->ncols; j++) {
      free(t->cols[j].name);
      free(t->cols[j].stype);
      free(t->cols[j].ttype);
      free(t->cols[j].scoll);
      free(t->cols[j].tcoll);
    }
    free(t->cols);
    free(t->key);
    vstrv_free(t->bounds, t->nbounds * t->nkey);
    free(t->bounds_array);
    free(t->hexpr);
    free(t->kexpr);
    free(t->from_src);
    free(t->from_tgt);
    free(t->qname);
    kmap_free(&t->pending);
    for (j = 0; j < t->nchanged; j++)
      vkeydiff_free(&t->changed[j], t->nkey);
    free(t->changed);
    for (j = 0; j < t->ndiffs; j++)
      vkeydiff_free(&t->diffs[j], t->nkey);
    free(t->diffs);
    free(t->hdiffs);
    free(t->error);
    for (j = 0; j < 2; j++) {
      free(t->acc_cnt[j]);
      free(t->acc_sum[j]);
    }
    pthread_mutex_destroy(&t->mu);
  }
  free(run->tables);
  run->tables = NULL;
  run->ntables = 0;
}

/* Check the options; 0, or -1 with a message in err. */
static int check_options (const VOptions *o, char *err, size_t errlen) {
  if (o->source == NULL || o->target == NULL) {
    snprintf(err, errlen, "validate needs a source and a target");
    return -1;
  }
  if (o->jobs < 1 || o->chunk_rows < 100 || o->max_rows < 0) {
    snprintf(err, errlen, "validate: jobs must be >= 1, chunk_rows >= 100 and max_rows >= 0");
    return -1;
  }
  if (o->mode == VMODE_CONSISTENT && (o->hook.pause_at == NULL || o->hook.resume == NULL)) {
    snprintf(err, errlen, "the consistent mode needs a change-apply hook (pause_at and resume)");
    return -1;
  }
  return 0;
}

/*
** Validate (see validate.h).  The tables planned without an error and
** present on both sides are compared in one pass; the others keep the
** status planning gave them.  The report is filled in every case.
*/
int validate_run (const VOptions *o, VReport *r, char *err, size_t errlen) {
  Run run;
  VTable **all = NULL;
  double start = vnow();
  int rc = -1, i, n = 0;
  memset(r, 0, sizeof(*r));
  memset(&run, 0, sizeof(run));
  r->mode = o->mode;
  run.o = o;
  run.r = r;
  pthread_mutex_init(&run.mu, NULL);
  pthread_cond_init(&run.cv, NULL);
  if (check_options(o, err, errlen) != 0)
    goto out;
  if (vconn_open(&run.msrc, o->source, "source", o, err, errlen) != 0 ||
      vconn_open(&run.mtgt, o->target, "target", o, err, errlen) != 0)
    goto out;
  run.md5hash = PQserverVersion(run.msrc.c) < 110000 || PQserverVersion(run.mtgt.c) < 110000;
  if (vplan(&run, err, errlen) != 0)
    goto out;
  all = xcalloc((size_t)run.ntables + 1, sizeof(VTable *));
  for (i = 0; i < run.ntables; i++) {
    VTable *t = &run.tables[i];
    if (t->res->status == VT_MISSING_ON_TARGET)
      continue;
    if (t->error != NULL)
      vtable_set_status(t);
    else
      all[n++] = t;
  }
  if (vrun_pass(&run, all, n, 1, err, errlen) != 0)
    goto out;
  if (o->mode == VMODE_RECHECK && vrecheck_loop(&run, err, errlen) != 0)
    goto out;
  rc = 0;
out:
  vreport_totals(r);
  free(all);
  run_free(&run);
  vconn_close(&run.msrc, &r->bytes_source);
  vconn_close(&run.mtgt, &r->bytes_target);
  pthread_mutex_destroy(&run.mu);
  pthread_cond_destroy(&run.cv);
  r->seconds = vnow() - start;
  return rc;
}
