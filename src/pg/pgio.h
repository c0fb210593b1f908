/*
** pgio.h
** Waiting on libpq connections without blocking forever: results of a
** command sent with PQsend*, COPY OUT rows and COPY IN data, cancel.
** Every wait polls the socket in short slices so a SIGINT/SIGTERM
** (util/interrupt.h) cancels the running statement instead of leaving
** the process stuck; the cancelled statement then ends with SQLSTATE
** 57014 like any other error.  pgio_wait is the one cancellable wait
** (poll in slices, cancel once when a stop callback says so, bounded
** by a deadline and a grace after the cancel); pgio_exec is the
** send-wait-drain of one statement text built on it.  No Lua here.
*/
#ifndef PGTIDE_PGIO_H
#define PGTIDE_PGIO_H

#include <stddef.h>
#include <libpq-fe.h>

/* Milliseconds on the monotonic clock (deadlines of pgio_wait). */
long long pgio_now_ms(void);

/* What pgio_wait returns. */
enum {
  PGIO_READY = 1,       /* PQgetResult will not block */
  PGIO_TIMEOUT = 0,     /* the deadline passed; the command keeps running */
  PGIO_LOST = -1,       /* the connection failed: PQerrorMessage says why */
  PGIO_NO_ANSWER = -2   /* cancelled, and no answer within grace_ms */
};

/*
** How to wait (set the fields, zero the rest).  'stop' (may be NULL) is
** asked at every slice until it returns non-zero; then a cancel request
** is sent once and 'cancelled' is set (the statement then ends with
** SQLSTATE 57014).  The struct may be reused for the next wait of the
** same command: a cancel already sent is not sent again.
*/
typedef struct PgioWait {
  int (*stop)(void *ud);   /* non-zero: cancel the running statement */
  void *ud;
  int slice_ms;            /* longest poll between checks (<= 0: 100) */
  long long deadline_ms;   /* pgio_now_ms() time for PGIO_TIMEOUT; <= 0: none */
  int grace_ms;            /* after the cancel, PGIO_NO_ANSWER after this; <= 0: none */
  long long cancelled_at;  /* out: pgio_now_ms() of the cancel, 0 if none */
  int cancelled;           /* out: a cancel request was sent */
} PgioWait;

/*
** Wait until the command last sent on 'conn' has its next result ready,
** as 'w' says.  Returns one of PGIO_READY, PGIO_TIMEOUT, PGIO_LOST,
** PGIO_NO_ANSWER.  Never raises; a failed cancel request is logged.
*/
int pgio_wait(PGconn *conn, PgioWait *w);

/* A stop callback for pgio_wait: SIGINT/SIGTERM arrived
   (util/interrupt.h); logs that the statement is being cancelled. */
int pgio_stop_on_interrupt(void *ud);

/*
** Send one statement text (which may hold several statements) on an
** idle connection and collect all its results, waiting in slices of
** 200 ms so that when stop(ud) becomes true the statement is cancelled
** (*cancelled set).  Returns 0, or -1 with the last error's message
** (pgconn_result_error) in err and its SQLSTATE in sqlstate ("" if none).
*/
int pgio_exec(PGconn *conn, const char *sql, int (*stop)(void *ud), void *ud,
              char *err, size_t errlen, char sqlstate[6], int *cancelled);

/* Wait up to 'ms' for input on conn and read what arrived.  0, or -1
   when the connection failed. */
int pgio_wait_input(PGconn *conn, int ms);

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
