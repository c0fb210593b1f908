/*
** pgcluster.h
** Throwaway PostgreSQL clusters for the C tests in tests/cintegration,
** through tests/lib/pgcluster.sh (the one cluster helper the Lua tests,
** the demo and the benchmarks use too):
**
**   TestCluster c;
**   if (tc_start(&c, "name", NULL) == 0) { ... c.conninfo ...; tc_stop(&c); }
**
** Clusters live under $TEST_TMP (set by tests/run.sh) or a private
** directory, named NAME-PID.  Header-only (static functions).
*/
#ifndef PGTIDE_PGCLUSTER_H
#define PGTIDE_PGCLUSTER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/buf.h"

typedef struct TestCluster {
  char dir[512];
  char conninfo[512];
  int up;
} TestCluster;

/* Directory for clusters: $TEST_TMP (tests/run.sh) or a private one;
   PGPASSFILE points into it so libpq finds the generated password. */
__attribute__((unused))
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
__attribute__((unused))
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

/* Stop the cluster and remove its directory; a cluster not started is a
   no-op. */
__attribute__((unused))
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

#endif
