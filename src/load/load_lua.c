/*
** load_lua.c
** Lua module "core.load": the parallel full-load engine (fullload.h) and
** the parallel statement runner (parallel_sql.c) for runbooks.
**
**   load.plan{source=, tables=, exclude=, split_threshold_bytes=,
**             max_parts=, jobs=, format=, target_version=} -> list of unit tables
**   load.full_load{source=, target=, jobs=, snapshot=, units= | tables=,
**             exclude=, done_units=, split_threshold_bytes=, max_parts=,
**             format="auto"|"text", progress=true, log_interval=,
**             after={{schema=, table=, statements={...}, checks={...},
**                     groups={...}, final="SQL"}},
**             after_setup="SQL",
**             checks={{name="schema.table", tables={{schema=, table=}, ...}}},
**             on_unit_done=function (unit) end,
**             on_progress=function (progress) end, progress_interval=1}
**             -> summary
**   load.start{...same...} -> job:  job:next(timeout) -> unit | nil | false,
**             job:progress(), job:snapshot(), job:stop(), job:finish() -> summary
**   load.run_parallel{target=, jobs=, statements={...}, settings={...},
**             setup="SQL run first on each connection", what=,
**             stop_on_error=, progress=} -> {ok=, failed={...}, skipped=, seconds=}
**   load.progress() -> progress of the load running now, or nil
**   load.request_stop(), load.ncpus()
**
** The summary also lists the checks (tables verified during the load,
** see FlCheck): summary.checks = {{name=, status="equal" | "different" |
** "failed" | "not_run", source_rows=, target_rows=, missing=, extra=,
** changed=, seconds=, error=}, ...} in the order given.
**
** A unit table: id, schema, table, columns, where (nil for a whole
** table), kind ("table", "keyrange", "ctid"), part, parts, binary,
** bytes and rows (estimates); finished units also carry copied_rows,
** copied_bytes and seconds.
**
** Binding only: argument checks, conversions, the job userdata and
** error objects.  Failures raise "core.load.error" objects (op, message,
** sqlstate, interrupted) with a __tostring.  Callbacks run on the
** calling thread between waits; an error in one stops the load cleanly
** (workers joined, connections closed) and is re-raised unchanged.
*/
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host/luax.h"
#include "host/modules.h"
#include "load/fullload.h"
#include "load/parallel_sql.h"
#include "pg/pgsql.h"
#include "util/buf.h"
#include "util/cpu.h"
#include "util/interrupt.h"

#define LOAD_JOB   "core.load.job"
#define LOAD_PLAN  "core.load.plan"     /* internal: owns an FlPlan */
#define LOAD_ERROR "core.load.error"

#define ERRLEN 1536

typedef struct LoadJob {
  FullLoad *fl;          /* NULL once finished or closed */
} LoadJob;

static FullLoad *current;  /* the load a full_load call is driving (load.progress) */

/* Monotonic clock, in seconds: progress intervals and durations. */
static double mono (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
** {======================================================
** Errors
** =======================================================
*/

/* tostring of core.load.error objects (luax_error_tostring): their
   message. */
static const LuaxErrorStyle error_style = {NULL, NULL, "core.load error", 0, NULL, NULL};

/* Raise a core.load.error: op, message, sqlstate (may be NULL or ""),
   interrupted flag. */
static int load_raise (lua_State *L, const char *op, const char *msg, const char *sqlstate,
                       int interrupted) {
  luax_push_error(L, LOAD_ERROR, "op", op, "message", msg, "sqlstate", sqlstate, NULL);
  if (interrupted)
    luax_setbool(L, "interrupted", 1);
  return lua_error(L);
}

/* }====================================================== */

/*
** {======================================================
** Options
** =======================================================
*/

/*
** A list of strings from option k: a sequence {"a", "b"}, or a set
** {a = true}.  The strings stay anchored by the options table; the
** pointer array lives in a userdata left on the stack.  *n = -1 when the
** option is absent (returns NULL).
*/
static const char **opt_strings (lua_State *L, int t, const char *k, int *n) {
  const char **v;
  int count = 0, cap;
  lua_getfield(L, t, k);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    *n = -1;
    lua_pushnil(L);            /* keep the stack shape the same */
    return NULL;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "option '%s' must be a list of strings", k);
  cap = 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    cap++;
    lua_pop(L, 1);
  }
  v = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(cap + 1), 0);
  lua_pushnil(L);
  while (lua_next(L, -3)) {
    const char *s = NULL;
    if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TSTRING)
      s = lua_tostring(L, -1);
    else if (lua_type(L, -2) == LUA_TSTRING && lua_toboolean(L, -1))
      s = lua_tostring(L, -2);
    else if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "option '%s' must be a list of strings", k);
    if (s != NULL)
      v[count++] = s;        /* anchored: the value or key lives in the table */
    lua_pop(L, 1);
  }
  v[count] = NULL;
  lua_remove(L, -2);         /* drop the option table; strings stay in opts */
  *n = count;
  return v;
}

