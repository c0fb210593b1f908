/*
** host.h
** The Lua host: state creation with the standard libraries, the native
** modules preloaded and a module searcher for the Lua files embedded in
** the binary (or found under --lua-path), protected calls with one
** traceback, and SIGINT turned into an "interrupted" error.
*/
#ifndef PGTIDE_HOST_H
#define PGTIDE_HOST_H

#include <lua.h>

/* Create the state.  'lua_path' (may be NULL) is a source tree whose
   lua/ and runbooks/ files override the embedded ones. */
lua_State *host_new(const char *lua_path);

/* lua_pcall with the host's message handler: a string error gets a
   traceback; an error object (table) is kept as is.  Installs the
   SIGINT hook for the duration of the call. */
int host_docall(lua_State *L, int narg, int nres);

/* Print the error at the top of the stack to stderr (redacted, via the
   object's __tostring when it has one) and pop it. */
void host_report(lua_State *L, const char *prefix);

/* Look up an embedded (or overridden) file by repository path such as
   "runbooks/templates/aurora-dms.yaml".  Returns 1 and pushes its
   contents, or 0 and pushes nothing. */
int host_push_resource(lua_State *L, const char *path);

#endif
