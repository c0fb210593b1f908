/*
** validate_point.c
** The consistent point of CONSISTENT mode, taken on the source without
** any lock: a temporary logical replication slot created on a
** replication connection with an exported snapshot
** (CREATE_REPLICATION_SLOT name TEMPORARY LOGICAL pgoutput
** EXPORT_SNAPSHOT).  Its consistent_point is the LSN of the point: the
** exported snapshot sees exactly the transactions whose commit record
** ends at or before it (snapbuild.c: commits before the slot becomes
** consistent are in its snapshot and never decoded, later ones are
** decoded and not in it; the point is the end of the xl_running_xacts
** record at which it became consistent, so no commit record straddles
** it).  The target's change apply pauses after the last transaction
** ending at or before that LSN, which is the same set.
**
** Creating the slot waits for the transactions that are in progress to
** end (twice over: those running when it starts, then those running
** when its catalog snapshot is complete); it never blocks them.  The
** wait is bounded: past POINT_WARN_S the sessions it waits for are
** named in the log, past the timeout the command is cancelled and the
** error names them and says what to do.
**
** The slot is TEMPORARY: it goes with its session, so nothing is left
** on the source when pgtide closes the connection, fails or is killed.
** Its name is unique per call (process id, a counter, random bits),
** under a prefix of its own; an existing slot of that name (SQLSTATE
** 42710) makes it try another, so it can never touch another slot.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "cdc/stream.h"
#include "pg/pgconn.h"
#include "pg/pgio.h"
#include "util/interrupt.h"
#include "util/log.h"
#include "util/redact.h"
#include "validate/validate_internal.h"

#define POINT_WARN_S 5        /* name the sessions waited for after this long */
#define POINT_WARN_EVERY_S 30
#define POINT_NAME_TRIES 5

/* {======================================================================
** Pure helpers (unit-tested)
** ======================================================================= */

/* See validate.h: "pgtide_vcp_<pid>_<seq>_<8 hex>", at most 63 bytes of
   [a-z0-9_]. */
void validate_point_slot_name (char *out, size_t n, long pid, unsigned seq, uint32_t rnd) {
  snprintf(out, n, "pgtide_vcp_%ld_%u_%08x", pid, seq, (unsigned)rnd);
}

/* See validate.h: the fix for a failure to create the slot or to open
   its replication connection, from the server's SQLSTATE and message. */
const char *validate_point_fix (const char *sqlstate, const char *message) {
  const char *m = message != NULL ? message : "";
  const char *s = sqlstate != NULL ? sqlstate : "";
  if (strcmp(s, "53400") == 0 || strstr(m, "replication slots are in use") != NULL)
    return "the source has no free replication slot: the consistent point needs one temporary "
           "slot for a moment.  Drop a slot that is no longer used (SELECT "
           "pg_drop_replication_slot('name')) or raise max_replication_slots (a restart; on "
           "RDS/Aurora in the DB parameter group)";
  if (strstr(m, "max_wal_senders") != NULL)
    return "the source has no free WAL sender: the consistent point needs one replication "
           "connection for a moment.  Raise max_wal_senders (a restart; on RDS/Aurora in the DB "
           "parameter group) or end an unused replication connection (pg_stat_replication)";
  if (strstr(m, "wal_level") != NULL)
    return "the source does not have wal_level = logical (on RDS/Aurora: set "
           "rds.logical_replication = 1 in the DB parameter group and reboot)";
  if (strstr(m, "recovery") != NULL)
    return "the source is a standby: validate against the primary (logical slots need a "
           "primary before PostgreSQL 16)";
  if (strcmp(s, "42501") == 0 || strstr(m, "replication role") != NULL ||
      strstr(m, "WAL sender") != NULL || strstr(m, "REPLICATION attribute") != NULL ||
      strstr(m, "replication slots") != NULL)
    return "the source role needs the REPLICATION attribute for the temporary slot of the "
           "consistent point: ALTER ROLE <role> REPLICATION (on RDS/Aurora: GRANT "
           "rds_replication TO <role>); or validate with mode=recheck";
  return NULL;
}

/* }====================================================================== */

