/*
** apply_set.c
** The apply engine's set path: the net effect of a segment's changes per
** key, the rows sent as one binary text[] array parameter, and set-based
** statements (DELETE, UPDATE per column mask, INSERT) per table.
*/
#include "cdc/apply_internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/buf.h"

/* FNV-1a: keys of the set path's hash table. */
static uint32_t hash_bytes (const void *p, size_t n) {
  const unsigned char *s = p;
  uint32_t h = 2166136261u;
  while (n--) {
    h ^= *s++;
    h *= 16777619u;
  }
  return h;
}

/* Empty the net state (keeps the allocations). */
void net_clear (Applier *a) {
  size_t i;
  for (i = 0; i < a->nnet; i++)
    free(a->net[i].vals);
  a->nnet = 0;
  buf_reset(&a->keys);
  if (a->nethash != NULL)
    memset(a->nethash, 0, a->nethash_cap * sizeof(int));
}

/* Key bytes of a tuple: per key column, kind, length, data. */
static void make_key (Buf *b, Rel *r, const PgoTuple *t) {
  int i;
  buf_append(b, &r->relid, sizeof(r->relid));
  for (i = 0; i < r->nkeys; i++) {
    const PgoValue *v = &t->vals[r->keys[i]];
    uint32_t len = v->len;
    buf_putc(b, v->kind);
    buf_append(b, &len, sizeof(len));
    buf_append(b, v->data, v->len);
  }
}

/* The entry for key bytes; with 'create', a new one when absent (the
   hash table is rebuilt as it grows).  NULL when absent otherwise. */
static NetEnt *net_find (Applier *a, const char *key, size_t keylen, int create) {
  uint32_t h = hash_bytes(key, keylen);
  size_t i;
  NetEnt *e;
  if ((a->nnet + 1) * 2 > a->nethash_cap) {
    size_t k;
    a->nethash_cap = a->nethash_cap ? a->nethash_cap * 2 : 1024;
    free(a->nethash);
    a->nethash = xcalloc(a->nethash_cap, sizeof(int));
    for (k = 0; k < a->nnet; k++) {
      i = a->net[k].hash & (a->nethash_cap - 1);
      while (a->nethash[i] != 0)
        i = (i + 1) & (a->nethash_cap - 1);
      a->nethash[i] = (int)k + 1;
    }
  }
  i = h & (a->nethash_cap - 1);
  while (a->nethash[i] != 0) {
    e = &a->net[a->nethash[i] - 1];
    if (e->hash == h && e->keylen == keylen && memcmp(a->keys.data + e->keyoff, key, keylen) == 0)
      return e;
    i = (i + 1) & (a->nethash_cap - 1);
  }
  if (!create)
    return NULL;
  if (a->nnet == a->net_cap) {
    a->net_cap = a->net_cap ? a->net_cap * 2 : 1024;
    a->net = xrealloc(a->net, a->net_cap * sizeof(NetEnt));
  }
  e = &a->net[a->nnet];
  memset(e, 0, sizeof(*e));
  e->hash = h;
  e->existed = -1;               /* set by the first change that touches it */
  e->keyoff = a->keys.len;
  e->keylen = keylen;
  buf_append(&a->keys, key, keylen);
  a->nethash[i] = (int)++a->nnet;
  return e;
}

/* Record an entry's final state and values (pointers into the segment). */
static void net_set (NetEnt *e, Rel *r, char op, const PgoTuple *t) {
  e->rel = r;
  e->op = op;
  if (e->vals == NULL)
    e->vals = xmalloc((size_t)(r->ncols > 0 ? r->ncols : 1) * sizeof(PgoValue));
  memcpy(e->vals, t->vals, (size_t)r->ncols * sizeof(PgoValue));
}

/* Whether a tuple holds an unchanged TOAST value (an UPDATE that must
   not overwrite that column). */
static int has_unchanged (const PgoValue *v, int n) {
  int i;
  for (i = 0; i < n; i++)
    if (v[i].kind == PGO_VAL_UNCHANGED)
      return 1;
  return 0;
}

