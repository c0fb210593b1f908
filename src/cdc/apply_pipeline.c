/*
** apply_pipeline.c
** The apply engine's pipeline: statement parameters, sending statements
** in libpq pipeline mode, the ring that matches each result to what was
** sent (errors with their table, rows not found, catalog answers,
** COMMIT results that complete a group in flight), reading results
** without deadlock, and leaving the pipeline for plain statements.
*/
#include "cdc/apply_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/log.h"

#define TEXTARRAYOID 1009
#define CHECK_EVERY 64            /* sends between flush/result checks */
#define MISSING_WARN_MAX 10       /* log this many missing rows, then count */

/* Whether the owner asked to stop waiting on the target (the abort
   flag of ApplyOptions). */
int apply_aborted (const Applier *a) {
  return a->abort_flag != NULL && *a->abort_flag;
}

/* Room for n statement parameters (values, lengths, formats, offsets). */
static void params_reserve (Applier *a, size_t n) {
  if (n > a->pcap) {
    size_t cap = a->pcap ? a->pcap : 32;
    while (cap < n)
      cap *= 2;
    a->pvals = xrealloc(a->pvals, cap * sizeof(*a->pvals));
    a->plens = xrealloc(a->plens, cap * sizeof(*a->plens));
    a->pfmts = xrealloc(a->pfmts, cap * sizeof(*a->pfmts));
    a->poffs = xrealloc(a->poffs, cap * sizeof(*a->poffs));
    a->pcap = cap;
  }
}

/* Parameter i from a tuple value ('n' gives NULL).  Values are copied
   into pbuf with a NUL; pointers are fixed up by params_finish(). */
void param_set (Applier *a, int i, const PgoValue *v) {
  params_reserve(a, (size_t)i + 1);
  if (v->kind == PGO_VAL_NULL || v->kind == PGO_VAL_UNCHANGED) {
    a->poffs[i] = (size_t)-1;
    a->plens[i] = 0;
    a->pfmts[i] = 0;
    return;
  }
  a->poffs[i] = a->pbuf.len;
  buf_append(&a->pbuf, v->data, v->len);
  buf_putc(&a->pbuf, '\0');
  a->plens[i] = (int)v->len;
  a->pfmts[i] = v->kind == PGO_VAL_BINARY ? 1 : 0;
}

/* Point pvals[0..n) into pbuf once every parameter was added (pbuf may
   have moved while growing); an offset of -1 is a NULL parameter. */
void params_finish (Applier *a, int n) {
  int i;
  for (i = 0; i < n; i++)
    a->pvals[i] = a->poffs[i] == (size_t)-1 ? NULL : a->pbuf.data + a->poffs[i];
}

/*
** The ring of statements sent in the pipeline whose results are not read
** yet, oldest first: results arrive in the same order, so the head says
** what each result belongs to (for error messages and row counts).
*/
void ring_push (Applier *a, char kind, char op, Rel *rel) {
  Pending *p;
  if (a->ring_len == a->ring_cap) {
    size_t cap = a->ring_cap ? a->ring_cap * 2 : 256, i;
    Pending *r = xmalloc(cap * sizeof(Pending));
    for (i = 0; i < a->ring_len; i++)
      r[i] = a->ring[(a->ring_head + i) % a->ring_cap];
    free(a->ring);
    a->ring = r;
    a->ring_cap = cap;
    a->ring_head = 0;
  }
  p = &a->ring[(a->ring_head + a->ring_len) % a->ring_cap];
  p->kind = kind;
  p->op = op;
  p->rel = rel;
  a->ring_len++;
}

/* Drop the oldest pending pipeline entry (its result was read). */
static void ring_pop (Applier *a) {
  a->ring_head = (a->ring_head + 1) % a->ring_cap;
  a->ring_len--;
  a->head_has_result = 0;
}

/* A libpq call failed on the connection itself: retryable. */
int apply_conn_broken (Applier *a, CdcError *err, const char *what) {
  cdc_err_from_pg(err, what, NULL, a->conn);
  err->kind = CDC_ERR_CONNECTION;
  err->retryable = 1;
  return -1;
}

/* The oldest group in flight is committed: drop it and tell the owner. */
static void group_committed (Applier *a) {
  Inflight g = a->fly[a->fly_head];
  a->fly_head = (a->fly_head + 1) % a->fly_cap;
  a->fly_len--;
  g.stats.missing = a->stats.missing;   /* results up to this COMMIT are all read */
  if (a->on_commit != NULL)
    a->on_commit(a->on_commit_ctx, g.end_lsn, g.commit_ts, &g.stats);
}

/* Handle one result for the ring head.  The first error is kept in
   pipe_err (with the table when known); after it, the server skips
   everything up to the next sync, so later results are
   PGRES_PIPELINE_ABORTED and nothing after it is committed. */
