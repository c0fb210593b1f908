/*
** apply.c
** The CDC apply engine's session (see apply.h for the contract and the
** design): opening the target connection and configuring it, setting up
** progress (a replication origin or the pgtide.cdc_progress table),
** reading and dropping progress, closing, and the small accessors.  The
** stages are in the other apply_*.c files (map in apply_internal.h).
*/
#include "cdc/apply_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pg/pgconn.h"
#include "pg/pgsql.h"
#include "util/buf.h"
#include "util/log.h"

/* Create the replication origin when missing and bind this session to
   it, in one round trip; a predecessor's backend that still holds it is
   waited for. */
static int setup_origin (Applier *a, CdcError *err) {
  char *lit = PQescapeLiteral(a->conn, a->origin, strlen(a->origin));
  Buf sql = BUF_INIT;
  int tries, rc = -1;
  if (lit == NULL)
    return apply_conn_broken(a, err, "quote the replication origin's name");
  buf_printf(&sql, "SELECT pg_replication_origin_create(%s) WHERE pg_replication_origin_oid(%s) IS NULL; "
             "SELECT pg_replication_origin_session_setup(%s)", lit, lit, lit);
  PQfreemem(lit);
  /* a killed predecessor's backend may hold the origin for a moment */
  for (tries = 0;; tries++) {
    PGresult *res = PQexec(a->conn, sql.data);
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
      PQclear(res);
      rc = 0;
      break;
    }
    cdc_err_from_pg(err, "set up the replication origin", res, a->conn);
    PQclear(res);
    if (apply_aborted(a) || !cdc_err_wait_busy(err, tries))
      break;
  }
  buf_free(&sql);
  return rc;
}

/* The progress table, for targets where replication origins are not
   allowed: created when missing (older tables gain the migration
   column).  A row of this name that another migration wrote is refused:
   streaming from its position would skip this migration's changes. */
static int setup_table (Applier *a, CdcError *err) {
  const char *vals[1];
  PGresult *res = NULL;
  if (apply_exec_params(a, "CREATE SCHEMA IF NOT EXISTS pgtide", 0, NULL, NULL,
                        "create schema pgtide on the target", err) != 0 ||
      apply_exec_params(a,
        "CREATE TABLE IF NOT EXISTS pgtide.cdc_progress (name text PRIMARY KEY, "
        "lsn pg_lsn NOT NULL, commit_time timestamptz, updated_at timestamptz NOT NULL DEFAULT now(), "
        "migration text)", 0, NULL, NULL, "create table pgtide.cdc_progress on the target", err) != 0 ||
      apply_exec_params(a, "ALTER TABLE pgtide.cdc_progress ADD COLUMN IF NOT EXISTS migration text", 0, NULL,
                        NULL, "add column migration to pgtide.cdc_progress", err) != 0)
    return -1;
  if (a->identity == NULL)
    return 0;
  vals[0] = a->origin;
  if (apply_exec_params(a, "SELECT migration FROM pgtide.cdc_progress WHERE name = $1", 1, vals, &res,
                        "read pgtide.cdc_progress", err) != 0)
    return -1;
  if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) && strcmp(PQgetvalue(res, 0, 0), a->identity) != 0) {
    cdc_err_set(err, CDC_ERR_CONFIG, 0,
                "the progress record '%s' in pgtide.cdc_progress on the target belongs to another "
                "migration (%s), not to this one (%s): streaming from its position would skip changes. "
                "Give this migration another name, or, if that migration is abandoned, delete its row: "
                "DELETE FROM pgtide.cdc_progress WHERE name = '%s'",
                a->origin, PQgetvalue(res, 0, 0), a->identity, a->origin);
    PQclear(res);
    return -1;
  }
  PQclear(res);
  return 0;
}