/* The entry of a key; 'existed' records whether the row was there
   before the segment (from the first change that touches the key). */
static NetEnt *net_touch (Applier *a, const Buf *key, int existed) {
  NetEnt *e = net_find(a, key->data, key->len, 1);
  if (e->existed < 0)
    e->existed = existed;
  return e;
}

/*
** Fold one change into the net state.  Returns 1 when the change can
** not be expressed there (the set path must stop before it and send it
** alone): a key change whose new row has unchanged TOAST values we do
** not know, binary values, a table without a usable key.
*/
int net_add (Applier *a, const PgoMsg *m, Rel *r) {
  Buf k1 = BUF_INIT, k2 = BUF_INIT;
  NetEnt *e, *eo;
  int i, rc = 0;
  const PgoTuple *t = m->kind == PGO_DELETE ? &m->oldtup : &m->newtup;
  if (!r->set_ok || t->ncols != r->ncols || (m->old_kind && m->oldtup.ncols != r->ncols))
    return 1;
  for (i = 0; i < t->ncols; i++)
    if (t->vals[i].kind == PGO_VAL_BINARY)
      return 1;
  if (m->kind == PGO_INSERT) {
    make_key(&k1, r, t);
    net_set(net_touch(a, &k1, 0), r, 'i', t);
  } else if (m->kind == PGO_DELETE) {
    make_key(&k1, r, t);
    net_set(net_touch(a, &k1, 1), r, 'd', t);
  } else {
    PgoValue *merged;
    PgoTuple mt;
    make_key(&k1, r, m->old_kind ? &m->oldtup : t);
    for (i = 0; i < r->nkeys; i++)
      if (t->vals[r->keys[i]].kind == PGO_VAL_UNCHANGED && !m->old_kind) {
        rc = 1;               /* key value not sent: cannot place the row */
        goto done;
      }
    make_key(&k2, r, t);
    eo = net_find(a, k1.data, k1.len, 0);
    merged = xmalloc((size_t)r->ncols * sizeof(PgoValue));
    memcpy(merged, t->vals, (size_t)r->ncols * sizeof(PgoValue));
    if (eo != NULL && eo->op != 'd')
      for (i = 0; i < r->ncols; i++)
        if (merged[i].kind == PGO_VAL_UNCHANGED)
          merged[i] = eo->vals[i];
    mt.ncols = r->ncols;
    mt.vals = merged;
    if (k1.len == k2.len && memcmp(k1.data, k2.data, k1.len) == 0) {
      e = eo != NULL ? eo : net_touch(a, &k2, 1);
      net_set(e, r, has_unchanged(merged, r->ncols) ? 'u' : 'i', &mt);
    } else if (has_unchanged(merged, r->ncols)) {
      rc = 1;                 /* key change with TOAST values only the old row has */
    } else {
      /* the old key goes away (its key values come from the old tuple),
         the new key gets the whole row */
      if (eo == NULL)
        eo = net_touch(a, &k1, 1);
      net_set(eo, r, 'd', m->old_kind ? &m->oldtup : t);
      net_set(net_touch(a, &k2, 0), r, 'i', &mt);
    }
    free(merged);
  }
done:
  buf_free(&k1);
  buf_free(&k2);
  return rc;
}

/*
** What the target must do for an entry: 'd' delete (existed, now
** absent), 'f' set every column (existed, whole row known), 'u' set the
** sent columns (existed, unchanged-TOAST columns kept), 'i' insert (new
** row), 0 nothing (inserted and deleted within the segment).
*/
static char net_eff (const NetEnt *e) {
  if (e->op == 'd')
    return e->existed ? 'd' : 0;
  if (e->op == 'u')
    return 'u';
  return e->existed ? 'f' : 'i';
}

/* Append a value to a row literal (record_in's syntax): a text value
   double-quoted, quotes and backslashes escaped with a backslash; NULL
   and unchanged TOAST values as an empty field, which reads as NULL
   (an unchanged column is never taken from the literal). */
