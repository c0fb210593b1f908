/*
** validate_plan.c
** Planning a validation run: which tables (every user table, or the
** requested ones), their compared columns (present on both sides), the
** key each one is compared by (the primary key, else a unique index on
** NOT NULL columns, else none: a multiset comparison), and per table
** the chunk bounds (validate_bounds.c) and whether one pass per side
** can aggregate all chunks at once (validate_scan.c).  Runs on the
** calling thread with the planning connections (run->msrc, run->mtgt).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"
#include "util/redact.h"
#include "validate/validate_internal.h"

/* Every user table that holds data: plain and partitioned tables that are
   not partitions themselves, outside the system schemas, pgtide's own
   schema (its progress table on a target) and extensions; only the
   (schema, name) pairs in $1, $2 when they are not NULL (the others are
   not sized: sizing locks each table).  est_rows and bytes add up the
   leaves of a partitioned table. */
static const char *TABLES_SQL =
  "WITH RECURSIVE rels AS ("
  "  SELECT c.oid, n.nspname, c.relname, c.relkind"
  "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
  "  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
  "    AND ($1::text[] IS NULL OR (n.nspname, c.relname) IN"
  "         (SELECT x.s, x.t FROM unnest($1::text[], $2::text[]) AS x (s, t)))"
  "    AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgtide')"
  "    AND n.nspname !~ '^pg_(toast|temp_)'"
  "    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
  "                    AND d.objid = c.oid AND d.deptype = 'e')"
  "), tree AS ("
  "  SELECT oid AS root, oid AS rel, relkind FROM rels"
  "  UNION ALL"
  "  SELECT t.root, i.inhrelid, c.relkind FROM tree t"
  "  JOIN pg_inherits i ON i.inhparent = t.rel JOIN pg_class c ON c.oid = i.inhrelid"
  "  WHERE t.relkind = 'p'"
  ") SELECT r.oid, r.nspname, r.relname, r.relkind,"
  "  (SELECT coalesce(sum(CASE WHEN c.reltuples >= 0 AND c.relpages > 0"
  "        THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / 8192)"
  "        ELSE pg_relation_size(c.oid) / 8192 * 60 END), 0)::float8"
  "   FROM tree t JOIN pg_class c ON c.oid = t.rel WHERE t.root = r.oid AND c.relkind = 'r'),"
  "  (SELECT coalesce(sum(pg_table_size(t.rel)), 0)::int8"
  "   FROM tree t WHERE t.root = r.oid AND t.relkind = 'r'),"
  "  (SELECT coalesce(max(pg_relation_size(t.rel)), 0) / 8192"
  "   FROM tree t WHERE t.root = r.oid AND t.relkind = 'r')::int8"
  " FROM rels r ORDER BY 2, 3";

static const char *COLUMNS_SQL =
  "SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attcollation <> 0,"
  "  (SELECT quote_ident(n.nspname) || '.' || quote_ident(co.collname)"
  "   FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace"
  "   WHERE co.oid = a.attcollation AND co.collname <> 'default')"
  " FROM pg_attribute a WHERE a.attrelid = ANY ($1::oid[]) AND a.attnum > 0"
  "   AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum";

/* Candidate keys: the primary key, then unique indexes (replica identity
   first, fewest columns first).  %s: the key-column count expression. */
static const char *KEYS_SQL =
  "SELECT i.indrelid, i.indexrelid, ic.relname, i.indisprimary, k.n, a.attname,"
  "  coalesce(a.attnotnull, false)"
  " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
  " CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, o)"
  " LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n"
  " WHERE i.indrelid = ANY ($1::oid[]) AND i.indisunique AND i.indisvalid"
  "   AND i.indpred IS NULL AND k.o <= %s"
  " ORDER BY i.indrelid, i.indisprimary DESC, i.indisreplident DESC, i.indnatts,"
  "   i.indexrelid, k.o";

typedef struct CatRel {
  unsigned oid;
  char *schema, *name;
  char kind;
  double est_rows;
  int64_t bytes;
  int64_t pages;            /* heap blocks (the biggest leaf of a partitioned table) */
} CatRel;

/* Order (and bsearch) catalog entries by (schema, name). */
static int catrel_cmp (const void *a, const void *b) {
  const CatRel *x = a, *y = b;
  int c = strcmp(x->schema, y->schema);
  return c != 0 ? c : strcmp(x->name, y->name);
}

