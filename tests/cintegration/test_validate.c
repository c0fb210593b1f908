/*
** test_validate.c
** The validation core (src/validate/validate.c): pure helpers, then real
** PostgreSQL 15 clusters (tests/lib/pgcluster.sh): equal databases, one
** injected difference of each kind, multiset tables, the consistent
** point under a live write load with a stand-in change applier that
** really pauses at the LSN (commit positions from pg_walinspect), and
** the re-check mode.
*/
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "test.h"
#include "pgcluster.h"
#include "cdc/stream.h"
#include "pg/pgconn.h"
#include "pg/pgsql.h"
#include "util/buf.h"
#include "util/log.h"
#include "validate/validate.h"

/* {======================================================================
** Pure helpers
** ======================================================================= */

static void parse_name_forms (void) {
  char *s, *n;
  CHECK_INT(validate_parse_name("orders", &s, &n), 0);
  CHECK_STR(s, "public");
  CHECK_STR(n, "orders");
  free(s); free(n);
  CHECK_INT(validate_parse_name("sales.orders", &s, &n), 0);
  CHECK_STR(s, "sales");
  CHECK_STR(n, "orders");
  free(s); free(n);
  CHECK_INT(validate_parse_name("\"My.Schema\".\"Odd \"\"T\"\"\"", &s, &n), 0);
  CHECK_STR(s, "My.Schema");
  CHECK_STR(n, "Odd \"T\"");
  free(s); free(n);
  CHECK_INT(validate_parse_name("a.b.c", &s, &n), -1);
  CHECK_INT(validate_parse_name("", &s, &n), -1);
  CHECK_INT(validate_parse_name("\"open", &s, &n), -1);
  CHECK_INT(validate_parse_name("a.", &s, &n), -1);
}

static void quote_and_truncate (void) {
  Buf b = BUF_INIT;
  char *t;
  pgsql_quote_ident(&b, "we\"ird");
  CHECK_STR(buf_cstr(&b), "\"we\"\"ird\"");
  buf_free(&b);
  t = validate_truncate("abcdef", 3);
  CHECK_STR(t, "abc...");
  free(t);
  t = validate_truncate("abc", 3);
  CHECK_STR(t, "abc");
  free(t);
  /* "é" is two bytes: never cut inside it */
  t = validate_truncate("a\xc3\xa9z", 2);
  CHECK_STR(t, "a...");
  free(t);
  CHECK(validate_truncate(NULL, 5) == NULL);
}

static void key_ordering (void) {
  CHECK(validate_keycmp("9", "10") < 0);
  CHECK(validate_keycmp("-5", "3") < 0);
  CHECK(validate_keycmp("-10", "-9") < 0);
  CHECK(validate_keycmp("007", "7") == 0);
  CHECK(validate_keycmp("abc", "abd") < 0);
  CHECK(validate_keycmp("10", "9a") < 0);   /* not both integers: bytewise */
}

static void monotone_subset (void) {
  int order1[] = {0, 1, 2, 3};
  int order2[] = {0, 2, 1, 3, 4};
  int order3[] = {3, 2, 1, 0};
  int keep[8], n;
  n = validate_monotone_subset(order1, 4, keep);
  CHECK_INT(n, 4);
  n = validate_monotone_subset(order2, 5, keep);
  CHECK_INT(n, 4);
  CHECK_INT(keep[0], 0);
  CHECK_INT(keep[n - 1], 4);
  n = validate_monotone_subset(order3, 4, keep);
  CHECK_INT(n, 1);
  CHECK_INT(validate_monotone_subset(order1, 0, keep), 0);
}

static void mode_names (void) {
  CHECK_INT(validate_mode_from_name("consistent"), VMODE_CONSISTENT);
  CHECK_INT(validate_mode_from_name("recheck"), VMODE_RECHECK);
  CHECK_INT(validate_mode_from_name("offline"), VMODE_OFFLINE);
  CHECK_INT(validate_mode_from_name("bogus"), -1);
  CHECK_STR(validate_status_name(VT_MISSING_ON_TARGET), "missing_on_target");
}

/* The consistent point's slot names: valid, short enough, under their own
   prefix, different per call. */
