/*
** apply_row.c
** The apply engine's row path: one prepared statement per change shape
** (INSERT, UPDATE and DELETE by key or, for REPLICA IDENTITY FULL, by
** the old row), TRUNCATE, and decoding the stored change records.
*/
#include "cdc/apply_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"

/* The prepared statement of this shape, or NULL when not prepared yet
   (the caller then builds the SQL and calls stmt_prepare). */
static const char *stmt_find (const Rel *r, const char *key) {
  int i;
  for (i = 0; i < r->nstmts; i++)
    if (strcmp(r->stmts[i].key, key) == 0)
      return r->stmts[i].name;
  return NULL;
}

/* Prepare (in the pipeline) the statement for this shape; its name. */
static const char *stmt_prepare (Applier *a, Rel *r, const char *key, const char *sql, int nparams,
                                 CdcError *err) {
  Stmt *s;
  if (r->nstmts == r->stmtcap) {
    r->stmtcap = r->stmtcap ? r->stmtcap * 2 : 4;
    r->stmts = xrealloc(r->stmts, (size_t)r->stmtcap * sizeof(Stmt));
  }
  s = &r->stmts[r->nstmts];
  snprintf(s->name, sizeof(s->name), "pgtide_%u", ++a->stmt_seq);
  if (pipe_enter(a, err) != 0)
    return NULL;
  if (!PQsendPrepare(a->conn, s->name, sql, nparams, NULL)) {
    apply_conn_broken(a, err, "apply: prepare");
    return NULL;
  }
  ring_push(a, 'q', 0, r);
  s->key = xstrdup(key);
  r->nstmts++;
  return s->name;
}

/* WHERE clause matching one row of a REPLICA IDENTITY FULL table by its
   old values, compared as text (types without equality work too); at
   most one row, as the source changed one.  Parameters from *np on. */
static void full_where (Buf *b, Rel *r, const PgoTuple *old, int *np) {
  int i, first = 1;
  buf_printf(b, " WHERE ctid = (SELECT ctid FROM %s%s WHERE ", r->partitioned ? "" : "ONLY ",
             r->qname);
  for (i = 0; i < r->ncols; i++) {
    if (old->vals[i].kind == PGO_VAL_UNCHANGED)
      continue;
    if (!first)
      buf_puts(b, " AND ");
    first = 0;
    if (old->vals[i].kind == PGO_VAL_NULL)
      buf_printf(b, "%s IS NULL", r->cols[i].qname);
    else
      buf_printf(b, "%s::text = $%d", r->cols[i].qname, ++*np);
  }
  if (first)
    buf_puts(b, "true");
  buf_puts(b, " LIMIT 1)");
}

/* A tuple must have the relation's column count. */
static int check_tuple (Rel *r, const PgoTuple *t, const char *what, CdcError *err) {
  if (t->ncols != r->ncols) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s on %s has %d columns, the relation %d", what,
                r->display, t->ncols, r->ncols);
    return -1;
  }
  return 0;
}

/* INSERT of one row through its prepared statement. */
static int send_insert (Applier *a, Rel *r, const PgoMsg *m, CdcError *err) {
  const char *name;
  int i;
  if (check_tuple(r, &m->newtup, "INSERT", err) != 0)
    return -1;
  name = stmt_find(r, "I");
  if (name == NULL) {
    buf_reset(&a->sql);
    buf_printf(&a->sql, "INSERT INTO %s (", r->qname);
    for (i = 0; i < r->ncols; i++)
      buf_printf(&a->sql, "%s%s", i ? ", " : "", r->cols[i].qname);
    buf_printf(&a->sql, ")%s VALUES (", r->any_identity_always ? " OVERRIDING SYSTEM VALUE" : "");
    for (i = 0; i < r->ncols; i++)
      buf_printf(&a->sql, "%s$%d", i ? ", " : "", i + 1);
    buf_putc(&a->sql, ')');
    name = stmt_prepare(a, r, "I", a->sql.data, r->ncols, err);
    if (name == NULL)
      return -1;
  }
  buf_reset(&a->pbuf);
  for (i = 0; i < r->ncols; i++) {
    if (m->newtup.vals[i].kind == PGO_VAL_UNCHANGED) {
      cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "INSERT on %s carries an unchanged-TOAST column", r->display);
      return -1;
    }
    param_set(a, i, &m->newtup.vals[i]);
  }
  params_finish(a, r->ncols);
  if (!PQsendQueryPrepared(a->conn, name, r->ncols, a->pvals, a->plens, a->pfmts, 0))
    return apply_conn_broken(a, err, "apply: send");
  ring_push(a, 'q', 'I', r);
  a->stats.inserts++;
  return pipe_after_send(a, err);
}