/* __gc of a plan box: free whatever plan it still owns. */
static int plan_gc (lua_State *L) {
  FlPlan *p = (FlPlan *)luaL_checkudata(L, 1, LOAD_PLAN);
  fullload_plan_free(p);
  return 0;
}

/* A plan in a GC box (closed = empty plan), so a Lua error while it is
   being filled cannot leak it. */
static FlPlan *newplanbox (lua_State *L) {
  return (FlPlan *)luax_newudata(L, sizeof(FlPlan), 0, LOAD_PLAN);
}

static const char *const kind_names[] = {"table", "keyrange", "ctid", NULL};

/* Read the list of unit tables at index 'idx' into a plan. */
static void units_from_lua (lua_State *L, int idx, FlPlan *p) {
  lua_Integer i, n = luaL_len(L, idx);
  for (i = 1; i <= n; i++) {
    int u;
    const char *id, *nsp, *rel, *cols, *where, *kind;
    int k;
    lua_geti(L, idx, i);
    u = lua_gettop(L);
    if (!lua_istable(L, u))
      luaL_error(L, "units[%d] must be a table", (int)i);
    id = luax_opt_string(L, u, "id", NULL);
    nsp = luax_opt_string(L, u, "schema", NULL);
    rel = luax_opt_string(L, u, "table", NULL);
    cols = luax_opt_string(L, u, "columns", "");
    where = luax_opt_string(L, u, "where", NULL);
    kind = luax_opt_string(L, u, "kind", "table");
    if (id == NULL || nsp == NULL || rel == NULL)
      luaL_error(L, "units[%d] needs id, schema and table", (int)i);
    for (k = 0; kind_names[k] != NULL && strcmp(kind_names[k], kind) != 0; k++)
      ;
    if (kind_names[k] == NULL)
      luaL_error(L, "units[%d].kind must be table, keyrange or ctid", (int)i);
    if ((k == FL_WHOLE) != (where == NULL))
      luaL_error(L, "units[%d]: a 'where' is required for ranges and only for them", (int)i);
    fullload_plan_add(p, id, nsp, rel, cols, where, (FlUnitKind)k, (int)luax_opt_int(L, u, "part", 1),
                      (int)luax_opt_int(L, u, "parts", 1), luax_opt_bool(L, u, "binary", 0),
                      (int64_t)luax_opt_int(L, u, "bytes", 0), (int64_t)luax_opt_int(L, u, "rows", 0));
    lua_pop(L, 1);
  }
  fullload_plan_sort(p);
}

/* Push the unit table of u (see the header comment for its fields). */
static void push_unit (lua_State *L, const FlUnit *u) {
  lua_createtable(L, 0, 14);
  luax_setstr(L, "id", u->id);
  luax_setstr(L, "schema", u->nspname);
  luax_setstr(L, "table", u->relname);
  luax_setstr(L, "columns", u->columns);
  luax_setstr(L, "where", u->where);     /* NULL (a whole table): no field */
  luax_setstr(L, "kind", kind_names[u->kind]);
  luax_setint(L, "part", u->part);
  luax_setint(L, "parts", u->nparts);
  luax_setbool(L, "binary", u->binary);
  luax_setint(L, "bytes", (lua_Integer)u->est_bytes);
  luax_setint(L, "rows", (lua_Integer)u->est_rows);
  if (u->state == FL_DONE) {
    luax_setint(L, "copied_rows", (lua_Integer)u->rows);
    luax_setint(L, "copied_bytes", (lua_Integer)u->bytes);
    luax_setnum(L, "seconds", u->seconds);
  }
}

