/*
** log_lua.c
** Lua module "log": the C logger (src/util/log.h) for runbooks and the
** engine.  log.info(fmt, ...) formats with string.format and reports the
** message at INFO; every message is redacted by the logger.
*/
#include <errno.h>
#include <lauxlib.h>
#include <string.h>

#include "host/modules.h"
#include "util/log.h"

/* log.<level>(fmt, ...): format with string.format (upvalue 1) when
   there are arguments, then log; below the level, nothing is formatted.
   Raises only what string.format raises. */
static int log_at (lua_State *L, LogLevel level) {
  if (level < log_get_level())
    return 0;
  if (lua_gettop(L) > 1) {
    lua_pushvalue(L, lua_upvalueindex(1));  /* string.format */
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
  } else
    luaL_tolstring(L, 1, NULL);
  log_str(level, lua_tostring(L, -1));
  return 0;
}

static int l_trace (lua_State *L) { return log_at(L, LOG_TRACE); }
static int l_debug (lua_State *L) { return log_at(L, LOG_DEBUG); }
static int l_info (lua_State *L) { return log_at(L, LOG_INFO); }
static int l_warn (lua_State *L) { return log_at(L, LOG_WARN); }
static int l_error (lua_State *L) { return log_at(L, LOG_ERROR); }

/* log.set_level("debug") -> previous level name; raises on an unknown name */
static int l_set_level (lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  int lvl = log_level_from_name(name);
  if (lvl < 0)
    return luaL_error(L, "unknown log level '%s' (trace, debug, info, warn, error, off)", name);
  lua_pushstring(L, log_level_name(log_get_level()));
  log_set_level((LogLevel)lvl);
  return 1;
}

static int l_level (lua_State *L) {
  lua_pushstring(L, log_level_name(log_get_level()));
  return 1;
}

/* log.open(path) -> true | nil, err: also append to this file */
static int l_open (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  if (log_open_file(path) != 0) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot open log file %s: %s", path, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_close (lua_State *L) {
  (void)L;
  log_close_file();
  return 0;
}

static int l_set_context (lua_State *L) {
  log_set_context(luaL_optstring(L, 1, NULL));
  return 0;
}

static int l_set_topics (lua_State *L) {
  log_set_topics(luaL_optstring(L, 1, ""));
  return 0;
}

static int l_topic (lua_State *L) {
  lua_pushboolean(L, log_topic(luaL_checkstring(L, 1)));
  return 1;
}

/* log.status(line) draws a TTY status line (nil clears it) */
static int l_status (lua_State *L) {
  log_status(luaL_optstring(L, 1, NULL));
  return 0;
}

static int l_is_tty (lua_State *L) {
  lua_pushboolean(L, log_stderr_is_tty());
  return 1;
}

static int l_set_stderr (lua_State *L) {
  log_set_stderr(lua_toboolean(L, 1));
  return 0;
}

/* log.counts() -> { trace =, debug =, info =, warn =, error = } messages logged */
static int l_counts (lua_State *L) {
  static const char *const keys[] = {"trace", "debug", "info", "warn", "error"};
  int i;
  lua_createtable(L, 0, 5);
  for (i = LOG_TRACE; i < LOG_OFF; i++) {
    lua_pushinteger(L, (lua_Integer)log_count((LogLevel)i));
    lua_setfield(L, -2, keys[i]);
  }
  return 1;
}

static const luaL_Reg funcs[] = {
  {"counts", l_counts},
  {"trace", l_trace}, {"debug", l_debug}, {"info", l_info},
  {"warn", l_warn}, {"error", l_error},
  {"set_level", l_set_level}, {"level", l_level},
  {"open", l_open}, {"close", l_close},
  {"set_context", l_set_context},
  {"set_topics", l_set_topics}, {"topic", l_topic},
  {"status", l_status}, {"is_tty", l_is_tty}, {"set_stderr", l_set_stderr},
  {NULL, NULL}
};

/* require "log": every function gets string.format as upvalue 1. */
int luaopen_log (lua_State *L) {
  luaL_newlibtable(L, funcs);
  lua_getglobal(L, "string");
  lua_getfield(L, -1, "format");
  lua_remove(L, -2);
  luaL_setfuncs(L, funcs, 1);
  return 1;
}
