/*
** apply_internal.h
** What the files of the CDC apply engine share: the Applier, the
** relation cache entry, the pipeline's bookkeeping, the set path's net
** entries, and the functions one file calls in another.  The public API
** is apply.h; nothing outside src/cdc/ includes this header.
**
** Where things are (the contract and the design are in apply.h):
**
**   apply.c            entry points: apply_open() (session settings,
**                      progress set-up), apply_progress(),
**                      apply_drop_progress(), apply_close(), accessors,
**                      apply_exec() (a checked statement, CDC errors)
**   apply_pipeline.c   the pipeline: parameters, sends, the ring of
**                      pending results, reading results (pipe_drain),
**                      leaving the pipeline for plain statements
**   apply_rel.c        the relation cache and schema drift checks
**                      (Relation/Type messages, the target's catalog)
**   apply_row.c        the row path: prepared INSERT/UPDATE/DELETE per
**                      change, TRUNCATE, decoding stored records
**   apply_set.c        the set path: net effect per key, rows as one
**                      array parameter, set-based statements per table
**   apply_commit.c     transactions into segments (apply_txn), commits
**                      with the progress, groups in flight
**
** The worker that drives the engine is in cdc_*.c (cdc_internal.h).
**
** Threads: an Applier is used by one thread at a time (the worker's
** apply thread); on_commit is called on that thread.
**
** Ownership: the Applier owns its connection, caches and buffers;
** apply_close() frees them.  Relation entries replaced while results
** may still point at them are retired, not freed, until then.
** Functions returning int give 0 or -1 with a CdcError; none raises.
*/
#ifndef PGTIDE_APPLY_INTERNAL_H
#define PGTIDE_APPLY_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "cdc/apply.h"
#include "util/buf.h"

/* pipe_drain()'s 'want' besides n >= 0 (at most n groups in flight) */
#define DRAIN_NOWAIT (-1)         /* read what is there */
#define DRAIN_ALL (-2)            /* until every pending result (ending with a sync) is read */
#define DRAIN_CATALOG (-3)        /* until every catalog query is answered */

/* {======================================================================
** Types
** ======================================================================= */

typedef struct RelCol {
  char *name;
  char *qname;                   /* quoted identifier */
  uint32_t typoid;
  int32_t typmod;
  int key;                       /* part of the replica identity */
  int identity_always;           /* target: GENERATED ALWAYS AS IDENTITY */
} RelCol;

typedef struct Stmt {
  char *key;                     /* shape: kind, tuple tags, column masks */
  char name[32];
} Stmt;

typedef struct Rel {
  uint32_t relid;
  char *nspname, *relname;
  char *qname;                   /* "ns"."rel" */
  char *display;                 /* ns.rel, for messages */
  char replident;
  int ncols;
  RelCol *cols;
  int nkeys;
  int *keys;                     /* column indexes of the identity */
  int full;                      /* REPLICA IDENTITY FULL */
  int set_ok;                    /* keyed, with a unique index on the key */
  int partitioned;               /* target relkind 'p': no ONLY */
  int any_identity_always;
  PgLsn sync_lsn;                /* skip changes in transactions ending at or before (ApplySync) */
  unsigned gen;                  /* bumped when the relation changes */
  int temp_ready;                /* the set path's row type (a temporary table) exists */
  int resolved;                  /* the target's side is known (rels_resolve) */
  PGresult *catalog;             /* the target's answer, until resolved */
  struct Rel *retired;           /* replaced entries, freed with the Applier */
  char tempname[48];
  Stmt *stmts;
  int nstmts, stmtcap;
} Rel;

typedef struct TypeName {
  uint32_t oid;
  char *name;                    /* nsp.typname from a Type message */
} TypeName;

typedef struct Pending {
  char kind;                     /* 'q' statement, 'c' change, 'S' set-based
                                    statement, 'C' COMMIT, 'r' catalog query
                                    (the answer goes to rel->catalog), 's' sync */
  char op;                       /* 'U' / 'D' for 'c' */
  Rel *rel;
} Pending;

/* A group whose COMMIT was sent and whose result has not arrived. */
typedef struct Inflight {
  PgLsn end_lsn;
  int64_t commit_ts;
  ApplyStats stats;              /* as of the group's end */
} Inflight;

typedef struct SegEnt {
  size_t off, len;               /* record in seg (flag byte + message) */
} SegEnt;

