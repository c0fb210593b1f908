/*
** apply_sql.c
** The two SQL helpers the CDC files share: an identifier quoted into a
** Buf, and one checked statement on an idle connection.
*/
#include "cdc/apply.h"

#include <libpq-fe.h>

#include "util/buf.h"

/* See apply.h: n bytes of s as a double-quoted identifier. */
void apply_quote_ident (Buf *b, const char *s, size_t n) {
  size_t i;
  buf_putc(b, '"');
  for (i = 0; i < n; i++) {
    if (s[i] == '"')
      buf_putc(b, '"');
    buf_putc(b, s[i]);
  }
  buf_putc(b, '"');
}

/* See apply.h: one statement on an idle connection, checked. */
int apply_exec (PGconn *conn, const char *sql, int n, const char *const *vals, PGresult **out,
                const char *what, CdcError *err) {
  PGresult *res = PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(res);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    cdc_err_from_pg(err, what, res, conn);
    PQclear(res);
    return -1;
  }
  if (out != NULL)
    *out = res;
  else
    PQclear(res);
  return 0;
}
