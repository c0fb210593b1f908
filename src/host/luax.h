/*
** luax.h
** Small lauxlib-style helpers for the Lua bindings (the *_lua.c files).
**
** Every binding repeats the same few patterns: a metatable built from
** Lua's three registration tables, userdata created "closed" before the
** resource it will own exists, optional fields read from an options
** table, and error objects (tables with fields, a metatable and a
** __tostring) raised with lua_error.  These helpers do exactly that and
** nothing more, so a binding reads as its argument checks and its calls
** into Lua-free C.
**
** Adopting them in a binding (for example src/cdc/cdc_lua.c or
** src/load/load_lua.c, which still carry private copies):
**   - replace a local createmeta() with luax_createmeta();
**   - replace opt_string/opt_int/opt_bool/opt_number/opt_function/
**     req_string with the luax_ versions below (same names, same
**     meaning; the error messages all name the field: "option 'jobs'
**     must be an integer");
**   - build error objects with luax_push_error() plus luax_set*() for
**     non-string fields, then lua_error(L); luax_raise_error() does both
**     when every field is a string;
**   - register the error metatable with luax_error_meta() and a static
**     LuaxErrorStyle instead of a private error_tostring.
**
** Stack discipline: every function here leaves the stack as it found it
** except where it says it pushes.  Functions marked "raises" call
** luaL_error (a string error: misuse by the calling script).
*/
#ifndef PGTIDE_LUAX_H
#define PGTIDE_LUAX_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>

struct Buf;

/* {======================================================================
** Metatables and userdata
** ======================================================================= */

/*
** Create (or reuse) the metatable registered as 'name' and fill it from
** 'metameth'; when 'methods' is not NULL, a new table holding them
** becomes __index (a "__index" entry of 'metameth' set to NULL is the
** usual placeholder for it).  Lua 5.4 stores 'name' as __name, so
** luaL_checkudata errors read "pg.conn expected, got nil".  Pushes
** nothing.
*/
void luax_createmeta(lua_State *L, const char *name, const luaL_Reg *metameth,
                     const luaL_Reg *methods);

/*
** Push a new zero-filled userdata of 'size' bytes with 'nuv' user
** values and the metatable 'name', and return it.  Zero means "closed"
** for every box in pgtide (NULL pointer, empty Buf), so its __gc is safe
** to run before the resource is acquired: create the box first, then
** store the resource in it (liolib's newprefile pattern).
*/
void *luax_newudata(lua_State *L, size_t size, int nuv, const char *name);

/* Non-zero when the value at 'idx' has the metatable registered as
   'name' (tables and userdata alike).  Never raises. */
int luax_isa(lua_State *L, int idx, const char *name);

/* }====================================================================== */

/* {======================================================================
** Options tables: t[k] read with a default
**
** 't' is the stack index of the options table.  A nil (or absent) field
** gives 'def'; a field of the wrong type raises "option 'k' must be ...".
** Strings returned stay valid while the options table is alive and
** unchanged (they are anchored by it).
** ======================================================================= */

const char *luax_opt_string(lua_State *L, int t, const char *k, const char *def);

/* Like luax_opt_string, also returning the length (binary-safe); *len
   is 0 when the field is absent.  Raises. */
const char *luax_opt_lstring(lua_State *L, int t, const char *k, size_t *len);

/* A string that must be present and non-empty: raises "option 'k' is
   required" otherwise. */
const char *luax_req_string(lua_State *L, int t, const char *k);

/* An integer (a float with an integral value, or a numeric string,
   converts).  Raises. */
lua_Integer luax_opt_int(lua_State *L, int t, const char *k, lua_Integer def);

/* An integer >= min: raises "option 'k' must be an integer >= min". */
lua_Integer luax_opt_int_min(lua_State *L, int t, const char *k, lua_Integer def,
                             lua_Integer min);

/* A number (numeric strings convert).  Raises. */
lua_Number luax_opt_number(lua_State *L, int t, const char *k, lua_Number def);