/* Free a catalog listing. */
static void catrels_free (CatRel *v, int n) {
  int i;
  for (i = 0; i < n; i++) {
    free(v[i].schema);
    free(v[i].name);
  }
  free(v);
}

/* List the tables of one side, sorted by (schema, name): the requested
   ones (o->tables; malformed names are left to select_tables), or all. */
static int list_tables (VConn *vc, const VOptions *o, CatRel **out, int *nout, char *err, size_t errlen) {
  PGresult *res;
  int i, n = 0;
  CatRel *v;
  const char *params[2] = {NULL, NULL};
  char **parts = NULL;
  Buf sa = BUF_INIT, ta = BUF_INIT;
  if (o->tables != NULL && o->ntables > 0) {
    parts = xcalloc((size_t)o->ntables * 2 + 1, sizeof(char *));
    for (i = 0; i < o->ntables; i++)
      if (validate_parse_name(o->tables[i], &parts[2 * n], &parts[2 * n + 1]) == 0)
        n++;
    pgsql_text_array(&sa, (const char *const *)parts, n, 2);
    pgsql_text_array(&ta, (const char *const *)parts + 1, n, 2);
    params[0] = buf_cstr(&sa);
    params[1] = buf_cstr(&ta);
  }
  res = vquery(vc, TABLES_SQL, 2, params, err, errlen);
  vstrv_free(parts, 2 * n);
  buf_free(&sa);
  buf_free(&ta);
  if (res == NULL)
    return -1;
  n = PQntuples(res);
  v = xcalloc((size_t)(n > 0 ? n : 1), sizeof(CatRel));
  for (i = 0; i < n; i++) {
    v[i].oid = (unsigned)strtoul(PQgetvalue(res, i, 0), NULL, 10);
    v[i].schema = xstrdup(PQgetvalue(res, i, 1));
    v[i].name = xstrdup(PQgetvalue(res, i, 2));
    v[i].kind = PQgetvalue(res, i, 3)[0];
    v[i].est_rows = strtod(PQgetvalue(res, i, 4), NULL);
    v[i].bytes = strtoll(PQgetvalue(res, i, 5), NULL, 10);
    v[i].pages = strtoll(PQgetvalue(res, i, 6), NULL, 10);
  }
  PQclear(res);
  qsort(v, (size_t)n, sizeof(CatRel), catrel_cmp);
  *out = v;
  *nout = n;
  return 0;
}

/* The entry schema.name of a sorted list, or NULL. */
static CatRel *find_rel (CatRel *v, int n, const char *schema, const char *name) {
  CatRel k;
  k.schema = (char *)schema;
  k.name = (char *)name;
  return bsearch(&k, v, (size_t)n, sizeof(CatRel), catrel_cmp);
}

/* The tables' OIDs on one side as an array literal "{1,2,3}" (tables
   absent there are left out).  Caller frees. */
static char *oid_array (VTable *ts, int n, int target) {
  Buf b = BUF_INIT;
  int i, first = 1;
  buf_putc(&b, '{');
  for (i = 0; i < n; i++) {
    unsigned oid = target ? ts[i].toid : ts[i].soid;
    if (oid == 0)
      continue;
    buf_printf(&b, "%s%u", first ? "" : ",", oid);
    first = 0;
  }
  buf_putc(&b, '}');
  return buf_steal(&b);
}

/* The planned table with this OID on one side, or NULL.  Tables are few
   relative to columns; callers look up once per relation change. */
static VTable *table_by_oid (Run *run, unsigned oid, int target) {
  int i;
  for (i = 0; i < run->ntables; i++)
    if ((target ? run->tables[i].toid : run->tables[i].soid) == oid)
      return &run->tables[i];
  return NULL;
}

/* Raw columns of one side, per table: name, type, collation. */
typedef struct RawCol {
  char *name, *type, *coll;
  int collatable;
} RawCol;

typedef struct RawCols {
  RawCol *v;
  int n, cap;
} RawCols;

/* Read the columns of every planned table on one side into per[i] (the
   raw columns of run->tables[i], in attnum order). */
