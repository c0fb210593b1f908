/*
** load_resume.c
** Units grouped by table, and what a resumed load must redo: units
** recorded as done are skipped, a split table is truncated once or its
** pending key ranges delete their range first, so every redo is
** idempotent (docs/fullload.md, "Resume without duplicates").
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "load/load_internal.h"
#include "pg/pgsql.h"

/* Find a table by name: a binary search, fl_index_tables builds them in name order. */
int fl_find_table (FullLoad *fl, const char *nsp, const char *rel) {
  int lo = 0, hi = fl->ntables - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    const FlUnit *u = &fl->plan.units[fl->tables[mid].first_unit];
    int c = strcmp(u->nspname, nsp);
    if (c == 0)
      c = strcmp(u->relname, rel);
    if (c == 0)
      return mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return -1;
}

/* qsort_r order of unit indexes by schema, then table name. */
static int cmp_unit_names (const void *a, const void *b, void *arg) {
  const FlUnit *units = arg;
  const FlUnit *x = &units[*(const int *)a], *y = &units[*(const int *)b];
  int c = strcmp(x->nspname, y->nspname);
  return c != 0 ? c : strcmp(x->relname, y->relname);
}

/* Group units by table (for per-table progress and split handling). */
void fl_index_tables (FullLoad *fl) {
  int n = fl->plan.n, i, *order;
  fl->unit_table = xcalloc((size_t)n + 1, sizeof(int));
  fl->tables = xcalloc((size_t)n + 1, sizeof(FlTable));
  fl->ntables = 0;
  if (n == 0)
    return;
  order = xmalloc((size_t)n * sizeof(int));
  for (i = 0; i < n; i++)
    order[i] = i;
  qsort_r(order, (size_t)n, sizeof(int), cmp_unit_names, fl->plan.units);
  for (i = 0; i < n; i++) {
    if (i == 0 || cmp_unit_names(&order[i - 1], &order[i], fl->plan.units) != 0) {
      fl->tables[fl->ntables].first_unit = order[i];
      fl->ntables++;
    }
    fl->unit_table[order[i]] = fl->ntables - 1;
    fl->tables[fl->ntables - 1].units++;
    fl->tables[fl->ntables - 1].est_bytes += fl->plan.units[order[i]].est_bytes;
  }
  free(order);
}

/* Whether id is one of list[0..n). */
static int in_list (const char *id, const char *const *list, int n) {
  int i;
  for (i = 0; i < n; i++)
    if (strcmp(list[i], id) == 0)
      return 1;
  return 0;
}

/*
** Mark done units and prepare split tables: a table whose ranges were
** none loaded is truncated once here (its ranges then COPY without a
** DELETE); key ranges of a partly loaded table DELETE their range first;
** a CTID-split table that is not complete is truncated and all its
** ranges redone (target CTIDs say nothing about source ranges).
*/
int fl_prepare_units (FullLoad *fl, PGconn *dst, const FullLoadOptions *o, char *err,
                      size_t errlen) {
  int t, i;
  for (i = 0; i < fl->plan.n; i++) {
    FlUnit *u = &fl->plan.units[i];
    u->state = in_list(u->id, o->done, o->ndone) ? FL_SKIPPED : FL_PENDING;
  }
  for (t = 0; t < fl->ntables; t++) {
    FlUnit *first = &fl->plan.units[fl->tables[t].first_unit];
    int done = 0, total = 0, truncate = 0;
    if (first->kind == FL_WHOLE)
      continue;
    for (i = 0; i < fl->plan.n; i++)
      if (fl->unit_table[i] == t) {
        total++;
        done += fl->plan.units[i].state == FL_SKIPPED;
      }
    if (done == total)
      continue;
    if (done == 0 || first->kind == FL_CTIDRANGE)
      truncate = 1;
    for (i = 0; i < fl->plan.n; i++) {
      FlUnit *u = &fl->plan.units[i];
      if (fl->unit_table[i] != t)
        continue;
      if (truncate)
        u->state = FL_PENDING;
      u->needs_delete = !truncate && u->state == FL_PENDING;
    }
    if (truncate) {
      char e[PGCONN_ERRLEN];
      char *qn = PQescapeIdentifier(dst, first->nspname, strlen(first->nspname));
      char *qr = PQescapeIdentifier(dst, first->relname, strlen(first->relname));
      Buf q = BUF_INIT;
      int rc;
      buf_printf(&q, "TRUNCATE ONLY %s.%s", qn, qr);
      PQfreemem(qn);
      PQfreemem(qr);
      rc = pgsql_exec(dst, buf_cstr(&q), e, sizeof(e), NULL);
      buf_free(&q);
      if (rc < 0) {
        snprintf(err, errlen, "cannot truncate %s.%s on the target: %s", first->nspname,
                 first->relname, e);
        return -1;
      }
      if (done > 0)
        log_info("%s.%s: split by CTID and not complete: reloading all %d ranges",
                 first->nspname, first->relname, total);
    }
  }
  return 0;
}
