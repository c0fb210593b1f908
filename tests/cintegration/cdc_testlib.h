/*
** cdc_testlib.h
** Helpers shared by the CDC tests: throwaway clusters (pgcluster.h), and
** small libpq wrappers that record a check failure instead of aborting.
** Header-only (static functions) so each test program stays one file for
** the Makefile's glob.
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
#include "pgcluster.h"
#include "util/buf.h"

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
