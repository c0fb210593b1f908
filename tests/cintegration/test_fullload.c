/*
** test_fullload.c
** The COPY relay and the full-load engine (src/load) against a real
** PostgreSQL 15 cluster: one throwaway cluster with a source and a
** target database.  Pure helpers (range predicates, tags) need no server.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "pgcluster.h"

#include "load/copy_relay.h"
#include "load/fullload.h"
#include "pg/pgconn.h"
#include "util/buf.h"
#include "util/interrupt.h"
#include "util/log.h"

static TestCluster cluster;
static char src_ci[600], dst_ci[600];
static int have_cluster;

int count_units_in_db(void);

/* {====================================================== helpers */

static PGconn *connect_to (const char *ci) {
  char err[PGCONN_ERRLEN];
  PGconn *c = pgconn_open(ci, "test", PGCONN_NORMAL, err, sizeof(err));
  if (c == NULL)
    fprintf(stderr, "connect: %s\n", err);
  return c;
}

/* Run SQL; returns the first value of the last result (caller frees) or
   NULL; fails the current test on an error. */
static char *sql1 (const char *ci, const char *sql) {
  PGconn *c = connect_to(ci);
  PGresult *res;
  char *v = NULL;
  if (c == NULL) {
    test_failed_checks++;
    return NULL;
  }
  res = PQexec(c, sql);
  if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
    fprintf(stderr, "sql failed: %s: %s", sql, PQerrorMessage(c));
    test_failed_checks++;
  } else if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0) {
    v = xstrdup(PQgetvalue(res, 0, 0));
  }
  PQclear(res);
  PQfinish(c);
  return v;
}

static void sql0 (const char *ci, const char *sql) {
  free(sql1(ci, sql));
}

/* md5 of every row of a table in a stable order (the whole row as text). */
static char *table_md5 (const char *ci, const char *table) {
  char q[512];
  snprintf(q, sizeof(q),
           "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '')"
           " FROM %s t", table);
  return sql1(ci, q);
}

static int same_table (const char *table) {
  char *a = table_md5(src_ci, table), *b = table_md5(dst_ci, table);
  int same = a != NULL && b != NULL && strcmp(a, b) == 0;
  if (!same)
    fprintf(stderr, "%s differs: source %s, target %s\n", table, a ? a : "?", b ? b : "?");
  free(a);
  free(b);
  return same;
}

/* One cluster (pgcluster.h) with the databases src and dst; 1 when up. */
static int start_cluster (void) {
  if (tc_start(&cluster, "fullload-unit", NULL) != 0)
    return 0;
  snprintf(src_ci, sizeof(src_ci), "%s dbname=src", cluster.conninfo);
  snprintf(dst_ci, sizeof(dst_ci), "%s dbname=dst", cluster.conninfo);
  sql0(cluster.conninfo, "CREATE DATABASE src");
  sql0(cluster.conninfo, "CREATE DATABASE dst");
  return 1;
}

static void stop_cluster (void) {
  tc_stop(&cluster);
}

/* Create the same DDL on both databases. */
static void both (const char *ddl) {
  sql0(src_ci, ddl);
  sql0(dst_ci, ddl);
}

static int stop_after_rows (void *arg) {
  CopyCounters *c = arg;
  return c->rows > 1000;
}

/* }====================================================== */

static void tag_rows_parse (void) {
  CHECK_INT(copy_tag_rows("42"), 42);
  CHECK_INT(copy_tag_rows("0"), 0);
  CHECK_INT(copy_tag_rows(""), -1);
  CHECK_INT(copy_tag_rows(NULL), -1);
  CHECK_INT(copy_tag_rows("12345678901"), 12345678901LL);
  CHECK(copy_binary_versions_ok(150004, 150002));
  CHECK(!copy_binary_versions_ok(140010, 150002));
}

