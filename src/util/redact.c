/*
** redact.c
** Secret masking for logs, state files, reports and error messages
** (see redact.h).  The pattern pass runs first, then registered literals
** are replaced, so a secret is masked whether or not its shape is known.
*/
#include "util/redact.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char **secrets;
static size_t nsecrets, capsecrets;

/* Remember a secret (copied; shorter than 4 bytes: ignored): later
   text containing it is masked.  Thread-safe. */
void redact_register (const char *secret) {
  size_t i;
  if (secret == NULL || strlen(secret) < 4)
    return;
  pthread_mutex_lock(&lock);
  for (i = 0; i < nsecrets; i++)
    if (strcmp(secrets[i], secret) == 0)
      goto done;
  if (nsecrets == capsecrets) {
    capsecrets = capsecrets ? capsecrets * 2 : 8;
    secrets = xrealloc(secrets, capsecrets * sizeof(char *));
  }
  secrets[nsecrets++] = xstrdup(secret);
done:
  pthread_mutex_unlock(&lock);
}

void redact_clear (void) {
  size_t i;
  pthread_mutex_lock(&lock);
  for (i = 0; i < nsecrets; i++)
    free(secrets[i]);
  nsecrets = 0;
  pthread_mutex_unlock(&lock);
}

/* Names whose value is a secret, matched case-insensitively as a whole
   word followed by a separator (= : " > or spaces). */
static const char *const secret_keys[] = {
  "password", "passwd", "pgpassword", "secret_access_key",
  "aws_secret_access_key", "secretaccesskey", "aws_session_token",
  "sessiontoken", "session_token", "x-amz-security-token", "authorization",
  "token", "sourcepassword", "targetpassword", "x-aws-ec2-metadata-token",
  NULL
};

static int is_word (int c) {
  return isalnum(c) || c == '_' || c == '-';
}

/* If a secret key starts at s[i] (at a word boundary), return its length. */
static size_t match_key (const char *s, size_t n, size_t i) {
  int k;
  if (i > 0 && is_word((unsigned char)s[i - 1]))
    return 0;
  for (k = 0; secret_keys[k] != NULL; k++) {
    size_t kl = strlen(secret_keys[k]);
    if (i + kl <= n && strncasecmp(s + i, secret_keys[k], kl) == 0 &&
        (i + kl == n || !is_word((unsigned char)s[i + kl])))
      return kl;
  }
  return 0;
}

/*
** Given that a secret key ends at s[i], find the value that follows:
** separators (spaces, quotes, = : >), then the value up to its end
** (a closing quote, '<', '&', ';', ',', whitespace or end of line).
** Authorization headers run to the end of the line.  Sets *vstart and *vend
** and returns 1 when a value was found.
*/
static int find_value (const char *s, size_t n, size_t i, int to_eol,
                       size_t *vstart, size_t *vend) {
  size_t j = i;
  char quote = 0;
  int sep = 0;
  while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == '"' || s[j] == '\'' ||
                   s[j] == '=' || s[j] == ':' || s[j] == '>')) {
    if (s[j] == '=' || s[j] == ':' || s[j] == '>') {
      sep = 1;
      quote = 0;  /* a quote before the separator closed the key */
    } else if (s[j] == '"' || s[j] == '\'')
      quote = s[j];
    j++;
    if (sep && quote)
      break;
  }
  if (!sep || j >= n)
    return 0;
  *vstart = j;
  if (to_eol) {
    while (j < n && s[j] != '\n' && s[j] != '\r' && !(quote && s[j] == quote))
      j++;
  } else if (quote) {
    while (j < n && s[j] != quote && s[j] != '\n') {
      if (s[j] == '\\' && j + 1 < n)
        j++;
      j++;
    }
  } else {
    while (j < n && !isspace((unsigned char)s[j]) && s[j] != '<' && s[j] != '&' &&
           s[j] != ';' && s[j] != ',' && s[j] != '"' && s[j] != '\'' && s[j] != '}')
      j++;
  }
  *vend = j;
  return *vend > *vstart;
}

/* Mask 'user:password@' in URIs: scheme "://" user ':' pass '@'. */
static size_t uri_password (const char *s, size_t n, size_t i, size_t *pend) {
  size_t j;
  if (!(i >= 3 && s[i] == ':' ))
    return 0;
  /* s[i] is the ':' after the user; require "://" earlier on this token */
  for (j = i; j > 0 && !isspace((unsigned char)s[j - 1]) && s[j - 1] != '\'' && s[j - 1] != '"'; j--)
    if (j >= 3 && strncmp(s + j - 3, "://", 3) == 0)
      break;
  if (j < 3 || strncmp(s + j - 3, "://", 3) != 0)
    return 0;
  /* user part must not contain '/' or '@' */
  {
    size_t k;
    for (k = j; k < i; k++)
      if (s[k] == '/' || s[k] == '@')
        return 0;
  }
  for (j = i + 1; j < n && !isspace((unsigned char)s[j]) && s[j] != '/'; j++)
    if (s[j] == '@') {
      *pend = j;
      return 1;
    }
  return 0;
}

/* First pass: mask values of secret-looking keys (password=,
   Authorization:, aws_secret_access_key...) wherever they appear. */
static void pattern_pass (Buf *out, const char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t kl = match_key(s, n, i), vs, ve, pend;
    if (kl > 0) {
      int to_eol = (kl == 13 && strncasecmp(s + i, "authorization", 13) == 0);
      if (find_value(s, n, i + kl, to_eol, &vs, &ve)) {
        buf_append(out, s + i, vs - i);
        buf_puts(out, REDACTED);
        i = ve;
        continue;
      }
      buf_append(out, s + i, kl);
      i += kl;
      continue;
    }
    if (s[i] == ':' && uri_password(s, n, i, &pend)) {
      buf_puts(out, ":" REDACTED);
      i = pend;
      continue;
    }
    buf_putc(out, s[i]);
    i++;
  }
}

/* Append in[0..n) to out with secret-looking values and every
   registered secret (longest match first) masked. */
void redact_into (Buf *out, const char *in, size_t n) {
  Buf tmp = BUF_INIT;
  size_t k;
  const char *s;
  pattern_pass(&tmp, in, n);
  pthread_mutex_lock(&lock);
  if (nsecrets == 0) {
    pthread_mutex_unlock(&lock);
    buf_append(out, tmp.data ? tmp.data : "", tmp.len);
    buf_free(&tmp);
    return;
  }
  s = buf_cstr(&tmp);
  k = 0;
  while (k < tmp.len) {
    size_t i, best = 0;
    for (i = 0; i < nsecrets; i++) {
      size_t l = strlen(secrets[i]);
      if (l > best && k + l <= tmp.len && memcmp(s + k, secrets[i], l) == 0)
        best = l;
    }
    if (best > 0) {
      buf_puts(out, REDACTED);
      k += best;
    } else {
      buf_putc(out, s[k]);
      k++;
    }
  }
  pthread_mutex_unlock(&lock);
  buf_free(&tmp);
}

char *redact_str (const char *in) {
  Buf out = BUF_INIT;
  redact_into(&out, in, strlen(in));
  return buf_steal(&out);
}
