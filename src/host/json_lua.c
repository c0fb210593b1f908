/*
** json_lua.c
** Lua module "json" over cJSON: json.decode(text), json.encode(value [,
** {pretty=true}]), json.null (a sentinel for JSON null) and json.array(t)
** (marks a table as an array so an empty one encodes as [] not {}).
** Object keys are encoded in sorted order so state files and reports are
** deterministic.  Decoded arrays carry the array mark, so a value read
** and written back keeps its shape.  Errors are raised as strings naming
** the offset (decode) or the path of the bad value (encode).
*/
#include <cjson/cJSON.h>
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "host/luax.h"
#include "host/modules.h"

#define JSON_TREE "json.tree"
#define ARRAY_MT "json.array"
#define MAXDEPTH 200

/* The JSON null sentinel: a light userdata no other code can produce. */
static const char null_sentinel;
#define JSON_NULL ((void *)&null_sentinel)

/* __gc of a tree box: cJSON_Delete once. */
static int tree_gc (lua_State *L) {
  cJSON **box = (cJSON **)luaL_checkudata(L, 1, JSON_TREE);
  if (*box != NULL) {
    cJSON_Delete(*box);
    *box = NULL;
  }
  return 0;
}

/* A GC-owned holder for a cJSON tree, created before the tree exists so a
   Lua error while converting can never leak it. */
static cJSON **newtreebox (lua_State *L) {
  return (cJSON **)luax_newudata(L, sizeof(cJSON *), 0, JSON_TREE);
}

/* Give the table at the top the array mark. */
static void setarray (lua_State *L) {
  luaL_getmetatable(L, ARRAY_MT);
  lua_setmetatable(L, -2);
}

/*
** cJSON keeps numbers as doubles only, which loses integers above 2^53
** (int8 values, byte counts).  A cursor over the source text finds the
** number tokens again: cJSON's tree lists items in document order, so
** the k-th number item is the k-th number token outside strings.
*/
typedef struct NumCursor {
  const char *p, *end;
} NumCursor;

/* Advance to the next number token; its start and length in *len.  The
   text was accepted by cJSON, so tokens are well formed.  Never raises. */
static const char *next_number (NumCursor *nc, size_t *len) {
  const char *p = nc->p, *start;
  while (p < nc->end) {
    if (*p == '"') {  /* a string (a key or a value): skip it, escapes included */
      for (p++; p < nc->end && *p != '"'; p++)
        if (*p == '\\')
          p++;
      p++;
    } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
      start = p;
      while (p < nc->end && (strchr("+-.eE", *p) != NULL || (*p >= '0' && *p <= '9')))
        p++;
      nc->p = p;
      *len = (size_t)(p - start);
      return start;
    } else
      p++;
  }
  nc->p = p;
  *len = 0;
  return NULL;
}

/* Push a number item: a literal without fraction or exponent that fits
   in 64 bits -> an exact integer; otherwise an integral double below
   2^53 -> an integer; else a float. */
static void push_number (lua_State *L, const cJSON *item, NumCursor *nc) {
  size_t n;
  const char *tok = next_number(nc, &n);
  double d = item->valuedouble;
  if (tok != NULL && n < 32 && strcspn(tok, ".eE") >= n) {
    char buf[32];
    char *end;
    long long v;
    memcpy(buf, tok, n);
    buf[n] = '\0';
    errno = 0;
    v = strtoll(buf, &end, 10);
    if (errno == 0 && *end == '\0') {
      lua_pushinteger(L, (lua_Integer)v);
      return;
    }
  }
  if (d == floor(d) && fabs(d) < 9007199254740992.0)
    lua_pushinteger(L, (lua_Integer)d);
  else
    lua_pushnumber(L, d);
}

