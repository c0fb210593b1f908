/*
** test_cdc_apply.c
** The CDC worker end to end (src/cdc/cdc.c, apply.c, stream.c, spill.c)
** against two real PostgreSQL 15 clusters:
**   - slot creation with an exported snapshot, an initial copy under it
**     while the source keeps changing (no gap, no overlap);
**   - random mixed workloads (inserts, updates, deletes, truncates with
**     CASCADE / RESTART IDENTITY, large TOASTed values and unchanged
**     TOAST columns, primary-key updates, REPLICA IDENTITY FULL with
**     duplicate rows and types without equality, identity columns,
**     multi-table transactions, savepoints, rollbacks, one transaction
**     far bigger than the memory cap) applied by the row path, the set
**     path with grouping, protocol 1 and protocol 2 with streaming;
**   - stop and resume (exactly once), pause at an LSN (consistent point),
**     pg_terminate_backend of both connections (automatic recovery),
**     schema drift (stops naming table and column).
** After each phase every table on the target equals the source.
** A trigger on the target that always fails proves that
** session_replication_role=replica is in effect.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cdc/cdc.h"
#include "cdc_testlib.h"
#include "test.h"
#include "util/buf.h"
#include "util/log.h"

static TestCluster src, dst;
static PGconn *sc, *dc;
static char state_dir[600];
static unsigned seed;

static const char *const tables[] = {"acc", "items", "logs", "ids", "parent", "child", "uq", NULL};

static const char *schema_sql =
  "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');"
  "CREATE TABLE acc (id int PRIMARY KEY, bal bigint NOT NULL, note text, big text, m mood,"
  "  at timestamptz DEFAULT '2024-01-01 00:00:00+00');"
  "ALTER TABLE acc ALTER COLUMN big SET STORAGE EXTERNAL;"
  "CREATE TABLE items (k1 int, k2 text, v jsonb, PRIMARY KEY (k1, k2));"
  "CREATE TABLE logs (a int, b text, p point, j json);"
  "ALTER TABLE logs REPLICA IDENTITY FULL;"
  "CREATE TABLE ids (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);"
  "CREATE TABLE parent (id int PRIMARY KEY);"
  "CREATE TABLE child (id int PRIMARY KEY, pid int REFERENCES parent ON DELETE CASCADE);"
  "CREATE TABLE uq (id int PRIMARY KEY, email text UNIQUE);";

/* {====================== helpers ====================== */

static char *table_md5 (PGconn *conn, const char *t) {
  char sql[256];
  snprintf(sql, sizeof(sql), "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' "
           "ORDER BY x::text)), '') FROM %s x", t);
  return tc_query1(conn, sql);
}

/* Every table equal on both sides; prints the first differences. */
static int tables_equal (void) {
  int i, same = 1;
  for (i = 0; tables[i] != NULL; i++) {
    char *a = table_md5(sc, tables[i]), *b = table_md5(dc, tables[i]);
    if (a == NULL || b == NULL || strcmp(a, b) != 0) {
      fprintf(stderr, "table %s differs: source %s, target %s\n", tables[i], a ? a : "?", b ? b : "?");
      same = 0;
    }
    free(a);
    free(b);
  }
  return same;
}

static PgLsn source_lsn (void) {
  char *s = tc_query1(sc, "SELECT pg_current_wal_lsn()");
  PgLsn l = 0;
  if (s != NULL)
    pgo_lsn_parse(s, &l);
  free(s);
  return l;
}

