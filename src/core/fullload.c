/*
** fullload.c
** The parallel full-load engine (see fullload.h): planning units from
** the source catalog, worker threads relaying COPY streams inside one
** shared snapshot, finished-unit events and progress for the caller.
*/
#include "core/fullload.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/parallel_sql.h"
#include "pg/pgconn.h"
#include "pg/pgio.h"
#include "pg/pgsql.h"
#include "util/cpu.h"
#include "util/buf.h"
#include "util/interrupt.h"
#include "util/log.h"

#define DEFAULT_MAX_PARTS 16
#define DEFAULT_RETRIES 4    /* pauses of 1, 2, 4, 8 s: a server restart fits */

static double now_s (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* See fullload.h: bytes below 1 kB, else one decimal in 1024 units. */
void fl_format_bytes (int64_t n, char *out, size_t outlen) {
  static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = (double)n;
  int i = 0;
  while (v >= 1024.0 && i < 4) {
    v /= 1024.0;
    i++;
  }
  if (i == 0)
    snprintf(out, outlen, "%lld B", (long long)n);
  else
    snprintf(out, outlen, "%.1f %s", v, units[i]);
}

/*
** {======================================================
** Plans
** =======================================================
*/

void fl_unit_clear (FlUnit *u) {
  free(u->id);
  free(u->nspname);
  free(u->relname);
  free(u->columns);
  free(u->where);
  memset(u, 0, sizeof(*u));
}

/* See fullload.h: append a pending unit; the plan owns copies of the
   strings. */
FlUnit *fl_plan_add (FlPlan *p, const char *id, const char *nspname, const char *relname,
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
void fl_plan_free (FlPlan *p) {
  int i;
  for (i = 0; i < p->n; i++)
    fl_unit_clear(&p->units[i]);
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

void fl_plan_sort (FlPlan *p) {
  if (p->n > 1)
    qsort(p->units, (size_t)p->n, sizeof(FlUnit), cmp_units);
}

/* See fullload.h: the first part is open below, the last open above,
   so rows outside the histogram's range are still covered.  The caller
   frees the result. */
char *fl_keyrange_where (const char *column_sql, const char *const *bounds, int n, int i) {
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
char *fl_ctidrange_where (int64_t pages, int n, int i) {
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
  fl_plan_add(plan, buf_cstr(&id), nsp, rel, cols, NULL, FL_WHOLE, 1, 1, binary, bytes, rows);
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
    fl_plan_add(plan, buf_cstr(&id), nsp, rel, cols, wheres[i], kind, i + 1, n, binary,
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
  res = PQexecParams(src, buf_cstr(&q), np, NULL, params, NULL, NULL, 0);
  buf_free(&q);
  buf_free(&t);
  buf_free(&x);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    char e[PGCONN_ERRLEN];
    pgconn_result_error(res, src, e, sizeof(e));
    snprintf(err, errlen, "cannot list the source tables: %s", e);
    PQclear(res);
    return -1;
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
        fl_plan_free(plan);
        return -1;
      }
      if (nb >= 1) {
        char **wheres = xcalloc((size_t)nb + 1, sizeof(char *));
        Buf col = BUF_INIT;
        int j;
        buf_printf(&col, "%s%s", key.quoted, key.collatable ? " COLLATE \"C\"" : "");
        for (j = 0; j <= nb; j++)
          wheres[j] = fl_keyrange_where(buf_cstr(&col), (const char *const *)bounds, nb + 1, j);
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
        wheres[j] = fl_ctidrange_where(pages, nparts, j);
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
  fl_plan_sort(plan);
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

/* }====================================================== */

/*
** {======================================================
** The load
** =======================================================
*/

typedef struct FlTable {
  int first_unit;          /* any unit of the table (for its names) */
  int units;
  int64_t est_bytes;
  int pending;             /* units still to load in this run */
  int after;               /* index into FullLoad.afters, -1: none */
  double index_seconds;    /* time its index/key groups took (under mu) */
} FlTable;

/* A copy of one FlAfter (statements owned). */
typedef struct AfterList {
  char **statements, **checks;
  int *groups;             /* statements of one group run in order; groups in parallel */
  int n;
  char *final;             /* run once every group is done (may be NULL) */
  int *group_ids;          /* the distinct groups */
  int ngroups;
  int remaining;           /* groups not finished yet */
} AfterList;

/* A queued piece of a table's statements: one group, or the final one. */
typedef struct AfterTask {
  int table;
  int group;               /* index into group_ids, -1 for the final statement */
} AfterTask;

/* A check's bookkeeping (its result is in FullLoad.check_res). */
typedef struct CheckState {
  int *tables;             /* indexes into FullLoad.tables */
  int ntables;
  int remaining;           /* tables not ready yet; -1: will not run */
  int64_t est_bytes;
} CheckState;

#define CHECK_BATCH_TABLES 250            /* small tables share one validation run */
#define CHECK_BATCH_BYTES (64LL << 20)    /* ... up to about this much data */

struct FullLoad {
  FlPlan plan;
  char *source, *target, *snapshot;
  char encoding[64];
  int jobs, progress, retries;
  double log_interval;
  PGconn *holder;          /* source connection holding (or exporting) the snapshot */
  pthread_t *threads;
  int nthreads;
  pthread_mutex_t mu;
  pthread_cond_t cond;
  int next;                /* next unit to consider */
  int *events;             /* finished units not yet returned */
  int ev_head, ev_tail;
  int running;             /* workers alive */
  _Atomic int stop;
  int failed;
  char errmsg[PGCONN_ERRLEN + 256];
  char sqlstate[6];
  double t0, last_draw, last_log;
  int status_shown;
  double base_fraction;    /* share already done at start (skipped units) */
  int *unit_table;         /* unit index -> table index */
  FlTable *tables;
  int ntables;
  int units_running;       /* units being copied now */
  AfterList *afters;       /* per-table statements (FullLoadOptions.after) */
  int nafters;
  char *after_setup;
  AfterTask *after_q;      /* statement groups ready to run */
  int aq_head, aq_tail;
  int tasks, tasks_done;   /* tables with statements to run / finished */
  double copy_end;         /* when the last unit was loaded (0 until then) */
  CheckState *checks;      /* per-table verification (FullLoadOptions.checks) */
  FlCheckResult *check_res;
  int nchecks;
  int *check_q;            /* ready checks */
  int cq_head, cq_tail;
  int checks_run, checks_done;   /* checks that will run / have run */
  int busy;                /* workers doing a unit, statements or checks now */
};

/* Find a table by name: a binary search, index_tables builds them in name order. */
static int find_table (FullLoad *fl, const char *nsp, const char *rel) {
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

/* Copy the per-table statements and attach them to the tables that
   have units to load in this run. */
static void setup_afters (FullLoad *fl, const FullLoadOptions *o) {
  int i, j, k, t, slots = 0;
  for (t = 0; t < fl->ntables; t++)
    fl->tables[t].after = -1;
  for (i = 0; i < fl->plan.n; i++)
    if (fl->plan.units[i].state == FL_PENDING)
      fl->tables[fl->unit_table[i]].pending++;
  fl->afters = xcalloc((size_t)o->nafter + 1, sizeof(AfterList));
  fl->after_setup = o->after_setup != NULL ? xstrdup(o->after_setup) : NULL;
  for (i = 0; i < o->nafter; i++) {
    const FlAfter *a = &o->after[i];
    AfterList *c;
    t = find_table(fl, a->nspname, a->relname);
    if (t < 0 || fl->tables[t].pending == 0 || fl->tables[t].after >= 0 ||
        (a->n <= 0 && a->final == NULL))
      continue;
    c = &fl->afters[fl->nafters];
    c->n = a->n;
    c->statements = xcalloc((size_t)a->n + 1, sizeof(char *));
    c->checks = xcalloc((size_t)a->n + 1, sizeof(char *));
    c->groups = xcalloc((size_t)a->n + 1, sizeof(int));
    c->group_ids = xcalloc((size_t)a->n + 1, sizeof(int));
    for (j = 0; j < a->n; j++) {
      c->statements[j] = xstrdup(a->statements[j]);
      c->checks[j] = (a->checks != NULL && a->checks[j] != NULL) ? xstrdup(a->checks[j]) : NULL;
      c->groups[j] = a->groups != NULL ? a->groups[j] : 0;
      for (k = 0; k < c->ngroups && c->group_ids[k] != c->groups[j]; k++)
        ;
      if (k == c->ngroups)
        c->group_ids[c->ngroups++] = c->groups[j];
    }
    c->final = a->final != NULL ? xstrdup(a->final) : NULL;
    slots += c->ngroups + 1;
    fl->tables[t].after = fl->nafters++;
    fl->tasks++;
  }
  fl->after_q = xcalloc((size_t)slots + 1, sizeof(AfterTask));
}

/* Table t is loaded and its indexes are built (caller holds the lock):
   the checks waiting for it alone are ready. */
static void table_ready (FullLoad *fl, int t) {
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

/* Queue what can start for table t (caller holds the lock): every group,
   or the final statement when there is no group (the table is then
   ready for its check). */
static void queue_after (FullLoad *fl, int t) {
  AfterList *a = &fl->afters[fl->tables[t].after];
  int k;
  a->remaining = a->ngroups;
  for (k = 0; k < a->ngroups; k++) {
    fl->after_q[fl->aq_tail].table = t;
    fl->after_q[fl->aq_tail++].group = k;
  }
  if (a->ngroups == 0) {
    fl->after_q[fl->aq_tail].table = t;
    fl->after_q[fl->aq_tail++].group = -1;
    table_ready(fl, t);
  }
}

/*
** Copy the checks (FullLoadOptions.checks).  A check runs only when each
** of its tables is in the plan with every unit to load in this run (one
** snapshot for all its rows); the others keep FL_CHECK_NOT_RUN.  Call
** after setup_afters (pending counts).
*/
static void setup_checks (FullLoad *fl, const FullLoadOptions *o) {
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
      int t = find_table(fl, k->nspnames[i], k->relnames[i]), j, dup = 0;
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

static void free_checks (FullLoad *fl) {
  int c;
  for (c = 0; c < fl->nchecks; c++) {
    free(fl->checks[c].tables);
    free((char *)fl->check_res[c].name);
  }
  free(fl->checks);
  free(fl->check_res);
  free(fl->check_q);
}

/* Free the post-load statements fullload_start copied, and their queue. */
static void free_afters (FullLoad *fl) {
  int i, j;
  for (i = 0; i < fl->nafters; i++) {
    for (j = 0; j < fl->afters[i].n; j++) {
      free(fl->afters[i].statements[j]);
      free(fl->afters[i].checks[j]);
    }
    free(fl->afters[i].statements);
    free(fl->afters[i].checks);
    free(fl->afters[i].groups);
    free(fl->afters[i].group_ids);
    free(fl->afters[i].final);
  }
  free(fl->afters);
  free(fl->after_q);
  free(fl->after_setup);
}

static int should_stop (void *arg) {
  FullLoad *fl = arg;
  return fl->stop || interrupt_stop_requested() || interrupt_requested();
}

/* Session settings shared by both sides: a stable text representation
   for text-format COPY, and no timeouts cutting a long COPY short. */
static int session_setup (PGconn *conn, const char *encoding, int target, char *err, size_t errlen) {
  Buf q = BUF_INIT;
  int rc;
  buf_puts(&q, "SET statement_timeout = 0; SET lock_timeout = 0;"
               " SET idle_in_transaction_session_timeout = 0;"
               " SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';"
               " SET extra_float_digits = 3; SET TimeZone = 'UTC';");
  if (encoding[0] != '\0')
    buf_printf(&q, " SET client_encoding = '%s';", encoding);
  if (target)
    buf_puts(&q, " SET synchronous_commit = off;");
  rc = pgsql_exec(conn, buf_cstr(&q), err, errlen, NULL);
  buf_free(&q);
  if (rc == 0 && target) {
    /* triggers present on the target (schema-first) must not rewrite
       copied rows; needs superuser, so a refusal is not an error */
    PGresult *res = PQexec(conn, "SET session_replication_role = replica");
    PQclear(res);
  }
  return rc;
}

/* Open a source connection inside the shared snapshot. */
static PGconn *open_source (FullLoad *fl, char *err, size_t errlen) {
  char e[PGCONN_ERRLEN];
  Buf q = BUF_INIT;
  PGconn *c = pgconn_open(fl->source, "source", PGCONN_NORMAL, err, errlen);
  if (c == NULL)
    return NULL;
  buf_puts(&q, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;");
  if (fl->snapshot != NULL)
    buf_printf(&q, " SET TRANSACTION SNAPSHOT '%s';", fl->snapshot);
  if (session_setup(c, fl->encoding, 0, e, sizeof(e)) < 0) {
    snprintf(err, errlen, "source session setup failed: %s", e);
    PQfinish(c);
    buf_free(&q);
    return NULL;
  }
  if (pgsql_exec(c, buf_cstr(&q), e, sizeof(e), NULL) < 0) {
    snprintf(err, errlen, "cannot import snapshot %s on the source: %s%s", fl->snapshot, e,
             strstr(e, "invalid snapshot") ? " (the transaction or replication connection"
             " that exported it has ended; it must stay open for the whole load)" : "");
    PQfinish(c);
    buf_free(&q);
    return NULL;
  }
  buf_free(&q);
  return c;
}

/* A worker's target connection, with the load's session settings.
   NULL with err. */
static PGconn *open_target (FullLoad *fl, char *err, size_t errlen) {
  char e[PGCONN_ERRLEN];
  PGconn *c = pgconn_open(fl->target, "target", PGCONN_NORMAL, err, errlen);
  if (c == NULL)
    return NULL;
  if (session_setup(c, fl->encoding, 1, e, sizeof(e)) < 0) {
    snprintf(err, errlen, "target session setup failed: %s", e);
    PQfinish(c);
    return NULL;
  }
  return c;
}

/* Build the two COPY statements of a unit. */
static void unit_copy_sql (PGconn *conn, const FlUnit *u, Buf *out_sql, Buf *in_sql) {
  char *qn = PQescapeIdentifier(conn, u->nspname, strlen(u->nspname));
  char *qr = PQescapeIdentifier(conn, u->relname, strlen(u->relname));
  const char *fmt = u->binary ? "FORMAT binary" : "FORMAT text";
  int cols = u->columns[0] != '\0';
  if (u->where != NULL)
    buf_printf(out_sql, "COPY (SELECT %s FROM ONLY %s.%s WHERE %s) TO STDOUT (%s)",
               u->columns, qn, qr, u->where, fmt);
  else
    buf_printf(out_sql, "COPY %s.%s%s%s%s TO STDOUT (%s)", qn, qr, cols ? " (" : "",
               u->columns, cols ? ")" : "", fmt);
  buf_printf(in_sql, "COPY %s.%s%s%s%s FROM STDIN (%s%s)", qn, qr, cols ? " (" : "",
             u->columns, cols ? ")" : "", fmt, u->kind == FL_WHOLE ? ", FREEZE" : "");
  PQfreemem(qn);
  PQfreemem(qr);
}

/* What a unit attempt ended with. */
typedef enum UnitResult { UNIT_OK, UNIT_STOPPED, UNIT_RETRY, UNIT_FAILED } UnitResult;

static int conn_lost (PGconn *c) {
  return c == NULL || PQstatus(c) != CONNECTION_OK;
}

/*
** Copy one unit on the worker's connections.  On a lost connection the
** unit may be retried (UNIT_RETRY) unless the loss happened while
** committing a CTID range (the commit may have happened: the table
** cannot be cleaned by range, so the load fails instead).
*/
static UnitResult run_unit (FullLoad *fl, FlUnit *u, PGconn *src, PGconn *dst, char *err,
                            size_t errlen, char sqlstate[6]) {
  Buf out_sql = BUF_INIT, in_sql = BUF_INIT, pre = BUF_INIT;
  CopyRelayResult r;
  CopyRelayStatus st;
  char e[PGCONN_ERRLEN + 64];
  double t = now_s();
  char *qn = PQescapeIdentifier(dst, u->nspname, strlen(u->nspname));
  char *qr = PQescapeIdentifier(dst, u->relname, strlen(u->relname));
  UnitResult result = UNIT_FAILED;
  sqlstate[0] = '\0';
  unit_copy_sql(dst, u, &out_sql, &in_sql);
  buf_puts(&pre, "BEGIN;");
  if (u->kind == FL_WHOLE)
    buf_printf(&pre, " TRUNCATE ONLY %s.%s;", qn, qr);
  else if (u->needs_delete || u->attempts > 1)
    buf_printf(&pre, " DELETE FROM ONLY %s.%s WHERE %s;", qn, qr, u->where);
  PQfreemem(qn);
  PQfreemem(qr);
  u->live.rows = 0;
  u->live.bytes = 0;
  if (pgsql_exec(dst, buf_cstr(&pre), e, sizeof(e), sqlstate) < 0) {
    snprintf(err, errlen, "target: %s", e);
    result = conn_lost(dst) ? UNIT_RETRY : UNIT_FAILED;
    goto done;
  }
  st = copy_relay(src, dst, buf_cstr(&out_sql), buf_cstr(&in_sql), &u->live, should_stop, fl,
                  &r, err, errlen);
  if (st == COPY_RELAY_STOPPED) {
    result = UNIT_STOPPED;
    goto done;
  }
  if (st != COPY_RELAY_OK) {
    strlcpy_(sqlstate, r.sqlstate, 6);
    result = (conn_lost(src) || conn_lost(dst)) ? UNIT_RETRY : UNIT_FAILED;
    goto done;
  }
  if (pgsql_exec(dst, "COMMIT", e, sizeof(e), sqlstate) < 0) {
    snprintf(err, errlen, "target COMMIT failed: %s", e);
    result = (conn_lost(dst) && u->kind != FL_CTIDRANGE) ? UNIT_RETRY : UNIT_FAILED;
    goto done;
  }
  u->rows = r.rows_in;
  u->bytes = r.bytes;
  u->seconds = now_s() - t;
  result = UNIT_OK;
done:
  if (result != UNIT_OK && !conn_lost(dst)) {
    PGresult *res = PQexec(dst, "ROLLBACK");
    PQclear(res);
  }
  buf_free(&out_sql);
  buf_free(&in_sql);
  buf_free(&pre);
  return result;
}

/* Keep the first failure (message and SQLSTATE) for fullload_finish and
   stop the load. */
static void record_failure (FullLoad *fl, const FlUnit *u, const char *msg, const char *sqlstate) {
  pthread_mutex_lock(&fl->mu);
  if (!fl->failed) {
    fl->failed = 1;
    snprintf(fl->errmsg, sizeof(fl->errmsg), "copying %s failed: %s", u ? u->id : "?", msg);
    strlcpy_(fl->sqlstate, sqlstate ? sqlstate : "", sizeof(fl->sqlstate));
  }
  fl->stop = 1;
  pthread_cond_broadcast(&fl->cond);
  pthread_mutex_unlock(&fl->mu);
}

/* What a worker does next. */
typedef struct Work {
  int kind;                /* 0 nothing left, 1 copy a unit, 2 run a table's statements,
                              3 verify a batch of checks */
  int index;               /* unit or table; kind 3: first index into check_q */
  int group;               /* kind 2: the group (-1: the final statement); kind 3: how many */
  int jobs;                /* kind 3: connections per side */
} Work;

/*
** The next piece of work: a table's statements when one is ready (so
** index builds overlap the copy of other tables), else the next pending
** unit, largest first, else a batch of ready checks (with the workers
** idle now as its connections).  With none, waits while other units are
** still being copied (they may make statements or checks ready);
** returns kind 0 when nothing is left or the load is stopping.
*/
static Work take_work (FullLoad *fl) {
  Work w = {0, -1, 0, 0};
  pthread_mutex_lock(&fl->mu);
  while (!should_stop(fl)) {
    if (fl->aq_head < fl->aq_tail) {
      w.kind = 2;
      w.index = fl->after_q[fl->aq_head].table;
      w.group = fl->after_q[fl->aq_head++].group;
      break;
    }
    while (fl->next < fl->plan.n && fl->plan.units[fl->next].state != FL_PENDING)
      fl->next++;
    if (fl->next < fl->plan.n) {
      fl->plan.units[fl->next].state = FL_RUNNING;
      fl->units_running++;
      w.kind = 1;
      w.index = fl->next++;
      break;
    }
    if (fl->cq_head < fl->cq_tail) {
      int64_t bytes = 0;
      w.kind = 3;
      w.index = fl->cq_head;
      w.group = 0;
      while (fl->cq_head < fl->cq_tail && w.group < CHECK_BATCH_TABLES &&
             (w.group == 0 || bytes + fl->checks[fl->check_q[fl->cq_head]].est_bytes <= CHECK_BATCH_BYTES)) {
        bytes += fl->checks[fl->check_q[fl->cq_head++]].est_bytes;
        w.group++;
      }
      w.jobs = fl->nthreads - fl->busy;
      if (w.jobs < 1)
        w.jobs = 1;
      break;
    }
    if (fl->units_running == 0)
      break;
    {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 250 * 1000 * 1000;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&fl->cond, &fl->mu, &ts);
    }
  }
  if (w.kind != 0)
    fl->busy++;
  pthread_mutex_unlock(&fl->mu);
  return w;
}

/* A unit left the running state (caller holds the lock); 'done' when it
   was loaded: the last unit of a table queues the table's statements. */
static void unit_finished (FullLoad *fl, int i, int done) {
  FlTable *t = &fl->tables[fl->unit_table[i]];
  int j, left = 0;
  fl->units_running--;
  fl->busy--;
  if (done && fl->units_running == 0) {
    for (j = fl->next; j < fl->plan.n && !left; j++)
      left = fl->plan.units[j].state == FL_PENDING;
    if (!left)
      fl->copy_end = now_s();          /* the data is in; statements may still run */
  }
  if (done && --t->pending == 0) {
    if (t->after >= 0)
      queue_after(fl, fl->unit_table[i]);
    else
      table_ready(fl, fl->unit_table[i]);
  }
  pthread_cond_broadcast(&fl->cond);
}

/* Open the connection for a worker's table statements. */
static PGconn *open_after_conn (FullLoad *fl, char *err, size_t errlen) {
  PGconn *c = pgconn_open(fl->target, "target", PGCONN_NORMAL, err, errlen);
  char e[PGCONN_ERRLEN];
  if (c == NULL)
    return NULL;
  if (pgsql_exec(c, "SET statement_timeout = 0; SET lock_timeout = 0;"
                 " SET idle_in_transaction_session_timeout = 0", e, sizeof(e), NULL) < 0 ||
      (fl->after_setup != NULL && pgsql_exec(c, fl->after_setup, e, sizeof(e), NULL) < 0)) {
    snprintf(err, errlen, "session setup failed: %s", e);
    PQfinish(c);
    return NULL;
  }
  return c;
}

/* Run one statement unless its check finds it done, retrying deadlocks
   and lock timeouts.  Returns 1 ran, 0 skipped, -1 failed (logged). */
static int after_statement (FullLoad *fl, PGconn **conn, const FlUnit *u, const char *sql,
                            const char *check) {
  char err[PGCONN_ERRLEN + 64], sqlstate[6], line[160];
  int attempt, rc = -1, cancelled = 0;
  if (check != NULL) {
    PGresult *res = PQexec(*conn, check);
    int exists = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0;
    PQclear(res);
    if (exists)
      return 0;
  }
  for (attempt = 0; attempt < 4; attempt++) {
    rc = pgio_exec(*conn, sql, should_stop, fl, err, sizeof(err), sqlstate, &cancelled);
    if (rc == 0 || cancelled || !pgsql_retryable(sqlstate, PGSQL_RETRY_LOCK))
      break;
  }
  if (rc == 0)
    return 1;
  if (!cancelled) {
    sql_one_line(sql, line, sizeof(line));
    log_warn("%s.%s: %s (left for the post-data step): %s", u->nspname, u->relname, err, line);
  }
  if (PQstatus(*conn) != CONNECTION_OK) {
    PQfinish(*conn);
    *conn = NULL;
  }
  return -1;
}

/*
** Run one group of table t's statements (in order), or its final
** statement (group -1), on *conn (opened on first use).  A failure ends
** the group; the last group to finish queues the final statement.
*/
static void run_after (FullLoad *fl, int t, int group, PGconn **conn) {
  AfterList *a = &fl->afters[fl->tables[t].after];
  FlUnit *u = &fl->plan.units[fl->tables[t].first_unit];
  char err[PGCONN_ERRLEN + 64];
  double t0 = now_s();
  int i, ran = 0, finished_table = 0;
  if (*conn == NULL && (*conn = open_after_conn(fl, err, sizeof(err))) == NULL)
    log_warn("%s.%s: cannot build indexes now (%s); the post-data step will", u->nspname,
             u->relname, err);
  if (*conn != NULL) {
    if (group < 0) {
      ran += after_statement(fl, conn, u, a->final, NULL) > 0;
    } else {
      for (i = 0; i < a->n && !should_stop(fl) && *conn != NULL; i++) {
        int rc;
        if (a->groups[i] != a->group_ids[group])
          continue;
        rc = after_statement(fl, conn, u, a->statements[i], a->checks[i]);
        if (rc < 0)
          break;
        ran += rc;
      }
    }
  }
  if (ran > 0)
    log_msg(now_s() - t0 >= 1.0 ? LOG_INFO : LOG_DEBUG, "%s.%s: %d post-load statement(s) in %.1fs",
            u->nspname, u->relname, ran, now_s() - t0);
  pthread_mutex_lock(&fl->mu);
  if (group >= 0)
    fl->tables[t].index_seconds += now_s() - t0;
  if (group < 0) {
    finished_table = 1;
  } else if (--a->remaining == 0) {
    /* indexes and keys built (or given up): its check may run, beside
       the final statement (VACUUM ANALYZE) */
    table_ready(fl, t);
    if (a->final != NULL && !should_stop(fl)) {
      fl->after_q[fl->aq_tail].table = t;
      fl->after_q[fl->aq_tail++].group = -1;
    } else {
      finished_table = 1;
    }
    pthread_cond_broadcast(&fl->cond);
  }
  if (finished_table)
    fl->tasks_done++;
  pthread_mutex_unlock(&fl->mu);
}

/*
** Verify the checks check_q[first .. first + n) in one validation run
** with 'jobs' connections per side, the source under the load's
** snapshot, and record their results.
*/
static void run_checks (FullLoad *fl, int first, int n, int jobs) {
  const char **names = xcalloc((size_t)n + 1, sizeof(char *));
  FlCheckResult *res = xcalloc((size_t)n + 1, sizeof(FlCheckResult));
  int i, equal = 0, different = 0, failed = 0;
  double t0 = now_s();
  for (i = 0; i < n; i++)
    names[i] = fl->check_res[fl->check_q[first + i]].name;
  fl_verify(fl->source, fl->target, fl->snapshot, names, n, jobs, should_stop, fl, res);
  pthread_mutex_lock(&fl->mu);
  for (i = 0; i < n; i++) {
    FlCheckResult *r = &fl->check_res[fl->check_q[first + i]];
    const char *name = r->name;
    if (should_stop(fl) && res[i].status == FL_CHECK_FAILED)
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
    log_msg(now_s() - t0 >= 1.0 || different + failed > 0 ? LOG_INFO : LOG_DEBUG,
            "verified %s under the load's snapshot in %.1fs (%d connection%s a side): %d equal%s", what,
            now_s() - t0, jobs, jobs == 1 ? "" : "s", equal,
            different + failed > 0 ? "; the others are compared again later" : "");
  }
  for (i = 0; i < n; i++)
    if (res[i].status == FL_CHECK_DIFFERENT || res[i].status == FL_CHECK_FAILED)
      log_info("  %s: %s%s%s", names[i], res[i].status == FL_CHECK_DIFFERENT ? "differs" : "not compared",
               res[i].error[0] ? ": " : "", res[i].error);
  free(names);
  free(res);
}

/* Sleep up to 'seconds', waking early when the load is stopping. */
static void nap (FullLoad *fl, double seconds) {
  double end = now_s() + seconds;
  while (!should_stop(fl) && now_s() < end) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/*
** A worker thread: takes units and post-load statement groups until none
** is left or the load stops.  A unit runs on the worker's source
** connection (inside the shared snapshot) and target connection; a lost
** connection is reopened and the unit retried up to opts.retries times,
** with a growing pause.  The first failure stops every worker.
*/
static void *worker_main (void *arg) {
  FullLoad *fl = arg;
  PGconn *src = NULL, *dst = NULL, *aux = NULL;
  char err[PGCONN_ERRLEN + 256], sqlstate[6];
  Work w;
  while ((w = take_work(fl)).kind != 0) {
    int i = w.index;
    FlUnit *u;
    UnitResult r = UNIT_FAILED;
    if (w.kind == 2 || w.kind == 3) {
      if (w.kind == 2)
        run_after(fl, i, w.group, &aux);
      else
        run_checks(fl, w.index, w.group, w.jobs);
      pthread_mutex_lock(&fl->mu);
      fl->busy--;
      pthread_mutex_unlock(&fl->mu);
      continue;
    }
    u = &fl->plan.units[i];
    for (;;) {
      u->attempts++;
      err[0] = '\0';
      sqlstate[0] = '\0';
      if (src == NULL)
        src = open_source(fl, err, sizeof(err));
      if (src != NULL && dst == NULL)
        dst = open_target(fl, err, sizeof(err));
      if (src == NULL || dst == NULL)
        r = UNIT_RETRY;
      else
        r = run_unit(fl, u, src, dst, err, sizeof(err), sqlstate);
      if (r != UNIT_RETRY)
        break;
      /* a source session whose snapshot transaction was aborted (the relay
         cancelled its COPY when the target failed) is of no further use:
         a new one imports the same exported snapshot */
      if (src != NULL && (conn_lost(src) || PQtransactionStatus(src) != PQTRANS_INTRANS)) {
        PQfinish(src);
        src = NULL;
      }
      if (dst != NULL && conn_lost(dst)) {
        PQfinish(dst);
        dst = NULL;
      }
      if (should_stop(fl)) {
        r = UNIT_STOPPED;
        break;
      }
      if (u->attempts > fl->retries) {
        r = UNIT_FAILED;
        break;
      }
      log_warn("%s: %s; retrying (attempt %d of %d)", u->id, err, u->attempts + 1, fl->retries + 1);
      nap(fl, (double)(1 << (u->attempts - 1)));
    }
    if (r == UNIT_OK) {
      char b[32];
      fl_format_bytes(u->bytes, b, sizeof(b));
      log_msg(u->bytes >= (8 << 20) || u->seconds >= 1.0 ? LOG_INFO : LOG_DEBUG,
              "copied %s: %lld rows, %s in %.1fs (%s)", u->id, (long long)u->rows, b,
              u->seconds, u->binary ? "binary" : "text");
      pthread_mutex_lock(&fl->mu);
      u->state = FL_DONE;
      fl->events[fl->ev_tail++] = i;
      unit_finished(fl, i, 1);
      pthread_mutex_unlock(&fl->mu);
    } else if (r == UNIT_STOPPED) {
      pthread_mutex_lock(&fl->mu);
      u->state = FL_PENDING;
      unit_finished(fl, i, 0);
      pthread_mutex_unlock(&fl->mu);
      break;
    } else {
      pthread_mutex_lock(&fl->mu);
      u->state = FL_FAILED;
      unit_finished(fl, i, 0);
      pthread_mutex_unlock(&fl->mu);
      record_failure(fl, u, err[0] ? err : "unknown error", sqlstate);
      break;
    }
  }
  if (src != NULL)
    PQfinish(src);
  if (dst != NULL)
    PQfinish(dst);
  if (aux != NULL)
    PQfinish(aux);
  pthread_mutex_lock(&fl->mu);
  fl->running--;
  pthread_cond_broadcast(&fl->cond);
  pthread_mutex_unlock(&fl->mu);
  return NULL;
}

/* qsort_r order of unit indexes by schema, then table name. */
static int cmp_unit_names (const void *a, const void *b, void *arg) {
  const FlUnit *units = arg;
  const FlUnit *x = &units[*(const int *)a], *y = &units[*(const int *)b];
  int c = strcmp(x->nspname, y->nspname);
  return c != 0 ? c : strcmp(x->relname, y->relname);
}

/* Group units by table (for per-table progress and split handling). */
static void index_tables (FullLoad *fl) {
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
static int prepare_units (FullLoad *fl, PGconn *dst, const FullLoadOptions *o, char *err,
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

/* Share of the plan done, weighting units by their size estimate. */
static double done_fraction (FullLoad *fl, int include_running) {
  double total = 0, done = 0;
  int i;
  for (i = 0; i < fl->plan.n; i++) {
    FlUnit *u = &fl->plan.units[i];
    double w = u->est_bytes > 0 ? (double)u->est_bytes : 1.0;
    int st = u->state;
    total += w;
    if (st == FL_DONE || st == FL_SKIPPED)
      done += w;
    else if (include_running && st == FL_RUNNING && u->est_bytes > 0) {
      double f = (double)u->live.bytes / (double)u->est_bytes;
      done += w * (f > 0.99 ? 0.99 : f);
    }
  }
  return total > 0 ? done / total : 1.0;
}

/*
** See fullload.h.  Takes over the plan's units (the caller's plan is left
** empty), opens the snapshot holder (exporting a snapshot, or importing
** opts.snapshot to check it), plans inside it when no plan was given,
** marks the units already done, prepares the target, and starts the
** workers.  NULL with err when nothing could start.
*/
FullLoad *fullload_start (FlPlan *plan, const FullLoadOptions *o, char *err, size_t errlen) {
  FullLoad *fl = xcalloc(1, sizeof(FullLoad));
  PGconn *dst = NULL;
  char e[PGCONN_ERRLEN];
  int i, pending = 0;
  if (plan != NULL) {
    fl->plan = *plan;
    memset(plan, 0, sizeof(*plan));
  }
  fl->source = xstrdup(o->source);
  fl->target = xstrdup(o->target);
  fl->jobs = o->jobs > 0 ? o->jobs : cpu_count();
  fl->progress = o->progress;
  fl->log_interval = o->log_interval > 0 ? o->log_interval : 10.0;
  fl->retries = o->retries > 0 ? o->retries : (o->retries < 0 ? 0 : DEFAULT_RETRIES);
  pthread_mutex_init(&fl->mu, NULL);
  pthread_cond_init(&fl->cond, NULL);
  fl->t0 = now_s();

  /* the snapshot holder: exports one, or imports the given one to check
     it early (and learns the encoding both sides will use) */
  fl->holder = pgconn_open(fl->source, "source", PGCONN_NORMAL, err, errlen);
  if (fl->holder == NULL)
    goto fail;
  strlcpy_(fl->encoding, PQparameterStatus(fl->holder, "server_encoding") ?
           PQparameterStatus(fl->holder, "server_encoding") : "", sizeof(fl->encoding));
  if (o->snapshot != NULL && o->snapshot[0] != '\0') {
    PGconn *h = fl->holder;
    fl->snapshot = xstrdup(o->snapshot);
    fl->holder = NULL;
    PQfinish(h);
    fl->holder = open_source(fl, err, errlen);
    if (fl->holder == NULL)
      goto fail;
  } else {
    PGresult *res;
    if (session_setup(fl->holder, fl->encoding, 0, e, sizeof(e)) < 0 ||
        pgsql_exec(fl->holder, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", e, sizeof(e), NULL) < 0) {
      snprintf(err, errlen, "source: %s", e);
      goto fail;
    }
    res = PQexec(fl->holder, "SELECT pg_export_snapshot()");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
      pgconn_result_error(res, fl->holder, e, sizeof(e));
      snprintf(err, errlen, "cannot export a snapshot on the source: %s", e);
      PQclear(res);
      goto fail;
    }
    fl->snapshot = xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
  }
  dst = open_target(fl, err, errlen);
  if (dst == NULL)
    goto fail;
  if (fl->plan.n == 0 && o->plan != NULL) {
    FlPlanOptions po = *o->plan;
    po.target_version = PQserverVersion(dst);
    if (po.jobs == 0)
      po.jobs = fl->jobs;
    if (fullload_plan(fl->holder, &po, &fl->plan, err, errlen) < 0)
      goto fail;
  }
  index_tables(fl);
  if (prepare_units(fl, dst, o, err, errlen) < 0)
    goto fail;
  setup_afters(fl, o);
  setup_checks(fl, o);
  PQfinish(dst);
  dst = NULL;
  fl->events = xcalloc((size_t)fl->plan.n + 1, sizeof(int));
  fl->base_fraction = done_fraction(fl, 0);
  for (i = 0; i < fl->plan.n; i++)
    pending += fl->plan.units[i].state == FL_PENDING;
  fl->nthreads = fl->jobs < pending ? fl->jobs : pending;
  {
    char b[32];
    int64_t total = 0;
    for (i = 0; i < fl->plan.n; i++)
      total += fl->plan.units[i].est_bytes;
    fl_format_bytes(total, b, sizeof(b));
    log_info("full load: %d tables, %d units (%d already done), about %s, %d jobs, snapshot %s",
             fl->ntables, fl->plan.n, fl->plan.n - pending, b, fl->nthreads, fl->snapshot);
  }
  fl->threads = xcalloc((size_t)fl->nthreads + 1, sizeof(pthread_t));
  fl->running = fl->nthreads;
  for (i = 0; i < fl->nthreads; i++) {
    if (pthread_create(&fl->threads[i], NULL, worker_main, fl) != 0) {
      pthread_mutex_lock(&fl->mu);
      fl->running -= fl->nthreads - i;
      fl->nthreads = i;
      pthread_mutex_unlock(&fl->mu);
      record_failure(fl, NULL, "cannot start worker threads", NULL);
      break;
    }
  }
  fl->last_log = now_s();
  return fl;

fail:
  if (dst != NULL)
    PQfinish(dst);
  {
    char dummy[8];
    fullload_finish(fl, dummy, sizeof(dummy), NULL);
  }
  return NULL;
}

const FlPlan *fullload_plan_of (FullLoad *fl) {
  return &fl->plan;
}

const char *fullload_snapshot (FullLoad *fl) {
  return fl->snapshot;
}

/* See fullload.h: totals and per-table figures under the lock; the
   caller frees p's tables with fl_progress_free. */
void fullload_progress (FullLoad *fl, FlProgress *p) {
  int i;
  double frac, gained;
  memset(p, 0, sizeof(*p));
  p->units = fl->plan.n;
  p->tables = xcalloc((size_t)fl->ntables + 1, sizeof(FlTableProgress));
  p->ntables = fl->ntables;
  for (i = 0; i < fl->ntables; i++) {
    FlUnit *u = &fl->plan.units[fl->tables[i].first_unit];
    p->tables[i].nspname = u->nspname;
    p->tables[i].relname = u->relname;
    p->tables[i].units = fl->tables[i].units;
    p->tables[i].est_bytes = fl->tables[i].est_bytes;
  }
  for (i = 0; i < fl->plan.n; i++) {
    FlUnit *u = &fl->plan.units[i];
    FlTableProgress *t = &p->tables[fl->unit_table[i]];
    int st = u->state;
    int64_t rows = 0, bytes = 0;
    if (st == FL_DONE) {
      rows = u->rows;
      bytes = u->bytes;
      p->units_done++;
      t->units_done++;
    } else if (st == FL_SKIPPED) {
      p->units_skipped++;
      t->units_done++;
    } else if (st == FL_RUNNING) {
      rows = u->live.rows;
      bytes = u->live.bytes;
      p->units_running++;
    }
    p->rows += rows;
    p->bytes += bytes;
    p->est_bytes += u->est_bytes;
    t->rows += rows;
    t->bytes += bytes;
  }
  pthread_mutex_lock(&fl->mu);
  p->finished = fl->running == 0;
  p->tasks = fl->tasks;
  p->tasks_done = fl->tasks_done;
  p->checks = fl->checks_run;
  p->checks_done = fl->checks_done;
  p->copy_seconds = (fl->copy_end > 0 ? fl->copy_end : now_s()) - fl->t0;
  for (i = 0; i < fl->ntables; i++)
    p->tables[i].index_seconds = fl->tables[i].index_seconds;
  pthread_mutex_unlock(&fl->mu);
  frac = done_fraction(fl, 1);
  p->percent = 100.0 * frac;
  p->elapsed = now_s() - fl->t0;
  {
    double copy_end = fl->copy_end > 0 ? fl->copy_end - fl->t0 : p->elapsed;
    p->mb_per_s = copy_end > 0 ? (double)p->bytes / 1048576.0 / copy_end : 0;
  }
  gained = frac - fl->base_fraction;
  p->eta = (gained > 0.001 && p->elapsed > 1.0) ? p->elapsed * (1.0 - frac) / gained : -1;
}

void fl_progress_free (FlProgress *p) {
  free(p->tables);
  p->tables = NULL;
}

/* "m:ss", or "h:mm:ss" from an hour on. */
static void format_duration (double s, char *out, size_t outlen) {
  long n = (long)(s + 0.5);
  if (n >= 3600)
    snprintf(out, outlen, "%ld:%02ld:%02ld", n / 3600, (n / 60) % 60, n % 60);
  else
    snprintf(out, outlen, "%ld:%02ld", n / 60, n % 60);
}

/* See fullload.h: percent, units, bytes, throughput and the ETA when
   known, in out (truncated to outlen). */
void fullload_progress_line (const FlProgress *p, char *out, size_t outlen) {
  char b[32], eta[32];
  fl_format_bytes(p->bytes, b, sizeof(b));
  if (p->eta >= 0)
    format_duration(p->eta, eta, sizeof(eta));
  else
    strlcpy_(eta, "?", sizeof(eta));
  snprintf(out, outlen, "full load %3.0f%%  %d/%d units  %s  %.1f MB/s  ETA %s",
           p->percent, p->units_done + p->units_skipped, p->units, b, p->mb_per_s, eta);
  if (p->tasks > 0) {
    size_t n = strlen(out);
    snprintf(out + n, outlen > n ? outlen - n : 0, "  indexes %d/%d tables", p->tasks_done, p->tasks);
  }
  if (p->checks > 0) {
    size_t n = strlen(out);
    snprintf(out + n, outlen > n ? outlen - n : 0, "  verified %d/%d", p->checks_done, p->checks);
  }
}

/* See fullload.h. */
int fullload_checks (FullLoad *fl, const FlCheckResult **out) {
  *out = fl->check_res;
  return fl->nchecks;
}

/* The status line on a TTY: the summary plus the biggest tables in
   flight; plain log lines otherwise, every log_interval seconds. */
static void draw_progress (FullLoad *fl, int force) {
  double t = now_s();
  FlProgress p;
  char line[256];
  int tty = log_stderr_is_tty();
  if (!fl->progress)
    return;
  if (!force && (tty ? t - fl->last_draw < 0.5 : t - fl->last_log < fl->log_interval))
    return;
  fullload_progress(fl, &p);
  fullload_progress_line(&p, line, sizeof(line));
  if (tty) {
    Buf b = BUF_INIT;
    int i, shown = 0;
    buf_puts(&b, line);
    for (i = 0; i < p.ntables && shown < 2; i++) {
      FlTableProgress *tp = &p.tables[i];
      if (tp->units_done < tp->units && tp->bytes > 0 && tp->est_bytes > 0) {
        double f = 100.0 * (double)tp->bytes / (double)tp->est_bytes;
        buf_printf(&b, "  | %s %.0f%%", tp->relname, f > 99 ? 99 : f);
        shown++;
      }
    }
    log_status(buf_cstr(&b));
    fl->status_shown = 1;
    buf_free(&b);
    fl->last_draw = t;
  } else {
    log_info("%s", line);
    fl->last_log = t;
  }
  fl_progress_free(&p);
}

/* See fullload.h: the next finished unit, drawing progress while
   waiting; -1 once the workers have exited and every event was read. */
int fullload_wait (FullLoad *fl, int timeout_ms, FlEvent *ev) {
  double deadline = now_s() + (timeout_ms > 0 ? timeout_ms / 1000.0 : 0);
  int rc = 0;
  if (interrupt_requested() || interrupt_stop_requested())
    fl->stop = 1;
  pthread_mutex_lock(&fl->mu);
  for (;;) {
    if (fl->ev_head < fl->ev_tail) {
      ev->unit = fl->events[fl->ev_head++];
      rc = 1;
      break;
    }
    if (fl->running == 0) {
      rc = -1;
      break;
    }
    if (now_s() >= deadline)
      break;
    {
      struct timespec ts;
      double until = deadline, step = now_s() + 0.25;
      if (step < until)
        until = step;
      clock_gettime(CLOCK_REALTIME, &ts);
      {
        double wait = until - now_s();
        long ns;
        if (wait < 0)
          wait = 0;
        ts.tv_sec += (time_t)wait;
        ns = ts.tv_nsec + (long)((wait - floor(wait)) * 1e9);
        ts.tv_sec += ns / 1000000000L;
        ts.tv_nsec = ns % 1000000000L;
      }
      pthread_cond_timedwait(&fl->cond, &fl->mu, &ts);
    }
    if (interrupt_requested() || interrupt_stop_requested())
      fl->stop = 1;
    pthread_mutex_unlock(&fl->mu);
    draw_progress(fl, 0);
    pthread_mutex_lock(&fl->mu);
  }
  pthread_mutex_unlock(&fl->mu);
  draw_progress(fl, 0);
  return rc;
}

void fullload_cancel (FullLoad *fl) {
  fl->stop = 1;
}

/* See fullload.h: joins the workers, closes the snapshot holder, frees
   the load and its plan; 0 done, 1 stopped, -1 failed (err set). */
int fullload_finish (FullLoad *fl, char *err, size_t errlen, char failed_sqlstate[6]) {
  int i, rc = 0, incomplete = 0;
  pthread_mutex_lock(&fl->mu);
  if (fl->running > 0)       /* finished early (an error in the caller): stop the workers */
    fl->stop = 1;
  pthread_mutex_unlock(&fl->mu);
  for (i = 0; i < fl->nthreads; i++)
    pthread_join(fl->threads[i], NULL);
  if (fl->status_shown) {
    log_status(NULL);
    fl->status_shown = 0;
  }
  for (i = 0; i < fl->plan.n; i++) {
    int st = fl->plan.units[i].state;
    incomplete += st != FL_DONE && st != FL_SKIPPED;
  }
  err[0] = '\0';
  if (failed_sqlstate != NULL)
    failed_sqlstate[0] = '\0';
  if (fl->failed) {
    strlcpy_(err, fl->errmsg, errlen);
    if (failed_sqlstate != NULL)
      strlcpy_(failed_sqlstate, fl->sqlstate, 6);
    rc = -1;
  } else if (incomplete > 0) {
    snprintf(err, errlen, "full load stopped with %d of %d units not loaded", incomplete, fl->plan.n);
    rc = 1;
  }
  if (fl->holder != NULL) {
    PGresult *res = PQexec(fl->holder, "COMMIT");
    PQclear(res);
    PQfinish(fl->holder);
  }
  fl_plan_free(&fl->plan);
  free_afters(fl);
  free_checks(fl);
  free(fl->threads);
  free(fl->events);
  free(fl->unit_table);
  free(fl->tables);
  free(fl->source);
  free(fl->target);
  free(fl->snapshot);
  pthread_mutex_destroy(&fl->mu);
  pthread_cond_destroy(&fl->cond);
  free(fl);
  return rc;
}

/* }====================================================== */
