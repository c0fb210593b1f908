/*
** validate_narrow.c
** Narrowing a differing chunk down to rows.  The keys and row hashes of
** the chunk are streamed from both servers and matched in C (a hash map:
** no ordering has to agree between the servers); a big chunk is first
** cut to the key buckets whose count or hash sum differ.  Keys left
** unmatched go to the table's pending map, where a counterpart from
** another chunk can still match them; what is left at the end is
** missing or extra (validate_report.c).  A chunk empty on one side needs
** no matching: its other side's keys are all different.
**
** Per table, at most PENDING_CAP unmatched and STORE_CAP changed keys
** are held; beyond that rows are counted, not stored.
*/
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "validate/validate_internal.h"

#define DRILL_NARROW_ROWS 2048   /* chunks bigger than this are narrowed by key buckets first */

/* Store key k as changed (a copy), or only count it once STORE_CAP keys
   are stored.  Caller holds t->mu. */
static void add_changed (VTable *t, const char *k, uint32_t klen) {
  if (t->nchanged >= STORE_CAP) {
    t->over_changed++;
    return;
  }
  if (t->nchanged == t->capchanged) {
    t->capchanged = t->capchanged ? t->capchanged * 2 : 64;
    t->changed = xrealloc(t->changed, sizeof(KeyDiff) * (size_t)t->capchanged);
  }
  t->changed[t->nchanged].kind = VDIFF_CHANGED;
  t->changed[t->nchanged].key = xmalloc(klen ? klen : 1);
  memcpy(t->changed[t->nchanged].key, k, klen);
  t->changed[t->nchanged].klen = klen;
  t->changed[t->nchanged].texts = NULL;
  t->nchanged++;
}

/*
** A key seen on one side only (so far).  If the other side's row with
** that key was left over by another chunk (key orders differ between the
** servers), the two are matched here.  Caller holds t->mu.
*/
static void pend_add (VTable *t, int side, const char *k, uint32_t klen, int64_t rowhash) {
  uint64_t kh = kmap_hash(k, klen);
  KEntry *e = kmap_find(&t->pending, k, klen, kh);
  if (e != NULL) {
    if (e->side == side) {            /* duplicate key on one side */
      if (side == 0) t->over_missing++; else t->over_extra++;
      return;
    }
    if (e->rowhash != rowhash)
      add_changed(t, k, klen);
    kmap_del(&t->pending, e);
    return;
  }
  if (t->pending.n >= PENDING_CAP) {
    if (side == 0) t->over_missing++; else t->over_extra++;
    return;
  }
  e = kmap_add(&t->pending, k, klen, kh);
  e->side = side;
  e->rowhash = rowhash;
}

/* Buffered unmatched keys of one chunk, flushed to the table in batches
   (one lock per batch rather than per row). */
typedef struct Unmatched {
  Buf data;                 /* [side:1][hash:8][klen:4][key] ... */
  int n;
} Unmatched;

#define UM_CHANGED 2        /* 'side' of a key matched with another row hash */

/* Buffer key k seen on 'side' (0 source, 1 target, UM_CHANGED). */
static void um_push (Unmatched *u, int side, int64_t h, const char *k, uint32_t klen) {
  char s = (char)side;
  buf_append(&u->data, &s, 1);
  buf_append(&u->data, &h, sizeof(h));
  buf_append(&u->data, &klen, sizeof(klen));
  buf_append(&u->data, k, klen);
  u->n++;
}

/* Move the buffered keys into the table (under its lock) and empty u. */
static void um_flush (VTable *t, Unmatched *u) {
  size_t off = 0;
  if (u->n == 0)
    return;
  pthread_mutex_lock(&t->mu);
  while (off < u->data.len) {
    int side = u->data.data[off];
    int64_t h;
    uint32_t klen;
    memcpy(&h, u->data.data + off + 1, sizeof(h));
    memcpy(&klen, u->data.data + off + 1 + sizeof(h), sizeof(klen));
    off += 1 + sizeof(h) + sizeof(klen);
    if (side == UM_CHANGED)
      add_changed(t, u->data.data + off, klen);
    else
      pend_add(t, side, u->data.data + off, klen, h);
    off += klen;
  }
  pthread_mutex_unlock(&t->mu);
  buf_reset(&u->data);
  u->n = 0;
}

