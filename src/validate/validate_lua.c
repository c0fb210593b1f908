/*
** validate_lua.c
** Lua module "core.validate": row-level data validation (validate.c).
**
**   validate.run{source=, target=, tables={"schema.table", ...},
**                jobs=4, chunk_rows=20000, max_rows=100, max_value_len=64,
**                redact=false, mode="offline"|"consistent"|"recheck",
**                pause_at=function (lsn) end, resume=function () end,
**                recheck=3, recheck_delay=10, statement_timeout=3600,
**                lock_timeout=5, progress=true, scan=true} -> report
**   validate.modes -> {"offline", "consistent", "recheck"}
**
** mode="consistent" needs pause_at and resume: pause_at(lsn) must return
** once change apply has applied every source transaction ending at or
** before lsn and holds later ones; resume() lets apply continue.  Both
** run on the calling thread while the validation waits; an error raised
** in either stops the validation (resume is still called after a pause).
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
#include <stdlib.h>
#include <string.h>

#include "host/modules.h"
#include "util/buf.h"
#include "util/interrupt.h"
#include "validate/validate.h"

#define VALIDATE_ERROR  "core.validate.error"
#define VALIDATE_REPORT "core.validate.report"   /* internal: owns a VReport */
#define ERRLEN 1536

static int error_tostring (lua_State *L) {
  lua_getfield(L, 1, "message");
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "core.validate error");
  }
  lua_pushfstring(L, "validate failed: %s", lua_tostring(L, -1));
  return 1;
}

static int validate_raise (lua_State *L, const char *op, const char *msg) {
  lua_createtable(L, 0, 3);
  lua_pushstring(L, op);
  lua_setfield(L, -2, "op");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  lua_pushboolean(L, interrupt_requested());
  lua_setfield(L, -2, "interrupted");
  luaL_setmetatable(L, VALIDATE_ERROR);
  return lua_error(L);
}

/* __gc of the report box: frees the C report. */
static int report_gc (lua_State *L) {
  VReport *r = (VReport *)luaL_checkudata(L, 1, VALIDATE_REPORT);
  validate_report_free(r);
  return 0;
}

/* {======================================================================
** Options
** ======================================================================= */

static const char *opt_string (lua_State *L, int t, const char *k, const char *def) {
  const char *v;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return def;
  }
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "option '%s' must be a string", k);
  v = lua_tostring(L, -1);
  lua_pop(L, 1);   /* still anchored by the options table */
  return v;
}

static lua_Integer opt_int (lua_State *L, int t, const char *k, lua_Integer def, lua_Integer min) {
  lua_Integer v;
  int ok;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return def;
  }
  v = lua_tointegerx(L, -1, &ok);
  if (!ok || v < min)
    luaL_error(L, "option '%s' must be an integer >= %d", k, (int)min);
  lua_pop(L, 1);
  return v;
}

static double opt_number (lua_State *L, int t, const char *k, double def) {
  double v;
  int ok;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return def;
  }
  v = (double)lua_tonumberx(L, -1, &ok);
  if (!ok || v < 0)
    luaL_error(L, "option '%s' must be a number >= 0", k);
  lua_pop(L, 1);
  return v;
}

static int opt_bool (lua_State *L, int t, const char *k, int def) {
  int v;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return def;
  }
  if (!lua_isboolean(L, -1))
    luaL_error(L, "option '%s' must be a boolean", k);
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* }====================================================================== */

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