static void key_ranges_cover_the_domain (void) {
  const char *b[] = {"'10'::bigint", "'20'::bigint"};
  char *w;
  w = fullload_keyrange_where("\"id\"", b, 3, 0);
  CHECK_STR(w, "\"id\" < '10'::bigint");
  free(w);
  w = fullload_keyrange_where("\"id\"", b, 3, 1);
  CHECK_STR(w, "\"id\" >= '10'::bigint AND \"id\" < '20'::bigint");
  free(w);
  w = fullload_keyrange_where("\"id\"", b, 3, 2);
  CHECK_STR(w, "\"id\" >= '20'::bigint");
  free(w);
}

static void ctid_ranges_cover_every_block (void) {
  char *w;
  w = fullload_ctidrange_where(100, 3, 0);
  CHECK_STR(w, "ctid < '(33,0)'::tid");
  free(w);
  w = fullload_ctidrange_where(100, 3, 1);
  CHECK_STR(w, "ctid >= '(33,0)'::tid AND ctid < '(66,0)'::tid");
  free(w);
  w = fullload_ctidrange_where(100, 3, 2);   /* open-ended: rows past the planned size too */
  CHECK_STR(w, "ctid >= '(66,0)'::tid");
  free(w);
}

static void plan_sorts_largest_first (void) {
  FlPlan p = {0};
  fullload_plan_add(&p, "a", "s", "a", "x", NULL, FL_WHOLE, 1, 1, 1, 10, 1);
  fullload_plan_add(&p, "b", "s", "b", "x", NULL, FL_WHOLE, 1, 1, 1, 300, 1);
  fullload_plan_add(&p, "c", "s", "c", "x", NULL, FL_WHOLE, 1, 1, 1, 20, 1);
  fullload_plan_sort(&p);
  CHECK_STR(p.units[0].id, "b");
  CHECK_STR(p.units[1].id, "c");
  CHECK_STR(p.units[2].id, "a");
  fullload_plan_free(&p);
  CHECK_INT(p.n, 0);
}

static void format_bytes_units (void) {
  char b[32];
  fullload_format_bytes(512, b, sizeof(b));
  CHECK_STR(b, "512 B");
  fullload_format_bytes(1536, b, sizeof(b));
  CHECK_STR(b, "1.5 kB");
  fullload_format_bytes((int64_t)3 << 30, b, sizeof(b));
  CHECK_STR(b, "3.0 GB");
}

/* Every escape-worthy byte and a few tricky values survive both formats. */
static void relay_is_exact_in_both_formats (void) {
  static const char *formats[] = {"binary", "text"};
  int f;
  if (!have_cluster)
    SKIP("no PostgreSQL cluster (tests/lib/pgcluster.sh start failed)");
  both("CREATE TABLE relay_t (id int, t text, b bytea, n numeric, ts timestamptz, j jsonb, a int[])");
  sql0(src_ci,
       "INSERT INTO relay_t SELECT g, CASE WHEN g % 7 = 0 THEN NULL WHEN g % 7 = 1 THEN '' ELSE"
       " 'x' || chr(9) || chr(10) || chr(13) || '\\' || chr(92) || 'N' || repeat('é', g % 5) END,"
       " decode(lpad(to_hex(g % 256), 2, '0'), 'hex'), CASE WHEN g % 3 = 0 THEN 'NaN' ELSE g / 7.0 END,"
       " CASE WHEN g = 5 THEN 'infinity' ELSE '2020-01-01'::timestamptz + g * interval '1 hour' END,"
       " jsonb_build_object('g', g, 's', E'q\"\\\\'), ARRAY[g, NULL, -g] FROM generate_series(1, 5000) g");
  for (f = 0; f < 2; f++) {
    PGconn *s = connect_to(src_ci), *d = connect_to(dst_ci);
    CopyCounters c = {0, 0};
    CopyRelayResult r;
    char err[1024], out_sql[256], in_sql[256];
    CopyRelayStatus st;
    sql0(dst_ci, "TRUNCATE relay_t");
    snprintf(out_sql, sizeof(out_sql), "COPY relay_t TO STDOUT (FORMAT %s)", formats[f]);
    snprintf(in_sql, sizeof(in_sql), "COPY relay_t FROM STDIN (FORMAT %s)", formats[f]);
    st = copy_relay(s, d, out_sql, in_sql, &c, NULL, NULL, &r, err, sizeof(err));
    if (st != COPY_RELAY_OK)
      fprintf(stderr, "relay (%s): %s\n", formats[f], err);
    CHECK_INT(st, COPY_RELAY_OK);
    CHECK_INT(r.rows_out, 5000);
    CHECK_INT(r.rows_in, 5000);
    CHECK(r.bytes > 0);
    CHECK_INT(c.bytes, r.bytes);
    CHECK(c.rows >= 5000);
    CHECK(same_table("relay_t"));
    PQfinish(s);
    PQfinish(d);
  }
}

