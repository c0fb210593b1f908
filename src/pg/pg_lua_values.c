/*
** pg_lua_values.c
** The "pg" binding's value conversion (the type mapping described at the
** top of pg_lua.c): Lua values to parameters in text format (bytea as
** raw bytes, lists as array literals), and result values to Lua (nil,
** booleans, exact integers, floats, raw bytea, text).  Everything
** allocated lives in GC boxes on the Lua stack, so a conversion that
** raises leaks nothing.
*/
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "host/luax.h"
#include "pg/pg_lua_internal.h"
#include "pg/pgvalue.h"

#define PG_BUF "pg.buffer"        /* internal: owns a Buf */

const char pgl_null_sentinel = 0;

/* __gc of a buffer box. */
static int buffer_gc (lua_State *L) {
  buf_free((Buf *)luaL_checkudata(L, 1, PG_BUF));
  return 0;
}

/* Push a box holding an empty Buf (a zeroed Buf is BUF_INIT). */
Buf *pgl_newbufbox (lua_State *L) {
  return (Buf *)luax_newudata(L, sizeof(Buf), 0, PG_BUF);
}

/* Register the buffer box metatable (from luaopen_pg). */
void pgl_open_values (lua_State *L) {
  static const luaL_Reg buffer_meta[] = {{"__gc", buffer_gc}, {NULL, NULL}};
  luax_createmeta(L, PG_BUF, buffer_meta, NULL);
}

/* {======================================================================
** Parameters: Lua values -> text (or binary bytea)
** ======================================================================= */

static void addarray (lua_State *L, Buf *b, int idx, int bytea_elems, int depth);

/* The text form of the number at 'idx': integers exactly, floats in
   their shortest exact form (NaN and infinities spelled as PostgreSQL
   reads them). */
static void format_number (lua_State *L, int idx, char *out, size_t size) {
  if (lua_isinteger(L, idx))
    snprintf(out, size, LUA_INTEGER_FMT, lua_tointeger(L, idx));
  else
    pgvalue_format_float(out, size, lua_tonumber(L, idx));
}

/* Append the array-literal form of the value at 'idx' (an element). */
static void addelement (lua_State *L, Buf *b, int idx, int bytea_elems, int depth) {
  char num[64];
  size_t len;
  const char *s;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      buf_puts(b, "NULL");
      break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) != PG_NULL)
        luaL_error(L, "array element: unsupported value (use pg.null for NULL)");
      buf_puts(b, "NULL");
      break;
    case LUA_TBOOLEAN:
      buf_puts(b, lua_toboolean(L, idx) ? "t" : "f");
      break;
    case LUA_TNUMBER:
      format_number(L, idx, num, sizeof(num));
      pgvalue_array_quote(b, num, strlen(num));
      break;
    case LUA_TSTRING:
      s = lua_tolstring(L, idx, &len);
      if (bytea_elems) {
        Buf hex = BUF_INIT;
        pgvalue_bytea_encode(&hex, (const unsigned char *)s, len);
        pgvalue_array_quote(b, hex.data, hex.len);
        buf_free(&hex);
      } else
        pgvalue_array_quote(b, s, len);
      break;
    case LUA_TTABLE:
      addarray(L, b, idx, bytea_elems, depth + 1);
      break;
    default:
      luaL_error(L, "array element: %s values cannot be sent", luaL_typename(L, idx));
  }
}

/* Append "{e1,e2,...}" for the list at 'idx' (recursively for nesting). */
static void addarray (lua_State *L, Buf *b, int idx, int bytea_elems, int depth) {
  lua_Integer i, n;
  if (depth > 6)  /* PostgreSQL's MAXDIM */
    luaL_error(L, "array parameter nested too deeply");
  idx = lua_absindex(L, idx);
  luaL_checkstack(L, 2, "array parameter");
  n = (lua_Integer)lua_rawlen(L, idx);
  buf_putc(b, '{');
  for (i = 1; i <= n; i++) {
    if (i > 1)
      buf_putc(b, ',');
    lua_rawgeti(L, idx, i);
    addelement(L, b, -1, bytea_elems, depth);
    lua_pop(L, 1);
  }
  buf_putc(b, '}');
}

/* Non-zero when some parameter's encoding depends on the parameter's
   type (strings: bytea is sent raw; lists: bytea[] elements in hex). */
int pgl_needs_types (lua_State *L, int base, int n) {
  int i;
  for (i = 0; i < n; i++) {
    int t = lua_type(L, base + i);
    if (t == LUA_TSTRING || t == LUA_TTABLE)
      return 1;
  }
  return 0;
}

