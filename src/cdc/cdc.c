/*
** cdc.c
** The CDC worker's public entry points (see cdc.h for the design):
** starting (configuration, the first session, the threads), status,
** waiting for a position, pause/resume, stop and free; and the small
** clock and wakeup helpers the worker's files share.  The stages are in
** the other cdc_*.c files (map in cdc_internal.h).
*/
#include "cdc/cdc_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include "util/buf.h"
#include "util/log.h"

#define DEFAULT_MEMORY_CAP (64u << 20)

/* Wall-clock time in seconds (the condition waits use CLOCK_REALTIME). */
double cdc_now (void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* The absolute time 'secs' from now, for pthread_cond_timedwait. */
void cdc_deadline (struct timespec *ts, double secs) {
  double t = cdc_now() + secs;
  ts->tv_sec = (time_t)t;
  ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* Wake every waiter, on both condition variables (stop, pause, a
   failed receiver, the end of a session).  Caller holds mu. */
void cdc_wake (Cdc *c) {
  pthread_cond_broadcast(&c->cond);
  pthread_cond_broadcast(&c->qcond);
}

/* See cdc.h: the state's name as shown in statuses. */
const char *cdc_state_name (CdcState s) {
  switch (s) {
    case CDC_STARTING: return "starting";
    case CDC_STREAMING: return "streaming";
    case CDC_PAUSED: return "paused";
    case CDC_RECONNECTING: return "reconnecting";
    case CDC_STOPPED: return "stopped";
    case CDC_FAILED: return "failed";
  }
  return "unknown";
}

/* Non-zero once cdc_stop was called. */
int cdc_stopping (Cdc *c) {
  int s;
  pthread_mutex_lock(&c->mu);
  s = c->stop;
  pthread_mutex_unlock(&c->mu);
  return s;
}

/* A copy of s, or of dflt when s is NULL or empty. */
static char *dup_or (const char *s, const char *dflt) {
  return xstrdup(s != NULL && s[0] != '\0' ? s : dflt);
}

/*
** See cdc.h.  Checks the configuration, opens the first session in the
** calling thread (so a missing slot or an unreachable server is an error
** here, not later), then starts the supervisor.  The Cdc copies every
** string of cfg.  NULL with err on failure.
*/
Cdc *cdc_start (const CdcConfig *cfg, CdcError *err) {
  Cdc *c;
  struct stat sb;
  if (cfg->source == NULL || cfg->target == NULL || cfg->source[0] == '\0' || cfg->target[0] == '\0') {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "cdc: source and target are required");
    return NULL;
  }
  if (stream_check_name("slot", cfg->slot, err) != 0)
    return NULL;
  if (cfg->publication == NULL || cfg->publication[0] == '\0') {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "cdc: publication is required");
    return NULL;
  }
  if (cfg->state_dir != NULL && cfg->state_dir[0] != '\0' &&
      (stat(cfg->state_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "cdc: state directory %s does not exist", cfg->state_dir);
    return NULL;
  }
  c = xcalloc(1, sizeof(Cdc));
  c->cfg = *cfg;
  c->source = xstrdup(cfg->source);
  c->target = xstrdup(cfg->target);
  c->slot = xstrdup(cfg->slot);
  c->publication = xstrdup(cfg->publication);
  c->origin = dup_or(cfg->origin, cfg->slot);
  c->state_dir = dup_or(cfg->state_dir, "/tmp");
  c->identity = cfg->identity != NULL ? xstrdup(cfg->identity) : NULL;
  c->status_file = cfg->state_dir != NULL && cfg->state_dir[0] != '\0';
  c->cfg.source = c->source;
  c->cfg.target = c->target;
  c->cfg.slot = c->slot;
  c->cfg.publication = c->publication;
  c->cfg.origin = c->origin;
  c->cfg.state_dir = c->state_dir;
  c->cfg.identity = c->identity;
  if (cfg->nsync > 0) {
    int i;
    c->sync = xcalloc((size_t)cfg->nsync, sizeof(ApplySync));
    for (i = 0; i < cfg->nsync; i++) {
      c->sync[i].schema = xstrdup(cfg->sync[i].schema);
      c->sync[i].table = xstrdup(cfg->sync[i].table);
      c->sync[i].lsn = cfg->sync[i].lsn;
    }
  }
  c->cfg.sync = c->sync;
  c->cfg.nsync = cfg->nsync > 0 ? cfg->nsync : 0;
  if (c->cfg.memory_cap < (1u << 20))
    c->cfg.memory_cap = c->cfg.memory_cap == 0 ? DEFAULT_MEMORY_CAP : (1u << 20);
  if (c->cfg.group_txns <= 0)
    c->cfg.group_txns = 1000;
  if (c->cfg.inflight <= 0)
    c->cfg.inflight = 8;
  if (c->cfg.batch <= 0)
    c->cfg.batch = 20000;
  if (c->cfg.set_threshold < 0)
    c->cfg.set_threshold = 0;
  if (c->cfg.status_interval_ms <= 0)
    c->cfg.status_interval_ms = 1000;
  if (c->cfg.receive_timeout_ms <= 0)
    c->cfg.receive_timeout_ms = 60000;
  if (c->cfg.receive_timeout_ms < 3 * c->cfg.status_interval_ms)
    c->cfg.receive_timeout_ms = 3 * c->cfg.status_interval_ms;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cond, NULL);
  pthread_cond_init(&c->qcond, NULL);
  c->st.state = CDC_STARTING;
  c->st.retained_bytes = -1;
  if (cdc_session_open(c, err) != 0) {
    cdc_free(c);
    return NULL;
  }
  if (pthread_create(&c->thread, NULL, cdc_supervisor_main, c) != 0) {
    cdc_err_set(err, CDC_ERR_IO, 0, "cannot start the apply thread");
    cdc_session_close(c);
    cdc_free(c);
    return NULL;
  }
  c->thread_started = 1;
  if (pthread_create(&c->monitor_thread, NULL, cdc_monitor_main, c) == 0)
    c->monitor_started = 1;
  else
    log_warn("cdc: cannot start the monitor thread: lag and retained WAL are not sampled");
  return c;
}