/*
** UPDATE and DELETE.  The row is found by the old key tuple when the
** source sent one ('K': the key changed or has TOASTed values), by the
** key columns of the new tuple otherwise, and by all old values for
** REPLICA IDENTITY FULL ('O').  UPDATE sets every column the source sent
** except unchanged TOAST values and GENERATED ALWAYS identity columns.
*/
static int send_upddel (Applier *a, Rel *r, const PgoMsg *m, CdcError *err) {
  int is_upd = m->kind == PGO_UPDATE, i, np = 0, nset = 0;
  const PgoTuple *old = m->old_kind ? &m->oldtup : NULL;
  const PgoTuple *keysrc = old != NULL ? old : &m->newtup;
  const char *name;
  if (!r->full && r->nkeys == 0 && m->old_kind != 'O') {
    cdc_err_set(err, CDC_ERR_CONFIG, 0,
                "%s on %s, which has no replica identity: add a primary key or set REPLICA IDENTITY FULL",
                is_upd ? "UPDATE" : "DELETE", r->display);
    strlcpy_(err->table, r->display, sizeof(err->table));
    return -1;
  }
  if ((is_upd && check_tuple(r, &m->newtup, "UPDATE", err) != 0) ||
      (old != NULL && check_tuple(r, old, is_upd ? "UPDATE" : "DELETE", err) != 0))
    return -1;
  if (!is_upd && old == NULL) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "DELETE on %s without an old tuple", r->display);
    return -1;
  }
  if ((m->old_kind == 'O' || r->full) && old == NULL) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "UPDATE on %s (REPLICA IDENTITY FULL) without the old row",
                r->display);
    return -1;
  }
  if (is_upd) {
    for (i = 0; i < r->ncols; i++)
      if (m->newtup.vals[i].kind != PGO_VAL_UNCHANGED && !r->cols[i].identity_always)
        nset++;
    if (nset == 0) {  /* nothing the target can change: only unchanged TOAST */
      a->stats.updates++;
      return 0;
    }
  }
  /* the statement's shape is its cache key */
  buf_reset(&a->sql2);
  buf_putc(&a->sql2, is_upd ? 'U' : 'D');
  buf_putc(&a->sql2, m->old_kind ? m->old_kind : 'N');
  if (is_upd)
    for (i = 0; i < r->ncols; i++)
      buf_putc(&a->sql2, m->newtup.vals[i].kind == PGO_VAL_UNCHANGED ? 'u' : '.');
  if (m->old_kind == 'O')
    for (i = 0; i < r->ncols; i++)
      buf_putc(&a->sql2, old->vals[i].kind == PGO_VAL_NULL ? 'n'
                         : old->vals[i].kind == PGO_VAL_UNCHANGED ? 'u' : '.');
  name = stmt_find(r, a->sql2.data);
  if (name == NULL) {
    buf_reset(&a->sql);
    if (is_upd) {
      int n = 0;
      buf_printf(&a->sql, "UPDATE %s%s SET ", r->partitioned ? "" : "ONLY ", r->qname);
      for (i = 0; i < r->ncols; i++) {
        if (m->newtup.vals[i].kind == PGO_VAL_UNCHANGED || r->cols[i].identity_always)
          continue;
        buf_printf(&a->sql, "%s%s = $%d", n++ ? ", " : "", r->cols[i].qname, ++np);
      }
    } else {
      buf_printf(&a->sql, "DELETE FROM %s%s", r->partitioned ? "" : "ONLY ", r->qname);
    }
    if (m->old_kind == 'O' || r->full) {
      full_where(&a->sql, r, old, &np);
    } else {
      buf_puts(&a->sql, " WHERE ");
      for (i = 0; i < r->nkeys; i++)
        buf_printf(&a->sql, "%s%s = $%d", i ? " AND " : "", r->cols[r->keys[i]].qname, ++np);
    }
    name = stmt_prepare(a, r, a->sql2.data, a->sql.data, np, err);
    if (name == NULL)
      return -1;
  }

  buf_reset(&a->pbuf);
  np = 0;
  if (is_upd)
    for (i = 0; i < r->ncols; i++)
      if (m->newtup.vals[i].kind != PGO_VAL_UNCHANGED && !r->cols[i].identity_always)
        param_set(a, np++, &m->newtup.vals[i]);
  if (m->old_kind == 'O' || r->full) {
    for (i = 0; i < r->ncols; i++) {
      if (old->vals[i].kind == PGO_VAL_BINARY) {
        cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "binary values cannot match REPLICA IDENTITY FULL rows (%s)",
                    r->display);
        return -1;
      }
      if (old->vals[i].kind == PGO_VAL_TEXT)
        param_set(a, np++, &old->vals[i]);   /* compared as text */
    }
  } else {
    for (i = 0; i < r->nkeys; i++) {
      const PgoValue *v = &keysrc->vals[r->keys[i]];
      if (v->kind == PGO_VAL_UNCHANGED) {
        cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s on %s: key column \"%s\" was not sent",
                    is_upd ? "UPDATE" : "DELETE", r->display, r->cols[r->keys[i]].name);
        return -1;
      }
      param_set(a, np++, v);
    }
  }
  params_finish(a, np);
  if (!PQsendQueryPrepared(a->conn, name, np, a->pvals, a->plens, a->pfmts, 0))
    return apply_conn_broken(a, err, "apply: send");
  ring_push(a, 'c', is_upd ? 'U' : 'D', r);
  if (is_upd)
    a->stats.updates++;
  else
    a->stats.deletes++;
  return pipe_after_send(a, err);
}