/* A failing side is named, the other side's COPY is abandoned, and both
   connections stay usable. */
static void relay_reports_the_failing_side (void) {
  PGconn *s, *d;
  CopyRelayResult r;
  char err[1024];
  PGresult *res;
  if (!have_cluster)
    SKIP("no PostgreSQL cluster");
  s = connect_to(src_ci);
  d = connect_to(dst_ci);
  CHECK_INT(copy_relay(s, d, "COPY no_such_table TO STDOUT", "COPY relay_t FROM STDIN", NULL, NULL,
                       NULL, &r, err, sizeof(err)), COPY_RELAY_ERROR);
  CHECK_INT(r.failed_side, 1);
  CHECK_STR(r.sqlstate, "42P01");
  CHECK(strstr(err, "source") != NULL && strstr(err, "no_such_table") != NULL);
  CHECK_INT(copy_relay(s, d, "COPY relay_t TO STDOUT", "COPY no_such_table FROM STDIN", NULL, NULL,
                       NULL, &r, err, sizeof(err)), COPY_RELAY_ERROR);
  CHECK_INT(r.failed_side, 2);
  CHECK(strstr(err, "target") != NULL);
  /* type mismatch discovered mid-stream on the target */
  sql0(dst_ci, "CREATE TABLE relay_bad (id int, t int, b bytea, n numeric, ts timestamptz, j jsonb, a int[])");
  CHECK_INT(copy_relay(s, d, "COPY relay_t TO STDOUT", "COPY relay_bad FROM STDIN", NULL, NULL,
                       NULL, &r, err, sizeof(err)), COPY_RELAY_ERROR);
  CHECK_INT(r.failed_side, 2);
  CHECK_STR(r.sqlstate, "22P02");
  res = PQexec(s, "SELECT 1");
  CHECK_INT(PQresultStatus(res), PGRES_TUPLES_OK);
  PQclear(res);
  res = PQexec(d, "SELECT count(*) FROM relay_bad");
  CHECK_INT(PQresultStatus(res), PGRES_TUPLES_OK);
  CHECK_STR(PQgetvalue(res, 0, 0), "0");
  PQclear(res);
  PQfinish(s);
  PQfinish(d);
}

static void relay_stops_on_request (void) {
  PGconn *s, *d;
  CopyCounters c = {0, 0};
  CopyRelayResult r;
  char err[1024];
  char *n;
  if (!have_cluster)
    SKIP("no PostgreSQL cluster");
  s = connect_to(src_ci);
  d = connect_to(dst_ci);
  sql0(dst_ci, "TRUNCATE relay_t");
  CHECK_INT(copy_relay(s, d, "COPY relay_t TO STDOUT", "COPY relay_t FROM STDIN", &c,
                       stop_after_rows, &c, &r, err, sizeof(err)), COPY_RELAY_STOPPED);
  CHECK(PQstatus(s) == CONNECTION_OK && PQstatus(d) == CONNECTION_OK);
  n = sql1(dst_ci, "SELECT count(*) FROM relay_t");
  CHECK_STR(n, "0");
  free(n);
  PQfinish(s);
  PQfinish(d);
}

