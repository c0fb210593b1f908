/*
** cdcerr.h
** The error record shared by the CDC units (stream, spill, apply, the
** worker): what kind of failure, whether retrying can help, and for
** schema drift the table and column involved.  Messages are redacted
** before they are stored here, so they can be logged and shown as is.
*/
#ifndef PGTIDE_CDCERR_H
#define PGTIDE_CDCERR_H

#include <libpq-fe.h>

typedef enum CdcErrKind {
  CDC_ERR_NONE = 0,
  CDC_ERR_CONNECTION,   /* lost or refused connection, terminated backend */
  CDC_ERR_SQL,          /* a statement failed on the target or source */
  CDC_ERR_PROTOCOL,     /* malformed replication or pgoutput data */
  CDC_ERR_DRIFT,        /* source schema no longer matches the target */
  CDC_ERR_CONFIG,       /* bad option, missing slot or publication, privileges */
  CDC_ERR_IO            /* spill file or state directory */
} CdcErrKind;

typedef struct CdcError {
  CdcErrKind kind;
  int retryable;        /* reconnecting and resuming may succeed */
  char sqlstate[6];     /* "" when not from the server */
  char table[256];      /* schema.table, drift and apply errors */
  char column[128];     /* drift */
  char message[1024];
} CdcError;

void cdc_err_clear(CdcError *e);
void cdc_err_set(CdcError *e, CdcErrKind kind, int retryable, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));
/* From a failed result (res may be NULL: then the connection's error).
   Classifies retryable SQLSTATEs (connection classes 08 and 57P,
   40xxx, 53xxx, 55006, 55P03) and broken connections. */
void cdc_err_from_pg(CdcError *e, const char *what, const PGresult *res, PGconn *conn);
const char *cdc_err_kind_name(CdcErrKind kind);

/* Whether a failure is "object in use" (55006: a slot or an origin
   still held by a session that is going away) and worth another try:
   then waits 200 ms and returns 1, up to 50 tries (10 s) in all;
   otherwise returns 0 at once.  The one rule for those waits. */
int cdc_err_wait_busy(const CdcError *e, int tries);

#endif