/*
** Merge two results of (bucket, count, hash sum) rows, both ordered by
** bucket, and append the buckets whose count or sum differ (or that one
** side lacks) to 'list' as an int8[] literal.  Adds each side's row
** counts to *ts and *tt.  Returns how many buckets differ.
*/
int vbuckets_diff (const PGresult *rs, const PGresult *rt, Buf *list, int64_t *ts,
                   int64_t *tt) {
  int i = 0, j = 0, ndiff = 0, ns = PQntuples(rs), nt = PQntuples(rt);
  buf_putc(list, '{');
  while (i < ns || j < nt) {
    int64_t bs = i < ns ? strtoll(PQgetvalue(rs, i, 0), NULL, 10) : INT64_MAX;
    int64_t bt = j < nt ? strtoll(PQgetvalue(rt, j, 0), NULL, 10) : INT64_MAX;
    int64_t b = bs < bt ? bs : bt;
    int same = bs == bt && strcmp(PQgetvalue(rs, i, 1), PQgetvalue(rt, j, 1)) == 0 &&
               strcmp(PQgetvalue(rs, i, 2), PQgetvalue(rt, j, 2)) == 0;
    if (bs == b) *ts += strtoll(PQgetvalue(rs, i++, 1), NULL, 10);
    if (bt == b) *tt += strtoll(PQgetvalue(rt, j++, 1), NULL, 10);
    if (!same)
      buf_printf(list, "%s%" PRId64, ndiff++ ? "," : "", b);
  }
  buf_putc(list, '}');
  return ndiff;
}

/*
** Narrow a big differing chunk before fetching keys: count and hash sum
** per bucket of a hash of the key, on both sides.  Writes the buckets
** that differ as an int8[] literal to 'list'.  Returns 0 or -1.
*/
static int key_buckets (Worker *w, VTable *t, char *const *lo, char *const *hi, int64_t mask,
                        Buf *list, char *err, size_t errlen) {
  VPair q;
  PGresult *rs = NULL, *rt = NULL;
  int64_t ts = 0, tt = 0;
  int side, rc = -1;
  vpair_init(&q, 2 * t->nkey);
  for (side = 0; side < 2; side++) {
    buf_printf(&q.sql[side], "SELECT %s & %" PRId64 ", count(*), sum(%s) FROM %s", t->kexpr,
               mask, t->hexpr, vsql_from(t, side));
    vsql_range_pred(&q.sql[side], t, side, lo, hi, q.pv[side], &q.np[side]);
    buf_puts(&q.sql[side], " GROUP BY 1 ORDER BY 1");
  }
  if (vpair_run(&q, &w->src, &w->tgt, &rs, &rt, err, errlen) != 0)
    goto done;
  vbuckets_diff(rs, rt, list, &ts, &tt);
  rc = 0;
done:
  PQclear(rs);
  PQclear(rt);
  vpair_free(&q);
  return rc;
}

