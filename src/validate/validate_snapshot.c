/*
** validate_snapshot.c
** Snapshots shared by the workers: one exported snapshot per side, so
** every worker sees the same data.  In CONSISTENT mode the source
** snapshot is taken at a known WAL position while the validated tables
** are briefly SHARE-locked (the fence), and the caller's hook pauses
** change apply on the target exactly there while the target snapshot is
** taken (see validate.h).
*/
#include <stdio.h>
#include <string.h>

#include "util/interrupt.h"
#include "util/log.h"
#include "validate/validate_internal.h"

/* A snapshot id as PostgreSQL prints them (hex digits and dashes), so it
   can be quoted into SET TRANSACTION SNAPSHOT safely. */
static int safe_snapshot_id (const char *s) {
  if (*s == '\0' || strlen(s) > 64)
    return 0;
  for (; *s; s++)
    if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'F') || (*s >= 'a' && *s <= 'f') ||
          *s == '-'))
      return 0;
  return 1;
}

/* Export a snapshot on 'm' (in an open transaction) and import it into
   each worker's connection of the same side, each in a REPEATABLE READ
   READ ONLY transaction.  With 'extra_col', one more value read in the
   same statement (the WAL position) is copied to extra_out. */
static int share_snapshot (VConn *m, Worker *ws, int n, int target, const char *extra_col,
                           char *extra_out, size_t extra_len, char *err, size_t errlen) {
  Buf sql = BUF_INIT;
  PGresult *res;
  char snap[80];
  int i;
  buf_printf(&sql, "SELECT pg_export_snapshot()%s%s", extra_col ? ", " : "",
             extra_col ? extra_col : "");
  res = vquery(m, buf_cstr(&sql), 0, NULL, err, errlen);
  buf_free(&sql);
  if (res == NULL)
    return -1;
  strlcpy_(snap, PQgetvalue(res, 0, 0), sizeof(snap));
  if (extra_col != NULL)
    strlcpy_(extra_out, PQgetvalue(res, 0, 1), extra_len);
  PQclear(res);
  if (!safe_snapshot_id(snap)) {
    snprintf(err, errlen, "unexpected snapshot id from the %s", m->label);
    return -1;
  }
  for (i = 0; i < n; i++) {
    VConn *vc = target ? &ws[i].tgt : &ws[i].src;
    buf_printf(&sql, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
               "SET TRANSACTION SNAPSHOT '%s'", snap);
    if (vexec(vc, buf_cstr(&sql), err, errlen) != 0) {
      buf_free(&sql);
      return -1;
    }
    buf_reset(&sql);
  }
  buf_free(&sql);
  return 0;
}

/*
** Source side of the consistent point: SHARE-lock the validated tables
** (waits for writers in flight, blocks new ones), export the snapshot and
** read the WAL insert position, import the snapshot into every worker,
** release.  Every transaction that wrote these tables and is visible in
** the snapshot has its commit record before the LSN, and none after it
** is visible.  Retries when the lock is not granted in time or a writer
** deadlocks with it.
*/
static int fence_source (Run *run, VTable **sel, int nsel, Worker *ws, int n,
                         char *err, size_t errlen) {
  Buf lock = BUF_INIT;
  int attempt, i, any = 0;
  buf_printf(&lock, "SET LOCAL lock_timeout = %d; LOCK TABLE ", run->o->lock_timeout_ms);
  for (i = 0; i < nsel; i++) {
    if (sel[i]->soid == 0)
      continue;
    buf_printf(&lock, "%s%s", any ? ", " : "", sel[i]->qname);
    any = 1;
  }
  buf_puts(&lock, " IN SHARE MODE");
  for (attempt = 1; ; attempt++) {
    double t0 = vnow();
    char e2[ERRLEN];
    if (vexec(&run->msrc, "BEGIN ISOLATION LEVEL REPEATABLE READ", err, errlen) != 0)
      break;
    if (any && vexec(&run->msrc, buf_cstr(&lock), err, errlen) != 0) {
      vexec(&run->msrc, "ROLLBACK", e2, sizeof(e2));
      /* 55P03: writers held a table past lock_timeout; 40P01: a writer
         locking several tables deadlocked with us and we were chosen */
      if ((strstr(err, "[55P03]") != NULL || strstr(err, "[40P01]") != NULL) && attempt < 5 &&
          !interrupt_requested()) {
        log_warn("validate: %s; retrying the consistent point (%d/5)",
                 strstr(err, "[40P01]") ? "deadlock with a writer" : "writers held the tables too long",
                 attempt);
        vsleep_ms(1000 * attempt);
        continue;
      }
      break;
    }
    if (share_snapshot(&run->msrc, ws, n, 0, "pg_current_wal_insert_lsn()", run->r->lsn,
                       sizeof(run->r->lsn), err, errlen) != 0) {
      vexec(&run->msrc, "ROLLBACK", e2, sizeof(e2));
      break;
    }
    if (vexec(&run->msrc, "COMMIT", err, errlen) != 0)
      break;
    run->r->fence_ms = (vnow() - t0) * 1000.0;
    buf_free(&lock);
    log_info("validate: source snapshot at LSN %s (writes held %.1f ms)", run->r->lsn,
             run->r->fence_ms);
    return 0;
  }
  buf_free(&lock);
  return -1;
}

/*
** Give every worker its snapshots.  OFFLINE / RECHECK: one exported
** snapshot per side.  CONSISTENT: the fenced source snapshot at an LSN,
** then the hook pauses apply at that LSN, the target snapshot is taken,
** and the hook resumes apply (always, once paused).
*/
int vsnapshot_setup (Run *run, VTable **sel, int nsel, Worker *ws, int n,
                            char *err, size_t errlen) {
  const VOptions *o = run->o;
  char e2[ERRLEN];
  int rc;
  if (o->mode != VMODE_CONSISTENT) {
    if (vexec(&run->msrc, "BEGIN ISOLATION LEVEL REPEATABLE READ", err, errlen) != 0)
      return -1;
    rc = share_snapshot(&run->msrc, ws, n, 0, NULL, NULL, 0, err, errlen);
    vexec(&run->msrc, rc == 0 ? "COMMIT" : "ROLLBACK", e2, sizeof(e2));
    if (rc != 0)
      return -1;
  } else {
    if (fence_source(run, sel, nsel, ws, n, err, errlen) != 0)
      return -1;
    if (o->hook.pause_at(o->hook.ud, run->r->lsn, e2, sizeof(e2)) != 0) {
      snprintf(err, errlen, "pausing change apply at %s failed: %s", run->r->lsn, e2);
      return -1;
    }
  }
  if (vexec(&run->mtgt, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen) != 0)
    rc = -1;
  else {
    rc = share_snapshot(&run->mtgt, ws, n, 1, NULL, NULL, 0, err, errlen);
    vexec(&run->mtgt, rc == 0 ? "COMMIT" : "ROLLBACK", e2, sizeof(e2));
  }
  if (o->mode == VMODE_CONSISTENT) {
    if (o->hook.resume(o->hook.ud, e2, sizeof(e2)) != 0 && rc == 0) {
      snprintf(err, errlen, "resuming change apply failed: %s", e2);
      rc = -1;
    }
  }
  return rc;
}