static void rnd_sql (Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rnd_sql (Buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  buf_vprintf(b, fmt, ap);
  va_end(ap);
  buf_puts(b, ";");
}

static int rnd (int n) {
  return (int)(rand_r(&seed) % (unsigned)n);
}

/* One random statement of the mixed workload. */
static void random_op (Buf *b, int allow_truncate) {
  int id = 1 + rnd(3000), r = rnd(100);
  if (r < 14)
    rnd_sql(b, "INSERT INTO acc (id, bal, note, big, m) VALUES (%d, %d, 'n%d', "
            "CASE WHEN %d %% 4 = 0 THEN repeat(md5('%d'), 100) END, '%s') ON CONFLICT DO NOTHING",
            id, rnd(1000), id, id, id, rnd(2) ? "ok" : "happy");
  else if (r < 24)
    rnd_sql(b, "UPDATE acc SET bal = bal + %d WHERE id %% 40 = %d", 1 + rnd(9), rnd(40));
  else if (r < 32)
    rnd_sql(b, "UPDATE acc SET note = 'x%d' WHERE id = %d", rnd(100000), id);
  else if (r < 36)
    rnd_sql(b, "UPDATE acc SET big = repeat('%c', 3000 + %d) WHERE id = %d", 'a' + rnd(26), rnd(500), id);
  else if (r < 42)   /* primary-key change; 'big' often stays TOASTed and unchanged */
    rnd_sql(b, "UPDATE acc SET id = id + 5000, note = 'moved' WHERE id = %d AND NOT EXISTS "
            "(SELECT 1 FROM acc WHERE id = %d)", id % 5000, id % 5000 + 5000);
  else if (r < 46)
    rnd_sql(b, "UPDATE acc SET id = id - 5000 WHERE id = %d AND NOT EXISTS (SELECT 1 FROM acc WHERE id = %d)",
            id + 5000, id);
  else if (r < 52)
    rnd_sql(b, "DELETE FROM acc WHERE id = %d", id);
  else if (r < 60)
    rnd_sql(b, "INSERT INTO items VALUES (%d, 'k%d', '{\"a\": %d}') ON CONFLICT (k1, k2) DO UPDATE "
            "SET v = EXCLUDED.v", rnd(200), rnd(5), rnd(1000));
  else if (r < 63)
    rnd_sql(b, "DELETE FROM items WHERE k1 = %d", rnd(200));
  else if (r < 70)
    rnd_sql(b, "INSERT INTO logs VALUES (%d, 'l%d', point(%d, %d.5), '{\"k\": [1, 2]}')", rnd(50), rnd(3),
            rnd(10), rnd(10));
  else if (r < 74)
    rnd_sql(b, "UPDATE logs SET b = b || 'u' WHERE ctid = (SELECT ctid FROM logs WHERE a = %d LIMIT 1)", rnd(50));
  else if (r < 77)
    rnd_sql(b, "DELETE FROM logs WHERE ctid = (SELECT ctid FROM logs WHERE a = %d LIMIT 1)", rnd(50));
  else if (r < 82)
    rnd_sql(b, "INSERT INTO ids (v) VALUES ('v%d')", rnd(1000));
  else if (r < 86)
    rnd_sql(b, "UPDATE ids SET v = v || '!' WHERE id %% 7 = %d", rnd(7));
  else if (r < 92)
    rnd_sql(b, "INSERT INTO parent VALUES (%d) ON CONFLICT DO NOTHING; "
            "INSERT INTO child VALUES (%d, %d) ON CONFLICT DO NOTHING", id % 100, id, id % 100);
  else if (r < 95)
    rnd_sql(b, "DELETE FROM parent WHERE id = %d", rnd(100));   /* cascades on the source */
  else if (!allow_truncate)
    rnd_sql(b, "UPDATE items SET v = '{}' WHERE k1 = %d", rnd(200));
  else if (r < 97)
    rnd_sql(b, "TRUNCATE items");
  else if (r < 98)
    rnd_sql(b, "TRUNCATE parent CASCADE");
  else
    rnd_sql(b, "TRUNCATE ids RESTART IDENTITY");
}

/* n random transactions: 1-8 statements, some with a savepoint rolled
   back, some rolled back entirely. */
static void workload (int n, int allow_truncate) {
  Buf b = BUF_INIT;
  int i, k;
  for (i = 0; i < n; i++) {
    int nops = 1 + rnd(8), kind = rnd(20);
    buf_reset(&b);
    buf_puts(&b, "BEGIN;");
    for (k = 0; k < nops; k++) {
      if (kind == 0 && k == nops / 2)
        buf_puts(&b, "SAVEPOINT s;");
      random_op(&b, allow_truncate);
    }
    if (kind == 0)
      buf_puts(&b, "ROLLBACK TO s;");
    buf_puts(&b, kind == 1 ? "ROLLBACK;" : "COMMIT;");
    tc_exec(sc, b.data);
  }
  buf_free(&b);
}

static void config (CdcConfig *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->source = src.conninfo;
  cfg->target = dst.conninfo;
  cfg->slot = "cdc_test";
  cfg->publication = "pub";
  cfg->state_dir = state_dir;
  cfg->streaming = -1;
  cfg->memory_cap = 1u << 20;      /* 1 MB: the big transactions spill */
  cfg->group_txns = 1;
  cfg->batch = 2000;
  cfg->set_threshold = 0;
  cfg->replica_role = 1;
  cfg->status_interval_ms = 200;
}

/* Wait until everything written on the source so far is applied. */
static int catch_up (Cdc *c, double timeout) {
  PgLsn l = source_lsn();
  int rc = cdc_wait_applied(c, l, timeout);
  if (rc != 1) {
    CdcStatus st;
    char a[PGO_LSN_BUFSZ], w[PGO_LSN_BUFSZ];
    cdc_get_status(c, &st);
    fprintf(stderr, "catch up to %s: %s (state %s, applied %s, error: %s)\n", pgo_lsn_format(l, w),
            rc == 0 ? "timed out" : "worker ended", cdc_state_name(st.state),
            pgo_lsn_format(st.applied_lsn, a), st.error.message);
  }
  return rc == 1;
}

static Cdc *start (const CdcConfig *cfg) {
  CdcError err;
  Cdc *c;
  cdc_err_clear(&err);
  c = cdc_start(cfg, &err);
  if (c == NULL)
    fprintf(stderr, "cdc_start: %s\n", err.message);
  return c;
}

/* Copy a table from the source snapshot to the target with COPY. */
static int copy_table (PGconn *from, const char *t) {
  char sql[256];
  PGresult *res;
  char *row;
  int n, ok = 1;
  snprintf(sql, sizeof(sql), "COPY %s TO STDOUT", t);
  res = PQexec(from, sql);
  PQclear(res);
  snprintf(sql, sizeof(sql), "COPY %s FROM STDIN", t);
  if (strcmp(t, "ids") == 0)
    snprintf(sql, sizeof(sql), "COPY ids FROM STDIN");
  res = PQexec(dc, sql);
  PQclear(res);
  while ((n = PQgetCopyData(from, &row, 0)) > 0) {
    PQputCopyData(dc, row, n);
    PQfreemem(row);
  }
  PQputCopyEnd(dc, NULL);
  res = PQgetResult(dc);
  if (PQresultStatus(res) != PGRES_COMMAND_OK) {
    fprintf(stderr, "copy %s: %s", t, PQerrorMessage(dc));
    ok = 0;
  }
  PQclear(res);
  while ((res = PQgetResult(dc)) != NULL)
    PQclear(res);
  while ((res = PQgetResult(from)) != NULL)
    PQclear(res);
  return ok;
}

/* }============================================================= */

static int ready;

/* Slot with exported snapshot; changes made after it come through CDC,
   the initial copy under the snapshot sees exactly what was before. */
static void test_snapshot_and_initial_copy (void) {
  CdcError err;
  CdcSlot *slot;
  PGconn *snap;
  char sql[256];
  int i;
  if (!ready)
    SKIP("no PostgreSQL clusters (tests/lib/pgcluster.sh start failed)");
  tc_exec(sc, "INSERT INTO acc (id, bal, note, big) SELECT g, g, 'n' || g, CASE WHEN g % 5 = 0 "
              "THEN repeat(md5(g::text), 100) END FROM generate_series(1, 1500) g");
  tc_exec(sc, "INSERT INTO items SELECT g, 'k1', '{}' FROM generate_series(1, 100) g");
  tc_exec(sc, "INSERT INTO logs SELECT g % 20, 'init', point(g, g), '[1]' FROM generate_series(1, 200) g");
  cdc_err_clear(&err);
  slot = cdc_slot_create(src.conninfo, "cdc_test", "pub", NULL, 0, &err);
  CHECK(slot != NULL);
  if (slot == NULL) {
    fprintf(stderr, "slot: %s\n", err.message);
    ready = 0;
    return;
  }
  CHECK(slot->info.snapshot[0] != '\0');
  CHECK(slot->info.lsn != 0);
  /* a second slot of the same name is refused */
  CHECK(cdc_slot_create(src.conninfo, "cdc_test", "pub", NULL, 0, &err) == NULL);
  CHECK_INT(err.kind, CDC_ERR_CONFIG);
  /* the source keeps changing after the snapshot */
  workload(30, 0);
  snap = tc_connect(src.conninfo);
  CHECK(snap != NULL);
  if (snap == NULL) {
    cdc_slot_close(slot);
    ready = 0;
    return;
  }
  tc_exec(snap, "BEGIN ISOLATION LEVEL REPEATABLE READ");
  snprintf(sql, sizeof(sql), "SET TRANSACTION SNAPSHOT '%s'", slot->info.snapshot);
  tc_exec(snap, sql);
  tc_exec(dc, "SET session_replication_role = replica");
  for (i = 0; tables[i] != NULL; i++)
    CHECK(copy_table(snap, tables[i]));
  tc_exec(dc, "RESET session_replication_role");
  tc_exec(snap, "COMMIT");
  PQfinish(snap);
  cdc_slot_close(slot);
  {
    CdcSlotInfo si;
    CHECK_INT(cdc_slot_info(src.conninfo, "cdc_test", &si, &err), 0);
    CHECK_INT(si.exists, 1);
    CHECK(si.retained_bytes >= 0);
    CHECK_INT(cdc_slot_info(src.conninfo, "no_such_slot", &si, &err), 0);
    CHECK_INT(si.exists, 0);
  }
}

/* Row path, one source transaction per target transaction. */
static void test_row_path (void) {
  CdcConfig cfg;
  Cdc *c;
  CdcStatus st;
  if (!ready)
    SKIP("no clusters or no slot");
  config(&cfg);
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  workload(150, 1);
  CHECK(catch_up(c, 60));
  cdc_get_status(c, &st);
  CHECK_STR(st.progress, "origin");
  CHECK_INT(st.proto_version, 2);
  CHECK_INT(st.streaming, 1);
  CHECK(st.stats.inserts > 0 && st.stats.updates > 0 && st.stats.deletes > 0);
  CHECK(st.stats.txns >= 100);
  CHECK_INT(st.stats.set_segments, 0);
  CHECK(tables_equal());
  cdc_stop(c, 10);
  cdc_get_status(c, &st);
  CHECK_INT(st.state, CDC_STOPPED);
  cdc_free(c);
}

/* Changes made while no worker runs are applied once on resume. */
static void test_resume_exactly_once (void) {
  CdcConfig cfg;
  Cdc *c;
  if (!ready)
    SKIP("no clusters or no slot");
  workload(40, 0);
  config(&cfg);
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  CHECK(catch_up(c, 60));
  CHECK(tables_equal());
  cdc_free(c);
}

/* Set path with grouping, and transactions far over the memory cap
   (spilled; streamed in progress by the source). */
static void test_set_path_and_big (void) {
  CdcConfig cfg;
  Cdc *c;
  CdcStatus st;
  if (!ready)
    SKIP("no clusters or no slot");
  config(&cfg);
  cfg.set_threshold = 20;
  cfg.group_txns = 50;
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  /* a backlog applied in groups: stop applying briefly by holding the
     target's lock is not needed, the burst itself outruns one commit */
  workload(300, 1);
  tc_exec(sc, "BEGIN; INSERT INTO logs SELECT g % 30, repeat('b', 200), point(g, g), '{}' "
              "FROM generate_series(1, 15000) g;"
              "UPDATE acc SET bal = bal + 1, note = note || '+';"
              "UPDATE acc SET id = id + 20000 WHERE id % 10 = 3;"
              "DELETE FROM logs WHERE a = 7; COMMIT");
  tc_exec(sc, "UPDATE acc SET id = id - 20000 WHERE id > 20000");
  /* two rows swap a unique value through a temporary one: applied
     set-based in one statement this conflicts, so the segment is
     replayed row by row */
  tc_exec(sc, "INSERT INTO uq SELECT g, 'e' || g FROM generate_series(1, 100) g");
  CHECK(catch_up(c, 120));
  tc_exec(sc, "BEGIN; UPDATE uq SET email = 'tmp' WHERE id = 1; UPDATE uq SET email = 'e1' WHERE id = 2;"
              "UPDATE uq SET email = 'e2' WHERE id = 1; UPDATE uq SET email = email || '.' WHERE id > 2; COMMIT");
  workload(50, 1);
  CHECK(catch_up(c, 120));
  cdc_get_status(c, &st);
  CHECK(st.stats.set_segments > 0);
  CHECK(st.spilled_txns > 0);
  CHECK(st.stats.commits < st.stats.txns);   /* grouped */
  CHECK(st.stats.fallbacks >= 1);
  CHECK(tables_equal());
  fprintf(stderr, "set path: %llu segments, %llu changes, %llu fallbacks; %llu txns in %llu commits; "
          "%llu spilled\n", (unsigned long long)st.stats.set_segments,
          (unsigned long long)st.stats.set_changes, (unsigned long long)st.stats.fallbacks,
          (unsigned long long)st.stats.txns, (unsigned long long)st.stats.commits,
          (unsigned long long)st.spilled_txns);
  cdc_free(c);
}

/* Protocol 1: no streaming, the big transaction arrives whole and spills. */
static void test_protocol_1 (void) {
  CdcConfig cfg;
  Cdc *c;
  CdcStatus st;
  if (!ready)
    SKIP("no clusters or no slot");
  config(&cfg);
  cfg.proto_version = 1;
  cfg.set_threshold = 100;
  cfg.group_txns = 20;
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  workload(100, 1);
  tc_exec(sc, "BEGIN; UPDATE logs SET b = b || 'v'; INSERT INTO acc (id, bal, big) SELECT g, 1, "
              "repeat('z', 2500) FROM generate_series(30001, 30400) g; COMMIT");
  CHECK(catch_up(c, 120));
  cdc_get_status(c, &st);
  CHECK_INT(st.proto_version, 1);
  CHECK_INT(st.streaming, 0);
  CHECK(st.spilled_txns > 0);
  CHECK(tables_equal());
  cdc_free(c);
}

/* Two large transactions streamed by the source at the same time, with
   their blocks interleaved; one has a rolled-back subtransaction, a third
   large one is rolled back entirely.  Only committed changes arrive. */
static void test_streamed_interleaved (void) {
  CdcConfig cfg;
  Cdc *c;
  CdcStatus st;
  PGconn *c2;
  char *n;
  if (!ready)
    SKIP("no clusters or no slot");
  config(&cfg);
  cfg.set_threshold = 100;
  cfg.group_txns = 10;
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  c2 = tc_connect(src.conninfo);
  CHECK(c2 != NULL);
  if (c2 == NULL) {
    cdc_free(c);
    return;
  }
  tc_exec(sc, "BEGIN");
  tc_exec(c2, "BEGIN");
  tc_exec(sc, "INSERT INTO logs SELECT -1, 'first ' || g, point(g, 0), '{}' FROM generate_series(1, 4000) g");
  tc_exec(c2, "INSERT INTO logs SELECT -2, 'second ' || g, point(g, 1), '{}' FROM generate_series(1, 4000) g");
  tc_exec(sc, "SAVEPOINT sp");
  tc_exec(sc, "INSERT INTO logs SELECT -1, 'gone ' || g, point(g, 2), '{}' FROM generate_series(1, 4000) g");
  tc_exec(c2, "UPDATE logs SET b = b || '+' WHERE a = -2 AND p[0] < 100");
  tc_exec(sc, "ROLLBACK TO SAVEPOINT sp");
  tc_exec(sc, "INSERT INTO logs SELECT -1, 'after ' || g, point(g, 3), '{}' FROM generate_series(1, 3000) g");
  tc_exec(c2, "COMMIT");
  tc_exec(sc, "COMMIT");
  tc_exec(sc, "BEGIN; INSERT INTO logs SELECT -3, 'rolled back', point(g, 4), '{}' "
              "FROM generate_series(1, 6000) g; ROLLBACK");
  workload(10, 0);
  CHECK(catch_up(c, 120));
  n = tc_query1(dc, "SELECT count(*) FILTER (WHERE b LIKE 'gone%') || '/' || count(*) FILTER (WHERE a = -3) "
                    "|| '/' || count(*) FILTER (WHERE a = -1) || '/' || count(*) FILTER (WHERE a = -2) FROM logs");
  CHECK_STR(n, "0/0/7000/4000");
  free(n);
  cdc_get_status(c, &st);
  CHECK(st.spilled_txns > 0);
  CHECK(tables_equal());
  PQfinish(c2);
  cdc_free(c);
}

/* Pause at an LSN: the target then equals the source as of that LSN. */
static void test_pause_at (void) {
  CdcConfig cfg;
  Cdc *c;
  CdcStatus st;
  char *before[8];
  int i, same = 1;
  PgLsn p;
  if (!ready)
    SKIP("no clusters or no slot");
  config(&cfg);
  cfg.group_txns = 10;
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  workload(30, 0);
  p = source_lsn();
  for (i = 0; tables[i] != NULL; i++)
    before[i] = table_md5(sc, tables[i]);
  cdc_pause_at(c, p);
  workload(30, 0);
  CHECK_INT(cdc_wait_applied(c, p, 30), 1);
  usleep(500000);    /* later transactions must stay unapplied */
  cdc_get_status(c, &st);
  CHECK_INT(st.state, CDC_PAUSED);
  for (i = 0; tables[i] != NULL; i++) {
    char *now = table_md5(dc, tables[i]);
    if (before[i] == NULL || now == NULL || strcmp(before[i], now) != 0) {
      fprintf(stderr, "paused target %s differs from the source at the pause point\n", tables[i]);
      same = 0;
    }
    free(now);
    free(before[i]);
  }
  CHECK(same);
  cdc_resume(c);
  CHECK(catch_up(c, 60));
  CHECK(tables_equal());
  cdc_free(c);
}

/* Terminate the apply and the walsender backends mid-workload. */
static void test_terminate_backends (void) {
  CdcConfig cfg;
  Cdc *c;
  CdcStatus st;
  char sql[128];
  int i;
  if (!ready)
    SKIP("no clusters or no slot");
  config(&cfg);
  cfg.set_threshold = 30;
  cfg.group_txns = 20;
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  for (i = 0; i < 4; i++) {
    int k;
    workload(40, 1);
    /* wait for the session started after the previous kill */
    for (k = 0; k < 100; k++) {
      cdc_get_status(c, &st);
      if (st.state == CDC_STREAMING && st.reconnects == i)
        break;
      usleep(100000);
    }
    CHECK_INT(st.reconnects, i);
    if (i % 2 == 0) {
      snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", st.apply_pid);
      tc_exec(dc, sql);
    } else {
      snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)", st.stream_pid);
      tc_exec(sc, sql);
    }
    workload(10, 1);
    /* the failure is noticed on the next use of the connection */
    for (k = 0; k < 100; k++) {
      cdc_get_status(c, &st);
      if (st.reconnects > i)
        break;
      usleep(100000);
    }
  }
  workload(20, 1);
  CHECK(catch_up(c, 90));
  cdc_get_status(c, &st);
  CHECK_INT(st.reconnects, 4);
  CHECK(tables_equal());
  cdc_free(c);
}

