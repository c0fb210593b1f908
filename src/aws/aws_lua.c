/*
** aws_lua.c
** Lua module "aws": the binding for the Lua-free AWS code (sigv4.c,
** request.c, creds.c, xml.c, proto.c).  Argument checks, conversion of
** tables, the "aws.session" userdata and "aws.error" objects; nothing
** else.  aws.client, aws.paginate and aws.wait are written in Lua
** (lua/pgtide/aws.lua) and reached through this module's __index, so
** scripts only ever `require "aws"`.
**
** Error model: AWS and transport failures raise an aws.error object (a
** table with code, message, status, request_id, retryable, throttling,
** service, operation, attempts and a __tostring); misuse (wrong argument
** types) raises a string as lauxlib does.
*/
#include <lauxlib.h>
#include <lua.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "aws/proto.h"
#include "aws/request.h"
#include "aws/sigv4.h"
#include "aws/xml.h"
#include "host/luax.h"
#include "host/modules.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/redact.h"

#define AWS_SESSION "aws.session"
#define AWS_ERROR "aws.error"
#define AWS_XMLTREE "aws.xmltree"      /* internal: owns a parsed XML tree */
#define MAX_HEADERS 128

typedef struct LSession {
  AwsSession *s;              /* NULL once closed */
} LSession;

/*{====================================================================
** Errors
** =====================================================================*/

/*
** Raise an aws.error object built from 'e' (its message is already
** redacted).  Empty codes, ids and names are left out; status and
** attempts only when known.  Never returns.
*/
static int raise_error (lua_State *L, const AwsError *e) {
  luax_push_error(L, AWS_ERROR, "code", e->code, "request_id", e->request_id,
                  "service", e->service, "operation", e->operation, NULL);
  luax_setstr(L, "message", e->message);
  if (e->status > 0)
    luax_setint(L, "status", e->status);
  luax_setbool(L, "retryable", e->retryable);
  luax_setbool(L, "throttling", e->throttling);
  if (e->attempts > 0)
    luax_setint(L, "attempts", e->attempts);
  return lua_error(L);
}

/*
** tostring(err) (luax_error_tostring): "aws dms.CreateEndpoint:
** ResourceNotFoundFault: message (HTTP 400, request id X, 3 attempts)".
** The message was redacted when the object was made; it is redacted
** again in case Lua code built it.  This is the head: "aws service.op:
** code: ".
*/
static void error_head (lua_State *L, int obj, Buf *b) {
  buf_puts(b, "aws");
  if (luax_error_addfield(L, obj, b, " ", "service"))
    luax_error_addfield(L, obj, b, ".", "operation");
  buf_puts(b, ": ");
  if (luax_error_addfield(L, obj, b, NULL, "code"))
    buf_puts(b, ": ");
}

/* The tail: " (HTTP 400, request id X, 3 attempts)", the parts present. */
static void error_tail (lua_State *L, int obj, Buf *b) {
  lua_Integer status, attempts;
  size_t start = b->len;
  const char *sep = " (";
  lua_getfield(L, obj, "status");
  status = lua_tointeger(L, -1);
  lua_getfield(L, obj, "attempts");
  attempts = lua_tointeger(L, -1);
  lua_pop(L, 2);
  if (status > 0) {
    buf_printf(b, "%sHTTP %d", sep, (int)status);
    sep = ", ";
  }
  if (luax_error_addfield(L, obj, b, sep[0] == ' ' ? " (request id " : ", request id ", "request_id"))
    sep = ", ";
  if (attempts > 1)
    buf_printf(b, "%s%d attempts", sep, (int)attempts);
  if (b->len > start)
    buf_putc(b, ')');
}

static const LuaxErrorStyle error_style = {NULL, error_head, "error", 1, NULL, error_tail};

/* aws.error{code=, message=, ...} -> the same table as an aws.error. */
static int aws_error_new (lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_getfield(L, 1, "message");
  if (lua_isstring(L, -1)) {   /* messages are always redacted */
    char *clean = redact_str(lua_tostring(L, -1));
    lua_pushstring(L, clean);
    free(clean);
    lua_setfield(L, 1, "message");
  }
  lua_pop(L, 1);
  lua_getfield(L, 1, "retryable");
  if (lua_isnil(L, -1)) {
    lua_pushboolean(L, 0);
    lua_setfield(L, 1, "retryable");
  }
  lua_pop(L, 1);
  luaL_setmetatable(L, AWS_ERROR);
  return 1;
}

