/*
** validate.h
** Row-level data validation between a source and a target database.
**
** For every table the key space is split into chunks by primary-key
** ranges (quantiles sampled on the source).  Both servers compute a
** count and a 64-bit hash sum per chunk over the text form of each row
** (identical session settings on both sides, so text forms match);
** only chunks that differ are narrowed down: their keys and per-row
** hashes are fetched and matched in C (a hash map, so no ordering has
** to be reproduced client-side), then the differing rows are fetched
** column by column.  The result names missing rows, extra rows and
** rows whose columns differ.  Tables without a usable key (no primary
** key and no unique index on NOT NULL columns) get a multiset
** comparison: per-bucket counts and hash sums first, then counts per
** row hash for the buckets that differ.
**
** Work runs in 'jobs' threads, each with its own source and target
** connection; a table's chunks are spread over all threads.  Memory
** per table is bounded (a chunk's keys plus a capped set of unmatched
** keys); a table whose chunks match never leaves the servers.
**
** Consistency modes:
**   OFFLINE     each side reads one exported snapshot (exact when the
**               databases are not written to);
**   CONSISTENT  exact while writes continue, with no lock on the
**               source: the caller's hook holds change apply on the
**               target, a temporary logical replication slot created on
**               the source exports a snapshot and gives its LSN (the
**               transactions whose commit record ends at or before it
**               are exactly those the snapshot sees), every worker reads
**               the source under that snapshot, the hook lets apply
**               reach exactly that LSN, the target snapshot is taken and
**               the hook resumes apply (validate_point.c);
**   RECHECK     compare, then re-check only the differing rows (or the
**               differing tables when too many rows differ) after a
**               delay, up to N times; what still differs is reported.
**
** Lua-free; the binding is src/validate/validate_lua.c.  The
** implementation is split over src/validate/validate_*.c: the map of
** which file does what is at the top of validate_internal.h.
*/
#ifndef PGTIDE_VALIDATE_H
#define PGTIDE_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

typedef enum VMode {
  VMODE_OFFLINE = 0,
  VMODE_CONSISTENT,
  VMODE_RECHECK
} VMode;

/*
** The consistent-point hook.  pause_at() must return once every source
** transaction whose commit record ends at or before 'lsn' is applied and
** committed on the target, and keep later transactions unapplied until
** resume() is called.  It is called twice per run, with increasing
** LSNs: first at the source's current WAL position before the
** consistent point is created (a hold, so apply cannot pass the point
** while it is being found), then at the consistent point itself (the
** pause moves forward to it).  Both run on the thread that called
** validate_run() and return 0, or -1 with a message in err.  resume()
** is called exactly once after the first successful pause_at(),
** whatever happens in between.
*/
typedef struct VHook {
  int (*pause_at)(void *ud, const char *lsn, char *err, size_t errlen);
  int (*resume)(void *ud, char *err, size_t errlen);
  void *ud;
} VHook;

typedef struct VOptions {
  const char *source;          /* conninfo or URI */
  const char *target;
  const char *const *tables;   /* "schema.table" or "table" (public); NULL: all */
  int ntables;
  int jobs;                    /* worker threads (>= 1) */
  long chunk_rows;             /* target rows per chunk (default 20000) */
  int max_rows;                /* differing rows listed per table (default 100) */
  int max_value_len;           /* values truncated to this many bytes (default 64) */
  int redact;                  /* hide column values in the report */
  VMode mode;
  VHook hook;                  /* CONSISTENT mode only */
  int recheck_times;           /* RECHECK mode: how many re-checks (default 3) */
  double recheck_delay;        /* seconds between re-checks (default 10) */
  int statement_timeout_s;     /* per statement on both servers (default 3600) */
  int point_timeout_s;         /* CONSISTENT: longest wait for the transactions in progress
                                  on the source to end while the consistent point is
                                  created (default 300) */
  int progress;                /* status line on a TTY, plain log lines otherwise */
  int scan;                    /* single-column keys: all chunk aggregates in one pass per
                                  side (block ranges in parallel) rather than one range
                                  query per chunk (default 1) */
  long scan_split_pages;       /* split a scan into block ranges (up to 'jobs') only for
                                  tables above this many 8 kB pages (default 8192) */
  int lock_timeout_ms;         /* give up a statement that waits this long for a lock
                                  (0: wait; see src/load/load_verify.c for why one may not) */
  int (*cancel)(void *ud);     /* besides SIGINT: statements are cancelled once this
                                  returns non-zero (may be NULL) */
  void *cancel_ud;
  const char *source_snapshot; /* OFFLINE / RECHECK: read the source under this exported
                                  snapshot (e.g. the one a full load copied under: the
                                  comparison is then exact while the source keeps
                                  changing); NULL: export one */
} VOptions;

/* Fill the defaults above (tables NULL, mode OFFLINE, jobs 1). */
void validate_options_init(VOptions *o);

