/*
** apply_commit.c
** The apply engine's transactions and commits: a transaction's records
** collected into segments (applied by the set or the row path),
** Relation/Type/Truncate handled in order, the commit that records the
** source position in the same target transaction, and the groups in
** flight until their COMMIT result arrives.
*/
#include "cdc/apply_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/buf.h"

/* A PostgreSQL timestamp as timestamptz text in UTC. */
static void format_pgts (int64_t pgts, char *out, size_t n) {
  int64_t us = pgts + PGO_EPOCH_OFFSET_US;
  time_t secs = (time_t)(us >= 0 ? us / 1000000 : (us - 999999) / 1000000);
  long frac = (long)(us - (int64_t)secs * 1000000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  snprintf(out, n, "%04d-%02d-%02d %02d:%02d:%02d.%06ld+00", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* BEGIN the group's target transaction before its first statement. */
static int begin_if_needed (Applier *a, CdcError *err) {
  if (a->in_xact)
    return 0;
  if (pipe_exec(a, "BEGIN", 'q', NULL, err) != 0)
    return -1;
  a->in_xact = 1;
  return 0;
}

/*
** Apply the buffered segment.  Set path when big enough: the keyed changes are folded into the net state
** up to the first change it can not express; that range is applied
** set-based, the change alone row by row, and folding starts again
** after it.
*/
static int flush_segment (Applier *a, CdcError *err) {
  size_t n = a->nents, start = 0, *rowidx;
  int rc = 0;
  if (n == 0)
    return 0;
  if (rels_resolve(a, err) != 0)
    return -1;
  if (a->set_threshold <= 0 || n < (size_t)a->set_threshold) {
    rc = row_apply_range(a, 0, n, err);
    goto done;
  }
  rowidx = xmalloc(n * sizeof(size_t));
  while (start < n && rc == 0) {
    size_t cut, nrow = 0;
    int stop = 0;
    net_clear(a);
    for (cut = start; cut < n && rc == 0; cut++) {
      Rel *r;
      if (apply_decode_rec(a, (const uint8_t *)a->seg.data + a->ents[cut].off, a->ents[cut].len,
                           &a->msg, err) != 0) {
        rc = -1;
        break;
      }
      r = rel_find(a, a->msg.relid);
      if (r == NULL) {
        cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s of relation %u before its Relation message",
                    pgo_kind_name(a->msg.kind), a->msg.relid);
        rc = -1;
        break;
      }
      if (!r->set_ok)
        rowidx[nrow++] = cut;
      else if (net_add(a, &a->msg, r) != 0) {
        stop = 1;
        break;
      }
    }
    if (rc != 0)
      break;
    rc = set_apply(a, start, cut, rowidx, nrow, err);
    if (rc == 0 && stop)
      rc = row_apply_range(a, cut, cut + 1, err);
    start = stop ? cut + 1 : cut;
  }
  free(rowidx);
done:
  a->nents = 0;
  buf_reset(&a->seg);
  net_clear(a);
  return rc < 0 ? -1 : 0;
}

/* Is this change (a stored Insert/Update/Delete record) already in its
   table's copy?  True when the table was copied under a snapshot that
   holds every transaction ending at or before its sync LSN, and this
   transaction ends there (see ApplySync).  Never raises. */
static int in_copy (Applier *a, const uint8_t *rec, size_t len, PgLsn end_lsn) {
  size_t off = (rec[0] & APPLY_REC_STREAMED) ? 6 : 2;   /* flag, kind, [xid,] relid */
  uint32_t relid;
  Rel *r;
  if (len < off + 4)
    return 0;
  relid = pgo_get_u32(rec + off);
  r = rel_find(a, relid);
  return r != NULL && r->sync_lsn != 0 && end_lsn <= r->sync_lsn;
}

/* Buffer a change record in the segment; 1 when the segment is full. */
static int seg_add (Applier *a, const uint8_t *rec, size_t len) {
  if (a->nents == a->ents_cap) {
    a->ents_cap = a->ents_cap ? a->ents_cap * 2 : 1024;
    a->ents = xrealloc(a->ents, a->ents_cap * sizeof(SegEnt));
  }
  a->ents[a->nents].off = a->seg.len;
  a->ents[a->nents].len = len;
  buf_append(&a->seg, rec, len);
  a->nents++;
  return a->seg.len >= a->segment_bytes || a->nents >= (size_t)a->segment_changes;
}

/*
** See apply.h.  Reads the transaction's records in order: row changes
** are collected into set segments (flushed when full), Relation and Type
** messages update the caches (a changed relation flushes first), a
** Truncate is sent at once.  -1 with err; the group is then lost.
*/
int apply_txn (Applier *a, SpillBuf *txn, PgLsn end_lsn, CdcError *err) {
  SpillReader rd;
  const uint8_t *rec;
  size_t len;
  int rc = 0, got;
  if (a->pipe_failed)           /* a result already told: the group is lost */
    return pipe_error(a, err);
  if (begin_if_needed(a, err) != 0)
    return -1;
  spill_reader_init(&rd, txn);
  while (rc == 0 && (got = spill_read(&rd, &rec, &len, err)) != 0) {
    if (got < 0) {
      rc = -1;
      break;
    }
    if (len < 2) {
      cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "apply: empty change record");
      rc = -1;
      break;
    }
    a->stats.bytes += len;
    switch (rec[1]) {
      case PGO_INSERT:
      case PGO_UPDATE:
      case PGO_DELETE:
        if (a->nsync > 0 && in_copy(a, rec, len, end_lsn)) {
          a->stats.skipped++;
          break;
        }
        if (seg_add(a, rec, len))
          rc = flush_segment(a, err);
        break;
      case PGO_RELATION: {
        Rel *r;
        if (apply_decode_rec(a, rec, len, &a->msg, err) != 0) {
          rc = -1;
          break;
        }
        r = rel_find(a, a->msg.relid);
        if (r != NULL && rel_same(r, &a->msg))
          break;
        /* changes before it were decoded with the old definition */
        if (r != NULL && (flush_segment(a, err) != 0 || apply_decode_rec(a, rec, len, &a->msg, err) != 0)) {
          rc = -1;
          break;
        }
        r = rel_new(a, &a->msg);
        rel_put(a, r);
        rc = rel_request(a, r, err);
        break;
      }
      case PGO_TYPE:
        if (apply_decode_rec(a, rec, len, &a->msg, err) != 0)
          rc = -1;
        else
          type_put(a, &a->msg);
        break;
      case PGO_TRUNCATE:
        if (flush_segment(a, err) != 0 || apply_decode_rec(a, rec, len, &a->msg, err) != 0 ||
            send_truncate(a, &a->msg, end_lsn, err) != 0)
          rc = -1;
        break;
      default:                 /* Origin, Message: nothing to apply */
        break;
    }
  }
  spill_reader_free(&rd);
  if (rc == 0)
    a->stats.txns++;
  return rc;
}

/* Queue a group in flight (its COMMIT was sent). */
static void fly_push (Applier *a, PgLsn end_lsn, int64_t commit_ts) {
  Inflight *g;
  if (a->fly_len == a->fly_cap) {
    size_t cap = a->fly_cap ? a->fly_cap * 2 : 16, i;
    Inflight *f = xmalloc(cap * sizeof(Inflight));
    for (i = 0; i < a->fly_len; i++)
      f[i] = a->fly[(a->fly_head + i) % a->fly_cap];
    free(a->fly);
    a->fly = f;
    a->fly_cap = cap;
    a->fly_head = 0;
  }
  g = &a->fly[(a->fly_head + a->fly_len) % a->fly_cap];
  g->end_lsn = end_lsn;
  g->commit_ts = commit_ts;
  g->stats = a->stats;
  a->fly_len++;
}

/*
** See apply.h.  Flushes the last segment, records end_lsn and commit_ts
** as the progress in the same transaction (origin xact setup or the
** progress row), sends COMMIT and a flush request (the server sends
** results without waiting for a sync) and pushes the output out as far
** as the socket takes it.  The group is in flight until its COMMIT
** result arrives.  -1 with err.
*/
int apply_commit (Applier *a, PgLsn end_lsn, int64_t commit_ts, CdcError *err) {
  char lsn[PGO_LSN_BUFSZ], ts[64];
  if (a->pipe_failed)
    return pipe_error(a, err);
  if (begin_if_needed(a, err) != 0 || flush_segment(a, err) != 0)
    return -1;
  pgo_lsn_format(end_lsn, lsn);
  format_pgts(commit_ts, ts, sizeof(ts));
  buf_reset(&a->pbuf);
  {
    PgoValue v1 = {PGO_VAL_TEXT, (uint32_t)strlen(lsn), lsn}, v2 = {PGO_VAL_TEXT, (uint32_t)strlen(ts), ts};
    PgoValue v0 = {PGO_VAL_TEXT, (uint32_t)strlen(a->origin), a->origin};
    PgoValue v3 = {a->identity != NULL ? PGO_VAL_TEXT : PGO_VAL_NULL,
                   a->identity != NULL ? (uint32_t)strlen(a->identity) : 0, a->identity};
    if (a->mode == APPLY_PROGRESS_ORIGIN) {
      param_set(a, 0, &v1);
      param_set(a, 1, &v2);
      params_finish(a, 2);
      if (pipe_exec_params(a, "SELECT pg_replication_origin_xact_setup($1::pg_lsn, $2::timestamptz)",
                           2, err) != 0)
        return -1;
    } else {
      param_set(a, 0, &v0);
      param_set(a, 1, &v1);
      param_set(a, 2, &v2);
      param_set(a, 3, &v3);
      params_finish(a, 4);
      if (pipe_exec_params(a,
            "INSERT INTO pgtide.cdc_progress AS p (name, lsn, commit_time, migration) "
            "VALUES ($1, $2::pg_lsn, $3::timestamptz, $4) "
            "ON CONFLICT (name) DO UPDATE SET lsn = EXCLUDED.lsn, commit_time = EXCLUDED.commit_time, "
            "migration = EXCLUDED.migration, updated_at = now()", 4, err) != 0)
        return -1;
    }
  }
  if (pipe_enter(a, err) != 0)
    return -1;
  if (!PQsendQueryParams(a->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0))
    return apply_conn_broken(a, err, "apply: send");
  ring_push(a, 'C', 0, NULL);
  if (PQsendFlushRequest(a->conn) != 1)
    return apply_conn_broken(a, err, "apply: send");
  a->in_xact = 0;
  a->stats.commits++;
  fly_push(a, end_lsn, commit_ts);
  if (PQflush(a->conn) < 0)
    return apply_conn_broken(a, err, "apply connection");
  return pipe_drain(a, DRAIN_NOWAIT, -1, err);
}

/* See apply.h. */
int apply_inflight (const Applier *a) {
  return (int)a->fly_len;
}

/* See apply.h: push pending output, read what arrives within
   timeout_ms. */
int apply_poll (Applier *a, int timeout_ms, CdcError *err) {
  if (a->pipe_failed)
    return pipe_error(a, err);
  if (!a->pipeline)
    return 0;
  if (PQflush(a->conn) < 0)
    return apply_conn_broken(a, err, "apply connection");
  return pipe_drain(a, timeout_ms > 0 ? 0 : DRAIN_NOWAIT, timeout_ms, err);
}

/* See apply.h: block (1 s poll slices, abort flag) until at most n
   groups are in flight. */
int apply_wait (Applier *a, int n, CdcError *err) {
  if (a->pipe_failed)
    return pipe_error(a, err);
  if (!a->pipeline || a->fly_len <= (size_t)(n < 0 ? 0 : n))
    return 0;
  return pipe_drain(a, n < 0 ? 0 : n, -1, err);
}
