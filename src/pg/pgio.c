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

#include "util/buf.h"
#include "util/interrupt.h"
#include "util/log.h"
#include "util/redact.h"

#define SLICE_MS 100   /* how often a wait looks at the interrupt flag */

static long long now_ms (void) {
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

/*
** Sends a cancel the first time the interrupt flag is seen during this
** wait; '*sent' remembers that it was sent.
*/
static void cancel_on_interrupt (PGconn *conn, int *sent) {
  char err[300];
  if (*sent || !interrupt_requested())
    return;
  *sent = 1;
  log_warn("interrupted: cancelling the running statement");
  if (pgio_cancel(conn, err, sizeof(err)) != 0)
    log_warn("%s", err);
}

/*
** Wait until PQgetResult would not block.  'deadline' < 0: no bound.
** Returns 1 ready, 0 timed out, -1 connection failed.
*/
static int wait_ready (PGconn *conn, long long deadline, int *cancelled) {
  for (;;) {
    int ms = SLICE_MS;
    if (PQconsumeInput(conn) == 0)
      return -1;
    if (!PQisBusy(conn))
      return 1;
    cancel_on_interrupt(conn, cancelled);
    if (deadline >= 0) {
      long long left = deadline - now_ms();
      if (left <= 0)
        return 0;
      if (left < ms)
        ms = (int)left;
    }
    if (wait_socket(conn, 0, ms) != 0)
      return -1;
  }
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
  int cancelled = 0, first = 1;
  long long deadline = timeout_ms >= 0 ? now_ms() + timeout_ms : -1;
  *timedout = 0;
  for (;;) {
    int r = wait_ready(conn, first ? deadline : -1, &cancelled);
    if (r == 0) {
      *timedout = 1;
      return NULL;
    }
    if (r < 0) {  /* connection failed: a pending error result may say why */
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
    first = 0;
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

/* Next COPY OUT row (see pgio.h): its length with *row (PQfreemem), 0 at
   the end with the final result in *final, -1 on a lost connection. */
int pgio_copy_get (PGconn *conn, char **row, PGresult **final, char *err, size_t errlen) {
  int cancelled = 0;
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
    cancel_on_interrupt(conn, &cancelled);
    if (wait_socket(conn, 0, SLICE_MS) != 0 || PQconsumeInput(conn) == 0) {
      char *m = redact_str(PQerrorMessage(conn));
      snprintf(err, errlen, "COPY failed: %s", m);
      free(m);
      return -1;
    }
  }
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
  while ((n = pgio_copy_get(conn, &row, &final, err, sizeof(err))) > 0)
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