/* A number >= min: raises "option 'k' must be a number >= min". */
lua_Number luax_opt_number_min(lua_State *L, int t, const char *k, lua_Number def,
                               lua_Number min);

/* A boolean (strictly true or false).  Raises. */
int luax_opt_bool(lua_State *L, int t, const char *k, int def);

/* A function: pushes it and returns its (absolute) stack index, or
   returns 0 and pushes nothing when the field is nil.  Raises. */
int luax_opt_function(lua_State *L, int t, const char *k);

/* }====================================================================== */

/* {======================================================================
** Setting fields of the table at the top of the stack
** ======================================================================= */

/* t[k] = v; a NULL string leaves the field unset (an empty one is set). */
void luax_setstr(lua_State *L, const char *k, const char *v);
void luax_setint(lua_State *L, const char *k, lua_Integer v);
void luax_setnum(lua_State *L, const char *k, lua_Number v);
void luax_setbool(lua_State *L, const char *k, int v);

/* }====================================================================== */

/* {======================================================================
** Error objects
** ======================================================================= */

/*
** Push a new error object: a table with the metatable registered as
** 'mt' (which should have a __tostring) and the string fields given as
** name, value pairs ending with NULL:
**
**   luax_push_error(L, "core.validate.error", "op", "run", "message", msg, NULL);
**   luax_setbool(L, "interrupted", interrupt_requested());
**   return lua_error(L);
**
** A NULL or empty value leaves its field out.  Values are stored as
** given: redact messages that may carry secrets before passing them.
*/
void luax_push_error(lua_State *L, const char *mt, ...) __attribute__((sentinel));

/* luax_push_error() then lua_error(): raises the object, never returns
   (declared int so bindings can 'return luax_raise_error(...)'). */
int luax_raise_error(lua_State *L, const char *mt, ...) __attribute__((sentinel));

/*
** How an error object prints.  Every module's error objects share one
** __tostring (luax_error_tostring), which writes
**
**   <prefix><head(e)><message><"; label value" per field><tail(e)>
**
** 'message' is the object's message field, or 'fallback' when it has
** none; 'redact' masks secrets in it again (for messages Lua code may
** have built).  Each part is optional (NULL).  head and tail append to
** a Buf what the module's other fields say; they must not raise.
*/
typedef struct LuaxErrorStyle {
  const char *prefix;                                   /* "validate failed: " */
  void (*head)(lua_State *L, int obj, struct Buf *b);  /* "pg.query failed [42P01]: " */
  const char *fallback;                                 /* "core.load error" */
  int redact;
  const char *const *fields;  /* {name, label, name, label, ..., NULL}: "; label value" */
  void (*tail)(lua_State *L, int obj, struct Buf *b);  /* " (HTTP 400, 3 attempts)" */
} LuaxErrorStyle;

/* Create (or reuse) the metatable 'mt' for error objects printed as
   'style' says (kept by pointer: give a static).  Pushes nothing. */
void luax_error_meta(lua_State *L, const char *mt, const LuaxErrorStyle *style);

/* The __tostring of every error object (see LuaxErrorStyle).  Raises
   when its argument is not a table. */
int luax_error_tostring(lua_State *L);

/* Append field 'k' of the table at 'obj' (a string or a number) to b
   after 'before' (may be NULL).  Returns 1 when it was there, else 0
   and appends nothing.  For head and tail functions. */
int luax_error_addfield(lua_State *L, int obj, struct Buf *b, const char *before, const char *k);

/* }====================================================================== */

/* {======================================================================
** Buffers
** ======================================================================= */

/* Push the contents of 'b' as a Lua string (binary-safe) and free 'b'.
   Returns 1 (the number of results, for 'return luax_pushbuf(L, &b)'). */
int luax_pushbuf(lua_State *L, struct Buf *b);

/* }====================================================================== */

#endif