/* A column added on the source only: apply stops and names it; fixing
   the target and restarting resumes without loss. */
static void test_schema_drift (void) {
  CdcConfig cfg;
  Cdc *c;
  CdcStatus st;
  int i;
  if (!ready)
    SKIP("no clusters or no slot");
  config(&cfg);
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  tc_exec(sc, "ALTER TABLE items ADD COLUMN extra int DEFAULT 7");
  tc_exec(sc, "INSERT INTO items VALUES (9999, 'drift', '{}', 1)");
  for (i = 0; i < 100; i++) {
    cdc_get_status(c, &st);
    if (st.state == CDC_FAILED)
      break;
    usleep(100000);
  }
  CHECK_INT(st.state, CDC_FAILED);
  CHECK_INT(st.error.kind, CDC_ERR_DRIFT);
  CHECK_STR(st.error.table, "public.items");
  CHECK_STR(st.error.column, "extra");
  CHECK(strstr(st.error.message, "\"extra\"") != NULL);
  CHECK_INT(cdc_wait_applied(c, source_lsn(), 1), -1);
  cdc_free(c);
  tc_exec(dc, "ALTER TABLE items ADD COLUMN extra int DEFAULT 7");
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  workload(20, 0);
  CHECK(catch_up(c, 60));
  CHECK(tables_equal());
  cdc_free(c);
}

