/*
** cdc_status.c
** Lag and the status file: the lag computed from the sampled source
** position, and state_dir/cdc-status.json, which `pgtide status` in
** another process reads.
*/
#include "cdc/cdc_internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "util/atomic_file.h"
#include "util/buf.h"
#include "util/log.h"

#define STATUS_FILE_INTERVAL 1.0  /* seconds between cdc-status.json writes */

/* Caller holds mu: recompute lag from the sampled source position. */
void cdc_update_lag (Cdc *c) {
  CdcStatus *s = &c->st;
  double now = cdc_now(), ref;
  int idle = c->qhead == NULL && !c->applier_busy && !c->recv_open;
  s->lag_bytes = s->source_lsn > s->applied_lsn ? s->source_lsn - s->applied_lsn : 0;
  ref = s->last_commit_time > c->caught_up_time ? s->last_commit_time : c->caught_up_time;
  if ((idle && s->lag_bytes == 0) || ref == 0)
    s->lag_seconds = 0;
  else
    s->lag_seconds = now > ref ? now - ref : 0;
}

/* Append s as a JSON string literal (quotes, backslashes and control
   characters escaped). */
static void json_str (Buf *b, const char *s) {
  buf_putc(b, '"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      buf_printf(b, "\\%c", ch);
    else if (ch < 0x20)
      buf_printf(b, "\\u%04x", ch);
    else
      buf_putc(b, (char)ch);
  }
  buf_putc(b, '"');
}

/* Write state_dir/cdc-status.json atomically, at most once a second,
   so `pgtide status` in another process can show lag. */
void cdc_status_write (Cdc *c, int force) {
  CdcStatus s;
  Buf b = BUF_INIT, path = BUF_INIT;
  char err[256];
  char l1[PGO_LSN_BUFSZ], l2[PGO_LSN_BUFSZ], l3[PGO_LSN_BUFSZ], l4[PGO_LSN_BUFSZ];
  double now = cdc_now();
  if (!c->status_file)
    return;
  pthread_mutex_lock(&c->mu);
  if (!force && now - c->last_status_file < STATUS_FILE_INTERVAL) {
    pthread_mutex_unlock(&c->mu);
    return;
  }
  c->last_status_file = now;
  cdc_update_lag(c);
  s = c->st;
  pthread_mutex_unlock(&c->mu);
  buf_puts(&b, "{\"state\": ");
  json_str(&b, cdc_state_name(s.state));
  buf_puts(&b, ", \"slot\": ");
  json_str(&b, c->slot);
  buf_printf(&b, ", \"pid\": %d, \"updated_at\": %.3f", (int)getpid(), now);
  buf_printf(&b, ", \"applied_lsn\": \"%s\", \"received_lsn\": \"%s\", \"source_lsn\": \"%s\", "
             "\"pause_lsn\": \"%s\"", pgo_lsn_format(s.applied_lsn, l1), pgo_lsn_format(s.received_lsn, l2),
             pgo_lsn_format(s.source_lsn, l3), pgo_lsn_format(s.pause_lsn, l4));
  buf_printf(&b, ", \"lag_bytes\": %llu, \"lag_seconds\": %.3f, \"last_commit_time\": %.3f, "
             "\"retained_bytes\": %lld", (unsigned long long)s.lag_bytes, s.lag_seconds,
             s.last_commit_time, (long long)s.retained_bytes);
  buf_printf(&b, ", \"txns\": %llu, \"inserts\": %llu, \"updates\": %llu, \"deletes\": %llu, "
             "\"truncates\": %llu, \"reconnects\": %d, \"queued_txns\": %llu",
             (unsigned long long)s.stats.txns, (unsigned long long)s.stats.inserts,
             (unsigned long long)s.stats.updates, (unsigned long long)s.stats.deletes,
             (unsigned long long)s.stats.truncates, s.reconnects, (unsigned long long)s.queued_txns);
  buf_puts(&b, ", \"error\": ");
  json_str(&b, s.error.message);
  buf_puts(&b, "}\n");
  buf_printf(&path, "%s/cdc-status.json", c->state_dir);
  /* rewritten every second: atomic, not durable (a lost status after a
     power loss is rewritten by the next run) */
  if (atomic_file_write(path.data, b.data, b.len, 0644, 0, err, sizeof(err)) != 0)
    log_debug("cdc-status.json: %s", err);
  buf_free(&b);
  buf_free(&path);
}
