/*
** cdc_session.c
** A session: the checks and settings read from the source once, the
** applier (which reads the committed progress), the replication
** connection started from that position and the receiver thread; and
** closing all of it.  One recovery path: any failure closes the whole
** session and the supervisor (cdc_worker.c) opens a new one.
*/
#include "cdc/cdc_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg/pgconn.h"
#include "pg/pgsql.h"
#include "util/buf.h"
#include "util/log.h"

/* The source's output settings, as SET statements for the applier (text
   comparisons of REPLICA IDENTITY FULL rows see the same formats). */
static char *source_settings (PGconn *conn) {
  static const char *const names[] = {"DateStyle", "TimeZone", "IntervalStyle", "extra_float_digits",
                                      "bytea_output", NULL};
  Buf b = BUF_INIT;
  PGresult *res;
  int i;
  /* one round trip: the source may be far away */
  res = PQexec(conn, "SELECT current_setting('DateStyle'), current_setting('TimeZone'), "
               "current_setting('IntervalStyle'), current_setting('extra_float_digits'), "
               "current_setting('bytea_output')");
  if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
    for (i = 0; names[i] != NULL; i++) {
      buf_printf(&b, "SET %s = ", names[i]);
      pgsql_quote_literal(&b, PQgetvalue(res, 0, i));
      buf_putc(&b, ';');
    }
  }
  PQclear(res);
  return buf_steal(&b);
}

/* The slot must exist and use pgoutput; checked before anything is
   created on the target, with an actionable message. */
static int check_slot (PGconn *conn, const char *slot, CdcError *err) {
  const char *vals[1];
  PGresult *res;
  int rc = 0;
  vals[0] = slot;
  res = PQexecParams(conn, "SELECT plugin, slot_type FROM pg_replication_slots WHERE slot_name = $1",
                     1, NULL, vals, NULL, NULL, 0);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    cdc_err_from_pg(err, "look up the replication slot", res, conn);
    rc = -1;
  } else if (PQntuples(res) == 0) {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "replication slot \"%s\" does not exist on the source "
                "(create it first: cdc.create_slot)", slot);
    rc = -1;
  } else if (strcmp(PQgetvalue(res, 0, 1), "logical") != 0 || strcmp(PQgetvalue(res, 0, 0), "pgoutput") != 0) {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "replication slot \"%s\" is not a logical pgoutput slot "
                "(plugin %s)", slot, PQgetvalue(res, 0, 0));
    rc = -1;
  }
  PQclear(res);
  return rc;
}

/* Caller holds nothing.  Close the session's connections and threads. */
void cdc_session_close (Cdc *c) {
  pthread_mutex_lock(&c->mu);
  c->session_stop = 1;
  cdc_wake(c);
  pthread_mutex_unlock(&c->mu);
  if (c->recv_started) {
    pthread_join(c->recv_thread, NULL);
    c->recv_started = 0;
  }
  if (c->repl != NULL) {
    PQfinish(c->repl);
    c->repl = NULL;
  }
  apply_close(c->applier);
  c->applier = NULL;
  pthread_mutex_lock(&c->mu);
  cdc_queue_clear(c);
  c->applier_busy = 0;
  c->recv_open = 0;
  pthread_mutex_unlock(&c->mu);
}

/*
** Open a session: the applier (reading the committed progress), then
** the replication connection started right after that position, then
** the receiver thread.  -1 with err; everything opened is closed.
*/
int cdc_session_open (Cdc *c, CdcError *err) {
  ApplyOptions ao;
  PgLsn start = 0;
  char msg[PGCONN_ERRLEN];
  int proto, streaming;

  if (c->session_sql == NULL) {
    PGconn *conn = pgconn_open(c->source, "source", PGCONN_NORMAL, msg, sizeof(msg));
    if (conn == NULL) {
      cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
      return -1;
    }
    if (check_slot(conn, c->slot, err) != 0) {
      PQfinish(conn);
      return -1;
    }
    c->session_sql = source_settings(conn);
    PQfinish(conn);
  }
  memset(&ao, 0, sizeof(ao));
  ao.origin = c->origin;
  ao.progress = c->cfg.progress;
  ao.identity = c->cfg.identity;
  ao.set_threshold = c->cfg.set_threshold;
  ao.segment_changes = c->cfg.batch;
  ao.segment_bytes = c->cfg.memory_cap / 4;
  ao.replica_role = c->cfg.replica_role;
  ao.session_sql = c->session_sql;
  ao.abort_flag = &c->abort_wait;
  ao.sync = c->cfg.sync;
  ao.nsync = c->cfg.nsync;
  ao.row_only = (const char *const *)c->row_only;
  ao.nrow_only = c->nrow_only;
  ao.on_commit = cdc_group_committed;
  ao.on_commit_ctx = c;
  memset(&c->published, 0, sizeof(c->published));
  c->group_open = 0;
  c->applier = apply_open(c->target, &ao, err);
  if (c->applier == NULL)
    return -1;
  if (apply_progress(c->applier, &start, err) != 0)
    goto fail;
  c->repl = pgconn_open(c->source, "source", PGCONN_REPLICATION, msg, sizeof(msg));
  if (c->repl == NULL) {
    cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
    goto fail;
  }
  proto = c->cfg.proto_version > 0 ? c->cfg.proto_version
                                   : stream_proto_for_server(pgconn_server_version(c->repl));
  streaming = c->cfg.streaming < 0 ? proto >= 2 : c->cfg.streaming;
  /* a killed predecessor's walsender may still hold the slot briefly */
  for (int tries = 0;; tries++) {
    if (stream_start(c->repl, c->slot, start, proto, c->publication, streaming, err) == 0)
      break;
    if (cdc_stopping(c) || !cdc_err_wait_busy(err, tries))
      goto fail;
  }
  pthread_mutex_lock(&c->mu);
  c->session_stop = 0;
  c->recv_failed = 0;
  c->session_start = start;
  c->st.start_lsn = start;
  if (start > c->st.applied_lsn)
    c->st.applied_lsn = start;
  if (start > c->st.commit_lsn)
    c->st.commit_lsn = start;
  c->st.proto_version = proto;
  c->st.streaming = streaming;
  strlcpy_(c->st.progress, apply_progress_name(c->applier), sizeof(c->st.progress));
  c->st.apply_pid = apply_backend_pid(c->applier);
  c->st.stream_pid = PQbackendPID(c->repl);
  c->st.state = c->st.pause_lsn != 0 && c->st.applied_lsn >= c->st.pause_lsn ? CDC_PAUSED : CDC_STREAMING;
  pthread_mutex_unlock(&c->mu);
  {
    char l[PGO_LSN_BUFSZ];
    log_info("cdc: streaming slot %s from %s (protocol %d%s, progress in %s)", c->slot,
             start ? pgo_lsn_format(start, l) : "the slot's confirmed position", proto,
             streaming ? ", streaming on" : "", apply_progress_name(c->applier));
  }
  if (pthread_create(&c->recv_thread, NULL, cdc_receiver_main, c) != 0) {
    cdc_err_set(err, CDC_ERR_IO, 0, "cannot start the receiver thread");
    goto fail;
  }
  c->recv_started = 1;
  return 0;
fail:
  cdc_session_close(c);
  return -1;
}
