/*
** pgio.c
** Interruptible waits on libpq connections (see pgio.h).
*/
#include "pg/pgio.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pg/pgconn.h"
#include "util/buf.h"
#include "util/interrupt.h"
#include "util/log.h"
#include "util/redact.h"

#define SLICE_MS 100   /* how often a wait looks at the interrupt flag */

/* Monotonic clock in milliseconds (see pgio.h). */
long long pgio_now_ms (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Ask the server to cancel what conn runs (a separate cancel
   connection); 0 when delivered, -1 with a message in err. */
int pgio_cancel (PGconn *conn, char *err, size_t errlen) {
  char buf[256];
  PGcancel *c;
  int ok;
  if (conn == NULL) {
    snprintf(err, errlen, "no connection");
    return -1;
  }
  c = PQgetCancel(conn);
  if (c == NULL) {
    snprintf(err, errlen, "cannot cancel: the connection is not open");
    return -1;
  }
  buf[0] = '\0';
  ok = PQcancel(c, buf, sizeof(buf));
  PQfreeCancel(c);
  if (!ok) {
    char *m = redact_str(buf);
    snprintf(err, errlen, "cancel request failed: %s", m);
    free(m);
    return -1;
  }
  return 0;
}

/*
** Wait until the socket is readable (or writable) for at most one
** slice.  Returns -1 when the socket is gone, 0 otherwise.
*/
static int wait_socket (PGconn *conn, int for_write, int ms) {
  struct pollfd p;
  int r;
  p.fd = PQsocket(conn);
  if (p.fd < 0)
    return -1;
  p.events = for_write ? POLLOUT : POLLIN;
  p.revents = 0;
  r = poll(&p, 1, ms);
  if (r < 0 && errno != EINTR)
    return -1;
  return 0;
}

/* See pgio.h: the interrupt flag, logged when it stops a wait. */
int pgio_stop_on_interrupt (void *ud) {
  (void)ud;
  if (!interrupt_requested())
    return 0;
  log_warn("interrupted: cancelling the running statement");
  return 1;
}

/*
** Ask w->stop once more, unless a cancel was already sent; when it says
** stop, send the cancel request (a failure is logged) and remember it.
*/
static void cancel_on_stop (PGconn *conn, PgioWait *w) {
  char err[300];
  if (w->cancelled || w->stop == NULL || !w->stop(w->ud))
    return;
  w->cancelled = 1;
  w->cancelled_at = pgio_now_ms();
  if (pgio_cancel(conn, err, sizeof(err)) != 0)
    log_warn("%s", err);
}

/*
** See pgio.h.  Each slice reads what arrived, returns when a result is
** ready, asks the stop callback, checks the deadline and the grace after
** a cancel, then polls the socket for at most one slice.
*/
int pgio_wait (PGconn *conn, PgioWait *w) {
  int slice = w->slice_ms > 0 ? w->slice_ms : SLICE_MS;
  for (;;) {
    int ms = slice;
    long long now;
    if (PQconsumeInput(conn) == 0)
      return PGIO_LOST;
    if (!PQisBusy(conn))
      return PGIO_READY;
    cancel_on_stop(conn, w);
    now = pgio_now_ms();
    if (w->deadline_ms > 0) {
      long long left = w->deadline_ms - now;
      if (left <= 0)
        return PGIO_TIMEOUT;
      if (left < ms)
        ms = (int)left;
    }
    if (w->cancelled && w->grace_ms > 0 && now - w->cancelled_at > w->grace_ms)
      return PGIO_NO_ANSWER;
    if (wait_socket(conn, 0, ms) != 0)
      return PGIO_LOST;
  }
}

/* See pgio.h: one poll of at most ms, then PQconsumeInput. */
int pgio_wait_input (PGconn *conn, int ms) {
  if (wait_socket(conn, 0, ms) != 0)
    return -1;
  return PQconsumeInput(conn) ? 0 : -1;
}

/*
** See pgio.h: sends the text, then collects every result, waiting in
** slices of 200 ms and cancelling once when stop(ud) turns true.  The
** last failed statement's message and SQLSTATE are reported; a lost
** connection is reported when no statement failed before.
*/
int pgio_exec (PGconn *conn, const char *sql, int (*stop)(void *ud), void *ud,
               char *err, size_t errlen, char sqlstate[6], int *cancelled) {
  PgioWait w;
  PGresult *res;
  int failed = 0;
  memset(&w, 0, sizeof(w));
  w.stop = stop;
  w.ud = ud;
  w.slice_ms = 200;
  *cancelled = 0;
  sqlstate[0] = '\0';
  if (!PQsendQuery(conn, sql)) {
    pgconn_result_error(NULL, conn, err, errlen);
    return -1;
  }
  for (;;) {
    pgio_wait(conn, &w);   /* a lost connection: PQgetResult reports it */
    *cancelled = w.cancelled;
    res = PQgetResult(conn);
    if (res == NULL)
      break;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK &&
        PQresultStatus(res) != PGRES_EMPTY_QUERY) {
      const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
      pgconn_result_error(res, conn, err, errlen);
      strlcpy_(sqlstate, s ? s : "", 6);
      failed = 1;
    }
    PQclear(res);
    if (PQstatus(conn) != CONNECTION_OK) {
      if (!failed)
        pgconn_result_error(NULL, conn, err, errlen);
      failed = 1;
      break;
    }
  }
  return failed ? -1 : 0;
}

static int is_error (const PGresult *res) {
  return res != NULL && (PQresultStatus(res) == PGRES_FATAL_ERROR ||
                         PQresultStatus(res) == PGRES_BAD_RESPONSE);
}