static void set_int (lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

static void set_str (lua_State *L, const char *k, const char *v) {
  if (v == NULL)
    return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

static void set_bool (lua_State *L, const char *k, int v) {
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}

static void push_strv (lua_State *L, char **v, int n) {
  int i;
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++) {
    lua_pushstring(L, v[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

static void push_row (lua_State *L, const VTableResult *t, const VRowDiff *d) {
  int i;
  lua_createtable(L, 0, 6);
  set_str(L, "kind", validate_kind_name(d->kind));
  if (t->nkey > 0) {
    push_strv(L, d->key, t->nkey);
    lua_setfield(L, -2, "key");
  } else {
    char hex[32];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)d->hash);
    set_str(L, "hash", hex);
    set_int(L, "source_count", d->source_count);
    set_int(L, "target_count", d->target_count);
    if (d->values != NULL) {
      lua_createtable(L, t->ncolumns, 0);
      for (i = 0; i < t->ncolumns; i++) {
        lua_createtable(L, 0, 2);
        set_str(L, "name", t->columns[i]);
        set_str(L, "value", d->values[i]);
        set_bool(L, "null", d->values[i] == NULL);
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
      set_str(L, "name", c->name);
      if (c->hidden) {
        set_bool(L, "hidden", 1);
      } else {
        set_str(L, "source", c->source);
        set_str(L, "target", c->target);
        set_bool(L, "source_null", c->source == NULL);
        set_bool(L, "target_null", c->target == NULL);
      }
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "columns");
  }
}

static void push_table (lua_State *L, const VTableResult *t) {
  int i;
  lua_createtable(L, 0, 24);
  set_str(L, "schema", t->schema);
  set_str(L, "name", t->name);
  set_str(L, "status", validate_status_name(t->status));
  set_str(L, "error", t->error);
  set_str(L, "key_kind", t->key_kind);
  push_strv(L, t->key_cols, t->nkey);
  lua_setfield(L, -2, "key");
  push_strv(L, t->columns, t->ncolumns);
  lua_setfield(L, -2, "columns");
  push_strv(L, t->only_source, t->nonly_source);
  lua_setfield(L, -2, "only_source");
  push_strv(L, t->only_target, t->nonly_target);
  lua_setfield(L, -2, "only_target");
  set_bool(L, "multiset", t->nkey == 0 && t->status != VT_NOT_FOUND &&
                          t->status != VT_MISSING_ON_TARGET);
  set_int(L, "source_rows", t->source_rows);
  set_int(L, "target_rows", t->target_rows);
  set_int(L, "missing", t->missing);
  set_int(L, "extra", t->extra);
  set_int(L, "changed", t->changed);
  set_int(L, "chunks", t->nchunks);
  set_int(L, "chunks_differing", t->chunks_differing);
  set_bool(L, "truncated", t->truncated);
  set_int(L, "rechecks", t->rechecks);
  set_int(L, "initial_differences", t->initial_differences);
  set_int(L, "bytes", t->bytes);
  lua_pushnumber(L, t->seconds);
  lua_setfield(L, -2, "seconds");
  lua_createtable(L, t->nrows, 0);
  for (i = 0; i < t->nrows; i++) {
    push_row(L, t, &t->rows[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "rows");
}

static void push_report (lua_State *L, const VReport *r) {
  int i;
  lua_createtable(L, 0, 18);
  set_str(L, "mode", validate_mode_name(r->mode));
  if (r->lsn[0] != '\0')
    set_str(L, "lsn", r->lsn);
  lua_pushnumber(L, r->fence_ms);
  lua_setfield(L, -2, "fence_ms");
  lua_pushnumber(L, r->seconds);
  lua_setfield(L, -2, "seconds");
  set_int(L, "bytes_source", r->bytes_source);
  set_int(L, "bytes_target", r->bytes_target);
  set_int(L, "table_bytes", r->table_bytes);
  set_int(L, "tables_equal", r->tables_equal);
  set_int(L, "tables_different", r->tables_different);
  set_int(L, "tables_failed", r->tables_failed);
  set_int(L, "missing", r->missing);
  set_int(L, "extra", r->extra);
  set_int(L, "changed", r->changed);
  lua_createtable(L, r->ntables, 0);
  for (i = 0; i < r->ntables; i++) {
    push_table(L, &r->tables[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "tables");
}

/* }====================================================================== */

/*
** validate.run(options) -> report.  Raises core.validate.error when the
** run stops (connection, consistent point, interrupt); argument errors
** raise strings.
*/
static int validate_run_lua (lua_State *L) {
  VOptions o;
  VReport *r;
  LuaHook hook;
  const char **tables = NULL;
  const char *mode;
  char err[ERRLEN];
  int m, rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  validate_options_init(&o);
  o.source = opt_string(L, 1, "source", NULL);
  o.target = opt_string(L, 1, "target", NULL);
  if (o.source == NULL || o.target == NULL)
    return luaL_error(L, "options 'source' and 'target' are required");
  o.jobs = (int)opt_int(L, 1, "jobs", 4, 1);
  o.chunk_rows = (long)opt_int(L, 1, "chunk_rows", o.chunk_rows, 100);
  o.max_rows = (int)opt_int(L, 1, "max_rows", o.max_rows, 0);
  o.max_value_len = (int)opt_int(L, 1, "max_value_len", o.max_value_len, 0);
  o.redact = opt_bool(L, 1, "redact", 0);
  o.progress = opt_bool(L, 1, "progress", 1);
  o.scan = opt_bool(L, 1, "scan", 1);
  o.recheck_times = (int)opt_int(L, 1, "recheck", o.recheck_times, 0);
  o.recheck_delay = opt_number(L, 1, "recheck_delay", o.recheck_delay);
  o.statement_timeout_s = (int)opt_int(L, 1, "statement_timeout", o.statement_timeout_s, 0);
  o.lock_timeout_ms = (int)(opt_number(L, 1, "lock_timeout", o.lock_timeout_ms / 1000.0) * 1000);
  mode = opt_string(L, 1, "mode", "offline");
  m = validate_mode_from_name(mode);
  if (m < 0)
    return luaL_error(L, "option 'mode' must be offline, consistent or recheck (got '%s')", mode);
  o.mode = (VMode)m;
  /* stack: 1 options, 2 pause_at, 3 resume, 4 tables box */
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
  if (!lua_isnil(L, 4)) {
    lua_Integer i, n;
    if (!lua_istable(L, 4))
      return luaL_error(L, "option 'tables' must be a list of table names");
    n = (lua_Integer)lua_rawlen(L, 4);
    tables = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    for (i = 1; i <= n; i++) {
      if (lua_rawgeti(L, 4, i) != LUA_TSTRING)
        return luaL_error(L, "option 'tables' must be a list of table names");
      tables[i - 1] = lua_tostring(L, -1);   /* anchored by the list */
      lua_pop(L, 1);
    }
    o.tables = tables;
    o.ntables = (int)n;
  }
  r = (VReport *)lua_newuserdatauv(L, sizeof(VReport), 0);
  memset(r, 0, sizeof(*r));
  luaL_setmetatable(L, VALIDATE_REPORT);
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

int luaopen_core_validate (lua_State *L) {
  if (luaL_newmetatable(L, VALIDATE_ERROR)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, VALIDATE_REPORT)) {
    lua_pushcfunction(L, report_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, validate_funcs);
  lua_createtable(L, 3, 0);
  lua_pushliteral(L, "offline");
  lua_rawseti(L, -2, 1);
  lua_pushliteral(L, "consistent");
  lua_rawseti(L, -2, 2);
  lua_pushliteral(L, "recheck");
  lua_rawseti(L, -2, 3);
  lua_setfield(L, -2, "modes");
  return 1;
}
