/*
** stream.c
** Replication-protocol commands and CopyBoth frames (see stream.h).
*/
#include "cdc/stream.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "util/buf.h"
#include "util/log.h"

/* See stream.h: 'w' XLogData (start, end, send time, payload) or 'k'
   primary keepalive (end, send time, reply requested); any other kind
   or a short frame is an error.  f->data points into buf. */
int stream_parse_frame (const uint8_t *buf, size_t len, StreamFrame *f,
                        char *err, size_t errlen) {
  memset(f, 0, sizeof(*f));
  if (buf == NULL || len == 0) {
    snprintf(err, errlen, "replication stream: empty message");
    return -1;
  }
  f->kind = (char)buf[0];
  if (f->kind == 'w') {
    if (len < 25) {
      snprintf(err, errlen, "replication stream: XLogData of %zu bytes is truncated", len);
      return -1;
    }
    f->start = pgo_get_u64(buf + 1);
    f->wal_end = pgo_get_u64(buf + 9);
    f->send_time = (int64_t)pgo_get_u64(buf + 17);
    f->data = buf + 25;
    f->len = len - 25;
    return 0;
  }
  if (f->kind == 'k') {
    if (len != 18) {
      snprintf(err, errlen, "replication stream: keepalive of %zu bytes (want 18)", len);
      return -1;
    }
    f->wal_end = pgo_get_u64(buf + 1);
    f->send_time = (int64_t)pgo_get_u64(buf + 9);
    f->reply_requested = buf[17] != 0;
    return 0;
  }
  if (f->kind >= 0x20 && f->kind < 0x7f)
    snprintf(err, errlen, "replication stream: unexpected message type '%c'", f->kind);
  else
    snprintf(err, errlen, "replication stream: unexpected message type 0x%02x", (unsigned char)f->kind);
  return -1;
}

/* See stream.h: 'r', the three positions, the time, the reply flag. */
void stream_build_status (uint8_t *out, PgLsn write, PgLsn flush, PgLsn apply,
                          int64_t now_pg, int reply) {
  out[0] = 'r';
  pgo_put_u64(out + 1, write);
  pgo_put_u64(out + 9, flush);
  pgo_put_u64(out + 17, apply);
  pgo_put_u64(out + 25, (uint64_t)now_pg);
  out[33] = reply ? 1 : 0;
}

/* See stream.h: microseconds since 2000-01-01 UTC. */
int64_t stream_now_pg (void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000000 + tv.tv_usec - PGO_EPOCH_OFFSET_US;
}

/* See stream.h: 1-63 of [a-z0-9_], CDC_ERR_CONFIG otherwise. */
int stream_check_name (const char *what, const char *name, CdcError *err) {
  size_t i, n = name != NULL ? strlen(name) : 0;
  if (n == 0 || n > 63) {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "%s name must be 1 to 63 characters", what);
    return -1;
  }
  for (i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
      cdc_err_set(err, CDC_ERR_CONFIG, 0,
                  "%s name \"%s\" may only contain lower-case letters, digits and underscores",
                  what, name);
      return -1;
    }
  }
  return 0;
}

int stream_proto_for_server (int server_version) {
  return server_version >= 140000 ? 2 : 1;
}

/* See stream.h: send CREATE_REPLICATION_SLOT ... LOGICAL pgoutput on a
   replication connection without waiting for its result. */
int stream_create_slot_send (PGconn *repl, const char *slot, int temporary, int export_snapshot,
                             CdcError *err) {
  Buf sql = BUF_INIT;
  int rc = 0;
  if (stream_check_name("slot", slot, err) != 0)
    return -1;
  buf_printf(&sql, "CREATE_REPLICATION_SLOT \"%s\" %sLOGICAL pgoutput %s", slot,
             temporary ? "TEMPORARY " : "", export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT");
  if (!PQsendQuery(repl, sql.data)) {
    cdc_err_from_pg(err, "create replication slot", NULL, repl);
    rc = -1;
  }
  buf_free(&sql);
  return rc;
}

/* See stream.h: the slot's row from the command's result (not cleared
   here); an existing slot is CDC_ERR_CONFIG (42710). */
int stream_create_slot_result (PGconn *repl, const PGresult *res, SlotInfo *out, CdcError *err) {
  memset(out, 0, sizeof(*out));
  if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 4) {
    cdc_err_from_pg(err, "create replication slot", res, repl);
    if (strcmp(err->sqlstate, "42710") == 0)
      err->kind = CDC_ERR_CONFIG;
    return -1;
  }
  strlcpy_(out->name, PQgetvalue(res, 0, 0), sizeof(out->name));
  if (pgo_lsn_parse(PQgetvalue(res, 0, 1), &out->lsn) != 0) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "create replication slot: bad consistent point \"%s\"",
                PQgetvalue(res, 0, 1));
    return -1;
  }
  if (!PQgetisnull(res, 0, 2))
    strlcpy_(out->snapshot, PQgetvalue(res, 0, 2), sizeof(out->snapshot));
  strlcpy_(out->plugin, PQgetvalue(res, 0, 3), sizeof(out->plugin));
  return 0;
}

/* See stream.h: send, wait for the result (unbounded), read it. */
int stream_create_slot (PGconn *repl, const char *slot, int temporary, int export_snapshot,
                        SlotInfo *out, CdcError *err) {
  PGresult *res, *last = NULL;
  int rc;
  memset(out, 0, sizeof(*out));
  if (stream_create_slot_send(repl, slot, temporary, export_snapshot, err) != 0)
    return -1;
  while ((res = PQgetResult(repl)) != NULL) {
    if (last == NULL || PQresultStatus(last) == PGRES_TUPLES_OK) {
      PQclear(last);
      last = res;
    } else {
      PQclear(res);
    }
  }
  rc = stream_create_slot_result(repl, last, out, err);
  PQclear(last);
  return rc;
}

