/*
** validate_multiset.c
** Tables without a usable key (no primary key, no unique index on NOT
** NULL columns): the rows are compared as multisets of row hashes.  A
** first pass compares count and hash sum per bucket of the row hash; a
** second pass fetches counts per row hash for the differing buckets
** only, streamed in hash order from both servers and merged.  The
** report lists row groups (a hash with its counts on each side) with an
** example row.  Each table is one unit of work (one worker).
**
** Two different rows with the same 64-bit hash would count as equal: a
** risk of about n^2 / 2^65 for n distinct rows.
*/
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "validate/validate_internal.h"

/* Buckets for the first pass: a power of two, about ROWS_PER_BUCKET
   rows each, at most MAX_BUCKETS. */
static int64_t ms_buckets (const VTable *t) {
  int64_t nb = 1;
  while ((double)nb * ROWS_PER_BUCKET < t->est_rows && nb < MAX_BUCKETS)
    nb <<= 1;
  return nb;
}

/* Record a row-hash group whose counts differ (cs on the source, ct on
   the target): counted always, stored up to STORE_CAP groups.  The
   table is one unit, so no lock is needed. */
static void hdiff_add (VTable *t, int64_t h, int64_t cs, int64_t ct) {
  VTableResult *tr = t->res;
  if (cs > ct) tr->missing += cs - ct;
  if (ct > cs) tr->extra += ct - cs;
  if (t->nhdiffs >= STORE_CAP) {
    t->overflow = 1;
    return;
  }
  if ((t->nhdiffs & (t->nhdiffs - 1)) == 0 || t->nhdiffs == 0)
    t->hdiffs = xrealloc(t->hdiffs, sizeof(HashDiff) * (size_t)(t->nhdiffs ? t->nhdiffs * 2 : 1));
  t->hdiffs[t->nhdiffs].h = h;
  t->hdiffs[t->nhdiffs].cs = cs;
  t->hdiffs[t->nhdiffs].ct = ct;
  t->nhdiffs++;
}

/* One example row (column texts, truncated) for each reported group of
   that side (missing: source, extra: target). */
static int ms_examples (VConn *vc, Run *run, VTable *t, int target, char *err, size_t errlen) {
  Buf q = BUF_INIT, arr = BUF_INIT;
  const char *pv[1];
  PGresult *res;
  VTableResult *tr = t->res;
  int i, r, c, any = 0;
  buf_putc(&arr, '{');
  for (i = 0; i < tr->nrows; i++) {
    VRowDiff *d = &tr->rows[i];
    if ((d->kind == VDIFF_EXTRA) != (target != 0))
      continue;
    buf_printf(&arr, "%s%" PRId64, any ? "," : "", d->hash);
    any = 1;
  }
  buf_putc(&arr, '}');
  if (!any) {
    buf_free(&arr);
    return 0;
  }
  buf_printf(&q, "SELECT DISTINCT ON (1) %s", t->hexpr);
  for (c = 0; c < t->ncols; c++) {
    buf_puts(&q, ", ");
    pgsql_quote_ident(&q, t->cols[c].name);
    buf_puts(&q, "::text");
  }
  buf_printf(&q, " FROM %s WHERE %s = ANY ($1::int8[]) ORDER BY 1", vsql_from(t, target),
             t->hexpr);
  pv[0] = buf_cstr(&arr);
  res = vquery(vc, buf_cstr(&q), 1, pv, err, errlen);
  buf_free(&q);
  buf_free(&arr);
  if (res == NULL)
    return -1;
  for (r = 0; r < PQntuples(res); r++) {
    int64_t h = strtoll(PQgetvalue(res, r, 0), NULL, 10);
    for (i = 0; i < tr->nrows; i++) {
      VRowDiff *d = &tr->rows[i];
      if (d->hash != h || d->values != NULL || (d->kind == VDIFF_EXTRA) != (target != 0))
        continue;
      d->values = xcalloc((size_t)(t->ncols > 0 ? t->ncols : 1), sizeof(char *));
      for (c = 0; c < t->ncols; c++)
        d->values[c] = PQgetisnull(res, r, c + 1) ? NULL
                     : validate_truncate(PQgetvalue(res, r, c + 1), run->o->max_value_len);
    }
  }
  PQclear(res);
  return 0;
}

