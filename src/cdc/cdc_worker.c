/*
** cdc_worker.c
** The worker's supervisor thread and the apply loop it runs: groups of
** transactions taken from the queue, applied and committed by the
** Applier (apply.h) with several groups in flight; the committed
** position becomes applied_lsn; failures close the session and, when
** retryable, a new one opens after a backoff.
*/
#include "cdc/cdc_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/log.h"

#define GROUP_WAIT 0.05           /* seconds a group may wait for a transaction in flight */

/* Add the statistics an applier reached since the last report (s is
   cumulative for the session) to the worker's.  Caller holds mu. */
static void add_stats (Cdc *c, const ApplyStats *s) {
  ApplyStats *t = &c->st.stats;
  const ApplyStats *p = &c->published;
  t->inserts += s->inserts - p->inserts;
  t->updates += s->updates - p->updates;
  t->deletes += s->deletes - p->deletes;
  t->truncates += s->truncates - p->truncates;
  t->txns += s->txns - p->txns;
  t->commits += s->commits - p->commits;
  t->row_changes += s->row_changes - p->row_changes;
  t->set_segments += s->set_segments - p->set_segments;
  t->set_changes += s->set_changes - p->set_changes;
  t->set_rows += s->set_rows - p->set_rows;
  t->missing += s->missing - p->missing;
  t->skipped += s->skipped - p->skipped;
  t->bytes += s->bytes - p->bytes;
  c->published = *s;
}

/*
** The applier's on_commit: the target reported a group committed.  Only
** now does its position become applied_lsn, the position the receiver
** confirms to the source.  Runs on the apply thread, which holds no
** lock while in the Applier.
*/
void cdc_group_committed (void *ctx, PgLsn end_lsn, int64_t commit_ts, const ApplyStats *stats) {
  Cdc *c = ctx;
  pthread_mutex_lock(&c->mu);
  add_stats(c, stats);
  if (end_lsn > c->st.applied_lsn)
    c->st.applied_lsn = end_lsn;
  if (end_lsn > c->st.commit_lsn)
    c->st.commit_lsn = end_lsn;
  c->st.last_commit_time = pgo_time_to_unix(commit_ts);
  c->applier_busy = c->group_open || apply_inflight(c->applier) > 0;
  cdc_update_lag(c);
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->mu);
}

/*
** Take the next transaction for the group, or NULL: queue empty, group
** full, stop or receiver failure, or the pause point reached (then, once
** nothing is in flight, the pause is marked as reached: everything up to
** it is committed).  Caller holds mu.
*/
static Txn *take (Cdc *c, int ngroup, size_t gbytes) {
  Txn *t = c->qhead;
  if (t == NULL || c->stop || c->recv_failed)
    return NULL;
  if (ngroup >= c->cfg.group_txns || gbytes >= c->cfg.memory_cap / 4)
    return NULL;
  if (c->st.pause_lsn != 0 && t->end_lsn > c->st.pause_lsn) {
    if (ngroup == 0 && apply_inflight(c->applier) == 0 && c->st.applied_lsn < c->st.pause_lsn) {
      c->st.applied_lsn = c->st.pause_lsn;
      pthread_cond_broadcast(&c->cond);
    }
    return NULL;
  }
  c->qhead = t->next;
  if (c->qhead == NULL)
    c->qtail = NULL;
  c->st.queued_txns--;
  c->st.queued_bytes -= spill_mem(&t->buf);
  if (c->recv_waiting)
    pthread_cond_broadcast(&c->qcond);
  return t;
}

/*
** One session's apply loop: group, apply, send the commit, keep up to
** cfg.inflight groups in flight; commit results are read whenever the
** loop waits (cdc_group_committed publishes them).  Returns 0 when stopping
** (after the groups in flight are committed), -1 with err on failure.
*/
static int apply_loop (Cdc *c, CdcError *err) {
  Applier *a = c->applier;
  for (;;) {
    Txn *t;
    int ngroup = 0;
    size_t gbytes = 0;
    PgLsn last_end = 0;
    int64_t last_ts = 0;
    double group_start;

    double idle0 = cdc_now();
    pthread_mutex_lock(&c->mu);
    for (;;) {
      int paused;
      if (c->stop) {
        pthread_mutex_unlock(&c->mu);
        return apply_wait(a, 0, err);
      }
      if (c->recv_failed) {
        *err = c->recv_err;
        pthread_mutex_unlock(&c->mu);
        return -1;
      }
      paused = c->st.pause_lsn != 0 && c->st.applied_lsn >= c->st.pause_lsn;
      if (paused && c->st.state == CDC_STREAMING)
        c->st.state = CDC_PAUSED;
      else if (!paused && c->st.state == CDC_PAUSED)
        c->st.state = CDC_STREAMING;
      t = take(c, 0, 0);
      if (t != NULL) {
        c->st.apply_idle_s += cdc_now() - idle0;
        break;
      }
      if (apply_inflight(a) > 0) {
        /* read commit results as they come, look at the queue often */
        pthread_mutex_unlock(&c->mu);
        if (apply_poll(a, 2, err) != 0)
          return -1;
        pthread_mutex_lock(&c->mu);
        continue;
      }
      {
        struct timespec ts;
        cdc_deadline(&ts, 0.2);
        c->applier_waiting = 1;
        pthread_cond_timedwait(&c->qcond, &c->mu, &ts);
        c->applier_waiting = 0;
      }
      pthread_mutex_unlock(&c->mu);
      cdc_status_write(c, 0);
      pthread_mutex_lock(&c->mu);
    }
    c->applier_busy = 1;
    c->group_open = 1;
    pthread_mutex_unlock(&c->mu);
    group_start = cdc_now();

    while (t != NULL) {
      int rc = 0;
      if (t->end_lsn > c->session_start || c->session_start == 0)
        rc = apply_txn(a, &t->buf, t->end_lsn, err);
      gbytes += spill_size(&t->buf);
      last_end = t->end_lsn;
      last_ts = t->commit_ts;
      ngroup++;
      cdc_txn_free(t);
      if (rc != 0)
        return -1;
      pthread_mutex_lock(&c->mu);
      t = take(c, ngroup, gbytes);
      /* while changes keep arriving (a backlog, a busy source), wait a
         little for the next transaction so the group grows; stop as
         soon as the stream goes quiet, and after GROUP_WAIT seconds */
      while (t == NULL && c->qhead == NULL && !c->stop && !c->recv_failed &&
             cdc_now() - group_start < GROUP_WAIT) {
        struct timespec ts;
        uint64_t seen = atomic_load_explicit(&c->recv_msgs, memory_order_relaxed);
        cdc_deadline(&ts, 0.001);
        pthread_cond_timedwait(&c->qcond, &c->mu, &ts);
        t = take(c, ngroup, gbytes);
        if (t == NULL && !c->recv_open &&
            atomic_load_explicit(&c->recv_msgs, memory_order_relaxed) == seen)
          break;
      }
      pthread_mutex_unlock(&c->mu);
    }
    if (apply_commit(a, last_end, last_ts, err) != 0)
      return -1;
    pthread_mutex_lock(&c->mu);
    c->group_open = 0;
    c->applier_busy = apply_inflight(a) > 0;
    pthread_mutex_unlock(&c->mu);
    /* at most cfg.inflight groups in flight: wait for the oldest */
    if (apply_wait(a, c->cfg.inflight - 1, err) != 0)
      return -1;
  }
}