/* The schema used by the engine tests. */
static void make_engine_schema (void) {
  both("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')");
  both("CREATE TYPE pair AS (a int, b text)");
  both("CREATE TABLE big (id bigint PRIMARY KEY, v text, g int GENERATED ALWAYS AS (length(v)) STORED)");
  both("CREATE TABLE heap (a int, b text)");                       /* no key: CTID ranges */
  both("CREATE TABLE skey (k text PRIMARY KEY, n int)");            /* text key: C collation */
  both("CREATE TABLE small (id int PRIMARY KEY, m mood, p pair, r regclass)");
  both("CREATE TABLE parted (id int, at date, v text) PARTITION BY RANGE (at)");
  both("CREATE TABLE parted_a PARTITION OF parted FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')");
  both("CREATE TABLE parted_b PARTITION OF parted FOR VALUES FROM ('2021-01-01') TO ('2022-01-01')");
  sql0(src_ci, "INSERT INTO big (id, v) SELECT g * 3, repeat(md5(g::text), 4) FROM generate_series(1, 60000) g");
  sql0(src_ci, "INSERT INTO heap SELECT g, repeat('h', 200) FROM generate_series(1, 30000) g");
  sql0(src_ci, "INSERT INTO skey SELECT 'k' || md5(g::text) || (CASE WHEN g % 2 = 0 THEN 'Z' ELSE 'a' END), g"
               " FROM generate_series(1, 40000) g");
  sql0(src_ci, "INSERT INTO small VALUES (1, 'ok', ROW(1, 'x'), 'pg_class'), (2, NULL, NULL, 'big')");
  sql0(src_ci, "INSERT INTO parted SELECT g, date '2020-01-01' + (g % 700), 'v' || g FROM generate_series(1, 3000) g");
  sql0(src_ci, "ANALYZE big");                                     /* skey has no statistics: sampled */
}

static FlUnit *find_unit (const FlPlan *p, const char *id) {
  int i;
  for (i = 0; i < p->n; i++)
    if (strcmp(p->units[i].id, id) == 0)
      return &p->units[i];
  return NULL;
}

static int count_units (const FlPlan *p, const char *relname) {
  int i, n = 0;
  for (i = 0; i < p->n; i++)
    n += strcmp(p->units[i].relname, relname) == 0;
  return n;
}

static void plan_splits_and_excludes (void) {
  PGconn *s;
  FlPlan plan;
  FlPlanOptions po;
  char err[1024];
  FlUnit *u;
  const char *only[] = {"public.parted", "public.small"};
  if (!have_cluster)
    SKIP("no PostgreSQL cluster");
  make_engine_schema();
  s = connect_to(src_ci);
  memset(&po, 0, sizeof(po));
  po.split_threshold = 1 << 20;
  po.max_parts = 4;
  po.target_version = PQserverVersion(s);
  CHECK_INT(fullload_plan(s, &po, &plan, err, sizeof(err)), 0);
  if (getenv("FL_DEBUG") != NULL) {
    int i;
    for (i = 0; i < plan.n; i++)
      fprintf(stderr, "unit %s bytes=%lld where=%s\n", plan.units[i].id,
              (long long)plan.units[i].est_bytes, plan.units[i].where ? plan.units[i].where : "-");
  }
  CHECK_INT(count_units(&plan, "big"), 4);
  u = find_unit(&plan, "public.big[1/4]");
  CHECK(u != NULL && u->kind == FL_KEYRANGE && u->binary);
  if (u != NULL) {
    CHECK_STR(u->columns, "id, v");                                /* generated column left out */
    CHECK(strstr(u->where, "\"id\" <") == u->where || strncmp(u->where, "id <", 4) == 0);
  }
  CHECK_INT(count_units(&plan, "heap"), 4);
  u = find_unit(&plan, "public.heap[4/4]");
  CHECK(u != NULL && u->kind == FL_CTIDRANGE);
  CHECK(count_units(&plan, "skey") >= 2);
  u = find_unit(&plan, "public.skey[1/3]");                          /* 2.7 MB: 3 parts */
  CHECK(u != NULL && u->kind == FL_KEYRANGE && strstr(u->where, "COLLATE \"C\"") != NULL);
  u = find_unit(&plan, "public.small");
  CHECK(u != NULL && u->kind == FL_WHOLE && !u->binary);           /* composite and regclass: text */
  CHECK(find_unit(&plan, "public.parted") == NULL);                /* leaves only */
  CHECK(find_unit(&plan, "public.parted_a") != NULL);
  CHECK(plan.units[0].est_bytes >= plan.units[plan.n - 1].est_bytes);
  fullload_plan_free(&plan);

  po.tables = only;
  po.ntables = 2;
  CHECK_INT(fullload_plan(s, &po, &plan, err, sizeof(err)), 0);
  CHECK_INT(plan.n, 3);                                             /* parted_a, parted_b, small */
  fullload_plan_free(&plan);
  po.tables = NULL;
  po.exclude = only;
  po.nexclude = 2;
  CHECK_INT(fullload_plan(s, &po, &plan, err, sizeof(err)), 0);
  CHECK(find_unit(&plan, "public.small") == NULL && find_unit(&plan, "public.parted_b") == NULL);
  CHECK(find_unit(&plan, "public.heap[1/4]") != NULL);
  fullload_plan_free(&plan);
  po.exclude = NULL;
  po.split_threshold = 8 << 20;                                     /* big is about 10 MB */
  po.jobs = 3;
  CHECK_INT(fullload_plan(s, &po, &plan, err, sizeof(err)), 0);
  CHECK_INT(count_units(&plan, "big"), 3);                          /* ceil(10/8) = 2, raised to jobs */
  CHECK_INT(count_units(&plan, "heap"), 1);                         /* under the threshold: whole */
  fullload_plan_free(&plan);
  po.split_threshold = 1 << 20;
  po.jobs = 0;
  po.format = 1;
  CHECK_INT(fullload_plan(s, &po, &plan, err, sizeof(err)), 0);
  u = find_unit(&plan, "public.big[2/4]");
  CHECK(u != NULL && !u->binary);
  fullload_plan_free(&plan);
  PQfinish(s);
}

