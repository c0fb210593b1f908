/*
** apply_rel.c
** The apply engine's relation cache and schema drift checks: entries
** from the source's Relation and Type messages, the target's definition
** asked for in the pipeline and checked column by column (exists, same
** type, not generated, target-only NOT NULL columns, a unique index on
** the replica identity for the set path).
*/
#include "cdc/apply_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg/pgsql.h"
#include "util/buf.h"

#define FIRST_NORMAL_OID 16384

/* A NUL-terminated name as a double-quoted identifier. */
static void quote_ident (Buf *b, const char *s) {
  pgsql_quote_ident_n(b, s, strlen(s));
}

/* A quoted identifier as a new string (caller frees). */
static char *quoted (const char *s) {
  Buf b = BUF_INIT;
  quote_ident(&b, s);
  return buf_steal(&b);
}

/* Free a relation cache entry (NULL is fine). */
void rel_free (Rel *r) {
  int i;
  if (r == NULL)
    return;
  for (i = 0; i < r->ncols; i++) {
    free(r->cols[i].name);
    free(r->cols[i].qname);
  }
  for (i = 0; i < r->nstmts; i++)
    free(r->stmts[i].key);
  free(r->stmts);
  free(r->cols);
  free(r->keys);
  free(r->nspname);
  free(r->relname);
  free(r->qname);
  free(r->display);
  PQclear(r->catalog);
  free(r);
}

/* The relation cache: open addressing on the source relation id. */
static Rel **rel_slot (Applier *a, uint32_t relid) {
  size_t i = (relid * 2654435761u) & (a->rel_cap - 1);
  while (a->rels[i] != NULL && a->rels[i]->relid != relid)
    i = (i + 1) & (a->rel_cap - 1);
  return &a->rels[i];
}

/* The cache entry of a source relation id, or NULL. */
Rel *rel_find (Applier *a, uint32_t relid) {
  return a->rel_cap == 0 ? NULL : *rel_slot(a, relid);
}

/* Insert or replace.  A replaced entry is retired, not freed: results
   still pending in the pipeline may point at it (freed by
   apply_close). */
void rel_put (Applier *a, Rel *r) {
  Rel **slot;
  if ((a->nrels + 1) * 2 > a->rel_cap) {
    Rel **old = a->rels;
    size_t oldcap = a->rel_cap, i;
    a->rel_cap = oldcap ? oldcap * 2 : 64;
    a->rels = xcalloc(a->rel_cap, sizeof(Rel *));
    for (i = 0; i < oldcap; i++)
      if (old[i] != NULL)
        *rel_slot(a, old[i]->relid) = old[i];
    free(old);
  }
  slot = rel_slot(a, r->relid);
  if (*slot == NULL) {
    a->nrels++;
  } else {
    if (!(*slot)->resolved)
      a->unresolved--;
    (*slot)->retired = a->retired;
    a->retired = *slot;
  }
  *slot = r;
}

/* Type messages: source type oid -> "namespace.name", for drift checks
   of user-defined types (their oids differ between servers). */
static const char *type_name (Applier *a, uint32_t oid) {
  size_t i;
  for (i = 0; i < a->ntypes; i++)
    if (a->types[i].oid == oid)
      return a->types[i].name;
  return NULL;
}

/* Remember (or update) the name of a type from a Type message, for
   messages about columns of that type. */
void type_put (Applier *a, const PgoMsg *m) {
  size_t i;
  Buf b = BUF_INIT;
  buf_printf(&b, "%s.%s", m->nspname[0] ? m->nspname : "pg_catalog", m->relname);
  for (i = 0; i < a->ntypes; i++)
    if (a->types[i].oid == m->typoid) {
      free(a->types[i].name);
      a->types[i].name = buf_steal(&b);
      return;
    }
  if (a->ntypes == a->type_cap) {
    a->type_cap = a->type_cap ? a->type_cap * 2 : 16;
    a->types = xrealloc(a->types, a->type_cap * sizeof(TypeName));
  }
  a->types[a->ntypes].oid = m->typoid;
  a->types[a->ntypes].name = buf_steal(&b);
  a->ntypes++;
}

/* Whether a Relation message describes the cached definition (the
   server re-sends unchanged ones after cache invalidations). */