int pgio_busy (PGconn *conn) {
  if (PQconsumeInput(conn) == 0)
    return 0;  /* broken: PQgetResult will report it without blocking */
  return PQisBusy(conn);
}

/*
** Collect the results of the command last sent (see pgio.h): the first
** error, else the last result; a COPY start at once.  The first wait is
** bounded by timeout_ms (NULL, *timedout = 1 on timeout); an interrupt
** sends a cancel request once.  NULL with *timedout = 0: the connection
** failed.  Caller clears the result.
*/
PGresult *pgio_get_result (PGconn *conn, int timeout_ms, int *timedout) {
  PGresult *keep = NULL, *res;
  PgioWait w;
  memset(&w, 0, sizeof(w));
  w.stop = pgio_stop_on_interrupt;
  w.deadline_ms = timeout_ms >= 0 ? pgio_now_ms() + timeout_ms : 0;
  *timedout = 0;
  for (;;) {
    int r = pgio_wait(conn, &w);
    if (r == PGIO_TIMEOUT) {
      *timedout = 1;
      return NULL;
    }
    if (r != PGIO_READY) {  /* connection failed: a pending error result may say why */
      res = PQgetResult(conn);
      if (res == NULL)
        return keep;
      if (keep == NULL)
        keep = res;
      else
        PQclear(res);
      pgio_drain(conn);
      return keep;
    }
    w.deadline_ms = 0;   /* the deadline bounds the first result only */
    res = PQgetResult(conn);
    if (res == NULL)
      return keep;
    switch (PQresultStatus(res)) {
      case PGRES_COPY_IN:
      case PGRES_COPY_OUT:
      case PGRES_COPY_BOTH:
        PQclear(keep);
        return res;
      default:
        if (is_error(keep)) {
          PQclear(res);  /* the first error is the one that explains */
        } else {
          PQclear(keep);
          keep = res;
        }
        break;
    }
  }
}

/* Next COPY OUT row (see pgio_copy_get), the wait cancelling the COPY
   when stop (may be NULL) says so. */
static int copy_get (PGconn *conn, char **row, PGresult **final, char *err, size_t errlen,
                     int (*stop)(void *ud)) {
  PgioWait w;
  memset(&w, 0, sizeof(w));
  w.stop = stop;
  *row = NULL;
  *final = NULL;
  for (;;) {
    int n = PQgetCopyData(conn, row, 1);
    if (n > 0)
      return n;
    if (n == -1) {  /* COPY done: collect its final result */
      int timedout;
      *final = pgio_get_result(conn, -1, &timedout);
      return 0;
    }
    if (n == -2) {
      char *m = redact_str(PQerrorMessage(conn));
      snprintf(err, errlen, "COPY failed: %s", m);
      free(m);
      return -1;
    }
    /* n == 0: nothing buffered yet */
    cancel_on_stop(conn, &w);
    if (wait_socket(conn, 0, SLICE_MS) != 0 || PQconsumeInput(conn) == 0) {
      char *m = redact_str(PQerrorMessage(conn));
      snprintf(err, errlen, "COPY failed: %s", m);
      free(m);
      return -1;
    }
  }
}

/* Next COPY OUT row (see pgio.h): its length with *row (PQfreemem), 0 at
   the end with the final result in *final, -1 on a lost connection.
   SIGINT/SIGTERM cancels the COPY. */
int pgio_copy_get (PGconn *conn, char **row, PGresult **final, char *err, size_t errlen) {
  return copy_get(conn, row, final, err, errlen, pgio_stop_on_interrupt);
}

/* Send COPY IN data in chunks of at most 1 GB, waiting while libpq's
   buffer is full.  0, or -1 with a message in err. */
int pgio_copy_put (PGconn *conn, const char *data, size_t len, char *err, size_t errlen) {
  while (len > 0) {
    int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
    int r = PQputCopyData(conn, data, chunk);
    if (r == 1) {
      data += chunk;
      len -= (size_t)chunk;
    } else if (r == 0) {  /* only in nonblocking mode: wait for room */
      if (wait_socket(conn, 1, SLICE_MS) != 0)
        r = -1;
    }
    if (r < 0) {
      char *m = redact_str(PQerrorMessage(conn));
      snprintf(err, errlen, "COPY failed: %s", m);
      free(m);
      return -1;
    }
  }
  return 0;
}

PGresult *pgio_copy_end (PGconn *conn, const char *errmsg) {
  int timedout;
  if (PQputCopyEnd(conn, errmsg) < 0)
    return NULL;
  return pgio_get_result(conn, -1, &timedout);
}

/* Leave COPY OUT early: cancel the COPY and discard what is left. */
void pgio_copy_out_abort (PGconn *conn) {
  char err[300], *row;
  PGresult *final;
  int n;
  if (pgio_cancel(conn, err, sizeof(err)) != 0)
    log_debug("%s", err);
  while ((n = copy_get(conn, &row, &final, err, sizeof(err), NULL)) > 0)
    PQfreemem(row);
  PQclear(final);
  pgio_drain(conn);
}

/* Discard every pending result (after an abandoned command). */
void pgio_drain (PGconn *conn) {
  PGresult *res;
  int guard = 0;
  while (guard++ < 1000 && (res = PQgetResult(conn)) != NULL) {
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    if (st == PGRES_COPY_IN)
      PQputCopyEnd(conn, "abandoned");
    else if (st == PGRES_COPY_OUT)
      break;  /* caller uses pgio_copy_out_abort for COPY OUT */
  }
}
