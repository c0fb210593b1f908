/*
** luax.c
** Helpers shared by the Lua bindings: metatables, closed userdata,
** options-table getters, error objects (see luax.h).
*/
#include "host/luax.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/redact.h"

/* {======================================================================
** Metatables and userdata
** ======================================================================= */

/* See luax.h: the metatable 'name' from Lua's three registration tables. */
void luax_createmeta (lua_State *L, const char *name, const luaL_Reg *metameth,
                      const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  if (metameth != NULL)
    luaL_setfuncs(L, metameth, 0);
  if (methods != NULL) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

/* See luax.h: a zero-filled ("closed") userdata with its metatable. */
void *luax_newudata (lua_State *L, size_t size, int nuv, const char *name) {
  void *p = lua_newuserdatauv(L, size, nuv);
  memset(p, 0, size);
  luaL_setmetatable(L, name);
  return p;
}

/* See luax.h: compares the value's metatable with the registered one. */
int luax_isa (lua_State *L, int idx, const char *name) {
  int yes = 0;
  if (lua_getmetatable(L, idx)) {
    luaL_getmetatable(L, name);
    yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  return yes;
}

/* }====================================================================== */

/* {======================================================================
** Options tables: each getter reads t[k] through getopt() and checks its
** type; the contracts (defaults, messages) are in luax.h.
** ======================================================================= */

/*
** Push t[k]; returns 0 (and pops it again) when the field is nil, so
** every getter starts with "absent: use the default".
*/
static int getopt (lua_State *L, int t, const char *k) {
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

const char *luax_opt_string (lua_State *L, int t, const char *k, const char *def) {
  const char *s;
  if (!getopt(L, t, k))
    return def;
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "option '%s' must be a string", k);
  s = lua_tostring(L, -1);
  lua_pop(L, 1);   /* still anchored by the options table */
  return s;
}

const char *luax_opt_lstring (lua_State *L, int t, const char *k, size_t *len) {
  const char *s;
  *len = 0;
  if (!getopt(L, t, k))
    return NULL;
  if (lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "option '%s' must be a string", k);
  s = lua_tolstring(L, -1, len);
  lua_pop(L, 1);
  return s;
}

const char *luax_req_string (lua_State *L, int t, const char *k) {
  const char *s = luax_opt_string(L, t, k, NULL);
  if (s == NULL || s[0] == '\0')
    luaL_error(L, "option '%s' is required", k);
  return s;
}

lua_Integer luax_opt_int (lua_State *L, int t, const char *k, lua_Integer def) {
  lua_Integer v;
  int ok;
  if (!getopt(L, t, k))
    return def;
  v = lua_tointegerx(L, -1, &ok);
  if (!ok)
    luaL_error(L, "option '%s' must be an integer", k);
  lua_pop(L, 1);
  return v;
}

lua_Integer luax_opt_int_min (lua_State *L, int t, const char *k, lua_Integer def,
                              lua_Integer min) {
  lua_Integer v;
  int ok;
  if (!getopt(L, t, k))
    return def;
  v = lua_tointegerx(L, -1, &ok);
  if (!ok || v < min)
    luaL_error(L, "option '%s' must be an integer >= %I", k, (LUAI_UACINT)min);
  lua_pop(L, 1);
  return v;
}

lua_Number luax_opt_number (lua_State *L, int t, const char *k, lua_Number def) {
  lua_Number v;
  int ok;
  if (!getopt(L, t, k))
    return def;
  v = lua_tonumberx(L, -1, &ok);
  if (!ok)
    luaL_error(L, "option '%s' must be a number", k);
  lua_pop(L, 1);
  return v;
}

lua_Number luax_opt_number_min (lua_State *L, int t, const char *k, lua_Number def,
                                lua_Number min) {
  lua_Number v;
  int ok;
  if (!getopt(L, t, k))
    return def;
  v = lua_tonumberx(L, -1, &ok);
  if (!ok || v < min)
    luaL_error(L, "option '%s' must be a number >= %f", k, (LUAI_UACNUMBER)min);
  lua_pop(L, 1);
  return v;
}

int luax_opt_bool (lua_State *L, int t, const char *k, int def) {
  int v;
  if (!getopt(L, t, k))
    return def;
  if (!lua_isboolean(L, -1))
    luaL_error(L, "option '%s' must be a boolean", k);
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

int luax_opt_function (lua_State *L, int t, const char *k) {
  if (!getopt(L, t, k))
    return 0;
  if (!lua_isfunction(L, -1))
    luaL_error(L, "option '%s' must be a function", k);
  return lua_gettop(L);
}

/* }====================================================================== */

/* {======================================================================
** Fields and error objects
** ======================================================================= */

void luax_setstr (lua_State *L, const char *k, const char *v) {
  if (v == NULL)
    return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

void luax_setint (lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

void luax_setnum (lua_State *L, const char *k, lua_Number v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

void luax_setbool (lua_State *L, const char *k, int v) {
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}

/* The body of luax_push_error: the table, its string fields, its metatable. */
static void push_error_v (lua_State *L, const char *mt, va_list ap) {
  const char *k;
  lua_newtable(L);
  while ((k = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *);
    if (v != NULL && v[0] != '\0')
      luax_setstr(L, k, v);
  }
  luaL_setmetatable(L, mt);
}

void luax_push_error (lua_State *L, const char *mt, ...) {
  va_list ap;
  va_start(ap, mt);
  push_error_v(L, mt, ap);
  va_end(ap);
}

int luax_raise_error (lua_State *L, const char *mt, ...) {
  va_list ap;
  va_start(ap, mt);
  push_error_v(L, mt, ap);
  va_end(ap);
  return lua_error(L);
}

#define STYLE_KEY "__luax_style"

/* See luax.h: __tostring plus the style as a light userdata. */
void luax_error_meta (lua_State *L, const char *mt, const LuaxErrorStyle *style) {
  static const luaL_Reg meta[] = {{"__tostring", luax_error_tostring}, {NULL, NULL}};
  luax_createmeta(L, mt, meta, NULL);
  luaL_getmetatable(L, mt);
  lua_pushlightuserdata(L, (void *)style);
  lua_setfield(L, -2, STYLE_KEY);
  lua_pop(L, 1);
}

/* See luax.h: the value is copied into b at once (a number's text lives
   only while it is on the stack). */
int luax_error_addfield (lua_State *L, int obj, Buf *b, const char *before, const char *k) {
  int t = lua_getfield(L, obj, k);
  if (t != LUA_TSTRING && t != LUA_TNUMBER) {
    lua_pop(L, 1);
    return 0;
  }
  if (before != NULL)
    buf_puts(b, before);
  buf_puts(b, lua_tostring(L, -1));
  lua_pop(L, 1);
  return 1;
}

/*
** See luax.h: prefix, head, message (or the fallback; redacted when
** the style says so), the listed fields, tail.  An object whose
** metatable has no style prints its message alone.
*/
int luax_error_tostring (lua_State *L) {
  static const LuaxErrorStyle plain = {NULL, NULL, "error", 0, NULL, NULL};
  const LuaxErrorStyle *st = &plain;
  Buf b = BUF_INIT;
  const char *const *f;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  if (luaL_getmetafield(L, 1, STYLE_KEY) == LUA_TLIGHTUSERDATA)
    st = lua_touserdata(L, -1);
  lua_settop(L, 1);
  if (st->prefix != NULL)
    buf_puts(&b, st->prefix);
  if (st->head != NULL)
    st->head(L, 1, &b);
  lua_getfield(L, 1, "message");
  {
    const char *msg = lua_isstring(L, -1) ? lua_tostring(L, -1) : st->fallback;
    if (msg == NULL)
      msg = "";
    if (st->redact) {
      char *clean = redact_str(msg);
      buf_puts(&b, clean);
      free(clean);
    } else {
      buf_puts(&b, msg);
    }
  }
  lua_pop(L, 1);
  for (f = st->fields; f != NULL && f[0] != NULL; f += 2) {
    char before[64];
    snprintf(before, sizeof(before), "; %s", f[1]);
    luax_error_addfield(L, 1, &b, before, f[0]);
  }
  if (st->tail != NULL)
    st->tail(L, 1, &b);
  return luax_pushbuf(L, &b);
}

/* }====================================================================== */

/* See luax.h: push b's bytes, free b. */
int luax_pushbuf (lua_State *L, Buf *b) {
  lua_pushlstring(L, buf_cstr(b), b->len);
  buf_free(b);
  return 1;
}
