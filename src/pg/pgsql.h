/*
** pgsql.h
** The small SQL helpers every libpq caller shares: identifiers and
** literals quoted into a Buf (no connection needed), text[] array
** literals, running a command with its error formatted the one way
** (pgconn_result_error), and which SQLSTATEs are worth a retry.
** Lua-free; nothing here raises.
*/
#ifndef PGTIDE_PGSQL_H
#define PGTIDE_PGSQL_H

#include <stddef.h>
#include <libpq-fe.h>

struct Buf;

/* Append 's' as a double-quoted identifier, inner quotes doubled.
   Always quoted (so the case and any character survive). */
void pgsql_quote_ident(struct Buf *b, const char *s);

/* The same for the first n bytes of s (not NUL-terminated). */
void pgsql_quote_ident_n(struct Buf *b, const char *s, size_t n);

/* Append 's' as a single-quoted string literal, inner quotes doubled
   (no backslash escapes: standard_conforming_strings is on). */
void pgsql_quote_literal(struct Buf *b, const char *s);

/* Append a text[] array literal of v[0], v[stride], ... (n elements;
   "{}" when n is 0), each element double-quoted, " and \ escaped.
   Goes inside a parameter or a quoted literal. */
void pgsql_text_array(struct Buf *b, const char *const *v, int n, int stride);

/* Whether a result is a success (COMMAND_OK or TUPLES_OK). */
int pgsql_result_ok(const PGresult *res);

/*
** Run 'sql' with PQexec (the simple protocol: several statements
** allowed).  Returns 0, or -1 with the error (pgconn_result_error:
** redacted, one message with detail and hint) in err and its SQLSTATE
** in sqlstate when that is not NULL ("" when none).
*/
int pgsql_exec(PGconn *conn, const char *sql, char *err, size_t errlen, char sqlstate[6]);

/*
** Run one statement with n text parameters (PQexecParams).  On success
** returns 0 and hands the result to *out when out is not NULL (caller
** clears); otherwise as pgsql_exec.
*/
int pgsql_exec_params(PGconn *conn, const char *sql, int n, const char *const *vals,
                      PGresult **out, char *err, size_t errlen, char sqlstate[6]);

/* Which failures a caller retries (pgsql_retryable). */
typedef enum PgsqlRetry {
  /* A statement that lost a lock race and may simply run again on the
     same connection: deadlock (40P01), lock timeout (55P03).  Post-load
     and post-data statements (CREATE INDEX, ADD CONSTRAINT ...). */
  PGSQL_RETRY_LOCK,
  /* A failure that a new attempt (often on a new connection) may not
     meet: the LOCK states, connection exceptions (08), operator
     intervention (57P: shutdown, restart), transaction rollback (40:
     serialization, deadlock), insufficient resources (53), object in
     use (55006).  The CDC apply. */
  PGSQL_RETRY_TRANSIENT
} PgsqlRetry;

/* Whether 'sqlstate' (NULL or "" is never retryable) is worth another
   attempt for a caller of that kind. */
int pgsql_retryable(const char *sqlstate, PgsqlRetry kind);

#endif