static void row_value (Buf *b, const PgoValue *v) {
  const char *p, *end, *run;
  if (v->kind != PGO_VAL_TEXT)
    return;
  buf_reserve(b, v->len + 8);
  buf_putc(b, '"');
  for (p = run = v->data, end = v->data + v->len; p < end; p++) {
    if (*p != '"' && *p != '\\')
      continue;
    buf_append(b, run, (size_t)(p - run));
    buf_putc(b, '\\');
    run = p;                     /* the character itself starts the next run */
  }
  buf_append(b, run, (size_t)(end - run));
  buf_putc(b, '"');
}

static void arr_u32 (Buf *b, uint32_t v) {
  uint8_t x[4];
  pgo_put_u32(x, v);
  buf_append(b, x, 4);
}

/*
** The parameter of a set-based statement: a one-dimensional text[] in
** binary format (no NULL elements), one row literal per element, built
** in a->arr.  Binary elements need no escaping beyond the literal's
** own.  arr_begin, then arr_row per row, then arr_finish with the count.
*/
static void arr_begin (Applier *a) {
  buf_reset(&a->arr);
  arr_u32(&a->arr, 1);           /* dimensions */
  arr_u32(&a->arr, 0);           /* no NULL elements */
  arr_u32(&a->arr, 25);          /* element type: text */
  arr_u32(&a->arr, 0);           /* length, set by arr_finish */
  arr_u32(&a->arr, 1);           /* lower bound */
}

/* One element: "(v1,v2,...)" with the entry's values in source order. */
static void arr_row (Applier *a, const NetEnt *e) {
  size_t at = a->arr.len;
  int i;
  arr_u32(&a->arr, 0);
  buf_putc(&a->arr, '(');
  for (i = 0; i < e->rel->ncols; i++) {
    if (i > 0)
      buf_putc(&a->arr, ',');
    row_value(&a->arr, &e->vals[i]);
  }
  buf_putc(&a->arr, ')');
  pgo_put_u32((uint8_t *)a->arr.data + at, (uint32_t)(a->arr.len - at - 4));
}

static void arr_finish (Applier *a, uint32_t n) {
  pgo_put_u32((uint8_t *)a->arr.data + 12, n);
}

/*
** The row type of a relation's changed rows: a temporary table with its
** columns (source order, the target's types and typmods), made once per
** session, in the pipeline.  It never holds rows (nothing to empty
** between groups, however many are in flight); set-based statements cast
** their row literals to its type, so every value goes through its
** column type's input function, as COPY would.  If the group that
** creates it is lost, so is the session and the Applier.
*/
static int temp_ensure (Applier *a, Rel *r, CdcError *err) {
  int i;
  if (r->temp_ready)
    return 0;
  buf_reset(&a->sql2);
  buf_printf(&a->sql2, "CREATE TEMP TABLE IF NOT EXISTS %s AS SELECT ", r->tempname);
  for (i = 0; i < r->ncols; i++)
    buf_printf(&a->sql2, "%s%s", i ? ", " : "", r->cols[i].qname);
  buf_printf(&a->sql2, " FROM %s%s WITH NO DATA", r->partitioned ? "" : "ONLY ", r->qname);
  if (pipe_exec(a, a->sql2.data, 'q', r, err) != 0)
    return -1;
  r->temp_ready = 1;
  return 0;
}

/* "t.k = s.k AND ..." for the identity columns. */
static void key_match (Buf *b, Rel *r) {
  int i;
  for (i = 0; i < r->nkeys; i++)
    buf_printf(b, "%st.%s = s.%s", i ? " AND " : "", r->cols[r->keys[i]].qname, r->cols[r->keys[i]].qname);
}

/* Per-relation counts of the effective operations. */
typedef struct NetCounts {
  int del, full, part, ins;
} NetCounts;

/* Count the net effects of the chain of keys starting at 'first' (one
   relation's entries in a segment). */