static int load_columns (Run *run, VConn *vc, int target, RawCols *per, char *err, size_t errlen) {
  char *oids = oid_array(run->tables, run->ntables, target);
  const char *params[1];
  PGresult *res;
  int i, n;
  VTable *t = NULL;
  unsigned last = 0;
  params[0] = oids;
  res = vquery(vc, COLUMNS_SQL, 1, params, err, errlen);
  free(oids);
  if (res == NULL)
    return -1;
  n = PQntuples(res);
  for (i = 0; i < n; i++) {
    unsigned oid = (unsigned)strtoul(PQgetvalue(res, i, 0), NULL, 10);
    RawCols *rc;
    RawCol *c;
    if (oid != last || t == NULL) {
      t = table_by_oid(run, oid, target);
      last = oid;
    }
    if (t == NULL)
      continue;
    rc = &per[t - run->tables];
    if (rc->n == rc->cap) {
      rc->cap = rc->cap ? rc->cap * 2 : 16;
      rc->v = xrealloc(rc->v, sizeof(RawCol) * (size_t)rc->cap);
    }
    c = &rc->v[rc->n++];
    c->name = xstrdup(PQgetvalue(res, i, 1));
    c->type = xstrdup(PQgetvalue(res, i, 2));
    c->collatable = PQgetvalue(res, i, 3)[0] == 't';
    c->coll = PQgetisnull(res, i, 4) ? NULL : xstrdup(PQgetvalue(res, i, 4));
  }
  PQclear(res);
  return 0;
}

/* Free one table's raw columns. */
static void rawcols_free (RawCols *rc) {
  int i;
  for (i = 0; i < rc->n; i++) {
    free(rc->v[i].name);
    free(rc->v[i].type);
    free(rc->v[i].coll);
  }
  free(rc->v);
}

/*
** Pick each table's key on the source (see KEYS_SQL): the first
** candidate whose columns are all plain NOT NULL columns.  Fills the
** report's key_cols and key_kind; tables without one keep nkey = 0.
*/
static int load_keys (Run *run, char *err, size_t errlen) {
  char *oids = oid_array(run->tables, run->ntables, 0);
  const char *params[1];
  Buf sql = BUF_INIT;
  PGresult *res;
  int n, start;
  buf_printf(&sql, KEYS_SQL,
             PQserverVersion(run->msrc.c) >= 110000 ? "i.indnkeyatts" : "i.indnatts");
  params[0] = oids;
  res = vquery(&run->msrc, buf_cstr(&sql), 1, params, err, errlen);
  buf_free(&sql);
  free(oids);
  if (res == NULL)
    return -1;
  n = PQntuples(res);
  for (start = 0; start < n; ) {
    const char *rel = PQgetvalue(res, start, 0), *idx = PQgetvalue(res, start, 1);
    VTable *t = table_by_oid(run, (unsigned)strtoul(rel, NULL, 10), 0);
    int end = start, usable = 1, j;
    while (end < n && strcmp(PQgetvalue(res, end, 1), idx) == 0) {
      if (strcmp(PQgetvalue(res, end, 4), "0") == 0 || PQgetisnull(res, end, 5) ||
          PQgetvalue(res, end, 6)[0] != 't')
        usable = 0;   /* an expression column or a nullable column */
      end++;
    }
    if (t != NULL && usable && t->res->nkey == 0) {
      VTableResult *tr = t->res;
      for (j = start; j < end; j++)
        vstrv_push(&tr->key_cols, &tr->nkey, PQgetvalue(res, j, 5));
      if (PQgetvalue(res, start, 3)[0] == 't') {
        tr->key_kind = xstrdup("primary key");
      } else {
        Buf k = BUF_INIT;
        buf_printf(&k, "unique index %s", PQgetvalue(res, start, 2));
        tr->key_kind = buf_steal(&k);
      }
    }
    start = end;
  }
  PQclear(res);
  return 0;
}


