/*
** pg_lua.c
** Lua module "pg": PostgreSQL connections, queries, transactions and
** small COPY transfers for runbooks and scripts.
**
** This file is the Lua-facing layer only: argument checks, object
** lifecycle and error objects; the conversion of values between Lua and
** PostgreSQL's text format is pg_lua_values.c.  Connecting is pgconn.c,
** waiting and COPY plumbing is pgio.c, value formats are pgvalue.c; bulk
** data is the core engine's.
**
** Type mapping (results): NULL -> nil; bool -> boolean; int2, int4,
** int8, oid -> integer (64-bit, exact); float4, float8 -> float (exact,
** NaN and infinities included); bytea -> string of raw bytes; anything
** else (numeric, text, json, jsonb, arrays, timestamps...) -> its text.
** Parameters ($1, $2...): nil or pg.null -> NULL; booleans; integers;
** floats (shortest exact form); strings as text, or as raw bytes when
** the parameter is bytea; a Lua list -> an array literal.
**
** Error model: every failure raises a "pg.error" object (a table with
** op, sqlstate, message, detail, hint, position, context... and a
** __tostring metamethod).  Absence is not a failure: query_one returns
** nil when there is no row.
*/
#include <lauxlib.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "host/luax.h"
#include "host/modules.h"
#include "pg/pg_lua_internal.h"
#include "pg/pgconn.h"
#include "pg/pgio.h"
#include "pg/pgvalue.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/redact.h"

#define PG_CONN    "pg.conn"      /* metatable names (also '__name') */
#define PG_COPY    "pg.copy"
#define PG_RESULT  "pg.result"    /* internal: owns a PGresult */
#define PG_ERROR   "pg.error"

#define ERRLEN PGCONN_ERRLEN

typedef struct PgConn {
  PGconn *conn;               /* NULL once closed */
  int copying;                /* a pg.copy writer is open on it */
  int pending;                /* conn:send() issued, conn:wait() not yet */
  int savepoints;             /* conn:transaction nesting depth */
  char label[48];             /* "source", "target"... for messages */
} PgConn;

typedef struct PgCopy {
  PgConn *owner;              /* anchored as user value 1; NULL when done */
  lua_Integer bytes;          /* bytes sent so far */
} PgCopy;


/*
** {======================================================
** GC boxes: every libpq or C allocation lives in a userdata created
** before the allocation, so a Lua error can never leak it.
** =======================================================
*/

/* __gc and __close of a result box: PQclear once. */
static int result_gc (lua_State *L) {
  PGresult **box = (PGresult **)luaL_checkudata(L, 1, PG_RESULT);
  if (*box != NULL) {
    PQclear(*box);
    *box = NULL;
  }
  return 0;
}

/* Push an empty result box; store the PGresult in it at once. */
static PGresult **newresultbox (lua_State *L) {
  return (PGresult **)luax_newudata(L, sizeof(PGresult *), 0, PG_RESULT);
}

/* }====================================================== */


/*
** {======================================================
** Error objects
** =======================================================
*/

/* Set t[name] = text (redacted) when text is not NULL; t is at -1. */
static void setredacted (lua_State *L, const char *name, const char *text) {
  char *m;
  size_t n;
  if (text == NULL)
    return;
  m = redact_str(text);
  n = strlen(m);
  while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' '))
    n--;
  lua_pushlstring(L, m, n);
  free(m);
  lua_setfield(L, -2, name);
}

/*
** Raise a pg.error for a failed command.  'res' may be NULL (libpq or
** connection failure: the message comes from the connection).  Never
** returns.  Fields: op, sqlstate, severity, message, detail, hint,
** position (integer), context, schema, table, column, datatype,
** constraint, connection_lost (boolean, when the connection broke).
*/
static int pg_raise (lua_State *L, PgConn *c, const PGresult *res, const char *op) {
  static const struct { int code; const char *name; } fields[] = {
    {PG_DIAG_SQLSTATE, "sqlstate"},
    {PG_DIAG_SEVERITY_NONLOCALIZED, "severity"},
    {PG_DIAG_MESSAGE_DETAIL, "detail"},
    {PG_DIAG_MESSAGE_HINT, "hint"},
    {PG_DIAG_CONTEXT, "context"},
    {PG_DIAG_SCHEMA_NAME, "schema"},
    {PG_DIAG_TABLE_NAME, "table"},
    {PG_DIAG_COLUMN_NAME, "column"},
    {PG_DIAG_DATATYPE_NAME, "datatype"},
    {PG_DIAG_CONSTRAINT_NAME, "constraint"},
    {0, NULL}
  };
  PGconn *conn = c != NULL ? c->conn : NULL;
  const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  const char *pos = res != NULL ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
  int i;
  if (msg == NULL && res != NULL && PQresultErrorMessage(res)[0] != '\0')
    msg = PQresultErrorMessage(res);
  if (msg == NULL)  /* no server error: a libpq/connection failure */
    msg = conn != NULL ? PQerrorMessage(conn) : "no connection";
  if (msg[0] == '\0')
    msg = "unknown error";
  luax_push_error(L, PG_ERROR, "op", op, "label", c != NULL ? c->label : NULL, NULL);
  setredacted(L, "message", msg);
  for (i = 0; fields[i].name != NULL && res != NULL; i++)
    setredacted(L, fields[i].name, PQresultErrorField(res, fields[i].code));
  if (pos != NULL)
    luax_setint(L, "position", atoi(pos));
  if (conn != NULL && PQstatus(conn) == CONNECTION_BAD)
    luax_setbool(L, "connection_lost", 1);
  return lua_error(L);
}

