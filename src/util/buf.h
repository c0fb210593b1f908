/*
** buf.h
** A growable byte buffer used wherever C code builds strings or bodies
** (SQL, HTTP requests, canonical requests, COPY data).  The data is
** always NUL-terminated, so buf.data can be used as a C string when the
** content has no embedded NULs.  Allocation failure aborts the process:
** there is no useful recovery from out-of-memory in a migration tool.
*/
#ifndef PGTIDE_BUF_H
#define PGTIDE_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct Buf {
  char *data;      /* NUL-terminated; NULL until the first append */
  size_t len;      /* bytes used, not counting the NUL */
  size_t cap;      /* bytes allocated */
} Buf;

#define BUF_INIT {NULL, 0, 0}

void buf_init(Buf *b);
void buf_free(Buf *b);
void buf_reset(Buf *b);                       /* len = 0, keeps memory */
void buf_reserve(Buf *b, size_t extra);
void buf_append(Buf *b, const void *data, size_t n);
void buf_puts(Buf *b, const char *s);
void buf_putc(Buf *b, char c);
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vprintf(Buf *b, const char *fmt, va_list ap);
const char *buf_cstr(Buf *b);                 /* "" for an empty buffer */
char *buf_steal(Buf *b);                      /* caller frees; b is reset */

/* Allocation helpers that abort on failure. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* Bounded copy: always NUL-terminates dst (dstsize > 0); returns strlen(src). */
size_t strlcpy_(char *dst, const char *src, size_t dstsize);

#endif
