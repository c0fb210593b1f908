/*
** validate_recheck.c
** RECHECK mode, for targets replicated by something pgtide does not
** control (DMS...): after the first comparison, wait, then look again at
** what differed, up to recheck_times times.  Keyed tables whose
** differing keys are all stored are re-checked key by key (both
** servers, no snapshot); the others are compared again in full.  What
** still differs after the last round is reported.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/interrupt.h"
#include "util/log.h"
#include "validate/validate_internal.h"

/*
** Look again at the stored differences ds[0..n-1] (KEY_BATCH at most):
** fetch their row hashes from both servers and move the keys that still
** differ, reclassified, to keep[*nkeep...] (taking ownership of their
** key and texts).  Returns 0, or -1 with a message in err.
*/
static int recheck_batch (Run *run, VTable *t, KeyDiff *ds, int n, KeyDiff *keep, int *nkeep,
                          Buf *key, char *err, size_t errlen) {
  char **keys[KEY_BATCH];
  VPair q;
  PGresult *rs = NULL, *rt = NULL;
  KMap ms = {NULL, 0, 0}, mt = {NULL, 0, 0};
  int side, i, rc;
  for (i = 0; i < n; i++)
    keys[i] = ds[i].texts;
  vpair_init(&q, n * t->nkey);
  for (side = 0; side < 2; side++) {
    vsql_select_keys(&q.sql[side], t, side, 0);
    vsql_in_pred(&q.sql[side], t, side, keys, n, q.pv[side], &q.np[side]);
  }
  rc = vpair_run(&q, &run->msrc, &run->mtgt, &rs, &rt, err, errlen);
  if (rc == 0) {
    kmap_index_rows(&ms, rs, t->nkey, key);
    kmap_index_rows(&mt, rt, t->nkey, key);
    for (i = 0; i < n; i++) {
      KeyDiff *d = &ds[i];
      int a = kmap_row(&ms, d->key, d->klen), b = kmap_row(&mt, d->key, d->klen);
      if (a >= 0 && b >= 0 &&
          strcmp(PQgetvalue(rs, a, t->nkey), PQgetvalue(rt, b, t->nkey)) == 0)
        continue;          /* equal now */
      if (a < 0 && b < 0)
        continue;          /* gone on both sides */
      keep[*nkeep] = *d;
      keep[*nkeep].kind = a < 0 ? VDIFF_EXTRA : b < 0 ? VDIFF_MISSING : VDIFF_CHANGED;
      d->key = NULL;
      d->texts = NULL;
      (*nkeep)++;
    }
  }
  PQclear(rs);
  PQclear(rt);
  kmap_free(&ms);
  kmap_free(&mt);
  vpair_free(&q);
  return rc;
}

/*
** A keyed table whose differences are all stored: re-check just those
** keys and keep what still differs, with fresh counts and report rows.
** Returns 0, or -1 with a message in err.
*/
static int recheck_keys (Run *run, VTable *t, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  KeyDiff *keep = xcalloc((size_t)t->ndiffs + 1, sizeof(KeyDiff));
  int nkeep = 0, start, i, rc = 0;
  Buf key = BUF_INIT;
  for (start = 0; start < t->ndiffs && rc == 0; start += KEY_BATCH) {
    int n = t->ndiffs - start < KEY_BATCH ? t->ndiffs - start : KEY_BATCH;
    rc = recheck_batch(run, t, &t->diffs[start], n, keep, &nkeep, &key, err, errlen);
  }
  for (i = 0; i < t->ndiffs; i++)
    vkeydiff_free(&t->diffs[i], t->nkey);
  free(t->diffs);
  t->diffs = keep;
  t->ndiffs = nkeep;
  buf_free(&key);
  if (rc != 0)
    return -1;
  tr->missing = tr->extra = tr->changed = 0;
  for (i = 0; i < nkeep; i++) {
    if (keep[i].kind == VDIFF_MISSING) tr->missing++;
    else if (keep[i].kind == VDIFF_EXTRA) tr->extra++;
    else tr->changed++;
  }
  return vreport_build_rows(&run->msrc, &run->mtgt, run, t, err, errlen);
}

/* Sleep 'seconds' in 100 ms slices; -1 as soon as an interrupt arrives. */
static int sleep_interruptible (double seconds) {
  double end = vnow() + seconds;
  while (vnow() < end) {
    if (interrupt_requested())
      return -1;
    vsleep_ms(100);
  }
  return 0;
}

/*
** The re-check rounds: while some table differs and rounds are left,
** wait recheck_delay seconds, then re-check every differing table (keys
** or a new full pass).  Records each table's differences before the
** first round.  Returns 0, or -1 when the run must stop (interrupt,
** broken connection) with the reason in err.
*/
int vrecheck_loop (Run *run, char *err, size_t errlen) {
  const VOptions *o = run->o;
  VTable **rerun = xcalloc((size_t)run->ntables + 1, sizeof(VTable *));
  int round, i, rc = 0;
  for (i = 0; i < run->ntables; i++) {
    VTableResult *tr = run->tables[i].res;
    tr->initial_differences = tr->missing + tr->extra + tr->changed;
  }
  for (round = 1; round <= o->recheck_times && rc == 0; round++) {
    int ndiff = 0, nrerun = 0;
    for (i = 0; i < run->ntables; i++)
      if (run->tables[i].res->status == VT_DIFFERENT)
        ndiff++;
    if (ndiff == 0)
      break;
    log_info("validate: %d table%s differ; re-check %d/%d in %.0f s", ndiff, ndiff == 1 ? "" : "s",
             round, o->recheck_times, o->recheck_delay);
    if (sleep_interruptible(o->recheck_delay) != 0) {
      snprintf(err, errlen, "interrupted");
      rc = -1;
      break;
    }
    for (i = 0; i < run->ntables; i++) {
      VTable *t = &run->tables[i];
      if (t->res->status != VT_DIFFERENT)
        continue;
      t->res->rechecks = round;
      if (t->nkey > 0 && !t->overflow) {
        char terr[ERRLEN];
        if (recheck_keys(run, t, terr, sizeof(terr)) != 0) {
          if (vconn_broken(&run->msrc) || vconn_broken(&run->mtgt)) {
            strlcpy_(err, terr, errlen);
            rc = -1;
          }
          vtable_fail(t, terr);
        }
        vtable_set_status(t);
      } else {
        rerun[nrerun++] = t;
      }
    }
    if (rc == 0 && nrerun > 0)
      rc = vrun_pass(run, rerun, nrerun, 1, err, errlen);
  }
  free(rerun);
  return rc;
}
