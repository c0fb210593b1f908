/*
** validate.c
** Row-level data validation (see validate.h for the method).
**
** Layout of this file:
**   helpers        names, quoting, truncation, key ordering, LIS
**   key map        open-addressing hash map of encoded keys
**   connections    session settings, waits with timeouts, byte counts
**   planning       catalog on both sides, keys, columns, chunk bounds
**   chunks         per-chunk aggregate, drill-down, re-split
**   multiset       tables without a usable key
**   finishing      unmatched keys -> rows, column details, sorting
**   workers        threads over (table, chunk) units, progress
**   snapshots      offline / consistent point (fence + hook)
**   re-check       RECHECK mode
**
** Ownership: everything a VTable or the Run allocates is freed by
** run_free(); the report's strings are owned by the report.  Errors in
** one table become that table's VT_ERROR; a broken connection or an
** interrupt stops the run (Run.fatal).
*/
#include "validate/validate.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/tcp.h>

#include <libpq-fe.h>

#include "pg/pgconn.h"
#include "pg/pgio.h"
#include "util/buf.h"
#include "util/interrupt.h"
#include "util/log.h"
#include "util/redact.h"

#define ERRLEN 1024
#define KEY_BATCH 200          /* keys per "WHERE key IN (...)" query */
#define PENDING_CAP 200000     /* unmatched keys held per table */
#define STORE_CAP 10000        /* differing keys kept per table for details and re-checks */
#define RESPLIT_FACTOR 4       /* re-split a differing chunk this much bigger than planned */
#define MAX_BUCKETS 65536      /* multiset tables: hash buckets */
#define ROWS_PER_BUCKET 1000

/* {======================================================================
** Helpers
** ======================================================================= */

static double now_s (void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void validate_options_init (VOptions *o) {
  memset(o, 0, sizeof(*o));
  o->jobs = 1;
  o->chunk_rows = 20000;
  o->max_rows = 100;
  o->max_value_len = 64;
  o->mode = VMODE_OFFLINE;
  o->recheck_times = 3;
  o->recheck_delay = 10;
  o->statement_timeout_s = 3600;
  o->lock_timeout_ms = 5000;
  o->scan = 1;
  o->scan_split_pages = 8192;
}

const char *validate_status_name (VTableStatus s) {
  switch (s) {
    case VT_EQUAL: return "equal";
    case VT_DIFFERENT: return "different";
    case VT_MISSING_ON_TARGET: return "missing_on_target";
    case VT_NOT_FOUND: return "not_found";
    case VT_ERROR: return "error";
  }
  return "?";
}

const char *validate_kind_name (VDiffKind k) {
  switch (k) {
    case VDIFF_MISSING: return "missing";
    case VDIFF_EXTRA: return "extra";
    case VDIFF_CHANGED: return "changed";
  }
  return "?";
}

const char *validate_mode_name (VMode m) {
  switch (m) {
    case VMODE_OFFLINE: return "offline";
    case VMODE_CONSISTENT: return "consistent";
    case VMODE_RECHECK: return "recheck";
  }
  return "?";
}

int validate_mode_from_name (const char *name) {
  if (name == NULL) return -1;
  if (strcmp(name, "offline") == 0) return VMODE_OFFLINE;
  if (strcmp(name, "consistent") == 0) return VMODE_CONSISTENT;
  if (strcmp(name, "recheck") == 0) return VMODE_RECHECK;
  return -1;
}

void validate_quote_ident (Buf *b, const char *ident) {
  const char *p;
  buf_putc(b, '"');
  for (p = ident; *p; p++) {
    if (*p == '"')
      buf_putc(b, '"');
    buf_putc(b, *p);
  }
  buf_putc(b, '"');
}

/* Read one identifier part at *pp (quoted or not) up to an unquoted dot
   or the end.  Returns a new string or NULL when malformed. */
static char *parse_part (const char **pp) {
  const char *p = *pp;
  Buf b = BUF_INIT;
  if (*p == '"') {
    p++;
    for (;;) {
      if (*p == '\0') {
        buf_free(&b);
        return NULL;
      }
      if (*p == '"') {
        if (p[1] == '"') {
          buf_putc(&b, '"');
          p += 2;
          continue;
        }
        p++;
        break;
      }
      buf_putc(&b, *p++);
    }
  } else {
    while (*p && *p != '.')
      buf_putc(&b, *p++);
  }
  *pp = p;
  if (b.len == 0) {
    buf_free(&b);
    return NULL;
  }
  return buf_steal(&b);
}

int validate_parse_name (const char *in, char **schema, char **name) {
  const char *p = in;
  char *a, *b;
  *schema = *name = NULL;
  if (in == NULL || (a = parse_part(&p)) == NULL)
    return -1;
  if (*p == '\0') {
    *schema = xstrdup("public");
    *name = a;
    return 0;
  }
  if (*p != '.') {
    free(a);
    return -1;
  }
  p++;
  b = parse_part(&p);
  if (b == NULL || *p != '\0') {
    free(a);
    free(b);
    return -1;
  }
  *schema = a;
  *name = b;
  return 0;
}

char *validate_truncate (const char *v, int max) {
  size_t n;
  Buf b = BUF_INIT;
  char *masked;
  if (v == NULL)
    return NULL;
  n = strlen(v);
  if (max > 0 && n > (size_t)max) {
    n = (size_t)max;
    while (n > 0 && ((unsigned char)v[n] & 0xC0) == 0x80)  /* not inside a UTF-8 sequence */
      n--;
    buf_append(&b, v, n);
    buf_puts(&b, "...");
  } else {
    buf_append(&b, v, n);
  }
  masked = redact_str(buf_cstr(&b));   /* data never carries a registered secret out */
  buf_free(&b);
  return masked;
}

static int is_integer_text (const char *s) {
  if (*s == '-')
    s++;
  if (*s == '\0')
    return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9')
      return 0;
  return 1;
}

int validate_keycmp (const char *a, const char *b) {
  if (is_integer_text(a) && is_integer_text(b)) {
    int na = a[0] == '-', nb = b[0] == '-';
    size_t la, lb;
    int c;
    if (na != nb)
      return na ? -1 : 1;
    a += na;
    b += nb;
    while (*a == '0' && a[1]) a++;
    while (*b == '0' && b[1]) b++;
    la = strlen(a);
    lb = strlen(b);
    if (la != lb)
      c = la < lb ? -1 : 1;
    else
      c = strcmp(a, b);
    if (c > 0) c = 1;
    if (c < 0) c = -1;
    return na ? -c : c;
  }
  return strcmp(a, b);
}

int validate_monotone_subset (const int *order, int n, int *keep) {
  /* patience sorting: tails[l] = index of the smallest tail of an
     increasing subsequence of length l+1; prev[] links the chain */
  int *tails, *prev, len = 0, i, k;
  if (n <= 0)
    return 0;
  tails = xmalloc(sizeof(int) * (size_t)n);
  prev = xmalloc(sizeof(int) * (size_t)n);
  for (i = 0; i < n; i++) {
    int lo = 0, hi = len;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      if (order[tails[mid]] < order[i]) lo = mid + 1; else hi = mid;
    }
    prev[i] = lo > 0 ? tails[lo - 1] : -1;
    tails[lo] = i;
    if (lo == len)
      len++;
  }
  for (k = len - 1, i = tails[len - 1]; k >= 0; k--, i = prev[i])
    keep[k] = i;
  free(tails);
  free(prev);
  return len;
}

/* }====================================================================== */

/* {======================================================================
** Key map: encoded key -> (side, row hash).  Keys are encoded as
** length-prefixed column texts, so they compare bytewise and decode back.
** Deletion uses backward shifting (no tombstones).
** ======================================================================= */

typedef struct KEntry {
  char *key;                /* NULL: empty slot; owned */
  uint32_t klen;
  uint64_t kh;
  int64_t rowhash;
  int side;                 /* 0 source, 1 target */
} KEntry;

typedef struct KMap {
  KEntry *e;
  size_t cap, n;
} KMap;

static uint64_t fnv1a (const char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  size_t i;
  for (i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= 1099511628211ULL;
  }
  return h ^ (h >> 29);
}

static void kmap_free (KMap *m) {
  size_t i;
  for (i = 0; i < m->cap; i++)
    free(m->e[i].key);
  free(m->e);
  m->e = NULL;
  m->cap = m->n = 0;
}

static KEntry *kmap_find (KMap *m, const char *k, uint32_t klen, uint64_t kh) {
  size_t i;
  if (m->cap == 0)
    return NULL;
  for (i = kh & (m->cap - 1); m->e[i].key != NULL; i = (i + 1) & (m->cap - 1))
    if (m->e[i].kh == kh && m->e[i].klen == klen && memcmp(m->e[i].key, k, klen) == 0)
      return &m->e[i];
  return NULL;
}

static void kmap_grow (KMap *m) {
  KEntry *old = m->e;
  size_t oldcap = m->cap, i;
  m->cap = oldcap ? oldcap * 2 : 1024;
  m->e = xcalloc(m->cap, sizeof(KEntry));
  for (i = 0; i < oldcap; i++) {
    size_t j;
    if (old[i].key == NULL)
      continue;
    for (j = old[i].kh & (m->cap - 1); m->e[j].key != NULL; j = (j + 1) & (m->cap - 1))
      ;
    m->e[j] = old[i];
  }
  free(old);
}

/* Insert a key known to be absent; the map copies it. */
static KEntry *kmap_add (KMap *m, const char *k, uint32_t klen, uint64_t kh) {
  size_t i;
  if ((m->n + 1) * 4 > m->cap * 3)
    kmap_grow(m);
  for (i = kh & (m->cap - 1); m->e[i].key != NULL; i = (i + 1) & (m->cap - 1))
    ;
  m->e[i].key = xmalloc(klen ? klen : 1);
  memcpy(m->e[i].key, k, klen);
  m->e[i].klen = klen;
  m->e[i].kh = kh;
  m->n++;
  return &m->e[i];
}

static void kmap_del (KMap *m, KEntry *e) {
  size_t i = (size_t)(e - m->e), j = i, mask = m->cap - 1;
  free(e->key);
  m->e[i].key = NULL;
  m->n--;
  for (;;) {
    size_t home;
    j = (j + 1) & mask;
    if (m->e[j].key == NULL)
      break;
    home = m->e[j].kh & mask;
    /* move e[j] into the hole when its home is not in (i, j] cyclically */
    if ((j > i && (home <= i || home > j)) || (j < i && (home <= i && home > j))) {
      m->e[i] = m->e[j];
      m->e[j].key = NULL;
      i = j;
    }
  }
}

/* Encode the key columns of a result row (columns 0..nkey-1). */
static void encode_key (Buf *b, const PGresult *res, int row, int nkey) {
  int j;
  buf_reset(b);
  for (j = 0; j < nkey; j++) {
    uint32_t len = (uint32_t)PQgetlength(res, row, j);
    buf_append(b, &len, sizeof(len));
    buf_append(b, PQgetvalue(res, row, j), len);
  }
}

/* Decode an encoded key into nkey new strings. */
static char **decode_key (const char *k, uint32_t klen, int nkey) {
  char **out = xcalloc((size_t)(nkey > 0 ? nkey : 1), sizeof(char *));
  uint32_t off = 0;
  int j;
  for (j = 0; j < nkey && off + sizeof(uint32_t) <= klen; j++) {
    uint32_t len;
    memcpy(&len, k + off, sizeof(len));
    off += (uint32_t)sizeof(len);
    out[j] = xstrndup(k + off, len);
    off += len;
  }
  for (; j < nkey; j++)
    out[j] = xstrdup("");
  return out;
}