static void test_config_errors (void) {
  CdcConfig cfg;
  CdcError err;
  if (!ready)
    SKIP("no clusters or no slot");
  config(&cfg);
  cfg.slot = "Bad Slot";
  CHECK(cdc_start(&cfg, &err) == NULL);
  CHECK_INT(err.kind, CDC_ERR_CONFIG);
  config(&cfg);
  cfg.slot = "missing_slot";
  CHECK(cdc_start(&cfg, &err) == NULL);
  CHECK(strstr(err.message, "missing_slot") != NULL);
  if (strstr(err.message, "missing_slot") == NULL)
    fprintf(stderr, "missing slot error: %s\n", err.message);
  CHECK_INT(err.retryable, 0);
  config(&cfg);
  cfg.state_dir = "/nonexistent/dir";
  CHECK(cdc_start(&cfg, &err) == NULL);
  CHECK(strstr(err.message, "/nonexistent/dir") != NULL);
}

/* A progress row records the migration it belongs to: another migration
   with the same record name is refused (streaming from that position
   would skip its changes), and cleanup with another identity keeps it. */
static void test_progress_identity (void) {
  CdcConfig cfg;
  CdcError err;
  Cdc *c;
  char *n;
  if (!ready)
    SKIP("no clusters or no slot");
  config(&cfg);
  cfg.progress = APPLY_PROGRESS_TABLE;
  cfg.origin = "shared_record";
  cfg.identity = "source system 1, database a, slot cdc_test";
  c = start(&cfg);
  CHECK(c != NULL);
  if (c == NULL)
    return;
  workload(5, 0);
  CHECK(catch_up(c, 60));
  cdc_free(c);
  n = tc_query1(dc, "SELECT migration FROM pgtide.cdc_progress WHERE name = 'shared_record'");
  CHECK_STR(n, "source system 1, database a, slot cdc_test");
  free(n);
  cfg.identity = "source system 2, database b, slot cdc_test";
  c = cdc_start(&cfg, &err);
  CHECK(c == NULL);
  if (c != NULL)
    cdc_free(c);
  else {
    CHECK(strstr(err.message, "belongs to another migration") != NULL);
    CHECK(strstr(err.message, "source system 1, database a") != NULL);
    CHECK_INT(err.kind, CDC_ERR_CONFIG);
  }
  /* cleanup by the other migration leaves the row; by its own removes it */
  CHECK_INT(cdc_drop(&(CdcDrop){.target = dst.conninfo, .origin = "shared_record",
                                .progress = APPLY_PROGRESS_TABLE,
                                .identity = "source system 2, database b, slot cdc_test"}, &err), 0);
  n = tc_query1(dc, "SELECT count(*) FROM pgtide.cdc_progress WHERE name = 'shared_record'");
  CHECK_STR(n, "1");
  free(n);
  CHECK_INT(cdc_drop(&(CdcDrop){.target = dst.conninfo, .origin = "shared_record",
                                .progress = APPLY_PROGRESS_TABLE,
                                .identity = "source system 1, database a, slot cdc_test"}, &err), 0);
  n = tc_query1(dc, "SELECT count(*) FROM pgtide.cdc_progress WHERE name = 'shared_record'");
  CHECK_STR(n, "0");
  free(n);
}

