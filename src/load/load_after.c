/*
** load_after.c
** Post-load statements (FullLoadOptions.after): each table's index
** and key groups run as soon as its last unit is loaded, on a separate
** connection of the worker, then its final statement (VACUUM ANALYZE);
** deadlocks and lock timeouts are retried, other failures left to the
** post-data step.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "load/load_internal.h"
#include "load/parallel_sql.h"
#include "pg/pgio.h"
#include "pg/pgsql.h"

/* Copy the per-table statements and attach them to the tables that
   have units to load in this run. */
void fl_setup_afters (FullLoad *fl, const FullLoadOptions *o) {
  int i, j, k, t, slots = 0;
  for (t = 0; t < fl->ntables; t++)
    fl->tables[t].after = -1;
  for (i = 0; i < fl->plan.n; i++)
    if (fl->plan.units[i].state == FL_PENDING)
      fl->tables[fl->unit_table[i]].pending++;
  fl->afters = xcalloc((size_t)o->nafter + 1, sizeof(AfterList));
  fl->after_setup = o->after_setup != NULL ? xstrdup(o->after_setup) : NULL;
  for (i = 0; i < o->nafter; i++) {
    const FlAfter *a = &o->after[i];
    AfterList *c;
    t = fl_find_table(fl, a->nspname, a->relname);
    if (t < 0 || fl->tables[t].pending == 0 || fl->tables[t].after >= 0 ||
        (a->n <= 0 && a->final == NULL))
      continue;
    c = &fl->afters[fl->nafters];
    c->n = a->n;
    c->statements = xcalloc((size_t)a->n + 1, sizeof(char *));
    c->checks = xcalloc((size_t)a->n + 1, sizeof(char *));
    c->groups = xcalloc((size_t)a->n + 1, sizeof(int));
    c->group_ids = xcalloc((size_t)a->n + 1, sizeof(int));
    for (j = 0; j < a->n; j++) {
      c->statements[j] = xstrdup(a->statements[j]);
      c->checks[j] = (a->checks != NULL && a->checks[j] != NULL) ? xstrdup(a->checks[j]) : NULL;
      c->groups[j] = a->groups != NULL ? a->groups[j] : 0;
      for (k = 0; k < c->ngroups && c->group_ids[k] != c->groups[j]; k++)
        ;
      if (k == c->ngroups)
        c->group_ids[c->ngroups++] = c->groups[j];
    }
    c->final = a->final != NULL ? xstrdup(a->final) : NULL;
    slots += c->ngroups + 1;
    fl->tables[t].after = fl->nafters++;
    fl->tasks++;
  }
  fl->after_q = xcalloc((size_t)slots + 1, sizeof(AfterTask));
}

/* Queue what can start for table t (caller holds the lock): every group,
   or the final statement when there is no group (the table is then
   ready for its check). */
void fl_queue_after (FullLoad *fl, int t) {
  AfterList *a = &fl->afters[fl->tables[t].after];
  int k;
  a->remaining = a->ngroups;
  for (k = 0; k < a->ngroups; k++) {
    fl->after_q[fl->aq_tail].table = t;
    fl->after_q[fl->aq_tail++].group = k;
  }
  if (a->ngroups == 0) {
    fl->after_q[fl->aq_tail].table = t;
    fl->after_q[fl->aq_tail++].group = -1;
    fl_table_ready(fl, t);
  }
}

/* Free the post-load statements fullload_start copied, and their queue. */
void fl_free_afters (FullLoad *fl) {
  int i, j;
  for (i = 0; i < fl->nafters; i++) {
    for (j = 0; j < fl->afters[i].n; j++) {
      free(fl->afters[i].statements[j]);
      free(fl->afters[i].checks[j]);
    }
    free(fl->afters[i].statements);
    free(fl->afters[i].checks);
    free(fl->afters[i].groups);
    free(fl->afters[i].group_ids);
    free(fl->afters[i].final);
  }
  free(fl->afters);
  free(fl->after_q);
  free(fl->after_setup);
}