static void point_slot_names (void) {
  char a[64], b[64];
  CdcError e;
  const char *p;
  validate_point_slot_name(a, sizeof(a), 4194304L, 4294967295u, 0xffffffffu);
  CHECK(strlen(a) <= 63);
  CHECK(strncmp(a, "pgtide_vcp_", 11) == 0);
  for (p = a; *p; p++)
    CHECK((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_');
  memset(&e, 0, sizeof(e));
  CHECK_INT(stream_check_name("slot", a, &e), 0);
  CHECK_STR(a, "pgtide_vcp_4194304_4294967295_ffffffff");
  validate_point_slot_name(a, sizeof(a), 77, 1, 0x1234abcdu);
  validate_point_slot_name(b, sizeof(b), 77, 2, 0x1234abcdu);
  CHECK(strcmp(a, b) != 0);
  validate_point_slot_name(b, sizeof(b), 77, 1, 0x1234abceu);
  CHECK(strcmp(a, b) != 0);
}

/* What the user is told to do for each way the slot cannot be had (the
   messages of PostgreSQL 13 to 17). */
static void point_fixes (void) {
  const char *f;
  f = validate_point_fix("53400", "all replication slots are in use");
  CHECK(f != NULL && strstr(f, "max_replication_slots") != NULL && strstr(f, "pg_drop_replication_slot") != NULL);
  f = validate_point_fix("53300", "FATAL:  number of requested standby connections exceeds max_wal_senders (currently 10)");
  CHECK(f != NULL && strstr(f, "Raise max_wal_senders") != NULL);
  f = validate_point_fix(NULL, "FATAL:  must be superuser or replication role to start walsender");
  CHECK(f != NULL && strstr(f, "ALTER ROLE <role> REPLICATION") != NULL && strstr(f, "rds_replication") != NULL);
  f = validate_point_fix(NULL, "FATAL:  permission denied to start WAL sender");
  CHECK(f != NULL && strstr(f, "REPLICATION attribute") != NULL);
  f = validate_point_fix("42501", "permission denied to use replication slots");
  CHECK(f != NULL && strstr(f, "REPLICATION attribute") != NULL);
  f = validate_point_fix("55000", "logical decoding requires wal_level >= logical");
  CHECK(f != NULL && strstr(f, "rds.logical_replication") != NULL);
  f = validate_point_fix("55000", "logical decoding cannot be used while in recovery");
  CHECK(f != NULL && strstr(f, "standby") != NULL);
  CHECK(validate_point_fix("57014", "canceling statement due to user request") == NULL);
  CHECK(validate_point_fix(NULL, NULL) == NULL);
}

/* }====================================================================== */

/* {======================================================================
** Clusters
** ======================================================================= */

static TestCluster src_cl, tgt_cl;
static char src_ci[512], tgt_ci[512];
static int have_clusters;

static PGconn *db (const char *ci) {
  char err[1024];
  PGconn *c = pgconn_open(ci, "test", PGCONN_NORMAL, err, sizeof(err));
  if (c == NULL)
    fprintf(stderr, "%s\n", err);
  return c;
}

/* Run SQL (printf-style) on a connection; counts a failed check on error. */
static void sqlf (PGconn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sqlf (PGconn *c, const char *fmt, ...) {
  Buf b = BUF_INIT;
  va_list ap;
  PGresult *res;
  va_start(ap, fmt);
  buf_vprintf(&b, fmt, ap);
  va_end(ap);
  res = PQexec(c, buf_cstr(&b));
  if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
    fprintf(stderr, "SQL failed: %s\n%s\n", PQerrorMessage(c), buf_cstr(&b));
    test_failed_checks++;
  }
  PQclear(res);
  buf_free(&b);
}

static void both (const char *sql) {
  PGconn *a = db(src_ci), *b = db(tgt_ci);
  CHECK(a != NULL && b != NULL);
  if (a != NULL) sqlf(a, "%s", sql);
  if (b != NULL) sqlf(b, "%s", sql);
  PQfinish(a);
  PQfinish(b);
}

static void on (const char *ci, const char *sql) {
  PGconn *a = db(ci);
  CHECK(a != NULL);
  if (a != NULL) sqlf(a, "%s", sql);
  PQfinish(a);
}

static const char *SCHEMA_SQL =
  "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');"
  "CREATE TABLE t_types (id int PRIMARY KEY, i2 smallint, i8 bigint, num numeric(12,3),"
  "  f4 real, f8 double precision, txt text, vc varchar(20), ch char(5), b boolean, d date,"
  "  ts timestamp, tstz timestamptz, iv interval, tm time, js jsonb, jn json, by bytea,"
  "  arr int[], tarr text[], u uuid, ip inet, m mood, r int4range, pt point, bits varbit(8));"
  "CREATE TABLE t_comp (a int, b text, v int, PRIMARY KEY (a, b));"
  "CREATE TABLE t_text (k text PRIMARY KEY, v int);"
  "CREATE TABLE t_nopk (a int, b text);"
  "CREATE TABLE t_uniq (u int NOT NULL UNIQUE, v text);"
  "CREATE TABLE t_part (id int, region int, v text, PRIMARY KEY (id, region))"
  "  PARTITION BY LIST (region);"
  "CREATE TABLE t_part_1 PARTITION OF t_part FOR VALUES IN (1);"
  "CREATE TABLE t_part_2 PARTITION OF t_part FOR VALUES IN (2);"
  "CREATE TABLE t_empty (id int PRIMARY KEY, v text);"
  "CREATE TABLE t_grow (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);"
  "CREATE TABLE t_more (id int PRIMARY KEY);"
  "CREATE SCHEMA \"Other\";"
  "CREATE TABLE \"Other\".\"Mixed Case\" (\"Id\" int PRIMARY KEY, \"v%s\" text);";

static const char *DATA_SQL =
  "INSERT INTO t_types SELECT g, g, g * 1000000000::int8, g * 1.5, g / 3.0, g / 7.0,"
  "  'text ' || g, 'vc' || g, 'c' || (g % 10), g % 2 = 0, date '2020-01-01' + g,"
  "  timestamp '2020-01-01' + g * interval '1 hour', timestamptz '2020-01-01 00:00+02' + g * interval '1 min',"
  "  g * interval '1 sec', time '00:00' + g * interval '1 sec', jsonb_build_object('k', g, 'a', ARRAY[g]),"
  "  json_build_object('k', g), decode(md5(g::text), 'hex'), ARRAY[g, g + 1], ARRAY['a' || g, NULL],"
  "  md5(g::text)::uuid, ('10.0.0.' || (g % 250))::inet, (ARRAY['sad', 'ok', 'happy'])[g % 3 + 1]::mood,"
  "  int4range(g, g + 10), point(g, g), B'1010' FROM generate_series(1, 2000) g;"
  "UPDATE t_types SET txt = NULL WHERE id = 28;"
  "INSERT INTO t_comp SELECT g % 50, 'b' || g, g FROM generate_series(1, 500) g;"
  "INSERT INTO t_text SELECT 'key-' || lpad(g::text, 4, '0'), g FROM generate_series(1, 500) g;"
  "INSERT INTO t_nopk SELECT g, 'row ' || g FROM generate_series(1, 300) g;"
  "INSERT INTO t_nopk VALUES (7, 'dup'), (7, 'dup'), (7, 'dup');"
  "INSERT INTO t_uniq SELECT g, 'u' || g FROM generate_series(1, 300) g;"
  "INSERT INTO t_part SELECT g, 1 + g % 2, 'p' || g FROM generate_series(1, 400) g;"
  "INSERT INTO t_grow SELECT g, 'g' || g FROM generate_series(1, 10) g;"
  "INSERT INTO t_more SELECT g FROM generate_series(1, 10) g;"
  "ANALYZE;"
  "INSERT INTO t_grow SELECT g, 'g' || g FROM generate_series(11, 20000) g;"
  "INSERT INTO \"Other\".\"Mixed Case\" SELECT g, 'x' || g FROM generate_series(1, 100) g;";

static void setup_clusters (void) {
  if (tc_start(&src_cl, "validate-src", NULL) != 0)
    return;
  if (tc_start(&tgt_cl, "validate-tgt", NULL) != 0) {
    tc_stop(&src_cl);
    return;
  }
  strlcpy_(src_ci, src_cl.conninfo, sizeof(src_ci));
  strlcpy_(tgt_ci, tgt_cl.conninfo, sizeof(tgt_ci));
  have_clusters = 1;
  both(SCHEMA_SQL);
  both(DATA_SQL);
}

/* }====================================================================== */

/* {======================================================================
** Report helpers
** ======================================================================= */

static VTableResult *table (VReport *r, const char *schema, const char *name) {
  int i;
  for (i = 0; i < r->ntables; i++)
    if (strcmp(r->tables[i].schema, schema) == 0 && strcmp(r->tables[i].name, name) == 0)
      return &r->tables[i];
  fprintf(stderr, "table %s.%s not in the report\n", schema, name);
  return NULL;
}

static VRowDiff *row_with_key (VTableResult *t, const char *k0) {
  int i;
  for (i = 0; t != NULL && i < t->nrows; i++)
    if (t->rows[i].key != NULL && strcmp(t->rows[i].key[0], k0) == 0)
      return &t->rows[i];
  return NULL;
}

static void opts_for (VOptions *o, VMode mode) {
  validate_options_init(o);
  o->source = src_ci;
  o->target = tgt_ci;
  o->jobs = 2;
  o->chunk_rows = 200;
  o->mode = mode;
}

static void dump_report (VReport *r) {
  int i, j, k;
  for (i = 0; i < r->ntables; i++) {
    VTableResult *t = &r->tables[i];
    fprintf(stderr, "  %s.%s %s rows %lld/%lld missing %lld extra %lld changed %lld chunks %d/%d%s%s\n",
            t->schema, t->name, validate_status_name(t->status), (long long)t->source_rows,
            (long long)t->target_rows, (long long)t->missing, (long long)t->extra,
            (long long)t->changed, t->chunks_differing, t->nchunks,
            t->error ? " error: " : "", t->error ? t->error : "");
    for (j = 0; j < t->nrows; j++) {
      VRowDiff *d = &t->rows[j];
      fprintf(stderr, "    %s key=%s", validate_kind_name(d->kind), d->key ? d->key[0] : "-");
      for (k = 0; k < d->ncols; k++)
        fprintf(stderr, " %s:[%s]->[%s]", d->cols[k].name,
                d->cols[k].source ? d->cols[k].source : "NULL",
                d->cols[k].target ? d->cols[k].target : "NULL");
      if (d->key == NULL)
        fprintf(stderr, " counts %lld/%lld", (long long)d->source_count, (long long)d->target_count);
      fprintf(stderr, "\n");
    }
  }
}

/* }====================================================================== */

/* {======================================================================
** Against real clusters
** ======================================================================= */

static void equal_databases_report_nothing (void) {
  VOptions o;
  VReport r;
  char err[1024];
  int i;
  if (!have_clusters)
    SKIP("no PostgreSQL clusters (tests/lib/pgcluster.sh failed)");
  opts_for(&o, VMODE_OFFLINE);
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  CHECK_INT(r.ntables, 10);
  CHECK_INT(r.tables_equal, 10);
  CHECK_INT(r.missing + r.extra + r.changed, 0);
  for (i = 0; i < r.ntables; i++)
    CHECK_INT(r.tables[i].nrows, 0);
  CHECK(table(&r, "public", "t_types") != NULL && table(&r, "public", "t_types")->nchunks > 3);
  CHECK_INT(table(&r, "public", "t_types")->source_rows, 2000);
  CHECK_INT(table(&r, "public", "t_part")->source_rows, 400);
  CHECK_INT(table(&r, "public", "t_nopk")->nkey, 0);
  CHECK_STR(table(&r, "public", "t_uniq")->key_kind, "unique index t_uniq_u_key");
  CHECK_STR(table(&r, "public", "t_comp")->key_kind, "primary key");
  CHECK_INT(table(&r, "Other", "Mixed Case")->source_rows, 100);
  CHECK(r.bytes_source > 0 && r.bytes_target > 0);
  if (r.tables_equal != 10)
    dump_report(&r);
  validate_report_free(&r);
}

/* Inject one difference of each kind on the target. */
static const char *INJECT_SQL =
  "DELETE FROM t_types WHERE id = 10;"
  "INSERT INTO t_types (id, txt) VALUES (5000, 'only on target');"
  "UPDATE t_types SET num = num + 0.001 WHERE id = 20;"
  "UPDATE t_types SET txt = 'changed' WHERE id = 21;"
  "UPDATE t_types SET ts = ts + interval '1 microsecond' WHERE id = 22;"
  "UPDATE t_types SET b = NOT b WHERE id = 23;"
  "UPDATE t_types SET js = js || '{\"z\": 1}' WHERE id = 24;"
  "UPDATE t_types SET by = by || '\\x00'::bytea WHERE id = 25;"
  "UPDATE t_types SET arr = arr || 9 WHERE id = 26;"
  "UPDATE t_types SET f8 = f8 + 1e-12 WHERE id = 27;"
  "UPDATE t_types SET txt = '' WHERE id = 28;"           /* NULL on the source */
  "UPDATE t_types SET m = 'happy' WHERE id = 29 AND m <> 'happy';"
  "UPDATE t_types SET m = 'sad' WHERE id = 29 AND m = 'happy';"
  "UPDATE t_types SET iv = iv + interval '1 day' WHERE id = 30;"
  "UPDATE t_types SET u = gen_random_uuid() WHERE id = 31;"
  "UPDATE t_types SET r = int4range(0, 1) WHERE id = 32;"
  "UPDATE t_types SET tstz = tstz + interval '1 hour' WHERE id = 33;"
  "UPDATE t_comp SET v = -1 WHERE a = 7 AND b = 'b7';"
  "DELETE FROM t_text WHERE k = 'key-0100';"
  "DELETE FROM t_nopk WHERE ctid = (SELECT min(ctid) FROM t_nopk WHERE b = 'dup');"
  "INSERT INTO t_part VALUES (9999, 2, 'extra');"
  "DELETE FROM t_grow WHERE id = 15000;"
  "INSERT INTO t_more SELECT g FROM generate_series(11, 5010) g;"
  "UPDATE \"Other\".\"Mixed Case\" SET \"v%s\" = 'y' WHERE \"Id\" = 50;";

static void check_changed (VTableResult *t, const char *id, const char *col) {
  VRowDiff *d = row_with_key(t, id);
  CHECK(d != NULL);
  if (d == NULL) {
    fprintf(stderr, "no row %s\n", id);
    return;
  }
  CHECK_INT(d->kind, VDIFF_CHANGED);
  CHECK_INT(d->ncols, 1);
  if (d->ncols >= 1)
    CHECK_STR(d->cols[0].name, col);
}

/* The report after INJECT_SQL names exactly the injected differences. */
static void check_injected (VReport *rp) {
  VReport r = *rp;
  VTableResult *t;
  VRowDiff *d;
  t = table(&r, "public", "t_types");
  CHECK(t != NULL);
  if (t != NULL) {
    CHECK_INT(t->status, VT_DIFFERENT);
    CHECK_INT(t->missing, 1);
    CHECK_INT(t->extra, 1);
    CHECK_INT(t->changed, 14);
    CHECK_INT(t->nrows, 16);
    d = row_with_key(t, "10");
    CHECK(d != NULL && d->kind == VDIFF_MISSING);
    d = row_with_key(t, "5000");
    CHECK(d != NULL && d->kind == VDIFF_EXTRA);
    check_changed(t, "20", "num");
    check_changed(t, "21", "txt");
    check_changed(t, "22", "ts");
    check_changed(t, "23", "b");
    check_changed(t, "24", "js");
    check_changed(t, "25", "by");
    check_changed(t, "26", "arr");
    check_changed(t, "27", "f8");
    check_changed(t, "28", "txt");
    check_changed(t, "29", "m");
    check_changed(t, "30", "iv");
    check_changed(t, "31", "u");
    check_changed(t, "32", "r");
    check_changed(t, "33", "tstz");
    d = row_with_key(t, "28");
    if (d != NULL && d->ncols == 1) {   /* NULL versus empty string */
      CHECK(d->cols[0].source == NULL);
      CHECK_STR(d->cols[0].target, "");
    }
    d = row_with_key(t, "21");
    if (d != NULL && d->ncols == 1) {
      CHECK_STR(d->cols[0].source, "text 21");
      CHECK_STR(d->cols[0].target, "changed");
    }
    /* rows come sorted by key */
    CHECK_STR(t->rows[0].key[0], "10");
    CHECK_STR(t->rows[t->nrows - 1].key[0], "5000");
  }
  t = table(&r, "public", "t_comp");
  CHECK(t != NULL && t->changed == 1 && t->missing == 0 && t->extra == 0 && t->nrows == 1);
  if (t != NULL && t->nrows == 1) {
    CHECK_STR(t->rows[0].key[0], "7");
    CHECK_STR(t->rows[0].key[1], "b7");
    CHECK_INT(t->rows[0].ncols, 1);
  }
  t = table(&r, "public", "t_text");
  CHECK(t != NULL && t->missing == 1 && t->extra == 0 && t->changed == 0);
  CHECK(row_with_key(t, "key-0100") != NULL);
  t = table(&r, "public", "t_nopk");
  CHECK(t != NULL && t->missing == 1 && t->extra == 0 && t->nrows == 1);
  if (t != NULL && t->nrows == 1) {
    CHECK_INT(t->rows[0].source_count, 3);
    CHECK_INT(t->rows[0].target_count, 2);
    CHECK(t->rows[0].values != NULL);
    if (t->rows[0].values != NULL) {
      CHECK_STR(t->rows[0].values[0], "7");
      CHECK_STR(t->rows[0].values[1], "dup");
    }
  }
  t = table(&r, "public", "t_part");
  CHECK(t != NULL && t->extra == 1 && t->missing == 0 && t->changed == 0);
  CHECK(row_with_key(t, "9999") != NULL);
  t = table(&r, "public", "t_grow");       /* stale statistics: big chunks, re-split */
  CHECK(t != NULL && t->missing == 1 && t->extra == 0 && t->changed == 0);
  CHECK(row_with_key(t, "15000") != NULL);
  t = table(&r, "Other", "Mixed Case");
  CHECK(t != NULL && t->changed == 1);
  if (t != NULL && t->nrows == 1 && t->rows[0].ncols == 1)
    CHECK_STR(t->rows[0].cols[0].name, "v%s");
  t = table(&r, "public", "t_more");       /* the target's chunk far bigger: re-split there */
  CHECK(t != NULL && t->extra == 5000 && t->missing == 0 && t->changed == 0);
  CHECK(t != NULL && t->nrows == 100 && t->truncated);
  if (t != NULL && t->nrows > 0)
    CHECK_STR(t->rows[0].key[0], "11");
  CHECK_INT(r.tables_equal, 2);            /* t_uniq and t_empty */
  CHECK_INT(r.tables_different, 8);
  if (test_failed_checks)
    dump_report(&r);
}

static void each_difference_is_named (void) {
  VOptions o;
  VReport r;
  char err[1024];
  if (!have_clusters)
    SKIP("no PostgreSQL clusters (tests/lib/pgcluster.sh failed)");
  on(tgt_ci, INJECT_SQL);
  opts_for(&o, VMODE_OFFLINE);
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  check_injected(&r);
  validate_report_free(&r);
  /* scans split into block ranges, several per table */
  o.scan_split_pages = 4;
  o.jobs = 3;
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  check_injected(&r);
  validate_report_free(&r);
  o.scan_split_pages = 8192;
  o.jobs = 2;
  /* one range query per chunk instead of one pass per side */
  o.scan = 0;
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  check_injected(&r);
  validate_report_free(&r);
  o.scan = 1;
  /* big chunks: differing chunks are narrowed by key buckets first */
  o.chunk_rows = 10000;
  o.jobs = 1;
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  check_injected(&r);
  CHECK_INT(table(&r, "public", "t_grow")->nchunks, 1);
  validate_report_free(&r);
}

static void redact_and_limits (void) {
  VOptions o;
  VReport r;
  char err[1024];
  VTableResult *t;
  const char *only[] = {"t_types", "public.t_empty", "public.nosuch"};
  int i, j;
  if (!have_clusters)
    SKIP("no PostgreSQL clusters (tests/lib/pgcluster.sh failed)");
  on(src_ci, "INSERT INTO t_empty SELECT g, 'e' || g FROM generate_series(1, 1000) g; ANALYZE t_empty");
  opts_for(&o, VMODE_OFFLINE);
  o.tables = only;
  o.ntables = 3;
  o.redact = 1;
  o.max_rows = 5;
  o.jobs = 3;
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  CHECK_INT(r.ntables, 3);
  t = table(&r, "public", "t_types");
  CHECK(t != NULL && t->nrows == 5 && t->truncated && t->changed == 14);
  for (i = 0; t != NULL && i < t->nrows; i++)
    for (j = 0; j < t->rows[i].ncols; j++) {
      CHECK(t->rows[i].cols[j].hidden);
      CHECK(t->rows[i].cols[j].source == NULL && t->rows[i].cols[j].target == NULL);
    }
  t = table(&r, "public", "t_empty");      /* one side empty: counted, a few listed */
  CHECK(t != NULL && t->missing == 1000 && t->nrows == 5 && t->truncated);
  t = table(&r, "public", "nosuch");
  CHECK(t != NULL && t->status == VT_NOT_FOUND);
  CHECK_INT(r.tables_failed, 1);
  validate_report_free(&r);
  on(src_ci, "TRUNCATE t_empty");
}

static void missing_table_and_column (void) {
  VOptions o;
  VReport r;
  char err[1024];
  VTableResult *t;
  if (!have_clusters)
    SKIP("no PostgreSQL clusters (tests/lib/pgcluster.sh failed)");
  on(src_ci, "CREATE TABLE t_gone (id int PRIMARY KEY); ALTER TABLE t_uniq ADD COLUMN extra int");
  opts_for(&o, VMODE_OFFLINE);
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  t = table(&r, "public", "t_gone");
  CHECK(t != NULL && t->status == VT_MISSING_ON_TARGET);
  t = table(&r, "public", "t_uniq");
  CHECK(t != NULL && t->status == VT_EQUAL && t->nonly_source == 1);
  if (t != NULL && t->nonly_source == 1)
    CHECK_STR(t->only_source[0], "extra");
  validate_report_free(&r);
  on(src_ci, "DROP TABLE t_gone; ALTER TABLE t_uniq DROP COLUMN extra");
}

static void unreachable_target_fails_cleanly (void) {
  VOptions o;
  VReport r;
  char err[1024];
  if (!have_clusters)
    SKIP("no PostgreSQL clusters (tests/lib/pgcluster.sh failed)");
  opts_for(&o, VMODE_OFFLINE);
  o.target = "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2";
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), -1);
  CHECK(strstr(err, "target") != NULL);
  validate_report_free(&r);
  opts_for(&o, VMODE_CONSISTENT);          /* no hook */
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), -1);
  CHECK(strstr(err, "hook") != NULL);
  validate_report_free(&r);
}