/* The source's slot limit and use, appended to b ("" when unknown). */
static void slot_usage (VConn *m, Buf *b) {
  char err[ERRLEN];
  PGresult *res = vquery(m, "SELECT current_setting('max_replication_slots'), "
                         "(SELECT count(*) FROM pg_replication_slots)", 0, NULL, err, sizeof(err));
  if (res != NULL) {
    buf_printf(b, " (now max_replication_slots = %s, with %s in use)", PQgetvalue(res, 0, 0),
               PQgetvalue(res, 0, 1));
    PQclear(res);
  }
}

/*
** Describe the sessions the slot's walsender (pid) waits for into b:
** "pid 123 (user app, application 'x', idle in transaction, open 95 s)",
** a prepared transaction for pid 0.  Returns how many; 0 when it waits
** for none at this moment (or they cannot be read).  Uses m (the
** planning connection, outside any transaction).
*/
static int describe_blockers (VConn *m, int pid, Buf *b) {
  char err[ERRLEN], ps[16];
  const char *pv[1];
  PGresult *res;
  int i, n;
  snprintf(ps, sizeof(ps), "%d", pid);
  pv[0] = ps;
  res = vquery(m,
    "SELECT b.pid, a.usename, a.application_name, a.state, "
    "       floor(extract(epoch FROM clock_timestamp() - a.xact_start))::bigint "
    "FROM unnest(pg_blocking_pids($1::int)) AS b(pid) "
    "LEFT JOIN pg_stat_activity a ON a.pid = b.pid "
    "ORDER BY a.xact_start NULLS LAST, b.pid LIMIT 5", 1, pv, err, sizeof(err));
  if (res == NULL)
    return 0;
  n = PQntuples(res);
  for (i = 0; i < n; i++) {
    const char *bp = PQgetvalue(res, i, 0);
    if (i > 0)
      buf_puts(b, "; ");
    if (strcmp(bp, "0") == 0) {
      buf_puts(b, "a prepared transaction (pg_prepared_xacts: COMMIT PREPARED or ROLLBACK PREPARED it)");
      continue;
    }
    buf_printf(b, "pid %s (user %s", bp, PQgetisnull(res, i, 1) ? "?" : PQgetvalue(res, i, 1));
    if (!PQgetisnull(res, i, 2) && PQgetvalue(res, i, 2)[0] != '\0')
      buf_printf(b, ", application '%s'", PQgetvalue(res, i, 2));
    if (PQgetisnull(res, i, 3))
      buf_puts(b, ", state not visible without pg_read_all_stats");
    else
      buf_printf(b, ", %s", PQgetvalue(res, i, 3));
    if (!PQgetisnull(res, i, 4))
      buf_printf(b, ", transaction open %s s", PQgetvalue(res, i, 4));
    buf_putc(b, ')');
  }
  PQclear(res);
  return n;
}

/*
** Wait for the result of CREATE_REPLICATION_SLOT on p->repl, at most
** timeout_s: warn naming the sessions it waits for, cancel on timeout
** or interrupt.  Returns the result (caller clears), or NULL with err.
*/
static PGresult *wait_created (Run *run, VPoint *p, int timeout_s, char *err, size_t errlen) {
  double t0 = vnow(), next_warn = t0 + POINT_WARN_S;
  int pid = PQbackendPID(p->repl);
  for (;;) {
    int timedout;
    PGresult *res = pgio_get_result(p->repl, 200, &timedout);
    double now = vnow();
    if (res != NULL)
      return res;
    if (!timedout) {
      char *m = redact_str(PQerrorMessage(p->repl));
      snprintf(err, errlen, "source: the replication connection of the consistent point failed: %s", m);
      free(m);
      return NULL;
    }
    if (interrupt_requested()) {
      char e2[256];
      pgio_cancel(p->repl, e2, sizeof(e2));
      snprintf(err, errlen, "interrupted while taking the consistent point");
      return NULL;
    }
    if (now >= next_warn || (timeout_s > 0 && now - t0 >= timeout_s)) {
      Buf who = BUF_INIT;
      int n = describe_blockers(&run->msrc, pid, &who);
      if (timeout_s > 0 && now - t0 >= timeout_s) {
        char e2[256];
        pgio_cancel(p->repl, e2, sizeof(e2));
        snprintf(err, errlen, "source: the consistent point was not reached within %d s: the "
                 "temporary replication slot that marks it waits for the transactions in progress "
                 "on the source to end (pgtide takes no lock and blocks no session)%s%s.  Commit "
                 "or end %s (SELECT pg_terminate_backend(pid) ends a session) and run the "
                 "validation again, or let it wait longer (validation option point_timeout, "
                 "seconds)",
                 timeout_s, n > 0 ? "; it waits for: " : "", n > 0 ? buf_cstr(&who) : "",
                 n > 0 ? "those transactions" : "the long-running transactions");
        buf_free(&who);
        return NULL;
      }
      if (n > 0)
        log_warn("validate: the consistent point waits for transactions in progress on the "
                 "source to end (no lock is taken, nobody is blocked): %s", buf_cstr(&who));
      buf_free(&who);
      next_warn = now + POINT_WARN_EVERY_S;
    }
  }
}