static int take_result (Applier *a, PGresult *res) {
  Pending *p = &a->ring[a->ring_head];
  ExecStatusType st = PQresultStatus(res);
  a->head_has_result = 1;
  if (p->kind == 'r' && st != PGRES_FATAL_ERROR) {
    a->catalog_pending--;
    if (st == PGRES_TUPLES_OK && !a->pipe_failed && p->rel->catalog == NULL) {
      p->rel->catalog = res;
      return 1;
    }
    return 0;
  }
  if (st == PGRES_FATAL_ERROR) {
    if (!a->pipe_failed) {
      a->pipe_failed = 1;
      cdc_err_from_pg(&a->pipe_err, p->kind == 'S' ? "apply (set-based)" : p->rel != NULL ? "apply"
                      : p->kind == 'C' ? "apply: COMMIT" : "apply statement", res, a->conn);
      if (p->rel != NULL) {
        Buf msg = BUF_INIT;
        strlcpy_(a->pipe_err.table, p->rel->display, sizeof(a->pipe_err.table));
        buf_printf(&msg, "%s (table %s)", a->pipe_err.message, p->rel->display);
        strlcpy_(a->pipe_err.message, msg.data, sizeof(a->pipe_err.message));
        buf_free(&msg);
      }
      if (p->kind == 'S')
        a->set_failed = p->rel;
    }
  } else if (a->pipe_failed || st == PGRES_PIPELINE_ABORTED) {
    if (!a->pipe_failed) {   /* aborted without a preceding error: cannot happen */
      a->pipe_failed = 1;
      cdc_err_set(&a->pipe_err, CDC_ERR_PROTOCOL, 1, "apply: pipeline aborted without an error");
    }
  } else if (p->kind == 'C') {
    if (strcmp(PQcmdStatus(res), "COMMIT") == 0 && a->fly_len > 0) {
      group_committed(a);
    } else {
      a->pipe_failed = 1;
      cdc_err_set(&a->pipe_err, CDC_ERR_SQL, 1, "apply: the target answered COMMIT with %s",
                  PQcmdStatus(res));
    }
  } else if (p->kind == 'c' && st == PGRES_COMMAND_OK && strcmp(PQcmdTuples(res), "0") == 0) {
    a->stats.missing++;
    if (a->stats.missing <= MISSING_WARN_MAX)
      log_warn("cdc: %s on %s found no row on the target%s", p->op == 'U' ? "UPDATE" : "DELETE",
               p->rel->display, a->stats.missing == MISSING_WARN_MAX ? " (further cases only counted)" : "");
  }
  return 0;
}

/* A statement failed earlier: its error, -1. */
int pipe_error (Applier *a, CdcError *err) {
  *err = a->pipe_err;
  return -1;
}

/*
** Read results.  'want' says how long: DRAIN_NOWAIT only what has
** arrived; DRAIN_ALL until nothing is pending (the ring must end with a
** sync); DRAIN_CATALOG until every catalog query is answered; n >= 0
** until at most n groups are in flight.  Waiting pushes
** the output out and polls in 1 s slices, honouring the abort flag;
** with timeout_ms >= 0 it waits one slice of that length at most, then
** reads what arrived and returns 0.  -1 for a broken connection, an
** abort or a statement error (the first one, from pipe_err).
*/
int pipe_drain (Applier *a, int want, int timeout_ms, CdcError *err) {
  int waited = 0;
  for (;;) {
    PGresult *res;
    if (a->pipe_failed && want != DRAIN_ALL)
      return pipe_error(a, err);
    if (a->ring_len == 0 || (want >= 0 && a->fly_len <= (size_t)want) ||
        (want == DRAIN_CATALOG && a->catalog_pending == 0))
      return a->pipe_failed ? pipe_error(a, err) : 0;
    if (!PQconsumeInput(a->conn))
      return apply_conn_broken(a, err, "apply connection");
    if (PQisBusy(a->conn)) {
      struct pollfd pfd;
      int fl, rc;
      if (want == DRAIN_NOWAIT || waited)
        return 0;
      fl = PQflush(a->conn);
      if (fl < 0)
        return apply_conn_broken(a, err, "apply connection");
      pfd.fd = PQsocket(a->conn);
      pfd.events = POLLIN | (fl == 1 ? POLLOUT : 0);
      pfd.revents = 0;
      rc = poll(&pfd, 1, timeout_ms >= 0 ? timeout_ms : 1000);
      if (rc < 0 && errno != EINTR)
        return apply_conn_broken(a, err, "apply connection");
      if (apply_aborted(a)) {
        cdc_err_set(err, CDC_ERR_CONNECTION, 1, "apply interrupted while waiting for the target");
        return -1;
      }
      waited = timeout_ms >= 0;   /* one slice, then what arrived */
      continue;
    }
    res = PQgetResult(a->conn);
    if (res == NULL) {
      if (a->ring[a->ring_head].kind == 's' || !a->head_has_result) {
        if (PQstatus(a->conn) != CONNECTION_OK)
          return apply_conn_broken(a, err, "apply connection");
        cdc_err_set(err, CDC_ERR_PROTOCOL, 1, "apply: pipeline results out of step");
        return -1;
      }
      ring_pop(a);
      continue;
    }
    if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
      PQclear(res);
      if (a->ring[a->ring_head].kind != 's') {
        cdc_err_set(err, CDC_ERR_PROTOCOL, 1, "apply: unexpected pipeline sync");
        return -1;
      }
      ring_pop(a);
      continue;
    }
    if (a->ring[a->ring_head].kind == 's') {
      PQclear(res);
      if (PQstatus(a->conn) != CONNECTION_OK)
        return apply_conn_broken(a, err, "apply connection");
      cdc_err_set(err, CDC_ERR_PROTOCOL, 1, "apply: result where a sync was expected");
      return -1;
    }
    if (!take_result(a, res))
      PQclear(res);
  }
}