/* }====================================================================== */

/* {======================================================================
** A live write load and a stand-in change applier
**
** The writer runs transactions on the source (updates, inserts, deletes
** on table 'live') and queues each one's statements with its xid.  The
** applier replays them on the target in commit order, deliberately
** behind.  pause_at(lsn) looks up the commit record of each queued
** transaction with pg_walinspect, applies exactly those whose commit
** record ends at or before lsn, and holds the rest until resume().
** ======================================================================= */

typedef struct Txn {
  char *sql;
  char xid[32];
  char before[32];          /* WAL insert position before BEGIN */
  struct Txn *next;
} Txn;

typedef struct Live {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  Txn *head, *tail;         /* committed on the source, not yet applied */
  int stop_writer, stop_applier;
  int pause_req, paused;
  char pause_lsn[32];
  char pause_err[256];
  int writes, applied, applied_while_paused;
  int held_beyond;          /* pauses where a transaction ending after the LSN was held */
  char pauses[4][32];       /* the LSNs pause_at was called with, this run */
  int npauses;
  int lag_ms;               /* applier delay per transaction */
  pthread_t wt, at;
} Live;

static Live live;
static int next_id = 100000;     /* ids inserted by the writer, across runs */

static void *writer_main (void *arg) {
  PGconn *c = db(src_ci);
  unsigned seed = (unsigned)next_id;
  (void)arg;
  if (c == NULL)
    return NULL;
  while (1) {
    Buf sql = BUF_INIT;
    PGresult *res;
    Txn *t;
    char before[32];
    int i, n;
    pthread_mutex_lock(&live.mu);
    if (live.stop_writer) {
      pthread_mutex_unlock(&live.mu);
      break;
    }
    pthread_mutex_unlock(&live.mu);
    res = PQexec(c, "SELECT pg_current_wal_insert_lsn()");
    strlcpy_(before, PQgetvalue(res, 0, 0), sizeof(before));
    PQclear(res);
    n = 1 + (int)(rand_r(&seed) % 3);
    for (i = 0; i < n; i++) {
      int op = (int)(rand_r(&seed) % 3), id = 1 + (int)(rand_r(&seed) % 3000);
      if (op == 0)
        buf_printf(&sql, "UPDATE live SET v = v + 1, note = 'w' || v WHERE id = %d;", id);
      else if (op == 1)
        buf_printf(&sql, "INSERT INTO live VALUES (%d, 0, 'new');", next_id++);
      else
        buf_printf(&sql, "DELETE FROM live WHERE id = %d;", id);
    }
    res = PQexec(c, "BEGIN");
    PQclear(res);
    res = PQexec(c, buf_cstr(&sql));
    PQclear(res);
    res = PQexec(c, "SELECT txid_current()");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
      fprintf(stderr, "writer: %s\n", PQerrorMessage(c));
      PQclear(res);
      PQclear(PQexec(c, "ROLLBACK"));
      buf_free(&sql);
      continue;
    }
    t = calloc(1, sizeof(Txn));
    strlcpy_(t->xid, PQgetvalue(res, 0, 0), sizeof(t->xid));
    PQclear(res);
    res = PQexec(c, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK || strcmp(PQcmdStatus(res), "COMMIT") != 0) {
      PQclear(res);
      free(t);
      buf_free(&sql);
      continue;
    }
    PQclear(res);
    t->sql = buf_steal(&sql);
    strlcpy_(t->before, before, sizeof(t->before));
    pthread_mutex_lock(&live.mu);
    if (live.tail) live.tail->next = t; else live.head = t;
    live.tail = t;
    live.writes++;
    pthread_cond_broadcast(&live.cv);
    pthread_mutex_unlock(&live.mu);
    usleep(1000);
  }
  PQfinish(c);
  return NULL;
}

