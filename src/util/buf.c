/*
** buf.c
** Growable byte buffer and aborting allocators (see buf.h).
*/
#include "util/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *xmalloc (size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) {
    fputs("pgtide: out of memory\n", stderr);
    abort();
  }
  return p;
}

void *xcalloc (size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (p == NULL) {
    fputs("pgtide: out of memory\n", stderr);
    abort();
  }
  return p;
}

void *xrealloc (void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (q == NULL) {
    fputs("pgtide: out of memory\n", stderr);
    abort();
  }
  return q;
}

char *xstrdup (const char *s) {
  return xstrndup(s, strlen(s));
}

char *xstrndup (const char *s, size_t n) {
  char *p = xmalloc(n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

size_t strlcpy_ (char *dst, const char *src, size_t dstsize) {
  size_t n = strlen(src);
  if (dstsize > 0) {
    size_t k = n < dstsize - 1 ? n : dstsize - 1;
    memcpy(dst, src, k);
    dst[k] = '\0';
  }
  return n;
}

void buf_init (Buf *b) {
  b->data = NULL;
  b->len = b->cap = 0;
}

void buf_free (Buf *b) {
  free(b->data);
  buf_init(b);
}

void buf_reset (Buf *b) {
  b->len = 0;
  if (b->data != NULL)
    b->data[0] = '\0';
}

/* Make room for 'extra' more bytes plus the terminating NUL. */
void buf_reserve (Buf *b, size_t extra) {
  size_t need = b->len + extra + 1;
  if (need > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
      cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
  }
}

void buf_append (Buf *b, const void *data, size_t n) {
  buf_reserve(b, n);
  if (n > 0)
    memcpy(b->data + b->len, data, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void buf_puts (Buf *b, const char *s) {
  buf_append(b, s, strlen(s));
}

void buf_putc (Buf *b, char c) {
  buf_append(b, &c, 1);
}

/* Append formatted text (vsnprintf, growing as needed). */
void buf_vprintf (Buf *b, const char *fmt, va_list ap) {
  va_list ap2;
  int n;
  va_copy(ap2, ap);
  n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0)
    return;
  buf_reserve(b, (size_t)n);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
}

void buf_printf (Buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  buf_vprintf(b, fmt, ap);
  va_end(ap);
}

const char *buf_cstr (Buf *b) {
  return b->data != NULL ? b->data : "";
}

char *buf_steal (Buf *b) {
  char *p = b->data != NULL ? b->data : xstrdup("");
  buf_init(b);
  return p;
}