/*
** Columns compared: those present on both sides, in source order.  Sets
** t->cols, the report's column lists (compared, source-only,
** target-only) and t->key from the key names.  A key column missing on
** the target fails the table.
*/
static void plan_columns (VTable *t, const RawCols *s, const RawCols *g) {
  VTableResult *tr = t->res;
  int i, j;
  t->cols = xcalloc((size_t)(s->n > 0 ? s->n : 1), sizeof(VCol));
  for (i = 0; i < s->n; i++) {
    const RawCol *sc = &s->v[i], *tc = NULL;
    VCol *c;
    for (j = 0; j < g->n && tc == NULL; j++)
      if (strcmp(g->v[j].name, sc->name) == 0)
        tc = &g->v[j];
    if (tc == NULL) {
      vstrv_push(&tr->only_source, &tr->nonly_source, sc->name);
      continue;
    }
    c = &t->cols[t->ncols++];
    c->name = xstrdup(sc->name);
    c->stype = xstrdup(sc->type);
    c->ttype = xstrdup(tc->type);
    c->scoll = sc->coll ? xstrdup(sc->coll) : NULL;
    c->tcoll = tc->coll ? xstrdup(tc->coll) : NULL;
    c->collatable = sc->collatable || tc->collatable;
    vstrv_push(&tr->columns, &tr->ncolumns, sc->name);
  }
  for (j = 0; j < g->n; j++) {
    for (i = 0; i < s->n; i++)
      if (strcmp(g->v[j].name, s->v[i].name) == 0)
        break;
    if (i == s->n)
      vstrv_push(&tr->only_target, &tr->nonly_target, g->v[j].name);
  }
  if (tr->nkey == 0) {
    tr->key_kind = xstrdup("none");
    return;
  }
  t->key = xcalloc((size_t)tr->nkey, sizeof(int));
  t->nkey = tr->nkey;
  for (i = 0; i < tr->nkey; i++) {
    for (j = 0; j < t->ncols; j++)
      if (strcmp(t->cols[j].name, tr->key_cols[i]) == 0)
        break;
    if (j == t->ncols) {
      Buf m = BUF_INIT;
      buf_printf(&m, "key column %s is missing on the target", tr->key_cols[i]);
      t->error = buf_steal(&m);
      return;
    }
    t->key[i] = j;
    if (t->cols[j].collatable)
      t->key_collatable = 1;
  }
}

/*
** The source tables to compare, in catalog (name) order: the requested
** ones, each once, or every table.  Requested names absent from the
** source go to missing[2 * i], missing[2 * i + 1] (schema, name; owned
** by the caller).  Returns -1 on a malformed name.
*/
static int select_tables (const VOptions *o, CatRel *src, int nsrc, CatRel **sel, int *nsel,
                          char **missing, int *nmiss, char *err, size_t errlen) {
  char *used;
  int i;
  *nsel = *nmiss = 0;
  if (o->tables == NULL || o->ntables == 0) {
    for (i = 0; i < nsrc; i++)
      sel[(*nsel)++] = &src[i];
    return 0;
  }
  used = xcalloc((size_t)nsrc + 1, 1);
  for (i = 0; i < o->ntables; i++) {
    char *schema, *name;
    CatRel *c;
    if (validate_parse_name(o->tables[i], &schema, &name) != 0) {
      snprintf(err, errlen, "invalid table name '%s' (expected schema.table)", o->tables[i]);
      free(used);
      return -1;
    }
    c = find_rel(src, nsrc, schema, name);
    if (c == NULL) {
      missing[2 * *nmiss] = schema;
      missing[2 * *nmiss + 1] = name;
      (*nmiss)++;
      continue;
    }
    free(schema);
    free(name);
    used[c - src] = 1;
  }
  for (i = 0; i < nsrc; i++)
    if (used[i])
      sel[(*nsel)++] = &src[i];
  free(used);
  return 0;
}

/* Fill table t and its report entry tr from the source's catalog entry
   and the target's (NULL: the table is missing on the target). */
static void init_table (Run *run, VTable *t, VTableResult *tr, const CatRel *s,
                        const CatRel *g) {
  Buf q = BUF_INIT;
  pthread_mutex_init(&t->mu, NULL);
  t->res = tr;
  tr->schema = xstrdup(s->schema);
  tr->name = xstrdup(s->name);
  tr->bytes = s->bytes;
  run->r->table_bytes += s->bytes;
  t->soid = s->oid;
  t->pages[0] = s->pages;
  t->est_rows = s->est_rows;
  t->from_src = vsql_from_item(s->schema, s->name, s->kind);
  pgsql_quote_ident(&q, s->schema);
  buf_putc(&q, '.');
  pgsql_quote_ident(&q, s->name);
  t->qname = buf_steal(&q);
  if (g != NULL) {
    t->toid = g->oid;
    t->pages[1] = g->pages;
    t->from_tgt = vsql_from_item(g->schema, g->name, g->kind);
  } else {
    tr->status = VT_MISSING_ON_TARGET;
  }
}

/* Can the one-pass scan bucket this table's single key column?
   (width_bucket needs an ordered scalar; arrays are left to range
   queries.) */
static int scannable (const Run *run, const VTable *t) {
  const VCol *k;
  if (t->error != NULL || t->nkey != 1 || t->nbounds == 0 || !run->o->scan)
    return 0;
  k = &t->cols[t->key[0]];
  return strstr(k->stype, "[]") == NULL && strstr(k->ttype, "[]") == NULL;
}

