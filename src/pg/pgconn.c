/*
** pgconn.c
** Shared libpq connection setup and error explanation (see pgconn.h).
*/
#include "pg/pgconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"
#include "util/log.h"
#include "util/redact.h"

/*
** Server messages go to the log on one line, marked as coming from the
** server: WARNING at WARN, INFO at INFO, NOTICE and the rest at DEBUG.
*/
static void notice_to_log (void *arg, const PGresult *res) {
  const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char *msg = PQresultErrorMessage(res);
  LogLevel level = LOG_DEBUG;
  size_t n;
  char *line;
  (void)arg;
  if (msg == NULL)
    return;
  /* NOTICEs ("... already exists, skipping") are routine: debug level; a
     WARNING is worth a look; INFO is output a statement asked for */
  if (sev != NULL && strcmp(sev, "WARNING") == 0)
    level = LOG_WARN;
  else if (sev != NULL && strcmp(sev, "INFO") == 0)
    level = LOG_INFO;
  line = xstrdup(msg);
  n = strlen(line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
    line[--n] = '\0';
  for (n = 0; line[n]; n++)
    if (line[n] == '\n')
      line[n] = ' ';
  log_msg(level, "server: %s", line);
  free(line);
}

static int looks_like_conninfo (const char *s) {
  return strchr(s, '=') != NULL || strncmp(s, "postgresql://", 13) == 0 ||
         strncmp(s, "postgres://", 11) == 0;
}

/* Register the password this conninfo carries (if any) as a secret, so
   every later message that might echo it is masked. */
static void register_password (const char *conninfo) {
  char *errmsg = NULL;
  PQconninfoOption *opts, *o;
  redact_register(getenv("PGPASSWORD"));
  if (!looks_like_conninfo(conninfo))
    return;
  opts = PQconninfoParse(conninfo, &errmsg);
  if (opts == NULL) {
    PQfreemem(errmsg);
    return;
  }
  for (o = opts; o->keyword != NULL; o++)
    if (strcmp(o->keyword, "password") == 0 && o->val != NULL)
      redact_register(o->val);
  PQconninfoFree(opts);
}

/* Append a conninfo value in single quotes, escaping ' and \\. */
static void conninfo_quote (Buf *b, const char *v) {
  buf_putc(b, '\'');
  for (; *v; v++) {
    if (*v == '\'' || *v == '\\')
      buf_putc(b, '\\');
    buf_putc(b, *v);
  }
  buf_putc(b, '\'');
}

char *pgconn_safe_conninfo (const char *conninfo) {
  return redact_str(conninfo);
}

/* See pgconn.h: one keyword's value, with libpq's own defaults for what
   the conninfo leaves out (dbname defaults to the user, as for a real
   connection).  Caller frees; NULL when unset or unparseable. */
char *pgconn_conninfo_value (const char *conninfo, const char *keyword) {
  char *errmsg = NULL, *out = NULL;
  const char *user = NULL;
  PQconninfoOption *opts, *o, *defs = NULL;
  opts = looks_like_conninfo(conninfo) ? PQconninfoParse(conninfo, &errmsg) : PQconninfoParse("", &errmsg);
  if (opts == NULL) {
    PQfreemem(errmsg);
    return NULL;
  }
  for (o = opts; o->keyword != NULL; o++) {
    if (strcmp(o->keyword, keyword) == 0 && o->val != NULL && o->val[0] != '\0')
      out = xstrdup(o->val);
    if (strcmp(o->keyword, "user") == 0 && o->val != NULL && o->val[0] != '\0')
      user = o->val;
  }
  if (out == NULL) {
    /* the environment and libpq's defaults (PGDATABASE, PGUSER, the OS user) */
    defs = PQconndefaults();
    for (o = defs; o != NULL && o->keyword != NULL; o++) {
      if (strcmp(o->keyword, keyword) == 0 && o->val != NULL && o->val[0] != '\0')
        out = xstrdup(o->val);
      if (user == NULL && strcmp(o->keyword, "user") == 0 && o->val != NULL && o->val[0] != '\0')
        user = o->val;
    }
    if (out == NULL && strcmp(keyword, "dbname") == 0 && user != NULL)
      out = xstrdup(user);
  }
  if (defs != NULL)
    PQconninfoFree(defs);
  PQconninfoFree(opts);
  return out;
}

/* Known causes of connection failures: a substring of libpq's message,
   a short kind for scripts and tests, and what to do about it. */
typedef struct Cause {
  const char *needle, *kind, *hint;
} Cause;

static const Cause causes[] = {
  {"no pg_hba.conf entry", "hba",
   "the server's pg_hba.conf does not allow this client, user or database (or requires TLS)"},
  {"password authentication failed", "auth",
   "check the user name and password (environment PGPASSWORD, ~/.pgpass or PGPASSFILE)"},
  {"no password supplied", "auth",
   "check the user name and password (environment PGPASSWORD, ~/.pgpass or PGPASSFILE)"},
  {"SCRAM", "auth", "check the user name and password"},
  {"database \"", "database", NULL},  /* needs "does not exist" too: see below */
  {"Connection refused", "unreachable", NULL},
  {"could not translate host name", "unreachable", NULL},
  {"timeout expired", "unreachable", NULL},
  {"No route to host", "unreachable", NULL},
  {"Network is unreachable", "unreachable", NULL},
  {"could not connect to server", "unreachable", NULL},
  {"certificate", "tls", NULL},
  {"SSL", "tls", NULL},
  {"ssl", "tls", NULL},
  {"permission denied", "privilege", "the role lacks a privilege: see the message for which one"},
  {"must be superuser", "privilege", "the role lacks a privilege: see the message for which one"},
  {"replication", "privilege", "the role lacks a privilege: see the message for which one"},
  {NULL, NULL, NULL}
};

static const char *const hint_database =
  "the database name is wrong, or it has not been created yet";
static const char *const hint_unreachable =
  "the server is not reachable: check host, port, firewall or security group, and that PostgreSQL is running";
static const char *const hint_tls =
  "TLS failed: check sslmode, sslrootcert and that the server certificate matches the host name";

/* The known cause a libpq connection message matches, or NULL. */
static const Cause *cause_of (const char *msg) {
  const Cause *c;
  if (msg == NULL)
    return NULL;
  for (c = causes; c->needle != NULL; c++) {
    if (strstr(msg, c->needle) == NULL)
      continue;
    if (strcmp(c->kind, "database") == 0 && strstr(msg, "does not exist") == NULL)
      continue;
    return c;
  }
  return NULL;
}

const char *pgconn_error_kind (const char *msg) {
  const Cause *c = cause_of(msg);
  return c != NULL ? c->kind : NULL;
}

/* The hint shown for a connection failure's cause, or NULL. */
static const char *hint_for (const char *msg) {
  const Cause *c = cause_of(msg);
  if (c == NULL)
    return NULL;
  if (c->hint != NULL)
    return c->hint;
  if (strcmp(c->kind, "database") == 0)
    return hint_database;
  if (strcmp(c->kind, "unreachable") == 0)
    return hint_unreachable;
  return hint_tls;
}

/* "cannot connect to LABEL (host H port P): <libpq message>; hint: ..."
   on one line, redacted, into err (the hint for the common causes). */
void pgconn_explain (PGconn *conn, const char *label, char *err, size_t errlen) {
  const char *raw = conn != NULL ? PQerrorMessage(conn) : "out of memory";
  Buf b = BUF_INIT;
  char *masked;
  const char *hint;
  size_t n;
  buf_printf(&b, "cannot connect to %s", label != NULL ? label : "database");
  if (conn != NULL && PQhost(conn) != NULL && PQhost(conn)[0] != '\0')
    buf_printf(&b, " (host %s port %s)", PQhost(conn), PQport(conn));
  buf_puts(&b, ": ");
  buf_puts(&b, raw);
  while (b.len > 0 && (b.data[b.len - 1] == '\n' || b.data[b.len - 1] == ' '))
    b.data[--b.len] = '\0';
  hint = hint_for(raw);
  if (hint != NULL)
    buf_printf(&b, "; hint: %s", hint);
  masked = redact_str(buf_cstr(&b));
  /* multi-line libpq messages become one line, without runs of blanks */
  {
    size_t w = 0;
    for (n = 0; masked[n]; n++) {
      char ch = (masked[n] == '\n' || masked[n] == '\t') ? ' ' : masked[n];
      if (ch == ' ' && w > 0 && masked[w - 1] == ' ')
        continue;
      masked[w++] = ch;
    }
    masked[w] = '\0';
  }
  strlcpy_(err, masked, errlen);
  free(masked);
  buf_free(&b);
}

/* "[SQLSTATE] message (detail)" for a failed result, redacted; the
   connection's message when there is no result. */
void pgconn_result_error (const PGresult *res, PGconn *conn, char *err, size_t errlen) {
  const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
  const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
  Buf b = BUF_INIT;
  char *masked;
  if (msg == NULL)
    msg = conn ? PQerrorMessage(conn) : "unknown error";
  if (state != NULL)
    buf_printf(&b, "[%s] ", state);
  buf_puts(&b, msg);
  if (detail != NULL)
    buf_printf(&b, " (%s)", detail);
  while (b.len > 0 && b.data[b.len - 1] == '\n')
    b.data[--b.len] = '\0';
  masked = redact_str(buf_cstr(&b));
  strlcpy_(err, masked, errlen);
  free(masked);
  buf_free(&b);
}

/*
** Open a connection (see pgconn.h).  Defaults the conninfo can override:
** application_name pgtide (or PGAPPNAME), connect_timeout 10 s (or
** PGCONNECT_TIMEOUT), and TCP keepalives after 30 s idle, every 10 s, 6
** unanswered probes: a server that vanished without closing the
** connection (failover, a NAT or firewall dropping it) ends a wait for
** a result within about 90 s instead of never.  Passwords (given or from .pgpass) are registered
** for redaction; notices go to the log.  NULL with a redacted,
** actionable message in err on failure; the caller owns the connection.
*/
PGconn *pgconn_open (const char *conninfo, const char *label, PgConnKind kind,
                     char *err, size_t errlen) {
  const char *keys[9], *vals[9];
  int n = 0;
  PGconn *conn;
  char *perr = NULL;
  PQconninfoOption *opts;
  register_password(conninfo);
  /* a bare database name ("mydb") is not a conninfo: libpq takes it as is */
  opts = looks_like_conninfo(conninfo) ? PQconninfoParse(conninfo, &perr)
                                       : PQconninfoParse("", &perr);
  if (opts == NULL) {
    char *m = redact_str(perr != NULL ? perr : "invalid connection string");
    snprintf(err, errlen, "invalid %s connection string: %s", label ? label : "database", m);
    free(m);
    PQfreemem(perr);
    return NULL;
  }
  PQconninfoFree(opts);
  /* later keywords override earlier ones: defaults first, then the
     caller's conninfo (expanded by dbname), then forced settings */
  keys[n] = "application_name"; vals[n++] = getenv("PGAPPNAME") ? getenv("PGAPPNAME") : "pgtide";
  keys[n] = "connect_timeout"; vals[n++] = getenv("PGCONNECT_TIMEOUT") ? getenv("PGCONNECT_TIMEOUT") : "10";
  keys[n] = "keepalives_idle"; vals[n++] = "30";
  keys[n] = "keepalives_interval"; vals[n++] = "10";
  keys[n] = "keepalives_count"; vals[n++] = "6";
  keys[n] = "dbname"; vals[n++] = conninfo;
  if (kind == PGCONN_REPLICATION) {
    keys[n] = "replication"; vals[n++] = "database";
  }
  keys[n] = NULL; vals[n] = NULL;
  conn = PQconnectdbParams(keys, vals, 1);
  if (conn != NULL && PQpass(conn) != NULL)  /* e.g. read from .pgpass */
    redact_register(PQpass(conn));
  if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
    pgconn_explain(conn, label, err, errlen);
    if (conn != NULL)
      PQfinish(conn);
    return NULL;
  }
  PQsetNoticeReceiver(conn, notice_to_log, NULL);
  return conn;
}

