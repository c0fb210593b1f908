/*
** copy_relay.c
** Byte-for-byte COPY relay between two libpq connections (see
** copy_relay.h).
*/
#include "load/copy_relay.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pg/pgconn.h"
#include "pg/pgio.h"
#include "util/buf.h"

#define RELAY_BATCH (64 * 1024)      /* bytes per outgoing CopyData message */
#define STOP_POLL_MS 200             /* longest wait between stop checks */
#define STOP_EVERY_ROWS 256          /* rows between stop checks while data flows */

int64_t copy_tag_rows (const char *tag) {
  char *end;
  long long n;
  if (tag == NULL || tag[0] == '\0')
    return -1;
  errno = 0;
  n = strtoll(tag, &end, 10);
  if (errno != 0 || end == tag)
    return -1;
  return (int64_t)n;
}

int copy_binary_versions_ok (int src_version, int dst_version) {
  return src_version > 0 && src_version / 10000 == dst_version / 10000;
}

static void set_sqlstate (CopyRelayResult *r, const PGresult *res) {
  const char *s = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  strlcpy_(r->sqlstate, s != NULL ? s : "", sizeof(r->sqlstate));
}

/* Record a failure of one side, from a result (may be NULL: then the
   connection's message is used). */
static void fail_side (CopyRelayResult *r, int side, PGconn *conn, const PGresult *res,
                       const char *what, char *err, size_t errlen) {
  char detail[PGCONN_ERRLEN];
  pgconn_result_error(res, conn, detail, sizeof(detail));
  snprintf(err, errlen, "%s %s: %s", side == 1 ? "source" : "target", what, detail);
  r->failed_side = side;
  set_sqlstate(r, res);
}

/* End a target COPY IN with an error so the server discards it. */
static void abort_copy_in (PGconn *dst, const char *why) {
  if (PQstatus(dst) == CONNECTION_OK && PQputCopyEnd(dst, why) >= 0)
    pgio_drain(dst);
}

/* Send the batch buffer as one CopyData message. */
static int flush_batch (PGconn *dst, Buf *batch) {
  int rc = 1;
  if (batch->len > 0)
    rc = PQputCopyData(dst, batch->data, (int)batch->len);
  buf_reset(batch);
  return rc;
}

/* Fetch the final result of a finished COPY on 'conn' and check it. */
static int copy_result (PGconn *conn, int side, int64_t *rows, CopyRelayResult *r,
                        char *err, size_t errlen) {
  PGresult *res = PQgetResult(conn);
  int ok = res != NULL && PQresultStatus(res) == PGRES_COMMAND_OK;
  if (ok)
    *rows = copy_tag_rows(PQcmdTuples(res));
  else
    fail_side(r, side, conn, res, "COPY failed", err, errlen);
  PQclear(res);
  pgio_drain(conn);
  return ok ? 0 : -1;
}

