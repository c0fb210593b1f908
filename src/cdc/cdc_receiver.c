/*
** cdc_receiver.c
** The receiver thread of a session: reads the replication stream,
** decodes pgoutput, keeps one buffer per source transaction (streamed
** ones included, subtransaction aborts truncate), queues complete
** transactions for the applier, answers keepalives and sends standby
** status with the applied position.
*/
#include "cdc/cdc_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/buf.h"
#include "util/log.h"

/* The receiver thread's own state (nothing here is shared: what others
   see is published into the Cdc under its mu). */
typedef struct Receiver {
  Cdc *c;
  PgoDecoder dec;
  PgoMsg msg;
  Txn *cur;                      /* open non-streamed transaction */
  Txn *streams;                  /* open streamed transactions (list) */
  Txn *block;                    /* the one of the current stream block */
  Buf rec;
  uint64_t bytes;                /* received, not yet published */
  PgLsn wal_end;                 /* latest XLogData position, not yet published */
  double last_status;
  PgLsn last_sent_flush;
} Receiver;

/* Send a standby status update: received (write) and applied (flush,
   apply) positions, so the server may recycle WAL up to what the target
   committed.  -1 with err when the send fails. */
static int send_status (Receiver *r, int reply, CdcError *err) {
  Cdc *c = r->c;
  PgLsn write, flush;
  pthread_mutex_lock(&c->mu);
  write = c->st.received_lsn;
  flush = c->st.applied_lsn;
  pthread_mutex_unlock(&c->mu);
  if (write < flush)
    write = flush;
  r->last_status = cdc_now();
  r->last_sent_flush = flush;
  return stream_send_status(c->repl, write, flush, flush, reply, err);
}

/* Caller holds mu: publish what the receiver counted locally. */
static void recv_publish (Receiver *r) {
  Cdc *c = r->c;
  c->st.received_bytes += r->bytes;
  r->bytes = 0;
  if (r->wal_end > c->st.received_lsn)
    c->st.received_lsn = r->wal_end;
}

/* Periodic duties of the receiver: publish its counters, status to the
   server, the status file.  -1 when sending fails. */
static int recv_tick (Receiver *r, CdcError *err) {
  Cdc *c = r->c;
  double now = cdc_now();
  pthread_mutex_lock(&c->mu);
  recv_publish(r);
  pthread_mutex_unlock(&c->mu);
  if (now - r->last_status >= c->cfg.status_interval_ms / 1000.0 && send_status(r, 1, err) != 0)
    return -1;
  cdc_status_write(c, 0);
  return 0;
}

/* Hand a complete transaction to the applier, waiting (while keeping
   the server informed) when the queue holds more than half the budget. */