static NetCounts net_counts (Applier *a, int first) {
  NetCounts c = {0, 0, 0, 0};
  int k;
  for (k = first; k >= 0; k = a->net[k].next_in_rel)
    switch (net_eff(&a->net[k])) {
      case 'd': c.del++; break;
      case 'f': c.full++; break;
      case 'u': c.part++; break;
      case 'i': c.ins++; break;
      default: break;
    }
  return c;
}

/* SET list for the columns an UPDATE may change ('mask' marks kept
   unchanged-TOAST columns, NULL for none); returns how many. */
static int set_list (Buf *b, Rel *r, const char *mask) {
  int i, n = 0;
  for (i = 0; i < r->ncols; i++) {
    if ((mask != NULL && mask[i] == '1') || r->cols[i].identity_always || r->cols[i].key)
      continue;
    buf_printf(b, "%s%s = s.%s", n ? ", " : "", r->cols[i].qname, r->cols[i].qname);
    n++;
  }
  return n;
}

/* An entry's unchanged-column mask ('1' kept, '0' sent) into b. */
static void entry_mask (Buf *b, const NetEnt *e) {
  int i;
  buf_reset(b);
  for (i = 0; i < e->rel->ncols; i++)
    buf_putc(b, e->vals[i].kind == PGO_VAL_UNCHANGED ? '1' : '0');
}

/*
** Send one set-based statement for the entries of a relation's chain
** whose effect is 'eff' ('d' delete, 'f' whole-row update, 'u' update
** keeping the columns of 'mask', 'i' insert): their rows become $1, a
** text[] of row literals read back through the relation's row type.
** Nothing is sent when no entry matches.
*/
static int send_set (Applier *a, Rel *r, int first, char eff, const char *mask, CdcError *err) {
  const char *only = r->partitioned ? "" : "ONLY ";
  Buf set = BUF_INIT, mk = BUF_INIT;
  uint32_t n = 0;
  int k, i, rc = 0;
  arr_begin(a);
  for (k = first; k >= 0; k = a->net[k].next_in_rel) {
    NetEnt *e = &a->net[k];
    if (net_eff(e) != eff)
      continue;
    if (mask != NULL) {
      entry_mask(&mk, e);
      if (strcmp(mk.data, mask) != 0)
        continue;
    }
    arr_row(a, e);
    n++;
  }
  buf_free(&mk);
  if (n == 0)
    return 0;
  arr_finish(a, n);
  a->stats.set_rows += n;
  buf_reset(&a->sql);
  switch (eff) {
    case 'd':
      buf_printf(&a->sql, "DELETE FROM %s%s t USING ", only, r->qname);
      break;
    case 'i':
      buf_printf(&a->sql, "INSERT INTO %s (", r->qname);
      for (i = 0; i < r->ncols; i++)
        buf_printf(&a->sql, "%s%s", i ? ", " : "", r->cols[i].qname);
      buf_printf(&a->sql, ")%s SELECT * FROM ", r->any_identity_always ? " OVERRIDING SYSTEM VALUE" : "");
      break;
    default:
      if (set_list(&set, r, mask) == 0) {   /* only keys, identity or kept columns */
        buf_free(&set);
        return 0;
      }
      buf_printf(&a->sql, "UPDATE %s%s t SET %s FROM ", only, r->qname, set.data);
      break;
  }
  buf_free(&set);
  buf_printf(&a->sql, "(SELECT (x).* FROM (SELECT u.r::pg_temp.%s AS x FROM unnest($1::text[]) u(r) "
             "OFFSET 0) q) s", r->tempname);
  if (eff != 'i') {
    buf_puts(&a->sql, " WHERE ");
    key_match(&a->sql, r);
  }
  rc = pipe_exec_array(a, a->sql.data, r, err);
  return rc;
}