/* Raise a pg.error that carries only a message (usage or state error). */
static int pg_raise_msg (lua_State *L, const char *op, const char *kind, const char *msg) {
  luax_push_error(L, PG_ERROR, "op", op, "kind", kind, NULL);
  setredacted(L, "message", msg);
  return lua_error(L);
}

/*
** tostring(err): "pg.query failed [42P01]: relation "x" does not exist;
** detail: ...; hint: ...; position: 15" (luax_error_tostring).  Context
** is left out (it can be long); it stays available as err.context.
** This is the head: "pg.<op> failed [SQLSTATE]: ".
*/
static void error_head (lua_State *L, int obj, Buf *b) {
  buf_puts(b, "pg.");
  if (!luax_error_addfield(L, obj, b, NULL, "op"))
    buf_putc(b, '?');
  buf_puts(b, " failed");
  if (luax_error_addfield(L, obj, b, " [", "sqlstate"))
    buf_putc(b, ']');
  buf_puts(b, ": ");
}

static const char *const error_fields[] = {
  "detail", "detail: ", "hint", "hint: ", "position", "position: ", NULL
};

static const LuaxErrorStyle error_style = {NULL, error_head, "unknown error", 0, error_fields, NULL};

/* }====================================================== */


/*
** {======================================================
** Connection objects
** =======================================================
*/

static PgConn *toconn (lua_State *L, int idx) {
  return (PgConn *)luaL_checkudata(L, idx, PG_CONN);
}

/*
** The connection at 'idx', open and free to run a new command (not in
** COPY, no command pending from conn:send).  Raises otherwise.
*/
static PgConn *checkready (lua_State *L, int idx, const char *op) {
  PgConn *c = toconn(L, idx);
  if (c->conn == NULL)
    pg_raise_msg(L, op, "closed", "the connection is closed");
  if (c->copying)
    pg_raise_msg(L, op, "busy", "the connection is in COPY: finish or abort the writer first");
  if (c->pending)
    pg_raise_msg(L, op, "busy", "a command sent with conn:send() is pending: call conn:wait() first");
  return c;
}

/*
** Idempotent close, shared by conn:close(), __gc and __close.  A
** statement still running is cancelled first so the server does not
** keep working for nobody.
*/
static int conn_close (lua_State *L) {
  PgConn *c = toconn(L, 1);
  PGconn *conn = c->conn;
  c->conn = NULL;  /* mark closed before acting */
  c->pending = c->copying = 0;
  if (conn != NULL) {
    if (PQtransactionStatus(conn) == PQTRANS_ACTIVE) {
      char err[300];
      pgio_cancel(conn, err, sizeof(err));
    }
    PQfinish(conn);
  }
  return 0;
}

static int conn_tostring (lua_State *L) {
  PgConn *c = toconn(L, 1);
  if (c->conn == NULL)
    lua_pushstring(L, "pg.conn (closed)");
  else
    lua_pushfstring(L, "pg.conn (%s%s%s:%s/%s)", c->label, c->label[0] ? " " : "",
                    PQhost(c->conn), PQport(c->conn), PQdb(c->conn));
  return 1;
}

/* Log a statement when the "sql" debug topic is on. */
static void log_sql (PgConn *c, const char *sql) {
  if (log_topic("sql"))
    log_msg(LOG_INFO, "[%s %d] %.2000s", c->label[0] ? c->label : "pg",
            PQbackendPID(c->conn), sql);
}

/*
** Wait for the command just sent and return its result in a new box
** pushed on the stack.  Raises a pg.error when it failed or the
** connection broke.  A result that is "command ok", "tuples ok" or a
** COPY start is returned.
*/
static PGresult *wait_result (lua_State *L, PgConn *c, const char *op) {
  PGresult **box = newresultbox(L);
  int timedout;
  *box = pgio_get_result(c->conn, -1, &timedout);
  if (*box == NULL)
    pg_raise(L, c, NULL, op);
  switch (PQresultStatus(*box)) {
    case PGRES_COMMAND_OK: case PGRES_TUPLES_OK: case PGRES_EMPTY_QUERY:
    case PGRES_COPY_IN: case PGRES_COPY_OUT: case PGRES_SINGLE_TUPLE:
      return *box;
    default:
      pg_raise(L, c, *box, op);
      return NULL;  /* not reached */
  }
}

