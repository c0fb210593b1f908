/*
** parallel_sql.c
** Independent SQL statements on N connections (see parallel_sql.h).
*/
#include "load/parallel_sql.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libpq-fe.h>

#include "pg/pgconn.h"
#include "pg/pgio.h"
#include "pg/pgsql.h"
#include "util/buf.h"
#include "util/cpu.h"
#include "util/interrupt.h"
#include "util/log.h"

typedef struct SqlPar {
  const SqlParallelOptions *o;
  SqlTask *tasks;
  int n, next, done, failed, running, stop;
  char err[PGCONN_ERRLEN];
  int connected;
  pthread_mutex_t mu;
  pthread_cond_t cond;
} SqlPar;

/* Monotonic clock, in seconds: durations and progress intervals. */
static double now_s (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Whether to stop starting and running statements: a failure with
   stop_on_error set, SIGINT, or a load stop request. */
static int stopping (SqlPar *p) {
  return p->stop || interrupt_requested() || interrupt_stop_requested();
}

/* stopping() as the stop callback of pgio_exec. */
static int par_should_stop (void *arg) {
  return stopping((SqlPar *)arg);
}

/* See parallel_sql.h: "--" comment lines dropped, white space runs
   collapsed, truncated to max-1 bytes. */
void sql_one_line (const char *sql, char *out, size_t max) {
  size_t n = 0;
  int space = 0;
  const char *s = sql;
  while (*s != '\0' && n + 1 < max) {
    if ((s == sql || s[-1] == '\n') && s[0] == '-' && s[1] == '-') {
      while (*s != '\0' && *s != '\n')
        s++;
      continue;
    }
    if (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r') {
      space = n > 0;
    } else {
      if (space && n + 2 < max)
        out[n++] = ' ';
      space = 0;
      out[n++] = *s;
    }
    s++;
  }
  out[n] = '\0';
}

/* The index of the next statement to run, or -1 when none is left or
   the run is stopping. */
static int take_task (SqlPar *p) {
  int i = -1;
  pthread_mutex_lock(&p->mu);
  if (!stopping(p) && !(p->o->stop_on_error && p->failed) && p->next < p->n)
    i = p->next++;
  pthread_mutex_unlock(&p->mu);
  return i;
}

/*
** A worker thread: opens its connection (running setup_sql), then runs
** statements until none is left, retrying a deadlock (40P01) or lock
** timeout (55P03) up to opts.retries times.  Records each statement's
** status, error and duration in its task.
*/
static void *sql_worker (void *arg) {
  SqlPar *p = arg;
  const SqlParallelOptions *o = p->o;
  char err[PGCONN_ERRLEN], sqlstate[6], line[200];
  PGconn *conn = pgconn_open(o->conninfo, o->label ? o->label : "target", PGCONN_NORMAL,
                             err, sizeof(err));
  int i, cancelled;
  if (conn != NULL && o->setup_sql != NULL && o->setup_sql[0] != '\0') {
    if (pgio_exec(conn, o->setup_sql, par_should_stop, p, err, sizeof(err), sqlstate, &cancelled) < 0) {
      PQfinish(conn);
      conn = NULL;
    }
  }
  pthread_mutex_lock(&p->mu);
  if (conn == NULL) {
    if (p->err[0] == '\0')
      strlcpy_(p->err, err, sizeof(p->err));
  } else {
    p->connected++;
  }
  pthread_mutex_unlock(&p->mu);
  while (conn != NULL && (i = take_task(p)) >= 0) {
    SqlTask *t = &p->tasks[i];
    double t0 = now_s();
    int attempt, rc = -1, retries = o->retries > 0 ? o->retries : 3;
    for (attempt = 0; attempt <= retries; attempt++) {
      rc = pgio_exec(conn, t->sql, par_should_stop, p, err, sizeof(err), sqlstate, &cancelled);
      if (rc == 0 || cancelled || !pgsql_retryable(sqlstate, PGSQL_RETRY_LOCK))
        break;
      sql_one_line(t->sql, line, sizeof(line));
      log_info("retrying after %s (%s): %s", sqlstate, strcmp(sqlstate, "40P01") == 0 ?
               "deadlock" : "lock timeout", line);
    }
    t->seconds = now_s() - t0;
    pthread_mutex_lock(&p->mu);
    if (rc == 0) {
      t->status = 1;
    } else if (cancelled) {
      t->status = 0;                    /* interrupted: not done */
    } else {
      t->status = -1;
      t->error = xstrdup(err);
      strlcpy_(t->sqlstate, sqlstate, sizeof(t->sqlstate));
      p->failed++;
    }
    p->done += t->status != 0;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    sql_one_line(t->sql, line, sizeof(line));
    if (rc != 0 && !cancelled)
      log_warn("%s failed: %s: %s", o->what ? o->what : "statement", err, line);
    else if (rc == 0)
      log_debug("%.1fs: %s", t->seconds, line);
    if (conn != NULL && PQstatus(conn) != CONNECTION_OK) {
      PQfinish(conn);
      conn = pgconn_open(o->conninfo, o->label ? o->label : "target", PGCONN_NORMAL, err, sizeof(err));
      if (conn != NULL && o->setup_sql != NULL && o->setup_sql[0] != '\0' &&
          pgio_exec(conn, o->setup_sql, par_should_stop, p, err, sizeof(err), sqlstate, &cancelled) < 0) {
        PQfinish(conn);
        conn = NULL;
      }
    }
  }
  if (conn != NULL)
    PQfinish(conn);
  pthread_mutex_lock(&p->mu);
  p->running--;
  pthread_cond_broadcast(&p->cond);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* See parallel_sql.h: starts min(jobs or the number of cores, n)
   workers and draws progress
   (every 0.5 s on a TTY, every 10 s as log lines) until they finish. */
int sql_parallel_run (const SqlParallelOptions *o, SqlTask *tasks, int n, char *err, size_t errlen) {
  SqlPar p;
  pthread_t *th;
  int i, nth, tty = log_stderr_is_tty(), shown = 0, rc;
  double t0 = now_s(), last = t0;
  const char *what = o->what ? o->what : "statements";
  memset(&p, 0, sizeof(p));
  p.o = o;
  p.tasks = tasks;
  p.n = n;
  err[0] = '\0';
  for (i = 0; i < n; i++) {
    tasks[i].status = 0;
    tasks[i].error = NULL;
    tasks[i].sqlstate[0] = '\0';
    tasks[i].seconds = 0;
  }
  if (n == 0)
    return 0;
  nth = o->jobs > 0 ? o->jobs : cpu_count();
  if (nth > n)
    nth = n;
  pthread_mutex_init(&p.mu, NULL);
  pthread_cond_init(&p.cond, NULL);
  th = xcalloc((size_t)nth, sizeof(pthread_t));
  p.running = nth;
  for (i = 0; i < nth; i++)
    if (pthread_create(&th[i], NULL, sql_worker, &p) != 0) {
      p.running -= nth - i;
      nth = i;
      break;
    }
  pthread_mutex_lock(&p.mu);
  while (p.running > 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 250 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&p.cond, &p.mu, &ts);
    if (interrupt_requested())
      p.stop = 1;
    if (o->progress && ((tty && now_s() - last >= 0.5) || (!tty && now_s() - last >= 10.0))) {
      char line[160];
      snprintf(line, sizeof(line), "%s: %d/%d done, %d failed, %.0fs", what, p.done, n, p.failed,
               now_s() - t0);
      last = now_s();
      pthread_mutex_unlock(&p.mu);
      if (tty) {
        log_status(line);
        shown = 1;
      } else {
        log_info("%s", line);
      }
      pthread_mutex_lock(&p.mu);
    }
  }
  pthread_mutex_unlock(&p.mu);
  for (i = 0; i < nth; i++)
    pthread_join(th[i], NULL);
  free(th);
  if (shown)
    log_status(NULL);
  if (p.connected == 0) {
    snprintf(err, errlen, "%s", p.err[0] ? p.err : "no connection could be opened");
    rc = -2;
  } else if (p.failed > 0) {
    snprintf(err, errlen, "%d of %d %s statements failed", p.failed, n, what);
    rc = -1;
  } else if (p.done < n) {
    snprintf(err, errlen, "%s interrupted: %d of %d statements done", what, p.done, n);
    rc = 1;
  } else {
    rc = 0;
  }
  pthread_mutex_destroy(&p.mu);
  pthread_cond_destroy(&p.cond);
  return rc;
}

/* Free the error texts the run stored in tasks[0..n) (not the array). */
void sql_tasks_free (SqlTask *tasks, int n) {
  int i;
  for (i = 0; i < n; i++) {
    free(tasks[i].error);
    tasks[i].error = NULL;
  }
}