/* Plan options common to plan, full_load and start. */
static void plan_options (lua_State *L, int t, FlPlanOptions *po) {
  const char *format = luax_opt_string(L, t, "format", "auto");
  memset(po, 0, sizeof(*po));
  po->split_threshold = (int64_t)luax_opt_int(L, t, "split_threshold_bytes", (lua_Integer)1 << 30);
  po->max_parts = (int)luax_opt_int(L, t, "max_parts", 16);
  po->jobs = (int)luax_opt_int(L, t, "jobs", 0);
  if (strcmp(format, "text") == 0)
    po->format = 1;
  else if (strcmp(format, "auto") == 0 || strcmp(format, "binary") == 0)
    po->format = 0;
  else
    luaL_error(L, "option 'format' must be auto, binary or text");
  /* the list pointers are pushed on the stack (anchors) */
  po->tables = opt_strings(L, t, "tables", &po->ntables);
  po->exclude = opt_strings(L, t, "exclude", &po->nexclude);
  if (po->ntables < 0)
    po->ntables = 0;
  if (po->nexclude < 0)
    po->nexclude = 0;
}

/* }====================================================== */

/*
** {======================================================
** Progress and summaries
** =======================================================
*/

/* Push the progress table of a running or finished load: totals, the
   one-line summary and a per-table list. */
static void push_progress (lua_State *L, FullLoad *fl) {
  FlProgress p;
  char line[256];
  int i;
  fullload_progress(fl, &p);
  fullload_progress_line(&p, line, sizeof(line));
  lua_createtable(L, 0, 14);
  luax_setnum(L, "percent", p.percent);
  luax_setint(L, "units", p.units);
  luax_setint(L, "units_done", p.units_done + p.units_skipped);
  luax_setint(L, "units_skipped", p.units_skipped);
  luax_setint(L, "units_running", p.units_running);
  luax_setint(L, "rows", p.rows);
  luax_setint(L, "bytes", p.bytes);
  luax_setint(L, "est_bytes", p.est_bytes);
  luax_setnum(L, "elapsed", p.elapsed);
  luax_setnum(L, "copy_seconds", p.copy_seconds);
  luax_setnum(L, "mb_per_s", p.mb_per_s);
  if (p.eta >= 0)
    luax_setnum(L, "eta", p.eta);
  luax_setbool(L, "finished", p.finished);
  luax_setstr(L, "line", line);
  lua_createtable(L, p.ntables, 0);
  for (i = 0; i < p.ntables; i++) {
    FlTableProgress *t = &p.tables[i];
    lua_createtable(L, 0, 7);
    luax_setstr(L, "schema", t->nspname);
    luax_setstr(L, "table", t->relname);
    luax_setint(L, "units", t->units);
    luax_setint(L, "units_done", t->units_done);
    luax_setint(L, "rows", t->rows);
    luax_setint(L, "bytes", t->bytes);
    luax_setint(L, "est_bytes", t->est_bytes);
    if (t->index_seconds > 0)
      luax_setnum(L, "index_seconds", t->index_seconds);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "tables");
  fullload_progress_free(&p);
}

/* The summary of a finished load, built from its last progress. */
static void push_summary (lua_State *L, FullLoad *fl) {
  push_progress(L, fl);
  luax_setstr(L, "snapshot", fullload_snapshot(fl));
  {
    int t = lua_gettop(L);
    lua_Integer done, skipped;
    lua_getfield(L, t, "units_done");
    lua_getfield(L, t, "units_skipped");
    done = lua_tointeger(L, -2);
    skipped = lua_tointeger(L, -1);
    lua_pop(L, 2);
    luax_setint(L, "loaded", done - skipped);
  }
  lua_getfield(L, -1, "elapsed");
  lua_setfield(L, -2, "seconds");
  {
    static const char *const status[] = {"not_run", "equal", "different", "failed"};
    const FlCheckResult *c;
    int i, n = fullload_checks(fl, &c);
    lua_createtable(L, n, 0);
    for (i = 0; i < n; i++) {
      lua_createtable(L, 0, 10);
      luax_setstr(L, "name", c[i].name);
      luax_setstr(L, "status", status[c[i].status]);
      if (c[i].status != FL_CHECK_NOT_RUN) {
        luax_setint(L, "source_rows", c[i].source_rows);
        luax_setint(L, "target_rows", c[i].target_rows);
        luax_setint(L, "missing", c[i].missing);
        luax_setint(L, "extra", c[i].extra);
        luax_setint(L, "changed", c[i].changed);
        luax_setnum(L, "seconds", c[i].seconds);
      }
      if (c[i].error[0] != '\0')
        luax_setstr(L, "error", c[i].error);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "checks");
  }
}