/* Raise a pg.error for a PQsend* call that failed at once. */
static int send_failed (lua_State *L, PgConn *c, const char *op) {
  pgio_drain(c->conn);
  return pg_raise(L, c, NULL, op);
}

/* }====================================================== */


/*
** {======================================================
** Sending commands
** =======================================================
*/

/*
** Send 'sql' with the n parameters at base.. (n may be 0).  'multi'
** allows several statements in one string (simple protocol, only
** without parameters).  When a parameter's encoding depends on its type,
** the statement is first prepared unnamed and described, so bytea
** parameters travel as raw bytes.  Leaves stack balanced; raises.
*/
static void send_command (lua_State *L, PgConn *c, const char *sql, int base, int n,
                          int multi, const char *op) {
  int top = lua_gettop(L);
  PglParams p;
  log_sql(c, sql);
  if (n == 0 && multi) {
    if (!PQsendQuery(c->conn, sql))
      send_failed(L, c, op);
    return;
  }
  if (n > 0 && pgl_needs_types(L, base, n)) {
    PGresult *desc;
    Oid *types;
    int i, np;
    if (!PQsendPrepare(c->conn, "", sql, n, NULL))
      send_failed(L, c, op);
    wait_result(L, c, op);
    if (!PQsendDescribePrepared(c->conn, ""))
      send_failed(L, c, op);
    desc = wait_result(L, c, op);
    np = PQnparams(desc);
    types = (Oid *)lua_newuserdatauv(L, sizeof(Oid) * (size_t)(n > 0 ? n : 1), 0);
    for (i = 0; i < n; i++)
      types[i] = i < np ? PQparamtype(desc, i) : 0;
    pgl_convert_params(L, base, n, types, &p);
    if (!PQsendQueryPrepared(c->conn, "", n, p.values, p.lengths, p.formats, 0))
      send_failed(L, c, op);
  } else {
    pgl_convert_params(L, base, n, NULL, &p);
    if (!PQsendQueryParams(c->conn, sql, n, NULL, p.values, p.lengths, p.formats, 0))
      send_failed(L, c, op);
  }
  lua_settop(L, top);
}

/* }====================================================== */


/*
** {======================================================
** Queries
** =======================================================
*/

/*
** A COPY started through query/exec/send is ended so the connection
** stays usable, and reported as a usage error.
*/
static void refuse_copy (lua_State *L, PgConn *c, const PGresult *res, const char *op) {
  ExecStatusType st = PQresultStatus(res);
  if (st != PGRES_COPY_IN && st != PGRES_COPY_OUT)
    return;
  if (st == PGRES_COPY_IN)
    PQclear(pgio_copy_end(c->conn, "COPY is not allowed here"));
  else
    pgio_copy_out_abort(c->conn);
  pgio_drain(c->conn);
  pg_raise_msg(L, op, "usage", "COPY must go through conn:copy_in() or conn:copy_out()");
}

/* Run a command and leave its result box on the stack; returns the result. */
static PGresult *run (lua_State *L, PgConn *c, int multi, const char *op) {
  const char *sql = luaL_checkstring(L, 2);
  int n = lua_gettop(L) - 2;
  PGresult *res;
  send_command(L, c, sql, 3, n, multi, op);
  res = wait_result(L, c, op);
  refuse_copy(L, c, res, op);
  return res;
}

/*
** conn:query(sql, ...) -> rows, columns.  One statement; $1.. are the
** extra arguments.  rows is a list of tables keyed by column name.
*/
static int conn_query (lua_State *L) {
  PgConn *c = checkready(L, 1, "query");
  PGresult *res = run(L, c, 0, "query");
  pgl_pushrows(L, res);
  return 2;
}

/*
** conn:query_one(sql, ...) -> row or nil, columns.  Raises when the
** query returns more than one row.
*/
static int conn_query_one (lua_State *L) {
  PgConn *c = checkready(L, 1, "query_one");
  PGresult *res = run(L, c, 0, "query_one");
  if (PQntuples(res) > 1) {
    char msg[120];
    snprintf(msg, sizeof(msg), "query returned %d rows instead of at most one", PQntuples(res));
    return pg_raise_msg(L, "query_one", "usage", msg);
  }
  pgl_pushrows(L, res);
  lua_rawgeti(L, -2, 1);  /* first row or nil */
  lua_insert(L, -2);
  return 2;
}

/*
** conn:exec(sql, ...) -> affected rows, command tag.  Without
** parameters 'sql' may hold several statements (a script); the count
** and tag are then those of the last one.
*/
static int conn_exec (lua_State *L) {
  PgConn *c = checkready(L, 1, "exec");
  PGresult *res = run(L, c, 1, "exec");
  lua_pushinteger(L, pgl_affected(res));
  lua_pushstring(L, PQcmdStatus(res));
  return 2;
}

