/*
** apply.c
** The CDC apply engine (see apply.h for the contract and the design).
**
** Sections: helpers; the pipeline (sending statements, matching results
** to what was sent, groups in flight); session setup and progress; the
** relation cache and schema drift checks; the row path (prepared
** statements); the set path (net effect per key, rows as array
** parameters, set-based statements); segments, transactions and commits.
*/
#include "cdc/apply.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pg/pgconn.h"
#include "util/buf.h"
#include "util/log.h"

#define FIRST_NORMAL_OID 16384
#define TEXTARRAYOID 1009
#define CHECK_EVERY 64            /* sends between flush/result checks */
#define MISSING_WARN_MAX 10       /* log this many missing rows, then count */

/*
** {======================================================
** Types
** =======================================================
*/

typedef struct RelCol {
  char *name;
  char *qname;                   /* quoted identifier */
  uint32_t typoid;
  int32_t typmod;
  int key;                       /* part of the replica identity */
  int identity_always;           /* target: GENERATED ALWAYS AS IDENTITY */
} RelCol;

typedef struct Stmt {
  char *key;                     /* shape: kind, tuple tags, column masks */
  char name[32];
} Stmt;

typedef struct Rel {
  uint32_t relid;
  char *nspname, *relname;
  char *qname;                   /* "ns"."rel" */
  char *display;                 /* ns.rel, for messages */
  char replident;
  int ncols;
  RelCol *cols;
  int nkeys;
  int *keys;                     /* column indexes of the identity */
  int full;                      /* REPLICA IDENTITY FULL */
  int set_ok;                    /* keyed, with a unique index on the key */
  int partitioned;               /* target relkind 'p': no ONLY */
  int any_identity_always;
  PgLsn sync_lsn;                /* skip changes in transactions ending at or before (ApplySync) */
  unsigned gen;                  /* bumped when the relation changes */
  int temp_ready;                /* the set path's row type (a temporary table) exists */
  int resolved;                  /* the target's side is known (rel_resolve) */
  PGresult *catalog;             /* the target's answer, until resolved */
  struct Rel *retired;           /* replaced entries, freed with the Applier */
  char tempname[48];
  Stmt *stmts;
  int nstmts, stmtcap;
} Rel;

typedef struct TypeName {
  uint32_t oid;
  char *name;                    /* nsp.typname from a Type message */
} TypeName;

typedef struct Pending {
  char kind;                     /* 'q' statement, 'c' change, 'S' set-based
                                    statement, 'C' COMMIT, 'r' catalog query
                                    (the answer goes to rel->catalog), 's' sync */
  char op;                       /* 'U' / 'D' for 'c' */
  Rel *rel;
} Pending;

/* A group whose COMMIT was sent and whose result has not arrived. */
typedef struct Inflight {
  PgLsn end_lsn;
  int64_t commit_ts;
  ApplyStats stats;              /* as of the group's end */
} Inflight;

typedef struct SegEnt {
  size_t off, len;               /* record in seg (flag byte + message) */
} SegEnt;

/* One key's net effect in the set path. */
typedef struct NetEnt {
  Rel *rel;
  char op;                       /* final state: 'i' whole row, 'u' row with
                                    unchanged-TOAST columns, 'd' absent */
  int existed;                   /* the row existed before the segment */
  size_t keyoff, keylen;         /* key bytes in keys */
  uint32_t hash;
  PgoValue *vals;                /* rel->ncols values (into the segment) */
  int next_in_rel;
} NetEnt;

struct Applier {
  PGconn *conn;
  char *origin;
  char *identity;               /* the migration a progress row belongs to (table mode) */
  ApplyProgressMode mode;
  int set_threshold, segment_changes, replica_role;
  size_t segment_bytes;
  volatile int *abort_flag;
  int pipeline, in_xact, since_check;
  Pending *ring;
  size_t ring_cap, ring_head, ring_len;
  int head_has_result;
  int pipe_failed;
  CdcError pipe_err;
  Rel *set_failed;               /* a set-based statement on this table failed */
  Inflight *fly;                 /* groups in flight, oldest first (ring) */
  size_t fly_cap, fly_head, fly_len;
  const char *const *row_only;   /* borrowed (ApplyOptions.row_only) */
  int nrow_only;
  ApplyCommitFn on_commit;
  void *on_commit_ctx;
  Rel **rels;                    /* open addressing on relid */
  size_t rel_cap, nrels;
  Rel *retired;                  /* replaced entries (results may point at them) */
  int catalog_pending;           /* catalog queries whose answer has not arrived */
  int unresolved;                /* cache entries without the target's side */
  TypeName *types;
  size_t ntypes, type_cap;
  Buf seg;                       /* buffered changes of the open segment */
  SegEnt *ents;
  size_t nents, ents_cap;
  Buf pbuf, sql, sql2, arr;
  const char **pvals;
  int *plens, *pfmts;
  size_t pcap;
  size_t *poffs;
  PgoDecoder dec;
  PgoMsg msg;
  ApplyStats stats;
  unsigned stmt_seq;
  /* set path scratch */
  NetEnt *net;
  size_t nnet, net_cap;
  int *nethash;                  /* open addressing: index+1 into net */
  size_t nethash_cap;
  Buf keys;
  const ApplySync *sync;         /* borrowed (ApplyOptions.sync) */
  int nsync;
};

/* }====================================================== */

/*
** {======================================================
** Helpers
** =======================================================
*/

/* See apply.h: n bytes of s as a double-quoted identifier. */
void apply_quote_ident (Buf *b, const char *s, size_t n) {
  size_t i;
  buf_putc(b, '"');
  for (i = 0; i < n; i++) {
    if (s[i] == '"')
      buf_putc(b, '"');
    buf_putc(b, s[i]);
  }
  buf_putc(b, '"');
}

/* A NUL-terminated name as a double-quoted identifier. */
static void quote_ident (Buf *b, const char *s) {
  apply_quote_ident(b, s, strlen(s));
}

/* A quoted identifier as a new string (caller frees). */
static char *quoted (const char *s) {
  Buf b = BUF_INIT;
  quote_ident(&b, s);
  return buf_steal(&b);
}

