/*
** validate_report.c
** The result structures: turning a keyed table's stored differences into
** report rows (keys decoded and sorted, the differing columns of changed
** rows fetched from both servers), table status, resetting a table
** between passes, report totals, enum names, and freeing the report.
** Report strings are owned by the report (validate_report_free()).
*/
#include <stdlib.h>
#include <string.h>

#include "validate/validate_internal.h"

/* {======================================================================
** Names
** ======================================================================= */

static const char *const status_names[] = {
  "equal", "different", "missing_on_target", "not_found", "error"
};
static const char *const kind_names[] = {"missing", "extra", "changed"};
static const char *const mode_names[] = {"offline", "consistent", "recheck"};

#define NAMEOF(names, i) \
  ((unsigned)(i) < sizeof(names) / sizeof(names[0]) ? names[i] : "?")

const char *validate_status_name (VTableStatus s) {
  return NAMEOF(status_names, s);
}

const char *validate_kind_name (VDiffKind k) {
  return NAMEOF(kind_names, k);
}

const char *validate_mode_name (VMode m) {
  return NAMEOF(mode_names, m);
}

/* The VMode called 'name', or -1. */
int validate_mode_from_name (const char *name) {
  int m;
  for (m = 0; name != NULL && m < (int)(sizeof(mode_names) / sizeof(mode_names[0])); m++)
    if (strcmp(name, mode_names[m]) == 0)
      return m;
  return -1;
}

/* }====================================================================== */

/* {======================================================================
** Stored differences of keyed tables -> report rows
** ======================================================================= */

/* A row found equal (or absent on both sides) on the second look: it
   is dropped from the report. */
#define ROW_EQUAL ((VDiffKind)-1)

/* Free a stored difference's key and decoded texts. */
void vkeydiff_free (KeyDiff *d, int nkey) {
  free(d->key);
  vstrv_free(d->texts, nkey);
  d->key = NULL;
  d->texts = NULL;
}

/* qsort_r order of stored differences: by key (validate_keycmp per
   column), then kind. */
static int keydiff_cmp (const void *a, const void *b, void *arg) {
  const KeyDiff *x = a, *y = b;
  int nkey = *(const int *)arg, j;
  for (j = 0; j < nkey; j++) {
    int c = validate_keycmp(x->texts[j], y->texts[j]);
    if (c != 0)
      return c;
  }
  return (int)x->kind - (int)y->kind;
}

/* Free a table result's report rows (and forget them). */
void vreport_free_rows (VTableResult *tr) {
  int i, j;
  for (i = 0; i < tr->nrows; i++) {
    VRowDiff *d = &tr->rows[i];
    vstrv_free(d->key, tr->nkey);
    for (j = 0; j < d->ncols; j++) {
      free(d->cols[j].name);
      free(d->cols[j].source);
      free(d->cols[j].target);
    }
    free(d->cols);
    vstrv_free(d->values, tr->ncolumns);
  }
  free(tr->rows);
  tr->rows = NULL;
  tr->nrows = 0;
}

