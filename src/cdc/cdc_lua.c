/*
** cdc_lua.c
** Lua module "core.cdc": logical replication from the source to the
** target (the CDC engine: cdc_*.c, apply*.c, stream.c; maps in
** cdc_internal.h and apply_internal.h).
**
**   cdc.create_slot{source=, slot=, publication=, tables=, temporary=}  -> slot
**       slot.name, slot.lsn ("X/Y"), slot.snapshot, slot.plugin;
**       slot:close() ends the exporting session (the snapshot stays
**       importable until then; also __gc and __close)
**   cdc.slot_info{source=, slot=} -> {exists=, active=, restart_lsn=,
**       confirmed_lsn=, current_lsn=, retained_bytes=, wal_status=}
**   cdc.drop{source=, slot=, publication=, target=, origin=, progress=,
**       identity=} -> true
**   cdc.start{source=, target=, slot=, publication=, origin=, state_dir=,
**       batch=, group=, inflight=, set_threshold=, memory_cap=, proto_version=,
**       streaming=, progress="auto"|"origin"|"table", identity=, replica_role=,
**       status_interval=, receive_timeout=} -> worker (a "core.cdc" object)
**   worker:status() / worker:lag() / worker:poll() -> tables
**   worker:wait_until(lsn, timeout) -> true | false (timed out)
**   worker:run_for(seconds) -> status      worker:pause_at(lsn)
**   worker:resume()   worker:stop([timeout]) -> status (also __gc/__close)
**   cdc.lsn_diff(a, b) -> a - b in bytes; cdc.lsn(n) -> "X/Y"; cdc.lsn_int(s)
**
** The worker applies in background threads (see cdc.h); every method
** only reads a status copy or signals, so the Lua side stays responsive
** for a progress display.  Binding only: argument checks, conversions,
** userdata and error objects.  Failures raise "core.cdc.error" objects
** (op, kind, message, sqlstate, table, column, retryable) with a
** __tostring; wait_until, poll and run_for raise the worker's error once
** it has failed, and "interrupted" on SIGINT.
*/
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cdc/cdc.h"
#include "host/luax.h"
#include "host/modules.h"
#include "util/buf.h"
#include "util/interrupt.h"

#define CDC_WORKER "core.cdc"
#define CDC_SLOT   "core.cdc.slot"
#define CDC_ERROR  "core.cdc.error"

typedef struct LWorker {
  Cdc *cdc;                     /* NULL once stopped and freed */
  CdcStatus final;              /* status at stop */
  int stopped;
} LWorker;

typedef struct LSlot {
  CdcSlot *slot;                /* NULL once closed */
  SlotInfo info;
} LSlot;

/*
** {======================================================
** Errors and helpers
** =======================================================
*/

/* How core.cdc.error objects print: their message. */
static const LuaxErrorStyle error_style = {NULL, NULL, "core.cdc error", 0, NULL, NULL};

/*
** Raise a core.cdc.error built from a CdcError: op, kind, message,
** sqlstate, table, column (empty ones left out) and retryable.  The
** CdcError's text is already redacted by cdcerr.c.  Never returns.
*/
static int cdc_raise (lua_State *L, const char *op, const CdcError *e) {
  luax_push_error(L, CDC_ERROR, "op", op, "kind", cdc_err_kind_name(e->kind),
                  "message", e->message[0] ? e->message : "unknown error",
                  "sqlstate", e->sqlstate, "table", e->table, "column", e->column, NULL);
  luax_setbool(L, "retryable", e->retryable);
  return lua_error(L);
}

/* Raise a core.cdc.error of 'kind' with the message 'msg'. */
static int raise_msg (lua_State *L, const char *op, CdcErrKind kind, const char *msg) {
  CdcError e;
  cdc_err_clear(&e);
  cdc_err_set(&e, kind, 0, "%s", msg);
  return cdc_raise(L, op, &e);
}

