/*
** validate_bounds.c
** Chunk bounds of a keyed table: the key values that split it into
** chunks of about chunk_rows rows.  Quantiles of a block sample of the
** source (cheap), or exact quantiles by row number when the sample is
** too small or a differing chunk must be re-split.  Bounds are compared
** as values of each server's key types and collations, so only bounds
** that both servers order the same way are kept: each chunk then holds
** the same rows on both sides.
**
** Bounds are arrays of nbounds * nkey strings (row-major), owned by the
** caller; nbounds bounds make nbounds + 1 chunks.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/log.h"
#include "validate/validate_internal.h"

/*
** Ask 'vc' to order the bound rows (bounds[i*nkey ...]) with its own
** types and collations, and keep the longest subsequence that is
** increasing there too, so the chunks partition the key space on both
** servers.  Only needed when a key column is collatable.  Updates
** *bounds / *nbounds.  Returns 0 or -1.
*/
int vbounds_keep_monotone (VConn *vc, VTable *t, int target, char ***bounds, int *nbounds,
                           char *err, size_t errlen) {
  Buf sql = BUF_INIT;
  Buf *arrs;
  const char **pv;
  PGresult *res;
  int i, j, n = *nbounds, *rank, *keep, nkeep;
  char **nb;
  if (n < 2 || !t->key_collatable)
    return 0;
  arrs = xcalloc((size_t)t->nkey, sizeof(Buf));
  pv = xcalloc((size_t)t->nkey, sizeof(char *));
  buf_puts(&sql, "SELECT o FROM unnest(");
  for (j = 0; j < t->nkey; j++) {
    buf_printf(&sql, "%s$%d::text[]", j ? ", " : "", j + 1);
    pgsql_text_array(&arrs[j], (const char *const *)*bounds + j, n, t->nkey);   /* key column j */
    pv[j] = buf_cstr(&arrs[j]);
  }
  buf_puts(&sql, ") WITH ORDINALITY AS u(");
  for (j = 0; j < t->nkey; j++)
    buf_printf(&sql, "v%d, ", j);
  buf_puts(&sql, "o) ORDER BY ");
  for (j = 0; j < t->nkey; j++) {
    const VCol *c = &t->cols[t->key[j]];
    const char *coll = target ? c->tcoll : c->scoll;
    buf_printf(&sql, "v%d::%s", j, vsql_col_type(c, target));
    if (coll != NULL)
      buf_printf(&sql, " COLLATE %s", coll);
    buf_puts(&sql, ", ");
  }
  buf_puts(&sql, "o");
  res = vquery(vc, buf_cstr(&sql), t->nkey, pv, err, errlen);
  buf_free(&sql);
  for (j = 0; j < t->nkey; j++)
    buf_free(&arrs[j]);
  free(arrs);
  free(pv);
  if (res == NULL)
    return -1;
  rank = xcalloc((size_t)n, sizeof(int));
  keep = xcalloc((size_t)n, sizeof(int));
  for (i = 0; i < PQntuples(res) && i < n; i++) {
    int o = atoi(PQgetvalue(res, i, 0)) - 1;
    if (o >= 0 && o < n)
      rank[o] = i;
  }
  PQclear(res);
  nkeep = validate_monotone_subset(rank, n, keep);
  if (nkeep < n) {
    log_debug("validate %s: %d of %d chunk bounds kept (collations order keys differently)",
              t->qname, nkeep, n);
    nb = xcalloc((size_t)nkeep * (size_t)t->nkey + 1, sizeof(char *));
    for (i = 0; i < nkeep; i++)
      for (j = 0; j < t->nkey; j++) {
        nb[i * t->nkey + j] = (*bounds)[keep[i] * t->nkey + j];
        (*bounds)[keep[i] * t->nkey + j] = NULL;
      }
    vstrv_free(*bounds, n * t->nkey);
    *bounds = nb;
    *nbounds = nkeep;
  }
  free(rank);
  free(keep);
  return 0;
}

/* Read bound rows (nkey text columns each) from a result. */
static void take_bounds (const PGresult *res, int nkey, char ***bounds, int *nbounds) {
  int n = PQntuples(res), i, j;
  *bounds = xcalloc((size_t)n * (size_t)nkey + 1, sizeof(char *));
  for (i = 0; i < n; i++)
    for (j = 0; j < nkey; j++)
      (*bounds)[i * nkey + j] = xstrdup(PQgetvalue(res, i, j));
  *nbounds = n;
}