static int lsn_cmp (const char *a, const char *b) {
  unsigned long ah = 0, al = 0, bh = 0, bl = 0;
  sscanf(a, "%lX/%lX", &ah, &al);
  sscanf(b, "%lX/%lX", &bh, &bl);
  if (ah != bh) return ah < bh ? -1 : 1;
  if (al != bl) return al < bl ? -1 : 1;
  return 0;
}

/* Apply one transaction on the target (called without the lock). */
static void apply_txn (PGconn *tgt, Txn *t) {
  Buf b = BUF_INIT;
  PGresult *res;
  buf_printf(&b, "BEGIN; %s COMMIT;", t->sql);
  res = PQexec(tgt, buf_cstr(&b));
  if (PQresultStatus(res) != PGRES_COMMAND_OK)
    fprintf(stderr, "apply failed: %s\n", PQerrorMessage(tgt));
  PQclear(res);
  buf_free(&b);
}

/* Commit end LSN of xid on the source via pg_walinspect ("" when not found). */
static void commit_lsn (PGconn *src, const char *from, const char *xid, char *out, size_t n) {
  const char *pv[2];
  PGresult *res;
  pv[0] = from;
  pv[1] = xid;
  res = PQexecParams(src, "SELECT end_lsn FROM pg_get_wal_records_info_till_end_of_wal($1::pg_lsn)"
                     " WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT'"
                     " AND xid::text = $2", 2, NULL, pv, NULL, NULL, 0);
  out[0] = '\0';
  if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
    strlcpy_(out, PQgetvalue(res, 0, 0), n);
  else if (PQresultStatus(res) != PGRES_TUPLES_OK)
    fprintf(stderr, "walinspect: %s\n", PQerrorMessage(src));
  PQclear(res);
}

