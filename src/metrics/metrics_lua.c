/*
** metrics_lua.c
** Lua module "metrics": the /metrics endpoint of src/metrics/metrics_server.c.
**
**   local metrics = require "metrics"
**   local srv = metrics.serve("127.0.0.1:9187")   -- raises a message on failure
**   srv:address()   --> "127.0.0.1:9187" (the bound port when 0 was asked)
**   srv:set(text)   -- the document served from now on
**   srv:scrapes()   --> number of GET /metrics answered
**   srv:close()     -- also done by the garbage collector
*/
#include <lauxlib.h>

#include "host/luax.h"
#include "host/modules.h"
#include "metrics/metrics_server.h"

#define SERVER_MT "metrics.server"

typedef struct {
  MetricsServer *s;
} ServerBox;

static ServerBox *check_open (lua_State *L) {
  ServerBox *b = luaL_checkudata(L, 1, SERVER_MT);
  if (b->s == NULL)
    luaL_error(L, "the metrics server is closed");
  return b;
}

/* metrics.serve(addr) -> server; raises "cannot listen on ...: reason". */
static int l_serve (lua_State *L) {
  const char *addr = luaL_checkstring(L, 1);
  char err[512];
  ServerBox *b = luax_newudata(L, sizeof(ServerBox), 0, SERVER_MT);
  b->s = metrics_server_start(addr, err, sizeof(err));
  if (b->s == NULL)
    return luaL_error(L, "%s", err);
  return 1;
}

static int l_address (lua_State *L) {
  lua_pushstring(L, metrics_server_address(check_open(L)->s));
  return 1;
}

static int l_set (lua_State *L) {
  ServerBox *b = check_open(L);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  metrics_server_set(b->s, text, len);
  return 0;
}

static int l_scrapes (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)metrics_server_scrapes(check_open(L)->s));
  return 1;
}

static int l_close (lua_State *L) {
  ServerBox *b = luaL_checkudata(L, 1, SERVER_MT);
  metrics_server_stop(b->s);
  b->s = NULL;
  return 0;
}

static const luaL_Reg methods[] = {
  {"address", l_address}, {"set", l_set}, {"scrapes", l_scrapes}, {"close", l_close},
  {NULL, NULL}
};

static const luaL_Reg metameth[] = {
  {"__index", NULL}, {"__gc", l_close}, {"__close", l_close}, {NULL, NULL}
};

int luaopen_metrics (lua_State *L) {
  static const luaL_Reg funcs[] = {{"serve", l_serve}, {NULL, NULL}};
  luax_createmeta(L, SERVER_MT, metameth, methods);
  luaL_newlib(L, funcs);
  return 1;
}