/*
** A relation's net rows: deletes, whole-row updates, one update per
** unchanged-column mask, then inserts, so that a unique value freed by
** a delete or an update is free for a new row.
*/
static int set_rel (Applier *a, Rel *r, int first, CdcError *err) {
  NetCounts c = net_counts(a, first);
  char **masks = NULL;
  int nmasks = 0, cap = 0, j, k, rc = 0;
  if (c.del + c.full + c.part + c.ins == 0)
    return 0;
  if (temp_ensure(a, r, err) != 0 || send_set(a, r, first, 'd', NULL, err) != 0 ||
      send_set(a, r, first, 'f', NULL, err) != 0)
    return -1;
  if (c.part > 0) {
    Buf mk = BUF_INIT;
    for (k = first; k >= 0; k = a->net[k].next_in_rel) {
      int seen = 0;
      if (net_eff(&a->net[k]) != 'u')
        continue;
      entry_mask(&mk, &a->net[k]);
      for (j = 0; j < nmasks && !seen; j++)
        seen = strcmp(masks[j], mk.data) == 0;
      if (!seen) {
        if (nmasks == cap) {
          cap = cap ? cap * 2 : 4;
          masks = xrealloc(masks, (size_t)cap * sizeof(char *));
        }
        masks[nmasks++] = xstrdup(mk.data);
      }
    }
    buf_free(&mk);
    for (j = 0; j < nmasks; j++) {
      if (rc == 0)
        rc = send_set(a, r, first, 'u', masks[j], err);
      free(masks[j]);
    }
    free(masks);
  }
  if (rc == 0)
    rc = send_set(a, r, first, 'i', NULL, err);
  return rc;
}

/*
** Apply segment changes [from, to) set-based, in the pipeline.  The
** caller has folded the keyed changes into the net state; rowidx lists
** the changes of tables without a usable key, sent row by row (table
** order does not matter with triggers and foreign keys off).  A failing
** statement ends the group (take_result notes its table in set_failed).
*/
int set_apply (Applier *a, size_t from, size_t to, const size_t *rowidx, size_t nrow,
                      CdcError *err) {
  size_t i;
  int *heads = NULL, nheads = 0, k, rc = 0;
  Rel **hrels = NULL;
  if (from >= to)
    return 0;
  /* group net entries by relation */
  for (i = 0; i < a->nnet; i++) {
    NetEnt *e = &a->net[i];
    for (k = 0; k < nheads && hrels[k] != e->rel; k++)
      ;
    if (k == nheads) {
      heads = xrealloc(heads, (size_t)(nheads + 1) * sizeof(int));
      hrels = xrealloc(hrels, (size_t)(nheads + 1) * sizeof(Rel *));
      hrels[k] = e->rel;
      heads[k] = -1;
      nheads++;
    }
    e->next_in_rel = heads[k];
    heads[k] = (int)i;
  }
  for (k = 0; k < nheads && rc == 0; k++)
    rc = set_rel(a, hrels[k], heads[k], err);
  /* keyless tables, row by row */
  for (i = 0; i < nrow && rc == 0; i++)
    if (apply_decode_rec(a, (const uint8_t *)a->seg.data + a->ents[rowidx[i]].off, a->ents[rowidx[i]].len,
                         &a->msg, err) != 0 || row_apply(a, &a->msg, err) != 0)
      rc = -1;
  if (rc == 0) {
    a->stats.set_segments++;
    a->stats.set_changes += to - from - nrow;
    for (i = from; i < to; i++) {
      char kind = a->seg.data[a->ents[i].off + 1];   /* flag byte, then the type */
      if (kind == PGO_INSERT) a->stats.inserts++;
      else if (kind == PGO_UPDATE) a->stats.updates++;
      else if (kind == PGO_DELETE) a->stats.deletes++;
    }
    /* row-path changes were counted by row_apply too */
    for (i = 0; i < nrow; i++) {
      char kind = a->seg.data[a->ents[rowidx[i]].off + 1];
      if (kind == PGO_INSERT) a->stats.inserts--;
      else if (kind == PGO_UPDATE) a->stats.updates--;
      else if (kind == PGO_DELETE) a->stats.deletes--;
    }
  }
  free(heads);
  free(hrels);
  return rc;
}
