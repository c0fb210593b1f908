/*
** validate_internal.h
** What the files of the data validation share: the per-run and
** per-table state, the connection wrapper, the key map, and the
** functions one file calls in another.  The public API is validate.h;
** nothing outside src/validate/ includes this header.
**
** Where things are (the method itself is described in validate.h):
**
**   validate.c            entry point: validate_run(), options, freeing
**   validate_plan.c       which tables, columns and key; planning a run
**   validate_bounds.c     chunk bounds (sampled / exact quantiles, kept
**                         in the same order on both servers)
**   validate_sql.c        SQL pieces: row-hash expressions, FROM items,
**                         key-range and key-list predicates
**   validate_conn.c       the connection wrapper: session settings,
**                         waits with timeouts and cancel, results
**   validate_workers.c    the work queue, worker threads, progress, a pass
**   validate_snapshot.c   shared snapshots; the order of the consistent
**                         point (hold apply, source point, apply to it,
**                         target snapshot, resume)
**   validate_point.c      the consistent point on the source: a temporary
**                         logical slot's exported snapshot and LSN, no lock
**   validate_scan.c       one pass per side over a table: every chunk's
**                         count and hash sum at once
**   validate_chunk.c      compare one chunk by range queries
**   validate_narrow.c     narrow a differing chunk to rows (key buckets,
**                         key/hash merge in C, one-sided chunks)
**   validate_multiset.c   tables without a usable key
**   validate_keymap.c     hash map of encoded keys
**   validate_report.c     differences -> report rows (column details),
**                         table status, freeing results
**   validate_recheck.c    RECHECK mode
**   validate_text.c       names, truncation, key order, LIS
**
** File names carry the validate_ prefix because the build puts every
** object into one archive, where member names must be unique.
**
** Threads: a VTable's runtime fields are under its 'mu', the Run's queue
** and counters under the Run's 'mu'.  Planning, finishing passes and
** re-checks run on the calling thread only.
**
** Ownership: everything a VTable or the Run allocates is freed by
** validate.c's run_free(); the report's strings belong to the report
** (validate_report_free()).  Errors in one table become that table's
** VT_ERROR; a broken connection or an interrupt stops the run
** (Run.fatal).
*/
#ifndef PGTIDE_VALIDATE_INTERNAL_H
#define PGTIDE_VALIDATE_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "pg/pgsql.h"
#include "util/buf.h"
#include "validate/validate.h"

#define ERRLEN 1024
#define KEY_BATCH 200          /* keys per "WHERE key IN (...)" query */
#define PENDING_CAP 200000     /* unmatched keys held per table */
#define STORE_CAP 10000        /* differing keys kept per table for details and re-checks */
#define RESPLIT_FACTOR 4       /* re-split a differing chunk this much bigger than planned */
#define MAX_BUCKETS 65536      /* multiset tables: hash buckets */
#define ROWS_PER_BUCKET 1000   /* multiset tables: rows per bucket aimed at */

/* {======================================================================
** Types
** ======================================================================= */

/* One entry of a key map: an encoded key and what is known about it. */
typedef struct KEntry {
  char *key;                /* NULL: empty slot; owned */
  uint32_t klen;
  uint64_t kh;              /* kmap_hash(key) */
  int64_t rowhash;          /* the row's hash (or, for kmap_index_rows, a row number) */
  int side;                 /* 0 source, 1 target */
} KEntry;

/* Open-addressing hash map of encoded keys; {NULL, 0, 0} is empty. */
typedef struct KMap {
  KEntry *e;
  size_t cap, n;
} KMap;

/* The consistent point on the source (validate_point.c): the replication
   session that holds a temporary slot and exports its snapshot. */
typedef struct VPoint {
  PGconn *repl;             /* open until vpoint_close(); NULL after */
  char slot[64];            /* the temporary slot's name */
  char lsn[32];             /* its consistent point, "X/Y" */
  char snapshot[64];        /* the exported snapshot's id */
  double ms;                /* how long creating it took */
} VPoint;

/* A connection to one side, configured for validation. */
typedef struct VConn {
  PGconn *c;
  const char *label;        /* "source" / "target" */
  int timeout_ms;           /* client-side bound per statement (0: none) */
  int64_t bytes;            /* received so far (set by vconn_close) */
  int (*cancel)(void *ud);  /* VOptions.cancel */
  void *cancel_ud;
} VConn;

/* A compared column: present on both sides. */
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

/* A row-hash group of a multiset table: hash, source and target counts. */
typedef struct HashDiff {
  int64_t h, cs, ct;
} HashDiff;