/*
** See copy_relay.h.  Rows are packed into batches of RELAY_BATCH bytes
** (a bigger row goes out alone); a batch is flushed when full or when
** the source has nothing ready.  should_stop is polled every
** STOP_EVERY_ROWS rows and whenever the source is idle.  result says
** which side failed.
*/
CopyRelayStatus copy_relay (PGconn *src, PGconn *dst, const char *out_sql, const char *in_sql,
                            CopyCounters *counters, int (*should_stop)(void *), void *stop_arg,
                            CopyRelayResult *result, char *err, size_t errlen) {
  PGresult *res;
  Buf batch = BUF_INIT;
  int64_t since_check = 0;
  CopyRelayStatus status = COPY_RELAY_OK;
  memset(result, 0, sizeof(*result));
  result->rows_out = result->rows_in = -1;
  err[0] = '\0';

  res = PQexec(dst, in_sql);
  if (PQresultStatus(res) != PGRES_COPY_IN) {
    fail_side(result, 2, dst, res, "COPY FROM STDIN failed", err, errlen);
    PQclear(res);
    pgio_drain(dst);
    return COPY_RELAY_ERROR;
  }
  PQclear(res);
  res = PQexec(src, out_sql);
  if (PQresultStatus(res) != PGRES_COPY_OUT) {
    fail_side(result, 1, src, res, "COPY TO STDOUT failed", err, errlen);
    PQclear(res);
    pgio_drain(src);
    abort_copy_in(dst, "source COPY failed");
    return COPY_RELAY_ERROR;
  }
  PQclear(res);
  buf_reserve(&batch, RELAY_BATCH);

  for (;;) {
    char *row = NULL;
    int n = PQgetCopyData(src, &row, 1);
    if (n > 0) {
      int rc = 1;
      if ((size_t)n >= RELAY_BATCH) {            /* a big row goes out on its own */
        rc = flush_batch(dst, &batch);
        if (rc == 1)
          rc = PQputCopyData(dst, row, n);
      } else {
        if (batch.len + (size_t)n > RELAY_BATCH)
          rc = flush_batch(dst, &batch);
        buf_append(&batch, row, (size_t)n);
      }
      PQfreemem(row);
      if (counters != NULL) {
        counters->rows++;
        counters->bytes += n;
      }
      result->bytes += n;
      if (rc != 1) {
        res = PQgetResult(dst);
        fail_side(result, 2, dst, res, "COPY FROM STDIN failed", err, errlen);
        PQclear(res);
        status = COPY_RELAY_ERROR;
        break;
      }
      if (++since_check >= STOP_EVERY_ROWS) {
        since_check = 0;
        if (should_stop != NULL && should_stop(stop_arg)) {
          status = COPY_RELAY_STOPPED;
          break;
        }
      }
    } else if (n == 0) {
      if (should_stop != NULL && should_stop(stop_arg)) {
        status = COPY_RELAY_STOPPED;
        break;
      }
      if (flush_batch(dst, &batch) != 1 || PQflush(dst) < 0) {
        res = PQgetResult(dst);
        fail_side(result, 2, dst, res, "COPY FROM STDIN failed", err, errlen);
        PQclear(res);
        status = COPY_RELAY_ERROR;
        break;
      }
      if (pgio_wait_input(src, STOP_POLL_MS) < 0) {
        fail_side(result, 1, src, NULL, "connection lost during COPY", err, errlen);
        status = COPY_RELAY_ERROR;
        break;
      }
    } else if (n == -1) {                        /* source finished */
      break;
    } else {
      res = PQgetResult(src);
      fail_side(result, 1, src, res, "COPY TO STDOUT failed", err, errlen);
      PQclear(res);
      pgio_drain(src);
      abort_copy_in(dst, "source COPY failed");
      buf_free(&batch);
      return COPY_RELAY_ERROR;
    }
  }

  if (status != COPY_RELAY_OK) {
    if (PQstatus(src) == CONNECTION_OK)
      pgio_copy_out_abort(src);
    abort_copy_in(dst, status == COPY_RELAY_STOPPED ? "interrupted" : "relay failed");
    buf_free(&batch);
    return status;
  }
  if (copy_result(src, 1, &result->rows_out, result, err, errlen) < 0) {
    abort_copy_in(dst, "source COPY failed");
    buf_free(&batch);
    return COPY_RELAY_ERROR;
  }
  if (flush_batch(dst, &batch) != 1 || PQputCopyEnd(dst, NULL) != 1) {
    res = PQgetResult(dst);
    fail_side(result, 2, dst, res, "COPY FROM STDIN failed", err, errlen);
    PQclear(res);
    pgio_drain(dst);
    buf_free(&batch);
    return COPY_RELAY_ERROR;
  }
  buf_free(&batch);
  if (copy_result(dst, 2, &result->rows_in, result, err, errlen) < 0)
    return COPY_RELAY_ERROR;
  if (result->rows_out != result->rows_in) {
    snprintf(err, errlen, "row counts differ after COPY: source sent %lld, target stored %lld",
             (long long)result->rows_out, (long long)result->rows_in);
    result->failed_side = 2;
    return COPY_RELAY_ERROR;
  }
  return COPY_RELAY_OK;
}
