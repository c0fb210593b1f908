/*
** pgconn.h
** Opening libpq connections the same way everywhere (pg module, full
** load, CDC, validation): application_name=pgtide, a connect timeout,
** libpq environment variables, .pgpass and sslmode honoured, server
** NOTICEs sent to the log, and error messages that
** say what failed and what to do without ever showing a password.
*/
#ifndef PGTIDE_PGCONN_H
#define PGTIDE_PGCONN_H

#include <stddef.h>
#include <libpq-fe.h>

#define PGCONN_ERRLEN 1024

typedef enum PgConnKind {
  PGCONN_NORMAL = 0,
  PGCONN_REPLICATION      /* replication=database (logical walsender) */
} PgConnKind;

/*
** Open a connection.  'conninfo' is a keyword/value string or a URI;
** 'label' names the endpoint in messages ("source", "target").  On
** failure returns NULL and writes a redacted, actionable message to err.
** The caller owns the returned connection (PQfinish).
*/
PGconn *pgconn_open(const char *conninfo, const char *label, PgConnKind kind,
                    char *err, size_t errlen);

/* Explain a failed connection: the libpq message (redacted) plus a hint
   for the common causes (wrong password, unreachable host, missing
   database, TLS verification failure). */
void pgconn_explain(PGconn *conn, const char *label, char *err, size_t errlen);

/* The kind of a connection failure, from libpq's message: "auth",
   "database", "unreachable", "tls", "hba", "privilege", or NULL. */
const char *pgconn_error_kind(const char *msg);

/* Format the error of a failed result: "[SQLSTATE] message (detail)". */
void pgconn_result_error(const PGresult *res, PGconn *conn, char *err, size_t errlen);

/* The conninfo with any password removed, for logs (caller frees). */
char *pgconn_safe_conninfo(const char *conninfo);

/*
** For running client tools (pg_dump, pg_restore, psql): the conninfo as
** keyword/value pairs without its password (caller frees), and the
** password apart in *password (caller frees; NULL when there is none),
** so the password can travel in a private file instead of a command
** line.  Returns NULL on a parse error, with the message in err.
*/
char *pgconn_strip_password(const char *conninfo, char **password, char *err, size_t errlen);

/* The value a connection would use for 'keyword' (e.g. "dbname": from
   the conninfo, the environment, or the user name), caller frees; NULL
   when there is none or the conninfo does not parse. */
char *pgconn_conninfo_value(const char *conninfo, const char *keyword);

/* Server version as an integer (150004), 0 when unknown. */
int pgconn_server_version(PGconn *conn);

#endif