static void free_strv (char **v, int n) {
  int i;
  if (v == NULL)
    return;
  for (i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

/* }====================================================================== */

/* {======================================================================
** Connections
** ======================================================================= */

typedef struct VConn {
  PGconn *c;
  const char *label;        /* "source" / "target" */
  int64_t bytes;            /* received so far (set by vconn_close) */
} VConn;

/* Bytes received on the connection's TCP socket, -1 when not TCP. */
static int64_t socket_bytes_received (PGconn *c) {
  struct tcp_info ti;
  socklen_t len = sizeof(ti);
  int fd = c != NULL ? PQsocket(c) : -1;
  memset(&ti, 0, sizeof(ti));
  if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
    return -1;
  if (len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(ti.tcpi_bytes_received))
    return -1;
  return (int64_t)ti.tcpi_bytes_received;
}

/*
** Session settings that make text forms identical on both servers:
** every value is hashed and compared as its output text.
*/
static const char *SESSION_SQL =
  "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
  "SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; "
  "SET search_path = pg_catalog; SET lc_monetary = 'C'; SET xmloption = content; "
  "SET standard_conforming_strings = on; SET idle_in_transaction_session_timeout = 0";

/*
** Open and configure a connection.  'readonly' makes every transaction
** read-only (workers); the fence connection needs LOCK TABLE.  Returns
** 0 or -1 with a message in err.
*/
static int vconn_open (VConn *vc, const char *conninfo, const char *label, int readonly,
                       int statement_timeout_s, char *err, size_t errlen) {
  PGresult *res;
  Buf sql = BUF_INIT;
  memset(vc, 0, sizeof(*vc));
  vc->label = label;
  vc->c = pgconn_open(conninfo, label, PGCONN_NORMAL, err, errlen);
  if (vc->c == NULL)
    return -1;
  buf_puts(&sql, SESSION_SQL);
  buf_printf(&sql, "; SET statement_timeout = %d", statement_timeout_s * 1000);
  if (readonly)
    buf_puts(&sql, "; SET default_transaction_read_only = on");
  if (PQserverVersion(vc->c) >= 110000)
    buf_puts(&sql, "; SET jit = off");   /* compiling per chunk costs more than it saves */
  res = PQexec(vc->c, buf_cstr(&sql));
  buf_free(&sql);
  if (PQresultStatus(res) != PGRES_COMMAND_OK) {
    char msg[ERRLEN];
    pgconn_result_error(res, vc->c, msg, sizeof(msg));
    snprintf(err, errlen, "%s: session setup failed: %s", label, msg);
    PQclear(res);
    PQfinish(vc->c);
    vc->c = NULL;
    return -1;
  }
  PQclear(res);
  return 0;
}

/* Close (idempotent); adds the bytes received to *total when given. */
static void vconn_close (VConn *vc, int64_t *total) {
  if (vc->c != NULL) {
    int64_t n = socket_bytes_received(vc->c);
    if (n > 0)
      vc->bytes = n;
    PQfinish(vc->c);
    vc->c = NULL;
    if (total != NULL)
      *total += vc->bytes;
  }
}

static long long now_ms (void) {
  return (long long)(now_s() * 1000.0);
}

/*
** Wait until the next result can be read without blocking.  Cancels
** the statement on SIGINT/SIGTERM or after 'timeout_ms' (then waits at
** most 30 s more for the server to answer).  Returns 0, or -1 with a
** message when the connection failed.
*/
static int vwait (VConn *vc, int timeout_ms, char *err, size_t errlen) {
  long long start = now_ms(), cancelled_at = 0;
  while (PQisBusy(vc->c)) {
    struct pollfd p;
    int rc;
    p.fd = PQsocket(vc->c);
    p.events = POLLIN;
    p.revents = 0;
    rc = poll(&p, 1, 200);
    if (rc < 0 && errno != EINTR) {
      snprintf(err, errlen, "%s: poll failed: %s", vc->label, strerror(errno));
      return -1;
    }
    if (rc > 0 && !PQconsumeInput(vc->c)) {
      char *m = redact_str(PQerrorMessage(vc->c));
      snprintf(err, errlen, "%s: connection lost: %s", vc->label, m);
      free(m);
      return -1;
    }
    if (cancelled_at == 0 && (interrupt_requested() ||
                              (timeout_ms > 0 && now_ms() - start > timeout_ms))) {
      char cerr[256];
      pgio_cancel(vc->c, cerr, sizeof(cerr));
      cancelled_at = now_ms();
    } else if (cancelled_at != 0 && now_ms() - cancelled_at > 30000) {
      snprintf(err, errlen, "%s: no answer 30 s after cancelling the statement", vc->label);
      return -1;
    }
  }
  return 0;
}

static int g_timeout_ms;   /* client-side bound per statement (statement_timeout + margin) */

/* Send a parameterized statement; 'single_row' streams its rows. */
static int vsend (VConn *vc, const char *sql, int n, const char *const *params, int single_row,
                  char *err, size_t errlen) {
  if (!PQsendQueryParams(vc->c, sql, n, NULL, params, NULL, NULL, 0)) {
    char *m = redact_str(PQerrorMessage(vc->c));
    snprintf(err, errlen, "%s: cannot send query: %s", vc->label, m);
    free(m);
    return -1;
  }
  if (single_row)
    PQsetSingleRowMode(vc->c);
  return 0;
}

/* Discard what is left of the current command. */
static void vdrain (VConn *vc) {
  PGresult *res;
  char err[ERRLEN];
  for (;;) {
    if (vwait(vc, g_timeout_ms, err, sizeof(err)) != 0)
      return;
    res = PQgetResult(vc->c);
    if (res == NULL)
      return;
    PQclear(res);
  }
}

static int res_ok (const PGresult *res) {
  ExecStatusType s = PQresultStatus(res);
  return s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK || s == PGRES_SINGLE_TUPLE;
}

static void res_error (VConn *vc, const PGresult *res, char *err, size_t errlen) {
  char msg[ERRLEN];
  pgconn_result_error(res, vc->c, msg, sizeof(msg));
  snprintf(err, errlen, "%s: %s", vc->label, msg);
}

/* Collect the complete result of the command sent last (caller clears). */
static PGresult *vcollect (VConn *vc, char *err, size_t errlen) {
  PGresult *keep = NULL, *res;
  for (;;) {
    if (vwait(vc, g_timeout_ms, err, errlen) != 0) {
      PQclear(keep);
      return NULL;
    }
    res = PQgetResult(vc->c);
    if (res == NULL)
      break;
    if (keep == NULL || (res_ok(keep) && !res_ok(res))) {
      PQclear(keep);
      keep = res;
    } else {
      PQclear(res);
    }
  }
  if (keep == NULL) {
    snprintf(err, errlen, "%s: no result", vc->label);
    return NULL;
  }
  if (!res_ok(keep)) {
    res_error(vc, keep, err, errlen);
    PQclear(keep);
    return NULL;
  }
  return keep;
}

/*
** Next row of a single-row-mode command: returns a result holding one
** row, or NULL at the end (*failed = 0) or on error (*failed = 1, the
** command drained, message in err).
*/
static PGresult *vnext (VConn *vc, int *failed, char *err, size_t errlen) {
  PGresult *res;
  *failed = 0;
  for (;;) {
    if (vwait(vc, g_timeout_ms, err, errlen) != 0) {
      *failed = 1;
      return NULL;
    }
    res = PQgetResult(vc->c);
    if (res == NULL)
      return NULL;
    if (PQresultStatus(res) == PGRES_SINGLE_TUPLE)
      return res;
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {   /* end marker */
      PQclear(res);
      continue;
    }
    res_error(vc, res, err, errlen);
    PQclear(res);
    *failed = 1;
    vdrain(vc);
    return NULL;
  }
}

static PGresult *vquery (VConn *vc, const char *sql, int n, const char *const *params,
                         char *err, size_t errlen) {
  if (vsend(vc, sql, n, params, 0, err, errlen) != 0)
    return NULL;
  return vcollect(vc, err, errlen);
}

/* Run one or more statements without parameters (simple protocol). */
static int vexec (VConn *vc, const char *sql, char *err, size_t errlen) {
  PGresult *res;
  if (!PQsendQuery(vc->c, sql)) {
    char *m = redact_str(PQerrorMessage(vc->c));
    snprintf(err, errlen, "%s: cannot send query: %s", vc->label, m);
    free(m);
    return -1;
  }
  res = vcollect(vc, err, errlen);
  if (res == NULL)
    return -1;
  PQclear(res);
  return 0;
}

static int vconn_broken (const VConn *vc) {
  return vc->c == NULL || PQstatus(vc->c) != CONNECTION_OK;
}

/* }====================================================================== */

/* {======================================================================
** Planning: which tables, which columns, which key, which chunks
** ======================================================================= */

typedef struct VCol {
  char *name;
  char *stype, *ttype;      /* format_type() on each side */
  char *scoll, *tcoll;      /* non-default collation (qualified), or NULL */
  int collatable;
} VCol;

/* A stored difference of a keyed table. */
typedef struct KeyDiff {
  VDiffKind kind;
  char *key;                /* encoded */
  uint32_t klen;
  char **texts;             /* decoded (finish) */
} KeyDiff;

/* A row-hash group of a multiset table. */
typedef struct HashDiff {
  int64_t h, cs, ct;
} HashDiff;

typedef struct VTable {
  VTableResult *res;
  unsigned soid, toid;
  char skind, tkind;
  char *from_src, *from_tgt;   /* FROM item, "ONLY" for plain tables (inheritance) */
  char *qname;                 /* "schema"."table" */
  VCol *cols;
  int ncols;
  int *key;                    /* indexes into cols */
  int nkey;
  int key_collatable;
  double est_rows;
  char **bounds;               /* nbounds * nkey texts, increasing on both sides */
  int nbounds;
  /* one-pass chunk aggregates (single-column keys): block ranges per side */
  int nscan;                   /* scan units (0: per-chunk range queries instead) */
  int64_t pages[2];            /* heap blocks on each side */
  char *bounds_array[2];       /* the bounds as an array literal */
  int64_t *acc_cnt[2];         /* per chunk: row count, */
  __int128 *acc_sum[2];        /* and hash sum, on each side */
  int scans_left;
  char *hexpr;                 /* the row hash, a bigint expression */
  char *kexpr;                 /* a hash of the key alone (narrowing differing chunks) */
  /* runtime, under mu */
  pthread_mutex_t mu;
  int chunks_left;
  KMap pending;                /* unmatched keys across chunks */
  int64_t over_missing, over_extra, over_changed;   /* counted, not stored */
  KeyDiff *changed;
  int nchanged, capchanged;
  HashDiff *hdiffs;            /* multiset */
  int nhdiffs;
  char *error;
  double started;
  int overflow;                /* not every differing row is stored */
  KeyDiff *diffs;              /* after finish: stored differences, sorted */
  int ndiffs;
} VTable;

typedef struct Run {
  const VOptions *o;
  VReport *r;
  VTable *tables;
  int ntables;
  VConn msrc, mtgt;            /* planning, snapshot export, re-checks */
  int md5hash;                 /* a server older than 11: hash with md5 */
  /* the current pass */
  struct Unit *units;
  int nunits, next, capunits;
  int inflight;                /* units taken and not finished */
  int snapshot;                /* workers read exported snapshots */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int running;
  int fatal;
  char fatal_msg[ERRLEN];
  int64_t rows_done, rows_total;
  int tables_done, tables_total;
} Run;

typedef enum UnitKind {
  U_CHUNK = 0,                 /* one chunk: aggregate both sides, narrow down */
  U_MULTISET,                  /* a table without a key, whole */
  U_SCAN,                      /* block range 'part' of both sides: every chunk's aggregate */
  U_DRILL                      /* a chunk the scan found different: narrow down */
} UnitKind;

typedef struct Unit {
  int table;
  UnitKind kind;
  int chunk;                   /* U_CHUNK, U_DRILL: 0..nbounds */
  int part;                    /* U_SCAN: 0..nscan-1 */
} Unit;

static void set_fatal (Run *run, const char *msg) {
  pthread_mutex_lock(&run->mu);
  if (!run->fatal) {
    run->fatal = 1;
    strlcpy_(run->fatal_msg, msg, sizeof(run->fatal_msg));
  }
  pthread_cond_broadcast(&run->cv);
  pthread_mutex_unlock(&run->mu);
}

static void table_fail (VTable *t, const char *msg) {
  pthread_mutex_lock(&t->mu);
  if (t->error == NULL)
    t->error = redact_str(msg);
  pthread_mutex_unlock(&t->mu);
}

static int table_failed (VTable *t) {
  int f;
  pthread_mutex_lock(&t->mu);
  f = t->error != NULL;
  pthread_mutex_unlock(&t->mu);
  return f;
}

/* Every user table that holds data: plain and partitioned tables that are
   not partitions themselves, outside the system schemas and extensions.
   est_rows and bytes add up the leaves of a partitioned table. */
static const char *TABLES_SQL =
  "WITH RECURSIVE rels AS ("
  "  SELECT c.oid, n.nspname, c.relname, c.relkind"
  "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
  "  WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
  "    AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
  "    AND n.nspname !~ '^pg_(toast|temp_)'"
  "    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
  "                    AND d.objid = c.oid AND d.deptype = 'e')"
  "), tree AS ("
  "  SELECT oid AS root, oid AS rel, relkind FROM rels"
  "  UNION ALL"
  "  SELECT t.root, i.inhrelid, c.relkind FROM tree t"
  "  JOIN pg_inherits i ON i.inhparent = t.rel JOIN pg_class c ON c.oid = i.inhrelid"
  "  WHERE t.relkind = 'p'"
  ") SELECT r.oid, r.nspname, r.relname, r.relkind,"
  "  (SELECT coalesce(sum(CASE WHEN c.reltuples >= 0 AND c.relpages > 0"
  "        THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / 8192)"
  "        ELSE pg_relation_size(c.oid) / 8192 * 60 END), 0)::float8"
  "   FROM tree t JOIN pg_class c ON c.oid = t.rel WHERE t.root = r.oid AND c.relkind = 'r'),"
  "  (SELECT coalesce(sum(pg_table_size(t.rel)), 0)::int8"
  "   FROM tree t WHERE t.root = r.oid AND t.relkind = 'r'),"
  "  (SELECT coalesce(max(pg_relation_size(t.rel)), 0) / 8192"
  "   FROM tree t WHERE t.root = r.oid AND t.relkind = 'r')::int8"
  " FROM rels r ORDER BY 2, 3";

static const char *COLUMNS_SQL =
  "SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attcollation <> 0,"
  "  (SELECT quote_ident(n.nspname) || '.' || quote_ident(co.collname)"
  "   FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace"
  "   WHERE co.oid = a.attcollation AND co.collname <> 'default')"
  " FROM pg_attribute a WHERE a.attrelid = ANY ($1::oid[]) AND a.attnum > 0"
  "   AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum";

/* Candidate keys: the primary key, then unique indexes (replica identity
   first, fewest columns first).  %s: the key-column count expression. */
static const char *KEYS_SQL =
  "SELECT i.indrelid, i.indexrelid, ic.relname, i.indisprimary, k.n, a.attname,"
  "  coalesce(a.attnotnull, false)"
  " FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
  " CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, o)"
  " LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n"
  " WHERE i.indrelid = ANY ($1::oid[]) AND i.indisunique AND i.indisvalid"
  "   AND i.indpred IS NULL AND k.o <= %s"
  " ORDER BY i.indrelid, i.indisprimary DESC, i.indisreplident DESC, i.indnatts,"
  "   i.indexrelid, k.o";

typedef struct CatRel {
  unsigned oid;
  char *schema, *name;
  char kind;
  double est_rows;
  int64_t bytes;
  int64_t pages;            /* heap blocks (the biggest leaf of a partitioned table) */
} CatRel;

static int catrel_cmp (const void *a, const void *b) {
  const CatRel *x = a, *y = b;
  int c = strcmp(x->schema, y->schema);
  return c != 0 ? c : strcmp(x->name, y->name);
}

static void catrels_free (CatRel *v, int n) {
  int i;
  for (i = 0; i < n; i++) {
    free(v[i].schema);
    free(v[i].name);
  }
  free(v);
}

/* List the tables of one side, sorted by (schema, name). */
static int list_tables (VConn *vc, CatRel **out, int *nout, char *err, size_t errlen) {
  PGresult *res = vquery(vc, TABLES_SQL, 0, NULL, err, errlen);
  int i, n;
  CatRel *v;
  if (res == NULL)
    return -1;
  n = PQntuples(res);
  v = xcalloc((size_t)(n > 0 ? n : 1), sizeof(CatRel));
  for (i = 0; i < n; i++) {
    v[i].oid = (unsigned)strtoul(PQgetvalue(res, i, 0), NULL, 10);
    v[i].schema = xstrdup(PQgetvalue(res, i, 1));
    v[i].name = xstrdup(PQgetvalue(res, i, 2));
    v[i].kind = PQgetvalue(res, i, 3)[0];
    v[i].est_rows = strtod(PQgetvalue(res, i, 4), NULL);
    v[i].bytes = strtoll(PQgetvalue(res, i, 5), NULL, 10);
    v[i].pages = strtoll(PQgetvalue(res, i, 6), NULL, 10);
  }
  PQclear(res);
  qsort(v, (size_t)n, sizeof(CatRel), catrel_cmp);
  *out = v;
  *nout = n;
  return 0;
}

static CatRel *find_rel (CatRel *v, int n, const char *schema, const char *name) {
  CatRel k;
  k.schema = (char *)schema;
  k.name = (char *)name;
  return bsearch(&k, v, (size_t)n, sizeof(CatRel), catrel_cmp);
}

/* "{1,2,3}" */
static char *oid_array (VTable *ts, int n, int target) {
  Buf b = BUF_INIT;
  int i, first = 1;
  buf_putc(&b, '{');
  for (i = 0; i < n; i++) {
    unsigned oid = target ? ts[i].toid : ts[i].soid;
    if (oid == 0)
      continue;
    buf_printf(&b, "%s%u", first ? "" : ",", oid);
    first = 0;
  }
  buf_putc(&b, '}');
  return buf_steal(&b);
}

/* Append a Postgres array literal element, quoted. */
static void array_elem (Buf *b, const char *v) {
  buf_putc(b, '"');
  for (; *v; v++) {
    if (*v == '"' || *v == '\\')
      buf_putc(b, '\\');
    buf_putc(b, *v);
  }
  buf_putc(b, '"');
}

static VTable *table_by_oid (Run *run, unsigned oid, int target) {
  int i;
  /* tables are few relative to columns; a linear scan per relation change is fine */
  for (i = 0; i < run->ntables; i++)
    if ((target ? run->tables[i].toid : run->tables[i].soid) == oid)
      return &run->tables[i];
  return NULL;
}

/* Raw columns of one side, attached to the tables as (name, type, coll). */
typedef struct RawCol {
  char *name, *type, *coll;
  int collatable;
} RawCol;

typedef struct RawCols {
  RawCol *v;
  int n, cap;
} RawCols;

static int load_columns (Run *run, VConn *vc, int target, RawCols *per, char *err, size_t errlen) {
  char *oids = oid_array(run->tables, run->ntables, target);
  const char *params[1];
  PGresult *res;
  int i, n;
  VTable *t = NULL;
  unsigned last = 0;
  params[0] = oids;
  res = vquery(vc, COLUMNS_SQL, 1, params, err, errlen);
  free(oids);
  if (res == NULL)
    return -1;
  n = PQntuples(res);
  for (i = 0; i < n; i++) {
    unsigned oid = (unsigned)strtoul(PQgetvalue(res, i, 0), NULL, 10);
    RawCols *rc;
    RawCol *c;
    if (oid != last || t == NULL) {
      t = table_by_oid(run, oid, target);
      last = oid;
    }
    if (t == NULL)
      continue;
    rc = &per[t - run->tables];
    if (rc->n == rc->cap) {
      rc->cap = rc->cap ? rc->cap * 2 : 16;
      rc->v = xrealloc(rc->v, sizeof(RawCol) * (size_t)rc->cap);
    }
    c = &rc->v[rc->n++];
    c->name = xstrdup(PQgetvalue(res, i, 1));
    c->type = xstrdup(PQgetvalue(res, i, 2));
    c->collatable = PQgetvalue(res, i, 3)[0] == 't';
    c->coll = PQgetisnull(res, i, 4) ? NULL : xstrdup(PQgetvalue(res, i, 4));
  }
  PQclear(res);
  return 0;
}

static void rawcols_free (RawCols *rc) {
  int i;
  for (i = 0; i < rc->n; i++) {
    free(rc->v[i].name);
    free(rc->v[i].type);
    free(rc->v[i].coll);
  }
  free(rc->v);
}

static void strv_push (char ***v, int *n, const char *s) {
  *v = xrealloc(*v, sizeof(char *) * (size_t)(*n + 1));
  (*v)[(*n)++] = xstrdup(s);
}

/* Pick each table's key on the source (see KEYS_SQL) and set t->key. */
static int load_keys (Run *run, char *err, size_t errlen) {
  char *oids = oid_array(run->tables, run->ntables, 0);
  const char *params[1];
  Buf sql = BUF_INIT;
  PGresult *res;
  int n, start;
  buf_printf(&sql, KEYS_SQL,
             PQserverVersion(run->msrc.c) >= 110000 ? "i.indnkeyatts" : "i.indnatts");
  params[0] = oids;
  res = vquery(&run->msrc, buf_cstr(&sql), 1, params, err, errlen);
  buf_free(&sql);
  free(oids);
  if (res == NULL)
    return -1;
  n = PQntuples(res);
  for (start = 0; start < n; ) {
    const char *rel = PQgetvalue(res, start, 0), *idx = PQgetvalue(res, start, 1);
    VTable *t = table_by_oid(run, (unsigned)strtoul(rel, NULL, 10), 0);
    int end = start, usable = 1, j;
    while (end < n && strcmp(PQgetvalue(res, end, 1), idx) == 0) {
      if (strcmp(PQgetvalue(res, end, 4), "0") == 0 || PQgetisnull(res, end, 5) ||
          PQgetvalue(res, end, 6)[0] != 't')
        usable = 0;   /* an expression column or a nullable column */
      end++;
    }
    if (t != NULL && usable && t->res->nkey == 0) {
      VTableResult *tr = t->res;
      for (j = start; j < end; j++)
        strv_push(&tr->key_cols, &tr->nkey, PQgetvalue(res, j, 5));
      if (PQgetvalue(res, start, 3)[0] == 't') {
        tr->key_kind = xstrdup("primary key");
      } else {
        Buf k = BUF_INIT;
        buf_printf(&k, "unique index %s", PQgetvalue(res, start, 2));
        tr->key_kind = buf_steal(&k);
      }
    }
    start = end;
  }
  PQclear(res);
  return 0;
}

static void key_list (Buf *b, const VTable *t, int as_text);

/*
** Columns compared: those present on both sides, in source order.  Sets
** t->cols, the report's column lists, t->key from the key names, and
** the row-hash expression.  A key column missing on the target fails
** the table.
*/
static void plan_columns (Run *run, VTable *t, RawCols *s, RawCols *g) {
  VTableResult *tr = t->res;
  Buf b = BUF_INIT;
  int i, j;
  t->cols = xcalloc((size_t)(s->n > 0 ? s->n : 1), sizeof(VCol));
  for (i = 0; i < s->n; i++) {
    RawCol *tc = NULL;
    for (j = 0; j < g->n; j++)
      if (strcmp(g->v[j].name, s->v[i].name) == 0) {
        tc = &g->v[j];
        break;
      }
    if (tc == NULL) {
      strv_push(&tr->only_source, &tr->nonly_source, s->v[i].name);
      continue;
    }
    t->cols[t->ncols].name = xstrdup(s->v[i].name);
    t->cols[t->ncols].stype = xstrdup(s->v[i].type);
    t->cols[t->ncols].ttype = xstrdup(tc->type);
    t->cols[t->ncols].scoll = s->v[i].coll ? xstrdup(s->v[i].coll) : NULL;
    t->cols[t->ncols].tcoll = tc->coll ? xstrdup(tc->coll) : NULL;
    t->cols[t->ncols].collatable = s->v[i].collatable || tc->collatable;
    strv_push(&tr->columns, &tr->ncolumns, s->v[i].name);
    t->ncols++;
  }
  for (j = 0; j < g->n; j++) {
    for (i = 0; i < s->n; i++)
      if (strcmp(g->v[j].name, s->v[i].name) == 0)
        break;
    if (i == s->n)
      strv_push(&tr->only_target, &tr->nonly_target, g->v[j].name);
  }
  if (tr->nkey > 0) {
    t->key = xcalloc((size_t)tr->nkey, sizeof(int));
    for (i = 0; i < tr->nkey; i++) {
      for (j = 0; j < t->ncols; j++)
        if (strcmp(t->cols[j].name, tr->key_cols[i]) == 0)
          break;
      if (j == t->ncols) {
        Buf m = BUF_INIT;
        buf_printf(&m, "key column %s is missing on the target", tr->key_cols[i]);
        t->error = buf_steal(&m);
        break;
      }
      t->key[i] = j;
      if (t->cols[j].collatable)
        t->key_collatable = 1;
    }
    t->nkey = tr->nkey;
  } else {
    tr->key_kind = xstrdup("none");
  }
  /* the row's text form: ROW(...) output of the compared columns */
  buf_puts(&b, run->md5hash ? "('x' || substr(md5(ROW(" : "hashtextextended(ROW(");
  for (i = 0; i < t->ncols; i++) {
    if (i > 0)
      buf_puts(&b, ", ");
    validate_quote_ident(&b, t->cols[i].name);
  }
  buf_puts(&b, run->md5hash ? ")::text), 1, 16))::bit(64)::int8" : ")::text, 0)");
  t->hexpr = buf_steal(&b);
  if (t->nkey > 0 && t->error == NULL) {
    buf_puts(&b, run->md5hash ? "('x' || substr(md5(ROW(" : "hashtextextended(ROW(");
    key_list(&b, t, 0);
    buf_puts(&b, run->md5hash ? ")::text || 'k'), 1, 16))::bit(64)::int8" : ")::text, 1)");
    t->kexpr = buf_steal(&b);
  }
}

static char *from_item (const char *schema, const char *name, char kind) {
  Buf b = BUF_INIT;
  if (kind == 'r')
    buf_puts(&b, "ONLY ");   /* inheritance children are validated on their own */
  validate_quote_ident(&b, schema);
  buf_putc(&b, '.');
  validate_quote_ident(&b, name);
  return buf_steal(&b);
}

/* }====================================================================== */

/* {======================================================================
** SQL pieces for key ranges and key lists
** ======================================================================= */

/* Append the key column list, optionally each cast to text. */
static void key_list (Buf *b, const VTable *t, int as_text) {
  int i;
  for (i = 0; i < t->nkey; i++) {
    if (i > 0)
      buf_puts(b, ", ");
    validate_quote_ident(b, t->cols[t->key[i]].name);
    if (as_text)
      buf_puts(b, "::text");
  }
}

static const char *col_type (const VCol *c, int target) {
  return target ? c->ttype : c->stype;
}

/* Append "($n::type, ...)" for one key value set; params go to pv. */
static void key_params (Buf *b, const VTable *t, int target, char *const *vals,
                        const char **pv, int *np) {
  int i;
  if (t->nkey > 1)
    buf_putc(b, '(');
  for (i = 0; i < t->nkey; i++) {
    if (i > 0)
      buf_puts(b, ", ");
    pv[*np] = vals[i];
    (*np)++;
    buf_printf(b, "$%d::%s", *np, col_type(&t->cols[t->key[i]], target));
  }
  if (t->nkey > 1)
    buf_putc(b, ')');
}

/* Append " WHERE key >= lo AND key < hi" (either bound may be NULL). */
static void range_pred (Buf *b, const VTable *t, int target, char *const *lo, char *const *hi,
                        const char **pv, int *np) {
  if (lo == NULL && hi == NULL)
    return;
  buf_puts(b, " WHERE ");
  if (lo != NULL) {
    if (t->nkey > 1) buf_putc(b, '(');
    key_list(b, t, 0);
    if (t->nkey > 1) buf_putc(b, ')');
    buf_puts(b, " >= ");
    key_params(b, t, target, lo, pv, np);
  }
  if (hi != NULL) {
    if (lo != NULL)
      buf_puts(b, " AND ");
    if (t->nkey > 1) buf_putc(b, '(');
    key_list(b, t, 0);
    if (t->nkey > 1) buf_putc(b, ')');
    buf_puts(b, " < ");
    key_params(b, t, target, hi, pv, np);
  }
}

/* Append " WHERE key IN (k1, k2, ...)" for decoded keys keys[0..n-1]. */
static void in_pred (Buf *b, const VTable *t, int target, char ***keys, int n,
                     const char **pv, int *np) {
  int i;
  buf_puts(b, " WHERE ");
  if (t->nkey > 1) buf_putc(b, '(');
  key_list(b, t, 0);
  if (t->nkey > 1) buf_putc(b, ')');
  buf_puts(b, " IN (");
  for (i = 0; i < n; i++) {
    if (i > 0)
      buf_puts(b, ", ");
    key_params(b, t, target, keys[i], pv, np);
  }
  buf_putc(b, ')');
}

/*
** Ask 'vc' to order the bound rows (bounds[i*nkey ...]) with its own
** types and collations, and keep the longest subsequence that is
** increasing there too, so the chunks partition the key space on both
** servers.  Updates *bounds / *nbounds.  Returns 0 or -1.
*/
static int keep_monotone (VConn *vc, VTable *t, int target, char ***bounds, int *nbounds,
                          char *err, size_t errlen) {
  Buf sql = BUF_INIT;
  Buf *arrs;
  const char **pv;
  PGresult *res;
  int i, j, n = *nbounds, *rank, *keep, nkeep;
  char **nb;
  if (n < 2 || !t->key_collatable)
    return 0;
  arrs = xcalloc((size_t)t->nkey, sizeof(Buf));
  pv = xcalloc((size_t)t->nkey, sizeof(char *));
  buf_puts(&sql, "SELECT o FROM unnest(");
  for (j = 0; j < t->nkey; j++) {
    buf_printf(&sql, "%s$%d::text[]", j ? ", " : "", j + 1);
    buf_putc(&arrs[j], '{');
    for (i = 0; i < n; i++) {
      if (i > 0) buf_putc(&arrs[j], ',');
      array_elem(&arrs[j], (*bounds)[i * t->nkey + j]);
    }
    buf_putc(&arrs[j], '}');
    pv[j] = buf_cstr(&arrs[j]);
  }
  buf_puts(&sql, ") WITH ORDINALITY AS u(");
  for (j = 0; j < t->nkey; j++)
    buf_printf(&sql, "v%d, ", j);
  buf_puts(&sql, "o) ORDER BY ");
  for (j = 0; j < t->nkey; j++) {
    const VCol *c = &t->cols[t->key[j]];
    const char *coll = target ? c->tcoll : c->scoll;
    buf_printf(&sql, "v%d::%s", j, col_type(c, target));
    if (coll != NULL)
      buf_printf(&sql, " COLLATE %s", coll);
    buf_puts(&sql, ", ");
  }
  buf_puts(&sql, "o");
  res = vquery(vc, buf_cstr(&sql), t->nkey, pv, err, errlen);
  buf_free(&sql);
  for (j = 0; j < t->nkey; j++)
    buf_free(&arrs[j]);
  free(arrs);
  free(pv);
  if (res == NULL)
    return -1;
  rank = xcalloc((size_t)n, sizeof(int));
  keep = xcalloc((size_t)n, sizeof(int));
  for (i = 0; i < PQntuples(res) && i < n; i++) {
    int o = atoi(PQgetvalue(res, i, 0)) - 1;
    if (o >= 0 && o < n)
      rank[o] = i;
  }
  PQclear(res);
  nkeep = validate_monotone_subset(rank, n, keep);
  if (nkeep < n) {
    log_debug("validate %s: %d of %d chunk bounds kept (collations order keys differently)",
              t->qname, nkeep, n);
    nb = xcalloc((size_t)nkeep * (size_t)t->nkey + 1, sizeof(char *));
    for (i = 0; i < nkeep; i++)
      for (j = 0; j < t->nkey; j++) {
        nb[i * t->nkey + j] = (*bounds)[keep[i] * t->nkey + j];
        (*bounds)[keep[i] * t->nkey + j] = NULL;
      }
    free_strv(*bounds, n * t->nkey);
    *bounds = nb;
    *nbounds = nkeep;
  }
  free(rank);
  free(keep);
  return 0;
}

/* Read bound rows (nkey text columns each) from a result. */
static void take_bounds (const PGresult *res, int nkey, char ***bounds, int *nbounds) {
  int n = PQntuples(res), i, j;
  *bounds = xcalloc((size_t)n * (size_t)nkey + 1, sizeof(char *));
  for (i = 0; i < n; i++)
    for (j = 0; j < nkey; j++)
      (*bounds)[i * nkey + j] = xstrdup(PQgetvalue(res, i, j));
  *nbounds = n;
}

/*
** Exact quantiles of the rows in [lo, hi) on 'vc': every 'step'-th key
** in key order.  Used for tables with no statistics and for re-splitting
** a differing chunk much bigger than planned.
*/
static int exact_bounds (VConn *vc, VTable *t, int target, char *const *lo, char *const *hi,
                         long step, char ***bounds, int *nbounds, char *err, size_t errlen) {
  Buf sql = BUF_INIT;
  const char *pv[64];
  char stepbuf[32];
  int np = 0, i;
  PGresult *res;
  if (2 * t->nkey + 1 > (int)(sizeof(pv) / sizeof(pv[0]))) {
    *bounds = NULL;
    *nbounds = 0;
    return 0;   /* absurdly wide keys: one chunk */
  }
  buf_puts(&sql, "SELECT ");
  for (i = 0; i < t->nkey; i++)
    buf_printf(&sql, "%sk%d::text", i ? ", " : "", i);
  buf_puts(&sql, " FROM (SELECT ");
  for (i = 0; i < t->nkey; i++) {
    validate_quote_ident(&sql, t->cols[t->key[i]].name);
    buf_printf(&sql, " AS k%d, ", i);
  }
  buf_puts(&sql, "row_number() OVER (ORDER BY ");
  key_list(&sql, t, 0);
  buf_printf(&sql, ") AS rn FROM %s", target ? t->from_tgt : t->from_src);
  range_pred(&sql, t, target, lo, hi, pv, &np);
  snprintf(stepbuf, sizeof(stepbuf), "%ld", step > 0 ? step : 1);
  pv[np++] = stepbuf;
  buf_printf(&sql, ") s WHERE rn %% $%d = 0 ORDER BY rn", np);
  res = vquery(vc, buf_cstr(&sql), np, pv, err, errlen);
  buf_free(&sql);
  if (res == NULL)
    return -1;
  take_bounds(res, t->nkey, bounds, nbounds);
  PQclear(res);
  return 0;
}

/*
** Chunk bounds of a keyed table: quantiles of a block sample of the
** source (TABLESAMPLE SYSTEM, cheap), or exact quantiles when the sample
** comes back too small; then only bounds ordered the same way on the
** target are kept.
*/
static int plan_bounds (Run *run, VTable *t, char *err, size_t errlen) {
  long chunk = run->o->chunk_rows;
  double nchunks = ceil(t->est_rows / (double)chunk);
  if (t->nkey == 0 || nchunks < 2)
    return 0;
  {
    Buf sql = BUF_INIT;
    char pct[32], nch[32];
    const char *pv[2];
    PGresult *res;
    double p = 100.0 * fmax(nchunks * 50.0, 20000.0) / t->est_rows;
    int i;
    snprintf(pct, sizeof(pct), "%.6f", p > 100.0 ? 100.0 : p);
    snprintf(nch, sizeof(nch), "%.0f", nchunks);
    pv[0] = pct;
    pv[1] = nch;
    buf_puts(&sql, "SELECT ");
    for (i = 0; i < t->nkey; i++)
      buf_printf(&sql, "%sk%d::text", i ? ", " : "", i);
    buf_puts(&sql, " FROM (SELECT ");
    for (i = 0; i < t->nkey; i++) {
      validate_quote_ident(&sql, t->cols[t->key[i]].name);
      buf_printf(&sql, " AS k%d, ", i);
    }
    buf_puts(&sql, "row_number() OVER (ORDER BY ");
    key_list(&sql, t, 0);
    buf_printf(&sql, ") AS rn, count(*) OVER () AS cnt FROM %s TABLESAMPLE SYSTEM ($1)"
               " REPEATABLE (7)) s WHERE rn %% greatest(cnt / $2::int8, 1) = 0 AND rn < cnt"
               " ORDER BY rn", t->from_src);
    res = vquery(&run->msrc, buf_cstr(&sql), 2, pv, err, errlen);
    buf_free(&sql);
    if (res == NULL)
      return -1;
    if (PQntuples(res) >= nchunks / 4) {
      take_bounds(res, t->nkey, &t->bounds, &t->nbounds);
      PQclear(res);
    } else {
      PQclear(res);
      if (exact_bounds(&run->msrc, t, 0, NULL, NULL, chunk, &t->bounds, &t->nbounds,
                       err, errlen) != 0)
        return -1;
    }
  }
  return keep_monotone(&run->mtgt, t, 1, &t->bounds, &t->nbounds, err, errlen);
}

/* }====================================================================== */

/* {======================================================================
** Unmatched keys and changed keys (under the table's mutex)
** ======================================================================= */

static void add_changed (VTable *t, const char *k, uint32_t klen) {
  if (t->nchanged >= STORE_CAP) {
    t->over_changed++;
    return;
  }
  if (t->nchanged == t->capchanged) {
    t->capchanged = t->capchanged ? t->capchanged * 2 : 64;
    t->changed = xrealloc(t->changed, sizeof(KeyDiff) * (size_t)t->capchanged);
  }
  t->changed[t->nchanged].kind = VDIFF_CHANGED;
  t->changed[t->nchanged].key = xmalloc(klen ? klen : 1);
  memcpy(t->changed[t->nchanged].key, k, klen);
  t->changed[t->nchanged].klen = klen;
  t->changed[t->nchanged].texts = NULL;
  t->nchanged++;
}

/*
** A key seen on one side only (so far).  If the other side's row with
** that key was left over by another chunk (key orders differ between the
** servers), the two are matched here.
*/
static void pend_add (VTable *t, int side, const char *k, uint32_t klen, int64_t rowhash) {
  uint64_t kh = fnv1a(k, klen);
  KEntry *e = kmap_find(&t->pending, k, klen, kh);
  if (e != NULL) {
    if (e->side == side) {            /* duplicate key on one side */
      if (side == 0) t->over_missing++; else t->over_extra++;
      return;
    }
    if (e->rowhash != rowhash)
      add_changed(t, k, klen);
    kmap_del(&t->pending, e);
    return;
  }
  if (t->pending.n >= PENDING_CAP) {
    if (side == 0) t->over_missing++; else t->over_extra++;
    return;
  }
  e = kmap_add(&t->pending, k, klen, kh);
  e->side = side;
  e->rowhash = rowhash;
}

/* Buffered unmatched keys of one chunk, flushed to the table in batches. */
typedef struct Unmatched {
  Buf data;                 /* [side:1][hash:8][klen:4][key] ... */
  int n;
} Unmatched;

static void um_push (Unmatched *u, int side, int64_t h, const char *k, uint32_t klen) {
  char s = (char)side;
  buf_append(&u->data, &s, 1);
  buf_append(&u->data, &h, sizeof(h));
  buf_append(&u->data, &klen, sizeof(klen));
  buf_append(&u->data, k, klen);
  u->n++;
}

static void um_flush (VTable *t, Unmatched *u) {
  size_t off = 0;
  if (u->n == 0)
    return;
  pthread_mutex_lock(&t->mu);
  while (off < u->data.len) {
    int side = u->data.data[off];
    int64_t h;
    uint32_t klen;
    memcpy(&h, u->data.data + off + 1, sizeof(h));
    memcpy(&klen, u->data.data + off + 1 + sizeof(h), sizeof(klen));
    off += 1 + sizeof(h) + sizeof(klen);
    if (side == 2)
      add_changed(t, u->data.data + off, klen);
    else
      pend_add(t, side, u->data.data + off, klen, h);
    off += klen;
  }
  pthread_mutex_unlock(&t->mu);
  buf_reset(&u->data);
  u->n = 0;
}

/* }====================================================================== */

/* {======================================================================
** Chunks of keyed tables
** ======================================================================= */

typedef struct Worker {
  Run *run;
  VConn src, tgt;
  pthread_t th;
  int started;
} Worker;

static const char **new_params (const VTable *t, int extra) {
  return xcalloc((size_t)(2 * t->nkey + extra + 1), sizeof(char *));
}

/* Send one statement to each side; on failure nothing is left running. */
static int send_pair (VConn *s, VConn *g, const char *qs, int ns, const char **ps,
                      const char *qt, int nt, const char **pt, int single_row,
                      char *err, size_t errlen) {
  if (vsend(s, qs, ns, ps, single_row, err, errlen) != 0)
    return -1;
  if (vsend(g, qt, nt, pt, single_row, err, errlen) != 0) {
    vdrain(s);
    return -1;
  }
  return 0;
}

/* Both sides' complete results; NULL in both on error. */
static int collect_pair (VConn *s, VConn *g, PGresult **rs, PGresult **rt,
                         char *err, size_t errlen) {
  char err2[ERRLEN];
  *rs = vcollect(s, err, errlen);
  *rt = vcollect(g, err2, sizeof(err2));
  if (*rs == NULL || *rt == NULL) {
    if (*rs != NULL)
      strlcpy_(err, err2, errlen);
    PQclear(*rs);
    PQclear(*rt);
    *rs = *rt = NULL;
    return -1;
  }
  return 0;
}

static int process_chunk (Worker *w, VTable *t, char *const *lo, char *const *hi, int depth,
                          int top, char *err, size_t errlen);

/*
** Fetch the keys and row hashes of a chunk from both sides and match
** them: source rows go into a local map, target rows are streamed
** against it.  What is left over goes to the table's pending map.
*/
/*
** Narrow a big differing chunk before fetching keys: count and hash sum
** per bucket of a hash of the key, on both sides.  Writes the buckets
** that differ as an int8[] literal to 'list'.  Returns 0 or -1.
*/
static int key_buckets (Worker *w, VTable *t, char *const *lo, char *const *hi, int64_t mask,
                        Buf *list, char *err, size_t errlen) {
  Buf qs = BUF_INIT, qt = BUF_INIT;
  const char **ps = new_params(t, 0), **pt = new_params(t, 0);
  int ns = 0, nt = 0, i = 0, j = 0, n = 0, rc = -1, nrs, nrt;
  PGresult *rs = NULL, *rt = NULL;
  buf_printf(&qs, "SELECT %s & %" PRId64 ", count(*), sum(%s) FROM %s", t->kexpr, mask, t->hexpr,
             t->from_src);
  buf_printf(&qt, "SELECT %s & %" PRId64 ", count(*), sum(%s) FROM %s", t->kexpr, mask, t->hexpr,
             t->from_tgt);
  range_pred(&qs, t, 0, lo, hi, ps, &ns);
  range_pred(&qt, t, 1, lo, hi, pt, &nt);
  buf_puts(&qs, " GROUP BY 1 ORDER BY 1");
  buf_puts(&qt, " GROUP BY 1 ORDER BY 1");
  if (send_pair(&w->src, &w->tgt, buf_cstr(&qs), ns, ps, buf_cstr(&qt), nt, pt, 0,
                err, errlen) != 0 ||
      collect_pair(&w->src, &w->tgt, &rs, &rt, err, errlen) != 0)
    goto done;
  nrs = PQntuples(rs);
  nrt = PQntuples(rt);
  buf_putc(list, '{');
  while (i < nrs || j < nrt) {
    int64_t bs = i < nrs ? strtoll(PQgetvalue(rs, i, 0), NULL, 10) : INT64_MAX;
    int64_t bt = j < nrt ? strtoll(PQgetvalue(rt, j, 0), NULL, 10) : INT64_MAX;
    int64_t b = bs < bt ? bs : bt;
    int same = bs == bt && strcmp(PQgetvalue(rs, i, 1), PQgetvalue(rt, j, 1)) == 0 &&
               strcmp(PQgetvalue(rs, i, 2), PQgetvalue(rt, j, 2)) == 0;
    if (bs == b) i++;
    if (bt == b) j++;
    if (!same)
      buf_printf(list, "%s%" PRId64, n++ ? "," : "", b);
  }
  buf_putc(list, '}');
  rc = 0;
done:
  PQclear(rs);
  PQclear(rt);
  buf_free(&qs);
  buf_free(&qt);
  free(ps);
  free(pt);
  return rc;
}

#define DRILL_NARROW_ROWS 2048   /* chunks bigger than this are narrowed by key buckets first */

static int drill (Worker *w, VTable *t, char *const *lo, char *const *hi, int64_t rows,
                  char *err, size_t errlen) {
  Buf qs = BUF_INIT, qt = BUF_INIT, key = BUF_INIT, list = BUF_INIT;
  const char **ps = new_params(t, 1), **pt = new_params(t, 1);
  int ns = 0, nt = 0, failed = 0, rc = -1;
  KMap local = {NULL, 0, 0};
  Unmatched um = {BUF_INIT, 0};
  PGresult *row;
  size_t j;
  int64_t mask = 0;
  if (rows > DRILL_NARROW_ROWS) {
    int64_t nb = 16;
    while (nb * 128 < rows && nb < 4096)
      nb <<= 1;
    mask = nb - 1;
    if (key_buckets(w, t, lo, hi, mask, &list, err, errlen) != 0)
      goto done;
  }
  buf_puts(&qs, "SELECT ");
  key_list(&qs, t, 1);
  buf_printf(&qs, ", %s FROM %s", t->hexpr, t->from_src);
  buf_puts(&qt, "SELECT ");
  key_list(&qt, t, 1);
  buf_printf(&qt, ", %s FROM %s", t->hexpr, t->from_tgt);
  range_pred(&qs, t, 0, lo, hi, ps, &ns);
  range_pred(&qt, t, 1, lo, hi, pt, &nt);
  if (mask != 0) {
    const char *glue = (lo != NULL || hi != NULL) ? " AND " : " WHERE ";
    ps[ns++] = buf_cstr(&list);
    pt[nt++] = buf_cstr(&list);
    buf_printf(&qs, "%s%s & %" PRId64 " = ANY ($%d::int8[])", glue, t->kexpr, mask, ns);
    buf_printf(&qt, "%s%s & %" PRId64 " = ANY ($%d::int8[])", glue, t->kexpr, mask, nt);
  }
  if (send_pair(&w->src, &w->tgt, buf_cstr(&qs), ns, ps, buf_cstr(&qt), nt, pt, 1,
                err, errlen) != 0)
    goto done;
  while ((row = vnext(&w->src, &failed, err, errlen)) != NULL) {
    uint64_t kh;
    KEntry *e;
    encode_key(&key, row, 0, t->nkey);
    kh = fnv1a(key.data, key.len);
    if (kmap_find(&local, key.data, (uint32_t)key.len, kh) == NULL) {
      e = kmap_add(&local, key.data, (uint32_t)key.len, kh);
      e->rowhash = strtoll(PQgetvalue(row, 0, t->nkey), NULL, 10);
      e->side = 0;
    }
    PQclear(row);
  }
  if (failed) {
    vdrain(&w->tgt);
    goto done;
  }
  while ((row = vnext(&w->tgt, &failed, err, errlen)) != NULL) {
    int64_t h = strtoll(PQgetvalue(row, 0, t->nkey), NULL, 10);
    uint64_t kh;
    KEntry *e;
    encode_key(&key, row, 0, t->nkey);
    kh = fnv1a(key.data, key.len);
    e = kmap_find(&local, key.data, (uint32_t)key.len, kh);
    if (e != NULL) {
      if (e->rowhash != h)
        um_push(&um, 2, 0, key.data, (uint32_t)key.len);   /* changed */
      kmap_del(&local, e);
    } else {
      um_push(&um, 1, h, key.data, (uint32_t)key.len);
    }
    if (um.n >= 10000)
      um_flush(t, &um);
    PQclear(row);
  }
  if (failed)
    goto done;
  for (j = 0; j < local.cap; j++)
    if (local.e[j].key != NULL)
      um_push(&um, 0, local.e[j].rowhash, local.e[j].key, local.e[j].klen);
  um_flush(t, &um);
  rc = 0;
done:
  kmap_free(&local);
  buf_free(&um.data);
  buf_free(&qs);
  buf_free(&qt);
  buf_free(&key);
  buf_free(&list);
  free(ps);
  free(pt);
  return rc;
}

/*
** One side of the chunk is empty: every row on the other side differs.
** Their count is known; keys are fetched only while the table has room
** for STORE_CAP of them (for the report and re-checks).
*/
static int one_sided (Worker *w, VTable *t, char *const *lo, char *const *hi, int target,
                      int64_t count, char *err, size_t errlen) {
  Buf q = BUF_INIT, key = BUF_INIT;
  const char **pv = new_params(t, 0);
  int np = 0, i, n, room;
  PGresult *res;
  pthread_mutex_lock(&t->mu);
  room = STORE_CAP - (int)t->pending.n;
  if (room <= 0) {
    if (target) t->over_extra += count; else t->over_missing += count;
    pthread_mutex_unlock(&t->mu);
    free(pv);
    return 0;
  }
  pthread_mutex_unlock(&t->mu);
  buf_puts(&q, "SELECT ");
  key_list(&q, t, 1);
  buf_printf(&q, ", %s FROM %s", t->hexpr, target ? t->from_tgt : t->from_src);
  range_pred(&q, t, target, lo, hi, pv, &np);
  buf_printf(&q, " LIMIT %d", room);
  res = vquery(target ? &w->tgt : &w->src, buf_cstr(&q), np, pv, err, errlen);
  buf_free(&q);
  free(pv);
  if (res == NULL) {
    buf_free(&key);
    return -1;
  }
  n = PQntuples(res);
  pthread_mutex_lock(&t->mu);
  for (i = 0; i < n; i++) {
    encode_key(&key, res, i, t->nkey);
    pend_add(t, target, key.data, (uint32_t)key.len,
             strtoll(PQgetvalue(res, i, t->nkey), NULL, 10));
  }
  if (count > n) {
    if (target) t->over_extra += count - n; else t->over_missing += count - n;
  }
  pthread_mutex_unlock(&t->mu);
  PQclear(res);
  buf_free(&key);
  return 0;
}

/* A differing chunk far bigger than planned: split it with exact
   quantiles on its bigger side ('target') and compare the parts. */
static int resplit (Worker *w, VTable *t, char *const *lo, char *const *hi, int depth,
                    int target, char *err, size_t errlen) {
  char **sb = NULL;
  int nsb = 0, i, rc = 0;
  if (exact_bounds(target ? &w->tgt : &w->src, t, target, lo, hi, w->run->o->chunk_rows,
                   &sb, &nsb, err, errlen) != 0)
    return -1;
  if (keep_monotone(target ? &w->src : &w->tgt, t, !target, &sb, &nsb, err, errlen) != 0) {
    free_strv(sb, nsb * t->nkey);
    return -1;
  }
  if (nsb == 0) {
    free(sb);
    return drill(w, t, lo, hi, RESPLIT_FACTOR * w->run->o->chunk_rows, err, errlen);
  }
  for (i = 0; i <= nsb && rc == 0; i++) {
    char *const *sl = i == 0 ? lo : &sb[(i - 1) * t->nkey];
    char *const *sh = i < nsb ? &sb[i * t->nkey] : hi;
    rc = process_chunk(w, t, sl, sh, depth + 1, 0, err, errlen);
  }
  free_strv(sb, nsb * t->nkey);
  return rc;
}

static void add_rows_done (Run *run, int64_t n) {
  pthread_mutex_lock(&run->mu);
  run->rows_done += n;
  pthread_mutex_unlock(&run->mu);
}

/*
** Compare the chunk [lo, hi): count and hash sum on both servers at once;
** when they differ, narrow down (one side empty, re-split, or drill).
** 'top': a planned chunk whose counts go to the table's totals (not a
** part of a re-split chunk, nor a chunk a scan already counted).
*/
static int process_chunk (Worker *w, VTable *t, char *const *lo, char *const *hi, int depth,
                          int top, char *err, size_t errlen) {
  Buf qs = BUF_INIT, qt = BUF_INIT;
  const char **ps = new_params(t, 0), **pt = new_params(t, 0);
  int ns = 0, nt = 0, rc = -1;
  PGresult *rs = NULL, *rt = NULL;
  int64_t cs, ct;
  buf_printf(&qs, "SELECT count(*), coalesce(sum(%s), 0) FROM %s", t->hexpr, t->from_src);
  buf_printf(&qt, "SELECT count(*), coalesce(sum(%s), 0) FROM %s", t->hexpr, t->from_tgt);
  range_pred(&qs, t, 0, lo, hi, ps, &ns);
  range_pred(&qt, t, 1, lo, hi, pt, &nt);
  if (send_pair(&w->src, &w->tgt, buf_cstr(&qs), ns, ps, buf_cstr(&qt), nt, pt, 0,
                err, errlen) != 0 ||
      collect_pair(&w->src, &w->tgt, &rs, &rt, err, errlen) != 0)
    goto done;
  cs = strtoll(PQgetvalue(rs, 0, 0), NULL, 10);
  ct = strtoll(PQgetvalue(rt, 0, 0), NULL, 10);
  if (top) {
    pthread_mutex_lock(&t->mu);
    t->res->source_rows += cs;
    t->res->target_rows += ct;
    pthread_mutex_unlock(&t->mu);
    add_rows_done(w->run, cs);
  }
  if (cs == ct && strcmp(PQgetvalue(rs, 0, 1), PQgetvalue(rt, 0, 1)) == 0) {
    rc = 0;
    goto done;
  }
  if (top) {
    pthread_mutex_lock(&t->mu);
    t->res->chunks_differing++;
    pthread_mutex_unlock(&t->mu);
  }
  if (cs == 0 || ct == 0)
    rc = one_sided(w, t, lo, hi, cs == 0, cs == 0 ? ct : cs, err, errlen);
  else if ((cs > ct ? cs : ct) > RESPLIT_FACTOR * w->run->o->chunk_rows && depth < 3)
    rc = resplit(w, t, lo, hi, depth, ct > cs, err, errlen);
  else
    rc = drill(w, t, lo, hi, cs > ct ? cs : ct, err, errlen);
done:
  PQclear(rs);
  PQclear(rt);
  buf_free(&qs);
  buf_free(&qt);
  free(ps);
  free(pt);
  return rc;
}

/* }====================================================================== */

/* {======================================================================
** One pass per side: every chunk's count and hash sum
** ======================================================================= */

#define SCAN_UNIT_PAGES 65536    /* at most this many heap blocks (512 MB) per scan unit */

/* A decimal integer (numeric text of a sum) into 128 bits. */
static __int128 parse_i128 (const char *s) {
  __int128 v = 0;
  int neg = *s == '-';
  if (neg || *s == '+')
    s++;
  for (; *s >= '0' && *s <= '9'; s++)
    v = v * 10 + (*s - '0');
  return neg ? -v : v;
}

/* Scan units for a table: enough for the parallelism asked and for
   units of at most SCAN_UNIT_PAGES; 1 when a server cannot scan block
   ranges (TID range scans need 14). */
static int scan_parts (const Run *run, const VTable *t) {
  int64_t pages = t->pages[0] > t->pages[1] ? t->pages[0] : t->pages[1];
  int64_t k = (pages + SCAN_UNIT_PAGES - 1) / SCAN_UNIT_PAGES, par;
  if (PQserverVersion(run->msrc.c) < 140000 || PQserverVersion(run->mtgt.c) < 140000)
    return 1;
  par = 1;
  if (run->o->scan_split_pages > 0)
    par = (pages + run->o->scan_split_pages - 1) / run->o->scan_split_pages;
  if (par > run->o->jobs)
    par = run->o->jobs;
  if (k < par)
    k = par;
  if (k < 1)
    k = 1;
  if (k > 256)
    k = 256;
  return (int)k;
}

/* The scan query for one side and block range [first, last) (last < 0:
   to the end). */
static void scan_sql (Buf *b, const VTable *t, int target, int64_t first, int64_t last) {
  const VCol *k = &t->cols[t->key[0]];
  buf_puts(b, "SELECT b, count(*), sum(h) FROM (SELECT width_bucket(");
  validate_quote_ident(b, k->name);
  buf_printf(b, ", $1::%s[]) AS b, %s AS h FROM %s", col_type(k, target), t->hexpr,
             target ? t->from_tgt : t->from_src);
  if (t->nscan > 1) {
    buf_printf(b, " WHERE ctid >= '(%" PRId64 ",0)'::tid", first);
    if (last >= 0)
      buf_printf(b, " AND ctid < '(%" PRId64 ",0)'::tid", last);
  }
  /* OFFSET 0: the planner then expects few groups and hashes them */
  buf_puts(b, " OFFSET 0) s GROUP BY 1");
}

/* Add one side's partial aggregates to the table's accumulators;
   returns the rows counted. */
static int64_t scan_merge (VTable *t, int side, const PGresult *res) {
  int r;
  int64_t rows = 0;
  for (r = 0; r < PQntuples(res); r++) {
    long c = strtol(PQgetvalue(res, r, 0), NULL, 10);
    int64_t n = strtoll(PQgetvalue(res, r, 1), NULL, 10);
    if (c < 0 || c > t->nbounds)
      continue;
    t->acc_cnt[side][c] += n;
    t->acc_sum[side][c] += parse_i128(PQgetvalue(res, r, 2));
    rows += n;
  }
  return rows;
}

static int process_scan (Worker *w, VTable *t, int part, char *err, size_t errlen) {
  Buf qs = BUF_INIT, qt = BUF_INIT;
  const char *pv[1];
  PGresult *rs = NULL, *rt = NULL;
  int64_t s0 = t->pages[0] * part / t->nscan, s1 = t->pages[0] * (part + 1) / t->nscan;
  int64_t g0 = t->pages[1] * part / t->nscan, g1 = t->pages[1] * (part + 1) / t->nscan;
  int64_t rows;
  int rc = -1;
  if (part == 0) s0 = g0 = 0;
  if (part == t->nscan - 1) s1 = g1 = -1;    /* the last range is open: blocks added since */
  scan_sql(&qs, t, 0, s0, s1);
  scan_sql(&qt, t, 1, g0, g1);
  pv[0] = t->bounds_array[0];
  if (send_pair(&w->src, &w->tgt, buf_cstr(&qs), 1, pv, buf_cstr(&qt), 1, pv, 0,
                err, errlen) != 0 ||
      collect_pair(&w->src, &w->tgt, &rs, &rt, err, errlen) != 0)
    goto done;
  pthread_mutex_lock(&t->mu);
  rows = scan_merge(t, 0, rs);
  scan_merge(t, 1, rt);
  pthread_mutex_unlock(&t->mu);
  add_rows_done(w->run, rows);
  rc = 0;
done:
  PQclear(rs);
  PQclear(rt);
  buf_free(&qs);
  buf_free(&qt);
  return rc;
}

/* }====================================================================== */

/* {======================================================================
** Tables without a usable key: multiset comparison by row hash
** ======================================================================= */

static int64_t ms_buckets (const VTable *t) {
  int64_t nb = 1;
  while ((double)nb * ROWS_PER_BUCKET < t->est_rows && nb < MAX_BUCKETS)
    nb <<= 1;
  return nb;
}

static void hdiff_add (VTable *t, int64_t h, int64_t cs, int64_t ct) {
  VTableResult *tr = t->res;
  if (cs > ct) tr->missing += cs - ct;
  if (ct > cs) tr->extra += ct - cs;
  if (t->nhdiffs >= STORE_CAP) {
    t->overflow = 1;
    return;
  }
  if ((t->nhdiffs & (t->nhdiffs - 1)) == 0 || t->nhdiffs == 0)
    t->hdiffs = xrealloc(t->hdiffs, sizeof(HashDiff) * (size_t)(t->nhdiffs ? t->nhdiffs * 2 : 1));
  t->hdiffs[t->nhdiffs].h = h;
  t->hdiffs[t->nhdiffs].cs = cs;
  t->hdiffs[t->nhdiffs].ct = ct;
  t->nhdiffs++;
}

/* One example row (column texts) for each listed hash, from one side. */
static int ms_examples (VConn *vc, Run *run, VTable *t, int target, char *err, size_t errlen) {
  Buf q = BUF_INIT, arr = BUF_INIT;
  const char *pv[1];
  PGresult *res;
  VTableResult *tr = t->res;
  int i, r, c, any = 0;
  buf_putc(&arr, '{');
  for (i = 0; i < tr->nrows; i++) {
    VRowDiff *d = &tr->rows[i];
    if ((d->kind == VDIFF_EXTRA) != (target != 0))
      continue;
    buf_printf(&arr, "%s%" PRId64, any ? "," : "", d->hash);
    any = 1;
  }
  buf_putc(&arr, '}');
  if (!any) {
    buf_free(&arr);
    return 0;
  }
  buf_printf(&q, "SELECT DISTINCT ON (1) %s", t->hexpr);
  for (c = 0; c < t->ncols; c++) {
    buf_puts(&q, ", ");
    validate_quote_ident(&q, t->cols[c].name);
    buf_puts(&q, "::text");
  }
  buf_printf(&q, " FROM %s WHERE %s = ANY ($1::int8[]) ORDER BY 1",
             target ? t->from_tgt : t->from_src, t->hexpr);
  pv[0] = buf_cstr(&arr);
  res = vquery(vc, buf_cstr(&q), 1, pv, err, errlen);
  buf_free(&q);
  buf_free(&arr);
  if (res == NULL)
    return -1;
  for (r = 0; r < PQntuples(res); r++) {
    int64_t h = strtoll(PQgetvalue(res, r, 0), NULL, 10);
    for (i = 0; i < tr->nrows; i++) {
      VRowDiff *d = &tr->rows[i];
      if (d->hash != h || d->values != NULL || (d->kind == VDIFF_EXTRA) != (target != 0))
        continue;
      d->values = xcalloc((size_t)(t->ncols > 0 ? t->ncols : 1), sizeof(char *));
      for (c = 0; c < t->ncols; c++)
        d->values[c] = PQgetisnull(res, r, c + 1) ? NULL
                     : validate_truncate(PQgetvalue(res, r, c + 1), run->o->max_value_len);
    }
  }
  PQclear(res);
  return 0;
}

/* Turn the stored hash groups into report rows (and examples). */
static int ms_rows (VConn *s, VConn *g, Run *run, VTable *t, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  int i, n = t->nhdiffs < run->o->max_rows ? t->nhdiffs : run->o->max_rows;
  tr->rows = xcalloc((size_t)(n > 0 ? n : 1), sizeof(VRowDiff));
  for (i = 0; i < n; i++) {
    HashDiff *h = &t->hdiffs[i];
    VRowDiff *d = &tr->rows[i];
    d->kind = h->cs > h->ct ? VDIFF_MISSING : VDIFF_EXTRA;
    d->hash = h->h;
    d->source_count = h->cs;
    d->target_count = h->ct;
  }
  tr->nrows = n;
  tr->truncated = t->overflow || t->nhdiffs > n;
  if (run->o->redact || n == 0)
    return 0;
  if (ms_examples(s, run, t, 0, err, errlen) != 0 || ms_examples(g, run, t, 1, err, errlen) != 0)
    return -1;
  return 0;
}

/* The bucket query (groups = 0) or the per-hash counts of the listed
   buckets (groups = 1, $1 = the bucket numbers) for one side. */
static void ms_sql (Buf *b, const VTable *t, int target, int64_t mask, int groups) {
  const char *from = target ? t->from_tgt : t->from_src;
  if (!groups)
    buf_printf(b, "SELECT h & %" PRId64 ", count(*), sum(h) FROM (SELECT %s AS h FROM %s) s"
               " GROUP BY 1 ORDER BY 1", mask, t->hexpr, from);
  else
    buf_printf(b, "SELECT h, count(*) FROM (SELECT %s AS h FROM %s) s"
               " WHERE h & %" PRId64 " = ANY ($1::int8[]) GROUP BY h ORDER BY h",
               t->hexpr, from, mask);
}

/*
** The whole multiset comparison of one table: per-bucket count and hash
** sum (one scan per side), then counts per row hash for the buckets that
** differ (streamed in hash order and merged), then example rows.
*/
static int process_multiset (Worker *w, VTable *t, char *err, size_t errlen) {
  Run *run = w->run;
  VTableResult *tr = t->res;
  int64_t nb = ms_buckets(t), mask = nb - 1, ts = 0, tt = 0;
  Buf qs = BUF_INIT, list = BUF_INIT;
  PGresult *rs = NULL, *rt = NULL;
  int i = 0, j = 0, ndiff = 0, rc = -1, ns, nt, failed = 0;
  const char *pv[1];
  {
    Buf b = BUF_INIT;
    ms_sql(&qs, t, 0, mask, 0);
    ms_sql(&b, t, 1, mask, 0);
    rc = send_pair(&w->src, &w->tgt, buf_cstr(&qs), 0, NULL, buf_cstr(&b), 0, NULL, 0, err, errlen);
    buf_free(&b);
    rc = rc == 0 ? collect_pair(&w->src, &w->tgt, &rs, &rt, err, errlen) : -1;
    if (rc != 0)
      goto done;
    rc = -1;
  }
  tr->nchunks = (int)nb;
  ns = PQntuples(rs);
  nt = PQntuples(rt);
  buf_putc(&list, '{');
  while (i < ns || j < nt) {
    int64_t bs = i < ns ? strtoll(PQgetvalue(rs, i, 0), NULL, 10) : INT64_MAX;
    int64_t bt = j < nt ? strtoll(PQgetvalue(rt, j, 0), NULL, 10) : INT64_MAX;
    int64_t b = bs < bt ? bs : bt;
    int same = bs == bt && strcmp(PQgetvalue(rs, i, 1), PQgetvalue(rt, j, 1)) == 0 &&
               strcmp(PQgetvalue(rs, i, 2), PQgetvalue(rt, j, 2)) == 0;
    if (bs == b) ts += strtoll(PQgetvalue(rs, i++, 1), NULL, 10);
    if (bt == b) tt += strtoll(PQgetvalue(rt, j++, 1), NULL, 10);
    if (!same) {
      buf_printf(&list, "%s%" PRId64, ndiff ? "," : "", b);
      ndiff++;
    }
  }
  buf_putc(&list, '}');
  tr->source_rows = ts;
  tr->target_rows = tt;
  tr->chunks_differing = ndiff;
  add_rows_done(run, ts);
  if (ndiff == 0) {
    rc = 0;
    goto done;
  }
  buf_reset(&qs);
  if (ts == 0 || tt == 0) {
    /* one side is empty: its counterpart's rows all differ */
    PGresult *r1;
    int target = ts == 0, k;
    buf_printf(&qs, "SELECT h, count(*) FROM (SELECT %s AS h FROM %s) s GROUP BY h ORDER BY h"
               " LIMIT %d", t->hexpr, target ? t->from_tgt : t->from_src, STORE_CAP);
    r1 = vquery(target ? &w->tgt : &w->src, buf_cstr(&qs), 0, NULL, err, errlen);
    if (r1 == NULL)
      goto done;
    for (k = 0; k < PQntuples(r1); k++) {
      int64_t h = strtoll(PQgetvalue(r1, k, 0), NULL, 10);
      int64_t c = strtoll(PQgetvalue(r1, k, 1), NULL, 10);
      hdiff_add(t, h, target ? 0 : c, target ? c : 0);
    }
    PQclear(r1);
    /* the listed groups' counts are exact; the rest is the remainder */
    tr->missing = target ? 0 : ts;
    tr->extra = target ? tt : 0;
    if (t->nhdiffs >= STORE_CAP)
      t->overflow = 1;
  } else {
    PGresult *a, *b;
    {
      Buf y = BUF_INIT;
      ms_sql(&qs, t, 0, mask, 1);
      ms_sql(&y, t, 1, mask, 1);
      pv[0] = buf_cstr(&list);
      rc = send_pair(&w->src, &w->tgt, buf_cstr(&qs), 1, pv, buf_cstr(&y), 1, pv, 1, err, errlen);
      buf_free(&y);
      if (rc != 0)
        goto done;
      rc = -1;
    }
    a = vnext(&w->src, &failed, err, errlen);
    if (failed) {
      vdrain(&w->tgt);
      goto done;
    }
    b = vnext(&w->tgt, &failed, err, errlen);
    while (!failed && (a != NULL || b != NULL)) {
      int64_t ha = a ? strtoll(PQgetvalue(a, 0, 0), NULL, 10) : 0;
      int64_t hb = b ? strtoll(PQgetvalue(b, 0, 0), NULL, 10) : 0;
      int64_t ca = a ? strtoll(PQgetvalue(a, 0, 1), NULL, 10) : 0;
      int64_t cb = b ? strtoll(PQgetvalue(b, 0, 1), NULL, 10) : 0;
      if (a != NULL && (b == NULL || ha < hb)) {
        hdiff_add(t, ha, ca, 0);
        PQclear(a);
        a = vnext(&w->src, &failed, err, errlen);
      } else if (b != NULL && (a == NULL || hb < ha)) {
        hdiff_add(t, hb, 0, cb);
        PQclear(b);
        b = vnext(&w->tgt, &failed, err, errlen);
      } else {
        if (ca != cb)
          hdiff_add(t, ha, ca, cb);
        PQclear(a);
        PQclear(b);
        a = vnext(&w->src, &failed, err, errlen);
        b = failed ? NULL : vnext(&w->tgt, &failed, err, errlen);
      }
    }
    PQclear(a);
    PQclear(b);
    if (failed) {
      vdrain(&w->src);
      vdrain(&w->tgt);
      goto done;
    }
  }
  rc = ms_rows(&w->src, &w->tgt, run, t, err, errlen);
done:
  PQclear(rs);
  PQclear(rt);
  buf_free(&qs);
  buf_free(&list);
  return rc;
}

/* }====================================================================== */

/* {======================================================================
** Finishing a keyed table: stored differences -> report rows
** ======================================================================= */

static void keydiff_free (KeyDiff *d, int nkey) {
  free(d->key);
  free_strv(d->texts, nkey);
  d->key = NULL;
  d->texts = NULL;
}

static int keydiff_cmp (const void *a, const void *b, void *arg) {
  const KeyDiff *x = a, *y = b;
  int nkey = *(const int *)arg, j;
  for (j = 0; j < nkey; j++) {
    int c = validate_keycmp(x->texts[j], y->texts[j]);
    if (c != 0)
      return c;
  }
  return (int)x->kind - (int)y->kind;
}

static void free_rows (VTableResult *tr) {
  int i, j;
  for (i = 0; i < tr->nrows; i++) {
    VRowDiff *d = &tr->rows[i];
    free_strv(d->key, tr->nkey);
    for (j = 0; j < d->ncols; j++) {
      free(d->cols[j].name);
      free(d->cols[j].source);
      free(d->cols[j].target);
    }
    free(d->cols);
    free_strv(d->values, tr->ncolumns);
  }
  free(tr->rows);
  tr->rows = NULL;
  tr->nrows = 0;
}

/* Map from the encoded keys of a result's rows to row numbers. */
static void index_rows (KMap *m, const PGresult *res, int nkey, Buf *key) {
  int r;
  for (r = 0; r < PQntuples(res); r++) {
    uint64_t kh;
    encode_key(key, res, r, nkey);
    kh = fnv1a(key->data, key->len);
    if (kmap_find(m, key->data, (uint32_t)key->len, kh) == NULL)
      kmap_add(m, key->data, (uint32_t)key->len, kh)->rowhash = r;
  }
}

static int find_row (KMap *m, const KeyDiff *d) {
  KEntry *e = kmap_find(m, d->key, d->klen, fnv1a(d->key, d->klen));
  return e != NULL ? (int)e->rowhash : -1;
}

/*
** Fetch both sides' rows for the keys of ds[0..n-1] (decoded) and fill
** out[]: the differing columns of changed rows.  Rows that turn out equal
** (or absent on both sides) are marked with kind -1; rows present on one
** side only are reclassified (both only happen without a snapshot).
*/
static int fetch_details (VConn *s, VConn *g, Run *run, VTable *t, KeyDiff **ds, int n,
                          VRowDiff **out, char *err, size_t errlen) {
  Buf qs = BUF_INIT, qt = BUF_INIT, key = BUF_INIT;
  const char **ps = xcalloc((size_t)(n * t->nkey + 1), sizeof(char *));
  const char **pt = xcalloc((size_t)(n * t->nkey + 1), sizeof(char *));
  char ***keys = xcalloc((size_t)n + 1, sizeof(char **));
  int ns = 0, nt = 0, i, c, rc = -1;
  PGresult *rs = NULL, *rt = NULL;
  KMap ms = {NULL, 0, 0}, mt = {NULL, 0, 0};
  for (i = 0; i < n; i++)
    keys[i] = ds[i]->texts;
  buf_puts(&qs, "SELECT ");
  key_list(&qs, t, 1);
  for (c = 0; c < t->ncols; c++) {
    buf_puts(&qs, ", ");
    validate_quote_ident(&qs, t->cols[c].name);
    buf_puts(&qs, "::text");
  }
  buf_append(&qt, qs.data, qs.len);
  buf_printf(&qs, " FROM %s", t->from_src);
  buf_printf(&qt, " FROM %s", t->from_tgt);
  in_pred(&qs, t, 0, keys, n, ps, &ns);
  in_pred(&qt, t, 1, keys, n, pt, &nt);
  if (send_pair(s, g, buf_cstr(&qs), ns, ps, buf_cstr(&qt), nt, pt, 0, err, errlen) != 0 ||
      collect_pair(s, g, &rs, &rt, err, errlen) != 0)
    goto done;
  index_rows(&ms, rs, t->nkey, &key);
  index_rows(&mt, rt, t->nkey, &key);
  for (i = 0; i < n; i++) {
    int a = find_row(&ms, ds[i]), b = find_row(&mt, ds[i]);
    VRowDiff *d = out[i];
    if (a < 0 && b < 0) {
      d->kind = (VDiffKind)-1;
      continue;
    }
    if (a < 0 || b < 0) {
      d->kind = a < 0 ? VDIFF_EXTRA : VDIFF_MISSING;
      continue;
    }
    d->cols = xcalloc((size_t)(t->ncols > 0 ? t->ncols : 1), sizeof(VColDiff));
    d->ncols = 0;
    for (c = 0; c < t->ncols; c++) {
      int na = PQgetisnull(rs, a, t->nkey + c), nb = PQgetisnull(rt, b, t->nkey + c);
      const char *va = PQgetvalue(rs, a, t->nkey + c), *vb = PQgetvalue(rt, b, t->nkey + c);
      VColDiff *cd;
      if (na == nb && (na || strcmp(va, vb) == 0))
        continue;
      cd = &d->cols[d->ncols++];
      cd->name = xstrdup(t->cols[c].name);
      if (run->o->redact) {
        cd->hidden = 1;
      } else {
        cd->source = na ? NULL : validate_truncate(va, run->o->max_value_len);
        cd->target = nb ? NULL : validate_truncate(vb, run->o->max_value_len);
      }
    }
    if (d->ncols == 0)
      d->kind = (VDiffKind)-1;
  }
  rc = 0;
done:
  PQclear(rs);
  PQclear(rt);
  kmap_free(&ms);
  kmap_free(&mt);
  buf_free(&qs);
  buf_free(&qt);
  buf_free(&key);
  free(ps);
  free(pt);
  free(keys);
  return rc;
}

/*
** Report rows for the first max_rows stored differences (t->diffs is
** sorted), with column details for changed rows.  Counts are adjusted
** when a row turns out equal or one-sided on the second look.
*/
static int build_rows (VConn *s, VConn *g, Run *run, VTable *t, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  int n = t->ndiffs < run->o->max_rows ? t->ndiffs : run->o->max_rows;
  int i, k, start;
  free_rows(tr);
  tr->rows = xcalloc((size_t)(n > 0 ? n : 1), sizeof(VRowDiff));
  for (i = 0; i < n; i++) {
    VRowDiff *d = &tr->rows[i];
    d->kind = t->diffs[i].kind;
    d->key = xcalloc((size_t)t->nkey, sizeof(char *));
    for (k = 0; k < t->nkey; k++)
      d->key[k] = xstrdup(t->diffs[i].texts[k]);
  }
  tr->nrows = n;
  /* details of changed rows, KEY_BATCH keys per query */
  for (start = 0; start < n; ) {
    KeyDiff *ds[KEY_BATCH];
    VRowDiff *outs[KEY_BATCH];
    int m = 0;
    for (i = start; i < n && m < KEY_BATCH; i++) {
      if (tr->rows[i].kind != VDIFF_CHANGED)
        continue;
      ds[m] = &t->diffs[i];
      outs[m++] = &tr->rows[i];
    }
    start = i;
    if (m > 0 && fetch_details(s, g, run, t, ds, m, outs, err, errlen) != 0)
      return -1;
  }
  /* drop rows that were equal after all; move reclassified counts */
  for (i = k = 0; i < n; i++) {
    VRowDiff *d = &tr->rows[i];
    if (d->kind != t->diffs[i].kind) {
      if (t->diffs[i].kind == VDIFF_CHANGED) tr->changed--;
      if (d->kind == VDIFF_MISSING) tr->missing++;
      if (d->kind == VDIFF_EXTRA) tr->extra++;
      t->diffs[i].kind = d->kind;
    }
    if ((int)d->kind == -1) {
      free_strv(d->key, t->nkey);
      free(d->cols);
      continue;
    }
    tr->rows[k++] = *d;
  }
  tr->nrows = k;
  tr->truncated = tr->missing + tr->extra + tr->changed > tr->nrows;
  return 0;
}

/*
** All chunks are done: the pending map's leftovers are the missing
** (source side) and extra (target side) rows; with the changed keys they
** are decoded, sorted by key and capped at STORE_CAP.
*/
static int finish_keyed (VConn *s, VConn *g, Run *run, VTable *t, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  KeyDiff *all = xcalloc(t->pending.n + (size_t)t->nchanged + 1, sizeof(KeyDiff));
  int n = 0, i, nkey = t->nkey;
  int64_t nmiss = 0, nextra = 0;
  size_t j;
  for (j = 0; j < t->pending.cap; j++) {
    KEntry *e = &t->pending.e[j];
    if (e->key == NULL)
      continue;
    all[n].kind = e->side == 0 ? VDIFF_MISSING : VDIFF_EXTRA;
    if (e->side == 0) nmiss++; else nextra++;
    all[n].key = e->key;
    all[n].klen = e->klen;
    e->key = NULL;
    n++;
  }
  kmap_free(&t->pending);
  for (i = 0; i < t->nchanged; i++)
    all[n++] = t->changed[i];
  free(t->changed);
  t->changed = NULL;
  tr->missing = nmiss + t->over_missing;
  tr->extra = nextra + t->over_extra;
  tr->changed = t->nchanged + t->over_changed;
  t->nchanged = t->capchanged = 0;
  for (i = 0; i < n; i++)
    all[i].texts = decode_key(all[i].key, all[i].klen, nkey);
  qsort_r(all, (size_t)n, sizeof(KeyDiff), keydiff_cmp, &nkey);
  t->overflow = t->over_missing > 0 || t->over_extra > 0 || t->over_changed > 0 || n > STORE_CAP;
  if (n > STORE_CAP) {
    for (i = STORE_CAP; i < n; i++)
      keydiff_free(&all[i], nkey);
    n = STORE_CAP;
  }
  t->diffs = all;
  t->ndiffs = n;
  return build_rows(s, g, run, t, err, errlen);
}

static void set_status (VTable *t) {
  VTableResult *tr = t->res;
  if (t->error != NULL) {
    tr->status = VT_ERROR;
    free(tr->error);
    tr->error = xstrdup(t->error);
  } else if (tr->missing + tr->extra + tr->changed > 0) {
    tr->status = VT_DIFFERENT;
  } else {
    tr->status = VT_EQUAL;
  }
}

/* Forget the results of an earlier pass before comparing the table again. */
static void reset_table (VTable *t) {
  VTableResult *tr = t->res;
  int i;
  free_rows(tr);
  kmap_free(&t->pending);
  for (i = 0; i < t->nchanged; i++)
    keydiff_free(&t->changed[i], t->nkey);
  free(t->changed);
  t->changed = NULL;
  t->nchanged = t->capchanged = 0;
  for (i = 0; i < t->ndiffs; i++)
    keydiff_free(&t->diffs[i], t->nkey);
  free(t->diffs);
  t->diffs = NULL;
  t->ndiffs = 0;
  free(t->hdiffs);
  t->hdiffs = NULL;
  t->nhdiffs = 0;
  for (i = 0; i < 2; i++) {
    free(t->acc_cnt[i]);
    free(t->acc_sum[i]);
    t->acc_cnt[i] = NULL;
    t->acc_sum[i] = NULL;
  }
  t->over_missing = t->over_extra = t->over_changed = 0;
  t->overflow = 0;
  tr->source_rows = tr->target_rows = 0;
  tr->missing = tr->extra = tr->changed = 0;
  tr->chunks_differing = 0;
  tr->truncated = 0;
}

/* }====================================================================== */

/* {======================================================================
** Workers
** ======================================================================= */

/* In a snapshot transaction a failed statement would abort it: each unit
   runs inside a savepoint. */
static int sp_begin (Worker *w, char *err, size_t errlen) {
  if (!w->run->snapshot)
    return 0;
  if (vexec(&w->src, "SAVEPOINT pgtide_unit", err, errlen) != 0 ||
      vexec(&w->tgt, "SAVEPOINT pgtide_unit", err, errlen) != 0)
    return -1;
  return 0;
}

static int sp_end (Worker *w, int ok, char *err, size_t errlen) {
  const char *sql = ok ? "RELEASE SAVEPOINT pgtide_unit"
                       : "ROLLBACK TO SAVEPOINT pgtide_unit; RELEASE SAVEPOINT pgtide_unit";
  if (!w->run->snapshot)
    return 0;
  if (vexec(&w->src, sql, err, errlen) != 0 || vexec(&w->tgt, sql, err, errlen) != 0)
    return -1;
  return 0;
}

/* A unit failed: the table is marked; a lost connection stops the run. */
static void unit_failed (Worker *w, VTable *t, const char *msg) {
  char err[ERRLEN];
  table_fail(t, msg);
  if (vconn_broken(&w->src) || vconn_broken(&w->tgt) || interrupt_requested() ||
      sp_end(w, 0, err, sizeof(err)) != 0)
    set_fatal(w->run, interrupt_requested() ? "interrupted" : msg);
}

static void finish_table (Worker *w, VTable *t) {
  char err[ERRLEN];
  if (!table_failed(t) && t->nkey > 0) {
    if (sp_begin(w, err, sizeof(err)) != 0 ||
        finish_keyed(&w->src, &w->tgt, w->run, t, err, sizeof(err)) != 0)
      unit_failed(w, t, err);
    else if (sp_end(w, 1, err, sizeof(err)) != 0)
      unit_failed(w, t, err);
  }
  set_status(t);
  t->res->seconds = now_s() - t->started;
  pthread_mutex_lock(&w->run->mu);
  w->run->tables_done++;
  pthread_mutex_unlock(&w->run->mu);
}

/* Append units to the queue (callers hold no lock). */
static void enqueue (Run *run, const Unit *u, int n) {
  pthread_mutex_lock(&run->mu);
  if (run->nunits + n > run->capunits) {
    run->capunits = (run->nunits + n) * 2;
    run->units = xrealloc(run->units, sizeof(Unit) * (size_t)run->capunits);
  }
  memcpy(run->units + run->nunits, u, sizeof(Unit) * (size_t)n);
  run->nunits += n;
  pthread_cond_broadcast(&run->cv);
  pthread_mutex_unlock(&run->mu);
}

/*
** The last scan unit of a table is done: compare the chunk totals of
** both sides; the chunks that differ become drill units (counted in the
** table's outstanding units before this unit finishes).
*/
static void scan_finished (Worker *w, VTable *t) {
  VTableResult *tr = t->res;
  Unit *drills = xcalloc((size_t)t->nbounds + 2, sizeof(Unit));
  int c, n = 0;
  pthread_mutex_lock(&t->mu);
  for (c = 0; c <= t->nbounds; c++) {
    tr->source_rows += t->acc_cnt[0][c];
    tr->target_rows += t->acc_cnt[1][c];
    if (t->acc_cnt[0][c] != t->acc_cnt[1][c] || t->acc_sum[0][c] != t->acc_sum[1][c]) {
      drills[n].table = (int)(t - w->run->tables);
      drills[n].kind = U_DRILL;
      drills[n].chunk = c;
      n++;
    }
  }
  tr->chunks_differing = n;
  t->chunks_left += n;
  pthread_mutex_unlock(&t->mu);
  if (n > 0)
    enqueue(w->run, drills, n);
  free(drills);
}

static int run_unit (Worker *w, VTable *t, const Unit *u, char *err, size_t errlen) {
  char *const *lo, *const *hi;
  switch (u->kind) {
    case U_MULTISET:
      return process_multiset(w, t, err, errlen);
    case U_SCAN:
      return process_scan(w, t, u->part, err, errlen);
    case U_CHUNK:
    case U_DRILL:
      lo = u->chunk > 0 ? &t->bounds[(u->chunk - 1) * t->nkey] : NULL;
      hi = u->chunk < t->nbounds ? &t->bounds[u->chunk * t->nkey] : NULL;
      return process_chunk(w, t, lo, hi, 0, u->kind == U_CHUNK, err, errlen);
  }
  return 0;
}

static void *worker_main (void *arg) {
  Worker *w = arg;
  Run *run = w->run;
  char err[ERRLEN];
  for (;;) {
    Unit u;
    VTable *t;
    int left;
    pthread_mutex_lock(&run->mu);
    while (!run->fatal && run->next >= run->nunits && run->inflight > 0)
      pthread_cond_wait(&run->cv, &run->mu);
    if (run->fatal || run->next >= run->nunits) {
      pthread_mutex_unlock(&run->mu);
      break;
    }
    u = run->units[run->next++];
    run->inflight++;
    pthread_mutex_unlock(&run->mu);
    if (interrupt_requested())
      set_fatal(run, "interrupted");
    t = &run->tables[u.table];
    pthread_mutex_lock(&t->mu);
    if (t->started == 0)
      t->started = now_s();
    pthread_mutex_unlock(&t->mu);
    if (!run->fatal && !table_failed(t)) {
      int rc = sp_begin(w, err, sizeof(err));
      if (rc == 0)
        rc = run_unit(w, t, &u, err, sizeof(err));
      if (rc != 0)
        unit_failed(w, t, err);
      else if (sp_end(w, 1, err, sizeof(err)) != 0)
        unit_failed(w, t, err);
    }
    if (u.kind == U_SCAN) {
      int last;
      pthread_mutex_lock(&t->mu);
      last = --t->scans_left == 0;
      pthread_mutex_unlock(&t->mu);
      if (last && !table_failed(t) && !run->fatal)
        scan_finished(w, t);
    }
    pthread_mutex_lock(&t->mu);
    left = --t->chunks_left;
    pthread_mutex_unlock(&t->mu);
    if (left == 0 && !run->fatal)
      finish_table(w, t);
    pthread_mutex_lock(&run->mu);
    run->inflight--;
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
  }
  pthread_mutex_lock(&run->mu);
  run->running--;
  pthread_cond_broadcast(&run->cv);
  pthread_mutex_unlock(&run->mu);
  return NULL;
}

static void human_count (char *out, size_t n, double v) {
  if (v >= 1e9) snprintf(out, n, "%.1fG", v / 1e9);
  else if (v >= 1e6) snprintf(out, n, "%.1fM", v / 1e6);
  else if (v >= 1e4) snprintf(out, n, "%.0fk", v / 1e3);
  else snprintf(out, n, "%.0f", v);
}

/* Wait for the workers, drawing progress (TTY status line, or a plain
   line every 10 s).  An interrupt stops the workers at their next unit. */
static void progress_loop (Run *run) {
  int tty = log_stderr_is_tty();
  double last = now_s(), start = last;
  pthread_mutex_lock(&run->mu);
  while (run->running > 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&run->cv, &run->mu, &ts);
    if (interrupt_requested() && !run->fatal) {
      run->fatal = 1;
      strlcpy_(run->fatal_msg, "interrupted", sizeof(run->fatal_msg));
      pthread_cond_broadcast(&run->cv);
    }
    if (run->o->progress && run->running > 0) {
      double done = (double)run->rows_done, total = (double)run->rows_total;
      int td = run->tables_done, tt = run->tables_total;
      char a[32], b[32], line[256];
      double pct = total > 0 ? 100.0 * done / total : 0;
      if (pct > 99) pct = 99;
      human_count(a, sizeof(a), done);
      human_count(b, sizeof(b), total);
      snprintf(line, sizeof(line), "validating: %2.0f%%  %s of ~%s rows  %d/%d tables  %.0f s",
               pct, a, b, td, tt, now_s() - start);
      pthread_mutex_unlock(&run->mu);
      if (tty) {
        log_status(line);
      } else if (now_s() - last >= 10) {
        log_info("%s", line);
        last = now_s();
      }
      pthread_mutex_lock(&run->mu);
    }
  }
  pthread_mutex_unlock(&run->mu);
  if (tty && run->o->progress)
    log_status(NULL);
}

/* }====================================================================== */

/* {======================================================================
** Snapshots: one per side, shared by the workers
** ======================================================================= */

static int safe_snapshot_id (const char *s) {
  if (*s == '\0' || strlen(s) > 64)
    return 0;
  for (; *s; s++)
    if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'F') || (*s >= 'a' && *s <= 'f') ||
          *s == '-'))
      return 0;
  return 1;
}