/* }====================================================== */

/*
** {======================================================
** Jobs
** =======================================================
*/

/* The job at argument 1; raises once it was finished or closed. */
static LoadJob *tojob (lua_State *L) {
  LoadJob *j = (LoadJob *)luaL_checkudata(L, 1, LOAD_JOB);
  if (j->fl == NULL)
    luaL_error(L, "attempt to use a finished load");
  return j;
}

/* __gc and __close: a load dropped without finish() is stopped. */
static int job_close (lua_State *L) {
  LoadJob *j = (LoadJob *)luaL_checkudata(L, 1, LOAD_JOB);
  if (j->fl != NULL) {
    char err[ERRLEN];
    FullLoad *fl = j->fl;
    j->fl = NULL;
    if (current == fl)
      current = NULL;
    fullload_cancel(fl);
    fullload_finish(fl, err, sizeof(err), NULL);
  }
  return 0;
}

/*
** The 'after' option: a list of { schema =, table =, statements = {...},
** checks = {...} (optional, same length; "" or false for none),
** groups = {...} (optional integers: same group in order, groups in
** parallel), final = "SQL" (after every group) }.  The
** arrays live in a userdata left on the stack; the strings stay
** anchored by the options table until fullload_start copied them.
*/
static FlAfter *opt_after (lua_State *L, int t, int *n) {
  FlAfter *a;
  lua_Integer i, count;
  *n = 0;
  lua_getfield(L, t, "after");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return NULL;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "option 'after' must be a list of tables");
  count = luaL_len(L, -1);
  a = (FlAfter *)lua_newuserdatauv(L, sizeof(FlAfter) * (size_t)(count + 1), 1);
  memset(a, 0, sizeof(FlAfter) * (size_t)(count + 1));
  /* one more userdata for every pointer array, kept in a table anchored
     as the user value of 'a' */
  lua_createtable(L, (int)count * 3, 0);
  lua_setiuservalue(L, -2, 1);
  for (i = 1; i <= count; i++) {
    int e, k;
    lua_Integer m;
    const char **stmts, **checks;
    int *groups;
    lua_geti(L, -2, i);
    e = lua_gettop(L);
    if (!lua_istable(L, e))
      luaL_error(L, "after[%d] must be a table", (int)i);
    a[i - 1].nspname = luax_opt_string(L, e, "schema", NULL);
    a[i - 1].relname = luax_opt_string(L, e, "table", NULL);
    if (a[i - 1].nspname == NULL || a[i - 1].relname == NULL)
      luaL_error(L, "after[%d] needs schema and table", (int)i);
    lua_getfield(L, e, "statements");
    if (!lua_istable(L, -1))
      luaL_error(L, "after[%d].statements must be a list", (int)i);
    m = luaL_len(L, -1);
    lua_getiuservalue(L, e - 1, 1);                 /* the anchor table */
    stmts = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(m + 1), 0);
    lua_rawseti(L, -2, (lua_Integer)(2 * i - 1));
    checks = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(m + 1), 0);
    lua_rawseti(L, -2, (lua_Integer)(2 * i));
    groups = (int *)lua_newuserdatauv(L, sizeof(int) * (size_t)(m + 1), 0);
    lua_rawseti(L, -2, (lua_Integer)(2 * count + i));
    lua_pop(L, 1);
    for (k = 1; k <= m; k++) {
      lua_geti(L, -1, k);
      if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "after[%d].statements[%d] must be a string", (int)i, k);
      stmts[k - 1] = lua_tostring(L, -1);           /* anchored by the options table */
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_getfield(L, e, "checks");
    for (k = 1; k <= m; k++) {
      checks[k - 1] = NULL;
      if (lua_istable(L, -1)) {
        lua_geti(L, -1, k);
        if (lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) > 0)
          checks[k - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
    lua_getfield(L, e, "groups");
    for (k = 1; k <= m; k++) {
      groups[k - 1] = 0;
      if (lua_istable(L, -1)) {
        lua_geti(L, -1, k);
        groups[k - 1] = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
    a[i - 1].statements = stmts;
    a[i - 1].checks = checks;
    a[i - 1].groups = groups;
    a[i - 1].final = luax_opt_string(L, e, "final", NULL);
    a[i - 1].n = (int)m;
    lua_settop(L, e - 1);
  }
  lua_remove(L, -2);                                /* the option table */
  *n = (int)count;
  return a;
}

/*
** The 'checks' option: a list of { name = "schema.table", tables = {
** { schema =, table = }, ... } }.  The arrays live in userdata left on
** the stack (one anchor); the strings stay anchored by the options table
** until fullload_start copied them.
*/
static FlCheck *opt_checks (lua_State *L, int t, int *n) {
  FlCheck *c;
  lua_Integer i, count;
  *n = 0;
  lua_getfield(L, t, "checks");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushnil(L);
    return NULL;
  }
  if (!lua_istable(L, -1))
    luaL_error(L, "option 'checks' must be a list of tables");
  count = luaL_len(L, -1);
  c = (FlCheck *)lua_newuserdatauv(L, sizeof(FlCheck) * (size_t)(count + 1), 1);
  memset(c, 0, sizeof(FlCheck) * (size_t)(count + 1));
  lua_createtable(L, (int)count * 2, 0);           /* anchors of the name arrays */
  lua_setiuservalue(L, -2, 1);
  for (i = 1; i <= count; i++) {
    int e, k;
    lua_Integer m;
    const char **nsp, **rel;
    lua_geti(L, -2, i);
    e = lua_gettop(L);
    if (!lua_istable(L, e))
      luaL_error(L, "checks[%d] must be a table", (int)i);
    c[i - 1].name = luax_opt_string(L, e, "name", NULL);
    if (c[i - 1].name == NULL)
      luaL_error(L, "checks[%d] needs a name", (int)i);
    lua_getfield(L, e, "tables");
    if (!lua_istable(L, -1))
      luaL_error(L, "checks[%d].tables must be a list", (int)i);
    m = luaL_len(L, -1);
    lua_getiuservalue(L, e - 1, 1);
    nsp = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(m + 1), 0);
    lua_rawseti(L, -2, (lua_Integer)(2 * i - 1));
    rel = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(m + 1), 0);
    lua_rawseti(L, -2, (lua_Integer)(2 * i));
    lua_pop(L, 1);
    for (k = 1; k <= m; k++) {
      int x;
      lua_geti(L, -1, k);
      x = lua_gettop(L);
      if (!lua_istable(L, x))
        luaL_error(L, "checks[%d].tables[%d] must be {schema=, table=}", (int)i, k);
      nsp[k - 1] = luax_opt_string(L, x, "schema", NULL);   /* anchored by the options table */
      rel[k - 1] = luax_opt_string(L, x, "table", NULL);
      if (nsp[k - 1] == NULL || rel[k - 1] == NULL)
        luaL_error(L, "checks[%d].tables[%d] needs schema and table", (int)i, k);
      lua_pop(L, 1);
    }
    c[i - 1].nspnames = nsp;
    c[i - 1].relnames = rel;
    c[i - 1].n = (int)m;
    lua_settop(L, e - 1);
  }
  lua_remove(L, -2);                                /* the option table */
  *n = (int)count;
  return c;
}

