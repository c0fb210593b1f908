/*
** cdc_testlib.h
** Helpers shared by the CDC unit tests: throwaway clusters through
** tests/lib/pgcluster.sh, and small libpq wrappers that record a check
** failure instead of aborting.  Header-only (static functions) so each
** test program stays one file for the Makefile's glob.
*/
#ifndef PGTIDE_CDC_TESTLIB_H
#define PGTIDE_CDC_TESTLIB_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libpq-fe.h>

#include "test.h"
#include "util/buf.h"

typedef struct TestCluster {
  char dir[512];
  char conninfo[512];
  int up;
} TestCluster;

/* Directory for clusters: $TEST_TMP (tests/run.sh) or a private one;
   PGPASSFILE points into it so libpq finds the generated password. */
static const char *tc_tmp (void) {
  static char dir[256];
  const char *t = getenv("TEST_TMP");
  if (dir[0] != '\0')
    return dir;
  if (t != NULL && t[0] != '\0') {
    strlcpy_(dir, t, sizeof(dir));
  } else {
    strlcpy_(dir, "/tmp/pgtide-cdc-test.XXXXXX", sizeof(dir));
    if (mkdtemp(dir) == NULL)
      strlcpy_(dir, "/tmp", sizeof(dir));
    chmod(dir, 0755);
  }
  if (getenv("PGPASSFILE") == NULL) {
    char pp[300];
    snprintf(pp, sizeof(pp), "%s/pgpass", dir);
    setenv("PGPASSFILE", pp, 1);
  }
  return dir;
}

/* Start a cluster named 'name' under the test directory; extra_conf is
   one "key = value" setting or NULL.  Returns 0 on success. */
static int tc_start (TestCluster *c, const char *name, const char *extra_conf) {
  char cmd[1400];
  FILE *p;
  const char *root = getenv("PGTIDE_TEST_ROOT");
  memset(c, 0, sizeof(*c));
  snprintf(c->dir, sizeof(c->dir), "%s/%s-%d", tc_tmp(), name, (int)getpid());
  snprintf(cmd, sizeof(cmd), "%s%stests/lib/pgcluster.sh start '%s'%s%s%s 2>&1",
           root ? root : "", root ? "/" : "", c->dir, extra_conf ? " --conf '" : "",
           extra_conf ? extra_conf : "", extra_conf ? "'" : "");
  p = popen(cmd, "r");
  if (p == NULL)
    return -1;
  while (fgets(c->conninfo, sizeof(c->conninfo), p) != NULL)
    if (strncmp(c->conninfo, "host=", 5) == 0)
      break;
  if (pclose(p) != 0 || strncmp(c->conninfo, "host=", 5) != 0) {
    fprintf(stderr, "pgcluster start failed: %s\n", c->conninfo);
    return -1;
  }
  c->conninfo[strcspn(c->conninfo, "\n")] = '\0';
  c->up = 1;
  return 0;
}

static void tc_stop (TestCluster *c) {
  char cmd[1200];
  const char *root = getenv("PGTIDE_TEST_ROOT");
  if (!c->up)
    return;
  snprintf(cmd, sizeof(cmd), "%s%stests/lib/pgcluster.sh stop '%s' >/dev/null 2>&1",
           root ? root : "", root ? "/" : "", c->dir);
  if (system(cmd) != 0)
    fprintf(stderr, "pgcluster stop failed for %s\n", c->dir);
  c->up = 0;
}

static PGconn *tc_connect (const char *conninfo) {
  PGconn *conn = PQconnectdb(conninfo);
  if (PQstatus(conn) != CONNECTION_OK) {
    fprintf(stderr, "connect failed: %s\n", PQerrorMessage(conn));
    PQfinish(conn);
    return NULL;
  }
  return conn;
}

/* Run SQL; a failure is a check failure (with the server's message). */
__attribute__((unused))
static int tc_exec (PGconn *conn, const char *sql) {
  PGresult *res = PQexec(conn, sql);
  ExecStatusType st = PQresultStatus(res);
  int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok) {
    test_failed_checks++;
    fprintf(stderr, "SQL failed: %.300s\n  -> %s", sql, PQerrorMessage(conn));
  }
  PQclear(res);
  return ok ? 0 : -1;
}

/* First column of the first row as a malloc'ed string ("" when none;
   NULL on error, counted as a check failure). */
__attribute__((unused))
static char *tc_query1 (PGconn *conn, const char *sql) {
  PGresult *res = PQexec(conn, sql);
  char *out;
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    test_failed_checks++;
    fprintf(stderr, "query failed: %.300s\n  -> %s", sql, PQerrorMessage(conn));
    PQclear(res);
    return NULL;
  }
  out = xstrdup(PQntuples(res) > 0 && PQnfields(res) > 0 ? PQgetvalue(res, 0, 0) : "");
  PQclear(res);
  return out;
}

#endif