/* Export a snapshot on 'm' (in an open transaction) and import it into
   each worker's connection of the same side. */
static int share_snapshot (VConn *m, Worker *ws, int n, int target, const char *extra_col,
                           char *extra_out, size_t extra_len, char *err, size_t errlen) {
  Buf sql = BUF_INIT;
  PGresult *res;
  char snap[80];
  int i;
  buf_printf(&sql, "SELECT pg_export_snapshot()%s%s", extra_col ? ", " : "",
             extra_col ? extra_col : "");
  res = vquery(m, buf_cstr(&sql), 0, NULL, err, errlen);
  buf_free(&sql);
  if (res == NULL)
    return -1;
  strlcpy_(snap, PQgetvalue(res, 0, 0), sizeof(snap));
  if (extra_col != NULL)
    strlcpy_(extra_out, PQgetvalue(res, 0, 1), extra_len);
  PQclear(res);
  if (!safe_snapshot_id(snap)) {
    snprintf(err, errlen, "unexpected snapshot id from the %s", m->label);
    return -1;
  }
  for (i = 0; i < n; i++) {
    VConn *vc = target ? &ws[i].tgt : &ws[i].src;
    buf_printf(&sql, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
               "SET TRANSACTION SNAPSHOT '%s'", snap);
    if (vexec(vc, buf_cstr(&sql), err, errlen) != 0) {
      buf_free(&sql);
      return -1;
    }
    buf_reset(&sql);
  }
  buf_free(&sql);
  return 0;
}