/*
** Start a load from the options table at index 1; pushes the job.
** Raises on bad options and when the load cannot start.
*/
static LoadJob *start_job (lua_State *L) {
  FullLoadOptions o;
  FlPlanOptions po;
  FlPlan *plan;
  LoadJob *j;
  char err[ERRLEN];
  int ndone;
  luaL_checktype(L, 1, LUA_TTABLE);
  memset(&o, 0, sizeof(o));
  o.source = luax_opt_string(L, 1, "source", NULL);
  o.target = luax_opt_string(L, 1, "target", NULL);
  if (o.source == NULL || o.target == NULL)
    luaL_error(L, "options 'source' and 'target' are required");
  o.jobs = (int)luax_opt_int(L, 1, "jobs", 0);
  o.snapshot = luax_opt_string(L, 1, "snapshot", NULL);
  o.progress = luax_opt_bool(L, 1, "progress", 1);
  o.log_interval = luax_opt_number(L, 1, "log_interval", 10);
  o.retries = (int)luax_opt_int(L, 1, "retries", 0);
  plan_options(L, 1, &po);                       /* pushes two anchors */
  o.plan = &po;
  o.done = opt_strings(L, 1, "done_units", &ndone);   /* pushes one anchor */
  o.ndone = ndone < 0 ? 0 : ndone;
  o.after = opt_after(L, 1, &o.nafter);               /* pushes one anchor */
  o.after_setup = luax_opt_string(L, 1, "after_setup", NULL);
  o.checks = opt_checks(L, 1, &o.nchecks);            /* pushes one anchor */
  plan = newplanbox(L);
  lua_getfield(L, 1, "units");
  if (!lua_isnil(L, -1)) {
    luaL_checktype(L, -1, LUA_TTABLE);
    units_from_lua(L, lua_gettop(L), plan);
  }
  lua_pop(L, 1);
  j = (LoadJob *)luax_newudata(L, sizeof(LoadJob), 0, LOAD_JOB);   /* closed: fl == NULL */
  interrupt_clear_stop();
  j->fl = fullload_start(plan, &o, err, sizeof(err));   /* plan now empty */
  if (j->fl == NULL)
    load_raise(L, "full_load", err, NULL, interrupt_requested());
  current = j->fl;
  return j;
}