/*
** See apply.h.  Connects, configures the session (no hash or merge
** joins for the set statements, no timeouts, session_replication_role
** = replica unless disabled, the source's output settings) and sets up
** progress: a replication origin, or with APPLY_PROGRESS_AUTO and no
** privilege for origins, the pgtide.cdc_progress table.  NULL with err.
*/
Applier *apply_open (const char *conninfo, const ApplyOptions *opt, CdcError *err) {
  char msg[PGCONN_ERRLEN];
  Applier *a;
  PGconn *conn = pgconn_open(conninfo, "target", PGCONN_NORMAL, msg, sizeof(msg));
  if (conn == NULL) {
    cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
    return NULL;
  }
  a = xcalloc(1, sizeof(Applier));
  a->conn = conn;
  a->origin = xstrdup(opt->origin != NULL ? opt->origin : "pgtide");
  a->identity = opt->identity != NULL ? xstrdup(opt->identity) : NULL;
  a->mode = opt->progress;
  a->set_threshold = opt->set_threshold;
  a->segment_bytes = opt->segment_bytes ? opt->segment_bytes : (16u << 20);
  a->segment_changes = opt->segment_changes > 0 ? opt->segment_changes : 20000;
  a->replica_role = opt->replica_role;
  a->abort_flag = opt->abort_flag;
  a->sync = opt->sync;
  a->nsync = opt->sync != NULL ? opt->nsync : 0;
  a->row_only = opt->row_only;
  a->nrow_only = opt->row_only != NULL ? opt->nrow_only : 0;
  a->on_commit = opt->on_commit;
  a->on_commit_ctx = opt->on_commit_ctx;
  pgo_decoder_init(&a->dec, 2);
  pgo_msg_init(&a->msg);
  /* One round trip (the target may be far away): set-based statements
     join a small set of rows to big tables, so index nested loops,
     never a scan of the target table; no timeouts; replica role; the
     source's output settings. */
  {
    Buf set = BUF_INIT;
    PGresult *res;
    buf_puts(&set, "SET enable_hashjoin = off; SET enable_mergejoin = off; SET statement_timeout = 0; "
             "SET idle_in_transaction_session_timeout = 0;");
    if (a->replica_role)
      buf_puts(&set, "SET session_replication_role = replica;");
    if (opt->session_sql != NULL)
      buf_puts(&set, opt->session_sql);
    res = PQexec(a->conn, set.data);
    buf_free(&set);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
      const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
      cdc_err_from_pg(err, a->replica_role && state != NULL && strcmp(state, "42501") == 0
                      ? "SET session_replication_role = replica (needs superuser, or pass "
                        "replica_role=false to apply with triggers and foreign-key checks on)"
                      : "configure the apply session (and the source's output settings)", res, a->conn);
      PQclear(res);
      goto fail;
    }
    PQclear(res);
  }
  if (a->mode == APPLY_PROGRESS_ORIGIN || a->mode == APPLY_PROGRESS_AUTO) {
    if (setup_origin(a, err) == 0) {
      a->mode = APPLY_PROGRESS_ORIGIN;
    } else if (a->mode == APPLY_PROGRESS_AUTO && strcmp(err->sqlstate, "42501") == 0) {
      log_info("cdc: no privilege for replication origins on the target; "
               "recording progress in pgtide.cdc_progress instead");
      a->mode = APPLY_PROGRESS_TABLE;
    } else {
      goto fail;
    }
  }
  if (a->mode == APPLY_PROGRESS_TABLE && setup_table(a, err) != 0)
    goto fail;
  return a;
fail:
  apply_close(a);
  return NULL;
}

/* Close the connection (an open group is rolled back by the server) and
   free everything the Applier owns; NULL is a no-op. */
void apply_close (Applier *a) {
  size_t i;
  if (a == NULL)
    return;
  if (a->conn != NULL)
    PQfinish(a->conn);
  for (i = 0; i < a->rel_cap; i++)
    rel_free(a->rels[i]);
  free(a->rels);
  while (a->retired != NULL) {
    Rel *r = a->retired;
    a->retired = r->retired;
    rel_free(r);
  }
  for (i = 0; i < a->ntypes; i++)
    free(a->types[i].name);
  free(a->types);
  free(a->ring);
  free(a->fly);
  free(a->ents);
  free(a->pvals);
  free(a->plens);
  free(a->pfmts);
  free(a->poffs);
  for (i = 0; i < a->nnet; i++)
    free(a->net[i].vals);
  free(a->net);
  free(a->nethash);
  buf_free(&a->keys);
  buf_free(&a->seg);
  buf_free(&a->pbuf);
  buf_free(&a->sql);
  buf_free(&a->sql2);
  buf_free(&a->arr);
  pgo_msg_free(&a->msg);
  free(a->origin);
  free(a->identity);
  free(a);
}

