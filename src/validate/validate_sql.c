/*
** validate_sql.c
** The SQL pieces every comparison query is built from: the row-hash
** expression (the row's text form hashed on the server, so a chunk's
** count and hash sum stand for its rows), the hash of the key alone,
** FROM items, key lists, key-range and key-list predicates with typed
** parameters, and array literals.  Pure string building: no connection,
** no state; identifiers are always quoted.
*/
#include <stdlib.h>
#include <string.h>

#include "validate/validate_internal.h"

/*
** Set t->hexpr, the row hash: a bigint computed from the ROW(...) text
** of the compared columns (identical session settings make that text
** identical on both servers), and, for keyed tables, t->kexpr, a hash of
** the key alone (to split a differing chunk into buckets).  PostgreSQL
** 11+ has hashtextextended; older servers use the first 64 bits of md5.
*/
void vsql_hash_exprs (VTable *t, int md5hash) {
  const char *open = md5hash ? "('x' || substr(md5(ROW(" : "hashtextextended(ROW(";
  Buf b = BUF_INIT;
  int i;
  buf_puts(&b, open);
  for (i = 0; i < t->ncols; i++) {
    if (i > 0)
      buf_puts(&b, ", ");
    pgsql_quote_ident(&b, t->cols[i].name);
  }
  buf_puts(&b, md5hash ? ")::text), 1, 16))::bit(64)::int8" : ")::text, 0)");
  t->hexpr = buf_steal(&b);
  if (t->nkey > 0 && t->error == NULL) {
    buf_puts(&b, open);
    vsql_key_list(&b, t, 0);
    buf_puts(&b, md5hash ? ")::text || 'k'), 1, 16))::bit(64)::int8" : ")::text, 1)");
    t->kexpr = buf_steal(&b);
  }
}

/* "schema"."name", with ONLY for plain tables: inheritance children are
   validated on their own.  Caller frees. */
char *vsql_from_item (const char *schema, const char *name, char kind) {
  Buf b = BUF_INIT;
  if (kind == 'r')
    buf_puts(&b, "ONLY ");
  pgsql_quote_ident(&b, schema);
  buf_putc(&b, '.');
  pgsql_quote_ident(&b, name);
  return buf_steal(&b);
}

/* The table's FROM item on one side. */
const char *vsql_from (const VTable *t, int target) {
  return target ? t->from_tgt : t->from_src;
}

/* A column's type on one side (format_type text, usable in a cast). */
const char *vsql_col_type (const VCol *c, int target) {
  return target ? c->ttype : c->stype;
}

/* Append the key column list, optionally each cast to text. */
void vsql_key_list (Buf *b, const VTable *t, int as_text) {
  int i;
  for (i = 0; i < t->nkey; i++) {
    if (i > 0)
      buf_puts(b, ", ");
    pgsql_quote_ident(b, t->cols[t->key[i]].name);
    if (as_text)
      buf_puts(b, "::text");
  }
}

/* The key as one comparable value: "k" or "(k1, k2)". */
static void key_tuple (Buf *b, const VTable *t) {
  if (t->nkey > 1)
    buf_putc(b, '(');
  vsql_key_list(b, t, 0);
  if (t->nkey > 1)
    buf_putc(b, ')');
}

/*
** Append "SELECT k1::text, ..., <row hash> FROM <side>" or, with
** 'with_columns', "SELECT k1::text, ..., c1::text, ... FROM <side>"
** (every compared column, for the report's details).
*/
void vsql_select_keys (Buf *b, const VTable *t, int target, int with_columns) {
  int c;
  buf_puts(b, "SELECT ");
  vsql_key_list(b, t, 1);
  if (!with_columns) {
    buf_printf(b, ", %s", t->hexpr);
  } else {
    for (c = 0; c < t->ncols; c++) {
      buf_puts(b, ", ");
      pgsql_quote_ident(b, t->cols[c].name);
      buf_puts(b, "::text");
    }
  }
  buf_printf(b, " FROM %s", vsql_from(t, target));
}

/* Append "($n::type, ...)" for one key value set; params go to pv. */
static void key_params (Buf *b, const VTable *t, int target, char *const *vals,
                        const char **pv, int *np) {
  int i;
  if (t->nkey > 1)
    buf_putc(b, '(');
  for (i = 0; i < t->nkey; i++) {
    if (i > 0)
      buf_puts(b, ", ");
    pv[*np] = vals[i];
    (*np)++;
    buf_printf(b, "$%d::%s", *np, vsql_col_type(&t->cols[t->key[i]], target));
  }
  if (t->nkey > 1)
    buf_putc(b, ')');
}

/* Append " WHERE key >= lo AND key < hi" (either bound may be NULL;
   nothing when both are).  Uses up to 2 * nkey parameters. */
void vsql_range_pred (Buf *b, const VTable *t, int target, char *const *lo, char *const *hi,
                      const char **pv, int *np) {
  if (lo == NULL && hi == NULL)
    return;
  buf_puts(b, " WHERE ");
  if (lo != NULL) {
    key_tuple(b, t);
    buf_puts(b, " >= ");
    key_params(b, t, target, lo, pv, np);
  }
  if (hi != NULL) {
    if (lo != NULL)
      buf_puts(b, " AND ");
    key_tuple(b, t);
    buf_puts(b, " < ");
    key_params(b, t, target, hi, pv, np);
  }
}

/* Append " WHERE key IN (k1, k2, ...)" for decoded keys keys[0..n-1].
   Uses n * nkey parameters. */
void vsql_in_pred (Buf *b, const VTable *t, int target, char ***keys, int n,
                   const char **pv, int *np) {
  int i;
  buf_puts(b, " WHERE ");
  key_tuple(b, t);
  buf_puts(b, " IN (");
  for (i = 0; i < n; i++) {
    if (i > 0)
      buf_puts(b, ", ");
    key_params(b, t, target, keys[i], pv, np);
  }
  buf_putc(b, ')');
}

