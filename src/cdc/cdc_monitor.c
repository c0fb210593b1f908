/*
** cdc_monitor.c
** The monitor thread: samples the source's WAL position and the slot's
** retained WAL once a second through a normal connection, for lag.
*/
#include "cdc/cdc_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>

#include "pg/pgconn.h"
#include "util/log.h"

#define MONITOR_INTERVAL 1.0      /* seconds between source LSN samples */

/*
** Sample the source's WAL position and the slot's retained WAL through
** a normal connection (reopened lazily; failures are not fatal).  The
** query is waited for in 100 ms slices so a stop is not held up by a
** source that stopped answering (the connection is then dropped).
*/
static void monitor_sample (Cdc *c) {
  static const char *const sql =
    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, "
    "(SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END, restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1)";
  char msg[PGCONN_ERRLEN];
  const char *vals[1];
  PGresult *res = NULL, *r;
  PgLsn lsn = 0;
  int ok = 1;
  if (c->monitor == NULL) {
    c->monitor = pgconn_open(c->source, "source", PGCONN_NORMAL, msg, sizeof(msg));
    if (c->monitor == NULL) {
      log_debug("cdc: monitor connection: %s", msg);
      return;
    }
  }
  vals[0] = c->slot;
  ok = PQsendQueryParams(c->monitor, sql, 1, NULL, vals, NULL, NULL, 0);
  while (ok && PQisBusy(c->monitor)) {
    struct pollfd pfd = {PQsocket(c->monitor), POLLIN, 0};
    if (cdc_stopping(c) || (poll(&pfd, 1, 100) < 0 && errno != EINTR) || !PQconsumeInput(c->monitor))
      ok = 0;
  }
  while (ok && (r = PQgetResult(c->monitor)) != NULL) {
    if (res == NULL)
      res = r;
    else
      PQclear(r);
  }
  if (!ok || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    PQclear(res);
    if (!ok || PQstatus(c->monitor) != CONNECTION_OK) {
      PQfinish(c->monitor);
      c->monitor = NULL;
    }
    return;
  }
  pthread_mutex_lock(&c->mu);
  if (pgo_lsn_parse(PQgetvalue(res, 0, 0), &lsn) == 0 && lsn > c->st.source_lsn)
    c->st.source_lsn = lsn;
  c->st.retained_bytes = PQgetisnull(res, 0, 1) ? -1 : strtoll(PQgetvalue(res, 0, 1), NULL, 10);
  cdc_update_lag(c);
  pthread_mutex_unlock(&c->mu);
  PQclear(res);
}

/*
** The monitor thread: a sample each MONITOR_INTERVAL until cdc_stop, on
** a thread of its own so that a far source (a round trip per sample,
** several to reconnect) never holds up the receiver.  Owns c->monitor.
*/
void *cdc_monitor_main (void *arg) {
  Cdc *c = arg;
  for (;;) {
    struct timespec ts;
    double until;
    monitor_sample(c);
    until = cdc_now() + MONITOR_INTERVAL;
    pthread_mutex_lock(&c->mu);
    while (!c->stop && cdc_now() < until) {
      cdc_deadline(&ts, until - cdc_now());
      pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    }
    if (c->stop) {
      pthread_mutex_unlock(&c->mu);
      break;
    }
    pthread_mutex_unlock(&c->mu);
  }
  if (c->monitor != NULL) {
    PQfinish(c->monitor);
    c->monitor = NULL;
  }
  return NULL;
}