/* Append 'name' as a double-quoted identifier inside a single-quoted
   string literal (the publication_names option value). */
static void put_pubname (Buf *b, const char *name, size_t n) {
  size_t i;
  buf_putc(b, '"');
  for (i = 0; i < n; i++) {
    if (name[i] == '"')
      buf_putc(b, '"');
    if (name[i] == '\'')
      buf_putc(b, '\'');
    buf_putc(b, name[i]);
  }
  buf_putc(b, '"');
}

/* See stream.h: START_REPLICATION with proto_version, the publications
   (a comma-separated list, each quoted) and streaming when asked and
   proto >= 2; a missing slot or publication (42704) is a CDC_ERR_CONFIG
   error, not retryable. */
int stream_start (PGconn *repl, const char *slot, PgLsn start, int proto,
                  const char *publications, int streaming, CdcError *err) {
  Buf sql = BUF_INIT;
  PGresult *res;
  char lsn[PGO_LSN_BUFSZ];
  const char *p;
  int rc = -1, npub = 0;
  if (stream_check_name("slot", slot, err) != 0)
    return -1;
  if (publications == NULL || publications[0] == '\0') {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "no publication given");
    return -1;
  }
  buf_printf(&sql, "START_REPLICATION SLOT \"%s\" LOGICAL %s (proto_version '%d', publication_names '",
             slot, pgo_lsn_format(start, lsn), proto);
  /* comma-separated list, blanks around names ignored */
  for (p = publications; *p != '\0';) {
    const char *e;
    size_t n;
    while (*p == ' ' || *p == ',')
      p++;
    if (*p == '\0')
      break;
    e = strchr(p, ',');
    n = e != NULL ? (size_t)(e - p) : strlen(p);
    while (n > 0 && p[n - 1] == ' ')
      n--;
    if (npub++ > 0)
      buf_putc(&sql, ',');
    put_pubname(&sql, p, n);
    p += n;
  }
  buf_putc(&sql, '\'');
  if (streaming && proto >= 2)
    buf_puts(&sql, ", streaming 'on'");
  buf_putc(&sql, ')');
  log_debug("cdc: %s", sql.data);
  res = PQexec(repl, sql.data);
  if (PQresultStatus(res) != PGRES_COPY_BOTH) {
    cdc_err_from_pg(err, "start replication", res, repl);
    /* a missing slot or publication will not fix itself */
    if (strcmp(err->sqlstate, "42704") == 0)
      err->kind = CDC_ERR_CONFIG, err->retryable = 0;
    goto done;
  }
  rc = 0;
done:
  PQclear(res);
  buf_free(&sql);
  return rc;
}

/* See stream.h: a buffered message at once, else waits for the socket
   up to timeout_ms and tries once more.  Connection failures are
   retryable CDC_ERR_CONNECTION errors; an error the server ends the
   stream with keeps its SQLSTATE. */
int stream_read (PGconn *repl, int timeout_ms, char **buf, CdcError *err) {
  int n;
  *buf = NULL;
  for (int round = 0; round < 2; round++) {
    n = PQgetCopyData(repl, buf, 1);
    if (n > 0)
      return n;
    if (n == -2 || n == -1)
      break;
    if (round == 1)
      return 0;
    /* nothing buffered: wait for the socket */
    {
      struct pollfd pfd;
      int pr;
      pfd.fd = PQsocket(repl);
      pfd.events = POLLIN;
      pfd.revents = 0;
      if (pfd.fd < 0) {
        n = -2;
        break;
      }
      pr = poll(&pfd, 1, timeout_ms);
      if (pr < 0 && errno != EINTR) {
        cdc_err_set(err, CDC_ERR_CONNECTION, 1, "replication stream: poll: %s", strerror(errno));
        return -1;
      }
      if (pr <= 0)
        return 0;
      if (!PQconsumeInput(repl)) {
        n = -2;
        break;
      }
    }
  }
  if (n == -1) {
    /* the server ended COPY: its result says why */
    PGresult *res = PQgetResult(repl);
    if (res != NULL && PQresultStatus(res) == PGRES_FATAL_ERROR)
      cdc_err_from_pg(err, "replication stream", res, repl);
    else
      cdc_err_set(err, CDC_ERR_CONNECTION, 1, "replication stream ended by the server");
    PQclear(res);
    while ((res = PQgetResult(repl)) != NULL)
      PQclear(res);
    return -1;
  }
  cdc_err_from_pg(err, "replication stream", NULL, repl);
  err->kind = CDC_ERR_CONNECTION;
  err->retryable = 1;
  return -1;
}

/* See stream.h: a send failure is a retryable connection error. */
int stream_send_status (PGconn *repl, PgLsn write, PgLsn flush, PgLsn apply,
                        int reply, CdcError *err) {
  uint8_t msg[STREAM_STATUS_LEN];
  stream_build_status(msg, write, flush, apply, stream_now_pg(), reply);
  if (PQputCopyData(repl, (const char *)msg, sizeof(msg)) <= 0 || PQflush(repl) != 0) {
    cdc_err_from_pg(err, "send standby status", NULL, repl);
    err->kind = CDC_ERR_CONNECTION;
    err->retryable = 1;
    return -1;
  }
  return 0;
}