static void sleep_ms (int ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

/*
** Source side of the consistent point: SHARE-lock the validated tables
** (waits for writers in flight, blocks new ones), export the snapshot and
** read the WAL insert position, import the snapshot into every worker,
** release.  Every transaction that wrote these tables and is visible in
** the snapshot has its commit record before the LSN, and none after it
** is visible.  Retries when the lock is not granted in time.
*/
static int fence_source (Run *run, VTable **sel, int nsel, Worker *ws, int n,
                         char *err, size_t errlen) {
  Buf lock = BUF_INIT;
  int attempt, i, any = 0;
  buf_printf(&lock, "SET LOCAL lock_timeout = %d; LOCK TABLE ", run->o->lock_timeout_ms);
  for (i = 0; i < nsel; i++) {
    if (sel[i]->soid == 0)
      continue;
    buf_printf(&lock, "%s%s", any ? ", " : "", sel[i]->qname);
    any = 1;
  }
  buf_puts(&lock, " IN SHARE MODE");
  for (attempt = 1; ; attempt++) {
    double t0 = now_s();
    char e2[ERRLEN];
    if (vexec(&run->msrc, "BEGIN ISOLATION LEVEL REPEATABLE READ", err, errlen) != 0)
      break;
    if (any && vexec(&run->msrc, buf_cstr(&lock), err, errlen) != 0) {
      vexec(&run->msrc, "ROLLBACK", e2, sizeof(e2));
      if (strstr(err, "[55P03]") != NULL && attempt < 5 && !interrupt_requested()) {
        log_warn("validate: writers held the tables for more than %d ms; retrying the"
                 " consistent point (%d/5)", run->o->lock_timeout_ms, attempt);
        sleep_ms(1000 * attempt);
        continue;
      }
      break;
    }
    if (share_snapshot(&run->msrc, ws, n, 0, "pg_current_wal_insert_lsn()", run->r->lsn,
                       sizeof(run->r->lsn), err, errlen) != 0) {
      vexec(&run->msrc, "ROLLBACK", e2, sizeof(e2));
      break;
    }
    if (vexec(&run->msrc, "COMMIT", err, errlen) != 0)
      break;
    run->r->fence_ms = (now_s() - t0) * 1000.0;
    buf_free(&lock);
    log_info("validate: source snapshot at LSN %s (writes held %.1f ms)", run->r->lsn,
             run->r->fence_ms);
    return 0;
  }
  buf_free(&lock);
  return -1;
}

/*
** Give every worker its snapshots.  OFFLINE / RECHECK: one exported
** snapshot per side.  CONSISTENT: the fenced source snapshot at an LSN,
** then the hook pauses apply at that LSN, the target snapshot is taken,
** and the hook resumes apply (always, once paused).
*/
static int setup_snapshots (Run *run, VTable **sel, int nsel, Worker *ws, int n,
                            char *err, size_t errlen) {
  const VOptions *o = run->o;
  char e2[ERRLEN];
  int rc;
  if (o->mode != VMODE_CONSISTENT) {
    if (vexec(&run->msrc, "BEGIN ISOLATION LEVEL REPEATABLE READ", err, errlen) != 0)
      return -1;
    rc = share_snapshot(&run->msrc, ws, n, 0, NULL, NULL, 0, err, errlen);
    vexec(&run->msrc, rc == 0 ? "COMMIT" : "ROLLBACK", e2, sizeof(e2));
    if (rc != 0)
      return -1;
  } else {
    if (fence_source(run, sel, nsel, ws, n, err, errlen) != 0)
      return -1;
    if (o->hook.pause_at(o->hook.ud, run->r->lsn, e2, sizeof(e2)) != 0) {
      snprintf(err, errlen, "pausing change apply at %s failed: %s", run->r->lsn, e2);
      return -1;
    }
  }
  if (vexec(&run->mtgt, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", err, errlen) != 0)
    rc = -1;
  else {
    rc = share_snapshot(&run->mtgt, ws, n, 1, NULL, NULL, 0, err, errlen);
    vexec(&run->mtgt, rc == 0 ? "COMMIT" : "ROLLBACK", e2, sizeof(e2));
  }
  if (o->mode == VMODE_CONSISTENT) {
    if (o->hook.resume(o->hook.ud, e2, sizeof(e2)) != 0 && rc == 0) {
      snprintf(err, errlen, "resuming change apply failed: %s", e2);
      rc = -1;
    }
  }
  return rc;
}

/* }====================================================================== */

/* {======================================================================
** Passes
** ======================================================================= */

static int est_cmp (const void *a, const void *b) {
  const VTable *x = *(VTable *const *)a, *y = *(VTable *const *)b;
  return x->est_rows < y->est_rows ? 1 : x->est_rows > y->est_rows ? -1 : 0;
}

/*
** Compare the tables sel[0..nsel-1] with 'jobs' workers.  Returns 0, or
** -1 when the pass stopped (connection, snapshot, interrupt).
*/
static int run_pass (Run *run, VTable **sel, int nsel, int snapshot, char *err, size_t errlen) {
  const VOptions *o = run->o;
  VTable **order = xcalloc((size_t)nsel + 1, sizeof(VTable *));
  Worker *ws = NULL;
  int i, k, nw = 0, rc = -1, nunits = 0;
  for (i = 0; i < nsel; i++)
    order[i] = sel[i];
  qsort(order, (size_t)nsel, sizeof(VTable *), est_cmp);
  run->units = NULL;
  run->capunits = 0;
  run->nunits = run->next = run->inflight = 0;
  run->rows_done = run->rows_total = 0;
  run->tables_done = 0;
  run->tables_total = nsel;
  for (i = 0; i < nsel; i++) {
    VTable *t = order[i];
    int nch = t->nkey > 0 ? t->nbounds + 1 : 1;
    int nu = t->nscan > 0 ? t->nscan : nch, side;
    reset_table(t);
    t->started = 0;
    t->chunks_left = nu;
    t->scans_left = t->nscan;
    t->res->nchunks = nch;
    for (side = 0; side < 2 && t->nscan > 0; side++) {
      t->acc_cnt[side] = xcalloc((size_t)nch, sizeof(int64_t));
      t->acc_sum[side] = xcalloc((size_t)nch, sizeof(__int128));
    }
    run->rows_total += (int64_t)t->est_rows;
    run->units = xrealloc(run->units, sizeof(Unit) * (size_t)(nunits + nu));
    for (k = 0; k < nu; k++) {
      Unit *u = &run->units[nunits++];
      u->table = (int)(t - run->tables);
      u->kind = t->nkey == 0 ? U_MULTISET : t->nscan > 0 ? U_SCAN : U_CHUNK;
      u->chunk = u->kind == U_CHUNK ? k : 0;
      u->part = u->kind == U_SCAN ? k : 0;
    }
  }
  run->capunits = nunits;
  run->nunits = nunits;
  run->snapshot = snapshot;
  if (nunits == 0) {
    rc = 0;
    goto out;
  }
  nw = o->jobs < nunits ? o->jobs : nunits;
  ws = xcalloc((size_t)nw, sizeof(Worker));
  for (i = 0; i < nw; i++) {
    ws[i].run = run;
    if (vconn_open(&ws[i].src, o->source, "source", 1, o->statement_timeout_s, err, errlen) != 0 ||
        vconn_open(&ws[i].tgt, o->target, "target", 1, o->statement_timeout_s, err, errlen) != 0)
      goto out;
  }
  if (snapshot && setup_snapshots(run, sel, nsel, ws, nw, err, errlen) != 0)
    goto out;
  run->running = 0;
  for (i = 0; i < nw; i++) {
    if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i]) != 0) {
      set_fatal(run, "cannot start a worker thread");
      break;
    }
    ws[i].started = 1;
    pthread_mutex_lock(&run->mu);
    run->running++;
    pthread_mutex_unlock(&run->mu);
  }
  progress_loop(run);
  for (i = 0; i < nw; i++)
    if (ws[i].started)
      pthread_join(ws[i].th, NULL);
  if (run->fatal) {
    strlcpy_(err, run->fatal_msg, errlen);
    goto out;
  }
  rc = 0;
out:
  for (i = 0; i < nw; i++) {
    char e2[ERRLEN];
    if (snapshot && ws[i].src.c != NULL && PQtransactionStatus(ws[i].src.c) != PQTRANS_IDLE)
      vexec(&ws[i].src, "COMMIT", e2, sizeof(e2));
    if (snapshot && ws[i].tgt.c != NULL && PQtransactionStatus(ws[i].tgt.c) != PQTRANS_IDLE)
      vexec(&ws[i].tgt, "COMMIT", e2, sizeof(e2));
    vconn_close(&ws[i].src, &run->r->bytes_source);
    vconn_close(&ws[i].tgt, &run->r->bytes_target);
  }
  free(ws);
  free(order);
  free(run->units);
  run->units = NULL;
  return rc;
}

