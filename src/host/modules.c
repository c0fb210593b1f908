/*
** modules.c
** The table of native modules preloaded into every Lua state.  Add one
** line per module; the Lua-facing name is what scripts require.
*/
#include "host/modules.h"

const NativeModule native_modules[] = {
  {"json", luaopen_json},
  {"sys", luaopen_sys},
  {"log", luaopen_log},
  {"aws", luaopen_aws},
  {"repl", luaopen_repl},
  {"pg", luaopen_pg},
  {"core.load", luaopen_core_load},
  {"core.validate", luaopen_core_validate},
  {"core.cdc", luaopen_core_cdc},
  {"metrics", luaopen_metrics},
  {NULL, NULL}
};