/* See cdc.h: a copy of the status with the lag brought up to date. */
void cdc_get_status (Cdc *c, CdcStatus *out) {
  pthread_mutex_lock(&c->mu);
  cdc_update_lag(c);
  *out = c->st;
  pthread_mutex_unlock(&c->mu);
}

/* See cdc.h: 1 once applied_lsn >= lsn, 0 on timeout, -1 when the
   worker failed or stopped first. */
int cdc_wait_applied (Cdc *c, PgLsn lsn, double timeout_s) {
  struct timespec ts;
  int rc;
  cdc_deadline(&ts, timeout_s > 0 ? timeout_s : 0);
  pthread_mutex_lock(&c->mu);
  for (;;) {
    if (c->st.applied_lsn >= lsn) {
      rc = 1;
      break;
    }
    if (c->finished || c->st.state == CDC_FAILED || c->st.state == CDC_STOPPED) {
      rc = -1;
      break;
    }
    if (pthread_cond_timedwait(&c->cond, &c->mu, &ts) == ETIMEDOUT) {
      rc = c->st.applied_lsn >= lsn ? 1 : 0;
      break;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

/* See cdc.h: the applier pauses after the last transaction ending at
   or before lsn. */
void cdc_pause_at (Cdc *c, PgLsn lsn) {
  pthread_mutex_lock(&c->mu);
  c->st.pause_lsn = lsn;
  cdc_wake(c);
  pthread_mutex_unlock(&c->mu);
}

/* See cdc.h: lift a pause (streaming again at once). */
void cdc_resume (Cdc *c) {
  pthread_mutex_lock(&c->mu);
  c->st.pause_lsn = 0;
  if (c->st.state == CDC_PAUSED)
    c->st.state = CDC_STREAMING;
  cdc_wake(c);
  pthread_mutex_unlock(&c->mu);
}

/* See cdc.h: signal stop, wait up to timeout_s for the group in flight
   (then abandon it: it rolls back), join the supervisor. */
void cdc_stop (Cdc *c, double timeout_s) {
  struct timespec ts;
  if (c == NULL || !c->thread_started)
    return;
  pthread_mutex_lock(&c->mu);
  c->stop = 1;
  cdc_wake(c);
  cdc_deadline(&ts, timeout_s > 0 ? timeout_s : 0);
  while (!c->finished && pthread_cond_timedwait(&c->cond, &c->mu, &ts) != ETIMEDOUT)
    ;
  if (!c->finished)
    c->abort_wait = 1;   /* stop waiting on the target: the group rolls back */
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->thread, NULL);
  c->thread_started = 0;
  if (c->monitor_started) {
    pthread_join(c->monitor_thread, NULL);
    c->monitor_started = 0;
  }
}

/* Stop (30 s for the group in flight) and free everything the Cdc owns;
   NULL is a no-op. */
void cdc_free (Cdc *c) {
  if (c == NULL)
    return;
  cdc_stop(c, 30);
  cdc_session_close(c);
  if (c->monitor != NULL)
    PQfinish(c->monitor);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cond);
  pthread_cond_destroy(&c->qcond);
  free(c->source);
  free(c->target);
  free(c->slot);
  free(c->publication);
  free(c->origin);
  free(c->state_dir);
  free(c->identity);
  free(c->session_sql);
  for (int i = 0; i < c->nrow_only; i++)
    free(c->row_only[i]);
  free(c->row_only);
  for (int i = 0; i < c->cfg.nsync; i++) {
    free((char *)c->sync[i].schema);
    free((char *)c->sync[i].table);
  }
  free(c->sync);
  free(c);
}