/* Open the connection for a worker's table statements. */
static PGconn *open_after_conn (FullLoad *fl, char *err, size_t errlen) {
  PGconn *c = pgconn_open(fl->target, "target", PGCONN_NORMAL, err, errlen);
  char e[PGCONN_ERRLEN];
  if (c == NULL)
    return NULL;
  if (pgsql_exec(c, "SET statement_timeout = 0; SET lock_timeout = 0;"
                 " SET idle_in_transaction_session_timeout = 0", e, sizeof(e), NULL) < 0 ||
      (fl->after_setup != NULL && pgsql_exec(c, fl->after_setup, e, sizeof(e), NULL) < 0)) {
    snprintf(err, errlen, "session setup failed: %s", e);
    PQfinish(c);
    return NULL;
  }
  return c;
}

/* Run one statement unless its check finds it done, retrying deadlocks
   and lock timeouts.  Returns 1 ran, 0 skipped, -1 failed (logged). */
static int after_statement (FullLoad *fl, PGconn **conn, const FlUnit *u, const char *sql,
                            const char *check) {
  char err[PGCONN_ERRLEN + 64], sqlstate[6], line[160];
  int attempt, rc = -1, cancelled = 0;
  if (check != NULL) {
    PGresult *res = PQexec(*conn, check);
    int exists = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0;
    PQclear(res);
    if (exists)
      return 0;
  }
  for (attempt = 0; attempt < 4; attempt++) {
    rc = pgio_exec(*conn, sql, fl_should_stop, fl, err, sizeof(err), sqlstate, &cancelled);
    if (rc == 0 || cancelled || !pgsql_retryable(sqlstate, PGSQL_RETRY_LOCK))
      break;
  }
  if (rc == 0)
    return 1;
  if (!cancelled) {
    sql_one_line(sql, line, sizeof(line));
    log_warn("%s.%s: %s (left for the post-data step): %s", u->nspname, u->relname, err, line);
  }
  if (PQstatus(*conn) != CONNECTION_OK) {
    PQfinish(*conn);
    *conn = NULL;
  }
  return -1;
}

/*
** Run one group of table t's statements (in order), or its final
** statement (group -1), on *conn (opened on first use).  A failure ends
** the group; the last group to finish queues the final statement.
*/
void fl_run_after (FullLoad *fl, int t, int group, PGconn **conn) {
  AfterList *a = &fl->afters[fl->tables[t].after];
  FlUnit *u = &fl->plan.units[fl->tables[t].first_unit];
  char err[PGCONN_ERRLEN + 64];
  double t0 = fl_now_s();
  int i, ran = 0, finished_table = 0;
  if (*conn == NULL && (*conn = open_after_conn(fl, err, sizeof(err))) == NULL)
    log_warn("%s.%s: cannot build indexes now (%s); the post-data step will", u->nspname,
             u->relname, err);
  if (*conn != NULL) {
    if (group < 0) {
      ran += after_statement(fl, conn, u, a->final, NULL) > 0;
    } else {
      for (i = 0; i < a->n && !fl_should_stop(fl) && *conn != NULL; i++) {
        int rc;
        if (a->groups[i] != a->group_ids[group])
          continue;
        rc = after_statement(fl, conn, u, a->statements[i], a->checks[i]);
        if (rc < 0)
          break;
        ran += rc;
      }
    }
  }
  if (ran > 0)
    log_msg(fl_now_s() - t0 >= 1.0 ? LOG_INFO : LOG_DEBUG, "%s.%s: %d post-load statement(s) in %.1fs",
            u->nspname, u->relname, ran, fl_now_s() - t0);
  pthread_mutex_lock(&fl->mu);
  if (group >= 0)
    fl->tables[t].index_seconds += fl_now_s() - t0;
  if (group < 0) {
    finished_table = 1;
  } else if (--a->remaining == 0) {
    /* indexes and keys built (or given up): its check may run, beside
       the final statement (VACUUM ANALYZE) */
    fl_table_ready(fl, t);
    if (a->final != NULL && !fl_should_stop(fl)) {
      fl->after_q[fl->aq_tail].table = t;
      fl->after_q[fl->aq_tail++].group = -1;
    } else {
      finished_table = 1;
    }
    pthread_cond_broadcast(&fl->cond);
  }
  if (finished_table)
    fl->tasks_done++;
  pthread_mutex_unlock(&fl->mu);
}