/* A PostgreSQL timestamp as timestamptz text in UTC. */
static void format_pgts (int64_t pgts, char *out, size_t n) {
  int64_t us = pgts + PGO_EPOCH_OFFSET_US;
  time_t secs = (time_t)(us >= 0 ? us / 1000000 : (us - 999999) / 1000000);
  long frac = (long)(us - (int64_t)secs * 1000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  snprintf(out, n, "%04d-%02d-%02d %02d:%02d:%02d.%06ld+00", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* FNV-1a: keys of the set path's hash table. */
static uint32_t hash_bytes (const void *p, size_t n) {
  const unsigned char *s = p;
  uint32_t h = 2166136261u;
  while (n--) {
    h ^= *s++;
    h *= 16777619u;
  }
  return h;
}

static int aborted (const Applier *a) {
  return a->abort_flag != NULL && *a->abort_flag;
}

/* Room for n statement parameters (values, lengths, formats, offsets). */
static void params_reserve (Applier *a, size_t n) {
  if (n > a->pcap) {
    size_t cap = a->pcap ? a->pcap : 32;
    while (cap < n)
      cap *= 2;
    a->pvals = xrealloc(a->pvals, cap * sizeof(*a->pvals));
    a->plens = xrealloc(a->plens, cap * sizeof(*a->plens));
    a->pfmts = xrealloc(a->pfmts, cap * sizeof(*a->pfmts));
    a->poffs = xrealloc(a->poffs, cap * sizeof(*a->poffs));
    a->pcap = cap;
  }
}

/* Parameter i from a tuple value ('n' gives NULL).  Values are copied
   into pbuf with a NUL; pointers are fixed up by params_finish(). */
static void param_set (Applier *a, int i, const PgoValue *v) {
  params_reserve(a, (size_t)i + 1);
  if (v->kind == PGO_VAL_NULL || v->kind == PGO_VAL_UNCHANGED) {
    a->poffs[i] = (size_t)-1;
    a->plens[i] = 0;
    a->pfmts[i] = 0;
    return;
  }
  a->poffs[i] = a->pbuf.len;
  buf_append(&a->pbuf, v->data, v->len);
  buf_putc(&a->pbuf, '\0');
  a->plens[i] = (int)v->len;
  a->pfmts[i] = v->kind == PGO_VAL_BINARY ? 1 : 0;
}

/* Point pvals[0..n) into pbuf once every parameter was added (pbuf may
   have moved while growing); an offset of -1 is a NULL parameter. */
static void params_finish (Applier *a, int n) {
  int i;
  for (i = 0; i < n; i++)
    a->pvals[i] = a->poffs[i] == (size_t)-1 ? NULL : a->pbuf.data + a->poffs[i];
}

/* }====================================================== */

/*
** {======================================================
** Pipeline
** =======================================================
*/

/*
** The ring of statements sent in the pipeline whose results are not read
** yet, oldest first: results arrive in the same order, so the head says
** what each result belongs to (for error messages and row counts).
*/
static void ring_push (Applier *a, char kind, char op, Rel *rel) {
  Pending *p;
  if (a->ring_len == a->ring_cap) {
    size_t cap = a->ring_cap ? a->ring_cap * 2 : 256, i;
    Pending *r = xmalloc(cap * sizeof(Pending));
    for (i = 0; i < a->ring_len; i++)
      r[i] = a->ring[(a->ring_head + i) % a->ring_cap];
    free(a->ring);
    a->ring = r;
    a->ring_cap = cap;
    a->ring_head = 0;
  }
  p = &a->ring[(a->ring_head + a->ring_len) % a->ring_cap];
  p->kind = kind;
  p->op = op;
  p->rel = rel;
  a->ring_len++;
}

/* Drop the oldest pending pipeline entry (its result was read). */
static void ring_pop (Applier *a) {
  a->ring_head = (a->ring_head + 1) % a->ring_cap;
  a->ring_len--;
  a->head_has_result = 0;
}

/* A libpq call failed on the connection itself: retryable. */
static int conn_broken (Applier *a, CdcError *err, const char *what) {
  cdc_err_from_pg(err, what, NULL, a->conn);
  err->kind = CDC_ERR_CONNECTION;
  err->retryable = 1;
  return -1;
}

/* The oldest group in flight is committed: drop it and tell the owner. */
static void group_committed (Applier *a) {
  Inflight g = a->fly[a->fly_head];
  a->fly_head = (a->fly_head + 1) % a->fly_cap;
  a->fly_len--;
  g.stats.missing = a->stats.missing;   /* results up to this COMMIT are all read */
  if (a->on_commit != NULL)
    a->on_commit(a->on_commit_ctx, g.end_lsn, g.commit_ts, &g.stats);
}

/* Handle one result for the ring head.  The first error is kept in
   pipe_err (with the table when known); after it, the server skips
   everything up to the next sync, so later results are
   PGRES_PIPELINE_ABORTED and nothing after it is committed. */
static int take_result (Applier *a, PGresult *res) {
  Pending *p = &a->ring[a->ring_head];
  ExecStatusType st = PQresultStatus(res);
  a->head_has_result = 1;
  if (p->kind == 'r' && st != PGRES_FATAL_ERROR) {
    a->catalog_pending--;
    if (st == PGRES_TUPLES_OK && !a->pipe_failed && p->rel->catalog == NULL) {
      p->rel->catalog = res;
      return 1;
    }
    return 0;
  }
  if (st == PGRES_FATAL_ERROR) {
    if (!a->pipe_failed) {
      a->pipe_failed = 1;
      cdc_err_from_pg(&a->pipe_err, p->kind == 'S' ? "apply (set-based)" : p->rel != NULL ? "apply"
                      : p->kind == 'C' ? "apply: COMMIT" : "apply statement", res, a->conn);
      if (p->rel != NULL) {
        Buf msg = BUF_INIT;
        strlcpy_(a->pipe_err.table, p->rel->display, sizeof(a->pipe_err.table));
        buf_printf(&msg, "%s (table %s)", a->pipe_err.message, p->rel->display);
        strlcpy_(a->pipe_err.message, msg.data, sizeof(a->pipe_err.message));
        buf_free(&msg);
      }
      if (p->kind == 'S')
        a->set_failed = p->rel;
    }
  } else if (a->pipe_failed || st == PGRES_PIPELINE_ABORTED) {
    if (!a->pipe_failed) {   /* aborted without a preceding error: cannot happen */
      a->pipe_failed = 1;
      cdc_err_set(&a->pipe_err, CDC_ERR_PROTOCOL, 1, "apply: pipeline aborted without an error");
    }
  } else if (p->kind == 'C') {
    if (strcmp(PQcmdStatus(res), "COMMIT") == 0 && a->fly_len > 0) {
      group_committed(a);
    } else {
      a->pipe_failed = 1;
      cdc_err_set(&a->pipe_err, CDC_ERR_SQL, 1, "apply: the target answered COMMIT with %s",
                  PQcmdStatus(res));
    }
  } else if (p->kind == 'c' && st == PGRES_COMMAND_OK && strcmp(PQcmdTuples(res), "0") == 0) {
    a->stats.missing++;
    if (a->stats.missing <= MISSING_WARN_MAX)
      log_warn("cdc: %s on %s found no row on the target%s", p->op == 'U' ? "UPDATE" : "DELETE",
               p->rel->display, a->stats.missing == MISSING_WARN_MAX ? " (further cases only counted)" : "");
  }
  return 0;
}

/* A statement failed earlier: its error, -1. */
static int pipe_error (Applier *a, CdcError *err) {
  *err = a->pipe_err;
  return -1;
}

#define DRAIN_NOWAIT (-1)         /* read what is there */
#define DRAIN_ALL (-2)            /* until every pending result (ending with a sync) is read */
#define DRAIN_CATALOG (-3)        /* until every catalog query is answered */

/*
** Read results.  'want' says how long: DRAIN_NOWAIT only what has
** arrived; DRAIN_ALL until nothing is pending (the ring must end with a
** sync); DRAIN_CATALOG until every catalog query is answered; n >= 0
** until at most n groups are in flight.  Waiting pushes
** the output out and polls in 1 s slices, honouring the abort flag;
** with timeout_ms >= 0 it waits one slice of that length at most, then
** reads what arrived and returns 0.  -1 for a broken connection, an
** abort or a statement error (the first one, from pipe_err).
*/
static int pipe_drain (Applier *a, int want, int timeout_ms, CdcError *err) {
  int waited = 0;
  for (;;) {
    PGresult *res;
    if (a->pipe_failed && want != DRAIN_ALL)
      return pipe_error(a, err);
    if (a->ring_len == 0 || (want >= 0 && a->fly_len <= (size_t)want) ||
        (want == DRAIN_CATALOG && a->catalog_pending == 0))
      return a->pipe_failed ? pipe_error(a, err) : 0;
    if (!PQconsumeInput(a->conn))
      return conn_broken(a, err, "apply connection");
    if (PQisBusy(a->conn)) {
      struct pollfd pfd;
      int fl, rc;
      if (want == DRAIN_NOWAIT || waited)
        return 0;
      fl = PQflush(a->conn);
      if (fl < 0)
        return conn_broken(a, err, "apply connection");
      pfd.fd = PQsocket(a->conn);
      pfd.events = POLLIN | (fl == 1 ? POLLOUT : 0);
      pfd.revents = 0;
      rc = poll(&pfd, 1, timeout_ms >= 0 ? timeout_ms : 1000);
      if (rc < 0 && errno != EINTR)
        return conn_broken(a, err, "apply connection");
      if (aborted(a)) {
        cdc_err_set(err, CDC_ERR_CONNECTION, 1, "apply interrupted while waiting for the target");
        return -1;
      }
      waited = timeout_ms >= 0;   /* one slice, then what arrived */
      continue;
    }
    res = PQgetResult(a->conn);
    if (res == NULL) {
      if (a->ring[a->ring_head].kind == 's' || !a->head_has_result) {
        if (PQstatus(a->conn) != CONNECTION_OK)
          return conn_broken(a, err, "apply connection");
        cdc_err_set(err, CDC_ERR_PROTOCOL, 1, "apply: pipeline results out of step");
        return -1;
      }
      ring_pop(a);
      continue;
    }
    if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
      PQclear(res);
      if (a->ring[a->ring_head].kind != 's') {
        cdc_err_set(err, CDC_ERR_PROTOCOL, 1, "apply: unexpected pipeline sync");
        return -1;
      }
      ring_pop(a);
      continue;
    }
    if (a->ring[a->ring_head].kind == 's') {
      PQclear(res);
      if (PQstatus(a->conn) != CONNECTION_OK)
        return conn_broken(a, err, "apply connection");
      cdc_err_set(err, CDC_ERR_PROTOCOL, 1, "apply: result where a sync was expected");
      return -1;
    }
    if (!take_result(a, res))
      PQclear(res);
  }
}

/* Enter pipeline mode (non-blocking connection) if not already in it. */
static int pipe_enter (Applier *a, CdcError *err) {
  if (a->pipeline)
    return 0;
  if (PQsetnonblocking(a->conn, 1) != 0 || PQenterPipelineMode(a->conn) != 1)
    return conn_broken(a, err, "enter pipeline mode");
  a->pipeline = 1;
  return 0;
}

/* After each send: every CHECK_EVERY sends (or 1 MB of parameters),
   push the output out and read results, so neither side's buffers fill
   up (no deadlock, bounded memory).  A statement error seen there ends
   the group at once. */
static int pipe_after_send (Applier *a, CdcError *err) {
  if (++a->since_check < CHECK_EVERY && a->pbuf.len < (1u << 20))
    return 0;
  a->since_check = 0;
  for (;;) {
    struct pollfd pfd;
    int fl = PQflush(a->conn);
    if (fl < 0)
      return conn_broken(a, err, "apply connection");
    if (pipe_drain(a, DRAIN_NOWAIT, -1, err) != 0)
      return -1;
    if (fl == 0)
      return 0;
    pfd.fd = PQsocket(a->conn);
    pfd.events = POLLIN | POLLOUT;
    pfd.revents = 0;
    if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
      return conn_broken(a, err, "apply connection");
    if (aborted(a)) {
      cdc_err_set(err, CDC_ERR_CONNECTION, 1, "apply interrupted while sending to the target");
      return -1;
    }
  }
}

/* Send a parameterless statement through the pipeline; 'kind' is its
   ring entry's kind ('q', or 'S' for a set-based statement). */
static int pipe_exec (Applier *a, const char *sql, char kind, Rel *rel, CdcError *err) {
  if (pipe_enter(a, err) != 0)
    return -1;
  if (!PQsendQueryParams(a->conn, sql, 0, NULL, NULL, NULL, NULL, 0))
    return conn_broken(a, err, "apply: send");
  ring_push(a, kind, 0, rel);
  return pipe_after_send(a, err);
}

/* Send a statement with the parameters prepared in pvals. */
static int pipe_exec_params (Applier *a, const char *sql, int n, CdcError *err) {
  if (pipe_enter(a, err) != 0)
    return -1;
  if (!PQsendQueryParams(a->conn, sql, n, NULL, a->pvals, NULL, NULL, 0))
    return conn_broken(a, err, "apply: send");
  ring_push(a, 'q', 0, NULL);
  return pipe_after_send(a, err);
}

/* Send a set-based statement whose one parameter ($1, text[]) is the
   binary array built in a->arr. */
static int pipe_exec_array (Applier *a, const char *sql, Rel *rel, CdcError *err) {
  static const Oid types[1] = {TEXTARRAYOID};
  static const int fmts[1] = {1};
  const char *vals[1];
  int lens[1];
  if (pipe_enter(a, err) != 0)
    return -1;
  vals[0] = a->arr.data;
  lens[0] = (int)a->arr.len;
  if (!PQsendQueryParams(a->conn, sql, 1, types, vals, lens, fmts, 0))
    return conn_broken(a, err, "apply: send");
  ring_push(a, 'S', 0, rel);
  a->since_check = CHECK_EVERY;   /* push big parameters out at once */
  return pipe_after_send(a, err);
}

/* Sync and wait for every result; statement errors come back here. */
static int pipe_sync (Applier *a, CdcError *err) {
  if (!a->pipeline)
    return 0;
  if (PQpipelineSync(a->conn) != 1)
    return conn_broken(a, err, "apply: pipeline sync");
  ring_push(a, 's', 0, NULL);
  return pipe_drain(a, DRAIN_ALL, -1, err);
}

/* Leave pipeline mode (after a sync) for plain queries: waits for every
   result, groups in flight included. */
static int pipe_leave (Applier *a, CdcError *err) {
  if (!a->pipeline)
    return 0;
  if (pipe_sync(a, err) != 0)
    return -1;
  if (PQexitPipelineMode(a->conn) != 1 || PQsetnonblocking(a->conn, 0) != 0)
    return conn_broken(a, err, "exit pipeline mode");
  a->pipeline = 0;
  return 0;
}

/* See apply.h: one statement on an idle connection, checked. */
int apply_exec (PGconn *conn, const char *sql, int n, const char *const *vals, PGresult **out,
                const char *what, CdcError *err) {
  PGresult *res = PQexecParams(conn, sql, n, NULL, vals, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(res);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
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

/* A statement outside the pipeline (left first); rows go to *out when
   asked. */
static int exec_params (Applier *a, const char *sql, int n, const char *const *vals,
                        PGresult **out, const char *what, CdcError *err) {
  if (pipe_leave(a, err) != 0)
    return -1;
  return apply_exec(a->conn, sql, n, vals, out, what, err);
}

/* }====================================================== */

/*
** {======================================================
** Session and progress
** =======================================================
*/

/* Create the replication origin when missing and bind this session to
   it, in one round trip; a predecessor's backend that still holds it is
   waited for. */
static int setup_origin (Applier *a, CdcError *err) {
  char *lit = PQescapeLiteral(a->conn, a->origin, strlen(a->origin));
  Buf sql = BUF_INIT;
  int tries, rc = -1;
  if (lit == NULL)
    return conn_broken(a, err, "quote the replication origin's name");
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
    if (strcmp(err->sqlstate, "55006") != 0 || tries >= 50 || aborted(a))
      break;
    usleep(200000);
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
  if (exec_params(a, "CREATE SCHEMA IF NOT EXISTS pgtide", 0, NULL, NULL,
                  "create schema pgtide on the target", err) != 0 ||
      exec_params(a,
        "CREATE TABLE IF NOT EXISTS pgtide.cdc_progress (name text PRIMARY KEY, "
        "lsn pg_lsn NOT NULL, commit_time timestamptz, updated_at timestamptz NOT NULL DEFAULT now(), "
        "migration text)", 0, NULL, NULL, "create table pgtide.cdc_progress on the target", err) != 0 ||
      exec_params(a, "ALTER TABLE pgtide.cdc_progress ADD COLUMN IF NOT EXISTS migration text", 0, NULL,
                  NULL, "add column migration to pgtide.cdc_progress", err) != 0)
    return -1;
  if (a->identity == NULL)
    return 0;
  vals[0] = a->origin;
  if (exec_params(a, "SELECT migration FROM pgtide.cdc_progress WHERE name = $1", 1, vals, &res,
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

/* Free a relation cache entry (NULL is fine). */
static void rel_free (Rel *r) {
  int i;
  if (r == NULL)
    return;
  for (i = 0; i < r->ncols; i++) {
    free(r->cols[i].name);
    free(r->cols[i].qname);
  }
  for (i = 0; i < r->nstmts; i++)
    free(r->stmts[i].key);
  free(r->stmts);
  free(r->cols);
  free(r->keys);
  free(r->nspname);
  free(r->relname);
  free(r->qname);
  free(r->display);
  PQclear(r->catalog);
  free(r);
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
    rc = exec_params(a, "SELECT pg_replication_origin_progress($1, true)", 1, vals, &res,
                     "read the replication origin progress", err);
  else
    rc = exec_params(a, "SELECT lsn FROM pgtide.cdc_progress WHERE name = $1", 1, vals, &res,
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

/* }====================================================== */

/*
** {======================================================
** Relation cache and schema drift
** =======================================================
*/

/* The relation cache: open addressing on the source relation id. */
static Rel **rel_slot (Applier *a, uint32_t relid) {
  size_t i = (relid * 2654435761u) & (a->rel_cap - 1);
  while (a->rels[i] != NULL && a->rels[i]->relid != relid)
    i = (i + 1) & (a->rel_cap - 1);
  return &a->rels[i];
}

static Rel *rel_find (Applier *a, uint32_t relid) {
  return a->rel_cap == 0 ? NULL : *rel_slot(a, relid);
}

/* Insert or replace.  A replaced entry is retired, not freed: results
   still pending in the pipeline may point at it (freed by
   apply_close). */
static void rel_put (Applier *a, Rel *r) {
  Rel **slot;
  if ((a->nrels + 1) * 2 > a->rel_cap) {
    Rel **old = a->rels;
    size_t oldcap = a->rel_cap, i;
    a->rel_cap = oldcap ? oldcap * 2 : 64;
    a->rels = xcalloc(a->rel_cap, sizeof(Rel *));
    for (i = 0; i < oldcap; i++)
      if (old[i] != NULL)
        *rel_slot(a, old[i]->relid) = old[i];
    free(old);
  }
  slot = rel_slot(a, r->relid);
  if (*slot == NULL) {
    a->nrels++;
  } else {
    if (!(*slot)->resolved)
      a->unresolved--;
    (*slot)->retired = a->retired;
    a->retired = *slot;
  }
  *slot = r;
}

/* Type messages: source type oid -> "namespace.name", for drift checks
   of user-defined types (their oids differ between servers). */
static const char *type_name (Applier *a, uint32_t oid) {
  size_t i;
  for (i = 0; i < a->ntypes; i++)
    if (a->types[i].oid == oid)
      return a->types[i].name;
  return NULL;
}

/* Remember (or update) the name of a type from a Type message, for
   messages about columns of that type. */
static void type_put (Applier *a, const PgoMsg *m) {
  size_t i;
  Buf b = BUF_INIT;
  buf_printf(&b, "%s.%s", m->nspname[0] ? m->nspname : "pg_catalog", m->relname);
  for (i = 0; i < a->ntypes; i++)
    if (a->types[i].oid == m->typoid) {
      free(a->types[i].name);
      a->types[i].name = buf_steal(&b);
      return;
    }
  if (a->ntypes == a->type_cap) {
    a->type_cap = a->type_cap ? a->type_cap * 2 : 16;
    a->types = xrealloc(a->types, a->type_cap * sizeof(TypeName));
  }
  a->types[a->ntypes].oid = m->typoid;
  a->types[a->ntypes].name = buf_steal(&b);
  a->ntypes++;
}

/* Whether a Relation message describes the cached definition (the
   server re-sends unchanged ones after cache invalidations). */
static int rel_same (const Rel *r, const PgoMsg *m) {
  int i;
  const char *nsp = m->nspname[0] ? m->nspname : "pg_catalog";
  if (strcmp(r->nspname, nsp) != 0 || strcmp(r->relname, m->relname) != 0 ||
      r->replident != m->replident || r->ncols != m->ncols)
    return 0;
  for (i = 0; i < r->ncols; i++)
    if (strcmp(r->cols[i].name, m->cols[i].name) != 0 || r->cols[i].typoid != m->cols[i].typoid ||
        r->cols[i].typmod != m->cols[i].typmod ||
        r->cols[i].key != ((m->cols[i].flags & PGO_COL_KEY) != 0))
      return 0;
  return 1;
}

/* Fill a schema drift error naming the table and column; returns -1. */
static int drift (CdcError *err, const Rel *r, const char *column, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

static int drift (CdcError *err, const Rel *r, const char *column, const char *fmt, ...) {
  va_list ap;
  Buf b = BUF_INIT;
  va_start(ap, fmt);
  buf_vprintf(&b, fmt, ap);
  va_end(ap);
  cdc_err_set(err, CDC_ERR_DRIFT, 0, "schema drift on %s: %s", r->display, buf_cstr(&b));
  strlcpy_(err->table, r->display, sizeof(err->table));
  strlcpy_(err->column, column != NULL ? column : "", sizeof(err->column));
  buf_free(&b);
  return -1;
}

/* The target's name for a built-in type, for a drift message (the
   pipeline is left for it: the session ends with that error anyway). */
static void builtin_type_name (Applier *a, uint32_t oid, int32_t typmod, char *out, size_t n) {
  char o[16], t[16];
  const char *vals[2];
  PGresult *res = NULL;
  CdcError ignore;
  snprintf(o, sizeof(o), "%u", oid);
  snprintf(t, sizeof(t), "%d", typmod);
  vals[0] = o;
  vals[1] = t;
  if (exec_params(a, "SELECT format_type($1::oid, $2::int)", 2, vals, &res, "format_type", &ignore) == 0 &&
      PQntuples(res) == 1)
    strlcpy_(out, PQgetvalue(res, 0, 0), n);
  else
    snprintf(out, n, "type %u", oid);
  PQclear(res);
}

/*
** A cache entry for a Relation message, from the source's side only
** (names, columns, identity, the table_sync position); the target's
** side comes from rel_request/rel_resolve.
*/
static Rel *rel_new (Applier *a, const PgoMsg *m) {
  Rel *r = xcalloc(1, sizeof(Rel));
  Rel *old = rel_find(a, m->relid);
  Buf b = BUF_INIT;
  int i;
  r->relid = m->relid;
  r->nspname = xstrdup(m->nspname[0] ? m->nspname : "pg_catalog");
  r->relname = xstrdup(m->relname);
  for (i = 0; i < a->nsync; i++)
    if (strcmp(a->sync[i].schema, r->nspname) == 0 && strcmp(a->sync[i].table, r->relname) == 0)
      r->sync_lsn = a->sync[i].lsn;
  quote_ident(&b, r->nspname);
  buf_putc(&b, '.');
  quote_ident(&b, r->relname);
  r->qname = buf_steal(&b);
  buf_printf(&b, "%s.%s", r->nspname, r->relname);
  r->display = buf_steal(&b);
  r->replident = m->replident;
  r->full = m->replident == 'f';
  r->ncols = m->ncols;
  r->cols = xcalloc((size_t)(m->ncols > 0 ? m->ncols : 1), sizeof(RelCol));
  r->keys = xcalloc((size_t)(m->ncols > 0 ? m->ncols : 1), sizeof(int));
  r->gen = old != NULL ? old->gen + 1 : 0;
  for (i = 0; i < m->ncols; i++) {
    r->cols[i].name = xstrdup(m->cols[i].name);
    r->cols[i].qname = quoted(m->cols[i].name);
    r->cols[i].typoid = m->cols[i].typoid;
    r->cols[i].typmod = m->cols[i].typmod;
    r->cols[i].key = (m->cols[i].flags & PGO_COL_KEY) != 0;
    if (r->cols[i].key && !r->full)
      r->keys[r->nkeys++] = i;
  }
  snprintf(r->tempname, sizeof(r->tempname), "pgtide_s_%u_%u", r->relid, r->gen);
  return r;
}

/*
** Ask the target for a relation's definition, in the pipeline (with a
** flush request, so the answer comes without a sync): its columns, and
** the keys of its unique indexes.  rel_resolve() reads the answer when
** the relation's first change is applied; tables that appear together
** cost one round trip.
*/
static int rel_request (Applier *a, Rel *r, CdcError *err) {
  static const char *const sql =
    "SELECT c.oid, c.relkind::text, a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), "
    "a.attnotnull, a.atthasdef, a.attidentity::text, a.attgenerated::text, a.attnum, "
    "(WITH RECURSIVE b AS (SELECT t.oid, t.typtype, t.typbasetype, t.typnamespace, t.typname "
    "UNION ALL SELECT bt.oid, bt.typtype, bt.typbasetype, bt.typnamespace, bt.typname FROM b "
    "JOIN pg_type bt ON bt.oid = b.typbasetype WHERE b.typtype = 'd') "
    "SELECT bn.nspname || '.' || b.typname FROM b JOIN pg_namespace bn ON bn.oid = b.typnamespace "
    "WHERE b.typtype <> 'd'), "
    "(SELECT string_agg(i.indkey::text, ',') FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique "
    "AND i.indimmediate AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
    "JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace tn ON tn.oid = t.typnamespace "
    "WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') ORDER BY a.attnum";
  const char *vals[2];
  vals[0] = r->nspname;
  vals[1] = r->relname;
  if (pipe_enter(a, err) != 0)
    return -1;
  if (!PQsendQueryParams(a->conn, sql, 2, NULL, vals, NULL, NULL, 0) || PQsendFlushRequest(a->conn) != 1)
    return conn_broken(a, err, "apply: send");
  ring_push(a, 'r', 0, r);
  a->catalog_pending++;
  a->unresolved++;
  return pipe_after_send(a, err);
}

/* Whether a unique index's keys ("3 1", attnums) are exactly the
   relation's identity columns (attnums[] maps source columns to the
   target's attnums). */
static int index_is_identity (const Rel *r, const int *attnums, const char *p, const char *end) {
  int nk = 0, i;
  while (p < end) {
    char *next;
    int att = (int)strtol(p, &next, 10), found = 0;
    if (next == p)
      break;
    for (i = 0; i < r->nkeys && !found; i++)
      found = attnums[r->keys[i]] == att;
    if (!found)
      return 0;
    nk++;
    p = next;
    while (p < end && *p == ' ')
      p++;
  }
  return nk == r->nkeys;
}

/*
** The target's side of a relation, from rel_request's answer: check
** every column (exists, same type, not generated there), note identity
** columns, whether a unique index covers exactly the replica identity
** (needed by the set path), and the relkind.  -1 with a drift error
** naming table and column on mismatch.
*/
static int rel_apply_catalog (Applier *a, Rel *r, PGresult *res, CdcError *err) {
  int i, j, nt = PQntuples(res), *attnums;
  if (nt == 0)
    return drift(err, r, NULL, "table %s does not exist on the target", r->display);
  attnums = xcalloc((size_t)(r->ncols > 0 ? r->ncols : 1), sizeof(int));
  r->partitioned = strcmp(PQgetvalue(res, 0, 1), "p") == 0;
  for (i = 0; i < r->ncols; i++) {
    RelCol *c = &r->cols[i];
    for (j = 0; j < nt; j++)
      if (strcmp(PQgetvalue(res, j, 2), c->name) == 0)
        break;
    if (j == nt) {
      free(attnums);
      return drift(err, r, c->name, "column \"%s\" exists on the source but not on the target", c->name);
    }
    if (PQgetvalue(res, j, 8)[0] != '\0') {
      free(attnums);
      return drift(err, r, c->name, "column \"%s\" is a generated column on the target but not on the source",
                   c->name);
    }
    {
      uint32_t toid = (uint32_t)strtoul(PQgetvalue(res, j, 3), NULL, 10);
      const char *tname = PQgetvalue(res, j, 10);
      if (c->typoid < FIRST_NORMAL_OID && toid != c->typoid) {
        char sname[128];
        builtin_type_name(a, c->typoid, c->typmod, sname, sizeof(sname));
        free(attnums);
        return drift(err, r, c->name, "column \"%s\" is %s on the source but %s on the target", c->name,
                     sname, PQgetvalue(res, j, 4));
      }
      if (c->typoid >= FIRST_NORMAL_OID && type_name(a, c->typoid) != NULL &&
          strcmp(type_name(a, c->typoid), tname) != 0) {
        free(attnums);
        return drift(err, r, c->name, "column \"%s\" is %s on the source but %s on the target", c->name,
                     type_name(a, c->typoid), tname);
      }
    }
    c->identity_always = strcmp(PQgetvalue(res, j, 7), "a") == 0;
    if (c->identity_always)
      r->any_identity_always = 1;
    attnums[i] = atoi(PQgetvalue(res, j, 9));
  }
  /* a target-only NOT NULL column without a default breaks every INSERT */
  for (j = 0; j < nt; j++) {
    const char *name = PQgetvalue(res, j, 2);
    int known = 0;
    for (i = 0; i < r->ncols && !known; i++)
      known = strcmp(r->cols[i].name, name) == 0;
    if (!known && strcmp(PQgetvalue(res, j, 5), "t") == 0 && strcmp(PQgetvalue(res, j, 6), "f") == 0 &&
        PQgetvalue(res, j, 7)[0] == '\0' && PQgetvalue(res, j, 8)[0] == '\0') {
      free(attnums);
      return drift(err, r, name, "column \"%s\" exists only on the target and is NOT NULL without a default",
                   name);
    }
  }
  /* set path: a unique index on exactly the identity columns */
  if (r->nkeys > 0 && !r->full) {
    const char *p = PQgetvalue(res, 0, 11), *end;
    while (*p != '\0' && !r->set_ok) {
      end = strchr(p, ',');
      if (end == NULL)
        end = p + strlen(p);
      r->set_ok = index_is_identity(r, attnums, p, end);
      p = *end == ',' ? end + 1 : end;
    }
  }
  for (i = 0; i < a->nrow_only && r->set_ok; i++)
    if (strcmp(a->row_only[i], r->display) == 0)
      r->set_ok = 0;             /* its set-based apply failed once: row by row */
  free(attnums);
  return 0;
}

/*
** Resolve every relation whose definition was asked for: wait for the
** answers (all of them: they were sent together), then check each.
** -1 with err (drift, or a failure in the pipeline).
*/
static int rels_resolve (Applier *a, CdcError *err) {
  size_t i;
  if (a->unresolved == 0)
    return 0;
  if (a->catalog_pending > 0) {
    if (PQflush(a->conn) < 0)
      return conn_broken(a, err, "apply connection");
    if (pipe_drain(a, DRAIN_CATALOG, -1, err) != 0)
      return -1;
  }
  for (i = 0; i < a->rel_cap; i++) {
    Rel *r = a->rels[i];
    int rc;
    if (r == NULL || r->resolved)
      continue;
    if (r->catalog == NULL) {
      cdc_err_set(err, CDC_ERR_PROTOCOL, 1, "apply: no answer about table %s", r->display);
      return -1;
    }
    rc = rel_apply_catalog(a, r, r->catalog, err);
    PQclear(r->catalog);
    r->catalog = NULL;
    if (rc != 0)
      return -1;
    r->resolved = 1;
    a->unresolved--;
  }
  return 0;
}

/* }====================================================== */

/*
** {======================================================
** Row path: one prepared statement per change
** =======================================================
*/

/* The prepared statement of this shape, or NULL when not prepared yet
   (the caller then builds the SQL and calls stmt_prepare). */
static const char *stmt_find (const Rel *r, const char *key) {
  int i;
  for (i = 0; i < r->nstmts; i++)
    if (strcmp(r->stmts[i].key, key) == 0)
      return r->stmts[i].name;
  return NULL;
}

/* Prepare (in the pipeline) the statement for this shape; its name. */
static const char *stmt_prepare (Applier *a, Rel *r, const char *key, const char *sql, int nparams,
                                 CdcError *err) {
  Stmt *s;
  if (r->nstmts == r->stmtcap) {
    r->stmtcap = r->stmtcap ? r->stmtcap * 2 : 4;
    r->stmts = xrealloc(r->stmts, (size_t)r->stmtcap * sizeof(Stmt));
  }
  s = &r->stmts[r->nstmts];
  snprintf(s->name, sizeof(s->name), "pgtide_%u", ++a->stmt_seq);
  if (pipe_enter(a, err) != 0)
    return NULL;
  if (!PQsendPrepare(a->conn, s->name, sql, nparams, NULL)) {
    conn_broken(a, err, "apply: prepare");
    return NULL;
  }
  ring_push(a, 'q', 0, r);
  s->key = xstrdup(key);
  r->nstmts++;
  return s->name;
}

/* WHERE clause matching one row of a REPLICA IDENTITY FULL table by its
   old values, compared as text (types without equality work too); at
   most one row, as the source changed one.  Parameters from *np on. */
static void full_where (Buf *b, Rel *r, const PgoTuple *old, int *np) {
  int i, first = 1;
  buf_printf(b, " WHERE ctid = (SELECT ctid FROM %s%s WHERE ", r->partitioned ? "" : "ONLY ",
             r->qname);
  for (i = 0; i < r->ncols; i++) {
    if (old->vals[i].kind == PGO_VAL_UNCHANGED)
      continue;
    if (!first)
      buf_puts(b, " AND ");
    first = 0;
    if (old->vals[i].kind == PGO_VAL_NULL)
      buf_printf(b, "%s IS NULL", r->cols[i].qname);
    else
      buf_printf(b, "%s::text = $%d", r->cols[i].qname, ++*np);
  }
  if (first)
    buf_puts(b, "true");
  buf_puts(b, " LIMIT 1)");
}

/* A tuple must have the relation's column count. */
static int check_tuple (Rel *r, const PgoTuple *t, const char *what, CdcError *err) {
  if (t->ncols != r->ncols) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s on %s has %d columns, the relation %d", what,
                r->display, t->ncols, r->ncols);
    return -1;
  }
  return 0;
}

/* INSERT of one row through its prepared statement. */
static int send_insert (Applier *a, Rel *r, const PgoMsg *m, CdcError *err) {
  const char *name;
  int i;
  if (check_tuple(r, &m->newtup, "INSERT", err) != 0)
    return -1;
  name = stmt_find(r, "I");
  if (name == NULL) {
    buf_reset(&a->sql);
    buf_printf(&a->sql, "INSERT INTO %s (", r->qname);
    for (i = 0; i < r->ncols; i++)
      buf_printf(&a->sql, "%s%s", i ? ", " : "", r->cols[i].qname);
    buf_printf(&a->sql, ")%s VALUES (", r->any_identity_always ? " OVERRIDING SYSTEM VALUE" : "");
    for (i = 0; i < r->ncols; i++)
      buf_printf(&a->sql, "%s$%d", i ? ", " : "", i + 1);
    buf_putc(&a->sql, ')');
    name = stmt_prepare(a, r, "I", a->sql.data, r->ncols, err);
    if (name == NULL)
      return -1;
  }
  buf_reset(&a->pbuf);
  for (i = 0; i < r->ncols; i++) {
    if (m->newtup.vals[i].kind == PGO_VAL_UNCHANGED) {
      cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "INSERT on %s carries an unchanged-TOAST column", r->display);
      return -1;
    }
    param_set(a, i, &m->newtup.vals[i]);
  }
  params_finish(a, r->ncols);
  if (!PQsendQueryPrepared(a->conn, name, r->ncols, a->pvals, a->plens, a->pfmts, 0))
    return conn_broken(a, err, "apply: send");
  ring_push(a, 'q', 'I', r);
  a->stats.inserts++;
  return pipe_after_send(a, err);
}

/*
** UPDATE and DELETE.  The row is found by the old key tuple when the
** source sent one ('K': the key changed or has TOASTed values), by the
** key columns of the new tuple otherwise, and by all old values for
** REPLICA IDENTITY FULL ('O').  UPDATE sets every column the source sent
** except unchanged TOAST values and GENERATED ALWAYS identity columns.
*/
static int send_upddel (Applier *a, Rel *r, const PgoMsg *m, CdcError *err) {
  int is_upd = m->kind == PGO_UPDATE, i, np = 0, nset = 0;
  const PgoTuple *old = m->old_kind ? &m->oldtup : NULL;
  const PgoTuple *keysrc = old != NULL ? old : &m->newtup;
  const char *name;
  if (!r->full && r->nkeys == 0 && m->old_kind != 'O') {
    cdc_err_set(err, CDC_ERR_CONFIG, 0,
                "%s on %s, which has no replica identity: add a primary key or set REPLICA IDENTITY FULL",
                is_upd ? "UPDATE" : "DELETE", r->display);
    strlcpy_(err->table, r->display, sizeof(err->table));
    return -1;
  }
  if ((is_upd && check_tuple(r, &m->newtup, "UPDATE", err) != 0) ||
      (old != NULL && check_tuple(r, old, is_upd ? "UPDATE" : "DELETE", err) != 0))
    return -1;
  if (!is_upd && old == NULL) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "DELETE on %s without an old tuple", r->display);
    return -1;
  }
  if ((m->old_kind == 'O' || r->full) && old == NULL) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "UPDATE on %s (REPLICA IDENTITY FULL) without the old row",
                r->display);
    return -1;
  }
  if (is_upd) {
    for (i = 0; i < r->ncols; i++)
      if (m->newtup.vals[i].kind != PGO_VAL_UNCHANGED && !r->cols[i].identity_always)
        nset++;
    if (nset == 0) {  /* nothing the target can change: only unchanged TOAST */
      a->stats.updates++;
      return 0;
    }
  }
  /* the statement's shape is its cache key */
  buf_reset(&a->sql2);
  buf_putc(&a->sql2, is_upd ? 'U' : 'D');
  buf_putc(&a->sql2, m->old_kind ? m->old_kind : 'N');
  if (is_upd)
    for (i = 0; i < r->ncols; i++)
      buf_putc(&a->sql2, m->newtup.vals[i].kind == PGO_VAL_UNCHANGED ? 'u' : '.');
  if (m->old_kind == 'O')
    for (i = 0; i < r->ncols; i++)
      buf_putc(&a->sql2, old->vals[i].kind == PGO_VAL_NULL ? 'n'
                         : old->vals[i].kind == PGO_VAL_UNCHANGED ? 'u' : '.');
  name = stmt_find(r, a->sql2.data);
  if (name == NULL) {
    buf_reset(&a->sql);
    if (is_upd) {
      int n = 0;
      buf_printf(&a->sql, "UPDATE %s%s SET ", r->partitioned ? "" : "ONLY ", r->qname);
      for (i = 0; i < r->ncols; i++) {
        if (m->newtup.vals[i].kind == PGO_VAL_UNCHANGED || r->cols[i].identity_always)
          continue;
        buf_printf(&a->sql, "%s%s = $%d", n++ ? ", " : "", r->cols[i].qname, ++np);
      }
    } else {
      buf_printf(&a->sql, "DELETE FROM %s%s", r->partitioned ? "" : "ONLY ", r->qname);
    }
    if (m->old_kind == 'O' || r->full) {
      full_where(&a->sql, r, old, &np);
    } else {
      buf_puts(&a->sql, " WHERE ");
      for (i = 0; i < r->nkeys; i++)
        buf_printf(&a->sql, "%s%s = $%d", i ? " AND " : "", r->cols[r->keys[i]].qname, ++np);
    }
    name = stmt_prepare(a, r, a->sql2.data, a->sql.data, np, err);
    if (name == NULL)
      return -1;
  }

  buf_reset(&a->pbuf);
  np = 0;
  if (is_upd)
    for (i = 0; i < r->ncols; i++)
      if (m->newtup.vals[i].kind != PGO_VAL_UNCHANGED && !r->cols[i].identity_always)
        param_set(a, np++, &m->newtup.vals[i]);
  if (m->old_kind == 'O' || r->full) {
    for (i = 0; i < r->ncols; i++) {
      if (old->vals[i].kind == PGO_VAL_BINARY) {
        cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "binary values cannot match REPLICA IDENTITY FULL rows (%s)",
                    r->display);
        return -1;
      }
      if (old->vals[i].kind == PGO_VAL_TEXT)
        param_set(a, np++, &old->vals[i]);   /* compared as text */
    }
  } else {
    for (i = 0; i < r->nkeys; i++) {
      const PgoValue *v = &keysrc->vals[r->keys[i]];
      if (v->kind == PGO_VAL_UNCHANGED) {
        cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s on %s: key column \"%s\" was not sent",
                    is_upd ? "UPDATE" : "DELETE", r->display, r->cols[r->keys[i]].name);
        return -1;
      }
      param_set(a, np++, v);
    }
  }
  params_finish(a, np);
  if (!PQsendQueryPrepared(a->conn, name, np, a->pvals, a->plens, a->pfmts, 0))
    return conn_broken(a, err, "apply: send");
  ring_push(a, 'c', is_upd ? 'U' : 'D', r);
  if (is_upd)
    a->stats.updates++;
  else
    a->stats.deletes++;
  return pipe_after_send(a, err);
}

/* TRUNCATE of every listed relation, with the source's options. */
static int send_truncate (Applier *a, const PgoMsg *m, PgLsn end_lsn, CdcError *err) {
  int i, n = 0;
  Rel *last = NULL;
  if (rels_resolve(a, err) != 0)
    return -1;
  buf_reset(&a->sql);
  buf_puts(&a->sql, "TRUNCATE ");
  for (i = 0; i < m->nrels; i++) {
    Rel *r = rel_find(a, m->relids[i]);
    if (r == NULL) {
      cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "TRUNCATE of relation %u before its Relation message",
                  m->relids[i]);
      return -1;
    }
    if (r->sync_lsn != 0 && end_lsn <= r->sync_lsn) {  /* already in the table's copy */
      a->stats.skipped++;
      continue;
    }
    buf_printf(&a->sql, "%s%s%s", n++ ? ", " : "", r->partitioned ? "" : "ONLY ", r->qname);
    last = r;
  }
  if (n == 0)
    return 0;
  if (m->flags & PGO_TRUNCATE_RESTART_IDENTITY)
    buf_puts(&a->sql, " RESTART IDENTITY");
  if (m->flags & PGO_TRUNCATE_CASCADE)
    buf_puts(&a->sql, " CASCADE");
  a->stats.truncates++;
  return pipe_exec(a, a->sql.data, 'q', n == 1 ? last : NULL, err);
}