/* One table being compared: its plan, then its runtime state. */
typedef struct VTable {
  VTableResult *res;           /* its entry in the report */
  unsigned soid, toid;         /* 0 when absent on that side */
  char *from_src, *from_tgt;   /* FROM item, "ONLY" for plain tables (inheritance) */
  char *qname;                 /* "schema"."table" */
  VCol *cols;
  int ncols;
  int *key;                    /* indexes into cols */
  int nkey;                    /* 0: no usable key (multiset comparison) */
  int key_collatable;
  double est_rows;
  char **bounds;               /* nbounds * nkey texts, increasing on both sides */
  int nbounds;
  /* one-pass chunk aggregates (single-column keys): block ranges per side */
  int nscan;                   /* scan units (0: per-chunk range queries instead) */
  int64_t pages[2];            /* heap blocks on each side */
  char *bounds_array;          /* the bounds as an array literal */
  int64_t *acc_cnt[2];         /* per chunk: row count, */
  __int128 *acc_sum[2];        /* and hash sum, on each side */
  int scans_left;
  char *hexpr;                 /* the row hash, a bigint expression */
  char *kexpr;                 /* a hash of the key alone (narrowing differing chunks) */
  /* runtime, under mu */
  pthread_mutex_t mu;
  int chunks_left;             /* units not finished; 0: finish the table */
  KMap pending;                /* unmatched keys across chunks */
  int64_t over_missing, over_extra, over_changed;   /* counted, not stored */
  KeyDiff *changed;
  int nchanged, capchanged;
  HashDiff *hdiffs;            /* multiset */
  int nhdiffs;
  char *error;                 /* set once: the table failed (redacted) */
  double started;
  int overflow;                /* not every differing row is stored */
  KeyDiff *diffs;              /* after finish: stored differences, sorted */
  int ndiffs;
} VTable;

/* A unit of work for a worker. */
typedef enum UnitKind {
  U_CHUNK = 0,                 /* one chunk: aggregate both sides, narrow down */
  U_MULTISET,                  /* a table without a key, whole */
  U_SCAN,                      /* block range 'part' of both sides: every chunk's aggregate */
  U_DRILL                      /* a chunk the scan found different: narrow down */
} UnitKind;

typedef struct Unit {
  int table;                   /* index into Run.tables */
  UnitKind kind;
  int chunk;                   /* U_CHUNK, U_DRILL: 0..nbounds */
  int part;                    /* U_SCAN: 0..nscan-1 */
} Unit;

/* One validation run. */
typedef struct Run {
  const VOptions *o;
  VReport *r;
  VTable *tables;
  int ntables;
  VConn msrc, mtgt;            /* planning, snapshot export, re-checks, and the
                                  consistent point's diagnostics */
  int md5hash;                 /* a server older than 11: hash with md5 */
  /* the current pass, under mu */
  Unit *units;
  int nunits, next, capunits;
  int inflight;                /* units taken and not finished */
  int snapshot;                /* workers read exported snapshots */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int running;                 /* worker threads alive */
  int fatal;                   /* stop: fatal_msg says why */
  char fatal_msg[ERRLEN];
  int64_t rows_done, rows_total;
  int tables_done, tables_total;
} Run;

/* One statement built for each side: [0] source, [1] target.  The
   parameter values are borrowed strings. */
typedef struct VPair {
  Buf sql[2];
  const char **pv[2];
  int np[2];
} VPair;

/* A worker thread and its two connections. */
typedef struct Worker {
  Run *run;
  VConn src, tgt;
  pthread_t th;
  int started;
} Worker;

/* }====================================================================== */

/* {======================================================================
** validate_conn.c: connections and time
** Functions taking err/errlen return 0 (or a result) on success, -1 (or
** NULL) with a redacted message in err.
** ======================================================================= */

double vnow(void);                          /* monotonic seconds */
void vsleep_ms(int ms);
int vconn_open(VConn *vc, const char *conninfo, const char *label, const VOptions *o,
               char *err, size_t errlen);
void vconn_close(VConn *vc, int64_t *total);
int vconn_broken(const VConn *vc);
int vsend(VConn *vc, const char *sql, int n, const char *const *params, int single_row,
          char *err, size_t errlen);
PGresult *vcollect(VConn *vc, char *err, size_t errlen);
PGresult *vnext(VConn *vc, int *failed, char *err, size_t errlen);
void vdrain(VConn *vc);
PGresult *vquery(VConn *vc, const char *sql, int n, const char *const *params,
                 char *err, size_t errlen);
int vexec(VConn *vc, const char *sql, char *err, size_t errlen);
int vsend_pair(VConn *s, VConn *g, const char *qs, int ns, const char **ps,
               const char *qt, int nt, const char **pt, int single_row,
               char *err, size_t errlen);
int vcollect_pair(VConn *s, VConn *g, PGresult **rs, PGresult **rt, char *err, size_t errlen);
void vpair_init(VPair *p, int maxparams);
void vpair_free(VPair *p);
int vpair_send(VPair *p, VConn *s, VConn *g, int single_row, char *err, size_t errlen);
int vpair_run(VPair *p, VConn *s, VConn *g, PGresult **rs, PGresult **rt,
              char *err, size_t errlen);