/* Turn the first max_rows stored groups into report rows, with example
   values unless redacting. */
static int ms_rows (VConn *s, VConn *g, Run *run, VTable *t, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  int i, n = t->nhdiffs < run->o->max_rows ? t->nhdiffs : run->o->max_rows;
  tr->rows = xcalloc((size_t)(n > 0 ? n : 1), sizeof(VRowDiff));
  for (i = 0; i < n; i++) {
    HashDiff *h = &t->hdiffs[i];
    VRowDiff *d = &tr->rows[i];
    d->kind = h->cs > h->ct ? VDIFF_MISSING : VDIFF_EXTRA;
    d->hash = h->h;
    d->source_count = h->cs;
    d->target_count = h->ct;
  }
  tr->nrows = n;
  tr->truncated = t->overflow || t->nhdiffs > n;
  if (run->o->redact || n == 0)
    return 0;
  if (ms_examples(s, run, t, 0, err, errlen) != 0 || ms_examples(g, run, t, 1, err, errlen) != 0)
    return -1;
  return 0;
}

/* The bucket query (groups = 0) or the per-hash counts of the listed
   buckets (groups = 1, $1 = the bucket numbers) for one side. */
static void ms_sql (Buf *b, const VTable *t, int target, int64_t mask, int groups) {
  const char *from = vsql_from(t, target);
  if (!groups)
    buf_printf(b, "SELECT h & %" PRId64 ", count(*), sum(h) FROM (SELECT %s AS h FROM %s) s"
               " GROUP BY 1 ORDER BY 1", mask, t->hexpr, from);
  else
    buf_printf(b, "SELECT h, count(*) FROM (SELECT %s AS h FROM %s) s"
               " WHERE h & %" PRId64 " = ANY ($1::int8[]) GROUP BY h ORDER BY h",
               t->hexpr, from, mask);
}

/*
** First pass: count and hash sum per bucket of the row hash, one scan
** per side at once.  Sets the table's row counts and chunk figures and
** writes the differing buckets to 'list' (an int8[] literal).  Returns
** how many buckets differ, or -1.
*/
static int compare_buckets (Worker *w, VTable *t, int64_t mask, Buf *list,
                            char *err, size_t errlen) {
  VTableResult *tr = t->res;
  VPair q;
  PGresult *rs = NULL, *rt = NULL;
  int64_t ts = 0, tt = 0;
  int side, ndiff;
  vpair_init(&q, 0);
  for (side = 0; side < 2; side++)
    ms_sql(&q.sql[side], t, side, mask, 0);
  if (vpair_run(&q, &w->src, &w->tgt, &rs, &rt, err, errlen) != 0) {
    vpair_free(&q);
    return -1;
  }
  vpair_free(&q);
  ndiff = vbuckets_diff(rs, rt, list, &ts, &tt);
  PQclear(rs);
  PQclear(rt);
  tr->nchunks = (int)(mask + 1);
  tr->source_rows = ts;
  tr->target_rows = tt;
  tr->chunks_differing = ndiff;
  vrun_add_rows(w->run, ts);
  return ndiff;
}