/*
** conn:send(sql, ...) -> true.  Starts one statement without waiting;
** collect it with conn:wait(), stop it with conn:cancel().
*/
static int conn_send (lua_State *L) {
  PgConn *c = checkready(L, 1, "send");
  const char *sql = luaL_checkstring(L, 2);
  send_command(L, c, sql, 3, lua_gettop(L) - 2, 0, "send");
  c->pending = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/*
** conn:wait([timeout_seconds]) -> rows, columns, affected | nil,
** "timeout".  Waits for the statement started by conn:send(); raises
** its error if it failed (a cancelled one fails with SQLSTATE 57014).
*/
static int conn_wait (lua_State *L) {
  PgConn *c = toconn(L, 1);
  double timeout = luaL_optnumber(L, 2, -1);
  PGresult **box;
  int timedout;
  if (c->conn == NULL)
    return pg_raise_msg(L, "wait", "closed", "the connection is closed");
  if (!c->pending)
    return pg_raise_msg(L, "wait", "usage", "nothing to wait for: use conn:send() first");
  box = newresultbox(L);
  *box = pgio_get_result(c->conn, timeout < 0 ? -1 : (int)(timeout * 1000), &timedout);
  if (timedout) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  c->pending = 0;
  if (*box == NULL)
    return pg_raise(L, c, NULL, "wait");
  refuse_copy(L, c, *box, "wait");
  if (PQresultStatus(*box) != PGRES_TUPLES_OK && PQresultStatus(*box) != PGRES_COMMAND_OK &&
      PQresultStatus(*box) != PGRES_EMPTY_QUERY)
    return pg_raise(L, c, *box, "wait");
  pgl_pushrows(L, *box);
  lua_pushinteger(L, pgl_affected(*box));
  return 3;
}

/* conn:busy() -> true while a statement sent with conn:send() runs. */
static int conn_busy (lua_State *L) {
  PgConn *c = toconn(L, 1);
  lua_pushboolean(L, c->conn != NULL && c->pending && pgio_busy(c->conn));
  return 1;
}

/* conn:cancel() -> true.  Asks the server to cancel the running
   statement; raises a pg.error when the request cannot be sent. */
static int conn_cancel (lua_State *L) {
  PgConn *c = toconn(L, 1);
  char err[ERRLEN];
  if (c->conn == NULL)
    return pg_raise_msg(L, "cancel", "closed", "the connection is closed");
  if (pgio_cancel(c->conn, err, sizeof(err)) != 0)
    return pg_raise_msg(L, "cancel", NULL, err);
  lua_pushboolean(L, 1);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Transactions
** =======================================================
*/

/* Run a fixed statement, raising a pg.error on failure. */
static void simple (lua_State *L, PgConn *c, const char *sql, const char *op) {
  int top = lua_gettop(L);
  log_sql(c, sql);
  if (!PQsendQuery(c->conn, sql))
    send_failed(L, c, op);
  wait_result(L, c, op);
  lua_settop(L, top);
}

static int conn_begin (lua_State *L) {
  simple(L, checkready(L, 1, "begin"), luaL_optstring(L, 2, "BEGIN"), "begin");
  return 0;
}

static int conn_commit (lua_State *L) {
  simple(L, checkready(L, 1, "commit"), "COMMIT", "commit");
  return 0;
}

static int conn_rollback (lua_State *L) {
  simple(L, checkready(L, 1, "rollback"), "ROLLBACK", "rollback");
  return 0;
}

/*
** conn:transaction(fn, ...) -> fn's results.  Runs fn(conn, ...) inside
** BEGIN/COMMIT; if fn raises, rolls back and re-raises the same error.
** Nested calls use savepoints.  COMMIT failures raise.
*/
static int conn_transaction (lua_State *L) {
  PgConn *c = checkready(L, 1, "transaction");
  int nested = PQtransactionStatus(c->conn) == PQTRANS_INTRANS;
  int base = lua_gettop(L), status, depth, i;
  char sql[64];
  luaL_checktype(L, 2, LUA_TFUNCTION);
  depth = nested ? ++c->savepoints : 0;
  if (nested)
    snprintf(sql, sizeof(sql), "SAVEPOINT pgtide_tx_%d", depth);
  else
    snprintf(sql, sizeof(sql), "BEGIN");
  simple(L, c, sql, "transaction");
  lua_pushvalue(L, 2);  /* fn */
  lua_pushvalue(L, 1);  /* conn */
  for (i = 3; i <= base; i++)  /* the extra arguments */
    lua_pushvalue(L, i);
  status = lua_pcall(L, base - 1, LUA_MULTRET, 0);
  if (nested)
    c->savepoints = depth - 1;
  if (status != LUA_OK) {
    /* roll back when still possible, then re-raise the original error */
    if (c->conn != NULL && !c->copying && !c->pending &&
        PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
      PGresult *r;
      if (nested)
        snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT pgtide_tx_%d", depth);
      else
        snprintf(sql, sizeof(sql), "ROLLBACK");
      r = PQexec(c->conn, sql);
      PQclear(r);
      if (nested) {
        snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT pgtide_tx_%d", depth);
        PQclear(PQexec(c->conn, sql));
      }
    }
    return lua_error(L);
  }
  if (c->conn == NULL)
    return pg_raise_msg(L, "transaction", "closed", "the connection was closed inside the transaction");
  if (nested)
    snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT pgtide_tx_%d", depth);
  else
    snprintf(sql, sizeof(sql), "COMMIT");
  simple(L, checkready(L, 1, "transaction"), sql, "transaction");
  return lua_gettop(L) - base;
}

/* }====================================================== */


/*
** {======================================================
** COPY
** =======================================================
*/

static PgCopy *tocopy (lua_State *L) {
  return (PgCopy *)luaL_checkudata(L, 1, PG_COPY);
}

/* Start a COPY 'sql' and check it reached the expected COPY state. */
static void start_copy (lua_State *L, PgConn *c, const char *sql, ExecStatusType want,
                        const char *op) {
  PGresult *res;
  log_sql(c, sql);
  if (!PQsendQuery(c->conn, sql))
    send_failed(L, c, op);
  res = wait_result(L, c, op);
  if (PQresultStatus(res) != want) {
    if (PQresultStatus(res) == PGRES_COPY_IN)
      PQclear(pgio_copy_end(c->conn, "unexpected COPY direction"));
    else if (PQresultStatus(res) == PGRES_COPY_OUT)
      pgio_copy_out_abort(c->conn);
    pgio_drain(c->conn);
    pg_raise_msg(L, op, "usage", want == PGRES_COPY_IN
                 ? "the statement is not a COPY ... FROM STDIN"
                 : "the statement is not a COPY ... TO STDOUT");
  }
  lua_pop(L, 1);
}

/* Finish a COPY IN and push the row count; raises on failure. */
static int end_copy_in (lua_State *L, PgConn *c, const char *errmsg, const char *op) {
  PGresult **box = newresultbox(L);
  *box = pgio_copy_end(c->conn, errmsg);
  c->copying = 0;
  if (*box == NULL)
    return pg_raise(L, c, NULL, op);
  if (PQresultStatus(*box) != PGRES_COMMAND_OK)
    return pg_raise(L, c, *box, op);
  lua_pushinteger(L, pgl_affected(*box));
  return 1;
}

/*
** conn:copy_in(sql [, data]) -> writer | rows.  With 'data', sends it
** and finishes the COPY at once, returning the row count.  Without,
** returns a pg.copy writer: w:write(data, ...), w:finish() -> rows,
** w:abort([msg]).  A writer closed without finish() (error, <close>, GC)
** aborts the COPY, so half a COPY is never committed.
*/
static int conn_copy_in (lua_State *L) {
  PgConn *c = checkready(L, 1, "copy_in");
  const char *sql = luaL_checkstring(L, 2);
  PgCopy *w;
  if (!lua_isnoneornil(L, 3)) {
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    char err[ERRLEN];
    start_copy(L, c, sql, PGRES_COPY_IN, "copy_in");
    c->copying = 1;
    if (pgio_copy_put(c->conn, data, len, err, sizeof(err)) != 0) {
      c->copying = 0;
      pgio_drain(c->conn);
      return pg_raise_msg(L, "copy_in", NULL, err);
    }
    return end_copy_in(L, c, NULL, "copy_in");
  }
  w = (PgCopy *)luax_newudata(L, sizeof(PgCopy), 1, PG_COPY);  /* 'done' until started */
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);  /* anchor the connection */
  start_copy(L, c, sql, PGRES_COPY_IN, "copy_in");
  c->copying = 1;
  w->owner = c;
  return 1;
}

/* The writer's connection, or a raise when finished or closed. */
static PgConn *copyconn (lua_State *L, PgCopy *w, const char *op) {
  if (w->owner == NULL)
    pg_raise_msg(L, op, "closed", "the COPY is already finished");
  if (w->owner->conn == NULL) {
    w->owner = NULL;
    pg_raise_msg(L, op, "closed", "the connection was closed during COPY");
  }
  return w->owner;
}

/* w:write(data, ...) -> w.  Sends every argument as COPY data. */
static int copy_write (lua_State *L) {
  PgCopy *w = tocopy(L);
  PgConn *c = copyconn(L, w, "copy_in");
  int i, n = lua_gettop(L);
  char err[ERRLEN];
  for (i = 2; i <= n; i++) {
    size_t len;
    const char *data = luaL_checklstring(L, i, &len);
    if (pgio_copy_put(c->conn, data, len, err, sizeof(err)) != 0)
      return pg_raise_msg(L, "copy_in", NULL, err);
    w->bytes += (lua_Integer)len;
  }
  lua_settop(L, 1);
  return 1;
}

/* w:finish() -> rows copied.  Commits the COPY (raises on failure). */
static int copy_finish (lua_State *L) {
  PgCopy *w = tocopy(L);
  PgConn *c = copyconn(L, w, "copy_in");
  w->owner = NULL;
  return end_copy_in(L, c, NULL, "copy_in");
}

/*
** w:abort([message]), also __gc and __close: a writer that was not
** finished is aborted, so an error inside a 'local w <close> = ...'
** block never commits half a COPY.  Idempotent; never raises.
*/
static int copy_abort (lua_State *L) {
  PgCopy *w = tocopy(L);
  PgConn *c = w->owner;
  const char *msg = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "aborted by script";
  w->owner = NULL;
  if (c != NULL && c->conn != NULL && c->copying) {
    PQclear(pgio_copy_end(c->conn, msg));  /* the server reports 57014 */
    pgio_drain(c->conn);
    c->copying = 0;
  }
  return 0;
}

static int copy_tostring (lua_State *L) {
  PgCopy *w = tocopy(L);
  lua_pushfstring(L, "pg.copy (%s, %I bytes)", w->owner != NULL ? "open" : "done",
                  (LUAI_UACINT)w->bytes);
  return 1;
}

/*
** conn:copy_out(sql [, fn]) -> data | rows.  Without fn, returns the
** whole output as one string (for small tables).  With fn, calls
** fn(chunk) for each row as it arrives and returns the row count; fn
** returning false stops early.  If fn raises, the COPY is cancelled and
** the error propagates, leaving the connection usable.
*/
static int conn_copy_out (lua_State *L) {
  PgConn *c = checkready(L, 1, "copy_out");
  const char *sql = luaL_checkstring(L, 2);
  int hasfn = !lua_isnoneornil(L, 3);
  Buf *data, *row;
  PGresult **final;
  lua_Integer rows = 0;
  char err[ERRLEN];
  if (hasfn)
    luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  data = pgl_newbufbox(L);    /* 4: everything, without fn */
  row = pgl_newbufbox(L);     /* 5: one row, with fn */
  final = newresultbox(L);  /* 6 */
  start_copy(L, c, sql, PGRES_COPY_OUT, "copy_out");
  for (;;) {
    char *chunk;
    PGresult *fin;
    int n = pgio_copy_get(c->conn, &chunk, &fin, err, sizeof(err));
    if (n < 0) {
      pgio_drain(c->conn);
      return pg_raise_msg(L, "copy_out", NULL, err);
    }
    if (n == 0) {
      *final = fin;
      break;
    }
    rows++;
    if (!hasfn) {
      buf_append(data, chunk, (size_t)n);
      PQfreemem(chunk);
      continue;
    }
    buf_reset(row);
    buf_append(row, chunk, (size_t)n);
    PQfreemem(chunk);
    lua_pushvalue(L, 3);
    lua_pushlstring(L, row->data, row->len);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
      pgio_copy_out_abort(c->conn);
      return lua_error(L);
    }
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
      lua_pop(L, 1);
      pgio_copy_out_abort(c->conn);
      lua_pushinteger(L, rows);
      return 1;
    }
    lua_pop(L, 1);
  }
  if (*final == NULL)
    return pg_raise(L, c, NULL, "copy_out");
  if (PQresultStatus(*final) != PGRES_COMMAND_OK)
    return pg_raise(L, c, *final, "copy_out");
  if (hasfn)
    lua_pushinteger(L, rows);
  else
    lua_pushlstring(L, buf_cstr(data), data->len);
  return 1;
}

