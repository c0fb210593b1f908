/*
** pg_lua_internal.h
** What the two files of the "pg" binding share: pg_lua.c (connections,
** commands, transactions, COPY, errors) calls pg_lua_values.c for the
** conversion of values between Lua and PostgreSQL's text format.  Not
** included outside src/pg/.
*/
#ifndef PGTIDE_PG_LUA_INTERNAL_H
#define PGTIDE_PG_LUA_INTERNAL_H

#include <lua.h>
#include <libpq-fe.h>

#include "util/buf.h"

/* pg.null, the NULL sentinel for parameters: a light userdata no other
   code can produce. */
extern const char pgl_null_sentinel;
#define PG_NULL ((void *)&pgl_null_sentinel)

/* libpq parameter arrays for one command (owned by a userdata on the
   Lua stack, see pgl_convert_params). */
typedef struct PglParams {
  int n;
  const char **values;
  int *lengths;
  int *formats;
} PglParams;

/* Register the internal metatables of this file (the buffer box). */
void pgl_open_values(lua_State *L);

/* Push a GC box holding an empty Buf and return the Buf. */
Buf *pgl_newbufbox(lua_State *L);

/* Non-zero when the encoding of one of the n parameters at base.. depends
   on the parameter's type (strings, lists): the statement must then be
   described first.  Never raises. */
int pgl_needs_types(lua_State *L, int base, int n);

/* Convert the n Lua values at base.. into parameter arrays; 'types' (may
   be NULL) are the types the server inferred.  Pushes 1 + n values that
   own the memory.  Raises on values that cannot be sent. */
void pgl_convert_params(lua_State *L, int base, int n, const Oid *types, PglParams *p);

/* Push rows (a list of tables keyed by column name) and the column list
   of a result.  Raises only on a malformed bytea from the server. */
void pgl_pushrows(lua_State *L, const PGresult *res);

/* The affected-row count of a command ("UPDATE 3" -> 3; none -> 0). */
lua_Integer pgl_affected(const PGresult *res);

#endif
