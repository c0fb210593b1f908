/*
** cdc_slot.c
** Slot and publication administration on the source: creating the
** publication and the slot with its exported snapshot, reading a
** slot's state, and dropping slot, publication and the target's
** progress (cleanup).  Each call opens and closes its own connections.
*/
#include "cdc/cdc.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg/pgconn.h"
#include "pg/pgsql.h"
#include "util/buf.h"
#include "util/log.h"

/* The n bytes of "schema.table" (or "table") as quoted identifiers. */
static void quote_qualified (Buf *b, const char *name, size_t n) {
  const char *dot = memchr(name, '.', n);
  if (dot != NULL) {
    quote_qualified(b, name, (size_t)(dot - name));
    buf_putc(b, '.');
    quote_qualified(b, dot + 1, n - (size_t)(dot - name) - 1);
    return;
  }
  pgsql_quote_ident_n(b, name, n);
}

/*
** See cdc.h: creates the publication when missing (FOR ALL TABLES, or
** FOR TABLE the listed ones), then the slot (a temporary one goes with
** the session) on a replication connection that exports its snapshot
** and stays open in the CdcSlot.
*/
CdcSlot *cdc_slot_create (const char *source, const char *slot, const char *publication,
                          const char *tables, int temporary, CdcError *err) {
  char msg[PGCONN_ERRLEN];
  PGconn *conn;
  PGresult *res = NULL;
  CdcSlot *s;
  const char *vals[1];
  if (stream_check_name("slot", slot, err) != 0)
    return NULL;
  if (publication != NULL && publication[0] != '\0') {
    conn = pgconn_open(source, "source", PGCONN_NORMAL, msg, sizeof(msg));
    if (conn == NULL) {
      cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
      return NULL;
    }
    vals[0] = publication;
    if (apply_exec(conn, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, vals, &res,
                   "look up the publication", err) != 0) {
      PQfinish(conn);
      return NULL;
    }
    if (PQntuples(res) == 0) {
      Buf sql = BUF_INIT;
      int rc;
      buf_puts(&sql, "CREATE PUBLICATION ");
      pgsql_quote_ident_n(&sql, publication, strlen(publication));
      if (tables == NULL || tables[0] == '\0') {
        buf_puts(&sql, " FOR ALL TABLES");
      } else {
        const char *p = tables;
        int first = 1;
        buf_puts(&sql, " FOR TABLE ");
        while (*p) {
          size_t n;
          while (*p == ',' || *p == ' ')
            p++;
          n = strcspn(p, ", ");
          if (n == 0)
            break;
          if (!first)
            buf_puts(&sql, ", ");
          quote_qualified(&sql, p, n);
          first = 0;
          p += n;
        }
      }
      rc = apply_exec(conn, sql.data, 0, NULL, NULL, "create the publication", err);
      buf_free(&sql);
      if (rc != 0) {
        PQclear(res);
        PQfinish(conn);
        return NULL;
      }
      log_info("cdc: created publication %s", publication);
    }
    PQclear(res);
    PQfinish(conn);
  }
  conn = pgconn_open(source, "source", PGCONN_REPLICATION, msg, sizeof(msg));
  if (conn == NULL) {
    cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
    return NULL;
  }
  s = xcalloc(1, sizeof(CdcSlot));
  s->conn = conn;
  if (stream_create_slot(conn, slot, temporary, 1, &s->info, err) != 0) {
    cdc_slot_close(s);
    return NULL;
  }
  {
    char l[PGO_LSN_BUFSZ];
    log_info("cdc: created %sreplication slot %s at %s (snapshot %s)", temporary ? "temporary " : "",
             slot, pgo_lsn_format(s->info.lsn, l), s->info.snapshot);
  }
  return s;
}

/* End the exporting session (the snapshot goes) and free s; the slot
   itself stays.  NULL is a no-op. */
void cdc_slot_close (CdcSlot *s) {
  if (s == NULL)
    return;
  if (s->conn != NULL)
    PQfinish(s->conn);
  free(s);
}

/* See cdc.h: the slot's state from pg_replication_slots (exists = 0
   when there is none) and the server's current WAL position.  -1 with
   err when the source cannot be queried. */
int cdc_slot_info (const char *source, const char *slot, CdcSlotInfo *out, CdcError *err) {
  char msg[PGCONN_ERRLEN];
  const char *vals[1];
  PGresult *res = NULL;
  PGconn *conn = pgconn_open(source, "source", PGCONN_NORMAL, msg, sizeof(msg));
  memset(out, 0, sizeof(*out));
  out->retained_bytes = -1;
  if (conn == NULL) {
    cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
    return -1;
  }
  vals[0] = slot;
  if (apply_exec(conn,
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, "
        "s.active, s.restart_lsn, s.confirmed_flush_lsn, s.wal_status, "
        "pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
        "ELSE pg_current_wal_lsn() END, s.restart_lsn)::bigint "
        "FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
        1, vals, &res, "read the replication slot", err) != 0) {
    PQfinish(conn);
    return -1;
  }
  pgo_lsn_parse(PQgetvalue(res, 0, 0), &out->current_lsn);
  out->exists = !PQgetisnull(res, 0, 1);
  if (out->exists) {
    out->active = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    if (!PQgetisnull(res, 0, 2))
      pgo_lsn_parse(PQgetvalue(res, 0, 2), &out->restart_lsn);
    if (!PQgetisnull(res, 0, 3))
      pgo_lsn_parse(PQgetvalue(res, 0, 3), &out->confirmed_lsn);
    strlcpy_(out->wal_status, PQgetvalue(res, 0, 4), sizeof(out->wal_status));
    if (!PQgetisnull(res, 0, 5))
      out->retained_bytes = strtoll(PQgetvalue(res, 0, 5), NULL, 10);
  }
  PQclear(res);
  PQfinish(conn);
  return 0;
}

/* See cdc.h: drop what exists of the slot and publication (source) and
   the progress origin and row (target); missing objects are fine.
   -1 with err on the first failure. */
int cdc_drop (const CdcDrop *d, CdcError *err) {
  const char *source = d->source, *slot = d->slot, *publication = d->publication;
  const char *target = d->target, *origin = d->origin;
  char msg[PGCONN_ERRLEN];
  const char *vals[1];
  if (source != NULL && ((slot != NULL && slot[0]) || (publication != NULL && publication[0]))) {
    PGconn *conn = pgconn_open(source, "source", PGCONN_NORMAL, msg, sizeof(msg));
    if (conn == NULL) {
      cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
      return -1;
    }
    if (slot != NULL && slot[0]) {
      /* an active walsender (a stopping pgtide) releases the slot shortly */
      int tries;
      vals[0] = slot;
      for (tries = 0;; tries++) {
        if (apply_exec(conn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                       "WHERE slot_name = $1", 1, vals, NULL, "drop the replication slot", err) == 0)
          break;
        if (!cdc_err_wait_busy(err, tries)) {
          PQfinish(conn);
          return -1;
        }
      }
    }
    if (publication != NULL && publication[0]) {
      Buf sql = BUF_INIT;
      int rc;
      buf_puts(&sql, "DROP PUBLICATION IF EXISTS ");
      pgsql_quote_ident_n(&sql, publication, strlen(publication));
      rc = apply_exec(conn, sql.data, 0, NULL, NULL, "drop the publication", err);
      buf_free(&sql);
      if (rc != 0) {
        PQfinish(conn);
        return -1;
      }
    }
    PQfinish(conn);
  }
  if (target != NULL && origin != NULL && origin[0])
    return apply_drop_progress(target, origin, d->progress, d->identity, err);
  return 0;
}