/* }====================================================================== */

/* {======================================================================
** validate_keymap.c: hash map of encoded keys
** ======================================================================= */

uint64_t kmap_hash(const char *p, size_t n);
void kmap_free(KMap *m);
KEntry *kmap_find(KMap *m, const char *k, uint32_t klen, uint64_t kh);
KEntry *kmap_add(KMap *m, const char *k, uint32_t klen, uint64_t kh);
void kmap_del(KMap *m, KEntry *e);
void kmap_encode_key(Buf *b, const PGresult *res, int row, int nkey);
char **kmap_decode_key(const char *k, uint32_t klen, int nkey);
void kmap_index_rows(KMap *m, const PGresult *res, int nkey, Buf *key);
int kmap_row(KMap *m, const char *k, uint32_t klen);

/* }====================================================================== */

/* {======================================================================
** validate_text.c: string vectors (the rest is public, in validate.h)
** ======================================================================= */

void vstrv_free(char **v, int n);
void vstrv_push(char ***v, int *n, const char *s);

/* }====================================================================== */

/* {======================================================================
** validate_sql.c: SQL pieces
** 'target' selects the side (types, FROM item); predicates append their
** parameter values to pv[*np...] and number them $(*np + 1)...
** ======================================================================= */

void vsql_hash_exprs(VTable *t, int md5hash);
char *vsql_from_item(const char *schema, const char *name, char kind);
const char *vsql_from(const VTable *t, int target);
const char *vsql_col_type(const VCol *c, int target);
void vsql_key_list(Buf *b, const VTable *t, int as_text);
void vsql_select_keys(Buf *b, const VTable *t, int target, int with_columns);
void vsql_range_pred(Buf *b, const VTable *t, int target, char *const *lo, char *const *hi,
                     const char **pv, int *np);
void vsql_in_pred(Buf *b, const VTable *t, int target, char ***keys, int n,
                  const char **pv, int *np);

/* }====================================================================== */

/* {======================================================================
** Planning, bounds, passes, comparison, results
** ======================================================================= */

int vplan(Run *run, char *err, size_t errlen);                       /* validate_plan.c */
int vbounds_plan(Run *run, VTable *t, char *err, size_t errlen);     /* validate_bounds.c */
int vbounds_exact(VConn *vc, VTable *t, int target, char *const *lo, char *const *hi,
                  long step, char ***bounds, int *nbounds, char *err, size_t errlen);
int vbounds_keep_monotone(VConn *vc, VTable *t, int target, char ***bounds, int *nbounds,
                          char *err, size_t errlen);

/* validate_workers.c */
void vrun_fatal(Run *run, const char *msg);
void vrun_add_rows(Run *run, int64_t n);
void vrun_enqueue(Run *run, const Unit *u, int n);
int vrun_pass(Run *run, VTable **sel, int nsel, int snapshot, char *err, size_t errlen);
void vtable_fail(VTable *t, const char *msg);
int vtable_failed(VTable *t);

/* validate_snapshot.c */
int vsnapshot_setup(Run *run, Worker *ws, int n, char *err, size_t errlen);

/* validate_point.c */
int vpoint_create(Run *run, VPoint *p, char *err, size_t errlen);
void vpoint_close(VPoint *p);

/* validate_scan.c */
int vscan_parts(const Run *run, const VTable *t);
int vscan_part(Worker *w, VTable *t, int part, char *err, size_t errlen);
void vscan_finished(Worker *w, VTable *t);

/* validate_chunk.c, validate_narrow.c, validate_multiset.c */
int vchunk_compare(Worker *w, VTable *t, char *const *lo, char *const *hi, int depth,
                   int top, char *err, size_t errlen);
int vnarrow_drill(Worker *w, VTable *t, char *const *lo, char *const *hi, int64_t rows,
                  char *err, size_t errlen);
int vnarrow_one_sided(Worker *w, VTable *t, char *const *lo, char *const *hi, int target,
                      int64_t count, char *err, size_t errlen);
int vmultiset_compare(Worker *w, VTable *t, char *err, size_t errlen);
int vbuckets_diff(const PGresult *rs, const PGresult *rt, Buf *list, int64_t *ts,
                  int64_t *tt);

/* validate_report.c */
void vkeydiff_free(KeyDiff *d, int nkey);
void vreport_free_rows(VTableResult *tr);
int vreport_build_rows(VConn *s, VConn *g, Run *run, VTable *t, char *err, size_t errlen);
int vreport_finish_keyed(VConn *s, VConn *g, Run *run, VTable *t, char *err, size_t errlen);
void vreport_totals(VReport *r);
void vtable_set_status(VTable *t);
void vtable_reset(VTable *t);

/* validate_recheck.c */
int vrecheck_loop(Run *run, char *err, size_t errlen);

/* }====================================================================== */

#endif
