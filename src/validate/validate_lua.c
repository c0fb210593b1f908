/*
** validate_lua.c
** Lua module "core.validate": row-level data validation (validate.c).
**
**   validate.run{source=, target=, tables={"schema.table", ...},
**                jobs=4, chunk_rows=20000, max_rows=100, max_value_len=64,
**                redact=false, mode="offline"|"consistent"|"recheck",
**                pause_at=function (lsn) end, resume=function () end,
**                recheck=3, recheck_delay=10, statement_timeout=3600,
**                point_timeout=300, progress=true, scan=true} -> report
**   validate.modes -> {"offline", "consistent", "recheck"}
**
** mode="consistent" needs pause_at and resume: pause_at(lsn) must return
** once change apply has applied every source transaction ending at or
** before lsn and holds later ones; resume() lets apply continue.
** pause_at is called twice, with increasing LSNs (a hold at the source's
** position, then the consistent point: see validate.h).  Both run on
** the calling thread while the validation waits; an error raised in
** either stops the validation (resume is still called after a pause).
**
** The report is a plain table (see docs/validation.md): totals, and per
** table the status, counts and the differing rows (kind, key, columns
** with source/target values, or for tables without a key the row-hash
** groups with their counts and example values).
**
** Binding only.  Failures that stop the run raise a
** "core.validate.error" object (op, message, interrupted) with a
** __tostring; per-table failures are in the report.
*/
#include <lauxlib.h>
#include <stdio.h>

#include "host/luax.h"
#include "host/modules.h"
#include "util/interrupt.h"
#include "validate/validate.h"

#define VALIDATE_ERROR  "core.validate.error"
#define VALIDATE_REPORT "core.validate.report"   /* internal: owns a VReport */
#define ERRLEN 1536

/* tostring of core.validate.error (luax_error_tostring):
   "validate failed: <message>". */
static const LuaxErrorStyle error_style = {"validate failed: ", NULL, "core.validate error", 0, NULL, NULL};

/* Raise a core.validate.error {op, message, interrupted}; never returns. */
static int validate_raise (lua_State *L, const char *op, const char *msg) {
  luax_push_error(L, VALIDATE_ERROR, "op", op, "message", msg, NULL);
  luax_setbool(L, "interrupted", interrupt_requested());
  return lua_error(L);
}

/* __gc of the report box: frees the C report (a zeroed one is empty). */
static int report_gc (lua_State *L) {
  VReport *r = (VReport *)luaL_checkudata(L, 1, VALIDATE_REPORT);
  validate_report_free(r);
  return 0;
}

/* {======================================================================
** The consistent-point hook: C callbacks that call the Lua functions
** ======================================================================= */

typedef struct LuaHook {
  lua_State *L;
  int pause_idx, resume_idx;   /* stack slots of the functions */
} LuaHook;

/* Call the function at stack slot 'idx' with an optional string; a Lua
   error becomes the hook's failure message. */
static int call_hook (LuaHook *h, int idx, const char *arg, char *err, size_t errlen) {
  lua_State *L = h->L;
  int nargs = 0;
  lua_pushvalue(L, idx);
  if (arg != NULL) {
    lua_pushstring(L, arg);
    nargs = 1;
  }
  if (lua_pcall(L, nargs, 0, 0) != LUA_OK) {
    const char *m = luaL_tolstring(L, -1, NULL);
    snprintf(err, errlen, "%s", m != NULL ? m : "error in hook");
    lua_pop(L, 2);
    return -1;
  }
  return 0;
}

static int hook_pause (void *ud, const char *lsn, char *err, size_t errlen) {
  LuaHook *h = ud;
  return call_hook(h, h->pause_idx, lsn, err, errlen);
}

static int hook_resume (void *ud, char *err, size_t errlen) {
  LuaHook *h = ud;
  return call_hook(h, h->resume_idx, NULL, err, errlen);
}

/* }====================================================================== */

/* {======================================================================
** The report as Lua tables
** ======================================================================= */