/* load.start{...} -> job: the load runs while Lua reads its events. */
static int load_start (lua_State *L) {
  start_job(L);
  return 1;
}

/* job:next([timeout_seconds=1]) -> unit | nil (timeout) | false (finished) */
static int job_next (lua_State *L) {
  LoadJob *j = tojob(L);
  double timeout = luaL_optnumber(L, 2, 1.0);
  FlEvent ev;
  int rc = fullload_wait(j->fl, (int)(timeout * 1000), &ev);
  if (rc > 0)
    push_unit(L, &fullload_plan_of(j->fl)->units[ev.unit]);
  else if (rc == 0)
    lua_pushnil(L);
  else
    lua_pushboolean(L, 0);
  return 1;
}

/* job:progress() -> progress table. */
static int job_progress (lua_State *L) {
  push_progress(L, tojob(L)->fl);
  return 1;
}

/* job:snapshot() -> the snapshot the workers read. */
static int job_snapshot (lua_State *L) {
  lua_pushstring(L, fullload_snapshot(tojob(L)->fl));
  return 1;
}

/* job:stop(): ask the workers to stop; job:finish() then raises with
   interrupted = true. */
static int job_stop (lua_State *L) {
  fullload_cancel(tojob(L)->fl);
  return 0;
}

/*
** job:finish() -> summary.  Waits for the workers; raises when a unit
** failed, or with interrupted = true when the load was stopped.
*/
static int job_finish (lua_State *L) {
  LoadJob *j = tojob(L);
  FullLoad *fl = j->fl;
  FlEvent ev;
  char err[ERRLEN], sqlstate[6];
  int rc;
  while (fullload_wait(fl, 1000, &ev) >= 0)
    ;                                             /* unread events are dropped */
  push_summary(L, fl);
  j->fl = NULL;
  if (current == fl)
    current = NULL;
  rc = fullload_finish(fl, err, sizeof(err), sqlstate);
  if (rc < 0)
    return load_raise(L, "full_load", err, sqlstate, 0);
  if (rc > 0)
    return load_raise(L, "full_load", err, NULL, 1);
  return 1;
}

/* Call the function at index f with the value on top; on error, stop
   the load, finish it and re-raise the error unchanged. */
static void call_back (lua_State *L, LoadJob *j, int f) {
  lua_pushvalue(L, f);
  lua_insert(L, -2);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    char err[ERRLEN];
    FullLoad *fl = j->fl;
    j->fl = NULL;
    current = NULL;
    fullload_cancel(fl);
    fullload_finish(fl, err, sizeof(err), NULL);
    lua_error(L);
  }
}

