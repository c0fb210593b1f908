/*
** load_plan.c
** The planner: the tables of the source catalog in scope, with their
** sizes, cut into units (whole tables, key ranges from the split key's
** histogram or a sample, CTID ranges), largest first.  Also the plan's
** own bookkeeping (add, sort, free) and the range WHERE clauses.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "load/load_internal.h"
#include "pg/pgsql.h"

#define DEFAULT_MAX_PARTS 16

void fullload_unit_clear (FlUnit *u) {
  free(u->id);
  free(u->nspname);
  free(u->relname);
  free(u->columns);
  free(u->where);
  memset(u, 0, sizeof(*u));
}

/* See fullload.h: append a pending unit; the plan owns copies of the
   strings. */
FlUnit *fullload_plan_add (FlPlan *p, const char *id, const char *nspname, const char *relname,
                           const char *columns, const char *where, FlUnitKind kind,
                           int part, int nparts, int binary, int64_t est_bytes, int64_t est_rows) {
  FlUnit *u;
  if (p->n == p->cap) {
    p->cap = p->cap ? p->cap * 2 : 16;
    p->units = xrealloc(p->units, (size_t)p->cap * sizeof(FlUnit));
  }
  u = &p->units[p->n++];
  memset(u, 0, sizeof(*u));
  u->id = xstrdup(id);
  u->nspname = xstrdup(nspname);
  u->relname = xstrdup(relname);
  u->columns = xstrdup(columns != NULL ? columns : "");
  u->where = where != NULL ? xstrdup(where) : NULL;
  u->kind = kind;
  u->part = part;
  u->nparts = nparts;
  u->binary = binary;
  u->est_bytes = est_bytes;
  u->est_rows = est_rows;
  return u;
}

/* Free every unit and the array; the plan is empty (reusable) after. */
void fullload_plan_free (FlPlan *p) {
  int i;
  for (i = 0; i < p->n; i++)
    fullload_unit_clear(&p->units[i]);
  free(p->units);
  memset(p, 0, sizeof(*p));
}

/* Plan order: biggest estimated units first (they bound the load's
   duration), then by id for a stable order. */
static int cmp_units (const void *a, const void *b) {
  const FlUnit *x = a, *y = b;
  if (x->est_bytes != y->est_bytes)
    return x->est_bytes > y->est_bytes ? -1 : 1;
  return strcmp(x->id, y->id);
}

void fullload_plan_sort (FlPlan *p) {
  if (p->n > 1)
    qsort(p->units, (size_t)p->n, sizeof(FlUnit), cmp_units);
}

/* See fullload.h: the first part is open below, the last open above,
   so rows outside the histogram's range are still covered.  The caller
   frees the result. */
char *fullload_keyrange_where (const char *column_sql, const char *const *bounds, int n, int i) {
  Buf b = BUF_INIT;
  if (i > 0)
    buf_printf(&b, "%s >= %s", column_sql, bounds[i - 1]);
  if (i > 0 && i < n - 1)
    buf_puts(&b, " AND ");
  if (i < n - 1)
    buf_printf(&b, "%s < %s", column_sql, bounds[i]);
  return buf_steal(&b);
}

/* See fullload.h: part i of n equal page ranges, open-ended at both
   ends like the key ranges.  The caller frees the result. */
char *fullload_ctidrange_where (int64_t pages, int n, int i) {
  Buf b = BUF_INIT;
  long long lo = (long long)(pages * i / n), hi = (long long)(pages * (i + 1) / n);
  if (i > 0)
    buf_printf(&b, "ctid >= '(%lld,0)'::tid", lo);
  if (i > 0 && i < n - 1)
    buf_puts(&b, " AND ");
  if (i < n - 1)
    buf_printf(&b, "ctid < '(%lld,0)'::tid", hi);
  return buf_steal(&b);
}

/* The relation filter for the tables query: partitioned parents expand
   to their leaves on servers that have pg_partition_tree (12+). */
static void filter_sql (Buf *q, int param, int version, int negate) {
  buf_printf(q, " AND %s(n.nspname || '.' || c.relname = ANY ($%d::text[])", negate ? "NOT " : "", param);
  if (version >= 120000)
    buf_printf(q, " OR c.oid IN (SELECT p.relid FROM unnest($%d::text[]) f,"
                  " LATERAL pg_partition_tree(to_regclass(f)) p)", param);
  else
    buf_printf(q, " OR c.oid IN (SELECT to_regclass(f) FROM unnest($%d::text[]) f)", param);
  buf_puts(q, ")");
}

/* Whether a column list expression is usable on the server version. */
static const char *generated_filter (int version) {
  return version >= 120000 ? " AND a.attgenerated = ''" : "";
}