/* Decode a stored record (flag byte + pgoutput message). */
static int decode_rec (Applier *a, const uint8_t *rec, size_t len, PgoMsg *m, CdcError *err) {
  char msg[256];
  if (len < 2) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "apply: empty change record");
    return -1;
  }
  a->dec.in_stream = (rec[0] & APPLY_REC_STREAMED) != 0;
  a->dec.stream_xid = a->dec.in_stream ? 1 : 0;
  if (pgo_decode(&a->dec, rec + 1, len - 1, m, msg, sizeof(msg)) != 0) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s", msg);
    return -1;
  }
  return 0;
}

/* One decoded change by the row path. */
static int row_apply (Applier *a, const PgoMsg *m, CdcError *err) {
  Rel *r = rel_find(a, m->relid);
  if (r == NULL) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s of relation %u before its Relation message",
                pgo_kind_name(m->kind), m->relid);
    return -1;
  }
  a->stats.row_changes++;
  if (pipe_enter(a, err) != 0)
    return -1;
  return m->kind == PGO_INSERT ? send_insert(a, r, m, err) : send_upddel(a, r, m, err);
}

/* Segment changes [from, to) by the row path, in source order. */
static int row_apply_range (Applier *a, size_t from, size_t to, CdcError *err) {
  size_t i;
  for (i = from; i < to; i++) {
    if (decode_rec(a, (const uint8_t *)a->seg.data + a->ents[i].off, a->ents[i].len, &a->msg, err) != 0 ||
        row_apply(a, &a->msg, err) != 0)
      return -1;
  }
  return 0;
}