static void *applier_main (void *arg) {
  PGconn *tgt = db(tgt_ci), *src = db(src_ci);
  (void)arg;
  if (tgt == NULL || src == NULL)
    return NULL;
  pthread_mutex_lock(&live.mu);
  while (!live.stop_applier) {
    if (live.pause_req && !live.paused) {
      /* wait until a transaction that began after the LSN is queued (so
         every one that may commit before it is queued), or the writer stops */
      Txn *t;
      for (;;) {
        int beyond = 0;
        for (t = live.head; t != NULL; t = t->next)
          if (lsn_cmp(t->before, live.pause_lsn) > 0)
            beyond = 1;
        if (beyond || live.stop_writer)
          break;
        pthread_cond_wait(&live.cv, &live.mu);
      }
      while (live.head != NULL) {
        char end[32];
        t = live.head;
        pthread_mutex_unlock(&live.mu);
        commit_lsn(src, t->before, t->xid, end, sizeof(end));
        pthread_mutex_lock(&live.mu);
        if (end[0] == '\0') {
          snprintf(live.pause_err, sizeof(live.pause_err), "no commit record for xid %s", t->xid);
          break;
        }
        if (lsn_cmp(end, live.pause_lsn) > 0) {
          live.held_beyond++;
          break;
        }
        live.head = t->next;
        if (live.head == NULL) live.tail = NULL;
        pthread_mutex_unlock(&live.mu);
        apply_txn(tgt, t);
        pthread_mutex_lock(&live.mu);
        live.applied++;
        free(t->sql);
        free(t);
      }
      live.paused = 1;
      pthread_cond_broadcast(&live.cv);
      continue;
    }
    if (live.paused || live.head == NULL) {
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_nsec += 20 * 1000000L;
      if (ts.tv_nsec >= 1000000000L) { ts.tv_sec++; ts.tv_nsec -= 1000000000L; }
      pthread_cond_timedwait(&live.cv, &live.mu, &ts);
      continue;
    }
    {
      Txn *t = live.head;
      live.head = t->next;
      if (live.head == NULL) live.tail = NULL;
      pthread_mutex_unlock(&live.mu);
      usleep((useconds_t)live.lag_ms * 1000);
      apply_txn(tgt, t);
      pthread_mutex_lock(&live.mu);
      live.applied++;
      if (live.paused)
        live.applied_while_paused++;
      free(t->sql);
      free(t);
    }
  }
  pthread_mutex_unlock(&live.mu);
  PQfinish(tgt);
  PQfinish(src);
  return NULL;
}

