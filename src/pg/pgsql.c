/*
** pgsql.c
** Quoting, command execution and the retryable-SQLSTATE rule shared by
** every libpq caller (see pgsql.h).
*/
#include "pg/pgsql.h"

#include <string.h>

#include "pg/pgconn.h"
#include "util/buf.h"

void pgsql_quote_ident_n (Buf *b, const char *s, size_t n) {
  size_t i;
  buf_putc(b, '"');
  for (i = 0; i < n; i++) {
    if (s[i] == '"')
      buf_putc(b, '"');
    buf_putc(b, s[i]);
  }
  buf_putc(b, '"');
}

void pgsql_quote_ident (Buf *b, const char *s) {
  pgsql_quote_ident_n(b, s, strlen(s));
}

void pgsql_quote_literal (Buf *b, const char *s) {
  buf_putc(b, '\'');
  for (; *s; s++) {
    if (*s == '\'')
      buf_putc(b, '\'');
    buf_putc(b, *s);
  }
  buf_putc(b, '\'');
}

void pgsql_text_array (Buf *b, const char *const *v, int n, int stride) {
  int i;
  buf_putc(b, '{');
  for (i = 0; i < n; i++) {
    const char *p;
    if (i > 0)
      buf_putc(b, ',');
    buf_putc(b, '"');
    for (p = v[i * stride]; *p; p++) {
      if (*p == '"' || *p == '\\')
        buf_putc(b, '\\');
      buf_putc(b, *p);
    }
    buf_putc(b, '"');
  }
  buf_putc(b, '}');
}

int pgsql_result_ok (const PGresult *res) {
  ExecStatusType st = PQresultStatus(res);
  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

/* Fill err and sqlstate (may be NULL) from a failed result. */
static void set_error (PGconn *conn, const PGresult *res, char *err, size_t errlen,
                       char sqlstate[6]) {
  pgconn_result_error(res, conn, err, errlen);
  if (sqlstate != NULL) {
    const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    strlcpy_(sqlstate, s ? s : "", 6);
  }
}

/* See pgsql.h: PQexec, 0 or -1 with the error; the result is cleared. */
int pgsql_exec (PGconn *conn, const char *sql, char *err, size_t errlen, char sqlstate[6]) {
  PGresult *res = PQexec(conn, sql);
  int ok = pgsql_result_ok(res);
  if (!ok)
    set_error(conn, res, err, errlen, sqlstate);
  PQclear(res);
  return ok ? 0 : -1;
}

/* See pgsql.h: PQexecParams; the result goes to *out on success. */
int pgsql_exec_params (PGconn *conn, const char *sql, int n, const char *const *vals,
                       PGresult **out, char *err, size_t errlen, char sqlstate[6]) {
  PGresult *res = PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
  if (!pgsql_result_ok(res)) {
    set_error(conn, res, err, errlen, sqlstate);
    PQclear(res);
    return -1;
  }
  if (out != NULL)
    *out = res;
  else
    PQclear(res);
  return 0;
}

/* See pgsql.h: the lock states for both kinds, the transient classes
   only for PGSQL_RETRY_TRANSIENT. */
int pgsql_retryable (const char *s, PgsqlRetry kind) {
  if (s == NULL || s[0] == '\0')
    return 0;
  if (strcmp(s, "40P01") == 0 || strcmp(s, "55P03") == 0)
    return 1;
  if (kind != PGSQL_RETRY_TRANSIENT)
    return 0;
  return strncmp(s, "08", 2) == 0 || strncmp(s, "57P", 3) == 0 ||
         strncmp(s, "40", 2) == 0 || strncmp(s, "53", 2) == 0 ||
         strcmp(s, "55006") == 0;
}
