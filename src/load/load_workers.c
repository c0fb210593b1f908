/*
** load_workers.c
** The worker threads: their source sessions inside the shared
** snapshot and their target sessions, one unit copied per transaction
** (TRUNCATE or DELETE, then the COPY relay, then COMMIT), lost
** connections retried, the first failure recorded, and the choice of
** the next piece of work (statements, units, then checks).
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "load/copy_relay.h"
#include "load/load_internal.h"
#include "pg/pgsql.h"

/* Session settings shared by both sides: a stable text representation
   for text-format COPY, and no timeouts cutting a long COPY short. */
int fl_session_setup (PGconn *conn, const char *encoding, int target, char *err, size_t errlen) {
  Buf q = BUF_INIT;
  int rc;
  buf_puts(&q, "SET statement_timeout = 0; SET lock_timeout = 0;"
               " SET idle_in_transaction_session_timeout = 0;"
               " SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';"
               " SET extra_float_digits = 3; SET TimeZone = 'UTC';");
  if (encoding[0] != '\0')
    buf_printf(&q, " SET client_encoding = '%s';", encoding);
  if (target)
    buf_puts(&q, " SET synchronous_commit = off;");
  rc = pgsql_exec(conn, buf_cstr(&q), err, errlen, NULL);
  buf_free(&q);
  if (rc == 0 && target) {
    /* triggers present on the target (schema-first) must not rewrite
       copied rows; needs superuser, so a refusal is not an error */
    PGresult *res = PQexec(conn, "SET session_replication_role = replica");
    PQclear(res);
  }
  return rc;
}