/* Enter pipeline mode (non-blocking connection) if not already in it. */
int pipe_enter (Applier *a, CdcError *err) {
  if (a->pipeline)
    return 0;
  if (PQsetnonblocking(a->conn, 1) != 0 || PQenterPipelineMode(a->conn) != 1)
    return apply_conn_broken(a, err, "enter pipeline mode");
  a->pipeline = 1;
  return 0;
}

/* After each send: every CHECK_EVERY sends (or 1 MB of parameters),
   push the output out and read results, so neither side's buffers fill
   up (no deadlock, bounded memory).  A statement error seen there ends
   the group at once. */
int pipe_after_send (Applier *a, CdcError *err) {
  if (++a->since_check < CHECK_EVERY && a->pbuf.len < (1u << 20))
    return 0;
  a->since_check = 0;
  for (;;) {
    struct pollfd pfd;
    int fl = PQflush(a->conn);
    if (fl < 0)
      return apply_conn_broken(a, err, "apply connection");
    if (pipe_drain(a, DRAIN_NOWAIT, -1, err) != 0)
      return -1;
    if (fl == 0)
      return 0;
    pfd.fd = PQsocket(a->conn);
    pfd.events = POLLIN | POLLOUT;
    pfd.revents = 0;
    if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
      return apply_conn_broken(a, err, "apply connection");
    if (apply_aborted(a)) {
      cdc_err_set(err, CDC_ERR_CONNECTION, 1, "apply interrupted while sending to the target");
      return -1;
    }
  }
}

/* Send a parameterless statement through the pipeline; 'kind' is its
   ring entry's kind ('q', or 'S' for a set-based statement). */
int pipe_exec (Applier *a, const char *sql, char kind, Rel *rel, CdcError *err) {
  if (pipe_enter(a, err) != 0)
    return -1;
  if (!PQsendQueryParams(a->conn, sql, 0, NULL, NULL, NULL, NULL, 0))
    return apply_conn_broken(a, err, "apply: send");
  ring_push(a, kind, 0, rel);
  return pipe_after_send(a, err);
}

/* Send a statement with the parameters prepared in pvals. */
int pipe_exec_params (Applier *a, const char *sql, int n, CdcError *err) {
  if (pipe_enter(a, err) != 0)
    return -1;
  if (!PQsendQueryParams(a->conn, sql, n, NULL, a->pvals, NULL, NULL, 0))
    return apply_conn_broken(a, err, "apply: send");
  ring_push(a, 'q', 0, NULL);
  return pipe_after_send(a, err);
}

/* Send a set-based statement whose one parameter ($1, text[]) is the
   binary array built in a->arr. */
int pipe_exec_array (Applier *a, const char *sql, Rel *rel, CdcError *err) {
  static const Oid types[1] = {TEXTARRAYOID};
  static const int fmts[1] = {1};
  const char *vals[1];
  int lens[1];
  if (pipe_enter(a, err) != 0)
    return -1;
  vals[0] = a->arr.data;
  lens[0] = (int)a->arr.len;
  if (!PQsendQueryParams(a->conn, sql, 1, types, vals, lens, fmts, 0))
    return apply_conn_broken(a, err, "apply: send");
  ring_push(a, 'S', 0, rel);
  a->since_check = CHECK_EVERY;   /* push big parameters out at once */
  return pipe_after_send(a, err);
}

/* Sync and wait for every result; statement errors come back here. */
static int pipe_sync (Applier *a, CdcError *err) {
  if (!a->pipeline)
    return 0;
  if (PQpipelineSync(a->conn) != 1)
    return apply_conn_broken(a, err, "apply: pipeline sync");
  ring_push(a, 's', 0, NULL);
  return pipe_drain(a, DRAIN_ALL, -1, err);
}

/* Leave pipeline mode (after a sync) for plain queries: waits for every
   result, groups in flight included. */
static int pipe_leave (Applier *a, CdcError *err) {
  if (!a->pipeline)
    return 0;
  if (pipe_sync(a, err) != 0)
    return -1;
  if (PQexitPipelineMode(a->conn) != 1 || PQsetnonblocking(a->conn, 0) != 0)
    return apply_conn_broken(a, err, "exit pipeline mode");
  a->pipeline = 0;
  return 0;
}

/* A statement outside the pipeline (left first); rows go to *out when
   asked. */
int apply_exec_params (Applier *a, const char *sql, int n, const char *const *vals,
                        PGresult **out, const char *what, CdcError *err) {
  if (pipe_leave(a, err) != 0)
    return -1;
  return apply_exec(a->conn, sql, n, vals, out, what, err);
}