/* Run a whole load; returns fullload_finish's code and counts events. */
static int run_load (const char *const *done, int ndone, int *events, int stop_after) {
  FlPlanOptions po;
  FullLoadOptions o;
  FullLoad *fl;
  FlEvent ev;
  char err[1024];
  int rc, n = 0;
  memset(&po, 0, sizeof(po));
  po.split_threshold = 1 << 20;
  po.max_parts = 4;
  memset(&o, 0, sizeof(o));
  o.source = src_ci;
  o.target = dst_ci;
  o.jobs = 3;
  o.done = done;
  o.ndone = ndone;
  o.plan = &po;
  fl = fullload_start(NULL, &o, err, sizeof(err));
  if (fl == NULL) {
    fprintf(stderr, "start: %s\n", err);
    return -2;
  }
  while ((rc = fullload_wait(fl, 1000, &ev)) >= 0) {
    if (rc == 1) {
      const FlUnit *u = &fullload_plan_of(fl)->units[ev.unit];
      CHECK(u->state == FL_DONE);
      n++;
      if (stop_after > 0 && n == stop_after)
        interrupt_request_stop();
    }
  }
  rc = fullload_finish(fl, err, sizeof(err), NULL);
  if (rc != 0)
    fprintf(stderr, "finish: %s\n", err);
  interrupt_clear_stop();
  *events = n;
  return rc;
}

static int all_tables_equal (void) {
  return same_table("big") & same_table("heap") & same_table("skey") & same_table("small") &
         same_table("parted");
}

static void load_copies_everything (void) {
  int events;
  if (!have_cluster)
    SKIP("no PostgreSQL cluster");
  sql0(dst_ci, "INSERT INTO small VALUES (99, 'sad', NULL, NULL)");   /* stale row: truncated */
  CHECK_INT(run_load(NULL, 0, &events, 0), 0);
  CHECK_INT(events, count_units_in_db());
  CHECK(all_tables_equal());
}

/* A resume: some units done, one range "in flight" already committed
   (its rows are on the target but it is not in the done list). */