/* Open a source connection inside the shared snapshot. */
PGconn *fl_open_source (FullLoad *fl, char *err, size_t errlen) {
  char e[PGCONN_ERRLEN];
  Buf q = BUF_INIT;
  PGconn *c = pgconn_open(fl->source, "source", PGCONN_NORMAL, err, errlen);
  if (c == NULL)
    return NULL;
  buf_puts(&q, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;");
  if (fl->snapshot != NULL)
    buf_printf(&q, " SET TRANSACTION SNAPSHOT '%s';", fl->snapshot);
  if (fl_session_setup(c, fl->encoding, 0, e, sizeof(e)) < 0) {
    snprintf(err, errlen, "source session setup failed: %s", e);
    PQfinish(c);
    buf_free(&q);
    return NULL;
  }
  if (pgsql_exec(c, buf_cstr(&q), e, sizeof(e), NULL) < 0) {
    snprintf(err, errlen, "cannot import snapshot %s on the source: %s%s", fl->snapshot, e,
             strstr(e, "invalid snapshot") ? " (the transaction or replication connection"
             " that exported it has ended; it must stay open for the whole load)" : "");
    PQfinish(c);
    buf_free(&q);
    return NULL;
  }
  buf_free(&q);
  return c;
}

/* A worker's target connection, with the load's session settings.
   NULL with err. */
PGconn *fl_open_target (FullLoad *fl, char *err, size_t errlen) {
  char e[PGCONN_ERRLEN];
  PGconn *c = pgconn_open(fl->target, "target", PGCONN_NORMAL, err, errlen);
  if (c == NULL)
    return NULL;
  if (fl_session_setup(c, fl->encoding, 1, e, sizeof(e)) < 0) {
    snprintf(err, errlen, "target session setup failed: %s", e);
    PQfinish(c);
    return NULL;
  }
  return c;
}

/* Build the two COPY statements of a unit. */
static void unit_copy_sql (PGconn *conn, const FlUnit *u, Buf *out_sql, Buf *in_sql) {
  char *qn = PQescapeIdentifier(conn, u->nspname, strlen(u->nspname));
  char *qr = PQescapeIdentifier(conn, u->relname, strlen(u->relname));
  const char *fmt = u->binary ? "FORMAT binary" : "FORMAT text";
  int cols = u->columns[0] != '\0';
  if (u->where != NULL)
    buf_printf(out_sql, "COPY (SELECT %s FROM ONLY %s.%s WHERE %s) TO STDOUT (%s)",
               u->columns, qn, qr, u->where, fmt);
  else
    buf_printf(out_sql, "COPY %s.%s%s%s%s TO STDOUT (%s)", qn, qr, cols ? " (" : "",
               u->columns, cols ? ")" : "", fmt);
  buf_printf(in_sql, "COPY %s.%s%s%s%s FROM STDIN (%s%s)", qn, qr, cols ? " (" : "",
             u->columns, cols ? ")" : "", fmt, u->kind == FL_WHOLE ? ", FREEZE" : "");
  PQfreemem(qn);
  PQfreemem(qr);
}

/* What a unit attempt ended with. */
typedef enum UnitResult { UNIT_OK, UNIT_STOPPED, UNIT_RETRY, UNIT_FAILED } UnitResult;

static int conn_lost (PGconn *c) {
  return c == NULL || PQstatus(c) != CONNECTION_OK;
}

/*
** Copy one unit on the worker's connections.  On a lost connection the
** unit may be retried (UNIT_RETRY) unless the loss happened while
** committing a CTID range (the commit may have happened: the table
** cannot be cleaned by range, so the load fails instead).
*/
static UnitResult run_unit (FullLoad *fl, FlUnit *u, PGconn *src, PGconn *dst, char *err,
                            size_t errlen, char sqlstate[6]) {
  Buf out_sql = BUF_INIT, in_sql = BUF_INIT, pre = BUF_INIT;
  CopyRelayResult r;
  CopyRelayStatus st;
  char e[PGCONN_ERRLEN + 64];
  double t = fl_now_s();
  char *qn = PQescapeIdentifier(dst, u->nspname, strlen(u->nspname));
  char *qr = PQescapeIdentifier(dst, u->relname, strlen(u->relname));
  UnitResult result = UNIT_FAILED;
  sqlstate[0] = '\0';
  unit_copy_sql(dst, u, &out_sql, &in_sql);
  buf_puts(&pre, "BEGIN;");
  if (u->kind == FL_WHOLE)
    buf_printf(&pre, " TRUNCATE ONLY %s.%s;", qn, qr);
  else if (u->needs_delete || u->attempts > 1)
    buf_printf(&pre, " DELETE FROM ONLY %s.%s WHERE %s;", qn, qr, u->where);
  PQfreemem(qn);
  PQfreemem(qr);
  u->live.rows = 0;
  u->live.bytes = 0;
  if (pgsql_exec(dst, buf_cstr(&pre), e, sizeof(e), sqlstate) < 0) {
    snprintf(err, errlen, "target: %s", e);
    result = conn_lost(dst) ? UNIT_RETRY : UNIT_FAILED;
    goto done;
  }
  st = copy_relay(src, dst, buf_cstr(&out_sql), buf_cstr(&in_sql), &u->live, fl_should_stop, fl,
                  &r, err, errlen);
  if (st == COPY_RELAY_STOPPED) {
    result = UNIT_STOPPED;
    goto done;
  }
  if (st != COPY_RELAY_OK) {
    strlcpy_(sqlstate, r.sqlstate, 6);
    result = (conn_lost(src) || conn_lost(dst)) ? UNIT_RETRY : UNIT_FAILED;
    goto done;
  }
  if (pgsql_exec(dst, "COMMIT", e, sizeof(e), sqlstate) < 0) {
    snprintf(err, errlen, "target COMMIT failed: %s", e);
    result = (conn_lost(dst) && u->kind != FL_CTIDRANGE) ? UNIT_RETRY : UNIT_FAILED;
    goto done;
  }
  u->rows = r.rows_in;
  u->bytes = r.bytes;
  u->seconds = fl_now_s() - t;
  result = UNIT_OK;
done:
  if (result != UNIT_OK && !conn_lost(dst)) {
    PGresult *res = PQexec(dst, "ROLLBACK");
    PQclear(res);
  }
  buf_free(&out_sql);
  buf_free(&in_sql);
  buf_free(&pre);
  return result;
}

/* Keep the first failure (message and SQLSTATE) for fullload_finish and
   stop the load. */
void fl_record_failure (FullLoad *fl, const FlUnit *u, const char *msg, const char *sqlstate) {
  pthread_mutex_lock(&fl->mu);
  if (!fl->failed) {
    fl->failed = 1;
    snprintf(fl->errmsg, sizeof(fl->errmsg), "copying %s failed: %s", u ? u->id : "?", msg);
    strlcpy_(fl->sqlstate, sqlstate ? sqlstate : "", sizeof(fl->sqlstate));
  }
  fl->stop = 1;
  pthread_cond_broadcast(&fl->cond);
  pthread_mutex_unlock(&fl->mu);
}

/* What a worker does next. */
typedef struct Work {
  int kind;                /* 0 nothing left, 1 copy a unit, 2 run a table's statements,
                              3 verify a batch of checks */
  int index;               /* unit or table; kind 3: first index into check_q */
  int group;               /* kind 2: the group (-1: the final statement); kind 3: how many */
  int jobs;                /* kind 3: connections per side */
} Work;

/*
** The next piece of work: a table's statements when one is ready (so
** index builds overlap the copy of other tables), else the next pending
** unit, largest first, else a batch of ready checks (with the workers
** idle now as its connections).  With none, waits while other units are
** still being copied (they may make statements or checks ready);
** returns kind 0 when nothing is left or the load is stopping.
*/
static Work take_work (FullLoad *fl) {
  Work w = {0, -1, 0, 0};
  pthread_mutex_lock(&fl->mu);
  while (!fl_should_stop(fl)) {
    if (fl->aq_head < fl->aq_tail) {
      w.kind = 2;
      w.index = fl->after_q[fl->aq_head].table;
      w.group = fl->after_q[fl->aq_head++].group;
      break;
    }
    while (fl->next < fl->plan.n && fl->plan.units[fl->next].state != FL_PENDING)
      fl->next++;
    if (fl->next < fl->plan.n) {
      fl->plan.units[fl->next].state = FL_RUNNING;
      fl->units_running++;
      w.kind = 1;
      w.index = fl->next++;
      break;
    }
    if (fl->cq_head < fl->cq_tail) {
      int64_t bytes = 0;
      w.kind = 3;
      w.index = fl->cq_head;
      w.group = 0;
      while (fl->cq_head < fl->cq_tail && w.group < CHECK_BATCH_TABLES &&
             (w.group == 0 || bytes + fl->checks[fl->check_q[fl->cq_head]].est_bytes <= CHECK_BATCH_BYTES)) {
        bytes += fl->checks[fl->check_q[fl->cq_head++]].est_bytes;
        w.group++;
      }
      w.jobs = fl->nthreads - fl->busy;
      if (w.jobs < 1)
        w.jobs = 1;
      break;
    }
    if (fl->units_running == 0)
      break;
    {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 250 * 1000 * 1000;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&fl->cond, &fl->mu, &ts);
    }
  }
  if (w.kind != 0)
    fl->busy++;
  pthread_mutex_unlock(&fl->mu);
  return w;
}