/* }====================================================== */


/*
** {======================================================
** Information and quoting
** =======================================================
*/

/* conn:status() -> "closed", "broken", "copy", "idle", "active",
   "transaction" or "failed transaction".  Never raises. */
static int conn_status (lua_State *L) {
  PgConn *c = toconn(L, 1);
  const char *s;
  if (c->conn == NULL)
    s = "closed";
  else if (PQstatus(c->conn) != CONNECTION_OK)
    s = "broken";
  else if (c->copying)
    s = "copy";
  else {
    switch (PQtransactionStatus(c->conn)) {
      case PQTRANS_IDLE: s = "idle"; break;
      case PQTRANS_ACTIVE: s = "active"; break;
      case PQTRANS_INTRANS: s = "transaction"; break;
      case PQTRANS_INERROR: s = "failed transaction"; break;
      default: s = "unknown"; break;
    }
  }
  lua_pushstring(L, s);
  return 1;
}

/*
** conn:info() -> { label, host, port, dbname, user, server_version
** (150004), server_version_string, backend_pid, ssl (boolean),
** application_name }.  Never contains the password.
*/
static int conn_info (lua_State *L) {
  PgConn *c = checkready(L, 1, "info");
  lua_createtable(L, 0, 10);
  luax_setstr(L, "label", c->label);
  luax_setstr(L, "host", PQhost(c->conn));
  luax_setstr(L, "port", PQport(c->conn));
  luax_setstr(L, "dbname", PQdb(c->conn));
  luax_setstr(L, "user", PQuser(c->conn));
  luax_setstr(L, "server_version_string", PQparameterStatus(c->conn, "server_version"));
  luax_setstr(L, "application_name", PQparameterStatus(c->conn, "application_name"));
  luax_setint(L, "server_version", PQserverVersion(c->conn));
  luax_setint(L, "backend_pid", PQbackendPID(c->conn));
  luax_setbool(L, "ssl", PQsslInUse(c->conn));
  {  /* the keepalive settings in effect (pgconn_open's defaults or the conninfo's) */
    PQconninfoOption *opts = PQconninfo(c->conn), *o;
    for (o = opts; o != NULL && o->keyword != NULL; o++)
      if (o->val != NULL && strncmp(o->keyword, "keepalives", 10) == 0)
        luax_setstr(L, o->keyword, o->val);
    PQconninfoFree(opts);
  }
  return 1;
}