/* A size: an integer (bytes) or a string like "64MB", "512kB", "1GB". */
static size_t opt_size (lua_State *L, int t, const char *k, size_t def) {
  size_t v = def;
  lua_getfield(L, t, k);
  if (lua_isinteger(L, -1)) {
    lua_Integer n = lua_tointeger(L, -1);
    if (n < 0)
      luaL_error(L, "option '%s' must not be negative", k);
    v = (size_t)n;
  } else if (lua_type(L, -1) == LUA_TSTRING) {
    const char *s = lua_tostring(L, -1);
    char *end;
    double n = strtod(s, &end);
    double mult = 1;
    while (*end == ' ')
      end++;
    if (strcasecmp(end, "kb") == 0 || strcasecmp(end, "k") == 0) mult = 1024.0;
    else if (strcasecmp(end, "mb") == 0 || strcasecmp(end, "m") == 0) mult = 1024.0 * 1024;
    else if (strcasecmp(end, "gb") == 0 || strcasecmp(end, "g") == 0) mult = 1024.0 * 1024 * 1024;
    else if (*end != '\0' && strcasecmp(end, "b") != 0)
      luaL_error(L, "option '%s': cannot read size \"%s\" (use bytes or kB, MB, GB)", k, s);
    if (end == s || n < 0)
      luaL_error(L, "option '%s': cannot read size \"%s\"", k, s);
    v = (size_t)(n * mult);
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "option '%s' must be a size (integer bytes or a string like \"64MB\")", k);
  }
  lua_pop(L, 1);
  return v;
}

/* A comma-separated list from a string or a list of strings.  Leaves
   the result (a string, or nil when absent) on the stack, which anchors
   the returned pointer: nothing to free if a later check raises. */
static const char *opt_list (lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1) || lua_type(L, -1) == LUA_TSTRING)
    return lua_tostring(L, -1);
  if (lua_istable(L, -1)) {
    luaL_Buffer b;
    lua_Integer i, n = luaL_len(L, -1);
    int list = lua_gettop(L);
    luaL_buffinit(L, &b);
    for (i = 1; i <= n; i++) {
      if (lua_geti(L, list, i) != LUA_TSTRING)
        luaL_error(L, "option '%s' must be a list of strings", k);
      if (i > 1)
        luaL_addchar(&b, ',');
      luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lua_remove(L, list);
    return lua_tostring(L, -1);
  }
  luaL_error(L, "option '%s' must be a string or a list of strings", k);
  return NULL;
}

/* Push an LSN as its "X/Y" text. */
static void pushlsn (lua_State *L, PgLsn lsn) {
  char b[PGO_LSN_BUFSZ];
  lua_pushstring(L, pgo_lsn_format(lsn, b));
}

/* t[k] = "X/Y" for the table at the top of the stack. */
static void setlsn (lua_State *L, const char *k, PgLsn lsn) {
  pushlsn(L, lsn);
  lua_setfield(L, -2, k);
}

/* An LSN argument: "X/Y" or a non-negative integer. */
static PgLsn checklsn (lua_State *L, int arg) {
  PgLsn lsn;
  if (lua_isinteger(L, arg)) {
    lua_Integer n = lua_tointeger(L, arg);
    luaL_argcheck(L, n >= 0, arg, "negative LSN");
    return (PgLsn)n;
  }
  if (pgo_lsn_parse(luaL_checkstring(L, arg), &lsn) != 0)
    luaL_argerror(L, arg, "not an LSN (want \"X/Y\")");
  return lsn;
}