static int hook_pause_at (void *ud, const char *lsn, char *err, size_t errlen) {
  struct timespec deadline;
  (void)ud;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += 30;
  pthread_mutex_lock(&live.mu);
  if (live.npauses < 4)
    strlcpy_(live.pauses[live.npauses], lsn, sizeof(live.pauses[0]));
  live.npauses++;
  strlcpy_(live.pause_lsn, lsn, sizeof(live.pause_lsn));
  live.pause_err[0] = '\0';
  live.pause_req = 1;
  live.paused = 0;
  pthread_cond_broadcast(&live.cv);
  while (!live.paused)
    if (pthread_cond_timedwait(&live.cv, &live.mu, &deadline) != 0)
      break;
  if (!live.paused || live.pause_err[0]) {
    snprintf(err, errlen, "stand-in applier did not pause: %s", live.pause_err);
    pthread_mutex_unlock(&live.mu);
    return -1;
  }
  pthread_mutex_unlock(&live.mu);
  return 0;
}

static int hook_resume (void *ud, char *err, size_t errlen) {
  (void)ud; (void)err; (void)errlen;
  pthread_mutex_lock(&live.mu);
  live.pause_req = 0;
  live.paused = 0;
  pthread_cond_broadcast(&live.cv);
  pthread_mutex_unlock(&live.mu);
  return 0;
}