/* aws.is_error(v) -> true when v is an aws.error */
static int aws_is_error (lua_State *L) {
  lua_pushboolean(L, luax_isa(L, 1, AWS_ERROR));
  return 1;
}

/*}====================================================================*/

/*{====================================================================
** Helpers: headers in and out
** =====================================================================*/

/*
** Read headers from the table at 'idx': a map {Name = value} or a list of
** {name, value} pairs (duplicates allowed).  Strings stay anchored by the
** table.  Returns the count.
*/
static size_t read_headers (lua_State *L, int idx, const char **names, const char **values) {
  size_t n = 0;
  if (lua_isnoneornil(L, idx))
    return 0;
  luaL_checktype(L, idx, LUA_TTABLE);
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    if (n >= MAX_HEADERS)
      luaL_error(L, "too many headers (max %d)", MAX_HEADERS);
    if (lua_type(L, -2) == LUA_TNUMBER && lua_istable(L, -1)) {
      lua_rawgeti(L, -1, 1);
      lua_rawgeti(L, -2, 2);
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "header pairs must be {name, value} strings");
      names[n] = lua_tostring(L, -2);    /* strings stay anchored by the pair */
      values[n] = lua_tostring(L, -1);
      lua_pop(L, 2);
    } else if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
      names[n] = lua_tostring(L, -2);
      values[n] = lua_tostring(L, -1);
    } else if (lua_type(L, -2) == LUA_TSTRING) {
      luaL_error(L, "header %s: the value must be a string", lua_tostring(L, -2));
    } else {
      luaL_error(L, "headers must be a map of strings or a list of {name, value} pairs");
    }
    n++;
    lua_pop(L, 1);
  }
  return n;
}

/*
** Push response headers as {lowercase-name = value}, repeats joined by
** ", ".  Names are lowercased into Lua strings (nothing to free if a
** Lua error strikes midway).
*/
static void push_fields (lua_State *L, const HttpField *h, size_t n) {
  size_t i;
  lua_createtable(L, 0, (int)n);
  for (i = 0; i < n; i++) {
    luaL_Buffer b;
    const char *p;
    luaL_buffinit(L, &b);
    for (p = h[i].name; *p; p++)
      luaL_addchar(&b, (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p));
    luaL_pushresult(&b);                        /* the key */
    lua_pushvalue(L, -1);
    if (lua_rawget(L, -3) == LUA_TSTRING) {     /* a repeated header */
      lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), h[i].value);
      lua_remove(L, -2);
    } else {
      lua_pop(L, 1);
      lua_pushstring(L, h[i].value);
    }
    lua_rawset(L, -3);
  }
}

/*}====================================================================*/

/*{====================================================================
** aws.sign
** =====================================================================*/

