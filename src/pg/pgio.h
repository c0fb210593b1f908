/*
** pgio.h
** Waiting on libpq connections without blocking forever: results of a
** command sent with PQsend*, COPY OUT rows and COPY IN data, cancel.
** Every wait polls the socket in short slices so a SIGINT/SIGTERM
** (util/interrupt.h) cancels the running statement instead of leaving
** the process stuck; the cancelled statement then ends with SQLSTATE
** 57014 like any other error.  No Lua here.
*/
#ifndef PGTIDE_PGIO_H
#define PGTIDE_PGIO_H

#include <stddef.h>
#include <libpq-fe.h>

/* Ask the server to cancel what 'conn' is running.  Returns 0 when the
   request was delivered (the statement may still finish normally), -1
   with a message in err. */
int pgio_cancel(PGconn *conn, char *err, size_t errlen);

/*
** Collect the results of the command last sent on 'conn' (PQsendQuery,
** PQsendQueryParams, PQsendPrepare...).  Returns the first error result
** if any statement failed, else the last result; a COPY_IN, COPY_OUT or
** COPY_BOTH result is returned as soon as it arrives (the connection is
** then in COPY mode).  The caller owns the result (PQclear).
**
** 'timeout_ms' bounds the wait until the command's first result is
** ready (-1: no bound).  On timeout, returns NULL with *timedout = 1 and
** the command keeps running.  NULL with *timedout = 0 means the
** connection failed: see PQerrorMessage.
*/
PGresult *pgio_get_result(PGconn *conn, int timeout_ms, int *timedout);

/* Non-zero when the command last sent has not produced its result yet
   (reads whatever arrived on the socket first). */
int pgio_busy(PGconn *conn);

/*
** Next row of a COPY OUT.  Returns its length (>0) and sets *row (free
** with PQfreemem); returns 0 when the COPY is over, with the command's
** final result in *final (caller clears; check it for errors); returns
** -1 when the connection failed (message in err).
*/
int pgio_copy_get(PGconn *conn, char **row, PGresult **final, char *err, size_t errlen);

/* Send COPY IN data (waits while libpq's buffer is full).  0 or -1 with
   a message in err. */
int pgio_copy_put(PGconn *conn, const char *data, size_t len, char *err, size_t errlen);

/* End a COPY IN: errmsg NULL commits it, otherwise the server aborts
   the COPY with that message.  Returns the final result (caller
   clears), NULL when the connection failed. */
PGresult *pgio_copy_end(PGconn *conn, const char *errmsg);

/* Leave COPY OUT mode early: cancel the COPY and discard what is left,
   so the connection can run other commands again. */
void pgio_copy_out_abort(PGconn *conn);

/* Discard every pending result (after an abandoned command). */
void pgio_drain(PGconn *conn);

#endif