/* A hook that claims to pause but does not wait: the negative control. */
static int hook_pause_now (void *ud, const char *lsn, char *err, size_t errlen) {
  (void)ud; (void)lsn; (void)err; (void)errlen;
  return 0;
}

static void live_start (int lag_ms) {
  memset(&live, 0, sizeof(live));
  pthread_mutex_init(&live.mu, NULL);
  pthread_cond_init(&live.cv, NULL);
  live.lag_ms = lag_ms;
  pthread_create(&live.wt, NULL, writer_main, NULL);
  pthread_create(&live.at, NULL, applier_main, NULL);
}

/* Stop the writer, let the applier drain, stop it. */
static void live_stop (void) {
  int i;
  pthread_mutex_lock(&live.mu);
  live.stop_writer = 1;
  pthread_cond_broadcast(&live.cv);
  pthread_mutex_unlock(&live.mu);
  pthread_join(live.wt, NULL);
  for (i = 0; i < 600; i++) {
    int empty;
    pthread_mutex_lock(&live.mu);
    empty = live.head == NULL;
    live.lag_ms = 0;
    pthread_mutex_unlock(&live.mu);
    if (empty) break;
    usleep(50000);
  }
  pthread_mutex_lock(&live.mu);
  live.stop_applier = 1;
  pthread_cond_broadcast(&live.cv);
  pthread_mutex_unlock(&live.mu);
  pthread_join(live.at, NULL);
}

static const char *LIVE_SQL =
  "CREATE TABLE live (id int PRIMARY KEY, v int, note text);"
  "INSERT INTO live SELECT g, 0, 'start' FROM generate_series(1, 20000) g; ANALYZE live;";

static int writes_now (void) {
  int n;
  pthread_mutex_lock(&live.mu);
  n = live.writes;
  pthread_mutex_unlock(&live.mu);
  return n;
}