/*
** The tables query.  One row per table with storage: oid, schema, name,
** size (heap + TOAST), estimated rows, heap pages, the quoted column
** list without generated columns, whether every column type can travel
** in binary, and the split key when there is a usable one.
**
** Binary is allowed for built-in base types with send/receive functions
** (and enums, whose binary form is the label), through one level of
** domain, and for arrays of those.  Not for reg* types (their binary
** form is an OID, which differs between servers), composites and
** user-defined types (their binary forms embed type OIDs), nor tsquery
** (an empty tsquery is sent but refused by tsqueryrecv: "malformed
** tsquery", PostgreSQL 15).
*/
static void tables_query (Buf *q, int version, int has_tables, int has_exclude) {
  const char *gen = generated_filter(version);
  buf_printf(q,
    "SELECT n.nspname, c.relname, pg_table_size(c.oid)::int8,"
    " greatest(c.reltuples, 0)::int8,"
    " (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8,"
    " coalesce((SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)"
    "   FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
    "   AND NOT a.attisdropped%s), ''),"
    " NOT EXISTS (SELECT 1 FROM pg_attribute a"
    "   JOIN pg_type t ON t.oid = a.atttypid"
    "   JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END"
    "   LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A'"
    "   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped%s"
    "   AND NOT (b.typtype NOT IN ('c', 'p', 'd') AND b.typsend::oid <> 0"
    "     AND b.typreceive::oid <> 0 AND (b.oid < 16384 OR b.typtype = 'e')"
    "     AND b.typname !~ '^_?reg' AND b.typname !~ '^_?tsquery$'"
    "     AND (e.oid IS NULL OR (e.oid < 16384 AND e.typtype NOT IN ('c', 'p', 'd')"
    "       AND e.typname !~ '^reg')))),"
    " (SELECT quote_ident(a.attname) || '|' || a.attname || '|'"
    "     || format_type(a.atttypid, a.atttypmod) || '|' || (a.attcollation <> 0)::int"
    "   FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
    "   WHERE i.indrelid = c.oid AND i.%s = 1 AND i.indisvalid AND i.indpred IS NULL"
    "   AND i.indexprs IS NULL AND (i.indisprimary OR (i.indisunique AND a.attnotnull))"
    "   ORDER BY i.indisprimary DESC, a.attnum LIMIT 1)"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind = 'r' AND c.relpersistence <> 't'"
    " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_'"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
    "   AND d.objid = c.oid AND d.deptype = 'e')",
    gen, gen, version >= 110000 ? "indnkeyatts" : "indnatts");
  if (has_tables)
    filter_sql(q, 1, version, 0);
  if (has_exclude)
    filter_sql(q, has_tables ? 2 : 1, version, 1);
  buf_puts(q, " ORDER BY 3 DESC, 1, 2");
}

/* Split key of a table, parsed from the tables query. */
typedef struct SplitKey {
  char *quoted, *name, *type;
  int collatable;
} SplitKey;

/* Parse "quoted|raw|type|collatable" into k (k owns the strings: free
   with free_key).  0 when the table has no split key. */
static int parse_key (const char *s, SplitKey *k) {
  char *copy, *p1, *p2, *p3;
  memset(k, 0, sizeof(*k));
  if (s == NULL || s[0] == '\0')
    return 0;
  copy = xstrdup(s);
  /* quoted|raw|type|collatable; the raw name may contain '|', so split
     the quoted name at its first bar and the rest from the right */
  p3 = strrchr(copy, '|');
  if (p3 == NULL) {
    free(copy);
    return 0;
  }
  *p3 = '\0';
  p2 = strrchr(copy, '|');
  if (p2 == NULL) {
    free(copy);
    return 0;
  }
  *p2 = '\0';
  p1 = copy[0] == '"' ? strstr(copy + 1, "\"|") : strchr(copy, '|');
  if (p1 == NULL) {
    free(copy);
    return 0;
  }
  if (copy[0] == '"')
    p1++;
  *p1 = '\0';
  k->quoted = xstrdup(copy);
  k->name = xstrdup(p1 + 1);
  k->type = xstrdup(p2 + 1);
  k->collatable = p3[1] == '1';
  free(copy);
  return 1;
}

/* Free the strings parse_key allocated. */
static void free_key (SplitKey *k) {
  free(k->quoted);
  free(k->name);
  free(k->type);
}