int rel_same (const Rel *r, const PgoMsg *m) {
  int i;
  const char *nsp = m->nspname[0] ? m->nspname : "pg_catalog";
  if (strcmp(r->nspname, nsp) != 0 || strcmp(r->relname, m->relname) != 0 ||
      r->replident != m->replident || r->ncols != m->ncols)
    return 0;
  for (i = 0; i < r->ncols; i++)
    if (strcmp(r->cols[i].name, m->cols[i].name) != 0 || r->cols[i].typoid != m->cols[i].typoid ||
        r->cols[i].typmod != m->cols[i].typmod ||
        r->cols[i].key != ((m->cols[i].flags & PGO_COL_KEY) != 0))
      return 0;
  return 1;
}

/* Fill a schema drift error naming the table and column; returns -1. */
static int drift (CdcError *err, const Rel *r, const char *column, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

static int drift (CdcError *err, const Rel *r, const char *column, const char *fmt, ...) {
  va_list ap;
  Buf b = BUF_INIT;
  va_start(ap, fmt);
  buf_vprintf(&b, fmt, ap);
  va_end(ap);
  cdc_err_set(err, CDC_ERR_DRIFT, 0, "schema drift on %s: %s", r->display, buf_cstr(&b));
  strlcpy_(err->table, r->display, sizeof(err->table));
  strlcpy_(err->column, column != NULL ? column : "", sizeof(err->column));
  buf_free(&b);
  return -1;
}

/* The target's name for a built-in type, for a drift message (the
   pipeline is left for it: the session ends with that error anyway). */
static void builtin_type_name (Applier *a, uint32_t oid, int32_t typmod, char *out, size_t n) {
  char o[16], t[16];
  const char *vals[2];
  PGresult *res = NULL;
  CdcError ignore;
  snprintf(o, sizeof(o), "%u", oid);
  snprintf(t, sizeof(t), "%d", typmod);
  vals[0] = o;
  vals[1] = t;
  if (apply_exec_params(a, "SELECT format_type($1::oid, $2::int)", 2, vals, &res, "format_type",
                        &ignore) == 0 && PQntuples(res) == 1)
    strlcpy_(out, PQgetvalue(res, 0, 0), n);
  else
    snprintf(out, n, "type %u", oid);
  PQclear(res);
}

/*
** A cache entry for a Relation message, from the source's side only
** (names, columns, identity, the table_sync position); the target's
** side comes from rel_request/rels_resolve.
*/
Rel *rel_new (Applier *a, const PgoMsg *m) {
  Rel *r = xcalloc(1, sizeof(Rel));
  Rel *old = rel_find(a, m->relid);
  Buf b = BUF_INIT;
  int i;
  r->relid = m->relid;
  r->nspname = xstrdup(m->nspname[0] ? m->nspname : "pg_catalog");
  r->relname = xstrdup(m->relname);
  for (i = 0; i < a->nsync; i++)
    if (strcmp(a->sync[i].schema, r->nspname) == 0 && strcmp(a->sync[i].table, r->relname) == 0)
      r->sync_lsn = a->sync[i].lsn;
  quote_ident(&b, r->nspname);
  buf_putc(&b, '.');
  quote_ident(&b, r->relname);
  r->qname = buf_steal(&b);
  buf_printf(&b, "%s.%s", r->nspname, r->relname);
  r->display = buf_steal(&b);
  r->replident = m->replident;
  r->full = m->replident == 'f';
  r->ncols = m->ncols;
  r->cols = xcalloc((size_t)(m->ncols > 0 ? m->ncols : 1), sizeof(RelCol));
  r->keys = xcalloc((size_t)(m->ncols > 0 ? m->ncols : 1), sizeof(int));
  r->gen = old != NULL ? old->gen + 1 : 0;
  for (i = 0; i < m->ncols; i++) {
    r->cols[i].name = xstrdup(m->cols[i].name);
    r->cols[i].qname = quoted(m->cols[i].name);
    r->cols[i].typoid = m->cols[i].typoid;
    r->cols[i].typmod = m->cols[i].typmod;
    r->cols[i].key = (m->cols[i].flags & PGO_COL_KEY) != 0;
    if (r->cols[i].key && !r->full)
      r->keys[r->nkeys++] = i;
  }
  snprintf(r->tempname, sizeof(r->tempname), "pgtide_s_%u_%u", r->relid, r->gen);
  return r;
}

/*
** Ask the target for a relation's definition, in the pipeline (with a
** flush request, so the answer comes without a sync): its columns, and
** the keys of its unique indexes.  rels_resolve() reads the answer when
** the relation's first change is applied; tables that appear together
** cost one round trip.
*/
int rel_request (Applier *a, Rel *r, CdcError *err) {
  static const char *const sql =
    "SELECT c.oid, c.relkind::text AS relkind, a.attname, a.atttypid, "
    "format_type(a.atttypid, a.atttypmod) AS target_type, a.attnotnull, a.atthasdef, "
    "a.attidentity::text AS attidentity, a.attgenerated::text AS attgenerated, a.attnum, "
    "(WITH RECURSIVE b AS (SELECT t.oid, t.typtype, t.typbasetype, t.typnamespace, t.typname "
    "UNION ALL SELECT bt.oid, bt.typtype, bt.typbasetype, bt.typnamespace, bt.typname FROM b "
    "JOIN pg_type bt ON bt.oid = b.typbasetype WHERE b.typtype = 'd') "
    "SELECT bn.nspname || '.' || b.typname FROM b JOIN pg_namespace bn ON bn.oid = b.typnamespace "
    "WHERE b.typtype <> 'd') AS base_type, "
    "(SELECT string_agg(i.indkey::text, ',') FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique "
    "AND i.indimmediate AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL) AS unique_keys "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
    "JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace "
    "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') ORDER BY a.attnum";
  const char *vals[2];
  vals[0] = r->nspname;
  vals[1] = r->relname;
  if (pipe_enter(a, err) != 0)
    return -1;
  if (!PQsendQueryParams(a->conn, sql, 2, NULL, vals, NULL, NULL, 0) || PQsendFlushRequest(a->conn) != 1)
    return apply_conn_broken(a, err, "apply: send");
  ring_push(a, 'r', 0, r);
  a->catalog_pending++;
  a->unresolved++;
  return pipe_after_send(a, err);
}

/* Whether a unique index's keys ("3 1", attnums) are exactly the
   relation's identity columns (attnums[] maps source columns to the
   target's attnums). */
static int index_is_identity (const Rel *r, const int *attnums, const char *p, const char *end) {
  int nk = 0, i;
  while (p < end) {
    char *next;
    int att = (int)strtol(p, &next, 10), found = 0;
    if (next == p)
      break;
    for (i = 0; i < r->nkeys && !found; i++)
      found = attnums[r->keys[i]] == att;
    if (!found)
      return 0;
    nk++;
    p = next;
    while (p < end && *p == ' ')
      p++;
  }
  return nk == r->nkeys;
}

/* The columns of rel_request's answer that rel_apply_catalog reads, by
   name (cat_names). */
enum {
  CAT_RELKIND, CAT_ATTNAME, CAT_ATTTYPID, CAT_TARGET_TYPE, CAT_ATTNOTNULL, CAT_ATTHASDEF,
  CAT_ATTIDENTITY, CAT_ATTGENERATED, CAT_ATTNUM, CAT_BASE_TYPE, CAT_UNIQUE_KEYS, CAT_NCOLS
};

static const char *const cat_names[CAT_NCOLS] = {
  "relkind", "attname", "atttypid", "target_type", "attnotnull", "atthasdef",
  "attidentity", "attgenerated", "attnum", "base_type", "unique_keys"
};

/*
** The target's side of a relation, from rel_request's answer: check
** every column (exists, same type, not generated there), note identity
** columns, whether a unique index covers exactly the replica identity
** (needed by the set path), and the relkind.  -1 with a drift error
** naming table and column on mismatch.
*/
static int rel_apply_catalog (Applier *a, Rel *r, PGresult *res, CdcError *err) {
  int i, j, nt = PQntuples(res), *attnums, col[CAT_NCOLS];
  for (i = 0; i < CAT_NCOLS; i++) {
    col[i] = PQfnumber(res, cat_names[i]);
    if (col[i] < 0) {
      cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "apply: the target's answer about table %s has no column %s",
                  r->display, cat_names[i]);
      return -1;
    }
  }
  if (nt == 0)
    return drift(err, r, NULL, "table %s does not exist on the target", r->display);
  attnums = xcalloc((size_t)(r->ncols > 0 ? r->ncols : 1), sizeof(int));
  r->partitioned = strcmp(PQgetvalue(res, 0, col[CAT_RELKIND]), "p") == 0;
  for (i = 0; i < r->ncols; i++) {
    RelCol *c = &r->cols[i];
    for (j = 0; j < nt; j++)
      if (strcmp(PQgetvalue(res, j, col[CAT_ATTNAME]), c->name) == 0)
        break;
    if (j == nt) {
      free(attnums);
      return drift(err, r, c->name, "column \"%s\" exists on the source but not on the target", c->name);
    }
    if (PQgetvalue(res, j, col[CAT_ATTGENERATED])[0] != '\0') {
      free(attnums);
      return drift(err, r, c->name, "column \"%s\" is a generated column on the target but not on the source",
                   c->name);
    }
    {
      uint32_t toid = (uint32_t)strtoul(PQgetvalue(res, j, col[CAT_ATTTYPID]), NULL, 10);
      const char *tname = PQgetvalue(res, j, col[CAT_BASE_TYPE]);
      if (c->typoid < FIRST_NORMAL_OID && toid != c->typoid) {
        char sname[128];
        builtin_type_name(a, c->typoid, c->typmod, sname, sizeof(sname));
        free(attnums);
        return drift(err, r, c->name, "column \"%s\" is %s on the source but %s on the target", c->name,
                     sname, PQgetvalue(res, j, col[CAT_TARGET_TYPE]));
      }
      if (c->typoid >= FIRST_NORMAL_OID && type_name(a, c->typoid) != NULL &&
          strcmp(type_name(a, c->typoid), tname) != 0) {
        free(attnums);
        return drift(err, r, c->name, "column \"%s\" is %s on the source but %s on the target", c->name,
                     type_name(a, c->typoid), tname);
      }
    }
    c->identity_always = strcmp(PQgetvalue(res, j, col[CAT_ATTIDENTITY]), "a") == 0;
    if (c->identity_always)
      r->any_identity_always = 1;
    attnums[i] = atoi(PQgetvalue(res, j, col[CAT_ATTNUM]));
  }
  /* a target-only NOT NULL column without a default breaks every INSERT */
  for (j = 0; j < nt; j++) {
    const char *name = PQgetvalue(res, j, col[CAT_ATTNAME]);
    int known = 0;
    for (i = 0; i < r->ncols && !known; i++)
      known = strcmp(r->cols[i].name, name) == 0;
    if (!known && strcmp(PQgetvalue(res, j, col[CAT_ATTNOTNULL]), "t") == 0 &&
        strcmp(PQgetvalue(res, j, col[CAT_ATTHASDEF]), "f") == 0 &&
        PQgetvalue(res, j, col[CAT_ATTIDENTITY])[0] == '\0' &&
        PQgetvalue(res, j, col[CAT_ATTGENERATED])[0] == '\0') {
      free(attnums);
      return drift(err, r, name, "column \"%s\" exists only on the target and is NOT NULL without a default",
                   name);
    }
  }
  /* set path: a unique index on exactly the identity columns */
  if (r->nkeys > 0 && !r->full) {
    const char *p = PQgetvalue(res, 0, col[CAT_UNIQUE_KEYS]), *end;
    while (*p != '\0' && !r->set_ok) {
      end = strchr(p, ',');
      if (end == NULL)
        end = p + strlen(p);
      r->set_ok = index_is_identity(r, attnums, p, end);
      p = *end == ',' ? end + 1 : end;
    }
  }
  for (i = 0; i < a->nrow_only && r->set_ok; i++)
    if (strcmp(a->row_only[i], r->display) == 0)
      r->set_ok = 0;             /* its set-based apply failed once: row by row */
  free(attnums);
  return 0;
}

/*
** Resolve every relation whose definition was asked for: wait for the
** answers (all of them: they were sent together), then check each.
** -1 with err (drift, or a failure in the pipeline).
*/
int rels_resolve (Applier *a, CdcError *err) {
  size_t i;
  if (a->unresolved == 0)
    return 0;
  if (a->catalog_pending > 0) {
    if (PQflush(a->conn) < 0)
      return apply_conn_broken(a, err, "apply connection");
    if (pipe_drain(a, DRAIN_CATALOG, -1, err) != 0)
      return -1;
  }
  for (i = 0; i < a->rel_cap; i++) {
    Rel *r = a->rels[i];
    int rc;
    if (r == NULL || r->resolved)
      continue;
    if (r->catalog == NULL) {
      cdc_err_set(err, CDC_ERR_PROTOCOL, 1, "apply: no answer about table %s", r->display);
      return -1;
    }
    rc = rel_apply_catalog(a, r, r->catalog, err);
    PQclear(r->catalog);
    r->catalog = NULL;
    if (rc != 0)
      return -1;
    r->resolved = 1;
    a->unresolved--;
  }
  return 0;
}