static int conn_server_version (lua_State *L) {
  lua_pushinteger(L, pgconn_server_version(checkready(L, 1, "server_version")->conn));
  return 1;
}

static int conn_backend_pid (lua_State *L) {
  lua_pushinteger(L, PQbackendPID(checkready(L, 1, "backend_pid")->conn));
  return 1;
}

/* conn:quote_ident(s) / conn:quote_literal(s): libpq's escaping for the
   connection's encoding. */
static int quote (lua_State *L, int ident) {
  PgConn *c = checkready(L, 1, ident ? "quote_ident" : "quote_literal");
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  char *q = ident ? PQescapeIdentifier(c->conn, s, len) : PQescapeLiteral(c->conn, s, len);
  if (q == NULL)
    return pg_raise(L, c, NULL, ident ? "quote_ident" : "quote_literal");
  lua_pushstring(L, q);
  PQfreemem(q);
  return 1;
}

static int conn_quote_ident (lua_State *L) { return quote(L, 1); }
static int conn_quote_literal (lua_State *L) { return quote(L, 0); }

/* }====================================================== */


/*
** {======================================================
** Module functions
** =======================================================
*/

/* Apply connect options: statement_timeout, lock_timeout and any
   settings = { name = value } (in name order), via set_config. */
static void apply_settings (lua_State *L, PgConn *c, int opts) {
  static const char *const direct[] = {"statement_timeout", "lock_timeout",
                                       "idle_in_transaction_session_timeout", NULL};
  int i, list, top = lua_gettop(L);
  /* collect name/value pairs into a list, applied in order */
  lua_newtable(L);
  list = lua_gettop(L);
  for (i = 0; direct[i] != NULL; i++) {
    if (lua_getfield(L, opts, direct[i]) != LUA_TNIL) {
      lua_createtable(L, 2, 0);
      lua_pushstring(L, direct[i]);
      lua_rawseti(L, -2, 1);
      lua_pushvalue(L, -2);
      lua_rawseti(L, -2, 2);
      lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
    }
    lua_pop(L, 1);
  }
  if (lua_getfield(L, opts, "settings") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      lua_createtable(L, 2, 0);
      lua_pushvalue(L, -3);
      lua_rawseti(L, -2, 1);
      lua_pushvalue(L, -2);
      lua_rawseti(L, -2, 2);
      lua_rawseti(L, list, (lua_Integer)lua_rawlen(L, list) + 1);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  for (i = 1; i <= (int)lua_rawlen(L, list); i++) {
    const char *vals[2];
    PGresult **box;
    lua_rawgeti(L, list, i);
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "pg.connect: setting names must be strings");
    vals[0] = lua_tostring(L, -2);
    vals[1] = luaL_tolstring(L, -1, NULL);
    box = newresultbox(L);
    *box = PQexecParams(c->conn, "SELECT pg_catalog.set_config($1, $2, false)", 2, NULL,
                        vals, NULL, NULL, 0);
    if (PQresultStatus(*box) != PGRES_TUPLES_OK)
      pg_raise(L, c, *box, "connect");
    lua_pop(L, 5);
  }
  lua_settop(L, top);
}