/* One key's net effect in the set path. */
typedef struct NetEnt {
  Rel *rel;
  char op;                       /* final state: 'i' whole row, 'u' row with
                                    unchanged-TOAST columns, 'd' absent */
  int existed;                   /* the row existed before the segment */
  size_t keyoff, keylen;         /* key bytes in keys */
  uint32_t hash;
  PgoValue *vals;                /* rel->ncols values (into the segment) */
  int next_in_rel;
} NetEnt;

struct Applier {
  PGconn *conn;
  char *origin;
  char *identity;               /* the migration a progress row belongs to (table mode) */
  ApplyProgressMode mode;
  int set_threshold, segment_changes, replica_role;
  size_t segment_bytes;
  volatile int *abort_flag;
  int pipeline, in_xact, since_check;
  Pending *ring;
  size_t ring_cap, ring_head, ring_len;
  int head_has_result;
  int pipe_failed;
  CdcError pipe_err;
  Rel *set_failed;               /* a set-based statement on this table failed */
  Inflight *fly;                 /* groups in flight, oldest first (ring) */
  size_t fly_cap, fly_head, fly_len;
  const char *const *row_only;   /* borrowed (ApplyOptions.row_only) */
  int nrow_only;
  ApplyCommitFn on_commit;
  void *on_commit_ctx;
  Rel **rels;                    /* open addressing on relid */
  size_t rel_cap, nrels;
  Rel *retired;                  /* replaced entries (results may point at them) */
  int catalog_pending;           /* catalog queries whose answer has not arrived */
  int unresolved;                /* cache entries without the target's side */
  TypeName *types;
  size_t ntypes, type_cap;
  Buf seg;                       /* buffered changes of the open segment */
  SegEnt *ents;
  size_t nents, ents_cap;
  Buf pbuf, sql, sql2, arr;
  const char **pvals;
  int *plens, *pfmts;
  size_t pcap;
  size_t *poffs;
  PgoDecoder dec;
  PgoMsg msg;
  ApplyStats stats;
  unsigned stmt_seq;
  /* set path scratch */
  NetEnt *net;
  size_t nnet, net_cap;
  int *nethash;                  /* open addressing: index+1 into net */
  size_t nethash_cap;
  Buf keys;
  const ApplySync *sync;         /* borrowed (ApplyOptions.sync) */
  int nsync;
};

/* }====================================================================== */

/* {======================================================================
** Functions one file calls in another
** ======================================================================= */

/* apply_pipeline.c */
int apply_aborted(const Applier *a);
void param_set(Applier *a, int i, const PgoValue *v);
void params_finish(Applier *a, int n);
void ring_push(Applier *a, char kind, char op, Rel *rel);
int apply_conn_broken(Applier *a, CdcError *err, const char *what);
int pipe_error(Applier *a, CdcError *err);
int pipe_drain(Applier *a, int want, int timeout_ms, CdcError *err);
int pipe_enter(Applier *a, CdcError *err);
int pipe_after_send(Applier *a, CdcError *err);
int pipe_exec(Applier *a, const char *sql, char kind, Rel *rel, CdcError *err);
int pipe_exec_params(Applier *a, const char *sql, int n, CdcError *err);
int pipe_exec_array(Applier *a, const char *sql, Rel *rel, CdcError *err);
int apply_exec_params(Applier *a, const char *sql, int n, const char *const *vals, PGresult **out,
                      const char *what, CdcError *err);

/* apply_rel.c */
void rel_free(Rel *r);
Rel *rel_find(Applier *a, uint32_t relid);
void rel_put(Applier *a, Rel *r);
void type_put(Applier *a, const PgoMsg *m);
int rel_same(const Rel *r, const PgoMsg *m);
Rel *rel_new(Applier *a, const PgoMsg *m);
int rel_request(Applier *a, Rel *r, CdcError *err);
int rels_resolve(Applier *a, CdcError *err);

/* apply_row.c */
int send_truncate(Applier *a, const PgoMsg *m, PgLsn end_lsn, CdcError *err);
int apply_decode_rec(Applier *a, const uint8_t *rec, size_t len, PgoMsg *m, CdcError *err);
int row_apply(Applier *a, const PgoMsg *m, CdcError *err);
int row_apply_range(Applier *a, size_t from, size_t to, CdcError *err);

/* apply_set.c */
void net_clear(Applier *a);
int net_add(Applier *a, const PgoMsg *m, Rel *r);
int set_apply(Applier *a, size_t from, size_t to, const size_t *rowidx, size_t nrow, CdcError *err);

/* }====================================================================== */

#endif