/*
** Fetch both sides' rows for the keys of ds[0..n-1] (decoded) and fill
** out[]: the differing columns of changed rows.  Rows that turn out equal
** (or absent on both sides) are marked ROW_EQUAL; rows present on one
** side only are reclassified (both only happen without a snapshot).
*/
static int fetch_details (VConn *s, VConn *g, Run *run, VTable *t, KeyDiff **ds, int n,
                          VRowDiff **out, char *err, size_t errlen) {
  VPair q;
  Buf key = BUF_INIT;
  char ***keys = xcalloc((size_t)n + 1, sizeof(char **));
  int side, i, c, rc = -1;
  PGresult *rs = NULL, *rt = NULL;
  KMap ms = {NULL, 0, 0}, mt = {NULL, 0, 0};
  for (i = 0; i < n; i++)
    keys[i] = ds[i]->texts;
  vpair_init(&q, n * t->nkey);
  for (side = 0; side < 2; side++) {
    vsql_select_keys(&q.sql[side], t, side, 1);
    vsql_in_pred(&q.sql[side], t, side, keys, n, q.pv[side], &q.np[side]);
  }
  if (vpair_run(&q, s, g, &rs, &rt, err, errlen) != 0)
    goto done;
  kmap_index_rows(&ms, rs, t->nkey, &key);
  kmap_index_rows(&mt, rt, t->nkey, &key);
  for (i = 0; i < n; i++) {
    int a = kmap_row(&ms, ds[i]->key, ds[i]->klen), b = kmap_row(&mt, ds[i]->key, ds[i]->klen);
    VRowDiff *d = out[i];
    if (a < 0 && b < 0) {
      d->kind = ROW_EQUAL;
      continue;
    }
    if (a < 0 || b < 0) {
      d->kind = a < 0 ? VDIFF_EXTRA : VDIFF_MISSING;
      continue;
    }
    d->cols = xcalloc((size_t)(t->ncols > 0 ? t->ncols : 1), sizeof(VColDiff));
    d->ncols = 0;
    for (c = 0; c < t->ncols; c++) {
      int na = PQgetisnull(rs, a, t->nkey + c), nb = PQgetisnull(rt, b, t->nkey + c);
      const char *va = PQgetvalue(rs, a, t->nkey + c), *vb = PQgetvalue(rt, b, t->nkey + c);
      VColDiff *cd;
      if (na == nb && (na || strcmp(va, vb) == 0))
        continue;
      cd = &d->cols[d->ncols++];
      cd->name = xstrdup(t->cols[c].name);
      if (run->o->redact) {
        cd->hidden = 1;
      } else {
        cd->source = na ? NULL : validate_truncate(va, run->o->max_value_len);
        cd->target = nb ? NULL : validate_truncate(vb, run->o->max_value_len);
      }
    }
    if (d->ncols == 0)
      d->kind = ROW_EQUAL;
  }
  rc = 0;
done:
  PQclear(rs);
  PQclear(rt);
  kmap_free(&ms);
  kmap_free(&mt);
  vpair_free(&q);
  buf_free(&key);
  free(keys);
  return rc;
}

/*
** Report rows for the first max_rows stored differences (t->diffs is
** sorted), with column details for changed rows.  Counts are adjusted
** when a row turns out equal or one-sided on the second look.
*/
int vreport_build_rows (VConn *s, VConn *g, Run *run, VTable *t, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  int n = t->ndiffs < run->o->max_rows ? t->ndiffs : run->o->max_rows;
  int i, k, start;
  vreport_free_rows(tr);
  tr->rows = xcalloc((size_t)(n > 0 ? n : 1), sizeof(VRowDiff));
  for (i = 0; i < n; i++) {
    VRowDiff *d = &tr->rows[i];
    d->kind = t->diffs[i].kind;
    d->key = xcalloc((size_t)t->nkey, sizeof(char *));
    for (k = 0; k < t->nkey; k++)
      d->key[k] = xstrdup(t->diffs[i].texts[k]);
  }
  tr->nrows = n;
  /* details of changed rows, KEY_BATCH keys per query */
  for (start = 0; start < n; ) {
    KeyDiff *ds[KEY_BATCH];
    VRowDiff *outs[KEY_BATCH];
    int m = 0;
    for (i = start; i < n && m < KEY_BATCH; i++) {
      if (tr->rows[i].kind != VDIFF_CHANGED)
        continue;
      ds[m] = &t->diffs[i];
      outs[m++] = &tr->rows[i];
    }
    start = i;
    if (m > 0 && fetch_details(s, g, run, t, ds, m, outs, err, errlen) != 0)
      return -1;
  }
  /* drop rows that were equal after all; move reclassified counts */
  for (i = k = 0; i < n; i++) {
    VRowDiff *d = &tr->rows[i];
    if (d->kind != t->diffs[i].kind) {
      if (t->diffs[i].kind == VDIFF_CHANGED) tr->changed--;
      if (d->kind == VDIFF_MISSING) tr->missing++;
      if (d->kind == VDIFF_EXTRA) tr->extra++;
      t->diffs[i].kind = d->kind;
    }
    if (d->kind == ROW_EQUAL) {
      vstrv_free(d->key, t->nkey);
      free(d->cols);
      continue;
    }
    tr->rows[k++] = *d;
  }
  tr->nrows = k;
  tr->truncated = tr->missing + tr->extra + tr->changed > tr->nrows;
  return 0;
}