/* TRUNCATE of every listed relation, with the source's options. */
int send_truncate (Applier *a, const PgoMsg *m, PgLsn end_lsn, CdcError *err) {
  int i, n = 0;
  Rel *last = NULL;
  if (rels_resolve(a, err) != 0)
    return -1;
  buf_reset(&a->sql);
  buf_puts(&a->sql, "TRUNCATE ");
  for (i = 0; i < m->nrels; i++) {
    Rel *r = rel_find(a, m->relids[i]);
    if (r == NULL) {
      cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "TRUNCATE of relation %u before its Relation message",
                  m->relids[i]);
      return -1;
    }
    if (r->sync_lsn != 0 && end_lsn <= r->sync_lsn) {  /* already in the table's copy */
      a->stats.skipped++;
      continue;
    }
    buf_printf(&a->sql, "%s%s%s", n++ ? ", " : "", r->partitioned ? "" : "ONLY ", r->qname);
    last = r;
  }
  if (n == 0)
    return 0;
  if (m->flags & PGO_TRUNCATE_RESTART_IDENTITY)
    buf_puts(&a->sql, " RESTART IDENTITY");
  if (m->flags & PGO_TRUNCATE_CASCADE)
    buf_puts(&a->sql, " CASCADE");
  a->stats.truncates++;
  return pipe_exec(a, a->sql.data, 'q', n == 1 ? last : NULL, err);
}

/* Decode a stored record (flag byte + pgoutput message). */
int apply_decode_rec (Applier *a, const uint8_t *rec, size_t len, PgoMsg *m, CdcError *err) {
  char msg[256];
  if (len < 2) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "apply: empty change record");
    return -1;
  }
  a->dec.in_stream = (rec[0] & APPLY_REC_STREAMED) != 0;
  a->dec.stream_xid = a->dec.in_stream ? 1 : 0;
  if (pgo_decode(&a->dec, rec + 1, len - 1, m, msg, sizeof(msg)) != 0) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s", msg);
    return -1;
  }
  return 0;
}

/* One decoded change by the row path. */
int row_apply (Applier *a, const PgoMsg *m, CdcError *err) {
  Rel *r = rel_find(a, m->relid);
  if (r == NULL) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s of relation %u before its Relation message",
                pgo_kind_name(m->kind), m->relid);
    return -1;
  }
  a->stats.row_changes++;
  if (pipe_enter(a, err) != 0)
    return -1;
  return m->kind == PGO_INSERT ? send_insert(a, r, m, err) : send_upddel(a, r, m, err);
}

/* Segment changes [from, to) by the row path, in source order. */
int row_apply_range (Applier *a, size_t from, size_t to, CdcError *err) {
  size_t i;
  for (i = from; i < to; i++) {
    if (apply_decode_rec(a, (const uint8_t *)a->seg.data + a->ents[i].off, a->ents[i].len, &a->msg,
                         err) != 0 || row_apply(a, &a->msg, err) != 0)
      return -1;
  }
  return 0;
}