/*
** pg.connect(conninfo_or_uri [, opts]) -> conn.  opts: label (names the
** endpoint in messages, default "database"), statement_timeout,
** lock_timeout, idle_in_transaction_session_timeout (milliseconds or
** strings like "30s"), settings = { name = value }.  libpq environment
** variables, .pgpass and sslmode apply; application_name is "pgtide".
** Failures raise a pg.error with op "connect", a redacted message with
** a hint, and kind = "auth" | "database" | "unreachable" | "tls" |
** "hba" | "privilege" when recognised.
*/
static int pg_connect (lua_State *L) {
  const char *conninfo = luaL_checkstring(L, 1);
  const char *label = "database";
  char err[ERRLEN];
  PgConn *c;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "label") == LUA_TSTRING)
      label = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  c = (PgConn *)luax_newudata(L, sizeof(PgConn), 0, PG_CONN);  /* closed until connected */
  strlcpy_(c->label, label, sizeof(c->label));
  c->conn = pgconn_open(conninfo, label, PGCONN_NORMAL, err, sizeof(err));
  if (c->conn == NULL)
    return pg_raise_msg(L, "connect", pgconn_error_kind(err), err);
  if (lua_istable(L, 2))
    apply_settings(L, c, 2);
  return 1;
}

/* pg.is_error(v) -> true when v is a pg.error object. */
static int pg_is_error (lua_State *L) {
  lua_pushboolean(L, luax_isa(L, 1, PG_ERROR));
  return 1;
}