static void test_drop (void) {
  CdcError err;
  CdcSlotInfo si;
  char *n;
  if (!ready)
    SKIP("no clusters or no slot");
  CHECK_INT(cdc_drop(&(CdcDrop){.source = src.conninfo, .slot = "cdc_test", .publication = "pub",
                                .target = dst.conninfo, .origin = "cdc_test"}, &err), 0);
  CHECK_INT(cdc_slot_info(src.conninfo, "cdc_test", &si, &err), 0);
  CHECK_INT(si.exists, 0);
  n = tc_query1(sc, "SELECT count(*) FROM pg_publication WHERE pubname = 'pub'");
  CHECK_STR(n, "0");
  free(n);
  n = tc_query1(dc, "SELECT count(*) FROM pg_replication_origin WHERE roname = 'cdc_test'");
  CHECK_STR(n, "0");
  free(n);
  /* dropping again is not an error */
  CHECK_INT(cdc_drop(&(CdcDrop){.source = src.conninfo, .slot = "cdc_test", .publication = "pub",
                                .target = dst.conninfo, .origin = "cdc_test"}, &err), 0);
}

int main (void) {
  const char *s = getenv("PGTIDE_SEED");
  seed = s != NULL ? (unsigned)strtoul(s, NULL, 10) : (unsigned)time(NULL);
  fprintf(stderr, "seed %u (PGTIDE_SEED to repeat)\n", seed);
  log_set_level(LOG_WARN);
  if (tc_start(&src, "cdcsrc", "logical_decoding_work_mem = 64kB") == 0 &&
      tc_start(&dst, "cdcdst", NULL) == 0) {
    sc = tc_connect(src.conninfo);
    dc = tc_connect(dst.conninfo);
    snprintf(state_dir, sizeof(state_dir), "%s/state", src.dir);
    ready = sc != NULL && dc != NULL && mkdir(state_dir, 0700) == 0;
    if (ready) {
      tc_exec(sc, "SET client_min_messages = warning");
      tc_exec(sc, schema_sql);
      tc_exec(sc, "CREATE PUBLICATION pub FOR ALL TABLES");
      tc_exec(dc, schema_sql);
      /* fires unless session_replication_role = replica */
      tc_exec(dc, "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$BEGIN RAISE EXCEPTION 'trigger fired during apply'; END$$;"
                  "CREATE TRIGGER boom BEFORE INSERT OR UPDATE OR DELETE ON acc "
                  "FOR EACH ROW EXECUTE FUNCTION boom()");
    }
  }
  RUN_TEST(test_snapshot_and_initial_copy);
  RUN_TEST(test_row_path);
  RUN_TEST(test_resume_exactly_once);
  RUN_TEST(test_set_path_and_big);
  RUN_TEST(test_protocol_1);
  RUN_TEST(test_streamed_interleaved);
  RUN_TEST(test_pause_at);
  RUN_TEST(test_terminate_backends);
  RUN_TEST(test_schema_drift);
  RUN_TEST(test_config_errors);
  RUN_TEST(test_progress_identity);
  RUN_TEST(test_drop);
  if (sc != NULL)
    PQfinish(sc);
  if (dc != NULL)
    PQfinish(dc);
  tc_stop(&src);
  tc_stop(&dst);
  return TEST_SUMMARY();
}