/* A unit left the running state (caller holds the lock); 'done' when it
   was loaded: the last unit of a table queues the table's statements. */
static void unit_finished (FullLoad *fl, int i, int done) {
  FlTable *t = &fl->tables[fl->unit_table[i]];
  int j, left = 0;
  fl->units_running--;
  fl->busy--;
  if (done && fl->units_running == 0) {
    for (j = fl->next; j < fl->plan.n && !left; j++)
      left = fl->plan.units[j].state == FL_PENDING;
    if (!left)
      fl->copy_end = fl_now_s();          /* the data is in; statements may still run */
  }
  if (done && --t->pending == 0) {
    if (t->after >= 0)
      fl_queue_after(fl, fl->unit_table[i]);
    else
      fl_table_ready(fl, fl->unit_table[i]);
  }
  pthread_cond_broadcast(&fl->cond);
}

/* Sleep up to 'seconds', waking early when the load is stopping. */
static void nap (FullLoad *fl, double seconds) {
  double end = fl_now_s() + seconds;
  while (!fl_should_stop(fl) && fl_now_s() < end) {
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/*
** A worker thread: takes units and post-load statement groups until none
** is left or the load stops.  A unit runs on the worker's source
** connection (inside the shared snapshot) and target connection; a lost
** connection is reopened and the unit retried up to opts.retries times,
** with a growing pause.  The first failure stops every worker.
*/
void *fl_worker_main (void *arg) {
  FullLoad *fl = arg;
  PGconn *src = NULL, *dst = NULL, *aux = NULL;
  char err[PGCONN_ERRLEN + 256], sqlstate[6];
  Work w;
  while ((w = take_work(fl)).kind != 0) {
    int i = w.index;
    FlUnit *u;
    UnitResult r = UNIT_FAILED;
    if (w.kind == 2 || w.kind == 3) {
      if (w.kind == 2)
        fl_run_after(fl, i, w.group, &aux);
      else
        fl_run_checks(fl, w.index, w.group, w.jobs);
      pthread_mutex_lock(&fl->mu);
      fl->busy--;
      pthread_mutex_unlock(&fl->mu);
      continue;
    }
    u = &fl->plan.units[i];
    for (;;) {
      u->attempts++;
      err[0] = '\0';
      sqlstate[0] = '\0';
      if (src == NULL)
        src = fl_open_source(fl, err, sizeof(err));
      if (src != NULL && dst == NULL)
        dst = fl_open_target(fl, err, sizeof(err));
      if (src == NULL || dst == NULL)
        r = UNIT_RETRY;
      else
        r = run_unit(fl, u, src, dst, err, sizeof(err), sqlstate);
      if (r != UNIT_RETRY)
        break;
      /* a source session whose snapshot transaction was aborted (the relay
         cancelled its COPY when the target failed) is of no further use:
         a new one imports the same exported snapshot */
      if (src != NULL && (conn_lost(src) || PQtransactionStatus(src) != PQTRANS_INTRANS)) {
        PQfinish(src);
        src = NULL;
      }
      if (dst != NULL && conn_lost(dst)) {
        PQfinish(dst);
        dst = NULL;
      }
      if (fl_should_stop(fl)) {
        r = UNIT_STOPPED;
        break;
      }
      if (u->attempts > fl->retries) {
        r = UNIT_FAILED;
        break;
      }
      log_warn("%s: %s; retrying (attempt %d of %d)", u->id, err, u->attempts + 1, fl->retries + 1);
      nap(fl, (double)(1 << (u->attempts - 1)));
    }
    if (r == UNIT_OK) {
      char b[32];
      fullload_format_bytes(u->bytes, b, sizeof(b));
      log_msg(u->bytes >= (8 << 20) || u->seconds >= 1.0 ? LOG_INFO : LOG_DEBUG,
              "copied %s: %lld rows, %s in %.1fs (%s)", u->id, (long long)u->rows, b,
              u->seconds, u->binary ? "binary" : "text");
      pthread_mutex_lock(&fl->mu);
      u->state = FL_DONE;
      fl->events[fl->ev_tail++] = i;
      unit_finished(fl, i, 1);
      pthread_mutex_unlock(&fl->mu);
    } else if (r == UNIT_STOPPED) {
      pthread_mutex_lock(&fl->mu);
      u->state = FL_PENDING;
      unit_finished(fl, i, 0);
      pthread_mutex_unlock(&fl->mu);
      break;
    } else {
      pthread_mutex_lock(&fl->mu);
      u->state = FL_FAILED;
      unit_finished(fl, i, 0);
      pthread_mutex_unlock(&fl->mu);
      fl_record_failure(fl, u, err[0] ? err : "unknown error", sqlstate);
      break;
    }
  }
  if (src != NULL)
    PQfinish(src);
  if (dst != NULL)
    PQfinish(dst);
  if (aux != NULL)
    PQfinish(aux);
  pthread_mutex_lock(&fl->mu);
  fl->running--;
  pthread_cond_broadcast(&fl->cond);
  pthread_mutex_unlock(&fl->mu);
  return NULL;
}