/* }====================================================== */

/*
** {======================================================
** Set path: net effect per key, rows as array parameters, set-based statements
** =======================================================
*/

/* Empty the net state (keeps the allocations). */
static void net_clear (Applier *a) {
  size_t i;
  for (i = 0; i < a->nnet; i++)
    free(a->net[i].vals);
  a->nnet = 0;
  buf_reset(&a->keys);
  if (a->nethash != NULL)
    memset(a->nethash, 0, a->nethash_cap * sizeof(int));
}

/* Key bytes of a tuple: per key column, kind, length, data. */
static void make_key (Buf *b, Rel *r, const PgoTuple *t) {
  int i;
  buf_append(b, &r->relid, sizeof(r->relid));
  for (i = 0; i < r->nkeys; i++) {
    const PgoValue *v = &t->vals[r->keys[i]];
    uint32_t len = v->len;
    buf_putc(b, v->kind);
    buf_append(b, &len, sizeof(len));
    buf_append(b, v->data, v->len);
  }
}

/* The entry for key bytes; with 'create', a new one when absent (the
   hash table is rebuilt as it grows).  NULL when absent otherwise. */
static NetEnt *net_find (Applier *a, const char *key, size_t keylen, int create) {
  uint32_t h = hash_bytes(key, keylen);
  size_t i;
  NetEnt *e;
  if ((a->nnet + 1) * 2 > a->nethash_cap) {
    size_t k;
    a->nethash_cap = a->nethash_cap ? a->nethash_cap * 2 : 1024;
    free(a->nethash);
    a->nethash = xcalloc(a->nethash_cap, sizeof(int));
    for (k = 0; k < a->nnet; k++) {
      i = a->net[k].hash & (a->nethash_cap - 1);
      while (a->nethash[i] != 0)
        i = (i + 1) & (a->nethash_cap - 1);
      a->nethash[i] = (int)k + 1;
    }
  }
  i = h & (a->nethash_cap - 1);
  while (a->nethash[i] != 0) {
    e = &a->net[a->nethash[i] - 1];
    if (e->hash == h && e->keylen == keylen && memcmp(a->keys.data + e->keyoff, key, keylen) == 0)
      return e;
    i = (i + 1) & (a->nethash_cap - 1);
  }
  if (!create)
    return NULL;
  if (a->nnet == a->net_cap) {
    a->net_cap = a->net_cap ? a->net_cap * 2 : 1024;
    a->net = xrealloc(a->net, a->net_cap * sizeof(NetEnt));
  }
  e = &a->net[a->nnet];
  memset(e, 0, sizeof(*e));
  e->hash = h;
  e->existed = -1;               /* set by the first change that touches it */
  e->keyoff = a->keys.len;
  e->keylen = keylen;
  buf_append(&a->keys, key, keylen);
  a->nethash[i] = (int)++a->nnet;
  return e;
}

