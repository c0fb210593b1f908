/*
** validate_scan.c
** One pass per side over a table with a single-column key: a single
** query per side and block range computes every chunk's count and hash
** sum at once (width_bucket over the chunk bounds), instead of one range
** query per chunk.  Big tables are scanned as several block ranges
** (TID range scans, PostgreSQL 14+) spread over the workers.  When the
** last range is done, the chunks whose totals differ become drill units
** (validate_chunk.c, validate_narrow.c).
*/
#include <inttypes.h>
#include <stdlib.h>

#include <libpq-fe.h>

#include "validate/validate_internal.h"

#define SCAN_UNIT_PAGES 65536    /* at most this many heap blocks (512 MB) per scan unit */

/* A decimal integer (numeric text of a sum) into 128 bits. */
static __int128 parse_i128 (const char *s) {
  __int128 v = 0;
  int neg = *s == '-';
  if (neg || *s == '+')
    s++;
  for (; *s >= '0' && *s <= '9'; s++)
    v = v * 10 + (*s - '0');
  return neg ? -v : v;
}

/* Scan units for a table: enough for the parallelism asked and for
   units of at most SCAN_UNIT_PAGES; 1 when a server cannot scan block
   ranges (TID range scans need 14). */
int vscan_parts (const Run *run, const VTable *t) {
  int64_t pages = t->pages[0] > t->pages[1] ? t->pages[0] : t->pages[1];
  int64_t k = (pages + SCAN_UNIT_PAGES - 1) / SCAN_UNIT_PAGES, par;
  if (PQserverVersion(run->msrc.c) < 140000 || PQserverVersion(run->mtgt.c) < 140000)
    return 1;
  par = 1;
  if (run->o->scan_split_pages > 0)
    par = (pages + run->o->scan_split_pages - 1) / run->o->scan_split_pages;
  if (par > run->o->jobs)
    par = run->o->jobs;
  if (k < par)
    k = par;
  if (k < 1)
    k = 1;
  if (k > 256)
    k = 256;
  return (int)k;
}

/* The scan query for one side and block range [first, last) (last < 0:
   to the end). */
static void scan_sql (Buf *b, const VTable *t, int target, int64_t first, int64_t last) {
  const VCol *k = &t->cols[t->key[0]];
  buf_puts(b, "SELECT b, count(*), sum(h) FROM (SELECT width_bucket(");
  pgsql_quote_ident(b, k->name);
  buf_printf(b, ", $1::%s[]) AS b, %s AS h FROM %s", vsql_col_type(k, target), t->hexpr,
             target ? t->from_tgt : t->from_src);
  if (t->nscan > 1) {
    buf_printf(b, " WHERE ctid >= '(%" PRId64 ",0)'::tid", first);
    if (last >= 0)
      buf_printf(b, " AND ctid < '(%" PRId64 ",0)'::tid", last);
  }
  /* OFFSET 0: the planner then expects few groups and hashes them */
  buf_puts(b, " OFFSET 0) s GROUP BY 1");
}

/* Add one side's partial aggregates to the table's accumulators
   (caller holds t->mu); returns the rows counted. */
static int64_t scan_merge (VTable *t, int side, const PGresult *res) {
  int r;
  int64_t rows = 0;
  for (r = 0; r < PQntuples(res); r++) {
    long c = strtol(PQgetvalue(res, r, 0), NULL, 10);
    int64_t n = strtoll(PQgetvalue(res, r, 1), NULL, 10);
    if (c < 0 || c > t->nbounds)
      continue;
    t->acc_cnt[side][c] += n;
    t->acc_sum[side][c] += parse_i128(PQgetvalue(res, r, 2));
    rows += n;
  }
  return rows;
}

/*
** Scan unit 'part' of table t: block range part/nscan of each side's
** heap, aggregated per chunk on both servers at once and added to the
** table's accumulators.  Returns 0, or -1 with a message in err.
*/
int vscan_part (Worker *w, VTable *t, int part, char *err, size_t errlen) {
  VPair q;
  PGresult *rs = NULL, *rt = NULL;
  int64_t rows;
  int side, rc = -1;
  vpair_init(&q, 1);
  for (side = 0; side < 2; side++) {
    int64_t first = t->pages[side] * part / t->nscan;
    int64_t last = t->pages[side] * (part + 1) / t->nscan;
    if (part == 0)
      first = 0;
    if (part == t->nscan - 1)
      last = -1;             /* the last range is open: blocks added since planning */
    scan_sql(&q.sql[side], t, side, first, last);
    q.pv[side][q.np[side]++] = t->bounds_array;
  }
  if (vpair_run(&q, &w->src, &w->tgt, &rs, &rt, err, errlen) != 0)
    goto done;
  pthread_mutex_lock(&t->mu);
  rows = scan_merge(t, 0, rs);
  scan_merge(t, 1, rt);
  pthread_mutex_unlock(&t->mu);
  vrun_add_rows(w->run, rows);
  rc = 0;
done:
  PQclear(rs);
  PQclear(rt);
  vpair_free(&q);
  return rc;
}

/*
** The last scan unit of a table is done: compare the chunk totals of
** both sides; the chunks that differ become drill units (counted in the
** table's outstanding units before this unit finishes).
*/
void vscan_finished (Worker *w, VTable *t) {
  VTableResult *tr = t->res;
  Unit *drills = xcalloc((size_t)t->nbounds + 2, sizeof(Unit));
  int c, n = 0;
  pthread_mutex_lock(&t->mu);
  for (c = 0; c <= t->nbounds; c++) {
    tr->source_rows += t->acc_cnt[0][c];
    tr->target_rows += t->acc_cnt[1][c];
    if (t->acc_cnt[0][c] != t->acc_cnt[1][c] || t->acc_sum[0][c] != t->acc_sum[1][c]) {
      drills[n].table = (int)(t - w->run->tables);
      drills[n].kind = U_DRILL;
      drills[n].chunk = c;
      n++;
    }
  }
  tr->chunks_differing = n;
  t->chunks_left += n;
  pthread_mutex_unlock(&t->mu);
  if (n > 0)
    vrun_enqueue(w->run, drills, n);
  free(drills);
}
