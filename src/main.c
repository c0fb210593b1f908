/*
** main.c
** pgtide's entry point.  Everything above argument plumbing is Lua:
** main creates the host state and calls pgtide.cli.main(args), whose
** integer result is the exit code (0 done, 1 a step failed, 2 usage or
** configuration error, 3 interrupted).  `--lua-path DIR` (or
** PGTIDE_LUA_PATH) makes DIR/lua and DIR/runbooks override the
** embedded copies, for development.
*/
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/host.h"
#include "util/log.h"

int main (int argc, char **argv) {
  const char *lua_path = getenv("PGTIDE_LUA_PATH");
  lua_State *L;
  int i, n = 0, status, code = 2;
  for (i = 1; i < argc; i++) {  /* --lua-path is taken before anything else */
    if (strcmp(argv[i], "--lua-path") == 0 && i + 1 < argc) {
      lua_path = argv[++i];
      argv[i - 1] = argv[i] = NULL;
    } else if (strncmp(argv[i], "--lua-path=", 11) == 0) {
      lua_path = argv[i] + 11;
      argv[i] = NULL;
    }
  }
  L = host_new(lua_path);
  if (L == NULL) {
    fputs("pgtide: cannot create Lua state: not enough memory\n", stderr);
    return 2;
  }
  lua_getglobal(L, "require");
  lua_pushliteral(L, "pgtide.cli");
  status = host_docall(L, 1, 1);
  if (status == LUA_OK) {
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc, 0);
    for (i = 1; i < argc; i++)
      if (argv[i] != NULL) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, ++n);
      }
    status = host_docall(L, 1, 1);
  }
  if (status == LUA_OK)
    code = (int)luaL_optinteger(L, -1, 0);
  else
    host_report(L, "pgtide: ");
  fflush(stdout);
  lua_close(L);
  log_close_file();
  return code;
}