/*
** aws.sign{method=, url=, headers=, body=, service=, region=,
**          credentials={access_key_id=, secret_access_key=, session_token=},
**          time=, presign=, expires=, s3=, payload_hash=}
** -> {headers = {Name = value} (header mode) | url = presigned URL,
**     canonical_request=, string_to_sign=, signature=}
** Raises a string on a malformed request.
*/
static int aws_sign (lua_State *L) {
  const char *names[MAX_HEADERS], *values[MAX_HEADERS];
  SigV4Header hdrs[MAX_HEADERS];
  SigV4Request r;
  SigV4Result res;
  size_t nh, i;
  char err[256];
  int rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  memset(&r, 0, sizeof(r));
  r.method = luax_opt_string(L, 1, "method", NULL);
  r.url = luax_opt_string(L, 1, "url", NULL);
  r.service = luax_opt_string(L, 1, "service", NULL);
  r.region = luax_opt_string(L, 1, "region", NULL);
  r.payload_hash = luax_opt_string(L, 1, "payload_hash", NULL);
  r.body = luax_opt_lstring(L, 1, "body", &r.body_len);
  {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    r.time = (time_t)luax_opt_number(L, 1, "time", (lua_Number)tv.tv_sec);
  }
  r.presign = luax_opt_bool(L, 1, "presign", 0);
  r.expires = (long)luax_opt_number(L, 1, "expires", 3600);
  r.s3 = luax_opt_bool(L, 1, "s3", 0);
  lua_getfield(L, 1, "credentials");
  luaL_argexpected(L, lua_istable(L, -1), 1, "credentials table");
  r.access_key_id = luax_opt_string(L, -1, "access_key_id", NULL);
  r.secret_access_key = luax_opt_string(L, -1, "secret_access_key", NULL);
  r.session_token = luax_opt_string(L, -1, "session_token", NULL);
  redact_register(r.secret_access_key);
  redact_register(r.session_token);
  lua_getfield(L, 1, "headers");
  nh = read_headers(L, -1, names, values);
  for (i = 0; i < nh; i++) {
    hdrs[i].name = names[i];
    hdrs[i].value = values[i];
  }
  r.headers = hdrs;
  r.nheaders = nh;
  rc = sigv4_sign(&r, &res, err, sizeof(err));
  if (rc != 0)
    return luaL_error(L, "%s", err);
  lua_createtable(L, 0, 5);
  if (r.presign) {
    luax_setstr(L, "url", res.url);
  } else {
    lua_createtable(L, 0, (int)res.nheaders);
    for (i = 0; i < res.nheaders; i++) {
      lua_pushstring(L, res.headers[i].value);
      lua_setfield(L, -2, res.headers[i].name);
    }
    lua_setfield(L, -2, "headers");
  }
  luax_setstr(L, "canonical_request", res.canonical_request);
  luax_setstr(L, "string_to_sign", res.string_to_sign);
  luax_setstr(L, "signature", res.signature);
  sigv4_result_free(&res);
  return 1;
}

/*}====================================================================*/

/*{====================================================================
** aws.session
** =====================================================================*/

static AwsSession *tosession (lua_State *L) {
  LSession *ls = (LSession *)luaL_checkudata(L, 1, AWS_SESSION);
  if (ls->s == NULL)
    luaL_error(L, "attempt to use a closed aws session");
  return ls->s;
}