static void resume_skips_done_units_without_duplicates (void) {
  const char *done[] = {"public.big[1/4]", "public.big[2/4]", "public.heap[1/4]", "public.small"};
  int events;
  char *n;
  if (!have_cluster)
    SKIP("no PostgreSQL cluster");
  /* after the first load the target is complete: big[3/4] counts as in
     flight (committed, not recorded), heap is partly done (CTID: redone
     whole), small is done (kept as is even if changed) */
  sql0(dst_ci, "UPDATE small SET m = 'happy' WHERE id = 1");
  CHECK_INT(run_load(done, 4, &events, 0), 0);
  CHECK_INT(events, count_units_in_db() - 3);   /* 4 done, heap[1/4] redone */
  CHECK(same_table("big"));
  CHECK(same_table("heap"));
  CHECK(same_table("parted"));
  n = sql1(dst_ci, "SELECT m FROM small WHERE id = 1");
  CHECK_STR(n, "happy");                                            /* skipped, not reloaded */
  free(n);
  n = sql1(dst_ci, "SELECT count(*) - count(DISTINCT id) FROM big");
  CHECK_STR(n, "0");
  free(n);
}

/* The check result named 'name' of a finished load's results. */
static const FlCheckResult *check_named (const FlCheckResult *c, int n, const char *name) {
  int i;
  for (i = 0; i < n; i++)
    if (strcmp(c[i].name, name) == 0)
      return &c[i];
  return NULL;
}