/*
** Push the Lua value of a cJSON item: null -> json.null, integer
** literals -> exact integers (see push_number), arrays marked as arrays.
** Raises when nested deeper than MAXDEPTH.
*/
static void push_item (lua_State *L, const cJSON *item, int depth, NumCursor *nc) {
  const cJSON *c;
  lua_Integer i = 0;
  if (depth > MAXDEPTH)
    luaL_error(L, "JSON nested too deeply");
  luaL_checkstack(L, 4, "JSON nested too deeply");
  if (cJSON_IsNull(item))
    lua_pushlightuserdata(L, JSON_NULL);
  else if (cJSON_IsBool(item))
    lua_pushboolean(L, cJSON_IsTrue(item));
  else if (cJSON_IsNumber(item))
    push_number(L, item, nc);
  else if (cJSON_IsString(item))
    lua_pushstring(L, item->valuestring);
  else if (cJSON_IsArray(item)) {
    lua_createtable(L, cJSON_GetArraySize(item), 0);
    cJSON_ArrayForEach(c, item) {
      push_item(L, c, depth + 1, nc);
      lua_rawseti(L, -2, ++i);
    }
    setarray(L);
  } else if (cJSON_IsObject(item)) {
    lua_createtable(L, 0, cJSON_GetArraySize(item));
    cJSON_ArrayForEach(c, item) {
      push_item(L, c, depth + 1, nc);
      lua_setfield(L, -2, c->string);
    }
  } else
    lua_pushnil(L);
}

/* json.decode(text) -> value; raises "bad JSON at offset N". */
static int json_decode (lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  const char *end = NULL;
  NumCursor nc;
  cJSON **box = newtreebox(L);
  *box = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  if (*box == NULL)
    return luaL_error(L, "bad JSON at offset %d", end != NULL ? (int)(end - text) : 0);
  nc.p = text;
  nc.end = end != NULL ? end : text + len;
  push_item(L, *box, 0, &nc);
  cJSON_Delete(*box);  /* free now rather than at the next GC cycle */
  *box = NULL;
  return 1;
}

/*
** Is the table at 'idx' (absolute) a JSON array?  Marked ones are
** (*n = its length, even 0); unmarked ones when their keys are exactly
** 1..n with n > 0.  Never raises.
*/
static int is_array (lua_State *L, int idx, lua_Integer *n) {
  lua_Integer count = 0, max = 0;
  if (luax_isa(L, idx, ARRAY_MT)) {
    *n = (lua_Integer)lua_rawlen(L, idx);
    return 1;
  }
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TNUMBER || !lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
      lua_pop(L, 1);
      return 0;
    }
    count++;
    if (lua_tointeger(L, -1) > max)
      max = lua_tointeger(L, -1);
  }
  *n = count;
  return count > 0 && max == count;
}