/*
** aws.session{profile=, region=, credentials={...}, max_attempts=,
**             retry_base=, retry_cap=, timeout=, connect_timeout=}
** -> an aws.session.  Raises an aws.error for configuration errors
** (unknown profile...).  Credentials are resolved on first use.
*/
static int aws_session (lua_State *L) {
  LSession *ls;
  AwsSessionOptions o;
  AwsError e;
  AwsSession *s;
  if (lua_isnoneornil(L, 1)) {   /* aws.session() and aws.session(nil) */
    lua_settop(L, 0);
    lua_newtable(L);
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  memset(&o, 0, sizeof(o));
  o.profile = luax_opt_string(L, 1, "profile", NULL);
  o.region = luax_opt_string(L, 1, "region", NULL);
  o.max_attempts = (int)luax_opt_number(L, 1, "max_attempts", 0);
  o.retry_base = luax_opt_number(L, 1, "retry_base", 0);
  o.retry_cap = luax_opt_number(L, 1, "retry_cap", 0);
  o.timeout_ms = (long)(luax_opt_number(L, 1, "timeout", 0) * 1000);
  o.connect_timeout_ms = (long)(luax_opt_number(L, 1, "connect_timeout", 0) * 1000);
  lua_getfield(L, 1, "credentials");
  if (!lua_isnil(L, -1)) {
    luaL_argexpected(L, lua_istable(L, -1), 1, "credentials table");
    o.access_key_id = luax_opt_string(L, -1, "access_key_id", NULL);
    o.secret_access_key = luax_opt_string(L, -1, "secret_access_key", NULL);
    o.session_token = luax_opt_string(L, -1, "session_token", NULL);
  }
  ls = (LSession *)luax_newudata(L, sizeof(LSession), 0, AWS_SESSION);  /* closed */
  s = (AwsSession *)xcalloc(1, sizeof(AwsSession));
  memset(&e, 0, sizeof(e));
  if (aws_session_init(s, &o, &e) != 0) {
    free(s);
    return raise_error(L, &e);
  }
  ls->s = s;
  return 1;
}

/* s:close(), also __gc and __close: idempotent. */
static int session_close (lua_State *L) {
  LSession *ls = (LSession *)luaL_checkudata(L, 1, AWS_SESSION);
  if (ls->s != NULL) {
    aws_session_free(ls->s);
    free(ls->s);
    ls->s = NULL;
  }
  return 0;
}

/* s:region() -> the resolved region, or nil.  (lua_pushstring(L, NULL)
   pushes nil, here and below.) */
static int session_region (lua_State *L) {
  lua_pushstring(L, tosession(L)->region);
  return 1;
}

static int session_profile (lua_State *L) {
  lua_pushstring(L, tosession(L)->cfg.profile);
  return 1;
}

/* s:config(key) -> the active profile's value (credentials file first). */
static int session_config (lua_State *L) {
  AwsSession *s = tosession(L);
  lua_pushstring(L, aws_profile_get(&s->cfg, NULL, luaL_checkstring(L, 2)));
  return 1;
}

/* s:endpoint(service_id) -> the configured override URL or nil. */
static int session_endpoint (lua_State *L) {
  AwsSession *s = tosession(L);
  const char *url = NULL;
  AwsError e;
  memset(&e, 0, sizeof(e));
  if (aws_config_endpoint(&s->cfg, luaL_checkstring(L, 2), &url, &e) != 0)
    return raise_error(L, &e);
  lua_pushstring(L, url);
  return 1;
}

/*
** s:credentials() -> {access_key_id=, source=, expiration=, session_token=
** boolean, secret_sha256=} (the secret itself never reaches Lua).
*/
static int session_credentials (lua_State *L) {
  AwsSession *s = tosession(L);
  const AwsCreds *c;
  AwsError e;
  char hex[SIGV4_HEX_LEN];
  memset(&e, 0, sizeof(e));
  if (aws_session_credentials(s, &c, &e) != 0)
    return raise_error(L, &e);
  lua_createtable(L, 0, 5);
  luax_setstr(L, "access_key_id", c->access_key_id);
  luax_setstr(L, "source", c->source);
  if (c->expiration > 0)
    luax_setnum(L, "expiration", c->expiration);
  luax_setbool(L, "session_token", c->session_token != NULL);
  sigv4_sha256_hex(c->secret_access_key, strlen(c->secret_access_key), hex);
  luax_setstr(L, "secret_sha256", hex);
  return 1;
}

/*
** s:request{protocol=, service=, operation=, signing_name=, region=,
**           method=, url=, headers=, body=, s3=, unsigned=, max_attempts=}
** -> status, headers {lowercase = value}, body.  Raises an aws.error
** after the retries are exhausted or on a non-retryable failure.
*/
static int session_request (lua_State *L) {
  AwsSession *s = tosession(L);
  const char *names[MAX_HEADERS], *values[MAX_HEADERS];
  HttpHeader hdrs[MAX_HEADERS];
  AwsRequest r;
  HttpResponse resp;
  AwsError e;
  size_t nh, i;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  memset(&r, 0, sizeof(r));
  r.protocol = luax_opt_string(L, 2, "protocol", NULL);
  r.service = luax_opt_string(L, 2, "service", NULL);
  r.operation = luax_opt_string(L, 2, "operation", NULL);
  r.signing_name = luax_opt_string(L, 2, "signing_name", NULL);
  r.region = luax_opt_string(L, 2, "region", NULL);
  r.method = luax_opt_string(L, 2, "method", NULL);
  r.url = luax_opt_string(L, 2, "url", NULL);
  r.s3 = luax_opt_bool(L, 2, "s3", 0);
  r.unsigned_request = luax_opt_bool(L, 2, "unsigned", 0);
  r.max_attempts = (int)luax_opt_number(L, 2, "max_attempts", 0);
  luaL_argcheck(L, r.method != NULL && r.url != NULL, 2, "method and url are required");
  if (r.signing_name == NULL)
    r.signing_name = r.service;
  if (r.region == NULL)
    r.region = s->region;
  if (!r.unsigned_request && (r.region == NULL || r.signing_name == NULL)) {
    memset(&e, 0, sizeof(e));
    snprintf(e.service, sizeof(e.service), "%s", r.service ? r.service : "");
    snprintf(e.operation, sizeof(e.operation), "%s", r.operation ? r.operation : "");
    aws_error_set(&e, "NoRegion", 0, "no AWS region: set aws.region in the configuration, "
                  "AWS_REGION, or region in the profile");
    return raise_error(L, &e);
  }
  r.body = luax_opt_lstring(L, 2, "body", &r.body_len);
  lua_getfield(L, 2, "headers");
  nh = read_headers(L, -1, names, values);
  for (i = 0; i < nh; i++) {
    hdrs[i].name = names[i];
    hdrs[i].value = values[i];
  }
  r.headers = hdrs;
  r.nheaders = nh;
  if (aws_request_send(s, &r, &resp, &e) != 0)
    return raise_error(L, &e);
  lua_pushinteger(L, resp.status);
  push_fields(L, resp.headers, resp.nheaders);
  lua_pushlstring(L, buf_cstr(&resp.body), resp.body.len);
  http_response_free(&resp);
  return 3;
}

static int session_tostring (lua_State *L) {
  LSession *ls = (LSession *)luaL_checkudata(L, 1, AWS_SESSION);
  if (ls->s == NULL)
    lua_pushliteral(L, "aws.session (closed)");
  else
    lua_pushfstring(L, "aws.session (profile %s, region %s)", ls->s->cfg.profile,
                    ls->s->region ? ls->s->region : "none");
  return 1;
}

/*}====================================================================*/

/*{====================================================================
** Codecs
** =====================================================================*/

/* Push node as {name=, text=, [i]=child...}; depth is bounded by xml.c. */
static void push_node (lua_State *L, const XmlNode *n) {
  size_t i;
  luaL_checkstack(L, 4, "XML nested too deeply");
  lua_createtable(L, (int)n->nchildren, 2);
  luax_setstr(L, "name", n->name);
  lua_pushlstring(L, n->text, n->text_len);
  lua_setfield(L, -2, "text");
  for (i = 0; i < n->nchildren; i++) {
    push_node(L, n->children[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* __gc of an aws.xmltree box: frees the parsed tree (NULL when done). */
static int xmltree_gc (lua_State *L) {
  XmlNode **box = (XmlNode **)luaL_checkudata(L, 1, AWS_XMLTREE);
  xml_free(*box);
  *box = NULL;
  return 0;
}

/*
** aws.xml_decode(text) -> tree, or nil, message (malformed input).  The
** parsed tree lives in a GC box while it is converted, so a Lua error
** (too deep, out of memory) cannot leak it.
*/
static int aws_xml_decode (lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char err[256];
  XmlNode **box = (XmlNode **)luax_newudata(L, sizeof(XmlNode *), 0, AWS_XMLTREE);
  *box = xml_parse(s, len, err, sizeof(err));
  if (*box == NULL) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  push_node(L, *box);
  xml_free(*box);  /* now rather than at the next GC cycle */
  *box = NULL;
  return 1;
}

/*
** The string codecs share one shape: argument 1 in, a Buf filled by the
** Lua-free encoder, a Lua string out.  Misuse (not a string) raises.
*/
typedef void (*Encoder)(Buf *out, const char *s, size_t n);

static int push_encoded (lua_State *L, Encoder fn) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  Buf b = BUF_INIT;
  fn(&b, s, n);
  return luax_pushbuf(L, &b);
}

static void uri_encode_all (Buf *out, const char *s, size_t n) {
  sigv4_uri_encode(out, s, n, 0);
}

static void uri_encode_path (Buf *out, const char *s, size_t n) {
  sigv4_uri_encode(out, s, n, 1);
}

static void base64_encode (Buf *out, const char *s, size_t n) {
  aws_base64_encode(out, s, n);
}

static int aws_xml_escape (lua_State *L) {
  return push_encoded(L, xml_escape);
}

/* aws.uri_encode(s [, keep_slash]): SigV4's percent-encoding. */
static int aws_uri_encode (lua_State *L) {
  return push_encoded(L, lua_toboolean(L, 2) ? uri_encode_path : uri_encode_all);
}

static int aws_uri_decode (lua_State *L) {
  return push_encoded(L, sigv4_uri_decode);
}

static int aws_b64encode (lua_State *L) {
  return push_encoded(L, base64_encode);
}

/* aws.base64_decode(s) -> bytes, or nil on invalid input */
static int aws_b64decode (lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  Buf b = BUF_INIT;
  if (aws_base64_decode(&b, s, n) != 0) {
    buf_free(&b);
    luaL_pushfail(L);
    return 1;
  }
  return luax_pushbuf(L, &b);
}

/* aws.parse_time(s) -> epoch seconds, or nil */
static int aws_parse_time (lua_State *L) {
  double t;
  if (aws_time_parse(luaL_checkstring(L, 1), &t) != 0)
    luaL_pushfail(L);
  else if (t == floor(t) && fabs(t) < 9007199254740992.0)
    lua_pushinteger(L, (lua_Integer)t);
  else
    lua_pushnumber(L, t);
  return 1;
}

static int aws_iso8601 (lua_State *L) {
  char out[64];
  aws_time_iso8601(luaL_checknumber(L, 1), out);
  lua_pushstring(L, out);
  return 1;
}

static int aws_rfc1123 (lua_State *L) {
  char out[64];
  aws_time_rfc1123(luaL_checknumber(L, 1), out);
  lua_pushstring(L, out);
  return 1;
}

static int aws_md5 (lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char out[32];
  aws_md5_base64(s, n, out);
  lua_pushstring(L, out);
  return 1;
}

static int aws_sha256 (lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  char hex[SIGV4_HEX_LEN];
  sigv4_sha256_hex(s, n, hex);
  lua_pushstring(L, hex);
  return 1;
}

/* aws.register_secret(s): mask s in everything logged from now on. */
static int aws_register_secret (lua_State *L) {
  if (lua_type(L, 1) == LUA_TSTRING)
    redact_register(lua_tostring(L, 1));
  return 0;
}

/* aws.debug_enabled() -> true under --debug aws */
static int aws_debug_enabled (lua_State *L) {
  lua_pushboolean(L, log_topic("aws"));
  return 1;
}

/* aws.debug(text): log 'text' (redacted) when --debug aws is on. */
static int aws_debug (lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  if (log_topic("aws"))
    log_str(log_get_level() <= LOG_DEBUG ? LOG_DEBUG : LOG_INFO, s);
  return 0;
}

/*}====================================================================*/

/*
** __index of the module table: the functions written in Lua (client,
** paginate, wait...) come from pgtide.aws on first use.
*/
static int module_index (lua_State *L) {
  if (lua_type(L, 2) != LUA_TSTRING)
    return 0;
  lua_getglobal(L, "require");
  lua_pushliteral(L, "pgtide.aws");
  lua_call(L, 1, 1);
  if (!lua_istable(L, -1))
    return luaL_error(L, "pgtide.aws did not return a table");
  lua_getfield(L, -1, lua_tostring(L, 2));
  if (!lua_isnil(L, -1)) {       /* cache it in the module table */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
  }
  return 1;
}

static const luaL_Reg aws_funcs[] = {
  {"sign", aws_sign},
  {"session", aws_session},
  {"error", aws_error_new},
  {"is_error", aws_is_error},
  {"xml_decode", aws_xml_decode},
  {"xml_escape", aws_xml_escape},
  {"uri_encode", aws_uri_encode},
  {"uri_decode", aws_uri_decode},
  {"parse_time", aws_parse_time},
  {"iso8601", aws_iso8601},
  {"rfc1123", aws_rfc1123},
  {"base64_encode", aws_b64encode},
  {"base64_decode", aws_b64decode},
  {"md5_base64", aws_md5},
  {"sha256_hex", aws_sha256},
  {"register_secret", aws_register_secret},
  {"debug_enabled", aws_debug_enabled},
  {"debug", aws_debug},
  {NULL, NULL}
};

static const luaL_Reg session_methods[] = {
  {"request", session_request},
  {"credentials", session_credentials},
  {"region", session_region},
  {"profile", session_profile},
  {"config", session_config},
  {"endpoint", session_endpoint},
  {"close", session_close},
  {NULL, NULL}
};

static const luaL_Reg session_metameth[] = {
  {"__index", NULL},  /* placeholder */
  {"__gc", session_close},
  {"__close", session_close},
  {"__tostring", session_tostring},
  {NULL, NULL}
};

static const luaL_Reg xmltree_metameth[] = {
  {"__gc", xmltree_gc},
  {NULL, NULL}
};

/* require "aws": the metatables, the C functions, and an __index that
   finds the Lua-written ones. */
int luaopen_aws (lua_State *L) {
  luax_createmeta(L, AWS_SESSION, session_metameth, session_methods);
  luax_error_meta(L, AWS_ERROR, &error_style);
  luax_createmeta(L, AWS_XMLTREE, xmltree_metameth, NULL);
  luaL_newlib(L, aws_funcs);
  lua_createtable(L, 0, 1);   /* the module's metatable: functions written in Lua */
  lua_pushcfunction(L, module_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