/* Monotonic clock, in seconds, for the waits below. */
static double mono (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Raise a core.cdc.error with interrupted = true after SIGINT. */
static void interrupted (lua_State *L, const char *op) {
  if (interrupt_requested()) {
    luax_push_error(L, CDC_ERROR, "op", op, "kind", "interrupted", "message", "interrupted",
                    NULL);
    luax_setbool(L, "interrupted", 1);
    lua_error(L);
  }
}

/* }====================================================== */

/*
** {======================================================
** Slots
** =======================================================
*/

static LSlot *checkslot (lua_State *L) {
  return (LSlot *)luaL_checkudata(L, 1, CDC_SLOT);
}

/* cdc.create_slot{source=, slot=, publication=, tables=, temporary=}:
   raises. */
static int l_create_slot (lua_State *L) {
  const char *source, *slot, *pub, *tables;
  LSlot *s;
  CdcError err;
  luaL_checktype(L, 1, LUA_TTABLE);
  source = luax_req_string(L, 1, "source");
  slot = luax_req_string(L, 1, "slot");
  pub = luax_opt_string(L, 1, "publication", NULL);
  tables = opt_list(L, 1, "tables");
  s = (LSlot *)luax_newudata(L, sizeof(LSlot), 0, CDC_SLOT);   /* closed until the slot exists */
  cdc_err_clear(&err);
  s->slot = cdc_slot_create(source, slot, pub, tables, luax_opt_bool(L, 1, "temporary", 0), &err);
  if (s->slot == NULL)
    return cdc_raise(L, "cdc.create_slot", &err);
  s->info = s->slot->info;
  return 1;
}

/* slot:close(), __gc and __close: end the exporting session (its
   snapshot stops being importable).  Idempotent, never raises. */
static int slot_close (lua_State *L) {
  LSlot *s = checkslot(L);
  if (s->slot != NULL) {
    cdc_slot_close(s->slot);
    s->slot = NULL;
  }
  return 0;
}

/* __index of a slot: name, lsn, snapshot (nil when none was exported),
   plugin, open, close.  Reads the copy kept in the box, so it works
   after close too. */
static int slot_index (lua_State *L) {
  LSlot *s = checkslot(L);
  const char *k = luaL_checkstring(L, 2);
  if (strcmp(k, "name") == 0)
    lua_pushstring(L, s->info.name);
  else if (strcmp(k, "lsn") == 0)
    pushlsn(L, s->info.lsn);
  else if (strcmp(k, "snapshot") == 0)
    s->info.snapshot[0] ? (void)lua_pushstring(L, s->info.snapshot) : lua_pushnil(L);
  else if (strcmp(k, "plugin") == 0)
    lua_pushstring(L, s->info.plugin);
  else if (strcmp(k, "open") == 0)
    lua_pushboolean(L, s->slot != NULL);
  else if (strcmp(k, "close") == 0)
    lua_pushcfunction(L, slot_close);
  else
    lua_pushnil(L);
  return 1;
}

/* __tostring of a slot. */
static int slot_tostring (lua_State *L) {
  LSlot *s = checkslot(L);
  char b[PGO_LSN_BUFSZ];
  lua_pushfstring(L, "core.cdc.slot %s at %s (%s)", s->info.name, pgo_lsn_format(s->info.lsn, b),
                  s->slot != NULL ? "snapshot exported" : "closed");
  return 1;
}

/* cdc.slot_info{source=, slot=}: raises on connection failure. */
static int l_slot_info (lua_State *L) {
  CdcSlotInfo si;
  CdcError err;
  luaL_checktype(L, 1, LUA_TTABLE);
  cdc_err_clear(&err);
  if (cdc_slot_info(luax_req_string(L, 1, "source"), luax_req_string(L, 1, "slot"), &si, &err) != 0)
    return cdc_raise(L, "cdc.slot_info", &err);
  lua_createtable(L, 0, 7);
  luax_setbool(L, "exists", si.exists);
  setlsn(L, "current_lsn", si.current_lsn);
  if (si.exists) {
    luax_setbool(L, "active", si.active);
    setlsn(L, "restart_lsn", si.restart_lsn);
    setlsn(L, "confirmed_lsn", si.confirmed_lsn);
    if (si.retained_bytes >= 0)
      luax_setint(L, "retained_bytes", si.retained_bytes);
    if (si.wal_status[0] != '\0')
      luax_setstr(L, "wal_status", si.wal_status);
  }
  return 1;
}

/* Option 'progress' ("auto" when absent) of the table at idx. */
static ApplyProgressMode opt_progress (lua_State *L, int idx) {
  const char *p = luax_opt_string(L, idx, "progress", "auto");
  if (strcmp(p, "auto") == 0) return APPLY_PROGRESS_AUTO;
  if (strcmp(p, "origin") == 0) return APPLY_PROGRESS_ORIGIN;
  if (strcmp(p, "table") == 0) return APPLY_PROGRESS_TABLE;
  return (ApplyProgressMode)luaL_error(L, "option 'progress' must be \"auto\", \"origin\" or \"table\"");
}

/* cdc.drop{source=, slot=, publication=, target=, origin=, progress=,
   identity=}: raises. */
static int l_drop (lua_State *L) {
  CdcError err;
  CdcDrop d;
  luaL_checktype(L, 1, LUA_TTABLE);
  cdc_err_clear(&err);
  memset(&d, 0, sizeof(d));
  d.source = luax_opt_string(L, 1, "source", NULL);
  d.slot = luax_opt_string(L, 1, "slot", NULL);
  d.publication = luax_opt_string(L, 1, "publication", NULL);
  d.target = luax_opt_string(L, 1, "target", NULL);
  d.origin = luax_opt_string(L, 1, "origin", d.slot);
  d.progress = opt_progress(L, 1);
  d.identity = luax_opt_string(L, 1, "identity", NULL);
  if (cdc_drop(&d, &err) != 0)
    return cdc_raise(L, "cdc.drop", &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* }====================================================== */

/*
** {======================================================
** Workers
** =======================================================
*/

static LWorker *checkworker (lua_State *L) {
  return (LWorker *)luaL_checkudata(L, 1, CDC_WORKER);
}

/* Option table_sync = { {schema=, table=, lsn="X/Y"}, ... } as an array
   in a userdata left on the stack (the caller keeps it there while the
   array is used; the strings belong to the option table).  *n entries;
   raises on a malformed list. */
static ApplySync *opt_sync (lua_State *L, int idx, int *n) {
  ApplySync *s;
  int i;
  *n = 0;
  lua_getfield(L, idx, "table_sync");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return NULL;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "option 'table_sync' must be a list of {schema=, table=, lsn=}");
  *n = (int)luaL_len(L, -1);
  s = (ApplySync *)lua_newuserdatauv(L, (size_t)(*n > 0 ? *n : 1) * sizeof(ApplySync), 0);
  for (i = 0; i < *n; i++) {
    const char *lsn;
    lua_geti(L, -2, i + 1);
    if (!lua_istable(L, -1))
      luaL_error(L, "option 'table_sync' entry %d is not a table", i + 1);
    s[i].schema = luax_req_string(L, -1, "schema");
    s[i].table = luax_req_string(L, -1, "table");
    lsn = luax_req_string(L, -1, "lsn");
    if (pgo_lsn_parse(lsn, &s[i].lsn) != 0)
      luaL_error(L, "option 'table_sync' entry %d: bad LSN '%s'", i + 1, lsn);
    lua_pop(L, 1);
  }
  lua_remove(L, -2);   /* the list; its entries stay reachable from the options */
  return s;
}

/* cdc.start{...}: raises on bad options and when the first session
   cannot start (missing slot, unreachable server, drift at start). */
static int l_start (lua_State *L) {
  CdcConfig cfg;
  CdcError err;
  LWorker *w;
  luaL_checktype(L, 1, LUA_TTABLE);
  memset(&cfg, 0, sizeof(cfg));
  cfg.source = luax_req_string(L, 1, "source");
  cfg.target = luax_req_string(L, 1, "target");
  cfg.slot = luax_req_string(L, 1, "slot");
  cfg.publication = opt_list(L, 1, "publication");
  if (cfg.publication == NULL || cfg.publication[0] == '\0')
    luaL_error(L, "option 'publication' is required");
  cfg.origin = luax_opt_string(L, 1, "origin", NULL);
  cfg.state_dir = luax_opt_string(L, 1, "state_dir", NULL);
  cfg.batch = (int)luax_opt_int(L, 1, "batch", 20000);
  cfg.group_txns = (int)luax_opt_int(L, 1, "group", 10000);
  cfg.inflight = (int)luax_opt_int(L, 1, "inflight", 8);
  cfg.set_threshold = (int)luax_opt_int(L, 1, "set_threshold", 500);
  cfg.memory_cap = opt_size(L, 1, "memory_cap", 64u << 20);
  cfg.proto_version = (int)luax_opt_int(L, 1, "proto_version", 0);
  cfg.status_interval_ms = (int)(luax_opt_int(L, 1, "status_interval", 1) * 1000);
  cfg.receive_timeout_ms = (int)(luax_opt_int(L, 1, "receive_timeout", 60) * 1000);
  cfg.replica_role = luax_opt_bool(L, 1, "replica_role", 1);
  cfg.sync = opt_sync(L, 1, &cfg.nsync);
  lua_getfield(L, 1, "streaming");
  cfg.streaming = lua_isnil(L, -1) ? -1 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  cfg.progress = opt_progress(L, 1);
  cfg.identity = luax_opt_string(L, 1, "identity", NULL);
  if (cfg.batch < 1 || cfg.group_txns < 1 || cfg.inflight < 1 || cfg.set_threshold < 0 ||
      cfg.proto_version < 0 || cfg.proto_version > 2)
    luaL_error(L, "options batch, group and inflight must be >= 1, set_threshold >= 0, "
               "proto_version 0, 1 or 2");
  w = (LWorker *)luax_newudata(L, sizeof(LWorker), 0, CDC_WORKER);   /* stopped until it runs */
  w->stopped = 1;
  cdc_err_clear(&err);
  w->cdc = cdc_start(&cfg, &err);
  if (w->cdc == NULL)
    return cdc_raise(L, "cdc.start", &err);
  w->stopped = 0;
  return 1;
}

/* The worker's current status, or its final one once stopped. */
static void getstatus (LWorker *w, CdcStatus *st) {
  if (w->cdc != NULL)
    cdc_get_status(w->cdc, st);
  else
    *st = w->final;
}

/* Push the lag table of worker:lag() (also the base of the status). */
static void push_lag (lua_State *L, const CdcStatus *st) {
  lua_createtable(L, 0, 8);
  luax_setint(L, "bytes", (lua_Integer)st->lag_bytes);
  luax_setnum(L, "seconds", st->lag_seconds);
  setlsn(L, "applied_lsn", st->applied_lsn);
  setlsn(L, "source_lsn", st->source_lsn);
  setlsn(L, "received_lsn", st->received_lsn);
  if (st->retained_bytes >= 0)
    luax_setint(L, "retained_bytes", st->retained_bytes);
  if (st->last_commit_time > 0)
    luax_setnum(L, "last_commit_time", st->last_commit_time);
}

/* Push the status table of worker:status(): the lag fields, the state,
   the LSNs, the counters and the last error (when there is one). */
static void push_status (lua_State *L, const CdcStatus *st) {
  push_lag(L, st);
  luax_setstr(L, "state", cdc_state_name(st->state));
  setlsn(L, "commit_lsn", st->commit_lsn);
  setlsn(L, "start_lsn", st->start_lsn);
  if (st->pause_lsn != 0)
    setlsn(L, "pause_lsn", st->pause_lsn);
  luax_setbool(L, "paused", st->state == CDC_PAUSED);
  luax_setint(L, "txns", (lua_Integer)st->stats.txns);
  luax_setint(L, "commits", (lua_Integer)st->stats.commits);
  luax_setint(L, "inserts", (lua_Integer)st->stats.inserts);
  luax_setint(L, "updates", (lua_Integer)st->stats.updates);
  luax_setint(L, "deletes", (lua_Integer)st->stats.deletes);
  luax_setint(L, "truncates", (lua_Integer)st->stats.truncates);
  luax_setint(L, "set_segments", (lua_Integer)st->stats.set_segments);
  luax_setint(L, "fallbacks", (lua_Integer)st->stats.fallbacks);
  luax_setint(L, "missing_rows", (lua_Integer)st->stats.missing);
  luax_setint(L, "skipped_in_copy", (lua_Integer)st->stats.skipped);
  luax_setint(L, "bytes_applied", (lua_Integer)st->stats.bytes);
  luax_setint(L, "queued_txns", (lua_Integer)st->queued_txns);
  luax_setint(L, "received_txns", (lua_Integer)st->received_txns);
  luax_setint(L, "spilled_txns", (lua_Integer)st->spilled_txns);
  luax_setint(L, "reconnects", st->reconnects);
  luax_setnum(L, "receiver_wait_seconds", st->recv_wait_s);
  luax_setnum(L, "apply_idle_seconds", st->apply_idle_s);
  luax_setint(L, "proto_version", st->proto_version);
  luax_setbool(L, "streaming", st->streaming);
  if (st->progress[0] != '\0')
    luax_setstr(L, "progress", st->progress);
  luax_setint(L, "apply_pid", st->apply_pid);
  luax_setint(L, "stream_pid", st->stream_pid);
  if (st->error.message[0] != '\0') {
    luax_setstr(L, "error", st->error.message);
    luax_setstr(L, "error_kind", cdc_err_kind_name(st->error.kind));
  }
}

/* Raise the worker's error when it failed. */
static void check_failed (lua_State *L, const CdcStatus *st, const char *op) {
  if (st->state == CDC_FAILED)
    cdc_raise(L, op, &st->error);
}

/* worker:status() -> status table; never raises on a failed worker. */
static int w_status (lua_State *L) {
  CdcStatus st;
  getstatus(checkworker(L), &st);
  push_status(L, &st);
  return 1;
}

/* worker:lag() -> lag table. */
static int w_lag (lua_State *L) {
  CdcStatus st;
  getstatus(checkworker(L), &st);
  push_lag(L, &st);
  return 1;
}

/* worker:poll(): the status; raises when the worker failed. */
static int w_poll (lua_State *L) {
  CdcStatus st;
  getstatus(checkworker(L), &st);
  check_failed(L, &st, "cdc.poll");
  push_status(L, &st);
  return 1;
}

/* worker:run_for(seconds): wait while the worker applies; raises when it
   fails or on interrupt.  Returns the status. */
static int w_run_for (lua_State *L) {
  LWorker *w = checkworker(L);
  double secs = luaL_checknumber(L, 2), end = mono() + secs;
  CdcStatus st;
  for (;;) {
    double left = end - mono();
    getstatus(w, &st);
    check_failed(L, &st, "cdc.run_for");
    interrupted(L, "cdc.run_for");
    if (left <= 0 || w->cdc == NULL || st.state == CDC_STOPPED)
      break;
    /* sleeps on the worker's condition: wakes early on progress */
    cdc_wait_applied(w->cdc, ~(PgLsn)0, left < 0.2 ? left : 0.2);
  }
  push_status(L, &st);
  return 1;
}

/* worker:wait_until(lsn, timeout): true when applied, false on timeout;
   raises when the worker failed or stopped first, or on interrupt. */
static int w_wait_until (lua_State *L) {
  LWorker *w = checkworker(L);
  PgLsn lsn = checklsn(L, 2);
  double timeout = luaL_checknumber(L, 3), end = mono() + timeout;
  CdcStatus st;
  for (;;) {
    double left = end - mono();
    int rc;
    if (w->cdc == NULL) {
      if (w->final.applied_lsn >= lsn)
        break;
      return raise_msg(L, "cdc.wait_until", CDC_ERR_CONFIG, "the worker was stopped");
    }
    rc = cdc_wait_applied(w->cdc, lsn, left < 0.2 ? (left > 0 ? left : 0) : 0.2);
    if (rc == 1)
      break;
    getstatus(w, &st);
    check_failed(L, &st, "cdc.wait_until");
    if (rc < 0)
      return raise_msg(L, "cdc.wait_until", CDC_ERR_CONFIG, "the worker stopped before reaching the LSN");
    interrupted(L, "cdc.wait_until");
    if (left <= 0) {
      lua_pushboolean(L, 0);
      return 1;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* worker:pause_at(lsn): stop applying after the last transaction
   ending at or before lsn (cdc_pause_at); raises when the worker was
   stopped. */
static int w_pause_at (lua_State *L) {
  LWorker *w = checkworker(L);
  PgLsn lsn = checklsn(L, 2);
  if (w->cdc == NULL)
    return raise_msg(L, "cdc.pause_at", CDC_ERR_CONFIG, "the worker was stopped");
  cdc_pause_at(w->cdc, lsn);
  return 0;
}

/* worker:resume(): lift a pause; nothing once stopped. */
static int w_resume (lua_State *L) {
  LWorker *w = checkworker(L);
  if (w->cdc != NULL)
    cdc_resume(w->cdc);
  return 0;
}

/*
** Stop a running worker within 'timeout' seconds (the group in flight
** finishes), keep its last status in w->final and free it.  Nothing to
** do once stopped.  Never raises.
*/
static void stop_worker (LWorker *w, double timeout) {
  if (w->cdc != NULL) {
    cdc_stop(w->cdc, timeout);
    cdc_get_status(w->cdc, &w->final);
    cdc_free(w->cdc);
    w->cdc = NULL;
    w->stopped = 1;
  }
}

/* worker:stop([timeout]) (also worker:close): finish the group in
   flight, stop, close.  Idempotent.  Returns the final status. */
static int w_stop (lua_State *L) {
  LWorker *w = checkworker(L);
  stop_worker(w, luaL_optnumber(L, 2, 30));
  push_status(L, &w->final);
  return 1;
}

/* __close(obj, err): like stop with the default timeout, no result. */
static int w_close (lua_State *L) {
  stop_worker(checkworker(L), 30);
  return 0;
}

/* __gc: free a worker that was never stopped (cdc_free stops it
   first).  Never raises. */
static int w_gc (lua_State *L) {
  LWorker *w = checkworker(L);
  if (w->cdc != NULL) {
    cdc_free(w->cdc);
    w->cdc = NULL;
  }
  return 0;
}

/* __tostring of a worker: its state and applied LSN. */
static int w_tostring (lua_State *L) {
  LWorker *w = checkworker(L);
  CdcStatus st;
  char b[PGO_LSN_BUFSZ];
  getstatus(w, &st);
  lua_pushfstring(L, "core.cdc worker (%s, applied %s)", cdc_state_name(st.state),
                  pgo_lsn_format(st.applied_lsn, b));
  return 1;
}

/* }====================================================== */

/* cdc.lsn_diff(a, b) -> a - b (bytes, may be negative). */
static int l_lsn_diff (lua_State *L) {
  PgLsn a = checklsn(L, 1), b = checklsn(L, 2);
  lua_pushinteger(L, a >= b ? (lua_Integer)(a - b) : -(lua_Integer)(b - a));
  return 1;
}

/* cdc.lsn(n) -> "X/Y"; cdc.lsn_int("X/Y") -> integer. */
static int l_lsn (lua_State *L) {
  pushlsn(L, checklsn(L, 1));
  return 1;
}

static int l_lsn_int (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)checklsn(L, 1));
  return 1;
}

/* Open the module: the three metatables, then the function table. */
int luaopen_core_cdc (lua_State *L) {
  static const luaL_Reg funcs[] = {
    {"create_slot", l_create_slot},
    {"slot_info", l_slot_info},
    {"drop", l_drop},
    {"start", l_start},
    {"lsn_diff", l_lsn_diff},
    {"lsn", l_lsn},
    {"lsn_int", l_lsn_int},
    {NULL, NULL}
  };
  static const luaL_Reg worker_methods[] = {
    {"status", w_status},
    {"lag", w_lag},
    {"poll", w_poll},
    {"run_for", w_run_for},
    {"wait_until", w_wait_until},
    {"pause_at", w_pause_at},
    {"resume", w_resume},
    {"stop", w_stop},
    {"close", w_stop},
    {NULL, NULL}
  };
  static const luaL_Reg worker_meta[] = {
    {"__gc", w_gc},
    {"__close", w_close},
    {"__tostring", w_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg slot_meta[] = {
    {"__index", slot_index},
    {"__gc", slot_close},
    {"__close", slot_close},
    {"__tostring", slot_tostring},
    {NULL, NULL}
  };
  luax_createmeta(L, CDC_WORKER, worker_meta, worker_methods);
  luax_createmeta(L, CDC_SLOT, slot_meta, NULL);
  luax_error_meta(L, CDC_ERROR, &error_style);
  luaL_newlib(L, funcs);
  return 1;
}