/* Record an entry's final state and values (pointers into the segment). */
static void net_set (NetEnt *e, Rel *r, char op, const PgoTuple *t) {
  e->rel = r;
  e->op = op;
  if (e->vals == NULL)
    e->vals = xmalloc((size_t)(r->ncols > 0 ? r->ncols : 1) * sizeof(PgoValue));
  memcpy(e->vals, t->vals, (size_t)r->ncols * sizeof(PgoValue));
}

/* Whether a tuple holds an unchanged TOAST value (an UPDATE that must
   not overwrite that column). */
static int has_unchanged (const PgoValue *v, int n) {
  int i;
  for (i = 0; i < n; i++)
    if (v[i].kind == PGO_VAL_UNCHANGED)
      return 1;
  return 0;
}

/* The entry of a key; 'existed' records whether the row was there
   before the segment (from the first change that touches the key). */
static NetEnt *net_touch (Applier *a, const Buf *key, int existed) {
  NetEnt *e = net_find(a, key->data, key->len, 1);
  if (e->existed < 0)
    e->existed = existed;
  return e;
}

/*
** Fold one change into the net state.  Returns 1 when the change can
** not be expressed there (the set path must stop before it and send it
** alone): a key change whose new row has unchanged TOAST values we do
** not know, binary values, a table without a usable key.
*/
static int net_add (Applier *a, const PgoMsg *m, Rel *r) {
  Buf k1 = BUF_INIT, k2 = BUF_INIT;
  NetEnt *e, *eo;
  int i, rc = 0;
  const PgoTuple *t = m->kind == PGO_DELETE ? &m->oldtup : &m->newtup;
  if (!r->set_ok || t->ncols != r->ncols || (m->old_kind && m->oldtup.ncols != r->ncols))
    return 1;
  for (i = 0; i < t->ncols; i++)
    if (t->vals[i].kind == PGO_VAL_BINARY)
      return 1;
  if (m->kind == PGO_INSERT) {
    make_key(&k1, r, t);
    net_set(net_touch(a, &k1, 0), r, 'i', t);
  } else if (m->kind == PGO_DELETE) {
    make_key(&k1, r, t);
    net_set(net_touch(a, &k1, 1), r, 'd', t);
  } else {
    PgoValue *merged;
    PgoTuple mt;
    make_key(&k1, r, m->old_kind ? &m->oldtup : t);
    for (i = 0; i < r->nkeys; i++)
      if (t->vals[r->keys[i]].kind == PGO_VAL_UNCHANGED && !m->old_kind) {
        rc = 1;               /* key value not sent: cannot place the row */
        goto done;
      }
    make_key(&k2, r, t);
    eo = net_find(a, k1.data, k1.len, 0);
    merged = xmalloc((size_t)r->ncols * sizeof(PgoValue));
    memcpy(merged, t->vals, (size_t)r->ncols * sizeof(PgoValue));
    if (eo != NULL && eo->op != 'd')
      for (i = 0; i < r->ncols; i++)
        if (merged[i].kind == PGO_VAL_UNCHANGED)
          merged[i] = eo->vals[i];
    mt.ncols = r->ncols;
    mt.vals = merged;
    if (k1.len == k2.len && memcmp(k1.data, k2.data, k1.len) == 0) {
      e = eo != NULL ? eo : net_touch(a, &k2, 1);
      net_set(e, r, has_unchanged(merged, r->ncols) ? 'u' : 'i', &mt);
    } else if (has_unchanged(merged, r->ncols)) {
      rc = 1;                 /* key change with TOAST values only the old row has */
    } else {
      /* the old key goes away (its key values come from the old tuple),
         the new key gets the whole row */
      if (eo == NULL)
        eo = net_touch(a, &k1, 1);
      net_set(eo, r, 'd', m->old_kind ? &m->oldtup : t);
      net_set(net_touch(a, &k2, 0), r, 'i', &mt);
    }
    free(merged);
  }
done:
  buf_free(&k1);
  buf_free(&k2);
  return rc;
}