/*
** Convert the n Lua values at base.. into libpq parameter arrays.  The
** arrays live in a userdata and converted strings are pushed as Lua
** strings, so everything is owned by the stack (nothing leaks if a
** conversion raises).  'types' (may be NULL) are the parameter types
** the server inferred.  Pushes 1 + n values.
*/
void pgl_convert_params (lua_State *L, int base, int n, const Oid *types, PglParams *p) {
  int i;
  char num[64];
  size_t sz = (size_t)(n > 0 ? n : 1);
  char *mem = (char *)lua_newuserdatauv(L, sz * (sizeof(char *) + 2 * sizeof(int)), 0);
  p->n = n;
  p->values = (const char **)(void *)mem;
  p->lengths = (int *)(void *)(mem + sz * sizeof(char *));
  p->formats = p->lengths + sz;
  luaL_checkstack(L, n + 4, "too many parameters");
  for (i = 0; i < n; i++) {
    int idx = base + i;
    Oid type = types != NULL ? types[i] : 0;
    size_t len = 0;
    p->formats[i] = 0;
    p->lengths[i] = 0;
    switch (lua_type(L, idx)) {
      case LUA_TNIL:
        p->values[i] = NULL;
        lua_pushnil(L);
        break;
      case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) != PG_NULL)
          luaL_argerror(L, idx, "nil, boolean, number, string, list or pg.null expected");
        p->values[i] = NULL;
        lua_pushnil(L);
        break;
      case LUA_TBOOLEAN:
        p->values[i] = lua_pushstring(L, lua_toboolean(L, idx) ? "true" : "false");
        break;
      case LUA_TNUMBER:
        format_number(L, idx, num, sizeof(num));
        p->values[i] = lua_pushstring(L, num);
        break;
      case LUA_TSTRING:
        p->values[i] = lua_tolstring(L, idx, &len);
        lua_pushvalue(L, idx);
        if (type == PGV_BYTEAOID) {  /* raw bytes: binary format */
          if (len > 0x7fffffff)
            luaL_argerror(L, idx, "bytea parameter too large");
          p->formats[i] = 1;
          p->lengths[i] = (int)len;
        } else if (strlen(p->values[i]) != len) {
          luaL_argerror(L, idx, "string with a NUL byte sent to a non-bytea parameter");
        }
        break;
      case LUA_TTABLE: {
        Buf *b = pgl_newbufbox(L);
        addarray(L, b, idx, type == PGV_BYTEAARRAYOID, 1);
        p->values[i] = lua_pushlstring(L, buf_cstr(b), b->len);
        lua_remove(L, -2);  /* the box; the Lua string owns the text */
        break;
      }
      default:
        luaL_argerror(L, idx, "nil, boolean, number, string, list or pg.null expected");
    }
  }
}

/* }====================================================================== */

/* {======================================================================
** Results -> Lua
** ======================================================================= */

/* Push value (row, col) of 'res' converted per the type mapping. */
static void pushvalue (lua_State *L, const PGresult *res, int row, int col, Buf *scratch) {
  const char *v = PQgetvalue(res, row, col);
  int len = PQgetlength(res, row, col);
  long long iv;
  double dv;
  switch (pgvalue_kind(PQftype(res, col))) {
    case PGV_KIND_BOOL:
      lua_pushboolean(L, v[0] == 't');
      break;
    case PGV_KIND_INTEGER:
      if (pgvalue_parse_int(v, &iv) == 0)
        lua_pushinteger(L, (lua_Integer)iv);
      else  /* oid above 2^63 cannot happen; keep the text to be safe */
        lua_pushlstring(L, v, (size_t)len);
      break;
    case PGV_KIND_FLOAT:
      if (pgvalue_parse_float(v, &dv) == 0)
        lua_pushnumber(L, dv);
      else
        lua_pushlstring(L, v, (size_t)len);
      break;
    case PGV_KIND_BYTEA:
      buf_reset(scratch);
      if (pgvalue_bytea_decode(v, (size_t)len, scratch) != 0)
        luaL_error(L, "malformed bytea value from the server");
      lua_pushlstring(L, scratch->data != NULL ? scratch->data : "", scratch->len);
      break;
    default:
      lua_pushlstring(L, v, (size_t)len);
  }
}

/* Push the column list: { {name=, type=, type_oid=, type_mod=,
   table_oid=, table_column=}, ... }. */
static void pushcolumns (lua_State *L, const PGresult *res) {
  int i, nf = PQnfields(res);
  lua_createtable(L, nf, 0);
  for (i = 0; i < nf; i++) {
    Oid t = PQftype(res, i);
    lua_createtable(L, 0, 6);
    luax_setstr(L, "name", PQfname(res, i));
    luax_setstr(L, "type", pgvalue_type_name(t));   /* NULL (not built in): unset */
    luax_setint(L, "type_oid", (lua_Integer)t);
    luax_setint(L, "type_mod", PQfmod(res, i));
    if (PQftable(res, i) != InvalidOid) {
      luax_setint(L, "table_oid", (lua_Integer)PQftable(res, i));
      luax_setint(L, "table_column", PQftablecol(res, i));
    }
    lua_rawseti(L, -2, i + 1);
  }
}

/*
** Push the rows of 'res' (a list of tables keyed by column name; when
** two columns share a name the first one wins) and the column list.
*/
void pgl_pushrows (lua_State *L, const PGresult *res) {
  int r, f, nr = PQntuples(res), nf = PQnfields(res);
  char *dup;
  Buf *scratch = pgl_newbufbox(L);
  int boxidx = lua_gettop(L);
  dup = (char *)lua_newuserdatauv(L, (size_t)(nf > 0 ? nf : 1), 0);
  for (f = 0; f < nf; f++) {
    int g;
    dup[f] = 0;
    for (g = 0; g < f; g++)
      if (strcmp(PQfname(res, f), PQfname(res, g)) == 0)
        dup[f] = 1;
  }
  lua_createtable(L, nr, 0);
  for (r = 0; r < nr; r++) {
    lua_createtable(L, 0, nf);
    for (f = 0; f < nf; f++) {
      if (dup[f] || PQgetisnull(res, r, f))
        continue;
      pushvalue(L, res, r, f, scratch);
      lua_setfield(L, -2, PQfname(res, f));
    }
    lua_rawseti(L, -2, r + 1);
  }
  pushcolumns(L, res);
  lua_remove(L, boxidx + 1);  /* dup flags */
  lua_remove(L, boxidx);      /* scratch buffer */
}

/* Affected-row count of a command ("UPDATE 3" -> 3; none -> 0). */
lua_Integer pgl_affected (const PGresult *res) {
  const char *n = PQcmdTuples((PGresult *)res);
  long long v;
  return (n != NULL && pgvalue_parse_int(n, &v) == 0) ? (lua_Integer)v : 0;
}

/* }====================================================================== */
