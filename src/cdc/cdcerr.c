/*
** cdcerr.c
** Filling and classifying CdcError records (see cdcerr.h).
*/
#include "cdc/cdcerr.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg/pgconn.h"
#include "pg/pgsql.h"
#include "util/buf.h"
#include "util/redact.h"

void cdc_err_clear (CdcError *e) {
  memset(e, 0, sizeof(*e));
}

/* See cdcerr.h: format the message, redact it (known secrets masked)
   and store it truncated to the buffer; NULL e is a no-op. */
void cdc_err_set (CdcError *e, CdcErrKind kind, int retryable, const char *fmt, ...) {
  va_list ap;
  Buf b = BUF_INIT;
  char *masked;
  if (e == NULL)
    return;
  e->kind = kind;
  e->retryable = retryable;
  va_start(ap, fmt);
  buf_vprintf(&b, fmt, ap);
  va_end(ap);
  masked = redact_str(buf_cstr(&b));
  strlcpy_(e->message, masked, sizeof(e->message));
  free(masked);
  buf_free(&b);
}

/* See cdcerr.h: "what: libpq message" on one line, kind connection
   for a broken connection or SQLSTATE 08/57P (else sql), retryable as
   pgsql_retryable(PGSQL_RETRY_TRANSIENT) says, and the SQLSTATE. */
void cdc_err_from_pg (CdcError *e, const char *what, const PGresult *res, PGconn *conn) {
  char msg[PGCONN_ERRLEN];
  const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  int broken = conn == NULL || PQstatus(conn) != CONNECTION_OK;
  pgconn_result_error(res, conn, msg, sizeof(msg));
  /* libpq messages may span lines: keep one line */
  for (char *p = msg; *p; p++)
    if (*p == '\n')
      *p = ' ';
  cdc_err_set(e, broken || (state != NULL && strncmp(state, "08", 2) == 0) ||
                 (state != NULL && strncmp(state, "57P", 3) == 0)
                   ? CDC_ERR_CONNECTION : CDC_ERR_SQL,
              broken || pgsql_retryable(state, PGSQL_RETRY_TRANSIENT), "%s: %s", what, msg);
  strlcpy_(e->sqlstate, state != NULL ? state : "", sizeof(e->sqlstate));
}

/* The kind's name as shown in error objects ("connection", "sql", ...). */
const char *cdc_err_kind_name (CdcErrKind kind) {
  switch (kind) {
    case CDC_ERR_NONE: return "none";
    case CDC_ERR_CONNECTION: return "connection";
    case CDC_ERR_SQL: return "sql";
    case CDC_ERR_PROTOCOL: return "protocol";
    case CDC_ERR_DRIFT: return "drift";
    case CDC_ERR_CONFIG: return "config";
    case CDC_ERR_IO: return "io";
  }
  return "unknown";
}

/* See cdcerr.h. */
int cdc_err_wait_busy (const CdcError *e, int tries) {
  if (strcmp(e->sqlstate, "55006") != 0 || tries >= 50)
    return 0;
  usleep(200000);
  return 1;
}