/* Append "SELECT k0::text, ... FROM (SELECT key AS k0, ..., row_number()
   OVER (ORDER BY key) AS rn": the numbered keys both quantile queries
   pick from (they finish the subquery). */
static void numbered_keys (Buf *sql, const VTable *t) {
  int i;
  buf_puts(sql, "SELECT ");
  for (i = 0; i < t->nkey; i++)
    buf_printf(sql, "%sk%d::text", i ? ", " : "", i);
  buf_puts(sql, " FROM (SELECT ");
  for (i = 0; i < t->nkey; i++) {
    pgsql_quote_ident(sql, t->cols[t->key[i]].name);
    buf_printf(sql, " AS k%d, ", i);
  }
  buf_puts(sql, "row_number() OVER (ORDER BY ");
  vsql_key_list(sql, t, 0);
  buf_puts(sql, ") AS rn");
}

/*
** Exact quantiles of the rows in [lo, hi) on 'vc': every 'step'-th key
** in key order (one sort on the server).  Used for tables with no
** statistics and for re-splitting a differing chunk much bigger than
** planned.  Returns 0 (bounds in *bounds, caller frees) or -1.
*/
int vbounds_exact (VConn *vc, VTable *t, int target, char *const *lo, char *const *hi,
                   long step, char ***bounds, int *nbounds, char *err, size_t errlen) {
  Buf sql = BUF_INIT;
  const char *pv[64];
  char stepbuf[32];
  int np = 0;
  PGresult *res;
  if (2 * t->nkey + 1 > (int)(sizeof(pv) / sizeof(pv[0]))) {
    *bounds = NULL;
    *nbounds = 0;
    return 0;   /* absurdly wide keys: one chunk */
  }
  numbered_keys(&sql, t);
  buf_printf(&sql, " FROM %s", vsql_from(t, target));
  vsql_range_pred(&sql, t, target, lo, hi, pv, &np);
  snprintf(stepbuf, sizeof(stepbuf), "%ld", step > 0 ? step : 1);
  pv[np++] = stepbuf;
  buf_printf(&sql, ") s WHERE rn %% $%d = 0 ORDER BY rn", np);
  res = vquery(vc, buf_cstr(&sql), np, pv, err, errlen);
  buf_free(&sql);
  if (res == NULL)
    return -1;
  take_bounds(res, t->nkey, bounds, nbounds);
  PQclear(res);
  return 0;
}

/*
** Chunk bounds of a keyed table (t->bounds): quantiles of a block
** sample of the source (TABLESAMPLE SYSTEM, REPEATABLE so reruns plan
** the same chunks), or exact quantiles when the sample comes back too
** small; then only bounds ordered the same way on the target are kept.
** Tables expected to fit one chunk get no bounds.
*/
int vbounds_plan (Run *run, VTable *t, char *err, size_t errlen) {
  long chunk = run->o->chunk_rows;
  double nchunks = ceil(t->est_rows / (double)chunk);
  double pct;
  Buf sql = BUF_INIT;
  char spct[32], snch[32];
  const char *pv[2];
  PGresult *res;
  if (t->nkey == 0 || nchunks < 2)
    return 0;
  pct = 100.0 * fmax(nchunks * 50.0, 20000.0) / t->est_rows;   /* ~50 sampled rows a chunk */
  snprintf(spct, sizeof(spct), "%.6f", pct > 100.0 ? 100.0 : pct);
  snprintf(snch, sizeof(snch), "%.0f", nchunks);
  pv[0] = spct;
  pv[1] = snch;
  numbered_keys(&sql, t);
  buf_printf(&sql, ", count(*) OVER () AS cnt FROM %s TABLESAMPLE SYSTEM ($1) REPEATABLE (7))"
             " s WHERE rn %% greatest(cnt / $2::int8, 1) = 0 AND rn < cnt ORDER BY rn",
             t->from_src);
  res = vquery(&run->msrc, buf_cstr(&sql), 2, pv, err, errlen);
  buf_free(&sql);
  if (res == NULL)
    return -1;
  if (PQntuples(res) >= nchunks / 4) {
    take_bounds(res, t->nkey, &t->bounds, &t->nbounds);
    PQclear(res);
  } else {
    PQclear(res);
    if (vbounds_exact(&run->msrc, t, 0, NULL, NULL, chunk, &t->bounds, &t->nbounds,
                      err, errlen) != 0)
      return -1;
  }
  return vbounds_keep_monotone(&run->mtgt, t, 1, &t->bounds, &t->nbounds, err, errlen);
}