/* pg.type_name(oid) -> "int8", "text[]"... or nil for non-built-in types. */
static int pg_type_name (lua_State *L) {
  lua_pushstring(L, pgvalue_type_name((unsigned int)luaL_checkinteger(L, 1)));  /* NULL: nil */
  return 1;
}

/*
** pg.split_password(conninfo) -> conninfo_without_password, password|nil.
** For running client tools: the password can then go into a private
** PGPASSFILE rather than a command line.  Raises on a malformed string.
*/
static int pg_split_password (lua_State *L) {
  const char *conninfo = luaL_checkstring(L, 1);
  char err[ERRLEN], *pw = NULL, *rest;
  rest = pgconn_strip_password(conninfo, &pw, err, sizeof(err));
  if (rest == NULL)
    return pg_raise_msg(L, "split_password", "usage", err);
  lua_pushstring(L, rest);
  free(rest);
  if (pw != NULL) {
    redact_register(pw);
    lua_pushstring(L, pw);
    free(pw);
  } else
    lua_pushnil(L);
  return 2;
}

/* pg.safe_conninfo(conninfo) -> the conninfo with passwords masked. */
static int pg_safe_conninfo (lua_State *L) {
  char *s = pgconn_safe_conninfo(luaL_checkstring(L, 1));
  lua_pushstring(L, s);
  free(s);
  return 1;
}

/* pg.conninfo_value(conninfo, keyword) -> the value a connection would
   use (conninfo, environment, libpq defaults), or nil. */
static int pg_conninfo_value (lua_State *L) {
  char *v = pgconn_conninfo_value(luaL_checkstring(L, 1), luaL_checkstring(L, 2));
  if (v == NULL)
    lua_pushnil(L);
  else
    lua_pushstring(L, v);
  free(v);
  return 1;
}

/* pg.bytea_hex(s) -> "\x..." (the bytea input form of raw bytes). */
static int pg_bytea_hex (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  Buf *b = pgl_newbufbox(L);
  pgvalue_bytea_encode(b, (const unsigned char *)s, len);
  lua_pushlstring(L, b->data, b->len);
  return 1;
}

/* }====================================================== */


static const luaL_Reg pg_funcs[] = {
  {"connect", pg_connect},
  {"is_error", pg_is_error},
  {"type_name", pg_type_name},
  {"split_password", pg_split_password},
  {"safe_conninfo", pg_safe_conninfo},
  {"conninfo_value", pg_conninfo_value},
  {"bytea_hex", pg_bytea_hex},
  {NULL, NULL}
};

static const luaL_Reg conn_methods[] = {
  {"query", conn_query},
  {"query_one", conn_query_one},
  {"exec", conn_exec},
  {"send", conn_send},
  {"wait", conn_wait},
  {"busy", conn_busy},
  {"cancel", conn_cancel},
  {"begin", conn_begin},
  {"commit", conn_commit},
  {"rollback", conn_rollback},
  {"transaction", conn_transaction},
  {"copy_in", conn_copy_in},
  {"copy_out", conn_copy_out},
  {"status", conn_status},
  {"info", conn_info},
  {"server_version", conn_server_version},
  {"backend_pid", conn_backend_pid},
  {"quote_ident", conn_quote_ident},
  {"quote_literal", conn_quote_literal},
  {"close", conn_close},
  {NULL, NULL}
};

static const luaL_Reg conn_metameth[] = {
  {"__index", NULL},  /* placeholder */
  {"__gc", conn_close},
  {"__close", conn_close},
  {"__tostring", conn_tostring},
  {NULL, NULL}
};

static const luaL_Reg copy_methods[] = {
  {"write", copy_write},
  {"finish", copy_finish},
  {"abort", copy_abort},
  {NULL, NULL}
};

static const luaL_Reg copy_metameth[] = {
  {"__index", NULL},
  {"__gc", copy_abort},
  {"__close", copy_abort},
  {"__tostring", copy_tostring},
  {NULL, NULL}
};

static const luaL_Reg result_metameth[] = {
  {"__gc", result_gc},
  {"__close", result_gc},
  {NULL, NULL}
};

/* require "pg": the metatables, the module functions and pg.null. */
int luaopen_pg (lua_State *L) {
  luax_createmeta(L, PG_CONN, conn_metameth, conn_methods);
  luax_createmeta(L, PG_COPY, copy_metameth, copy_methods);
  luax_createmeta(L, PG_RESULT, result_metameth, NULL);
  pgl_open_values(L);
  luax_error_meta(L, PG_ERROR, &error_style);
  luaL_newlib(L, pg_funcs);
  lua_pushlightuserdata(L, PG_NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