/*
** RECHECK mode, keyed tables whose differences are all stored: look at
** just those keys again (both sides, no snapshot) and keep what still
** differs.
*/
static int recheck_keys (Run *run, VTable *t, char *err, size_t errlen) {
  VTableResult *tr = t->res;
  KeyDiff *keep = xcalloc((size_t)t->ndiffs + 1, sizeof(KeyDiff));
  int nkeep = 0, start, i, rc = -1;
  Buf key = BUF_INIT;
  for (start = 0; start < t->ndiffs; start += KEY_BATCH) {
    int n = t->ndiffs - start < KEY_BATCH ? t->ndiffs - start : KEY_BATCH;
    char **keys[KEY_BATCH];
    Buf qs = BUF_INIT, qt = BUF_INIT;
    const char **ps = xcalloc((size_t)(n * t->nkey + 1), sizeof(char *));
    const char **pt = xcalloc((size_t)(n * t->nkey + 1), sizeof(char *));
    int ns = 0, nt = 0, ok;
    PGresult *rs = NULL, *rt = NULL;
    KMap ms = {NULL, 0, 0}, mt = {NULL, 0, 0};
    for (i = 0; i < n; i++)
      keys[i] = t->diffs[start + i].texts;
    buf_puts(&qs, "SELECT ");
    key_list(&qs, t, 1);
    buf_printf(&qs, ", %s", t->hexpr);
    buf_append(&qt, qs.data, qs.len);
    buf_printf(&qs, " FROM %s", t->from_src);
    buf_printf(&qt, " FROM %s", t->from_tgt);
    in_pred(&qs, t, 0, keys, n, ps, &ns);
    in_pred(&qt, t, 1, keys, n, pt, &nt);
    ok = send_pair(&run->msrc, &run->mtgt, buf_cstr(&qs), ns, ps, buf_cstr(&qt), nt, pt, 0,
                   err, errlen) == 0 &&
         collect_pair(&run->msrc, &run->mtgt, &rs, &rt, err, errlen) == 0;
    if (ok) {
      index_rows(&ms, rs, t->nkey, &key);
      index_rows(&mt, rt, t->nkey, &key);
      for (i = 0; i < n; i++) {
        KeyDiff *d = &t->diffs[start + i];
        int a = find_row(&ms, d), b = find_row(&mt, d);
        if (a >= 0 && b >= 0 &&
            strcmp(PQgetvalue(rs, a, t->nkey), PQgetvalue(rt, b, t->nkey)) == 0)
          continue;          /* equal now */
        if (a < 0 && b < 0)
          continue;          /* gone on both sides */
        keep[nkeep] = *d;
        keep[nkeep].kind = a < 0 ? VDIFF_EXTRA : b < 0 ? VDIFF_MISSING : VDIFF_CHANGED;
        d->key = NULL;
        d->texts = NULL;
        nkeep++;
      }
    }
    PQclear(rs);
    PQclear(rt);
    kmap_free(&ms);
    kmap_free(&mt);
    buf_free(&qs);
    buf_free(&qt);
    free(ps);
    free(pt);
    if (!ok)
      goto done;
  }
  rc = 0;
done:
  for (i = 0; i < t->ndiffs; i++)
    keydiff_free(&t->diffs[i], t->nkey);
  free(t->diffs);
  t->diffs = keep;
  t->ndiffs = nkeep;
  buf_free(&key);
  if (rc != 0)
    return -1;
  tr->missing = tr->extra = tr->changed = 0;
  for (i = 0; i < nkeep; i++) {
    if (keep[i].kind == VDIFF_MISSING) tr->missing++;
    else if (keep[i].kind == VDIFF_EXTRA) tr->extra++;
    else tr->changed++;
  }
  return build_rows(&run->msrc, &run->mtgt, run, t, err, errlen);
}