/*
** Boundaries for splitting a table into n parts by key: n-1 SQL literals
** (quoted and cast) in ascending order, from the column's histogram when
** the table was analyzed, else from a block sample.  Fewer boundaries
** come back when values repeat.  Returns the count, -1 on error.
*/
static int key_bounds (PGconn *src, const char *nsp, const char *rel, const SplitKey *k,
                       int n, int64_t pages, char ***out, char *err, size_t errlen) {
  Buf q = BUF_INIT;
  PGresult *res;
  const char *collate = k->collatable ? " COLLATE \"C\"" : "";
  char nbuf[16];
  int i, nb = 0;
  char **bounds;
  char *qrel = NULL, *qnsp = NULL;
  snprintf(nbuf, sizeof(nbuf), "%d", n);
  *out = NULL;
  buf_printf(&q,
    "SELECT quote_literal(x::text) || '::' || $5 FROM (SELECT DISTINCT a[1 + ((i * (array_length(a, 1) - 1)) / $4::int)] AS x"
    " FROM (SELECT (histogram_bounds::text)::%s[] AS a FROM pg_stats"
    "  WHERE schemaname = $1 AND tablename = $2 AND attname = $3 AND NOT inherited) h,"
    " generate_series(1, $4::int - 1) i) q ORDER BY x%s",
    k->type, collate);
  {
    const char *p5[5] = {nsp, rel, k->name, nbuf, k->type};
    res = PQexecParams(src, buf_cstr(&q), 5, NULL, p5, NULL, NULL, 0);
  }
  if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 0) {
    /* no statistics: sample about 3000 blocks */
    double pct = pages > 0 ? 300000.0 / (double)pages : 100.0;
    if (pct > 100.0)
      pct = 100.0;
    if (pct < 0.01)
      pct = 0.01;
    PQclear(res);
    qnsp = PQescapeIdentifier(src, nsp, strlen(nsp));
    qrel = PQescapeIdentifier(src, rel, strlen(rel));
    buf_reset(&q);
    buf_printf(&q,
      "SELECT quote_literal(x::text) || '::' || $2 FROM (SELECT DISTINCT unnest(percentile_disc("
      "  ARRAY(SELECT g::float8 / $1::int FROM generate_series(1, $1::int - 1) g))"
      "  WITHIN GROUP (ORDER BY %s%s)) AS x FROM ONLY %s.%s TABLESAMPLE SYSTEM (%.4f)) q"
      " ORDER BY x%s",
      k->quoted, collate, qnsp ? qnsp : "", qrel ? qrel : "", pct, collate);
    {
      const char *p2[2] = {nbuf, k->type};
      res = PQexecParams(src, buf_cstr(&q), 2, NULL, p2, NULL, NULL, 0);
    }
  }
  PQfreemem(qnsp);
  PQfreemem(qrel);
  buf_free(&q);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    char e[PGCONN_ERRLEN];
    pgconn_result_error(res, src, e, sizeof(e));
    snprintf(err, errlen, "cannot compute split points of %s.%s: %s", nsp, rel, e);
    PQclear(res);
    return -1;
  }
  bounds = xcalloc((size_t)PQntuples(res) + 1, sizeof(char *));
  for (i = 0; i < PQntuples(res); i++)
    if (!PQgetisnull(res, i, 0))
      bounds[nb++] = xstrdup(PQgetvalue(res, i, 0));
  PQclear(res);
  *out = bounds;
  return nb;
}

/* Add a table as one unit, with id "schema.table". */
static void add_whole (FlPlan *plan, const char *nsp, const char *rel, const char *cols,
                       int binary, int64_t bytes, int64_t rows) {
  Buf id = BUF_INIT;
  buf_printf(&id, "%s.%s", nsp, rel);
  fullload_plan_add(plan, buf_cstr(&id), nsp, rel, cols, NULL, FL_WHOLE, 1, 1, binary, bytes, rows);
  buf_free(&id);
}

/* Add the parts of one table split into ranges ('wheres' has n entries). */
static void add_parts (FlPlan *plan, const char *nsp, const char *rel, const char *cols,
                       int binary, int64_t bytes, int64_t rows, FlUnitKind kind,
                       char **wheres, int n) {
  Buf id = BUF_INIT;
  int i;
  for (i = 0; i < n; i++) {
    buf_reset(&id);
    buf_printf(&id, "%s.%s[%d/%d]", nsp, rel, i + 1, n);
    fullload_plan_add(plan, buf_cstr(&id), nsp, rel, cols, wheres[i], kind, i + 1, n, binary,
                      bytes / n, rows / n);
  }
  buf_free(&id);
}