/* err = "source: <what failed>: <server message>[; fix: ...]". */
static void point_error (Run *run, const char *what, const char *sqlstate, const char *msg,
                         char *err, size_t errlen) {
  Buf b = BUF_INIT;
  const char *fix = validate_point_fix(sqlstate, msg);
  const char *prefix = "create replication slot: ";   /* stream.c's, said by 'what' already */
  if (strncmp(msg, prefix, strlen(prefix)) == 0)
    msg += strlen(prefix);
  buf_printf(&b, "source: %s: %s", what, msg);
  if (fix != NULL) {
    buf_printf(&b, "; fix: %s", fix);
    if (strstr(fix, "max_replication_slots") != NULL)
      slot_usage(&run->msrc, &b);
  }
  strlcpy_(err, buf_cstr(&b), errlen);
  buf_free(&b);
}

/*
** See validate_internal.h: open a replication connection and create the
** temporary slot with an exported snapshot there (a fresh name on a
** name clash), waiting at most the run's point_timeout.  On success p
** holds the connection (the snapshot stays importable until
** vpoint_close), the slot's name, LSN and snapshot.  -1 with err, and
** nothing left open, on failure.
*/
int vpoint_create (Run *run, VPoint *p, char *err, size_t errlen) {
  static unsigned seq;
  char msg[PGCONN_ERRLEN];
  double t0 = vnow();
  int tries;
  memset(p, 0, sizeof(*p));
  p->repl = pgconn_open(run->o->source, "source", PGCONN_REPLICATION, msg, sizeof(msg));
  if (p->repl == NULL) {
    point_error(run, "cannot open the replication connection of the consistent point", NULL, msg,
                err, errlen);
    return -1;
  }
  for (tries = 1; ; tries++) {
    uint32_t rnd = 0;
    CdcError ce;
    SlotInfo info;
    PGresult *res;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
      rnd = (uint32_t)(vnow() * 1e6);
    validate_point_slot_name(p->slot, sizeof(p->slot), (long)getpid(),
                             __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED), rnd);
    memset(&ce, 0, sizeof(ce));
    if (stream_create_slot_send(p->repl, p->slot, 1, 1, &ce) != 0) {
      point_error(run, "cannot create the temporary replication slot", ce.sqlstate, ce.message,
                  err, errlen);
      break;
    }
    res = wait_created(run, p, run->o->point_timeout_s, err, errlen);
    if (res == NULL)
      break;   /* cancelled or broken: closing the session drops the slot */
    pgio_drain(p->repl);
    if (stream_create_slot_result(p->repl, res, &info, &ce) != 0) {
      PQclear(res);
      if (strcmp(ce.sqlstate, "42710") == 0 && tries < POINT_NAME_TRIES)
        continue;   /* a slot of that name exists (not ours): another name */
      point_error(run, "cannot create the temporary replication slot", ce.sqlstate, ce.message,
                  err, errlen);
      break;
    }
    PQclear(res);
    if (info.snapshot[0] == '\0') {
      snprintf(err, errlen, "source: the temporary replication slot exported no snapshot");
      break;
    }
    pgo_lsn_format(info.lsn, msg);
    strlcpy_(p->lsn, msg, sizeof(p->lsn));
    strlcpy_(p->snapshot, info.snapshot, sizeof(p->snapshot));
    p->ms = (vnow() - t0) * 1000.0;
    return 0;
  }
  vpoint_close(p);
  return -1;
}

/* See validate_internal.h: end the replication session; the temporary
   slot and its exported snapshot go with it.  Idempotent. */
void vpoint_close (VPoint *p) {
  if (p->repl != NULL) {
    PQfinish(p->repl);
    p->repl = NULL;
  }
}