static int enqueue (Receiver *r, Txn *t, CdcError *err) {
  Cdc *c = r->c;
  size_t mem = spill_mem(&t->buf);
  double t0 = 0;
  pthread_mutex_lock(&c->mu);
  while (c->qhead != NULL && cdc_queued_mem(c) + mem > c->cfg.memory_cap / 2 && !c->session_stop) {
    if (t0 == 0)
      t0 = cdc_now();
    struct timespec ts;
    cdc_deadline(&ts, 0.1);
    c->recv_waiting = 1;
    pthread_cond_timedwait(&c->qcond, &c->mu, &ts);
    c->recv_waiting = 0;
    pthread_mutex_unlock(&c->mu);
    if (recv_tick(r, err) != 0)
      return -1;
    pthread_mutex_lock(&c->mu);
  }
  if (t0 != 0)
    c->st.recv_wait_s += cdc_now() - t0;
  recv_publish(r);
  t->next = NULL;
  if (c->qtail != NULL)
    c->qtail->next = t;
  else
    c->qhead = t;
  c->qtail = t;
  c->st.queued_txns++;
  c->st.queued_bytes += mem;
  c->st.received_txns++;
  if (spill_spilled(&t->buf))
    c->st.spilled_txns++;
  c->recv_open = r->cur != NULL || r->streams != NULL;
  /* only an idle applier is woken: one gathering a group looks at the
     queue every millisecond anyway, and a wakeup per transaction costs
     more than it gains */
  if (c->applier_waiting)
    pthread_cond_signal(&c->qcond);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

/* The open streamed (in-progress) transaction xid, or NULL; unlinked
   from the receiver's list when unlink_it (the caller then owns it). */
static Txn *stream_find (Receiver *r, uint32_t xid, int unlink_it) {
  Txn **pp;
  for (pp = &r->streams; *pp != NULL; pp = &(*pp)->next)
    if ((*pp)->xid == xid) {
      Txn *t = *pp;
      if (unlink_it) {
        *pp = t->next;
        t->next = NULL;
      }
      return t;
    }
  return NULL;
}

/* Publish whether the receiver holds an unfinished transaction (the
   applied position may not advance past it on keepalives). */
static void set_open (Receiver *r) {
  pthread_mutex_lock(&r->c->mu);
  r->c->recv_open = r->cur != NULL || r->streams != NULL;
  pthread_mutex_unlock(&r->c->mu);
}

static int proto_err (CdcError *err, const char *fmt, const char *what) {
  cdc_err_set(err, CDC_ERR_PROTOCOL, 0, fmt, what);
  return -1;
}

/* Store one message (flag byte + bytes) in a transaction's buffer.
   Open transactions together may hold half the memory budget: past
   that, the one growing moves to disk. */
static int store (Receiver *r, Txn *t, int streamed, const uint8_t *data, size_t len, CdcError *err) {
  size_t total;
  Txn *o;
  buf_reset(&r->rec);
  buf_putc(&r->rec, streamed ? APPLY_REC_STREAMED : 0);
  buf_append(&r->rec, data, len);
  if (spill_append(&t->buf, r->rec.data, r->rec.len, err) != 0)
    return -1;
  if (spill_spilled(&t->buf))
    return 0;
  total = r->cur != NULL ? spill_mem(&r->cur->buf) : 0;
  for (o = r->streams; o != NULL; o = o->next)
    total += spill_mem(&o->buf);
  if (total > r->c->cfg.memory_cap / 2)
    return spill_flush(&t->buf, err);
  return 0;
}

/* One pgoutput message from an XLogData frame. */
static int handle_message (Receiver *r, const uint8_t *data, size_t len, CdcError *err) {
  Cdc *c = r->c;
  PgoMsg *m = &r->msg;
  char msg[512];
  Txn *t;
  int in_block = r->dec.in_stream;
  if (pgo_decode(&r->dec, data, len, m, msg, sizeof(msg)) != 0) {
    cdc_err_set(err, CDC_ERR_PROTOCOL, 0, "%s", msg);
    return -1;
  }
  r->bytes += len;
  atomic_fetch_add_explicit(&c->recv_msgs, 1, memory_order_relaxed);
  switch (m->kind) {
    case PGO_BEGIN:
      if (r->cur != NULL)
        return proto_err(err, "pgoutput: %s while a transaction is open", "Begin");
      r->cur = cdc_txn_new(c, m->xid);
      set_open(r);
      return 0;
    case PGO_COMMIT:
      if (r->cur == NULL)
        return proto_err(err, "pgoutput: %s without Begin", "Commit");
      t = r->cur;
      r->cur = NULL;
      t->end_lsn = m->end_lsn;
      t->commit_ts = m->ts;
      return enqueue(r, t, err);
    case PGO_STREAM_START:
      t = stream_find(r, m->xid, 0);
      if (t == NULL) {
        t = cdc_txn_new(c, m->xid);
        t->next = r->streams;
        r->streams = t;
        set_open(r);
      }
      r->block = t;
      return 0;
    case PGO_STREAM_STOP:
      r->block = NULL;
      return 0;
    case PGO_STREAM_COMMIT:
      t = stream_find(r, m->xid, 1);
      if (t == NULL)   /* nothing was streamed for it: an empty transaction */
        t = cdc_txn_new(c, m->xid);
      t->end_lsn = m->end_lsn;
      t->commit_ts = m->ts;
      return enqueue(r, t, err);
    case PGO_STREAM_ABORT:
      if (m->subxid == m->xid) {
        cdc_txn_free(stream_find(r, m->xid, 1));
        set_open(r);
        return 0;
      }
      t = stream_find(r, m->xid, 0);
      if (t != NULL) {
        int i;
        for (i = 0; i < t->nsubs; i++)
          if (t->subs[i].xid == m->subxid) {
            /* later subtransactions started after it and go with it */
            if (spill_truncate(&t->buf, t->subs[i].off, t->subs[i].nrecords, err) != 0)
              return -1;
            t->nsubs = i;
            break;
          }
      }
      return 0;
    case PGO_MESSAGE:
      if (!(m->flags & 1))
        return 0;   /* non-transactional: nothing to apply */
      break;
    default:
      break;
  }
  /* a change (or Relation, Type, Origin, transactional Message) */
  if (in_block) {
    t = r->block;
    if (t == NULL)
      return proto_err(err, "pgoutput: %s in a stream block without a transaction", pgo_kind_name(m->kind));
    if (m->xid != 0 && m->xid != t->xid) {
      int i, seen = 0;
      for (i = 0; i < t->nsubs && !seen; i++)
        seen = t->subs[i].xid == m->xid;
      if (!seen) {
        if (t->nsubs == t->subcap) {
          t->subcap = t->subcap ? t->subcap * 2 : 8;
          t->subs = xrealloc(t->subs, (size_t)t->subcap * sizeof(SubXact));
        }
        t->subs[t->nsubs].xid = m->xid;
        t->subs[t->nsubs].off = spill_size(&t->buf);
        t->subs[t->nsubs].nrecords = t->buf.nrecords;
        t->nsubs++;
      }
    }
  } else {
    t = r->cur;
    if (t == NULL)
      return proto_err(err, "pgoutput: %s outside a transaction", pgo_kind_name(m->kind));
  }
  return store(r, t, in_block, data, len, err);
}

/* A keepalive: answer when asked; when nothing is pending anywhere the
   whole stream up to wal_end is applied (caught up). */
static int handle_keepalive (Receiver *r, const StreamFrame *f, CdcError *err) {
  Cdc *c = r->c;
  pthread_mutex_lock(&c->mu);
  if (f->wal_end > c->st.received_lsn)
    c->st.received_lsn = f->wal_end;
  if (r->cur == NULL && r->streams == NULL && c->qhead == NULL && !c->applier_busy) {
    if (f->wal_end > c->st.applied_lsn)
      c->st.applied_lsn = f->wal_end;
    c->caught_up_time = cdc_now();
    cdc_update_lag(c);
    pthread_cond_broadcast(&c->cond);
  }
  pthread_mutex_unlock(&c->mu);
  if (f->reply_requested)
    return send_status(r, 0, err);
  return 0;
}

/*
** The receiver thread of a session: reads the replication stream,
** decodes pgoutput, builds transactions (spilled past the budget) and
** queues complete ones for the applier; answers keepalives and sends
** status.  Runs until session_stop or an error, which it leaves in
** c->recv_err for the applier side.  Open transactions are dropped:
** the server re-sends them in the next session.
*/
void *cdc_receiver_main (void *arg) {
  Cdc *c = arg;
  Receiver r;
  CdcError err;
  int rc = 0;
  unsigned nmsg = 0;
  int flowing = 0;
  double last_data = cdc_now();
  memset(&r, 0, sizeof(r));
  r.c = c;
  pgo_decoder_init(&r.dec, c->st.proto_version);
  pgo_msg_init(&r.msg);
  buf_init(&r.rec);
  cdc_err_clear(&err);
  r.last_status = 0;
  for (;;) {
    char *buf = NULL;
    int n, stop;
    if (!flowing || (nmsg & 63) == 0) {
      pthread_mutex_lock(&c->mu);
      stop = c->session_stop;
      pthread_mutex_unlock(&c->mu);
      if (stop)
        break;
    }
    n = stream_read(c->repl, flowing ? 0 : 100, &buf, &err);
    if (n < 0) {
      rc = -1;
      break;
    }
    if (n == 0 && flowing) {
      /* the stream paused: let more arrive before polling, so a busy
         stream is read in batches rather than one wakeup per packet */
      struct timespec nap = {0, 200000};
      flowing = 0;
      nanosleep(&nap, NULL);
      continue;
    }
    flowing = n > 0;
    /* last_data is set after processing a frame (enqueue may block) */
    if (n == 0 && cdc_now() - last_data > c->cfg.receive_timeout_ms / 1000.0) {
      cdc_err_set(&err, CDC_ERR_CONNECTION, 1, "no data from the source for %d s (network or server "
                  "problem); reconnecting", c->cfg.receive_timeout_ms / 1000);
      rc = -1;
      break;
    }
    if (n > 0) {
      StreamFrame f;
      char msg[256];
      if (stream_parse_frame((const uint8_t *)buf, (size_t)n, &f, msg, sizeof(msg)) != 0) {
        cdc_err_set(&err, CDC_ERR_PROTOCOL, 0, "%s", msg);
        rc = -1;
      } else if (f.kind == 'k') {
        rc = handle_keepalive(&r, &f, &err);
      } else {
        if (f.wal_end > r.wal_end)
          r.wal_end = f.wal_end;
        rc = handle_message(&r, f.data, f.len, &err);
      }
      PQfreemem(buf);
      if (rc != 0)
        break;
      last_data = cdc_now();
    }
    /* periodic duties when idle, and every 64 messages under load */
    if ((n == 0 || (++nmsg & 63) == 0) && recv_tick(&r, &err) != 0) {
      rc = -1;
      break;
    }
  }
  /* tell the server what is applied before leaving (normal stop) */
  if (rc == 0) {
    CdcError ignore;
    send_status(&r, 0, &ignore);
  }
  /* open transactions are re-sent by the server in the next session */
  cdc_txn_free(r.cur);
  while (r.streams != NULL) {
    Txn *t = r.streams;
    r.streams = t->next;
    cdc_txn_free(t);
  }
  pgo_msg_free(&r.msg);
  buf_free(&r.rec);
  pthread_mutex_lock(&c->mu);
  c->recv_open = 0;
  if (rc != 0) {
    c->recv_failed = 1;
    c->recv_err = err;
  }
  cdc_wake(c);
  pthread_mutex_unlock(&c->mu);
  return NULL;
}