static int sleep_interruptible (double seconds) {
  double end = now_s() + seconds;
  while (now_s() < end) {
    if (interrupt_requested())
      return -1;
    sleep_ms(100);
  }
  return 0;
}

static int recheck_loop (Run *run, char *err, size_t errlen) {
  const VOptions *o = run->o;
  VTable **rerun = xcalloc((size_t)run->ntables + 1, sizeof(VTable *));
  int round, i, rc = 0;
  for (i = 0; i < run->ntables; i++) {
    VTableResult *tr = run->tables[i].res;
    tr->initial_differences = tr->missing + tr->extra + tr->changed;
  }
  for (round = 1; round <= o->recheck_times && rc == 0; round++) {
    int ndiff = 0, nrerun = 0;
    for (i = 0; i < run->ntables; i++)
      if (run->tables[i].res->status == VT_DIFFERENT)
        ndiff++;
    if (ndiff == 0)
      break;
    log_info("validate: %d table%s differ; re-check %d/%d in %.0f s", ndiff, ndiff == 1 ? "" : "s",
             round, o->recheck_times, o->recheck_delay);
    if (sleep_interruptible(o->recheck_delay) != 0) {
      snprintf(err, errlen, "interrupted");
      rc = -1;
      break;
    }
    for (i = 0; i < run->ntables; i++) {
      VTable *t = &run->tables[i];
      if (t->res->status != VT_DIFFERENT)
        continue;
      t->res->rechecks = round;
      if (t->nkey > 0 && !t->overflow) {
        char terr[ERRLEN];
        if (recheck_keys(run, t, terr, sizeof(terr)) != 0) {
          if (vconn_broken(&run->msrc) || vconn_broken(&run->mtgt)) {
            strlcpy_(err, terr, errlen);
            rc = -1;
          }
          table_fail(t, terr);
        }
        set_status(t);
      } else {
        rerun[nrerun++] = t;
      }
    }
    if (rc == 0 && nrerun > 0)
      rc = run_pass(run, rerun, nrerun, 1, err, errlen);
  }
  free(rerun);
  return rc;
}

