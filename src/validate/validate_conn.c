/*
** validate_conn.c
** The connection wrapper of the validation (VConn): connections opened
** with session settings that make every value's text form identical on
** both servers, statements sent asynchronously so a worker can talk to
** both sides at once, and waits that are bounded (statement_timeout
** plus a client-side margin), cancel the statement on an interrupt, and
** report lost connections.  Also the clock the other files use.
**
** Every function that can fail returns -1 (or NULL) with a redacted
** message, prefixed with the side ("source: ..."), in err.
*/
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <linux/tcp.h>

#include "pg/pgconn.h"
#include "pg/pgio.h"
#include "util/interrupt.h"
#include "util/redact.h"
#include "validate/validate_internal.h"

/* Monotonic clock, seconds. */
double vnow (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long now_ms (void) {
  return (long long)(vnow() * 1000.0);
}

/* Sleep (not interruptible: callers sleep in short slices). */
void vsleep_ms (int ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/* Bytes received on the connection's TCP socket, -1 when not TCP. */
static int64_t socket_bytes_received (PGconn *c) {
  struct tcp_info ti;
  socklen_t len = sizeof(ti);
  int fd = c != NULL ? PQsocket(c) : -1;
  memset(&ti, 0, sizeof(ti));
  if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
    return -1;
  if (len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
    return -1;
  return (int64_t)ti.tcpi_bytes_received;
}

/*
** Session settings that make text forms identical on both servers:
** every value is hashed and compared as its output text.
*/
static const char *SESSION_SQL =
  "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
  "SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; "
  "SET search_path = pg_catalog; SET lc_monetary = 'C'; SET xmloption = content; "
  "SET standard_conforming_strings = on; SET idle_in_transaction_session_timeout = 0";

/*
** Open and configure a connection for o's run.  Every transaction on it
** is read-only: validation never writes, and takes no lock beyond what
** reading does (o->lock_timeout_ms bounds the wait for one).  Waits on
** it are bounded by o->statement_timeout_s plus a minute (the server's
** own statement_timeout should fire first); o->cancel cancels them.
** Returns 0, or -1 with a message in err (vc is then closed).
*/
int vconn_open (VConn *vc, const char *conninfo, const char *label, const VOptions *o,
                char *err, size_t errlen) {
  char msg[ERRLEN];
  Buf sql = BUF_INIT;
  int rc;
  int statement_timeout_s = o->statement_timeout_s;
  memset(vc, 0, sizeof(*vc));
  vc->label = label;
  vc->timeout_ms = statement_timeout_s > 0 ? statement_timeout_s * 1000 + 60000 : 0;
  vc->cancel = o->cancel;
  vc->cancel_ud = o->cancel_ud;
  vc->c = pgconn_open(conninfo, label, PGCONN_NORMAL, err, errlen);
  if (vc->c == NULL)
    return -1;
  buf_puts(&sql, SESSION_SQL);
  buf_printf(&sql, "; SET statement_timeout = %d; SET lock_timeout = %d; SET default_transaction_read_only = on",
             statement_timeout_s * 1000, o->lock_timeout_ms > 0 ? o->lock_timeout_ms : 0);
  if (PQserverVersion(vc->c) >= 110000)
    buf_puts(&sql, "; SET jit = off");   /* compiling per chunk costs more than it saves */
  rc = pgsql_exec(vc->c, buf_cstr(&sql), msg, sizeof(msg), NULL);
  buf_free(&sql);
  if (rc != 0) {
    snprintf(err, errlen, "%s: session setup failed: %s", label, msg);
    PQfinish(vc->c);
    vc->c = NULL;
    return -1;
  }
  return 0;
}

/* Close (idempotent); adds the bytes received to *total when given. */
void vconn_close (VConn *vc, int64_t *total) {
  if (vc->c != NULL) {
    int64_t n = socket_bytes_received(vc->c);
    if (n > 0)
      vc->bytes = n;
    PQfinish(vc->c);
    vc->c = NULL;
    if (total != NULL)
      *total += vc->bytes;
  }
}

/* What vwait's stop callback looks at: the connection and when the
   wait began. */
typedef struct VWaitCtx {
  VConn *vc;
  long long start;
} VWaitCtx;

/* Stop callback of vwait: SIGINT/SIGTERM, vc->cancel, or vc->timeout_ms
   passed since the wait began. */
static int vwait_stop (void *ud) {
  VWaitCtx *x = ud;
  VConn *vc = x->vc;
  return interrupt_requested() || (vc->cancel != NULL && vc->cancel(vc->cancel_ud)) ||
         (vc->timeout_ms > 0 && now_ms() - x->start > vc->timeout_ms);
}

/*
** Wait until the next result can be read without blocking (pgio_wait).
** Cancels the statement on SIGINT/SIGTERM, when vc->cancel says so, or
** after vc->timeout_ms (then waits at most 30 s more for the server to
** answer).  Returns 0, or -1 with a message when the connection failed.
*/
static int vwait (VConn *vc, char *err, size_t errlen) {
  VWaitCtx x;
  PgioWait w;
  int rc;
  if (!PQisBusy(vc->c))
    return 0;
  x.vc = vc;
  x.start = now_ms();
  memset(&w, 0, sizeof(w));
  w.stop = vwait_stop;
  w.ud = &x;
  w.slice_ms = 200;
  w.grace_ms = 30000;
  rc = pgio_wait(vc->c, &w);
  if (rc == PGIO_NO_ANSWER) {
    snprintf(err, errlen, "%s: no answer 30 s after cancelling the statement", vc->label);
    return -1;
  }
  if (rc != PGIO_READY) {
    char *m = redact_str(PQerrorMessage(vc->c));
    snprintf(err, errlen, "%s: connection lost: %s", vc->label, m);
    free(m);
    return -1;
  }
  return 0;
}

/* The message for a PQsend* call that failed at once; returns -1. */
static int send_failed (VConn *vc, char *err, size_t errlen) {
  char *m = redact_str(PQerrorMessage(vc->c));
  snprintf(err, errlen, "%s: cannot send query: %s", vc->label, m);
  free(m);
  return -1;
}

/* Send a parameterized statement (text parameters, n may be 0);
   'single_row' streams its rows (collect them with vnext). */
int vsend (VConn *vc, const char *sql, int n, const char *const *params, int single_row,
                  char *err, size_t errlen) {
  if (!PQsendQueryParams(vc->c, sql, n, NULL, params, NULL, NULL, 0))
    return send_failed(vc, err, errlen);
  if (single_row)
    PQsetSingleRowMode(vc->c);
  return 0;
}

/* Discard what is left of the current command (errors ignored). */
void vdrain (VConn *vc) {
  PGresult *res;
  char err[ERRLEN];
  for (;;) {
    if (vwait(vc, err, sizeof(err)) != 0)
      return;
    res = PQgetResult(vc->c);
    if (res == NULL)
      return;
    PQclear(res);
  }
}

/* A result that carries no error. */
static int res_ok (const PGresult *res) {
  ExecStatusType s = PQresultStatus(res);
  return s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK || s == PGRES_SINGLE_TUPLE;
}

/* The server's error of 'res' as "side: message" (redacted). */
static void res_error (VConn *vc, const PGresult *res, char *err, size_t errlen) {
  char msg[ERRLEN];
  pgconn_result_error(res, vc->c, msg, sizeof(msg));
  snprintf(err, errlen, "%s: %s", vc->label, msg);
}

/* Collect the complete result of the command sent last (caller clears);
   with several statements, the first failure or else the first result. */
PGresult *vcollect (VConn *vc, char *err, size_t errlen) {
  PGresult *keep = NULL, *res;
  for (;;) {
    if (vwait(vc, err, errlen) != 0) {
      PQclear(keep);
      return NULL;
    }
    res = PQgetResult(vc->c);
    if (res == NULL)
      break;
    if (keep == NULL || (res_ok(keep) && !res_ok(res))) {
      PQclear(keep);
      keep = res;
    } else {
      PQclear(res);
    }
  }
  if (keep == NULL) {
    snprintf(err, errlen, "%s: no result", vc->label);
    return NULL;
  }
  if (!res_ok(keep)) {
    res_error(vc, keep, err, errlen);
    PQclear(keep);
    return NULL;
  }
  return keep;
}

/*
** Next row of a single-row-mode command: returns a result holding one
** row, or NULL at the end (*failed = 0) or on error (*failed = 1, the
** command drained, message in err).
*/
PGresult *vnext (VConn *vc, int *failed, char *err, size_t errlen) {
  PGresult *res;
  *failed = 0;
  for (;;) {
    if (vwait(vc, err, errlen) != 0) {
      *failed = 1;
      return NULL;
    }
    res = PQgetResult(vc->c);
    if (res == NULL)
      return NULL;
    if (PQresultStatus(res) == PGRES_SINGLE_TUPLE)
      return res;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {   /* end marker */
      PQclear(res);
      continue;
    }
    res_error(vc, res, err, errlen);
    PQclear(res);
    *failed = 1;
    vdrain(vc);
    return NULL;
  }
}

/* Send and collect one statement (caller clears the result). */
PGresult *vquery (VConn *vc, const char *sql, int n, const char *const *params,
                         char *err, size_t errlen) {
  if (vsend(vc, sql, n, params, 0, err, errlen) != 0)
    return NULL;
  return vcollect(vc, err, errlen);
}

/* Run one or more statements without parameters (simple protocol). */
int vexec (VConn *vc, const char *sql, char *err, size_t errlen) {
  PGresult *res;
  if (!PQsendQuery(vc->c, sql))
    return send_failed(vc, err, errlen);
  res = vcollect(vc, err, errlen);
  if (res == NULL)
    return -1;
  PQclear(res);
  return 0;
}

/* Closed or broken: the run cannot go on with it. */
int vconn_broken (const VConn *vc) {
  return vc->c == NULL || PQstatus(vc->c) != CONNECTION_OK;
}

/* Send one statement to each side; on failure nothing is left running. */
int vsend_pair (VConn *s, VConn *g, const char *qs, int ns, const char **ps,
                      const char *qt, int nt, const char **pt, int single_row,
                      char *err, size_t errlen) {
  if (vsend(s, qs, ns, ps, single_row, err, errlen) != 0)
    return -1;
  if (vsend(g, qt, nt, pt, single_row, err, errlen) != 0) {
    vdrain(s);
    return -1;
  }
  return 0;
}

/* Both sides' complete results (the caller clears them); on error both
   are NULL and err holds the first failure. */
int vcollect_pair (VConn *s, VConn *g, PGresult **rs, PGresult **rt,
                         char *err, size_t errlen) {
  char err2[ERRLEN];
  *rs = vcollect(s, err, errlen);
  *rt = vcollect(g, err2, sizeof(err2));
  if (*rs == NULL || *rt == NULL) {
    if (*rs != NULL)
      strlcpy_(err, err2, errlen);
    PQclear(*rs);
    PQclear(*rt);
    *rs = *rt = NULL;
    return -1;
  }
  return 0;
}

/* Empty statements for both sides, with room for maxparams parameters
   each. */
void vpair_init (VPair *p, int maxparams) {
  int side;
  for (side = 0; side < 2; side++) {
    buf_init(&p->sql[side]);
    p->pv[side] = xcalloc((size_t)maxparams + 1, sizeof(char *));
    p->np[side] = 0;
  }
}

/* Free both statements and parameter arrays (not the values). */
void vpair_free (VPair *p) {
  int side;
  for (side = 0; side < 2; side++) {
    buf_free(&p->sql[side]);
    free(p->pv[side]);
    p->pv[side] = NULL;
  }
}

/* Send each side its statement ('single_row': stream the rows). */
int vpair_send (VPair *p, VConn *s, VConn *g, int single_row, char *err, size_t errlen) {
  return vsend_pair(s, g, buf_cstr(&p->sql[0]), p->np[0], p->pv[0],
                    buf_cstr(&p->sql[1]), p->np[1], p->pv[1], single_row, err, errlen);
}

/* Send and collect both: the two servers work at the same time. */
int vpair_run (VPair *p, VConn *s, VConn *g, PGresult **rs, PGresult **rt,
               char *err, size_t errlen) {
  *rs = *rt = NULL;
  if (vpair_send(p, s, g, 0, err, errlen) != 0)
    return -1;
  return vcollect_pair(s, g, rs, rt, err, errlen);
}