/*
** What the target must do for an entry: 'd' delete (existed, now
** absent), 'f' set every column (existed, whole row known), 'u' set the
** sent columns (existed, unchanged-TOAST columns kept), 'i' insert (new
** row), 0 nothing (inserted and deleted within the segment).
*/
static char net_eff (const NetEnt *e) {
  if (e->op == 'd')
    return e->existed ? 'd' : 0;
  if (e->op == 'u')
    return 'u';
  return e->existed ? 'f' : 'i';
}

/* Append a value to a row literal (record_in's syntax): a text value
   double-quoted, quotes and backslashes escaped with a backslash; NULL
   and unchanged TOAST values as an empty field, which reads as NULL
   (an unchanged column is never taken from the literal). */
static void row_value (Buf *b, const PgoValue *v) {
  const char *p, *end, *run;
  if (v->kind != PGO_VAL_TEXT)
    return;
  buf_reserve(b, v->len + 8);
  buf_putc(b, '"');
  for (p = run = v->data, end = v->data + v->len; p < end; p++) {
    if (*p != '"' && *p != '\\')
      continue;
    buf_append(b, run, (size_t)(p - run));
    buf_putc(b, '\\');
    run = p;                     /* the character itself starts the next run */
  }
  buf_append(b, run, (size_t)(end - run));
  buf_putc(b, '"');
}

static void arr_u32 (Buf *b, uint32_t v) {
  uint8_t x[4];
  pgo_put_u32(x, v);
  buf_append(b, x, 4);
}

/*
** The parameter of a set-based statement: a one-dimensional text[] in
** binary format (no NULL elements), one row literal per element, built
** in a->arr.  Binary elements need no escaping beyond the literal's
** own.  arr_begin, then arr_row per row, then arr_finish with the count.
*/
static void arr_begin (Applier *a) {
  buf_reset(&a->arr);
  arr_u32(&a->arr, 1);           /* dimensions */
  arr_u32(&a->arr, 0);           /* no NULL elements */
  arr_u32(&a->arr, 25);          /* element type: text */
  arr_u32(&a->arr, 0);           /* length, set by arr_finish */
  arr_u32(&a->arr, 1);           /* lower bound */
}

/* One element: "(v1,v2,...)" with the entry's values in source order. */
static void arr_row (Applier *a, const NetEnt *e) {
  size_t at = a->arr.len;
  int i;
  arr_u32(&a->arr, 0);
  buf_putc(&a->arr, '(');
  for (i = 0; i < e->rel->ncols; i++) {
    if (i > 0)
      buf_putc(&a->arr, ',');
    row_value(&a->arr, &e->vals[i]);
  }
  buf_putc(&a->arr, ')');
  pgo_put_u32((uint8_t *)a->arr.data + at, (uint32_t)(a->arr.len - at - 4));
}

static void arr_finish (Applier *a, uint32_t n) {
  pgo_put_u32((uint8_t *)a->arr.data + 12, n);
}