/* }====================================================================== */

/* {======================================================================
** Entry point
** ======================================================================= */

/*
** Resolve the tables to compare, their keys, columns and chunk bounds.
** Fills run->tables and the report's table list (sorted by name; tables
** requested but absent from the source come last, as VT_NOT_FOUND).
*/
static int plan (Run *run, char *err, size_t errlen) {
  const VOptions *o = run->o;
  VReport *r = run->r;
  CatRel *src = NULL, *tgt = NULL;
  int nsrc = 0, ntgt = 0, i, nsel = 0, nmiss = 0, rc = -1;
  CatRel **sel = NULL;
  char **missing = NULL;   /* requested, not on the source (schema, name pairs) */
  RawCols *sc = NULL, *tc = NULL;
  if (list_tables(&run->msrc, &src, &nsrc, err, errlen) != 0 ||
      list_tables(&run->mtgt, &tgt, &ntgt, err, errlen) != 0)
    goto out;
  sel = xcalloc((size_t)(nsrc + o->ntables) + 1, sizeof(CatRel *));
  if (o->tables != NULL && o->ntables > 0) {
    char *used = xcalloc((size_t)nsrc + 1, 1);
    missing = xcalloc((size_t)o->ntables * 2 + 1, sizeof(char *));
    for (i = 0; i < o->ntables; i++) {
      char *schema, *name;
      CatRel *c;
      if (validate_parse_name(o->tables[i], &schema, &name) != 0) {
        snprintf(err, errlen, "invalid table name '%s' (expected schema.table)", o->tables[i]);
        free(used);
        goto out;
      }
      c = find_rel(src, nsrc, schema, name);
      if (c == NULL) {
        missing[2 * nmiss] = schema;
        missing[2 * nmiss + 1] = name;
        nmiss++;
        continue;
      }
      free(schema);
      free(name);
      if (!used[c - src]) {
        used[c - src] = 1;
        sel[nsel++] = c;
      }
    }
    /* keep catalog (name) order */
    nsel = 0;
    for (i = 0; i < nsrc; i++)
      if (used[i])
        sel[nsel++] = &src[i];
    free(used);
  } else {
    for (i = 0; i < nsrc; i++)
      sel[nsel++] = &src[i];
  }
  r->tables = xcalloc((size_t)(nsel + nmiss) + 1, sizeof(VTableResult));
  r->ntables = nsel + nmiss;
  run->tables = xcalloc((size_t)nsel + 1, sizeof(VTable));
  run->ntables = nsel;
  for (i = 0; i < nsel; i++) {
    VTable *t = &run->tables[i];
    CatRel *g = find_rel(tgt, ntgt, sel[i]->schema, sel[i]->name);
    Buf q = BUF_INIT;
    pthread_mutex_init(&t->mu, NULL);
    t->res = &r->tables[i];
    t->res->schema = xstrdup(sel[i]->schema);
    t->res->name = xstrdup(sel[i]->name);
    t->res->bytes = sel[i]->bytes;
    r->table_bytes += sel[i]->bytes;
    t->soid = sel[i]->oid;
    t->skind = sel[i]->kind;
    t->pages[0] = sel[i]->pages;
    t->est_rows = sel[i]->est_rows;
    t->from_src = from_item(sel[i]->schema, sel[i]->name, sel[i]->kind);
    validate_quote_ident(&q, sel[i]->schema);
    buf_putc(&q, '.');
    validate_quote_ident(&q, sel[i]->name);
    t->qname = buf_steal(&q);
    if (g != NULL) {
      t->toid = g->oid;
      t->tkind = g->kind;
      t->pages[1] = g->pages;
      t->from_tgt = from_item(g->schema, g->name, g->kind);
    } else {
      t->res->status = VT_MISSING_ON_TARGET;
    }
  }
  for (i = 0; i < nmiss; i++) {
    VTableResult *tr = &r->tables[nsel + i];
    tr->schema = missing[2 * i];
    tr->name = missing[2 * i + 1];
    missing[2 * i] = missing[2 * i + 1] = NULL;
    tr->status = VT_NOT_FOUND;
    tr->error = xstrdup("no such table on the source");
  }
  if (nsel == 0) {
    rc = 0;
    goto out;
  }
  if (load_keys(run, err, errlen) != 0)
    goto out;
  sc = xcalloc((size_t)nsel, sizeof(RawCols));
  tc = xcalloc((size_t)nsel, sizeof(RawCols));
  if (load_columns(run, &run->msrc, 0, sc, err, errlen) != 0 ||
      load_columns(run, &run->mtgt, 1, tc, err, errlen) != 0)
    goto out;
  for (i = 0; i < nsel; i++) {
    VTable *t = &run->tables[i];
    char terr[ERRLEN];
    if (t->res->status == VT_MISSING_ON_TARGET)
      continue;
    plan_columns(run, t, &sc[i], &tc[i]);
    if (t->error != NULL)
      continue;
    if (plan_bounds(run, t, terr, sizeof(terr)) != 0) {
      if (vconn_broken(&run->msrc) || vconn_broken(&run->mtgt)) {
        strlcpy_(err, terr, errlen);
        goto out;
      }
      t->error = redact_str(terr);
    }
    if (t->error == NULL && t->nkey == 1 && t->nbounds > 0 && run->o->scan &&
        strstr(t->cols[t->key[0]].stype, "[]") == NULL &&
        strstr(t->cols[t->key[0]].ttype, "[]") == NULL) {
      /* single-column key: every chunk's aggregate in one pass per side */
      Buf a = BUF_INIT;
      int b;
      buf_putc(&a, '{');
      for (b = 0; b < t->nbounds; b++) {
        if (b > 0) buf_putc(&a, ',');
        array_elem(&a, t->bounds[b]);
      }
      buf_putc(&a, '}');
      t->bounds_array[0] = buf_steal(&a);
      t->nscan = scan_parts(run, t);
    }
    log_debug("validate %s: ~%.0f rows, %d chunks, %s", t->qname, t->est_rows, t->nbounds + 1,
              t->nkey == 0 ? "no key: multiset"
              : t->nscan > 0 ? "one pass per side" : "range queries");
  }
  rc = 0;
out:
  if (sc != NULL && tc != NULL)
    for (i = 0; i < nsel; i++) {
      rawcols_free(&sc[i]);
      rawcols_free(&tc[i]);
    }
  free(sc);
  free(tc);
  if (missing != NULL)
    free_strv(missing, 2 * o->ntables);
  free(sel);
  catrels_free(src, nsrc);
  catrels_free(tgt, ntgt);
  return rc;
}