int pgconn_server_version (PGconn *conn) {
  return conn != NULL ? PQserverVersion(conn) : 0;
}

/* The conninfo without its password, the password apart (both caller
   frees); NULL with a message in err when it cannot be parsed. */
char *pgconn_strip_password (const char *conninfo, char **password, char *err, size_t errlen) {
  char *perr = NULL;
  PQconninfoOption *opts, *o;
  Buf b = BUF_INIT;
  *password = NULL;
  if (!looks_like_conninfo(conninfo)) {  /* a bare database name */
    buf_puts(&b, "dbname=");
    conninfo_quote(&b, conninfo);
    return buf_steal(&b);
  }
  opts = PQconninfoParse(conninfo, &perr);
  if (opts == NULL) {
    char *m = redact_str(perr != NULL ? perr : "invalid connection string");
    snprintf(err, errlen, "invalid connection string: %s", m);
    free(m);
    PQfreemem(perr);
    return NULL;
  }
  for (o = opts; o->keyword != NULL; o++) {
    if (o->val == NULL)
      continue;
    if (strcmp(o->keyword, "password") == 0) {
      free(*password);
      *password = xstrdup(o->val);
      continue;
    }
    if (b.len > 0)
      buf_putc(&b, ' ');
    buf_printf(&b, "%s=", o->keyword);
    conninfo_quote(&b, o->val);
  }
  PQconninfoFree(opts);
  return buf_steal(&b);
}