/*
** Tables verified as they finish, under the load's snapshot: the source
** changes after the snapshot (a fresh comparison would differ) yet every
** loaded table is equal; a row changed on the target by a table's own
** post-load statement (before its check) is found; a partitioned table
** is checked whole once both leaves are in; a table loaded before a
** restart (some units done) is left to the caller.
*/
static void checks_verify_under_the_load_snapshot (void) {
  static const char *const nsp1[] = {"public"}, *const big[] = {"big"}, *const heap[] = {"heap"},
    *const skey[] = {"skey"}, *const small[] = {"small"};
  static const char *const nsp2[] = {"public", "public"}, *const parted[] = {"parted_a", "parted_b"};
  static const char *const corrupt[] = {"UPDATE skey SET n = -1 WHERE k = (SELECT min(k) FROM skey)"};
  const FlCheck checks[] = {
    {"public.big", nsp1, big, 1}, {"public.heap", nsp1, heap, 1}, {"public.skey", nsp1, skey, 1},
    {"public.small", nsp1, small, 1}, {"\"public\".\"parted\"", nsp2, parted, 2},
  };
  const FlAfter after[] = {{"public", "skey", corrupt, NULL, NULL, 1, NULL}};
  const char *done[] = {"public.small"};
  const FlCheckResult *res, *c;
  FlPlanOptions po;
  FullLoadOptions o;
  FullLoad *fl;
  FlEvent ev;
  PGconn *holder;
  PGresult *r;
  char err[1024], snap[80];
  int n;
  if (!have_cluster)
    SKIP("no PostgreSQL cluster");
  holder = connect_to(src_ci);
  r = PQexec(holder, "BEGIN ISOLATION LEVEL REPEATABLE READ");
  PQclear(r);
  r = PQexec(holder, "SELECT pg_export_snapshot()");
  CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
  snprintf(snap, sizeof(snap), "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  /* after the snapshot: the load and its checks must not see these */
  sql0(src_ci, "UPDATE big SET v = v || '!' WHERE id % 7 = 0");
  sql0(src_ci, "INSERT INTO parted VALUES (99999, '2021-06-01', 'late')");
  sql0(src_ci, "DELETE FROM heap WHERE a < 100");
  memset(&po, 0, sizeof(po));
  po.split_threshold = 1 << 20;
  po.max_parts = 4;
  memset(&o, 0, sizeof(o));
  o.source = src_ci;
  o.target = dst_ci;
  o.jobs = 2;
  o.plan = &po;
  o.snapshot = snap;
  o.done = done;
  o.ndone = 1;
  o.after = after;
  o.nafter = 1;
  o.checks = checks;
  o.nchecks = 5;
  fl = fullload_start(NULL, &o, err, sizeof(err));
  CHECK(fl != NULL);
  if (fl == NULL) {
    fprintf(stderr, "start: %s\n", err);
    PQfinish(holder);
    return;
  }
  while (fullload_wait(fl, 1000, &ev) >= 0)
    ;
  n = fullload_checks(fl, &res);
  CHECK_INT(n, 5);
  c = check_named(res, n, "public.big");
  CHECK(c != NULL && c->status == FL_CHECK_EQUAL && c->source_rows == 60000 && c->target_rows == 60000);
  c = check_named(res, n, "public.heap");
  CHECK(c != NULL && c->status == FL_CHECK_EQUAL && c->source_rows == 30000);
  c = check_named(res, n, "\"public\".\"parted\"");
  CHECK(c != NULL && c->status == FL_CHECK_EQUAL && c->source_rows == 3000);
  c = check_named(res, n, "public.skey");                          /* changed on the target */
  CHECK(c != NULL && c->status == FL_CHECK_DIFFERENT && c->changed == 1);
  c = check_named(res, n, "public.small");                         /* loaded before: not run */
  CHECK(c != NULL && c->status == FL_CHECK_NOT_RUN);
  CHECK_INT(fullload_finish(fl, err, sizeof(err), NULL), 0);
  PQfinish(holder);
  /* a fresh comparison would see the changes made after the snapshot */
  CHECK(!same_table("big"));
}

static void stop_request_leaves_units_pending (void) {
  int events, rc;
  if (!have_cluster)
    SKIP("no PostgreSQL cluster");
  rc = run_load(NULL, 0, &events, 1);
  CHECK(rc == 1 || rc == 0);                 /* a fast machine may finish first */
  CHECK(events >= 1);
}

static void wrong_password_is_explained (void) {
  FullLoadOptions o;
  char err[1024], ci[700];
  if (!have_cluster)
    SKIP("no PostgreSQL cluster");
  memset(&o, 0, sizeof(o));
  snprintf(ci, sizeof(ci), "%s password=wrong-password-123 passfile=/dev/null", dst_ci);
  o.source = src_ci;
  o.target = ci;
  CHECK(fullload_start(NULL, &o, err, sizeof(err)) == NULL);
  CHECK(strstr(err, "target") != NULL && strstr(err, "password") != NULL);
  CHECK(strstr(err, "wrong-password-123") == NULL);
  snprintf(ci, sizeof(ci), "host=127.0.0.1 port=1 dbname=x connect_timeout=2");
  o.target = ci;
  CHECK(fullload_start(NULL, &o, err, sizeof(err)) == NULL);
  CHECK(strstr(err, "not reachable") != NULL);
}

/* The number of units a fresh plan has. */
int count_units_in_db (void) {
  PGconn *s = connect_to(src_ci);
  FlPlan plan;
  FlPlanOptions po;
  char err[256];
  int n;
  memset(&po, 0, sizeof(po));
  po.split_threshold = 1 << 20;
  po.max_parts = 4;
  if (s == NULL || fullload_plan(s, &po, &plan, err, sizeof(err)) < 0)
    return -1;
  n = plan.n;
  fullload_plan_free(&plan);
  PQfinish(s);
  return n;
}

int main (void) {
  log_set_level(LOG_WARN);
  RUN_TEST(tag_rows_parse);
  RUN_TEST(key_ranges_cover_the_domain);
  RUN_TEST(ctid_ranges_cover_every_block);
  RUN_TEST(plan_sorts_largest_first);
  RUN_TEST(format_bytes_units);
  have_cluster = start_cluster();
  RUN_TEST(relay_is_exact_in_both_formats);
  RUN_TEST(relay_reports_the_failing_side);
  RUN_TEST(relay_stops_on_request);
  RUN_TEST(plan_splits_and_excludes);
  RUN_TEST(load_copies_everything);
  RUN_TEST(resume_skips_done_units_without_duplicates);
  RUN_TEST(checks_verify_under_the_load_snapshot);
  RUN_TEST(stop_request_leaves_units_pending);
  RUN_TEST(wrong_password_is_explained);
  stop_cluster();
  return TEST_SUMMARY();
}