static void consistent_point_under_live_writes (void) {
  VOptions o;
  VReport r;
  char err[1024];
  const char *only[] = {"public.live"};
  int round, before;
  if (!have_clusters)
    SKIP("no PostgreSQL clusters (tests/lib/pgcluster.sh failed)");
  both(LIVE_SQL);
  on(src_ci, "CREATE EXTENSION pg_walinspect");
  live_start(3);
  usleep(500000);
  for (round = 0; round < 10; round++) {
    opts_for(&o, VMODE_CONSISTENT);
    o.tables = only;
    o.ntables = 1;
    o.hook.pause_at = hook_pause_at;
    o.hook.resume = hook_resume;
    before = writes_now();
    pthread_mutex_lock(&live.mu);
    live.npauses = 0;
    pthread_mutex_unlock(&live.mu);
    CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
    /* a hold at the source's position, then the slot's consistent point */
    pthread_mutex_lock(&live.mu);
    CHECK_INT(live.npauses, 2);
    CHECK_STR(live.pauses[1], r.lsn);
    CHECK(lsn_cmp(live.pauses[0], live.pauses[1]) < 0);
    pthread_mutex_unlock(&live.mu);
    if (r.ntables != 1 || r.missing + r.extra + r.changed != 0) {
      fprintf(stderr, "round %d: %s\n", round, err);
      dump_report(&r);
    }
    CHECK_INT(r.ntables, 1);
    CHECK_INT(r.tables_equal, 1);
    CHECK_INT(r.missing + r.extra + r.changed, 0);
    CHECK(r.lsn[0] != '\0');
    CHECK(r.point_ms > 0 && r.point_ms < 30000);
    CHECK(writes_now() > before);          /* writes went on during validation */
    validate_report_free(&r);
  }
  /* commits crossed the point: at (nearly) every pause a transaction
     ending after it was queued and held */
  pthread_mutex_lock(&live.mu);
  CHECK(live.held_beyond >= 10);
  pthread_mutex_unlock(&live.mu);
  /* negative control: a hook that does not wait sees the applier's lag */
  opts_for(&o, VMODE_CONSISTENT);
  o.tables = only;
  o.ntables = 1;
  o.hook.pause_at = hook_pause_now;
  o.hook.resume = hook_resume;
  pthread_mutex_lock(&live.mu);
  live.lag_ms = 30;
  pthread_mutex_unlock(&live.mu);
  usleep(300000);
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  CHECK(r.missing + r.extra + r.changed > 0);
  validate_report_free(&r);
  pthread_mutex_lock(&live.mu);
  CHECK_INT(live.applied_while_paused, 0);
  pthread_mutex_unlock(&live.mu);
  live_stop();
  /* after the applier drained, offline agrees */
  opts_for(&o, VMODE_OFFLINE);
  o.tables = only;
  o.ntables = 1;
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  CHECK_INT(r.missing + r.extra + r.changed, 0);
  validate_report_free(&r);
}

static void *stopper_main (void *arg) {
  (void)arg;
  usleep(300000);
  live_stop();
  return NULL;
}

/* RECHECK: differences caused by apply lag disappear on re-check; a real
   one (injected on the target) stays. */
static void recheck_keeps_only_lasting_differences (void) {
  VOptions o;
  VReport r;
  char err[1024];
  const char *only[] = {"public.live"};
  VTableResult *t;
  pthread_t stopper;
  if (!have_clusters)
    SKIP("no PostgreSQL clusters (tests/lib/pgcluster.sh failed)");
  on(tgt_ci, "UPDATE live SET note = 'drift' WHERE id = 20000");   /* the writer never touches it */
  live_start(20);
  usleep(800000);
  /* stop the writer while the first re-check waits */
  pthread_create(&stopper, NULL, stopper_main, NULL);
  opts_for(&o, VMODE_RECHECK);
  o.tables = only;
  o.ntables = 1;
  o.recheck_times = 3;
  o.recheck_delay = 2;
  CHECK_INT(validate_run(&o, &r, err, sizeof(err)), 0);
  pthread_join(stopper, NULL);
  t = table(&r, "public", "live");
  CHECK(t != NULL && t->changed == 1 && t->missing == 0 && t->extra == 0);
  CHECK(t != NULL && t->rechecks >= 1);
  CHECK(t != NULL && t->initial_differences > 1);   /* the lag was seen, then cleared */
  if (t != NULL && t->nrows == 1 && t->rows[0].ncols == 1)
    CHECK_STR(t->rows[0].cols[0].name, "note");
  if (test_failed_checks)
    dump_report(&r);
  validate_report_free(&r);
}

/* }====================================================================== */

int main (void) {
  log_set_stderr(getenv("TEST_VERBOSE") != NULL);
  RUN_TEST(parse_name_forms);
  RUN_TEST(quote_and_truncate);
  RUN_TEST(key_ordering);
  RUN_TEST(monotone_subset);
  RUN_TEST(mode_names);
  RUN_TEST(point_slot_names);
  RUN_TEST(point_fixes);
  setup_clusters();
  RUN_TEST(equal_databases_report_nothing);
  RUN_TEST(each_difference_is_named);
  RUN_TEST(redact_and_limits);
  RUN_TEST(missing_table_and_column);
  RUN_TEST(unreachable_target_fails_cleanly);
  RUN_TEST(consistent_point_under_live_writes);
  RUN_TEST(recheck_keeps_only_lasting_differences);
  if (have_clusters) {
    tc_stop(&src_cl);
    tc_stop(&tgt_cl);
  }
  return TEST_SUMMARY();
}