/*
** Find the differing rows of the chunk [lo, hi) ('rows': the bigger
** side's count).  Big chunks are first narrowed to their differing key
** buckets.  Then the keys and row hashes are streamed from both sides:
** source rows go into a local map, target rows are matched against it;
** the rows matched with another hash are changed, the rest go to the
** table's pending map (their counterpart may be in another chunk when
** the servers order keys differently).  Memory: one chunk's keys.
*/
int vnarrow_drill (Worker *w, VTable *t, char *const *lo, char *const *hi, int64_t rows,
                   char *err, size_t errlen) {
  VPair q;
  Buf key = BUF_INIT, list = BUF_INIT;
  KMap local = {NULL, 0, 0};
  Unmatched um = {BUF_INIT, 0};
  PGresult *row;
  int side, failed = 0, rc = -1;
  size_t j;
  int64_t mask = 0;
  vpair_init(&q, 2 * t->nkey + 1);
  if (rows > DRILL_NARROW_ROWS) {
    int64_t nb = 16;
    while (nb * 128 < rows && nb < 4096)
      nb <<= 1;
    mask = nb - 1;
    if (key_buckets(w, t, lo, hi, mask, &list, err, errlen) != 0)
      goto done;
  }
  for (side = 0; side < 2; side++) {
    Buf *b = &q.sql[side];
    vsql_select_keys(b, t, side, 0);
    vsql_range_pred(b, t, side, lo, hi, q.pv[side], &q.np[side]);
    if (mask != 0) {
      q.pv[side][q.np[side]++] = buf_cstr(&list);
      buf_printf(b, "%s%s & %" PRId64 " = ANY ($%d::int8[])",
                 (lo != NULL || hi != NULL) ? " AND " : " WHERE ", t->kexpr, mask, q.np[side]);
    }
  }
  if (vpair_send(&q, &w->src, &w->tgt, 1, err, errlen) != 0)
    goto done;
  while ((row = vnext(&w->src, &failed, err, errlen)) != NULL) {
    uint64_t kh;
    KEntry *e;
    kmap_encode_key(&key, row, 0, t->nkey);
    kh = kmap_hash(key.data, key.len);
    if (kmap_find(&local, key.data, (uint32_t)key.len, kh) == NULL) {
      e = kmap_add(&local, key.data, (uint32_t)key.len, kh);
      e->rowhash = strtoll(PQgetvalue(row, 0, t->nkey), NULL, 10);
      e->side = 0;
    }
    PQclear(row);
  }
  if (failed) {
    vdrain(&w->tgt);
    goto done;
  }
  while ((row = vnext(&w->tgt, &failed, err, errlen)) != NULL) {
    int64_t h = strtoll(PQgetvalue(row, 0, t->nkey), NULL, 10);
    uint64_t kh;
    KEntry *e;
    kmap_encode_key(&key, row, 0, t->nkey);
    kh = kmap_hash(key.data, key.len);
    e = kmap_find(&local, key.data, (uint32_t)key.len, kh);
    if (e != NULL) {
      if (e->rowhash != h)
        um_push(&um, UM_CHANGED, 0, key.data, (uint32_t)key.len);
      kmap_del(&local, e);
    } else {
      um_push(&um, 1, h, key.data, (uint32_t)key.len);
    }
    if (um.n >= 10000)
      um_flush(t, &um);
    PQclear(row);
  }
  if (failed)
    goto done;
  for (j = 0; j < local.cap; j++)
    if (local.e[j].key != NULL)
      um_push(&um, 0, local.e[j].rowhash, local.e[j].key, local.e[j].klen);
  um_flush(t, &um);
  rc = 0;
done:
  kmap_free(&local);
  buf_free(&um.data);
  buf_free(&key);
  buf_free(&list);
  vpair_free(&q);
  return rc;
}

/*
** One side of the chunk is empty: every row on the other side differs.
** Their count is known; keys are fetched only while the table has room
** for STORE_CAP of them (for the report and re-checks).
*/
int vnarrow_one_sided (Worker *w, VTable *t, char *const *lo, char *const *hi, int target,
                       int64_t count, char *err, size_t errlen) {
  Buf q = BUF_INIT, key = BUF_INIT;
  const char **pv;
  int np = 0, i, n, room;
  PGresult *res;
  pthread_mutex_lock(&t->mu);
  room = STORE_CAP - (int)t->pending.n;
  if (room <= 0) {
    if (target) t->over_extra += count; else t->over_missing += count;
    pthread_mutex_unlock(&t->mu);
    return 0;
  }
  pthread_mutex_unlock(&t->mu);
  pv = xcalloc((size_t)(2 * t->nkey + 1), sizeof(char *));
  vsql_select_keys(&q, t, target, 0);
  vsql_range_pred(&q, t, target, lo, hi, pv, &np);
  buf_printf(&q, " LIMIT %d", room);
  res = vquery(target ? &w->tgt : &w->src, buf_cstr(&q), np, pv, err, errlen);
  buf_free(&q);
  free(pv);
  if (res == NULL)
    return -1;
  n = PQntuples(res);
  pthread_mutex_lock(&t->mu);
  for (i = 0; i < n; i++) {
    kmap_encode_key(&key, res, i, t->nkey);
    pend_add(t, target, key.data, (uint32_t)key.len,
             strtoll(PQgetvalue(res, i, t->nkey), NULL, 10));
  }
  if (count > n) {
    if (target) t->over_extra += count - n; else t->over_missing += count - n;
  }
  pthread_mutex_unlock(&t->mu);
  PQclear(res);
  buf_free(&key);
  return 0;
}