/* Push a list of n strings. */
static void push_strv (lua_State *L, char **v, int n) {
  int i;
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_pushstring(L, v[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

/*
** Push one differing row: {kind, key} for keyed tables, {kind, hash,
** source_count, target_count, values} for row groups of tables without
** a key, plus the differing columns of a changed row.
*/
static void push_row (lua_State *L, const VTableResult *t, const VRowDiff *d) {
  int i;
  lua_createtable(L, 0, 6);
  luax_setstr(L, "kind", validate_kind_name(d->kind));
  if (t->nkey > 0) {
    push_strv(L, d->key, t->nkey);
    lua_setfield(L, -2, "key");
  } else {
    char hex[32];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)d->hash);
    luax_setstr(L, "hash", hex);
    luax_setint(L, "source_count", d->source_count);
    luax_setint(L, "target_count", d->target_count);
    if (d->values != NULL) {
      lua_createtable(L, t->ncolumns, 0);
      for (i = 0; i < t->ncolumns; i++) {
        lua_createtable(L, 0, 2);
        luax_setstr(L, "name", t->columns[i]);
        luax_setstr(L, "value", d->values[i]);
        luax_setbool(L, "null", d->values[i] == NULL);
        lua_rawseti(L, -2, i + 1);
      }
      lua_setfield(L, -2, "values");
    }
  }
  if (d->kind == VDIFF_CHANGED) {
    lua_createtable(L, d->ncols, 0);
    for (i = 0; i < d->ncols; i++) {
      const VColDiff *c = &d->cols[i];
      lua_createtable(L, 0, 6);
      luax_setstr(L, "name", c->name);
      if (c->hidden) {
        luax_setbool(L, "hidden", 1);
      } else {
        luax_setstr(L, "source", c->source);
        luax_setstr(L, "target", c->target);
        luax_setbool(L, "source_null", c->source == NULL);
        luax_setbool(L, "target_null", c->target == NULL);
      }
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "columns");
  }
}

/* Push one table's result (fields listed in docs/validation.md). */
static void push_table (lua_State *L, const VTableResult *t) {
  int i;
  lua_createtable(L, 0, 24);
  luax_setstr(L, "schema", t->schema);
  luax_setstr(L, "name", t->name);
  luax_setstr(L, "status", validate_status_name(t->status));
  luax_setstr(L, "error", t->error);
  luax_setstr(L, "key_kind", t->key_kind);
  push_strv(L, t->key_cols, t->nkey);
  lua_setfield(L, -2, "key");
  push_strv(L, t->columns, t->ncolumns);
  lua_setfield(L, -2, "columns");
  push_strv(L, t->only_source, t->nonly_source);
  lua_setfield(L, -2, "only_source");
  push_strv(L, t->only_target, t->nonly_target);
  lua_setfield(L, -2, "only_target");
  luax_setbool(L, "multiset", t->nkey == 0 && t->status != VT_NOT_FOUND &&
                          t->status != VT_MISSING_ON_TARGET);
  luax_setint(L, "source_rows", t->source_rows);
  luax_setint(L, "target_rows", t->target_rows);
  luax_setint(L, "missing", t->missing);
  luax_setint(L, "extra", t->extra);
  luax_setint(L, "changed", t->changed);
  luax_setint(L, "chunks", t->nchunks);
  luax_setint(L, "chunks_differing", t->chunks_differing);
  luax_setbool(L, "truncated", t->truncated);
  luax_setint(L, "rechecks", t->rechecks);
  luax_setint(L, "initial_differences", t->initial_differences);
  luax_setint(L, "bytes", t->bytes);
  luax_setnum(L, "seconds", t->seconds);
  lua_createtable(L, t->nrows, 0);
  for (i = 0; i < t->nrows; i++) {
    push_row(L, t, &t->rows[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "rows");
}

/* Push the whole report: totals and the list of table results. */
static void push_report (lua_State *L, const VReport *r) {
  int i;
  lua_createtable(L, 0, 18);
  luax_setstr(L, "mode", validate_mode_name(r->mode));
  if (r->lsn[0] != '\0')
    luax_setstr(L, "lsn", r->lsn);
  luax_setnum(L, "point_ms", r->point_ms);
  luax_setnum(L, "seconds", r->seconds);
  luax_setint(L, "bytes_source", r->bytes_source);
  luax_setint(L, "bytes_target", r->bytes_target);
  luax_setint(L, "table_bytes", r->table_bytes);
  luax_setint(L, "tables_equal", r->tables_equal);
  luax_setint(L, "tables_different", r->tables_different);
  luax_setint(L, "tables_failed", r->tables_failed);
  luax_setint(L, "missing", r->missing);
  luax_setint(L, "extra", r->extra);
  luax_setint(L, "changed", r->changed);
  lua_createtable(L, r->ntables, 0);
  for (i = 0; i < r->ntables; i++) {
    push_table(L, &r->tables[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "tables");
}

/* }====================================================================== */

/*
** The 'tables' option (at stack slot 'idx': nil or a list of names) as
** o->tables / o->ntables.  The pointer array is a userdata pushed on the
** stack; the names stay anchored by the list.  Raises on a bad list.
*/
static void opt_tables (lua_State *L, int idx, VOptions *o) {
  const char **tables;
  lua_Integer i, n;
  if (lua_isnil(L, idx))
    return;
  if (!lua_istable(L, idx))
    luaL_error(L, "option 'tables' must be a list of table names");
  n = (lua_Integer)lua_rawlen(L, idx);
  tables = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (i = 1; i <= n; i++) {
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      luaL_error(L, "option 'tables' must be a list of table names");
    tables[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  o->tables = tables;
  o->ntables = (int)n;
}

/*
** validate.run(options) -> report.  Raises core.validate.error when the
** run stops (connection, consistent point, interrupt); argument errors
** raise strings.
*/
static int validate_run_lua (lua_State *L) {
  VOptions o;
  VReport *r;
  LuaHook hook;
  const char *mode;
  char err[ERRLEN];
  int m, rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  validate_options_init(&o);
  o.source = luax_opt_string(L, 1, "source", NULL);
  o.target = luax_opt_string(L, 1, "target", NULL);
  if (o.source == NULL || o.target == NULL)
    return luaL_error(L, "options 'source' and 'target' are required");
  o.jobs = (int)luax_opt_int_min(L, 1, "jobs", 4, 1);
  o.chunk_rows = (long)luax_opt_int_min(L, 1, "chunk_rows", o.chunk_rows, 100);
  o.max_rows = (int)luax_opt_int_min(L, 1, "max_rows", o.max_rows, 0);
  o.max_value_len = (int)luax_opt_int_min(L, 1, "max_value_len", o.max_value_len, 0);
  o.redact = luax_opt_bool(L, 1, "redact", 0);
  o.progress = luax_opt_bool(L, 1, "progress", 1);
  o.scan = luax_opt_bool(L, 1, "scan", 1);
  o.recheck_times = (int)luax_opt_int_min(L, 1, "recheck", o.recheck_times, 0);
  o.recheck_delay = luax_opt_number_min(L, 1, "recheck_delay", o.recheck_delay, 0);
  o.statement_timeout_s = (int)luax_opt_int_min(L, 1, "statement_timeout",
                                                o.statement_timeout_s, 0);
  o.point_timeout_s = (int)luax_opt_int_min(L, 1, "point_timeout", o.point_timeout_s, 1);
  mode = luax_opt_string(L, 1, "mode", "offline");
  m = validate_mode_from_name(mode);
  if (m < 0)
    return luaL_error(L, "option 'mode' must be offline, consistent or recheck (got '%s')", mode);
  o.mode = (VMode)m;
  /* stack: 1 options, 2 pause_at, 3 resume, 4 tables, then the name
     array (when tables are given) and the report box */
  lua_getfield(L, 1, "pause_at");
  lua_getfield(L, 1, "resume");
  if (o.mode == VMODE_CONSISTENT) {
    if (lua_type(L, 2) != LUA_TFUNCTION || lua_type(L, 3) != LUA_TFUNCTION)
      return luaL_error(L, "mode 'consistent' needs the functions pause_at(lsn) and resume()");
    hook.L = L;
    hook.pause_idx = 2;
    hook.resume_idx = 3;
    o.hook.pause_at = hook_pause;
    o.hook.resume = hook_resume;
    o.hook.ud = &hook;
  }
  lua_getfield(L, 1, "tables");
  opt_tables(L, 4, &o);
  r = (VReport *)luax_newudata(L, sizeof(VReport), 0, VALIDATE_REPORT);
  rc = validate_run(&o, r, err, sizeof(err));
  if (rc != 0)
    return validate_raise(L, "run", err);   /* the box's __gc frees the report */
  push_report(L, r);
  validate_report_free(r);
  return 1;
}

static const luaL_Reg validate_funcs[] = {
  {"run", validate_run_lua},
  {NULL, NULL}
};

/* require "core.validate": the metatables, run() and the list of modes. */
int luaopen_core_validate (lua_State *L) {
  static const luaL_Reg report_meta[] = {{"__gc", report_gc}, {NULL, NULL}};
  int m;
  luax_error_meta(L, VALIDATE_ERROR, &error_style);
  luax_createmeta(L, VALIDATE_REPORT, report_meta, NULL);
  luaL_newlib(L, validate_funcs);
  lua_createtable(L, 3, 0);
  for (m = VMODE_OFFLINE; m <= VMODE_RECHECK; m++) {
    lua_pushstring(L, validate_mode_name((VMode)m));
    lua_rawseti(L, -2, m + 1);
  }
  lua_setfield(L, -2, "modes");
  return 1;
}
