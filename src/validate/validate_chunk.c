/*
** validate_chunk.c
** Comparing one chunk [lo, hi) of a keyed table by range queries: the
** count and hash sum of its rows on both servers at once.  Equal: done,
** nothing else leaves the servers.  Different: narrow it down
** (validate_narrow.c), after re-splitting it first when it is far
** bigger than planned.
*/
#include <stdlib.h>
#include <string.h>

#include "validate/validate_internal.h"

/* A differing chunk far bigger than planned: split it with exact
   quantiles on its bigger side ('target') and compare the parts. */
static int resplit (Worker *w, VTable *t, char *const *lo, char *const *hi, int depth,
                    int target, char *err, size_t errlen) {
  char **sb = NULL;
  int nsb = 0, i, rc = 0;
  if (vbounds_exact(target ? &w->tgt : &w->src, t, target, lo, hi, w->run->o->chunk_rows,
                    &sb, &nsb, err, errlen) != 0)
    return -1;
  if (vbounds_keep_monotone(target ? &w->src : &w->tgt, t, !target, &sb, &nsb,
                            err, errlen) != 0) {
    vstrv_free(sb, nsb * t->nkey);
    return -1;
  }
  if (nsb == 0) {
    free(sb);
    return vnarrow_drill(w, t, lo, hi, RESPLIT_FACTOR * w->run->o->chunk_rows, err, errlen);
  }
  for (i = 0; i <= nsb && rc == 0; i++) {
    char *const *sl = i == 0 ? lo : &sb[(i - 1) * t->nkey];
    char *const *sh = i < nsb ? &sb[i * t->nkey] : hi;
    rc = vchunk_compare(w, t, sl, sh, depth + 1, 0, err, errlen);
  }
  vstrv_free(sb, nsb * t->nkey);
  return rc;
}

/*
** Compare the chunk [lo, hi) (NULL: unbounded): count and hash sum on
** both servers at once; when they differ, narrow down (one side empty,
** re-split, or drill).  'top': a planned chunk whose counts go to the
** table's totals (not a part of a re-split chunk, nor a chunk a scan
** already counted).  Returns 0, or -1 with a message in err.
*/
int vchunk_compare (Worker *w, VTable *t, char *const *lo, char *const *hi, int depth,
                    int top, char *err, size_t errlen) {
  VPair q;
  PGresult *rs = NULL, *rt = NULL;
  int64_t cs, ct;
  int side, rc = -1;
  vpair_init(&q, 2 * t->nkey);
  for (side = 0; side < 2; side++) {
    buf_printf(&q.sql[side], "SELECT count(*), coalesce(sum(%s), 0) FROM %s", t->hexpr,
               vsql_from(t, side));
    vsql_range_pred(&q.sql[side], t, side, lo, hi, q.pv[side], &q.np[side]);
  }
  if (vpair_run(&q, &w->src, &w->tgt, &rs, &rt, err, errlen) != 0)
    goto done;
  cs = strtoll(PQgetvalue(rs, 0, 0), NULL, 10);
  ct = strtoll(PQgetvalue(rt, 0, 0), NULL, 10);
  if (top) {
    pthread_mutex_lock(&t->mu);
    t->res->source_rows += cs;
    t->res->target_rows += ct;
    pthread_mutex_unlock(&t->mu);
    vrun_add_rows(w->run, cs);
  }
  if (cs == ct && strcmp(PQgetvalue(rs, 0, 1), PQgetvalue(rt, 0, 1)) == 0) {
    rc = 0;
    goto done;
  }
  if (top) {
    pthread_mutex_lock(&t->mu);
    t->res->chunks_differing++;
    pthread_mutex_unlock(&t->mu);
  }
  if (cs == 0 || ct == 0)
    rc = vnarrow_one_sided(w, t, lo, hi, cs == 0, cs == 0 ? ct : cs, err, errlen);
  else if ((cs > ct ? cs : ct) > RESPLIT_FACTOR * w->run->o->chunk_rows && depth < 3)
    rc = resplit(w, t, lo, hi, depth, ct > cs, err, errlen);
  else
    rc = vnarrow_drill(w, t, lo, hi, cs > ct ? cs : ct, err, errlen);
done:
  PQclear(rs);
  PQclear(rt);
  vpair_free(&q);
  return rc;
}
