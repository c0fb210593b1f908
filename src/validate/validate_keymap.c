/*
** validate_keymap.c
** An open-addressing hash map from encoded keys to (side, row hash),
** used to match the rows of a differing chunk fetched from both servers
** (no ordering has to be reproduced client-side) and to hold the keys
** left unmatched across chunks.  Keys are encoded as length-prefixed
** column texts, so they compare bytewise and decode back.  Linear
** probing; deletion shifts entries back (no tombstones).  The map owns
** its keys; it is not thread-safe (callers lock the table).
*/
#include <stdlib.h>
#include <string.h>

#include "validate/validate_internal.h"

/* FNV-1a over the encoded key, with the high bits folded in (the map
   indexes by the low bits). */
uint64_t kmap_hash (const char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  size_t i;
  for (i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= 1099511628211ULL;
  }
  return h ^ (h >> 29);
}

/* Free every key and the slots; the map is empty afterwards. */
void kmap_free (KMap *m) {
  size_t i;
  for (i = 0; i < m->cap; i++)
    free(m->e[i].key);
  free(m->e);
  m->e = NULL;
  m->cap = m->n = 0;
}

/* The entry for key k (kh = kmap_hash(k)), or NULL. */
KEntry *kmap_find (KMap *m, const char *k, uint32_t klen, uint64_t kh) {
  size_t i;
  if (m->cap == 0)
    return NULL;
  for (i = kh & (m->cap - 1); m->e[i].key != NULL; i = (i + 1) & (m->cap - 1))
    if (m->e[i].kh == kh && m->e[i].klen == klen && memcmp(m->e[i].key, k, klen) == 0)
      return &m->e[i];
  return NULL;
}

/* Double the slots (1024 at first) and re-insert every entry. */
static void kmap_grow (KMap *m) {
  KEntry *old = m->e;
  size_t oldcap = m->cap, i;
  m->cap = oldcap ? oldcap * 2 : 1024;
  m->e = xcalloc(m->cap, sizeof(KEntry));
  for (i = 0; i < oldcap; i++) {
    size_t j;
    if (old[i].key == NULL)
      continue;
    for (j = old[i].kh & (m->cap - 1); m->e[j].key != NULL; j = (j + 1) & (m->cap - 1))
      ;
    m->e[j] = old[i];
  }
  free(old);
}

/* Insert a key known to be absent; the map copies it. */
KEntry *kmap_add (KMap *m, const char *k, uint32_t klen, uint64_t kh) {
  size_t i;
  if ((m->n + 1) * 4 > m->cap * 3)
    kmap_grow(m);
  for (i = kh & (m->cap - 1); m->e[i].key != NULL; i = (i + 1) & (m->cap - 1))
    ;
  m->e[i].key = xmalloc(klen ? klen : 1);
  memcpy(m->e[i].key, k, klen);
  m->e[i].klen = klen;
  m->e[i].kh = kh;
  m->n++;
  return &m->e[i];
}

/* Remove entry e (freeing its key), moving later entries of the same
   probe run back into the hole. */
void kmap_del (KMap *m, KEntry *e) {
  size_t i = (size_t)(e - m->e), j = i, mask = m->cap - 1;
  free(e->key);
  m->e[i].key = NULL;
  m->n--;
  for (;;) {
    size_t home;
    j = (j + 1) & mask;
    if (m->e[j].key == NULL)
      break;
    home = m->e[j].kh & mask;
    /* move e[j] into the hole when its home is not in (i, j] cyclically */
    if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
      m->e[i] = m->e[j];
      m->e[j].key = NULL;
      i = j;
    }
  }
}

/* Encode the key columns of a result row (columns 0..nkey-1). */
void kmap_encode_key (Buf *b, const PGresult *res, int row, int nkey) {
  int j;
  buf_reset(b);
  for (j = 0; j < nkey; j++) {
    uint32_t len = (uint32_t)PQgetlength(res, row, j);
    buf_append(b, &len, sizeof(len));
    buf_append(b, PQgetvalue(res, row, j), len);
  }
}

/* Decode an encoded key into nkey new strings (caller frees with
   vstrv_free); missing parts decode as "". */
char **kmap_decode_key (const char *k, uint32_t klen, int nkey) {
  char **out = xcalloc((size_t)(nkey > 0 ? nkey : 1), sizeof(char *));
  uint32_t off = 0;
  int j;
  for (j = 0; j < nkey && off + sizeof(uint32_t) <= klen; j++) {
    uint32_t len;
    memcpy(&len, k + off, sizeof(len));
    off += (uint32_t)sizeof(len);
    out[j] = xstrndup(k + off, len);
    off += len;
  }
  for (; j < nkey; j++)
    out[j] = xstrdup("");
  return out;
}

/* Index a result's rows by their encoded key (columns 0..nkey-1): the
   entry's rowhash holds the row number; the first of duplicates wins.
   'key' is scratch space. */
void kmap_index_rows (KMap *m, const PGresult *res, int nkey, Buf *key) {
  int r;
  for (r = 0; r < PQntuples(res); r++) {
    uint64_t kh;
    kmap_encode_key(key, res, r, nkey);
    kh = kmap_hash(key->data, key->len);
    if (kmap_find(m, key->data, (uint32_t)key->len, kh) == NULL)
      kmap_add(m, key->data, (uint32_t)key->len, kh)->rowhash = r;
  }
}

/* The row number kmap_index_rows() stored for key k, or -1. */
int kmap_row (KMap *m, const char *k, uint32_t klen) {
  KEntry *e = kmap_find(m, k, klen, kmap_hash(k, klen));
  return e != NULL ? (int)e->rowhash : -1;
}