/*
** See fullload.h.  Lists the tables in scope with their sizes; a table
** over the split threshold becomes up to max_parts units, by key ranges
** from its split key's histogram or, without a usable key, by CTID
** ranges; the others are whole-table units.  Binary COPY unless the
** format is text, where both versions and every column type allow it.
*/
int fullload_plan (PGconn *src, const FlPlanOptions *opts, FlPlan *plan, char *err, size_t errlen) {
  int version = PQserverVersion(src);
  Buf q = BUF_INIT, t = BUF_INIT, x = BUF_INIT;
  const char *params[2];
  int np = 0, i, nsplit = 0, dst_version = opts->target_version;
  int64_t threshold;
  int max_parts = opts->max_parts > 0 ? opts->max_parts : DEFAULT_MAX_PARTS;
  int binary_versions = copy_binary_versions_ok(version, dst_version > 0 ? dst_version : version);
  PGresult *res;
  memset(plan, 0, sizeof(*plan));
  tables_query(&q, version, opts->tables != NULL, opts->exclude != NULL);
  if (opts->tables != NULL) {
    pgsql_text_array(&t, opts->tables, opts->ntables, 1);
    params[np++] = buf_cstr(&t);
  }
  if (opts->exclude != NULL) {
    pgsql_text_array(&x, opts->exclude, opts->nexclude, 1);
    params[np++] = buf_cstr(&x);
  }
  {
    char e[PGCONN_ERRLEN];
    int rc = pgsql_exec_params(src, buf_cstr(&q), np, params, &res, e, sizeof(e), NULL);
    buf_free(&q);
    buf_free(&t);
    buf_free(&x);
    if (rc < 0) {
      snprintf(err, errlen, "cannot list the source tables: %s", e);
      return -1;
    }
  }
  threshold = opts->split_threshold;
  for (i = 0; i < PQntuples(res); i++) {
    const char *nsp = PQgetvalue(res, i, 0), *rel = PQgetvalue(res, i, 1);
    int64_t bytes = strtoll(PQgetvalue(res, i, 2), NULL, 10);
    int64_t rows = strtoll(PQgetvalue(res, i, 3), NULL, 10);
    int64_t pages = strtoll(PQgetvalue(res, i, 4), NULL, 10);
    const char *cols = PQgetvalue(res, i, 5);
    int binary = opts->format != 1 && binary_versions && PQgetvalue(res, i, 6)[0] == 't';
    int nparts = 1;
    SplitKey key;
    int has_key = parse_key(PQgetisnull(res, i, 7) ? NULL : PQgetvalue(res, i, 7), &key);
    if (threshold > 0 && bytes > threshold) {
      /* enough parts to keep every worker busy on it, each at most the
         threshold when max_parts allows */
      int64_t want = (bytes + threshold - 1) / threshold;
      if (want < opts->jobs)
        want = opts->jobs;
      nparts = want > max_parts ? max_parts : (int)want;
    }
    if (nparts > 1 && has_key) {
      char **bounds = NULL;
      int nb = key_bounds(src, nsp, rel, &key, nparts, pages, &bounds, err, errlen);
      if (nb < 0) {
        free_key(&key);
        PQclear(res);
        fullload_plan_free(plan);
        return -1;
      }
      if (nb >= 1) {
        char **wheres = xcalloc((size_t)nb + 1, sizeof(char *));
        Buf col = BUF_INIT;
        int j;
        buf_printf(&col, "%s%s", key.quoted, key.collatable ? " COLLATE \"C\"" : "");
        for (j = 0; j <= nb; j++)
          wheres[j] = fullload_keyrange_where(buf_cstr(&col), (const char *const *)bounds, nb + 1, j);
        add_parts(plan, nsp, rel, cols, binary, bytes, rows, FL_KEYRANGE, wheres, nb + 1);
        for (j = 0; j <= nb; j++)
          free(wheres[j]);
        free(wheres);
        buf_free(&col);
        nsplit++;
      } else {
        add_whole(plan, nsp, rel, cols, binary, bytes, rows);
      }
      for (int j = 0; j < nb; j++)
        free(bounds[j]);
      free(bounds);
    } else if (nparts > 1 && version >= 140000 && pages >= nparts) {
      /* no usable key: heap block ranges (TID range scans need 14+) */
      char **wheres = xcalloc((size_t)nparts, sizeof(char *));
      int j;
      for (j = 0; j < nparts; j++)
        wheres[j] = fullload_ctidrange_where(pages, nparts, j);
      add_parts(plan, nsp, rel, cols, binary, bytes, rows, FL_CTIDRANGE, wheres, nparts);
      for (j = 0; j < nparts; j++)
        free(wheres[j]);
      free(wheres);
      nsplit++;
    } else {
      add_whole(plan, nsp, rel, cols, binary, bytes, rows);
    }
    if (has_key)
      free_key(&key);
  }
  PQclear(res);
  fullload_plan_sort(plan);
  log_debug("full load plan: %d units, %d tables split", plan->n, nsplit);
  return 0;
}

/* See fullload.h: fullload_plan on a connection of its own, closed
   before returning. */
int fullload_plan_conninfo (const char *source, const FlPlanOptions *opts, FlPlan *plan,
                            char *err, size_t errlen) {
  PGconn *c = pgconn_open(source, "source", PGCONN_NORMAL, err, errlen);
  PGresult *res;
  int rc;
  if (c == NULL)
    return -1;
  res = PQexec(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  PQclear(res);
  rc = fullload_plan(c, opts, plan, err, errlen);
  PQfinish(c);
  return rc;
}