/*
** The worker's main thread: runs apply sessions (apply_loop) and, after
** a retryable error, reconnects with a backoff (0.5 s doubling to 10 s,
** reset when the session made progress) until it works, a fatal error
** (state FAILED, error kept in the status) or cdc_stop.  Ends with the
** final status file and c->finished set.
*/
void *cdc_supervisor_main (void *arg) {
  Cdc *c = arg;
  double backoff = 0.5;
  CdcError err;
  for (;;) {
    int rc;
    PgLsn at_start;
    cdc_err_clear(&err);
    pthread_mutex_lock(&c->mu);
    at_start = c->st.applied_lsn;
    pthread_mutex_unlock(&c->mu);
    rc = apply_loop(c, &err);
    if (rc != 0 && !err.retryable && c->applier != NULL && apply_set_failure(c->applier) != NULL) {
      /* a set-based statement failed where source order would not (a
         unique value swapped between rows): that table goes row by row
         from now on, and a new session replays from the committed
         position */
      int i, known = 0;
      const char *t = apply_set_failure(c->applier);
      for (i = 0; i < c->nrow_only && !known; i++)
        known = strcmp(c->row_only[i], t) == 0;
      if (!known) {
        c->row_only = xrealloc(c->row_only, (size_t)(c->nrow_only + 1) * sizeof(char *));
        c->row_only[c->nrow_only++] = xstrdup(t);
        log_info("cdc: set-based apply of %s failed (%s); applying that table row by row from now on", t,
                 err.message);
        pthread_mutex_lock(&c->mu);
        c->st.stats.fallbacks++;
        pthread_mutex_unlock(&c->mu);
        cdc_session_close(c);
        cdc_err_clear(&err);
        if (cdc_session_open(c, &err) == 0)
          continue;
      } else {
        cdc_session_close(c);    /* the row path failed too: a real error */
      }
    } else {
      cdc_session_close(c);
    }
    if (rc == 0)
      break;
    pthread_mutex_lock(&c->mu);
    c->st.error = err;
    if (!err.retryable || c->stop) {
      c->st.state = err.retryable ? CDC_STOPPED : CDC_FAILED;
      pthread_cond_broadcast(&c->cond);
      pthread_mutex_unlock(&c->mu);
      if (!err.retryable)
        log_error("cdc: %s", err.message);
      goto out;
    }
    if (c->st.applied_lsn > at_start)
      backoff = 0.5;       /* the session made progress */
    c->st.state = CDC_RECONNECTING;
    c->st.reconnects++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    log_warn("cdc: %s; reconnecting in %.1f s", err.message, backoff);
    /* reconnect until it works, a fatal error, or stop */
    for (;;) {
      struct timespec ts;
      int stop;
      pthread_mutex_lock(&c->mu);
      cdc_deadline(&ts, backoff);
      while (!c->stop && pthread_cond_timedwait(&c->cond, &c->mu, &ts) == 0)
        ;
      stop = c->stop;
      pthread_mutex_unlock(&c->mu);
      cdc_status_write(c, 0);
      if (stop)
        goto out;
      backoff = backoff * 2 > 10 ? 10 : backoff * 2;
      cdc_err_clear(&err);
      if (cdc_session_open(c, &err) == 0)
        break;
      pthread_mutex_lock(&c->mu);
      c->st.error = err;
      if (!err.retryable) {
        c->st.state = CDC_FAILED;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->mu);
        log_error("cdc: %s", err.message);
        goto out;
      }
      pthread_mutex_unlock(&c->mu);
      log_warn("cdc: %s; retrying in %.1f s", err.message, backoff);
    }
  }
out:
  pthread_mutex_lock(&c->mu);
  if (c->st.state != CDC_FAILED)
    c->st.state = CDC_STOPPED;
  c->finished = 1;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->mu);
  cdc_status_write(c, 1);
  return NULL;
}
