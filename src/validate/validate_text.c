/*
** validate_text.c
** Small text helpers of the validation, Lua-free and exposed in
** validate.h for the unit tests: parsing "schema.table" names,
** truncating values for the report, comparing key texts, and the
** longest monotone subsequence used to keep chunk bounds that both
** servers order the same way.  Also the string-vector helpers the
** other validate_*.c files share.
*/
#include <stdlib.h>
#include <string.h>

#include "util/redact.h"
#include "validate/validate_internal.h"

/* Read one identifier part at *pp (quoted or not) up to an unquoted dot
   or the end.  Returns a new string or NULL when malformed. */
static char *parse_part (const char **pp) {
  const char *p = *pp;
  Buf b = BUF_INIT;
  if (*p == '"') {
    p++;
    for (;;) {
      if (*p == '\0') {
        buf_free(&b);
        return NULL;
      }
      if (*p == '"') {
        if (p[1] == '"') {
          buf_putc(&b, '"');
          p += 2;
          continue;
        }
        p++;
        break;
      }
      buf_putc(&b, *p++);
    }
  } else {
    while (*p && *p != '.')
      buf_putc(&b, *p++);
  }
  *pp = p;
  if (b.len == 0) {
    buf_free(&b);
    return NULL;
  }
  return buf_steal(&b);
}

/* "schema.table", "table" (public) or quoted parts -> two new strings. */
int validate_parse_name (const char *in, char **schema, char **name) {
  const char *p = in;
  char *a, *b;
  *schema = *name = NULL;
  if (in == NULL || (a = parse_part(&p)) == NULL)
    return -1;
  if (*p == '\0') {
    *schema = xstrdup("public");
    *name = a;
    return 0;
  }
  if (*p != '.') {
    free(a);
    return -1;
  }
  p++;
  b = parse_part(&p);
  if (b == NULL || *p != '\0') {
    free(a);
    free(b);
    return -1;
  }
  *schema = a;
  *name = b;
  return 0;
}

/* Truncated copy of a value for the report (see validate.h), with any
   registered secret masked.  Caller frees. */
char *validate_truncate (const char *v, int max) {
  size_t n;
  Buf b = BUF_INIT;
  char *masked;
  if (v == NULL)
    return NULL;
  n = strlen(v);
  if (max > 0 && n > (size_t)max) {
    n = (size_t)max;
    while (n > 0 && ((unsigned char)v[n] & 0xC0) == 0x80)  /* not inside a UTF-8 sequence */
      n--;
    buf_append(&b, v, n);
    buf_puts(&b, "...");
  } else {
    buf_append(&b, v, n);
  }
  masked = redact_str(buf_cstr(&b));   /* data never carries a registered secret out */
  buf_free(&b);
  return masked;
}

/* "-"? digits+ */
static int is_integer_text (const char *s) {
  if (*s == '-')
    s++;
  if (*s == '\0')
    return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9')
      return 0;
  return 1;
}

/* Key texts in a stable order for the report: integers numerically
   (sign, then length, then digits), anything else bytewise. */
int validate_keycmp (const char *a, const char *b) {
  if (is_integer_text(a) && is_integer_text(b)) {
    int na = a[0] == '-', nb = b[0] == '-';
    size_t la, lb;
    int c;
    if (na != nb)
      return na ? -1 : 1;
    a += na;
    b += nb;
    while (*a == '0' && a[1]) a++;
    while (*b == '0' && b[1]) b++;
    la = strlen(a);
    lb = strlen(b);
    if (la != lb)
      c = la < lb ? -1 : 1;
    else
      c = strcmp(a, b);
    if (c > 0) c = 1;
    if (c < 0) c = -1;
    return na ? -c : c;
  }
  return strcmp(a, b);
}

/*
** Longest increasing subsequence (see validate.h) by patience sorting:
** tails[l] is the index of the smallest tail of an increasing
** subsequence of length l+1; prev[] links each element to the one
** before it in its subsequence.  O(n log n).
*/
int validate_monotone_subset (const int *order, int n, int *keep) {
  int *tails, *prev, len = 0, i, k;
  if (n <= 0)
    return 0;
  tails = xmalloc(sizeof(int) * (size_t)n);
  prev = xmalloc(sizeof(int) * (size_t)n);
  for (i = 0; i < n; i++) {
    int lo = 0, hi = len;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (order[tails[mid]] < order[i]) lo = mid + 1; else hi = mid;
    }
    prev[i] = lo > 0 ? tails[lo - 1] : -1;
    tails[lo] = i;
    if (lo == len)
      len++;
  }
  for (k = len - 1, i = tails[len - 1]; k >= 0; k--, i = prev[i])
    keep[k] = i;
  free(tails);
  free(prev);
  return len;
}

/* Free n strings and the vector (NULL is fine). */
void vstrv_free (char **v, int n) {
  int i;
  if (v == NULL)
    return;
  for (i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

/* Append a copy of s to the vector *v of *n strings. */
void vstrv_push (char ***v, int *n, const char *s) {
  *v = xrealloc(*v, sizeof(char *) * (size_t)(*n + 1));
  (*v)[(*n)++] = xstrdup(s);
}