/*
** The row type of a relation's changed rows: a temporary table with its
** columns (source order, the target's types and typmods), made once per
** session, in the pipeline.  It never holds rows (nothing to empty
** between groups, however many are in flight); set-based statements cast
** their row literals to its type, so every value goes through its
** column type's input function, as COPY would.  If the group that
** creates it is lost, so is the session and the Applier.
*/
static int temp_ensure (Applier *a, Rel *r, CdcError *err) {
  int i;
  if (r->temp_ready)
    return 0;
  buf_reset(&a->sql2);
  buf_printf(&a->sql2, "CREATE TEMP TABLE IF NOT EXISTS %s AS SELECT ", r->tempname);
  for (i = 0; i < r->ncols; i++)
    buf_printf(&a->sql2, "%s%s", i ? ", " : "", r->cols[i].qname);
  buf_printf(&a->sql2, " FROM %s%s WITH NO DATA", r->partitioned ? "" : "ONLY ", r->qname);
  if (pipe_exec(a, a->sql2.data, 'q', r, err) != 0)
    return -1;
  r->temp_ready = 1;
  return 0;
}

/* "t.k = s.k AND ..." for the identity columns. */
static void key_match (Buf *b, Rel *r) {
  int i;
  for (i = 0; i < r->nkeys; i++)
    buf_printf(b, "%st.%s = s.%s", i ? " AND " : "", r->cols[r->keys[i]].qname, r->cols[r->keys[i]].qname);
}

/* Per-relation counts of the effective operations. */
typedef struct NetCounts {
  int del, full, part, ins;
} NetCounts;

/* Count the net effects of the chain of keys starting at 'first' (one
   relation's entries in a segment). */
static NetCounts net_counts (Applier *a, int first) {
  NetCounts c = {0, 0, 0, 0};
  int k;
  for (k = first; k >= 0; k = a->net[k].next_in_rel)
    switch (net_eff(&a->net[k])) {
      case 'd': c.del++; break;
      case 'f': c.full++; break;
      case 'u': c.part++; break;
      case 'i': c.ins++; break;
      default: break;
    }
  return c;
}

/* SET list for the columns an UPDATE may change ('mask' marks kept
   unchanged-TOAST columns, NULL for none); returns how many. */
static int set_list (Buf *b, Rel *r, const char *mask) {
  int i, n = 0;
  for (i = 0; i < r->ncols; i++) {
    if ((mask != NULL && mask[i] == '1') || r->cols[i].identity_always || r->cols[i].key)
      continue;
    buf_printf(b, "%s%s = s.%s", n ? ", " : "", r->cols[i].qname, r->cols[i].qname);
    n++;
  }
  return n;
}

/* An entry's unchanged-column mask ('1' kept, '0' sent) into b. */
static void entry_mask (Buf *b, const NetEnt *e) {
  int i;
  buf_reset(b);
  for (i = 0; i < e->rel->ncols; i++)
    buf_putc(b, e->vals[i].kind == PGO_VAL_UNCHANGED ? '1' : '0');
}

/*
** Send one set-based statement for the entries of a relation's chain
** whose effect is 'eff' ('d' delete, 'f' whole-row update, 'u' update
** keeping the columns of 'mask', 'i' insert): their rows become $1, a
** text[] of row literals read back through the relation's row type.
** Nothing is sent when no entry matches.
*/
static int send_set (Applier *a, Rel *r, int first, char eff, const char *mask, CdcError *err) {
  const char *only = r->partitioned ? "" : "ONLY ";
  Buf set = BUF_INIT, mk = BUF_INIT;
  uint32_t n = 0;
  int k, i, rc = 0;
  arr_begin(a);
  for (k = first; k >= 0; k = a->net[k].next_in_rel) {
    NetEnt *e = &a->net[k];
    if (net_eff(e) != eff)
      continue;
    if (mask != NULL) {
      entry_mask(&mk, e);
      if (strcmp(mk.data, mask) != 0)
        continue;
    }
    arr_row(a, e);
    n++;
  }
  buf_free(&mk);
  if (n == 0)
    return 0;
  arr_finish(a, n);
  a->stats.set_rows += n;
  buf_reset(&a->sql);
  switch (eff) {
    case 'd':
      buf_printf(&a->sql, "DELETE FROM %s%s t USING ", only, r->qname);
      break;
    case 'i':
      buf_printf(&a->sql, "INSERT INTO %s (", r->qname);
      for (i = 0; i < r->ncols; i++)
        buf_printf(&a->sql, "%s%s", i ? ", " : "", r->cols[i].qname);
      buf_printf(&a->sql, ")%s SELECT * FROM ", r->any_identity_always ? " OVERRIDING SYSTEM VALUE" : "");
      break;
    default:
      if (set_list(&set, r, mask) == 0) {   /* only keys, identity or kept columns */
        buf_free(&set);
        return 0;
      }
      buf_printf(&a->sql, "UPDATE %s%s t SET %s FROM ", only, r->qname, set.data);
      break;
  }
  buf_free(&set);
  buf_printf(&a->sql, "(SELECT (x).* FROM (SELECT u.r::pg_temp.%s AS x FROM unnest($1::text[]) u(r) "
             "OFFSET 0) q) s", r->tempname);
  if (eff != 'i') {
    buf_puts(&a->sql, " WHERE ");
    key_match(&a->sql, r);
  }
  rc = pipe_exec_array(a, a->sql.data, r, err);
  return rc;
}

/*
** A relation's net rows: deletes, whole-row updates, one update per
** unchanged-column mask, then inserts, so that a unique value freed by
** a delete or an update is free for a new row.
*/
static int set_rel (Applier *a, Rel *r, int first, CdcError *err) {
  NetCounts c = net_counts(a, first);
  char **masks = NULL;
  int nmasks = 0, cap = 0, j, k, rc = 0;
  if (c.del + c.full + c.part + c.ins == 0)
    return 0;
  if (temp_ensure(a, r, err) != 0 || send_set(a, r, first, 'd', NULL, err) != 0 ||
      send_set(a, r, first, 'f', NULL, err) != 0)
    return -1;
  if (c.part > 0) {
    Buf mk = BUF_INIT;
    for (k = first; k >= 0; k = a->net[k].next_in_rel) {
      int seen = 0;
      if (net_eff(&a->net[k]) != 'u')
        continue;
      entry_mask(&mk, &a->net[k]);
      for (j = 0; j < nmasks && !seen; j++)
        seen = strcmp(masks[j], mk.data) == 0;
      if (!seen) {
        if (nmasks == cap) {
          cap = cap ? cap * 2 : 4;
          masks = xrealloc(masks, (size_t)cap * sizeof(char *));
        }
        masks[nmasks++] = xstrdup(mk.data);
      }
    }
    buf_free(&mk);
    for (j = 0; j < nmasks; j++) {
      if (rc == 0)
        rc = send_set(a, r, first, 'u', masks[j], err);
      free(masks[j]);
    }
    free(masks);
  }
  if (rc == 0)
    rc = send_set(a, r, first, 'i', NULL, err);
  return rc;
}

/*
** Apply segment changes [from, to) set-based, in the pipeline.  The
** caller has folded the keyed changes into the net state; rowidx lists
** the changes of tables without a usable key, sent row by row (table
** order does not matter with triggers and foreign keys off).  A failing
** statement ends the group (take_result notes its table in set_failed).
*/
static int set_apply (Applier *a, size_t from, size_t to, const size_t *rowidx, size_t nrow,
                      CdcError *err) {
  size_t i;
  int *heads = NULL, nheads = 0, k, rc = 0;
  Rel **hrels = NULL;
  if (from >= to)
    return 0;
  /* group net entries by relation */
  for (i = 0; i < a->nnet; i++) {
    NetEnt *e = &a->net[i];
    for (k = 0; k < nheads && hrels[k] != e->rel; k++)
      ;
    if (k == nheads) {
      heads = xrealloc(heads, (size_t)(nheads + 1) * sizeof(int));
      hrels = xrealloc(hrels, (size_t)(nheads + 1) * sizeof(Rel *));
      hrels[k] = e->rel;
      heads[k] = -1;
      nheads++;
    }
    e->next_in_rel = heads[k];
    heads[k] = (int)i;
  }
  for (k = 0; k < nheads && rc == 0; k++)
    rc = set_rel(a, hrels[k], heads[k], err);
  /* keyless tables, row by row */
  for (i = 0; i < nrow && rc == 0; i++)
    if (decode_rec(a, (const uint8_t *)a->seg.data + a->ents[rowidx[i]].off, a->ents[rowidx[i]].len,
                   &a->msg, err) != 0 || row_apply(a, &a->msg, err) != 0)
      rc = -1;
  if (rc == 0) {
    a->stats.set_segments++;
    a->stats.set_changes += to - from - nrow;
    for (i = from; i < to; i++) {
      char kind = a->seg.data[a->ents[i].off + 1];   /* flag byte, then the type */
      if (kind == PGO_INSERT) a->stats.inserts++;
      else if (kind == PGO_UPDATE) a->stats.updates++;
      else if (kind == PGO_DELETE) a->stats.deletes++;
    }
    /* row-path changes were counted by row_apply too */
    for (i = 0; i < nrow; i++) {
      char kind = a->seg.data[a->ents[rowidx[i]].off + 1];
      if (kind == PGO_INSERT) a->stats.inserts--;
      else if (kind == PGO_UPDATE) a->stats.updates--;
      else if (kind == PGO_DELETE) a->stats.deletes--;
    }
  }
  free(heads);
  free(hrels);
  return rc;
}

/* }====================================================== */

/*
** {======================================================
** Segments, transactions, commits
** =======================================================
*/

/* BEGIN the group's target transaction before its first statement. */
static int begin_if_needed (Applier *a, CdcError *err) {
  if (a->in_xact)
    return 0;
  if (pipe_exec(a, "BEGIN", 'q', NULL, err) != 0)
    return -1;
  a->in_xact = 1;
  return 0;
}

