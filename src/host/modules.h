/*
** modules.h
** The native Lua modules compiled into pgtide.  They are registered in
** package.preload (not opened): nothing runs until a script requires it.
*/
#ifndef PGTIDE_MODULES_H
#define PGTIDE_MODULES_H

#include <lua.h>

typedef struct NativeModule {
  const char *name;
  lua_CFunction open;
} NativeModule;

extern const NativeModule native_modules[];

int luaopen_json(lua_State *L);      /* src/host/json_lua.c */
int luaopen_sys(lua_State *L);       /* src/host/sys_lua.c */
int luaopen_log(lua_State *L);       /* src/host/log_lua.c */
int luaopen_aws(lua_State *L);       /* src/aws/aws_lua.c */
int luaopen_pg(lua_State *L);        /* src/pg/pg_lua.c */
int luaopen_repl(lua_State *L);      /* src/host/repl.c */

int luaopen_core_load(lua_State *L); /* src/load/load_lua.c */
int luaopen_core_validate(lua_State *L);   /* src/validate/validate_lua.c */
int luaopen_core_cdc(lua_State *L);        /* src/cdc/cdc_lua.c */
int luaopen_metrics(lua_State *L);         /* src/metrics/metrics_lua.c */

#endif