typedef enum VDiffKind {
  VDIFF_MISSING = 0,           /* on the source, not on the target */
  VDIFF_EXTRA,                 /* on the target, not on the source */
  VDIFF_CHANGED                /* same key, different columns */
} VDiffKind;

/* One differing column of a changed row.  Values are truncated copies
   (NULL pointer: SQL NULL, or hidden when redacting: see 'hidden'). */
typedef struct VColDiff {
  char *name;
  char *source;
  char *target;
  int hidden;                  /* values withheld (redact) */
} VColDiff;

/* One differing row (keyed table) or row group (multiset table). */
typedef struct VRowDiff {
  VDiffKind kind;
  char **key;                  /* nkey key values (keyed tables), not redacted */
  VColDiff *cols;              /* CHANGED: the differing columns */
  int ncols;
  /* multiset tables: the rows sharing one hash */
  int64_t hash;
  int64_t source_count, target_count;
  char **values;               /* ncolumns truncated values of one such row; NULL if hidden */
} VRowDiff;

typedef enum VTableStatus {
  VT_EQUAL = 0,
  VT_DIFFERENT,
  VT_MISSING_ON_TARGET,        /* the table itself is absent on the target */
  VT_NOT_FOUND,                /* a requested table does not exist on the source */
  VT_ERROR
} VTableStatus;

typedef struct VTableResult {
  char *schema, *name;
  char **key_cols;             /* the key used; nkey == 0: multiset */
  int nkey;
  char *key_kind;              /* "primary key", "unique index NAME", "none" */
  char **columns;              /* compared columns (source order) */
  int ncolumns;
  char **only_source;          /* columns present on one side only (not compared) */
  int nonly_source;
  char **only_target;
  int nonly_target;
  VTableStatus status;
  char *error;                 /* VT_ERROR: what failed (redacted) */
  int64_t source_rows, target_rows;
  int64_t missing, extra, changed;   /* row counts (multiset: multiplicities) */
  int nchunks, chunks_differing;
  VRowDiff *rows;              /* at most max_rows, sorted by key */
  int nrows;
  int truncated;               /* more differing rows than listed */
  int rechecks;                /* re-checks done (RECHECK mode) */
  int64_t initial_differences; /* RECHECK: differing rows before the re-checks */
  int64_t bytes;               /* source table size (heap + TOAST) */
  double seconds;
} VTableResult;

typedef struct VReport {
  VMode mode;
  VTableResult *tables;
  int ntables;
  char lsn[32];                /* CONSISTENT: the source LSN of the snapshot */
  double point_ms;             /* CONSISTENT: how long creating the consistent point took
                                  (source writes are never held) */
  int64_t bytes_source;        /* bytes received from each server (TCP) */
  int64_t bytes_target;
  int64_t table_bytes;         /* sum of the validated tables' sizes */
  int tables_equal, tables_different, tables_failed;
  int64_t missing, extra, changed;
  double seconds;
} VReport;

/*
** Validate.  Returns 0 when the comparison ran (differences are in the
** report, tables that failed have status VT_ERROR); -1 on a failure that
** stopped everything (cannot connect, consistent point not reached,
** interrupted), with a redacted message in err.  The caller frees the
** report with validate_report_free() in both cases.
*/
int validate_run(const VOptions *o, VReport *r, char *err, size_t errlen);
void validate_report_free(VReport *r);

const char *validate_status_name(VTableStatus s);
const char *validate_kind_name(VDiffKind k);
const char *validate_mode_name(VMode m);
int validate_mode_from_name(const char *name);      /* -1 when unknown */

/* {======================================================================
** Helpers exposed for the unit tests.
** ======================================================================= */

/* Split "schema.table" (either part may be double-quoted) into parts;
   no dot means schema "public".  Returns 0, -1 when malformed. */
int validate_parse_name(const char *in, char **schema, char **name);

/* Copy of 'v' cut to at most 'max' bytes (on a UTF-8 boundary) with
   "..." appended when cut.  NULL stays NULL. */
char *validate_truncate(const char *v, int max);

/* Compare key texts: integers numerically, anything else bytewise. */
int validate_keycmp(const char *a, const char *b);

/*
** Longest subsequence of 0..n-1 that is increasing in 'order' (order[i]
** is the rank of element i in another ordering).  Writes the kept
** indexes, ascending, to 'keep' and returns how many.
*/
int validate_monotone_subset(const int *order, int n, int *keep);

/*
** The consistent point's temporary slot name: "pgtide_vcp_<pid>_<seq>_<rnd
** as 8 hex digits>" (valid slot-name characters, at most 63 bytes).
*/
void validate_point_slot_name(char *out, size_t n, long pid, unsigned seq, uint32_t rnd);

/*
** What to do when the consistent point's slot or replication connection
** cannot be had, from the server's SQLSTATE (may be NULL) and message:
** no free slot, no free WAL sender, wal_level, a standby, a role
** without REPLICATION.  NULL when none of these.
*/
const char *validate_point_fix(const char *sqlstate, const char *message);

/* }====================================================================== */

#endif