/*
** One side is empty: every row of the other side differs.  Its first
** STORE_CAP row-hash groups are listed with exact counts; the totals are
** the other side's row count.
*/
static int one_sided_groups (Worker *w, VTable *t, int target, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  Buf q = BUF_INIT;
  PGresult *res;
  int64_t ts = tr->source_rows, tt = tr->target_rows;
  int k;
  buf_printf(&q, "SELECT h, count(*) FROM (SELECT %s AS h FROM %s) s GROUP BY h ORDER BY h"
             " LIMIT %d", t->hexpr, vsql_from(t, target), STORE_CAP);
  res = vquery(target ? &w->tgt : &w->src, buf_cstr(&q), 0, NULL, err, errlen);
  buf_free(&q);
  if (res == NULL)
    return -1;
  for (k = 0; k < PQntuples(res); k++) {
    int64_t h = strtoll(PQgetvalue(res, k, 0), NULL, 10);
    int64_t c = strtoll(PQgetvalue(res, k, 1), NULL, 10);
    hdiff_add(t, h, target ? 0 : c, target ? c : 0);
  }
  PQclear(res);
  tr->missing = target ? 0 : ts;   /* the listed groups are exact; the rest is the remainder */
  tr->extra = target ? tt : 0;
  if (t->nhdiffs >= STORE_CAP)
    t->overflow = 1;
  return 0;
}

/*
** Second pass: counts per row hash in the differing buckets ('list'),
** streamed from both sides in hash order and merged: a hash on one side
** only, or with different counts, is a differing group.
*/
static int merge_groups (Worker *w, VTable *t, int64_t mask, const char *list,
                         char *err, size_t errlen) {
  VPair q;
  PGresult *a, *b;
  int side, failed = 0;
  vpair_init(&q, 1);
  for (side = 0; side < 2; side++) {
    ms_sql(&q.sql[side], t, side, mask, 1);
    q.pv[side][q.np[side]++] = list;
  }
  if (vpair_send(&q, &w->src, &w->tgt, 1, err, errlen) != 0) {
    vpair_free(&q);
    return -1;
  }
  vpair_free(&q);
  a = vnext(&w->src, &failed, err, errlen);
  if (failed) {
    vdrain(&w->tgt);
    return -1;
  }
  b = vnext(&w->tgt, &failed, err, errlen);
  while (!failed && (a != NULL || b != NULL)) {
    int64_t ha = a ? strtoll(PQgetvalue(a, 0, 0), NULL, 10) : 0;
    int64_t hb = b ? strtoll(PQgetvalue(b, 0, 0), NULL, 10) : 0;
    int64_t ca = a ? strtoll(PQgetvalue(a, 0, 1), NULL, 10) : 0;
    int64_t cb = b ? strtoll(PQgetvalue(b, 0, 1), NULL, 10) : 0;
    if (a != NULL && (b == NULL || ha < hb)) {
      hdiff_add(t, ha, ca, 0);
      PQclear(a);
      a = vnext(&w->src, &failed, err, errlen);
    } else if (b != NULL && (a == NULL || hb < ha)) {
      hdiff_add(t, hb, 0, cb);
      PQclear(b);
      b = vnext(&w->tgt, &failed, err, errlen);
    } else {
      if (ca != cb)
        hdiff_add(t, ha, ca, cb);
      PQclear(a);
      PQclear(b);
      a = vnext(&w->src, &failed, err, errlen);
      b = failed ? NULL : vnext(&w->tgt, &failed, err, errlen);
    }
  }
  PQclear(a);
  PQclear(b);
  if (failed) {
    vdrain(&w->src);
    vdrain(&w->tgt);
    return -1;
  }
  return 0;
}

/*
** The whole multiset comparison of one table (one unit): per-bucket
** count and hash sum, then the differing groups (all of one side when
** the other is empty, else merged per row hash), then report rows with
** example values.  Returns 0, or -1 with a message in err.
*/
int vmultiset_compare (Worker *w, VTable *t, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  int64_t mask = ms_buckets(t) - 1;
  Buf list = BUF_INIT;
  int ndiff, rc;
  ndiff = compare_buckets(w, t, mask, &list, err, errlen);
  if (ndiff <= 0)
    rc = ndiff;
  else if (tr->source_rows == 0 || tr->target_rows == 0)
    rc = one_sided_groups(w, t, tr->source_rows == 0, err, errlen);
  else
    rc = merge_groups(w, t, mask, buf_cstr(&list), err, errlen);
  if (rc == 0 && ndiff > 0)
    rc = ms_rows(&w->src, &w->tgt, w->run, t, err, errlen);
  buf_free(&list);
  return rc;
}