static void run_free (Run *run) {
  int i, j;
  for (i = 0; i < run->ntables; i++) {
    VTable *t = &run->tables[i];
    for (j = 0; j < t->ncols; j++) {
      free(t->cols[j].name);
      free(t->cols[j].stype);
      free(t->cols[j].ttype);
      free(t->cols[j].scoll);
      free(t->cols[j].tcoll);
    }
    free(t->cols);
    free(t->key);
    free_strv(t->bounds, t->nbounds * t->nkey);
    free(t->hexpr);
    free(t->kexpr);
    free(t->from_src);
    free(t->from_tgt);
    free(t->qname);
    kmap_free(&t->pending);
    for (j = 0; j < t->nchanged; j++)
      keydiff_free(&t->changed[j], t->nkey);
    free(t->changed);
    for (j = 0; j < t->ndiffs; j++)
      keydiff_free(&t->diffs[j], t->nkey);
    free(t->diffs);
    free(t->hdiffs);
    free(t->error);
    for (j = 0; j < 2; j++) {
      free(t->acc_cnt[j]);
      free(t->acc_sum[j]);
      free(t->bounds_array[j]);
    }
    pthread_mutex_destroy(&t->mu);
  }
  free(run->tables);
  run->tables = NULL;
  run->ntables = 0;
}

int validate_run (const VOptions *o, VReport *r, char *err, size_t errlen) {
  Run run;
  VTable **all = NULL;
  double start = now_s();
  int rc = -1, i;
  memset(r, 0, sizeof(*r));
  memset(&run, 0, sizeof(run));
  r->mode = o->mode;
  run.o = o;
  run.r = r;
  pthread_mutex_init(&run.mu, NULL);
  pthread_cond_init(&run.cv, NULL);
  if (o->source == NULL || o->target == NULL) {
    snprintf(err, errlen, "validate needs a source and a target");
    goto out;
  }
  if (o->jobs < 1 || o->chunk_rows < 100 || o->max_rows < 0) {
    snprintf(err, errlen, "validate: jobs must be >= 1 and chunk_rows >= 100");
    goto out;
  }
  if (o->mode == VMODE_CONSISTENT && (o->hook.pause_at == NULL || o->hook.resume == NULL)) {
    snprintf(err, errlen, "the consistent mode needs a change-apply hook (pause_at and resume)");
    goto out;
  }
  g_timeout_ms = o->statement_timeout_s > 0 ? o->statement_timeout_s * 1000 + 60000 : 0;
  if (vconn_open(&run.msrc, o->source, "source", 0, o->statement_timeout_s, err, errlen) != 0 ||
      vconn_open(&run.mtgt, o->target, "target", 1, o->statement_timeout_s, err, errlen) != 0)
    goto out;
  run.md5hash = PQserverVersion(run.msrc.c) < 110000 || PQserverVersion(run.mtgt.c) < 110000;
  if (plan(&run, err, errlen) != 0)
    goto out;
  all = xcalloc((size_t)run.ntables + 1, sizeof(VTable *));
  {
    int n = 0;
    for (i = 0; i < run.ntables; i++) {
      VTable *t = &run.tables[i];
      if (t->res->status == VT_MISSING_ON_TARGET)
        continue;
      if (t->error != NULL) {
        set_status(t);
        continue;
      }
      all[n++] = t;
    }
    if (run_pass(&run, all, n, 1, err, errlen) != 0)
      goto out;
  }
  if (o->mode == VMODE_RECHECK && recheck_loop(&run, err, errlen) != 0)
    goto out;
  rc = 0;
out:
  for (i = 0; i < r->ntables; i++) {
    VTableResult *tr = &r->tables[i];
    if (tr->status == VT_EQUAL) r->tables_equal++;
    else if (tr->status == VT_DIFFERENT || tr->status == VT_MISSING_ON_TARGET)
      r->tables_different++;
    else r->tables_failed++;
    r->missing += tr->missing;
    r->extra += tr->extra;
    r->changed += tr->changed;
  }
  free(all);
  run_free(&run);
  vconn_close(&run.msrc, &r->bytes_source);
  vconn_close(&run.mtgt, &r->bytes_target);
  pthread_mutex_destroy(&run.mu);
  pthread_cond_destroy(&run.cv);
  r->seconds = now_s() - start;
  return rc;
}

void validate_report_free (VReport *r) {
  int i;
  for (i = 0; i < r->ntables; i++) {
    VTableResult *tr = &r->tables[i];
    free_rows(tr);
    free(tr->schema);
    free(tr->name);
    free_strv(tr->key_cols, tr->nkey);
    free(tr->key_kind);
    free_strv(tr->columns, tr->ncolumns);
    free_strv(tr->only_source, tr->nonly_source);
    free_strv(tr->only_target, tr->nonly_target);
    free(tr->error);
  }
  free(r->tables);
  memset(r, 0, sizeof(*r));
}

/* }====================================================================== */
