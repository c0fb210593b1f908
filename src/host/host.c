/*
** host.c
** Lua state setup, embedded-module searcher, protected calls and the
** interrupt hook (see host.h).  The message handler and the SIGINT hook
** follow lua.c's design: errors raised from a hook stop the running
** chunk at its next instruction, never inside a C function.
*/
#include "host/host.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/embedded.h"
#include "host/modules.h"
#include "util/buf.h"
#include "util/interrupt.h"
#include "util/redact.h"

#define LUAPATH_KEY "pgtide.lua_path"

static lua_State *running;   /* the state a signal should interrupt */

/* Read a whole file into a Buf; returns 0 on success. */
static int read_file (const char *path, Buf *out) {
  FILE *f = fopen(path, "rb");
  char tmp[8192];
  size_t n;
  if (f == NULL)
    return -1;
  while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
    buf_append(out, tmp, n);
  fclose(f);
  return 0;
}

/*
** Find 'path' under the --lua-path tree first, then among the embedded
** files.  On success pushes the contents and the chunk name to use in
** error messages ("@/dir/lua/pgtide/x.lua" or "@lua/pgtide/x.lua").
*/
static int find_source (lua_State *L, const char *path) {
  const EmbeddedFile *e;
  const char *root;
  lua_getfield(L, LUA_REGISTRYINDEX, LUAPATH_KEY);
  root = lua_tostring(L, -1);
  if (root != NULL) {
    Buf full = BUF_INIT, data = BUF_INIT;
    buf_printf(&full, "%s/%s", root, path);
    if (read_file(full.data, &data) == 0) {
      lua_pop(L, 1);
      lua_pushlstring(L, buf_cstr(&data), data.len);
      lua_pushfstring(L, "@%s", full.data);
      buf_free(&full);
      buf_free(&data);
      return 1;
    }
    buf_free(&full);
    buf_free(&data);
  }
  lua_pop(L, 1);
  for (e = embedded_files; e->path != NULL; e++)
    if (strcmp(e->path, path) == 0) {
      lua_pushlstring(L, e->data, e->size);
      lua_pushfstring(L, "@%s", path);
      return 1;
    }
  return 0;
}

int host_push_resource (lua_State *L, const char *path) {
  if (!find_source(L, path))
    return 0;
  lua_pop(L, 1);  /* keep the contents only */
  return 1;
}

/*
** package.searchers entry for embedded Lua: "pgtide.x.y" is
** lua/pgtide/x/y.lua, "runbooks.name" is runbooks/name.lua.
*/
static int searcher_embedded (lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  Buf path = BUF_INIT;
  const char *p;
  if (strncmp(name, "runbooks.", 9) == 0)
    buf_printf(&path, "runbooks/%s.lua", name + 9);
  else
    buf_printf(&path, "lua/%s.lua", name);
  /* dots after the prefix become directory separators */
  for (p = strchr(path.data, '/') + 1; *p; p++)
    if (*p == '.' && strcmp(p, ".lua") != 0)
      path.data[p - path.data] = '/';
  if (!find_source(L, path.data)) {
    lua_pushfstring(L, "no embedded file '%s'", path.data);
    buf_free(&path);
    return 1;
  }
  buf_free(&path);
  {
    size_t len;
    const char *src = lua_tolstring(L, -2, &len);
    const char *chunk = lua_tostring(L, -1);
    if (luaL_loadbufferx(L, src, len, chunk, "t") != LUA_OK)
      return lua_error(L);
  }
  lua_pushstring(L, lua_tostring(L, -2) + 1);  /* loader data: file name */
  return 2;
}

/* lua_State creation: libraries, preloaded native modules, searcher. */
lua_State *host_new (const char *lua_path) {
  lua_State *L = luaL_newstate();
  const NativeModule *m;
  if (L == NULL)
    return NULL;
  luaL_openlibs(L);
  if (lua_path != NULL) {
    lua_pushstring(L, lua_path);
    lua_setfield(L, LUA_REGISTRYINDEX, LUAPATH_KEY);
  }
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (m = native_modules; m->name != NULL; m++) {
    lua_pushcfunction(L, m->open);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 1);  /* remove PRELOAD table */
  /* insert our searcher right after the preload searcher */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  {
    lua_Integer i, n = (lua_Integer)luaL_len(L, -1);
    for (i = n; i >= 2; i--) {
      lua_rawgeti(L, -1, i);
      lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, searcher_embedded);
    lua_rawseti(L, -2, 2);
  }
  lua_pop(L, 2);
  return L;
}

static int interrupted_tostring (lua_State *L) {
  lua_getfield(L, 1, "message");
  return 1;
}

/* The error object raised when SIGINT/SIGTERM stops a Lua chunk. */
static void push_interrupted (lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "interrupted");
  lua_pushliteral(L, "interrupted");
  lua_setfield(L, -2, "message");
  if (luaL_newmetatable(L, "pgtide.interrupted")) {
    lua_pushcfunction(L, interrupted_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_setmetatable(L, -2);
}

static void lstop (lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  push_interrupted(L);
  lua_error(L);
}

/* Runs inside the signal handler: only lua_sethook, as lua.c does. */
static void on_signal (void) {
  if (running != NULL)
    lua_sethook(running, lstop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* Message handler: tracebacks for strings, error objects kept intact. */
static int msghandler (lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (lua_type(L, 1) == LUA_TTABLE || luaL_getmetafield(L, 1, "__tostring") != LUA_TNIL) {
      lua_settop(L, 1);
      return 1;  /* an error object: the runbook engine formats it */
    }
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* lua_pcall with the message handler and the SIGINT hook installed for
   the call (see host.h). */
int host_docall (lua_State *L, int narg, int nres) {
  int status;
  int base = lua_gettop(L) - narg;
  lua_State *prev = running;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  running = L;
  interrupt_install(on_signal);
  status = lua_pcall(L, narg, nres, base);
  running = prev;
  lua_remove(L, base);
  return status;
}

/* Print the error on the stack (redacted, through its __tostring) to
   stderr and pop it. */
void host_report (lua_State *L, const char *prefix) {
  const char *msg;
  char *masked;
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return;
  }
  msg = luaL_tolstring(L, -1, NULL);
  masked = redact_str(msg);
  fprintf(stderr, "%s%s\n", prefix ? prefix : "", masked);
  fflush(stderr);
  free(masked);
  lua_pop(L, 2);
}