/*
** All chunks are done: the pending map's leftovers are the missing
** (source side) and extra (target side) rows; with the changed keys they
** are decoded, sorted by key and capped at STORE_CAP.
*/
int vreport_finish_keyed (VConn *s, VConn *g, Run *run, VTable *t, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  KeyDiff *all = xcalloc(t->pending.n + (size_t)t->nchanged + 1, sizeof(KeyDiff));
  int n = 0, i, nkey = t->nkey;
  int64_t nmiss = 0, nextra = 0;
  size_t j;
  for (j = 0; j < t->pending.cap; j++) {
    KEntry *e = &t->pending.e[j];
    if (e->key == NULL)
      continue;
    all[n].kind = e->side == 0 ? VDIFF_MISSING : VDIFF_EXTRA;
    if (e->side == 0) nmiss++; else nextra++;
    all[n].key = e->key;
    all[n].klen = e->klen;
    e->key = NULL;
    n++;
  }
  kmap_free(&t->pending);
  for (i = 0; i < t->nchanged; i++)
    all[n++] = t->changed[i];
  free(t->changed);
  t->changed = NULL;
  tr->missing = nmiss + t->over_missing;
  tr->extra = nextra + t->over_extra;
  tr->changed = t->nchanged + t->over_changed;
  t->nchanged = t->capchanged = 0;
  for (i = 0; i < n; i++)
    all[i].texts = kmap_decode_key(all[i].key, all[i].klen, nkey);
  qsort_r(all, (size_t)n, sizeof(KeyDiff), keydiff_cmp, &nkey);
  t->overflow = t->over_missing > 0 || t->over_extra > 0 || t->over_changed > 0 || n > STORE_CAP;
  if (n > STORE_CAP) {
    for (i = STORE_CAP; i < n; i++)
      vkeydiff_free(&all[i], nkey);
    n = STORE_CAP;
  }
  t->diffs = all;
  t->ndiffs = n;
  return vreport_build_rows(s, g, run, t, err, errlen);
}

/* }====================================================================== */

/* {======================================================================
** Table status, reset between passes, freeing the report
** ======================================================================= */

/* The table's status from its error and difference counts. */
void vtable_set_status (VTable *t) {
  VTableResult *tr = t->res;
  if (t->error != NULL) {
    tr->status = VT_ERROR;
    free(tr->error);
    tr->error = xstrdup(t->error);
  } else if (tr->missing + tr->extra + tr->changed > 0) {
    tr->status = VT_DIFFERENT;
  } else {
    tr->status = VT_EQUAL;
  }
}

/* Forget the results of an earlier pass before comparing the table again. */
void vtable_reset (VTable *t) {
  VTableResult *tr = t->res;
  int i;
  vreport_free_rows(tr);
  kmap_free(&t->pending);
  for (i = 0; i < t->nchanged; i++)
    vkeydiff_free(&t->changed[i], t->nkey);
  free(t->changed);
  t->changed = NULL;
  t->nchanged = t->capchanged = 0;
  for (i = 0; i < t->ndiffs; i++)
    vkeydiff_free(&t->diffs[i], t->nkey);
  free(t->diffs);
  t->diffs = NULL;
  t->ndiffs = 0;
  free(t->hdiffs);
  t->hdiffs = NULL;
  t->nhdiffs = 0;
  for (i = 0; i < 2; i++) {
    free(t->acc_cnt[i]);
    free(t->acc_sum[i]);
    t->acc_cnt[i] = NULL;
    t->acc_sum[i] = NULL;
  }
  t->over_missing = t->over_extra = t->over_changed = 0;
  t->overflow = 0;
  tr->source_rows = tr->target_rows = 0;
  tr->missing = tr->extra = tr->changed = 0;
  tr->chunks_differing = 0;
  tr->truncated = 0;
}

/* Add up the tables' results into the report's totals. */
void vreport_totals (VReport *r) {
  int i;
  for (i = 0; i < r->ntables; i++) {
    VTableResult *tr = &r->tables[i];
    if (tr->status == VT_EQUAL)
      r->tables_equal++;
    else if (tr->status == VT_DIFFERENT || tr->status == VT_MISSING_ON_TARGET)
      r->tables_different++;
    else
      r->tables_failed++;
    r->missing += tr->missing;
    r->extra += tr->extra;
    r->changed += tr->changed;
  }
}

/* Free everything the report owns (see validate.h); r is zeroed. */
void validate_report_free (VReport *r) {
  int i;
  for (i = 0; i < r->ntables; i++) {
    VTableResult *tr = &r->tables[i];
    vreport_free_rows(tr);
    free(tr->schema);
    free(tr->name);
    vstrv_free(tr->key_cols, tr->nkey);
    free(tr->key_kind);
    vstrv_free(tr->columns, tr->ncolumns);
    vstrv_free(tr->only_source, tr->nonly_source);
    vstrv_free(tr->only_target, tr->nonly_target);
    free(tr->error);
  }
  free(r->tables);
  memset(r, 0, sizeof(*r));
}

/* }====================================================================== */