/* See apply.h: the LSN recorded by the last committed group, from the
   origin or the progress table.  -1 with err. */
int apply_progress (Applier *a, PgLsn *lsn, CdcError *err) {
  const char *vals[1];
  PGresult *res = NULL;
  int rc;
  vals[0] = a->origin;
  *lsn = 0;
  if (a->mode == APPLY_PROGRESS_ORIGIN)
    rc = apply_exec_params(a, "SELECT pg_replication_origin_progress($1, true)", 1, vals, &res,
                           "read the replication origin progress", err);
  else
    rc = apply_exec_params(a, "SELECT lsn FROM pgtide.cdc_progress WHERE name = $1", 1, vals, &res,
                           "read pgtide.cdc_progress", err);
  if (rc != 0)
    return -1;
  if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) &&
      pgo_lsn_parse(PQgetvalue(res, 0, 0), lsn) != 0) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "bad progress LSN \"%s\"", PQgetvalue(res, 0, 0));
    PQclear(res);
    return -1;
  }
  PQclear(res);
  return 0;
}

/* See apply.h: drop the replication origin (modes ORIGIN and AUTO) and
   the progress row (modes TABLE and AUTO) of 'name' on the target.
   Missing ones are fine; in AUTO mode a refused origin drop (no
   privilege: then no origin was ever made) is too; a row another
   migration wrote (its migration column differs from 'identity') is
   left alone.  -1 with err. */
int apply_drop_progress (const char *conninfo, const char *name, ApplyProgressMode mode,
                         const char *identity, CdcError *err) {
  char msg[PGCONN_ERRLEN];
  const char *vals[2];
  PGresult *res = NULL;
  PGconn *conn = pgconn_open(conninfo, "target", PGCONN_NORMAL, msg, sizeof(msg));
  int rc = 0;
  if (conn == NULL) {
    cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
    return -1;
  }
  vals[0] = name;
  vals[1] = identity;
  if (mode != APPLY_PROGRESS_TABLE) {
    rc = apply_exec(conn, "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin "
                    "WHERE roname = $1", 1, vals, NULL, "drop the replication origin", err);
    if (rc != 0 && mode == APPLY_PROGRESS_AUTO && strcmp(err->sqlstate, "42501") == 0) {
      cdc_err_clear(err);
      rc = 0;
    }
  }
  if (rc == 0 && mode != APPLY_PROGRESS_ORIGIN) {
    rc = apply_exec(conn, "SELECT to_regclass('pgtide.cdc_progress') IS NOT NULL", 0, NULL, &res,
                    "look for pgtide.cdc_progress", err);
    if (rc == 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0)
      rc = apply_exec(conn, "DELETE FROM pgtide.cdc_progress WHERE name = $1 "
                      "AND ($2::text IS NULL OR migration IS NULL OR migration = $2)", 2, vals, NULL,
                      "delete the progress row", err);
    PQclear(res);
  }
  PQfinish(conn);
  return rc;
}

/* See apply.h. */
const char *apply_set_failure (const Applier *a) {
  return a->pipe_failed && a->set_failed != NULL ? a->set_failed->display : NULL;
}

int apply_in_group (const Applier *a) {
  return a->in_xact;
}

const ApplyStats *apply_stats (const Applier *a) {
  return &a->stats;
}

const char *apply_progress_name (const Applier *a) {
  return a->mode == APPLY_PROGRESS_ORIGIN ? "origin" : "table";
}

int apply_backend_pid (const Applier *a) {
  return PQbackendPID(a->conn);
}

/* See apply.h: one statement on an idle connection, checked; the error
   in the CDC's shape (cdc_err_from_pg). */
int apply_exec (PGconn *conn, const char *sql, int n, const char *const *vals, PGresult **out,
                const char *what, CdcError *err) {
  PGresult *res = PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
  if (!pgsql_result_ok(res)) {
    cdc_err_from_pg(err, what, res, conn);
    PQclear(res);
    return -1;
  }
  if (out != NULL)
    *out = res;
  else
    PQclear(res);
  return 0;
}
