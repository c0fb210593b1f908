/*
** parallel_sql.h
** Running a list of independent SQL statements on N connections at once:
** the post-data phase of a load (CREATE INDEX, ADD CONSTRAINT ... USING
** INDEX, VALIDATE CONSTRAINT, VACUUM ANALYZE).  Statements start in list
** order (put the longest first); each runs in autocommit on whichever
** connection is free.  A statement that fails on a deadlock or a lock
** timeout is retried; other failures are recorded per statement.
** Interrupts cancel the statements in flight.  Lua-free.
*/
#ifndef PGTIDE_PARALLEL_SQL_H
#define PGTIDE_PARALLEL_SQL_H

#include <stddef.h>
#include <libpq-fe.h>

typedef struct SqlTask {
  const char *sql;       /* borrowed from the caller */
  int status;            /* 0 not run, 1 done, -1 failed */
  char *error;           /* when failed (owned; sql_tasks_free) */
  char sqlstate[6];
  double seconds;
} SqlTask;

typedef struct SqlParallelOptions {
  const char *conninfo;
  const char *label;       /* endpoint name in messages ("target") */
  const char *what;        /* phase name in progress lines ("post-data") */
  int jobs;                /* connections; <= 0: number of cores */
  const char *setup_sql;   /* run once on each connection (SET ...), may be NULL */
  int stop_on_error;       /* stop starting statements after the first failure */
  int progress;            /* status line on a TTY, log lines otherwise */
  int retries;             /* retries on deadlock / lock timeout (default 3) */
} SqlParallelOptions;

/*
** Run the tasks.  Returns 0 when every statement succeeded, -1 when some
** failed (their tasks say why), 1 when interrupted (unstarted tasks keep
** status 0), -2 when no connection could be opened (err says why).
*/
int sql_parallel_run(const SqlParallelOptions *o, SqlTask *tasks, int n, char *err, size_t errlen);

void sql_tasks_free(SqlTask *tasks, int n);

/* A statement on one line for messages: comment lines dropped, runs of
   white space collapsed, at most max-1 bytes. */
void sql_one_line(const char *sql, char *out, size_t max);

#endif