/* load.full_load{...} -> summary (see the header comment). */
static int load_full_load (lua_State *L) {
  LoadJob *j;
  int on_unit, on_progress, jobidx;
  double interval, last;
  FlEvent ev;
  int rc;
  luaL_checktype(L, 1, LUA_TTABLE);
  on_unit = luax_opt_function(L, 1, "on_unit_done");
  on_progress = luax_opt_function(L, 1, "on_progress");
  interval = luax_opt_number(L, 1, "progress_interval", 1.0);
  j = start_job(L);
  jobidx = lua_gettop(L);
  last = mono();
  while ((rc = fullload_wait(j->fl, 250, &ev)) >= 0) {
    if (rc > 0 && on_unit) {
      push_unit(L, &fullload_plan_of(j->fl)->units[ev.unit]);
      call_back(L, j, on_unit);
    }
    if (on_progress && mono() - last >= interval) {
      last = mono();
      push_progress(L, j->fl);
      call_back(L, j, on_progress);
    }
  }
  lua_settop(L, jobidx);
  lua_pushcfunction(L, job_finish);
  lua_insert(L, -2);
  lua_call(L, 1, 1);
  return 1;
}

/* load.plan{source=, ...} -> units (planned in a fresh snapshot) */
static int load_plan (lua_State *L) {
  FlPlanOptions po;
  FlPlan *plan;
  char err[ERRLEN];
  const char *source;
  int i;
  luaL_checktype(L, 1, LUA_TTABLE);
  source = luax_opt_string(L, 1, "source", NULL);
  if (source == NULL)
    luaL_error(L, "option 'source' is required");
  plan_options(L, 1, &po);
  po.target_version = (int)luax_opt_int(L, 1, "target_version", 0);
  plan = newplanbox(L);
  if (fullload_plan_conninfo(source, &po, plan, err, sizeof(err)) < 0)
    return load_raise(L, "plan", err, NULL, 0);
  lua_createtable(L, plan->n, 0);
  for (i = 0; i < plan->n; i++) {
    push_unit(L, &plan->units[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* load.progress() -> progress of the load full_load is driving, or
   nothing. */
static int load_progress (lua_State *L) {
  if (current == NULL)
    return 0;
  push_progress(L, current);
  return 1;
}

/* load.request_stop(): stop the running load (as on SIGINT). */
static int load_request_stop (lua_State *L) {
  (void)L;
  interrupt_request_stop();
  return 0;
}

/* load.ncpus() -> number of online CPUs. */
static int load_ncpus (lua_State *L) {
  lua_pushinteger(L, cpu_count());
  return 1;
}

/* }====================================================== */

/*
** {======================================================
** Parallel statements
** =======================================================
*/

/* __gc of the statements box: a count, then SqlTasks whose results
   (error texts) sql_parallel_run allocated. */
static int tasks_gc (lua_State *L) {
  lua_Integer *box = (lua_Integer *)lua_touserdata(L, 1);
  sql_tasks_free((SqlTask *)(box + 1), (int)box[0]);
  return 0;
}

/* load.run_parallel{target=, statements=, jobs=, settings=, what=,
   stop_on_error=, progress=} -> {ok=, failed={{index, sql, message,
   sqlstate}}, seconds=}; raises when no connection opens or when
   interrupted. */
static int load_run_parallel (lua_State *L) {
  SqlParallelOptions o;
  SqlTask *tasks;
  lua_Integer *box;
  lua_Integer i, n;
  Buf setup = BUF_INIT;
  char err[ERRLEN];
  double t0 = mono();
  int rc, ok = 0, nfailed = 0;
  luaL_checktype(L, 1, LUA_TTABLE);
  memset(&o, 0, sizeof(o));
  o.conninfo = luax_opt_string(L, 1, "target", NULL);
  if (o.conninfo == NULL)
    luaL_error(L, "option 'target' is required");
  o.label = luax_opt_string(L, 1, "label", "target");
  o.what = luax_opt_string(L, 1, "what", "post-data");
  o.jobs = (int)luax_opt_int(L, 1, "jobs", 0);
  o.stop_on_error = luax_opt_bool(L, 1, "stop_on_error", 0);
  o.progress = luax_opt_bool(L, 1, "progress", 1);
  lua_getfield(L, 1, "statements");
  luaL_argexpected(L, lua_istable(L, -1), 1, "statements list");
  n = luaL_len(L, -1);
  box = (lua_Integer *)lua_newuserdatauv(L, sizeof(lua_Integer) + sizeof(SqlTask) * (size_t)(n + 1), 0);
  box[0] = 0;
  tasks = (SqlTask *)(box + 1);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, tasks_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  for (i = 1; i <= n; i++) {
    lua_geti(L, -2, i);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "statements[%d] must be a string", (int)i);
    memset(&tasks[i - 1], 0, sizeof(SqlTask));
    tasks[i - 1].sql = lua_tostring(L, -1);     /* anchored by the statements table */
    lua_pop(L, 1);
  }
  box[0] = n;
  buf_puts(&setup, "SET statement_timeout = 0; SET lock_timeout = 0;"
                   " SET idle_in_transaction_session_timeout = 0;");
  lua_getfield(L, 1, "settings");
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      const char *k = lua_tostring(L, -2), *v = luaL_tolstring(L, -1, NULL);
      if (lua_type(L, -3) != LUA_TSTRING)
        luaL_error(L, "settings keys must be strings");
      buf_puts(&setup, " SELECT set_config(");
      pgsql_quote_literal(&setup, k);
      buf_puts(&setup, ", ");
      pgsql_quote_literal(&setup, v);
      buf_puts(&setup, ", false);");
      lua_pop(L, 2);                /* the string form and the value */
    }
  }
  lua_pop(L, 1);
  {
    const char *extra = luax_opt_string(L, 1, "setup", NULL);   /* e.g. pg_dump's session settings */
    if (extra != NULL) {
      buf_putc(&setup, ' ');
      buf_puts(&setup, extra);
    }
  }
  o.setup_sql = buf_cstr(&setup);
  rc = sql_parallel_run(&o, tasks, (int)n, err, sizeof(err));
  buf_free(&setup);
  if (rc == -2)
    return load_raise(L, "run_parallel", err, NULL, 0);
  if (rc == 1)
    return load_raise(L, "run_parallel", err, NULL, 1);
  lua_createtable(L, 0, 4);
  lua_createtable(L, 0, 0);
  for (i = 0; i < n; i++) {
    if (tasks[i].status == 1) {
      ok++;
    } else if (tasks[i].status < 0) {
      lua_createtable(L, 0, 4);
      luax_setint(L, "index", i + 1);
      luax_setstr(L, "sql", tasks[i].sql);
      luax_setstr(L, "message", tasks[i].error ? tasks[i].error : "");
      luax_setstr(L, "sqlstate", tasks[i].sqlstate);
      lua_rawseti(L, -2, ++nfailed);
    }
  }
  lua_setfield(L, -2, "failed");
  luax_setint(L, "ok", ok);
  luax_setint(L, "skipped", n - ok - nfailed);
  luax_setnum(L, "seconds", mono() - t0);
  return 1;
}

/* }====================================================== */

static const luaL_Reg load_funcs[] = {
  {"plan", load_plan},
  {"full_load", load_full_load},
  {"start", load_start},
  {"run_parallel", load_run_parallel},
  {"progress", load_progress},
  {"request_stop", load_request_stop},
  {"ncpus", load_ncpus},
  {NULL, NULL}
};

static const luaL_Reg job_methods[] = {
  {"next", job_next},
  {"progress", job_progress},
  {"snapshot", job_snapshot},
  {"stop", job_stop},
  {"finish", job_finish},
  {"close", job_close},
  {NULL, NULL}
};

static const luaL_Reg job_metameth[] = {
  {"__index", NULL},  /* becomes job_methods (luax_createmeta) */
  {"__gc", job_close},
  {"__close", job_close},
  {NULL, NULL}
};

/* Open the module: the job, plan and error metatables, then the
   function table. */
int luaopen_core_load (lua_State *L) {
  static const luaL_Reg plan_metameth[] = {{"__gc", plan_gc}, {NULL, NULL}};
  luax_createmeta(L, LOAD_JOB, job_metameth, job_methods);
  luax_createmeta(L, LOAD_PLAN, plan_metameth, NULL);
  luax_error_meta(L, LOAD_ERROR, &error_style);
  luaL_newlib(L, load_funcs);
  return 1;
}
