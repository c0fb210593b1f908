/*
** validate_snapshot.c
** Snapshots shared by the workers: one snapshot per side, imported by
** every worker, so all of them see the same data.  In CONSISTENT mode
** the source snapshot is the one a temporary replication slot exports
** at its consistent point (validate_point.c), and the caller's hook
** makes the target's change apply stop exactly there while the target
** snapshot is taken (see validate.h).  Nothing here locks a table.
*/
#include <stdio.h>
#include <string.h>

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

/* Import snapshot 'snap' into each worker's connection of one side, each
   in a REPEATABLE READ READ ONLY transaction. */
static int import_snapshot (Worker *ws, int n, int target, const char *snap, const char *label,
                            char *err, size_t errlen) {
  Buf sql = BUF_INIT;
  int i;
  if (!safe_snapshot_id(snap)) {
    snprintf(err, errlen, "unexpected snapshot id from the %s", label);
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

/* Export a snapshot on the planning connection 'm' (in a transaction of
   its own, ended once every worker imported it) and import it into each
   worker's connection of the same side. */
static int share_snapshot (VConn *m, Worker *ws, int n, int target, char *err, size_t errlen) {
  char snap[80], e2[ERRLEN];
  PGresult *res;
  int rc;
  if (vexec(m, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen) != 0)
    return -1;
  res = vquery(m, "SELECT pg_export_snapshot()", 0, NULL, err, errlen);
  if (res == NULL) {
    vexec(m, "ROLLBACK", e2, sizeof(e2));
    return -1;
  }
  strlcpy_(snap, PQgetvalue(res, 0, 0), sizeof(snap));
  PQclear(res);
  rc = import_snapshot(ws, n, target, snap, m->label, err, errlen);
  vexec(m, rc == 0 ? "COMMIT" : "ROLLBACK", e2, sizeof(e2));
  return rc;
}

/*
** The source half of CONSISTENT mode, once apply is held: create the
** consistent point, import its snapshot into every source worker, end
** the slot's session (the temporary slot goes; the imported snapshots
** stay).  The point's LSN goes to the report.
*/
static int source_at_point (Run *run, Worker *ws, int n, char *err, size_t errlen) {
  VPoint p;
  int rc;
  if (vpoint_create(run, &p, err, errlen) != 0)
    return -1;
  rc = import_snapshot(ws, n, 0, p.snapshot, "source", err, errlen);
  vpoint_close(&p);
  if (rc != 0)
    return -1;
  strlcpy_(run->r->lsn, p.lsn, sizeof(run->r->lsn));
  run->r->point_ms = p.ms;
  log_info("validate: consistent point at source LSN %s (temporary slot %s, %.0f ms; no lock taken)",
           p.lsn, p.slot, p.ms);
  return 0;
}

/*
** Give every worker its snapshots.  OFFLINE / RECHECK: one exported
** snapshot per side (the source's may be the caller's: source_snapshot).  CONSISTENT, in this order:
**   1. hold: pause apply at the source's current WAL position, so it
**      cannot pass the point while the point is being created (the
**      point lies beyond every transaction apply has taken so far);
**   2. the consistent point on the source and its snapshot;
**   3. move the pause forward to the point's LSN and wait for it;
**   4. the target snapshot;
**   5. resume apply (always, once the hold succeeded).
*/
int vsnapshot_setup (Run *run, Worker *ws, int n, char *err, size_t errlen) {
  const VOptions *o = run->o;
  char e2[ERRLEN], hold[32];
  PGresult *res;
  int rc;
  if (o->mode != VMODE_CONSISTENT) {
    if (o->source_snapshot != NULL ? import_snapshot(ws, n, 0, o->source_snapshot, "caller", err, errlen)
                                   : share_snapshot(&run->msrc, ws, n, 0, err, errlen))
      return -1;
    return share_snapshot(&run->mtgt, ws, n, 1, err, errlen);
  }
  res = vquery(&run->msrc, "SELECT pg_current_wal_lsn()", 0, NULL, err, errlen);
  if (res == NULL)
    return -1;
  strlcpy_(hold, PQgetvalue(res, 0, 0), sizeof(hold));
  PQclear(res);
  if (o->hook.pause_at(o->hook.ud, hold, e2, sizeof(e2)) != 0) {
    snprintf(err, errlen, "pausing change apply at %s failed: %s", hold, e2);
    return -1;
  }
  rc = source_at_point(run, ws, n, err, errlen);
  if (rc == 0 && o->hook.pause_at(o->hook.ud, run->r->lsn, e2, sizeof(e2)) != 0) {
    snprintf(err, errlen, "pausing change apply at %s failed: %s", run->r->lsn, e2);
    rc = -1;
  }
  if (rc == 0)
    rc = share_snapshot(&run->mtgt, ws, n, 1, err, errlen);
  if (o->hook.resume(o->hook.ud, e2, sizeof(e2)) != 0 && rc == 0) {
    snprintf(err, errlen, "resuming change apply failed: %s", e2);
    rc = -1;
  }
  return rc;
}