static int cmpstr (const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static cJSON *to_json (lua_State *L, int idx, int depth);

/*
** Convert the table at 'idx' (absolute) to a new cJSON array or object;
** object keys are sorted so output is deterministic.  The container
** lives in a GC box while it is filled, so a Lua error (bad key, bad
** value, too deep) cannot leak it; ownership moves to the caller on
** return.
*/
static cJSON *table_to_json (lua_State *L, int idx, int depth) {
  lua_Integer n, i;
  cJSON **box = newtreebox(L);
  cJSON *item;
  if (is_array(L, idx, &n)) {
    *box = cJSON_CreateArray();
    for (i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      cJSON_AddItemToArray(*box, to_json(L, -1, depth + 1));
      lua_pop(L, 1);
    }
  } else {
    size_t nk = 0, k, cap = 16;
    const char **keys = (const char **)lua_newuserdatauv(L, cap * sizeof(char *), 0);
    *box = cJSON_CreateObject();
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
      lua_pop(L, 1);
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "cannot encode a table with a %s key as JSON", luaL_typename(L, -1));
      if (nk == cap) {
        const char **bigger = (const char **)lua_newuserdatauv(L, cap * 2 * sizeof(char *), 0);
        memcpy(bigger, keys, cap * sizeof(char *));
        lua_replace(L, -3);  /* keep only the bigger array anchored */
        keys = bigger;
        cap *= 2;
      }
      keys[nk++] = lua_tostring(L, -1);  /* the key stays alive in the table */
    }
    qsort(keys, nk, sizeof(char *), cmpstr);
    for (k = 0; k < nk; k++) {
      lua_getfield(L, idx, keys[k]);
      cJSON_AddItemToObject(*box, keys[k], to_json(L, -1, depth + 1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);  /* keys */
  }
  item = *box;
  *box = NULL;  /* ownership moves to the caller */
  lua_pop(L, 1);
  return item;
}

/*
** Convert the Lua value at 'idx' to a new cJSON item (owned by the
** caller until attached to its parent, which is already in a GC box).
** Integers are written exactly (even beyond 2^53); NaN, infinities,
** functions, userdata and cycles (depth) raise.
*/
static cJSON *to_json (lua_State *L, int idx, int depth) {
  idx = lua_absindex(L, idx);
  if (depth > MAXDEPTH)
    luaL_error(L, "cannot encode: value nested too deeply (a cycle?)");
  luaL_checkstack(L, 6, "nested too deeply");
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      return cJSON_CreateNull();
    case LUA_TBOOLEAN:
      return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        char tmp[32];
        snprintf(tmp, sizeof(tmp), LUA_INTEGER_FMT, lua_tointeger(L, idx));
        return cJSON_CreateRaw(tmp);
      } else {
        double d = lua_tonumber(L, idx);
        if (isnan(d) || isinf(d))
          luaL_error(L, "cannot encode %f in JSON", d);
        return cJSON_CreateNumber(d);
      }
    case LUA_TSTRING:
      return cJSON_CreateString(lua_tostring(L, idx));
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == JSON_NULL)
        return cJSON_CreateNull();
      break;
    case LUA_TTABLE:
      return table_to_json(L, idx, depth);
    default:
      break;
  }
  luaL_error(L, "cannot encode a %s value as JSON", luaL_typename(L, idx));
  return NULL;
}

/* json.encode(value [, {pretty = bool}]) -> string */
static int json_encode (lua_State *L) {
  int pretty = 0;
  char *text;
  cJSON **box;
  luaL_checkany(L, 1);
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "pretty");
    pretty = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_settop(L, 1);
  box = newtreebox(L);
  *box = to_json(L, 1, 0);
  text = pretty ? cJSON_Print(*box) : cJSON_PrintUnformatted(*box);
  if (text == NULL)
    return luaL_error(L, "out of memory encoding JSON");
  lua_pushstring(L, text);
  cJSON_free(text);
  cJSON_Delete(*box);
  *box = NULL;
  return 1;
}

/* json.array([t]) -> t marked as an array (a new empty one without t). */
static int json_array (lua_State *L) {
  if (lua_isnoneornil(L, 1))
    lua_newtable(L);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  setarray(L);
  return 1;
}

/* json.is_array(t) -> boolean (marked, or a non-empty sequence) */
static int json_is_array (lua_State *L) {
  lua_Integer n;
  lua_settop(L, 1);
  lua_pushboolean(L, lua_istable(L, 1) && is_array(L, 1, &n));
  return 1;
}

static const luaL_Reg json_funcs[] = {
  {"decode", json_decode},
  {"encode", json_encode},
  {"array", json_array},
  {"is_array", json_is_array},
  {NULL, NULL}
};

/* require "json": the tree box and array-mark metatables, json.null. */
int luaopen_json (lua_State *L) {
  static const luaL_Reg tree_meta[] = {{"__gc", tree_gc}, {NULL, NULL}};
  luax_createmeta(L, JSON_TREE, tree_meta, NULL);
  luaL_newmetatable(L, ARRAY_MT);
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__jsontype");
  lua_pop(L, 1);
  luaL_newlib(L, json_funcs);
  lua_pushlightuserdata(L, JSON_NULL);
  lua_setfield(L, -2, "null");
  return 1;
}