/*
** Apply the buffered segment.  Set path when big enough: the keyed changes are folded into the net state
** up to the first change it can not express; that range is applied
** set-based, the change alone row by row, and folding starts again
** after it.
*/
static int flush_segment (Applier *a, CdcError *err) {
  size_t n = a->nents, start = 0, *rowidx;
  int rc = 0;
  if (n == 0)
    return 0;
  if (rels_resolve(a, err) != 0)
    return -1;
  if (a->set_threshold <= 0 || n < (size_t)a->set_threshold) {
    rc = row_apply_range(a, 0, n, err);
    goto done;
  }
  rowidx = xmalloc(n * sizeof(size_t));
  while (start < n && rc == 0) {
    size_t cut, nrow = 0;
    int stop = 0;
    net_clear(a);
    for (cut = start; cut < n && rc == 0; cut++) {
      Rel *r;
      if (decode_rec(a, (const uint8_t *)a->seg.data + a->ents[cut].off, a->ents[cut].len,
                     &a->msg, err) != 0) {
        rc = -1;
        break;
      }
      r = rel_find(a, a->msg.relid);
      if (r == NULL) {
        cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s of relation %u before its Relation message",
                    pgo_kind_name(a->msg.kind), a->msg.relid);
        rc = -1;
        break;
      }
      if (!r->set_ok)
        rowidx[nrow++] = cut;
      else if (net_add(a, &a->msg, r) != 0) {
        stop = 1;
        break;
      }
    }
    if (rc != 0)
      break;
    rc = set_apply(a, start, cut, rowidx, nrow, err);
    if (rc == 0 && stop)
      rc = row_apply_range(a, cut, cut + 1, err);
    start = stop ? cut + 1 : cut;
  }
  free(rowidx);
done:
  a->nents = 0;
  buf_reset(&a->seg);
  net_clear(a);
  return rc < 0 ? -1 : 0;
}

/* Is this change (a stored Insert/Update/Delete record) already in its
   table's copy?  True when the table was copied under a snapshot that
   holds every transaction ending at or before its sync LSN, and this
   transaction ends there (see ApplySync).  Never raises. */
static int in_copy (Applier *a, const uint8_t *rec, size_t len, PgLsn end_lsn) {
  size_t off = (rec[0] & APPLY_REC_STREAMED) ? 6 : 2;   /* flag, kind, [xid,] relid */
  uint32_t relid;
  Rel *r;
  if (len < off + 4)
    return 0;
  relid = pgo_get_u32(rec + off);
  r = rel_find(a, relid);
  return r != NULL && r->sync_lsn != 0 && end_lsn <= r->sync_lsn;
}

/* Buffer a change record in the segment; 1 when the segment is full. */
static int seg_add (Applier *a, const uint8_t *rec, size_t len) {
  if (a->nents == a->ents_cap) {
    a->ents_cap = a->ents_cap ? a->ents_cap * 2 : 1024;
    a->ents = xrealloc(a->ents, a->ents_cap * sizeof(SegEnt));
  }
  a->ents[a->nents].off = a->seg.len;
  a->ents[a->nents].len = len;
  buf_append(&a->seg, rec, len);
  a->nents++;
  return a->seg.len >= a->segment_bytes || a->nents >= (size_t)a->segment_changes;
}

/*
** See apply.h.  Reads the transaction's records in order: row changes
** are collected into set segments (flushed when full), Relation and Type
** messages update the caches (a changed relation flushes first), a
** Truncate is sent at once.  -1 with err; the group is then lost.
*/
int apply_txn (Applier *a, SpillBuf *txn, PgLsn end_lsn, CdcError *err) {
  SpillReader rd;
  const uint8_t *rec;
  size_t len;
  int rc = 0, got;
  if (a->pipe_failed)           /* a result already told: the group is lost */
    return pipe_error(a, err);
  if (begin_if_needed(a, err) != 0)
    return -1;
  spill_reader_init(&rd, txn);
  while (rc == 0 && (got = spill_read(&rd, &rec, &len, err)) != 0) {
    if (got < 0) {
      rc = -1;
      break;
    }
    if (len < 2) {
      cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "apply: empty change record");
      rc = -1;
      break;
    }
    a->stats.bytes += len;
    switch (rec[1]) {
      case PGO_INSERT:
      case PGO_UPDATE:
      case PGO_DELETE:
        if (a->nsync > 0 && in_copy(a, rec, len, end_lsn)) {
          a->stats.skipped++;
          break;
        }
        if (seg_add(a, rec, len))
          rc = flush_segment(a, err);
        break;
      case PGO_RELATION: {
        Rel *r;
        if (decode_rec(a, rec, len, &a->msg, err) != 0) {
          rc = -1;
          break;
        }
        r = rel_find(a, a->msg.relid);
        if (r != NULL && rel_same(r, &a->msg))
          break;
        /* changes before it were decoded with the old definition */
        if (r != NULL && (flush_segment(a, err) != 0 || decode_rec(a, rec, len, &a->msg, err) != 0)) {
          rc = -1;
          break;
        }
        r = rel_new(a, &a->msg);
        rel_put(a, r);
        rc = rel_request(a, r, err);
        break;
      }
      case PGO_TYPE:
        if (decode_rec(a, rec, len, &a->msg, err) != 0)
          rc = -1;
        else
          type_put(a, &a->msg);
        break;
      case PGO_TRUNCATE:
        if (flush_segment(a, err) != 0 || decode_rec(a, rec, len, &a->msg, err) != 0 ||
            send_truncate(a, &a->msg, end_lsn, err) != 0)
          rc = -1;
        break;
      default:                 /* Origin, Message: nothing to apply */
        break;
    }
  }
  spill_reader_free(&rd);
  if (rc == 0)
    a->stats.txns++;
  return rc;
}

/* Queue a group in flight (its COMMIT was sent). */
static void fly_push (Applier *a, PgLsn end_lsn, int64_t commit_ts) {
  Inflight *g;
  if (a->fly_len == a->fly_cap) {
    size_t cap = a->fly_cap ? a->fly_cap * 2 : 16, i;
    Inflight *f = xmalloc(cap * sizeof(Inflight));
    for (i = 0; i < a->fly_len; i++)
      f[i] = a->fly[(a->fly_head + i) % a->fly_cap];
    free(a->fly);
    a->fly = f;
    a->fly_cap = cap;
    a->fly_head = 0;
  }
  g = &a->fly[(a->fly_head + a->fly_len) % a->fly_cap];
  g->end_lsn = end_lsn;
  g->commit_ts = commit_ts;
  g->stats = a->stats;
  a->fly_len++;
}

/*
** See apply.h.  Flushes the last segment, records end_lsn and commit_ts
** as the progress in the same transaction (origin xact setup or the
** progress row), sends COMMIT and a flush request (the server sends
** results without waiting for a sync) and pushes the output out as far
** as the socket takes it.  The group is in flight until its COMMIT
** result arrives.  -1 with err.
*/
int apply_commit (Applier *a, PgLsn end_lsn, int64_t commit_ts, CdcError *err) {
  char lsn[PGO_LSN_BUFSZ], ts[64];
  if (a->pipe_failed)
    return pipe_error(a, err);
  if (begin_if_needed(a, err) != 0 || flush_segment(a, err) != 0)
    return -1;
  pgo_lsn_format(end_lsn, lsn);
  format_pgts(commit_ts, ts, sizeof(ts));
  buf_reset(&a->pbuf);
  {
    PgoValue v1 = {PGO_VAL_TEXT, (uint32_t)strlen(lsn), lsn}, v2 = {PGO_VAL_TEXT, (uint32_t)strlen(ts), ts};
    PgoValue v0 = {PGO_VAL_TEXT, (uint32_t)strlen(a->origin), a->origin};
    PgoValue v3 = {a->identity != NULL ? PGO_VAL_TEXT : PGO_VAL_NULL,
                   a->identity != NULL ? (uint32_t)strlen(a->identity) : 0, a->identity};
    if (a->mode == APPLY_PROGRESS_ORIGIN) {
      param_set(a, 0, &v1);
      param_set(a, 1, &v2);
      params_finish(a, 2);
      if (pipe_exec_params(a, "SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2::timestamptz)",
                           2, err) != 0)
        return -1;
    } else {
      param_set(a, 0, &v0);
      param_set(a, 1, &v1);
      param_set(a, 2, &v2);
      param_set(a, 3, &v3);
      params_finish(a, 4);
      if (pipe_exec_params(a,
            "INSERT INTO pgtide.cdc_progress AS p (name, lsn, commit_time, migration) "
            "VALUES ($1, $2::pg_lsn, $3::timestamptz, $4) "
            "ON CONFLICT (name) DO UPDATE SET lsn = EXCLUDED.lsn, commit_time = EXCLUDED.commit_time, "
            "migration = EXCLUDED.migration, updated_at = now()", 4, err) != 0)
        return -1;
    }
  }
  if (pipe_enter(a, err) != 0)
    return -1;
  if (!PQsendQueryParams(a->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0))
    return conn_broken(a, err, "apply: send");
  ring_push(a, 'C', 0, NULL);
  if (PQsendFlushRequest(a->conn) != 1)
    return conn_broken(a, err, "apply: send");
  a->in_xact = 0;
  a->stats.commits++;
  fly_push(a, end_lsn, commit_ts);
  if (PQflush(a->conn) < 0)
    return conn_broken(a, err, "apply connection");
  return pipe_drain(a, DRAIN_NOWAIT, -1, err);
}

/* See apply.h. */
int apply_inflight (const Applier *a) {
  return (int)a->fly_len;
}

/* See apply.h: push pending output, read what arrives within
   timeout_ms. */
int apply_poll (Applier *a, int timeout_ms, CdcError *err) {
  if (a->pipe_failed)
    return pipe_error(a, err);
  if (!a->pipeline)
    return 0;
  if (PQflush(a->conn) < 0)
    return conn_broken(a, err, "apply connection");
  return pipe_drain(a, timeout_ms > 0 ? 0 : DRAIN_NOWAIT, timeout_ms, err);
}

/* See apply.h: block (1 s poll slices, abort flag) until at most n
   groups are in flight. */
int apply_wait (Applier *a, int n, CdcError *err) {
  if (a->pipe_failed)
    return pipe_error(a, err);
  if (!a->pipeline || a->fly_len <= (size_t)(n < 0 ? 0 : n))
    return 0;
  return pipe_drain(a, n < 0 ? 0 : n, -1, err);
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

/* }====================================================== */