/*
** Plan one table present on both sides: compared columns, key, hash
** expressions, chunk bounds and, for single-column keys, the one-pass
** scan.  A failure that concerns only this table becomes its error;
** returns -1 (message in err) only when a connection broke.
*/
static int plan_table (Run *run, VTable *t, const RawCols *sc, const RawCols *tc,
                       char *err, size_t errlen) {
  char terr[ERRLEN];
  plan_columns(t, sc, tc);
  vsql_hash_exprs(t, run->md5hash);
  if (t->error != NULL)
    return 0;
  if (vbounds_plan(run, t, terr, sizeof(terr)) != 0) {
    if (vconn_broken(&run->msrc) || vconn_broken(&run->mtgt)) {
      strlcpy_(err, terr, errlen);
      return -1;
    }
    t->error = redact_str(terr);
  }
  if (scannable(run, t)) {
    Buf a = BUF_INIT;
    pgsql_text_array(&a, (const char *const *)t->bounds, t->nbounds, 1);
    t->bounds_array = buf_steal(&a);
    t->nscan = vscan_parts(run, t);
  }
  log_debug("validate %s: ~%.0f rows, %d chunks, %s", t->qname, t->est_rows, t->nbounds + 1,
            t->nkey == 0 ? "no key: multiset"
            : t->nscan > 0 ? "one pass per side" : "range queries");
  return 0;
}

/*
** Resolve the tables to compare, their keys, columns and chunk bounds.
** Fills run->tables and the report's table list (sorted by name; tables
** requested but absent from the source come last, as VT_NOT_FOUND).
** Returns -1 on a failure that stops the run (a catalog query, a
** malformed table name, a broken connection).
*/
int vplan (Run *run, char *err, size_t errlen) {
  const VOptions *o = run->o;
  VReport *r = run->r;
  CatRel *src = NULL, *tgt = NULL, **sel = NULL;
  int nsrc = 0, ntgt = 0, i, nsel = 0, nmiss = 0, rc = -1;
  char **missing = NULL;   /* requested, not on the source (schema, name pairs) */
  RawCols *sc = NULL, *tc = NULL;
  if (list_tables(&run->msrc, o, &src, &nsrc, err, errlen) != 0 ||
      list_tables(&run->mtgt, o, &tgt, &ntgt, err, errlen) != 0)
    goto out;
  sel = xcalloc((size_t)nsrc + 1, sizeof(CatRel *));
  missing = xcalloc((size_t)o->ntables * 2 + 1, sizeof(char *));
  if (select_tables(o, src, nsrc, sel, &nsel, missing, &nmiss, err, errlen) != 0)
    goto out;
  r->tables = xcalloc((size_t)(nsel + nmiss) + 1, sizeof(VTableResult));
  r->ntables = nsel + nmiss;
  run->tables = xcalloc((size_t)nsel + 1, sizeof(VTable));
  run->ntables = nsel;
  for (i = 0; i < nsel; i++)
    init_table(run, &run->tables[i], &r->tables[i], sel[i],
               find_rel(tgt, ntgt, sel[i]->schema, sel[i]->name));
  for (i = 0; i < nmiss; i++) {
    VTableResult *tr = &r->tables[nsel + i];
    tr->schema = missing[2 * i];
    tr->name = missing[2 * i + 1];
    missing[2 * i] = missing[2 * i + 1] = NULL;
    tr->status = VT_NOT_FOUND;
    tr->error = xstrdup("no such table on the source");
  }
  if (nsel == 0) {
    rc = 0;
    goto out;
  }
  if (load_keys(run, err, errlen) != 0)
    goto out;
  sc = xcalloc((size_t)nsel, sizeof(RawCols));
  tc = xcalloc((size_t)nsel, sizeof(RawCols));
  if (load_columns(run, &run->msrc, 0, sc, err, errlen) != 0 ||
      load_columns(run, &run->mtgt, 1, tc, err, errlen) != 0)
    goto out;
  for (i = 0; i < nsel; i++)
    if (run->tables[i].res->status != VT_MISSING_ON_TARGET &&
        plan_table(run, &run->tables[i], &sc[i], &tc[i], err, errlen) != 0)
      goto out;
  rc = 0;
out:
  if (sc != NULL && tc != NULL)
    for (i = 0; i < nsel; i++) {
      rawcols_free(&sc[i]);
      rawcols_free(&tc[i]);
    }
  free(sc);
  free(tc);
  vstrv_free(missing, 2 * o->ntables);
  free(sel);
  catrels_free(src, nsrc);
  catrels_free(tgt, ntgt);
  return rc;
}
