/*
** cdc.c
** The CDC worker: sessions, the receiver thread, the transaction queue,
** the apply loop, status and lag (see cdc.h for the design).
*/
#include "cdc/cdc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "pg/pgconn.h"
#include "util/buf.h"
#include "util/log.h"

#define DEFAULT_MEMORY_CAP (64u << 20)
#define MONITOR_INTERVAL 1.0      /* seconds between source LSN samples */
#define STATUS_FILE_INTERVAL 1.0  /* seconds between cdc-status.json writes */
#define GROUP_WAIT 0.05           /* seconds a group may wait for a transaction in flight */

/* A source transaction being received or waiting to be applied. */
typedef struct SubXact {
  uint32_t xid;
  uint64_t off, nrecords;        /* where its first change starts */
} SubXact;

typedef struct Txn {
  struct Txn *next;
  uint32_t xid;
  PgLsn end_lsn;
  int64_t commit_ts;
  SpillBuf buf;
  SubXact *subs;                 /* streamed transactions only */
  int nsubs, subcap;
  int counted_spill;
} Txn;

struct Cdc {
  /* configuration (strings owned) */
  char *source, *target, *slot, *publication, *origin, *state_dir, *identity;
  ApplySync *sync;               /* owned copy of cfg.sync */
  int status_file;               /* write state_dir/cdc-status.json (a state_dir was given) */
  CdcConfig cfg;
  char *session_sql;             /* the source's output settings for the applier */

  pthread_mutex_t mu;
  pthread_cond_t cond;           /* status changes: applied position, state, stop */
  pthread_cond_t qcond;          /* the queue: a transaction for a waiting applier,
                                    room for a waiting receiver */
  int applier_waiting, recv_waiting;   /* who sleeps on qcond */
  pthread_t thread;
  int thread_started;
  pthread_t monitor_thread;      /* monitor_main */
  int monitor_started;
  int stop;                      /* stop requested */
  int abort_wait;                /* give up waiting on the target (read by the Applier) */
  int finished;                  /* supervisor exited */
  CdcStatus st;
  double caught_up_time;

  /* queue, receiver -> applier */
  Txn *qhead, *qtail;
  int applier_busy;
  int recv_open;                 /* receiver holds an open transaction */
  _Atomic uint64_t recv_msgs;    /* messages received (a progress signal, no lock) */

  /* the current session */
  int session_stop;
  int recv_failed;
  CdcError recv_err;
  pthread_t recv_thread;
  int recv_started;
  PGconn *repl;                  /* owned by the receiver while it runs */
  PGconn *monitor;
  Applier *applier;
  PgLsn session_start;
  int group_open;                /* the applier has an uncommitted group (under mu) */
  ApplyStats published;          /* this session's applier statistics already added to st */
  char **row_only;               /* tables applied row by row (their set-based apply failed) */
  int nrow_only;

  double last_status_file;
};

/* Wall-clock time in seconds (the condition waits use CLOCK_REALTIME). */
static double now_s (void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* The absolute time 'secs' from now, for pthread_cond_timedwait. */
static void abs_deadline (struct timespec *ts, double secs) {
  double t = now_s() + secs;
  ts->tv_sec = (time_t)t;
  ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* Wake every waiter, on both condition variables (stop, pause, a
   failed receiver, the end of a session).  Caller holds mu. */
static void wake (Cdc *c) {
  pthread_cond_broadcast(&c->cond);
  pthread_cond_broadcast(&c->qcond);
}

/* See cdc.h: the state's name as shown in statuses. */
const char *cdc_state_name (CdcState s) {
  switch (s) {
    case CDC_STARTING: return "starting";
    case CDC_STREAMING: return "streaming";
    case CDC_PAUSED: return "paused";
    case CDC_RECONNECTING: return "reconnecting";
    case CDC_STOPPED: return "stopped";
    case CDC_FAILED: return "failed";
  }
  return "unknown";
}

/*
** {======================================================
** Transactions and the queue
** =======================================================
*/

static Txn *txn_new (Cdc *c, uint32_t xid) {
  Txn *t = xcalloc(1, sizeof(Txn));
  t->xid = xid;
  /* one transaction may hold a quarter of the budget in RAM */
  spill_init(&t->buf, c->state_dir, c->cfg.memory_cap / 4);
  return t;
}

/* Free a transaction and its spill buffer (files included); NULL is a no-op. */
static void txn_free (Txn *t) {
  if (t == NULL)
    return;
  spill_free(&t->buf);
  free(t->subs);
  free(t);
}

static size_t queued_mem (Cdc *c) {
  return (size_t)c->st.queued_bytes;
}

/* Caller holds mu. */
static void queue_clear (Cdc *c) {
  while (c->qhead != NULL) {
    Txn *t = c->qhead;
    c->qhead = t->next;
    txn_free(t);
  }
  c->qtail = NULL;
  c->st.queued_txns = 0;
  c->st.queued_bytes = 0;
}

/* }====================================================== */

/*
** {======================================================
** Status and lag
** =======================================================
*/

/* Caller holds mu: recompute lag from the sampled source position. */
static void update_lag (Cdc *c) {
  CdcStatus *s = &c->st;
  double now = now_s(), ref;
  int idle = c->qhead == NULL && !c->applier_busy && !c->recv_open;
  s->lag_bytes = s->source_lsn > s->applied_lsn ? s->source_lsn - s->applied_lsn : 0;
  ref = s->last_commit_time > c->caught_up_time ? s->last_commit_time : c->caught_up_time;
  if ((idle && s->lag_bytes == 0) || ref == 0)
    s->lag_seconds = 0;
  else
    s->lag_seconds = now > ref ? now - ref : 0;
}

/* Append s as a JSON string literal (quotes, backslashes and control
   characters escaped). */
static void json_str (Buf *b, const char *s) {
  buf_putc(b, '"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      buf_printf(b, "\\%c", ch);
    else if (ch < 0x20)
      buf_printf(b, "\\u%04x", ch);
    else
      buf_putc(b, (char)ch);
  }
  buf_putc(b, '"');
}

/* Write state_dir/cdc-status.json atomically, at most once a second,
   so `pgtide status` in another process can show lag. */
static void status_file (Cdc *c, int force) {
  CdcStatus s;
  Buf b = BUF_INIT, path = BUF_INIT, tmp = BUF_INIT;
  char l1[PGO_LSN_BUFSZ], l2[PGO_LSN_BUFSZ], l3[PGO_LSN_BUFSZ], l4[PGO_LSN_BUFSZ];
  double now = now_s();
  int fd;
  if (!c->status_file)
    return;
  pthread_mutex_lock(&c->mu);
  if (!force && now - c->last_status_file < STATUS_FILE_INTERVAL) {
    pthread_mutex_unlock(&c->mu);
    return;
  }
  c->last_status_file = now;
  update_lag(c);
  s = c->st;
  pthread_mutex_unlock(&c->mu);
  buf_puts(&b, "{\"state\": ");
  json_str(&b, cdc_state_name(s.state));
  buf_puts(&b, ", \"slot\": ");
  json_str(&b, c->slot);
  buf_printf(&b, ", \"pid\": %d, \"updated_at\": %.3f", (int)getpid(), now);
  buf_printf(&b, ", \"applied_lsn\": \"%s\", \"received_lsn\": \"%s\", \"source_lsn\": \"%s\", "
             "\"pause_lsn\": \"%s\"", pgo_lsn_format(s.applied_lsn, l1), pgo_lsn_format(s.received_lsn, l2),
             pgo_lsn_format(s.source_lsn, l3), pgo_lsn_format(s.pause_lsn, l4));
  buf_printf(&b, ", \"lag_bytes\": %llu, \"lag_seconds\": %.3f, \"last_commit_time\": %.3f, "
             "\"retained_bytes\": %lld", (unsigned long long)s.lag_bytes, s.lag_seconds,
             s.last_commit_time, (long long)s.retained_bytes);
  buf_printf(&b, ", \"txns\": %llu, \"inserts\": %llu, \"updates\": %llu, \"deletes\": %llu, "
             "\"truncates\": %llu, \"reconnects\": %d, \"queued_txns\": %llu",
             (unsigned long long)s.stats.txns, (unsigned long long)s.stats.inserts,
             (unsigned long long)s.stats.updates, (unsigned long long)s.stats.deletes,
             (unsigned long long)s.stats.truncates, s.reconnects, (unsigned long long)s.queued_txns);
  buf_puts(&b, ", \"error\": ");
  json_str(&b, s.error.message);
  buf_puts(&b, "}\n");
  buf_printf(&path, "%s/cdc-status.json", c->state_dir);
  buf_printf(&tmp, "%s/.cdc-status.json.%d", c->state_dir, (int)getpid());
  fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    ssize_t w = write(fd, b.data, b.len);
    close(fd);
    if (w == (ssize_t)b.len)
      rename(tmp.data, path.data);
    else
      unlink(tmp.data);
  }
  buf_free(&b);
  buf_free(&path);
  buf_free(&tmp);
}

/* Non-zero once cdc_stop was called. */
static int stopping (Cdc *c) {
  int s;
  pthread_mutex_lock(&c->mu);
  s = c->stop;
  pthread_mutex_unlock(&c->mu);
  return s;
}

/*
** Sample the source's WAL position and the slot's retained WAL through
** a normal connection (reopened lazily; failures are not fatal).  The
** query is waited for in 100 ms slices so a stop is not held up by a
** source that stopped answering (the connection is then dropped).
*/
static void monitor_sample (Cdc *c) {
  static const char *const sql =
    "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, "
    "(SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END, restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1)";
  char msg[PGCONN_ERRLEN];
  const char *vals[1];
  PGresult *res = NULL, *r;
  PgLsn lsn = 0;
  int ok = 1;
  if (c->monitor == NULL) {
    c->monitor = pgconn_open(c->source, "source", PGCONN_NORMAL, msg, sizeof(msg));
    if (c->monitor == NULL) {
      log_debug("cdc: monitor connection: %s", msg);
      return;
    }
  }
  vals[0] = c->slot;
  ok = PQsendQueryParams(c->monitor, sql, 1, NULL, vals, NULL, NULL, 0);
  while (ok && PQisBusy(c->monitor)) {
    struct pollfd pfd = {PQsocket(c->monitor), POLLIN, 0};
    if (stopping(c) || (poll(&pfd, 1, 100) < 0 && errno != EINTR) || !PQconsumeInput(c->monitor))
      ok = 0;
  }
  while (ok && (r = PQgetResult(c->monitor)) != NULL) {
    if (res == NULL)
      res = r;
    else
      PQclear(r);
  }
  if (!ok || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
    PQclear(res);
    if (!ok || PQstatus(c->monitor) != CONNECTION_OK) {
      PQfinish(c->monitor);
      c->monitor = NULL;
    }
    return;
  }
  pthread_mutex_lock(&c->mu);
  if (pgo_lsn_parse(PQgetvalue(res, 0, 0), &lsn) == 0 && lsn > c->st.source_lsn)
    c->st.source_lsn = lsn;
  c->st.retained_bytes = PQgetisnull(res, 0, 1) ? -1 : strtoll(PQgetvalue(res, 0, 1), NULL, 10);
  update_lag(c);
  pthread_mutex_unlock(&c->mu);
  PQclear(res);
}

/*
** The monitor thread: a sample each MONITOR_INTERVAL until cdc_stop, on
** a thread of its own so that a far source (a round trip per sample,
** several to reconnect) never holds up the receiver.  Owns c->monitor.
*/
static void *monitor_main (void *arg) {
  Cdc *c = arg;
  for (;;) {
    struct timespec ts;
    double until;
    monitor_sample(c);
    until = now_s() + MONITOR_INTERVAL;
    pthread_mutex_lock(&c->mu);
    while (!c->stop && now_s() < until) {
      abs_deadline(&ts, until - now_s());
      pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    }
    if (c->stop) {
      pthread_mutex_unlock(&c->mu);
      break;
    }
    pthread_mutex_unlock(&c->mu);
  }
  if (c->monitor != NULL) {
    PQfinish(c->monitor);
    c->monitor = NULL;
  }
  return NULL;
}

/* }====================================================== */

/*
** {======================================================
** Receiver
** =======================================================
*/

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
  r->last_status = now_s();
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
  double now = now_s();
  pthread_mutex_lock(&c->mu);
  recv_publish(r);
  pthread_mutex_unlock(&c->mu);
  if (now - r->last_status >= c->cfg.status_interval_ms / 1000.0 && send_status(r, 1, err) != 0)
    return -1;
  status_file(c, 0);
  return 0;
}

/* Hand a complete transaction to the applier, waiting (while keeping
   the server informed) when the queue holds more than half the budget. */
static int enqueue (Receiver *r, Txn *t, CdcError *err) {
  Cdc *c = r->c;
  size_t mem = spill_mem(&t->buf);
  double t0 = 0;
  pthread_mutex_lock(&c->mu);
  while (c->qhead != NULL && queued_mem(c) + mem > c->cfg.memory_cap / 2 && !c->session_stop) {
    if (t0 == 0)
      t0 = now_s();
    struct timespec ts;
    abs_deadline(&ts, 0.1);
    c->recv_waiting = 1;
    pthread_cond_timedwait(&c->qcond, &c->mu, &ts);
    c->recv_waiting = 0;
    pthread_mutex_unlock(&c->mu);
    if (recv_tick(r, err) != 0)
      return -1;
    pthread_mutex_lock(&c->mu);
  }
  if (t0 != 0)
    c->st.recv_wait_s += now_s() - t0;
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
      r->cur = txn_new(c, m->xid);
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
        t = txn_new(c, m->xid);
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
        t = txn_new(c, m->xid);
      t->end_lsn = m->end_lsn;
      t->commit_ts = m->ts;
      return enqueue(r, t, err);
    case PGO_STREAM_ABORT:
      if (m->subxid == m->xid) {
        txn_free(stream_find(r, m->xid, 1));
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
    c->caught_up_time = now_s();
    update_lag(c);
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
static void *receiver_main (void *arg) {
  Cdc *c = arg;
  Receiver r;
  CdcError err;
  int rc = 0;
  unsigned nmsg = 0;
  int flowing = 0;
  double last_data = now_s();
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
    if (n == 0 && now_s() - last_data > c->cfg.receive_timeout_ms / 1000.0) {
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
      last_data = now_s();
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
  txn_free(r.cur);
  while (r.streams != NULL) {
    Txn *t = r.streams;
    r.streams = t->next;
    txn_free(t);
  }
  pgo_msg_free(&r.msg);
  buf_free(&r.rec);
  pthread_mutex_lock(&c->mu);
  c->recv_open = 0;
  if (rc != 0) {
    c->recv_failed = 1;
    c->recv_err = err;
  }
  wake(c);
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* }====================================================== */

/*
** {======================================================
** Sessions
** =======================================================
*/

static void group_committed(void *ctx, PgLsn end_lsn, int64_t commit_ts, const ApplyStats *stats);

/* The source's output settings, as SET statements for the applier (text
   comparisons of REPLICA IDENTITY FULL rows see the same formats). */
static char *source_settings (PGconn *conn) {
  static const char *const names[] = {"DateStyle", "TimeZone", "IntervalStyle", "extra_float_digits",
                                      "bytea_output", NULL};
  Buf b = BUF_INIT;
  PGresult *res;
  int i;
  /* one round trip: the source may be far away */
  res = PQexec(conn, "SELECT current_setting('DateStyle'), current_setting('TimeZone'), "
               "current_setting('IntervalStyle'), current_setting('extra_float_digits'), "
               "current_setting('bytea_output')");
  if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
    for (i = 0; names[i] != NULL; i++) {
      const char *v = PQgetvalue(res, 0, i);
      buf_printf(&b, "SET %s = '", names[i]);
      for (; *v; v++) {
        if (*v == '\'')
          buf_putc(&b, '\'');
        buf_putc(&b, *v);
      }
      buf_puts(&b, "';");
    }
  }
  PQclear(res);
  return buf_steal(&b);
}

/* The slot must exist and use pgoutput; checked before anything is
   created on the target, with an actionable message. */
static int check_slot (PGconn *conn, const char *slot, CdcError *err) {
  const char *vals[1];
  PGresult *res;
  int rc = 0;
  vals[0] = slot;
  res = PQexecParams(conn, "SELECT plugin, slot_type FROM pg_replication_slots WHERE slot_name = $1",
                     1, NULL, vals, NULL, NULL, 0);
  if (PQresultStatus(res) != PGRES_TUPLES_OK) {
    cdc_err_from_pg(err, "look up the replication slot", res, conn);
    rc = -1;
  } else if (PQntuples(res) == 0) {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "replication slot \"%s\" does not exist on the source "
                "(create it first: cdc.create_slot)", slot);
    rc = -1;
  } else if (strcmp(PQgetvalue(res, 0, 1), "logical") != 0 || strcmp(PQgetvalue(res, 0, 0), "pgoutput") != 0) {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "replication slot \"%s\" is not a logical pgoutput slot "
                "(plugin %s)", slot, PQgetvalue(res, 0, 0));
    rc = -1;
  }
  PQclear(res);
  return rc;
}

/* Caller holds nothing.  Close the session's connections and threads. */
static void session_close (Cdc *c) {
  pthread_mutex_lock(&c->mu);
  c->session_stop = 1;
  wake(c);
  pthread_mutex_unlock(&c->mu);
  if (c->recv_started) {
    pthread_join(c->recv_thread, NULL);
    c->recv_started = 0;
  }
  if (c->repl != NULL) {
    PQfinish(c->repl);
    c->repl = NULL;
  }
  apply_close(c->applier);
  c->applier = NULL;
  pthread_mutex_lock(&c->mu);
  queue_clear(c);
  c->applier_busy = 0;
  c->recv_open = 0;
  pthread_mutex_unlock(&c->mu);
}

/*
** Open a session: the applier (reading the committed progress), then
** the replication connection started right after that position, then
** the receiver thread.  -1 with err; everything opened is closed.
*/
static int session_open (Cdc *c, CdcError *err) {
  ApplyOptions ao;
  PgLsn start = 0;
  char msg[PGCONN_ERRLEN];
  int proto, streaming;

  if (c->session_sql == NULL) {
    PGconn *conn = pgconn_open(c->source, "source", PGCONN_NORMAL, msg, sizeof(msg));
    if (conn == NULL) {
      cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
      return -1;
    }
    if (check_slot(conn, c->slot, err) != 0) {
      PQfinish(conn);
      return -1;
    }
    c->session_sql = source_settings(conn);
    PQfinish(conn);
  }
  memset(&ao, 0, sizeof(ao));
  ao.origin = c->origin;
  ao.progress = c->cfg.progress;
  ao.identity = c->cfg.identity;
  ao.set_threshold = c->cfg.set_threshold;
  ao.segment_changes = c->cfg.batch;
  ao.segment_bytes = c->cfg.memory_cap / 4;
  ao.replica_role = c->cfg.replica_role;
  ao.session_sql = c->session_sql;
  ao.abort_flag = &c->abort_wait;
  ao.sync = c->cfg.sync;
  ao.nsync = c->cfg.nsync;
  ao.row_only = (const char *const *)c->row_only;
  ao.nrow_only = c->nrow_only;
  ao.on_commit = group_committed;
  ao.on_commit_ctx = c;
  memset(&c->published, 0, sizeof(c->published));
  c->group_open = 0;
  c->applier = apply_open(c->target, &ao, err);
  if (c->applier == NULL)
    return -1;
  if (apply_progress(c->applier, &start, err) != 0)
    goto fail;
  c->repl = pgconn_open(c->source, "source", PGCONN_REPLICATION, msg, sizeof(msg));
  if (c->repl == NULL) {
    cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
    goto fail;
  }
  proto = c->cfg.proto_version > 0 ? c->cfg.proto_version
                                   : stream_proto_for_server(pgconn_server_version(c->repl));
  streaming = c->cfg.streaming < 0 ? proto >= 2 : c->cfg.streaming;
  /* a killed predecessor's walsender may still hold the slot briefly */
  for (int tries = 0;; tries++) {
    if (stream_start(c->repl, c->slot, start, proto, c->publication, streaming, err) == 0)
      break;
    if (strcmp(err->sqlstate, "55006") != 0 || tries >= 50 || stopping(c))
      goto fail;
    usleep(200000);
  }
  pthread_mutex_lock(&c->mu);
  c->session_stop = 0;
  c->recv_failed = 0;
  c->session_start = start;
  c->st.start_lsn = start;
  if (start > c->st.applied_lsn)
    c->st.applied_lsn = start;
  if (start > c->st.commit_lsn)
    c->st.commit_lsn = start;
  c->st.proto_version = proto;
  c->st.streaming = streaming;
  strlcpy_(c->st.progress, apply_progress_name(c->applier), sizeof(c->st.progress));
  c->st.apply_pid = apply_backend_pid(c->applier);
  c->st.stream_pid = PQbackendPID(c->repl);
  c->st.state = c->st.pause_lsn != 0 && c->st.applied_lsn >= c->st.pause_lsn ? CDC_PAUSED : CDC_STREAMING;
  pthread_mutex_unlock(&c->mu);
  {
    char l[PGO_LSN_BUFSZ];
    log_info("cdc: streaming slot %s from %s (protocol %d%s, progress in %s)", c->slot,
             start ? pgo_lsn_format(start, l) : "the slot's confirmed position", proto,
             streaming ? ", streaming on" : "", apply_progress_name(c->applier));
  }
  if (pthread_create(&c->recv_thread, NULL, receiver_main, c) != 0) {
    cdc_err_set(err, CDC_ERR_IO, 0, "cannot start the receiver thread");
    goto fail;
  }
  c->recv_started = 1;
  return 0;
fail:
  session_close(c);
  return -1;
}

/* }====================================================== */

/*
** {======================================================
** Apply loop (supervisor thread)
** =======================================================
*/

/* Add the statistics an applier reached since the last report (s is
   cumulative for the session) to the worker's.  Caller holds mu. */
static void add_stats (Cdc *c, const ApplyStats *s) {
  ApplyStats *t = &c->st.stats;
  const ApplyStats *p = &c->published;
  t->inserts += s->inserts - p->inserts;
  t->updates += s->updates - p->updates;
  t->deletes += s->deletes - p->deletes;
  t->truncates += s->truncates - p->truncates;
  t->txns += s->txns - p->txns;
  t->commits += s->commits - p->commits;
  t->row_changes += s->row_changes - p->row_changes;
  t->set_segments += s->set_segments - p->set_segments;
  t->set_changes += s->set_changes - p->set_changes;
  t->set_rows += s->set_rows - p->set_rows;
  t->missing += s->missing - p->missing;
  t->skipped += s->skipped - p->skipped;
  t->bytes += s->bytes - p->bytes;
  c->published = *s;
}

/*
** The applier's on_commit: the target reported a group committed.  Only
** now does its position become applied_lsn, the position the receiver
** confirms to the source.  Runs on the apply thread, which holds no
** lock while in the Applier.
*/
static void group_committed (void *ctx, PgLsn end_lsn, int64_t commit_ts, const ApplyStats *stats) {
  Cdc *c = ctx;
  pthread_mutex_lock(&c->mu);
  add_stats(c, stats);
  if (end_lsn > c->st.applied_lsn)
    c->st.applied_lsn = end_lsn;
  if (end_lsn > c->st.commit_lsn)
    c->st.commit_lsn = end_lsn;
  c->st.last_commit_time = pgo_time_to_unix(commit_ts);
  c->applier_busy = c->group_open || apply_inflight(c->applier) > 0;
  update_lag(c);
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->mu);
}

/*
** Take the next transaction for the group, or NULL: queue empty, group
** full, stop or receiver failure, or the pause point reached (then, once
** nothing is in flight, the pause is marked as reached: everything up to
** it is committed).  Caller holds mu.
*/
static Txn *take (Cdc *c, int ngroup, size_t gbytes) {
  Txn *t = c->qhead;
  if (t == NULL || c->stop || c->recv_failed)
    return NULL;
  if (ngroup >= c->cfg.group_txns || gbytes >= c->cfg.memory_cap / 4)
    return NULL;
  if (c->st.pause_lsn != 0 && t->end_lsn > c->st.pause_lsn) {
    if (ngroup == 0 && apply_inflight(c->applier) == 0 && c->st.applied_lsn < c->st.pause_lsn) {
      c->st.applied_lsn = c->st.pause_lsn;
      pthread_cond_broadcast(&c->cond);
    }
    return NULL;
  }
  c->qhead = t->next;
  if (c->qhead == NULL)
    c->qtail = NULL;
  c->st.queued_txns--;
  c->st.queued_bytes -= spill_mem(&t->buf);
  if (c->recv_waiting)
    pthread_cond_broadcast(&c->qcond);
  return t;
}

/*
** One session's apply loop: group, apply, send the commit, keep up to
** cfg.inflight groups in flight; commit results are read whenever the
** loop waits (group_committed publishes them).  Returns 0 when stopping
** (after the groups in flight are committed), -1 with err on failure.
*/
static int apply_loop (Cdc *c, CdcError *err) {
  Applier *a = c->applier;
  for (;;) {
    Txn *t;
    int ngroup = 0;
    size_t gbytes = 0;
    PgLsn last_end = 0;
    int64_t last_ts = 0;
    double group_start;

    double idle0 = now_s();
    pthread_mutex_lock(&c->mu);
    for (;;) {
      int paused;
      if (c->stop) {
        pthread_mutex_unlock(&c->mu);
        return apply_wait(a, 0, err);
      }
      if (c->recv_failed) {
        *err = c->recv_err;
        pthread_mutex_unlock(&c->mu);
        return -1;
      }
      paused = c->st.pause_lsn != 0 && c->st.applied_lsn >= c->st.pause_lsn;
      if (paused && c->st.state == CDC_STREAMING)
        c->st.state = CDC_PAUSED;
      else if (!paused && c->st.state == CDC_PAUSED)
        c->st.state = CDC_STREAMING;
      t = take(c, 0, 0);
      if (t != NULL) {
        c->st.apply_idle_s += now_s() - idle0;
        break;
      }
      if (apply_inflight(a) > 0) {
        /* read commit results as they come, look at the queue often */
        pthread_mutex_unlock(&c->mu);
        if (apply_poll(a, 2, err) != 0)
          return -1;
        pthread_mutex_lock(&c->mu);
        continue;
      }
      {
        struct timespec ts;
        abs_deadline(&ts, 0.2);
        c->applier_waiting = 1;
        pthread_cond_timedwait(&c->qcond, &c->mu, &ts);
        c->applier_waiting = 0;
      }
      pthread_mutex_unlock(&c->mu);
      status_file(c, 0);
      pthread_mutex_lock(&c->mu);
    }
    c->applier_busy = 1;
    c->group_open = 1;
    pthread_mutex_unlock(&c->mu);
    group_start = now_s();

    while (t != NULL) {
      int rc = 0;
      if (t->end_lsn > c->session_start || c->session_start == 0)
        rc = apply_txn(a, &t->buf, t->end_lsn, err);
      gbytes += spill_size(&t->buf);
      last_end = t->end_lsn;
      last_ts = t->commit_ts;
      ngroup++;
      txn_free(t);
      if (rc != 0)
        return -1;
      pthread_mutex_lock(&c->mu);
      t = take(c, ngroup, gbytes);
      /* while changes keep arriving (a backlog, a busy source), wait a
         little for the next transaction so the group grows; stop as
         soon as the stream goes quiet, and after GROUP_WAIT seconds */
      while (t == NULL && c->qhead == NULL && !c->stop && !c->recv_failed &&
             now_s() - group_start < GROUP_WAIT) {
        struct timespec ts;
        uint64_t seen = atomic_load_explicit(&c->recv_msgs, memory_order_relaxed);
        abs_deadline(&ts, 0.001);
        pthread_cond_timedwait(&c->qcond, &c->mu, &ts);
        t = take(c, ngroup, gbytes);
        if (t == NULL && !c->recv_open &&
            atomic_load_explicit(&c->recv_msgs, memory_order_relaxed) == seen)
          break;
      }
      pthread_mutex_unlock(&c->mu);
    }
    if (apply_commit(a, last_end, last_ts, err) != 0)
      return -1;
    pthread_mutex_lock(&c->mu);
    c->group_open = 0;
    c->applier_busy = apply_inflight(a) > 0;
    pthread_mutex_unlock(&c->mu);
    /* at most cfg.inflight groups in flight: wait for the oldest */
    if (apply_wait(a, c->cfg.inflight - 1, err) != 0)
      return -1;
  }
}

/*
** The worker's main thread: runs apply sessions (apply_loop) and, after
** a retryable error, reconnects with a backoff (0.5 s doubling to 10 s,
** reset when the session made progress) until it works, a fatal error
** (state FAILED, error kept in the status) or cdc_stop.  Ends with the
** final status file and c->finished set.
*/
static void *supervisor_main (void *arg) {
  Cdc *c = arg;
  double backoff = 0.5;
  CdcError err;
  for (;;) {
    int rc;
    PgLsn at_start;
    cdc_err_clear(&err);
    pthread_mutex_lock(&c->mu);
    at_start = c->st.applied_lsn;
    pthread_mutex_unlock(&c->mu);
    rc = apply_loop(c, &err);
    if (rc != 0 && !err.retryable && c->applier != NULL && apply_set_failure(c->applier) != NULL) {
      /* a set-based statement failed where source order would not (a
         unique value swapped between rows): that table goes row by row
         from now on, and a new session replays from the committed
         position */
      int i, known = 0;
      const char *t = apply_set_failure(c->applier);
      for (i = 0; i < c->nrow_only && !known; i++)
        known = strcmp(c->row_only[i], t) == 0;
      if (!known) {
        c->row_only = xrealloc(c->row_only, (size_t)(c->nrow_only + 1) * sizeof(char *));
        c->row_only[c->nrow_only++] = xstrdup(t);
        log_info("cdc: set-based apply of %s failed (%s); applying that table row by row from now on", t,
                 err.message);
        pthread_mutex_lock(&c->mu);
        c->st.stats.fallbacks++;
        pthread_mutex_unlock(&c->mu);
        session_close(c);
        cdc_err_clear(&err);
        if (session_open(c, &err) == 0)
          continue;
      } else {
        session_close(c);    /* the row path failed too: a real error */
      }
    } else {
      session_close(c);
    }
    if (rc == 0)
      break;
    pthread_mutex_lock(&c->mu);
    c->st.error = err;
    if (!err.retryable || c->stop) {
      c->st.state = err.retryable ? CDC_STOPPED : CDC_FAILED;
      pthread_cond_broadcast(&c->cond);
      pthread_mutex_unlock(&c->mu);
      if (!err.retryable)
        log_error("cdc: %s", err.message);
      goto out;
    }
    if (c->st.applied_lsn > at_start)
      backoff = 0.5;       /* the session made progress */
    c->st.state = CDC_RECONNECTING;
    c->st.reconnects++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
    log_warn("cdc: %s; reconnecting in %.1f s", err.message, backoff);
    /* reconnect until it works, a fatal error, or stop */
    for (;;) {
      struct timespec ts;
      int stop;
      pthread_mutex_lock(&c->mu);
      abs_deadline(&ts, backoff);
      while (!c->stop && pthread_cond_timedwait(&c->cond, &c->mu, &ts) == 0)
        ;
      stop = c->stop;
      pthread_mutex_unlock(&c->mu);
      status_file(c, 0);
      if (stop)
        goto out;
      backoff = backoff * 2 > 10 ? 10 : backoff * 2;
      cdc_err_clear(&err);
      if (session_open(c, &err) == 0)
        break;
      pthread_mutex_lock(&c->mu);
      c->st.error = err;
      if (!err.retryable) {
        c->st.state = CDC_FAILED;
        pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&c->mu);
        log_error("cdc: %s", err.message);
        goto out;
      }
      pthread_mutex_unlock(&c->mu);
      log_warn("cdc: %s; retrying in %.1f s", err.message, backoff);
    }
  }
out:
  pthread_mutex_lock(&c->mu);
  if (c->st.state != CDC_FAILED)
    c->st.state = CDC_STOPPED;
  c->finished = 1;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->mu);
  status_file(c, 1);
  return NULL;
}

/* }====================================================== */

/*
** {======================================================
** Public API
** =======================================================
*/

/* A copy of s, or of dflt when s is NULL or empty. */
static char *dup_or (const char *s, const char *dflt) {
  return xstrdup(s != NULL && s[0] != '\0' ? s : dflt);
}

/*
** See cdc.h.  Checks the configuration, opens the first session in the
** calling thread (so a missing slot or an unreachable server is an error
** here, not later), then starts the supervisor.  The Cdc copies every
** string of cfg.  NULL with err on failure.
*/
Cdc *cdc_start (const CdcConfig *cfg, CdcError *err) {
  Cdc *c;
  struct stat sb;
  if (cfg->source == NULL || cfg->target == NULL || cfg->source[0] == '\0' || cfg->target[0] == '\0') {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "cdc: source and target are required");
    return NULL;
  }
  if (stream_check_name("slot", cfg->slot, err) != 0)
    return NULL;
  if (cfg->publication == NULL || cfg->publication[0] == '\0') {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "cdc: publication is required");
    return NULL;
  }
  if (cfg->state_dir != NULL && cfg->state_dir[0] != '\0' &&
      (stat(cfg->state_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))) {
    cdc_err_set(err, CDC_ERR_CONFIG, 0, "cdc: state directory %s does not exist", cfg->state_dir);
    return NULL;
  }
  c = xcalloc(1, sizeof(Cdc));
  c->cfg = *cfg;
  c->source = xstrdup(cfg->source);
  c->target = xstrdup(cfg->target);
  c->slot = xstrdup(cfg->slot);
  c->publication = xstrdup(cfg->publication);
  c->origin = dup_or(cfg->origin, cfg->slot);
  c->state_dir = dup_or(cfg->state_dir, "/tmp");
  c->identity = cfg->identity != NULL ? xstrdup(cfg->identity) : NULL;
  c->status_file = cfg->state_dir != NULL && cfg->state_dir[0] != '\0';
  c->cfg.source = c->source;
  c->cfg.target = c->target;
  c->cfg.slot = c->slot;
  c->cfg.publication = c->publication;
  c->cfg.origin = c->origin;
  c->cfg.state_dir = c->state_dir;
  c->cfg.identity = c->identity;
  if (cfg->nsync > 0) {
    int i;
    c->sync = xcalloc((size_t)cfg->nsync, sizeof(ApplySync));
    for (i = 0; i < cfg->nsync; i++) {
      c->sync[i].schema = xstrdup(cfg->sync[i].schema);
      c->sync[i].table = xstrdup(cfg->sync[i].table);
      c->sync[i].lsn = cfg->sync[i].lsn;
    }
  }
  c->cfg.sync = c->sync;
  c->cfg.nsync = cfg->nsync > 0 ? cfg->nsync : 0;
  if (c->cfg.memory_cap < (1u << 20))
    c->cfg.memory_cap = c->cfg.memory_cap == 0 ? DEFAULT_MEMORY_CAP : (1u << 20);
  if (c->cfg.group_txns <= 0)
    c->cfg.group_txns = 1000;
  if (c->cfg.inflight <= 0)
    c->cfg.inflight = 8;
  if (c->cfg.batch <= 0)
    c->cfg.batch = 20000;
  if (c->cfg.set_threshold < 0)
    c->cfg.set_threshold = 0;
  if (c->cfg.status_interval_ms <= 0)
    c->cfg.status_interval_ms = 1000;
  if (c->cfg.receive_timeout_ms <= 0)
    c->cfg.receive_timeout_ms = 60000;
  if (c->cfg.receive_timeout_ms < 3 * c->cfg.status_interval_ms)
    c->cfg.receive_timeout_ms = 3 * c->cfg.status_interval_ms;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cond, NULL);
  pthread_cond_init(&c->qcond, NULL);
  c->st.state = CDC_STARTING;
  c->st.retained_bytes = -1;
  if (session_open(c, err) != 0) {
    cdc_free(c);
    return NULL;
  }
  if (pthread_create(&c->thread, NULL, supervisor_main, c) != 0) {
    cdc_err_set(err, CDC_ERR_IO, 0, "cannot start the apply thread");
    session_close(c);
    cdc_free(c);
    return NULL;
  }
  c->thread_started = 1;
  if (pthread_create(&c->monitor_thread, NULL, monitor_main, c) == 0)
    c->monitor_started = 1;
  else
    log_warn("cdc: cannot start the monitor thread: lag and retained WAL are not sampled");
  return c;
}

/* See cdc.h: a copy of the status with the lag brought up to date. */
void cdc_get_status (Cdc *c, CdcStatus *out) {
  pthread_mutex_lock(&c->mu);
  update_lag(c);
  *out = c->st;
  pthread_mutex_unlock(&c->mu);
}

/* See cdc.h: 1 once applied_lsn >= lsn, 0 on timeout, -1 when the
   worker failed or stopped first. */
int cdc_wait_applied (Cdc *c, PgLsn lsn, double timeout_s) {
  struct timespec ts;
  int rc;
  abs_deadline(&ts, timeout_s > 0 ? timeout_s : 0);
  pthread_mutex_lock(&c->mu);
  for (;;) {
    if (c->st.applied_lsn >= lsn) {
      rc = 1;
      break;
    }
    if (c->finished || c->st.state == CDC_FAILED || c->st.state == CDC_STOPPED) {
      rc = -1;
      break;
    }
    if (pthread_cond_timedwait(&c->cond, &c->mu, &ts) == ETIMEDOUT) {
      rc = c->st.applied_lsn >= lsn ? 1 : 0;
      break;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

/* See cdc.h: the applier pauses after the last transaction ending at
   or before lsn. */
void cdc_pause_at (Cdc *c, PgLsn lsn) {
  pthread_mutex_lock(&c->mu);
  c->st.pause_lsn = lsn;
  wake(c);
  pthread_mutex_unlock(&c->mu);
}

/* See cdc.h: lift a pause (streaming again at once). */
void cdc_resume (Cdc *c) {
  pthread_mutex_lock(&c->mu);
  c->st.pause_lsn = 0;
  if (c->st.state == CDC_PAUSED)
    c->st.state = CDC_STREAMING;
  wake(c);
  pthread_mutex_unlock(&c->mu);
}

/* See cdc.h: signal stop, wait up to timeout_s for the group in flight
   (then abandon it: it rolls back), join the supervisor. */
void cdc_stop (Cdc *c, double timeout_s) {
  struct timespec ts;
  if (c == NULL || !c->thread_started)
    return;
  pthread_mutex_lock(&c->mu);
  c->stop = 1;
  wake(c);
  abs_deadline(&ts, timeout_s > 0 ? timeout_s : 0);
  while (!c->finished && pthread_cond_timedwait(&c->cond, &c->mu, &ts) != ETIMEDOUT)
    ;
  if (!c->finished)
    c->abort_wait = 1;   /* stop waiting on the target: the group rolls back */
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->thread, NULL);
  c->thread_started = 0;
  if (c->monitor_started) {
    pthread_join(c->monitor_thread, NULL);
    c->monitor_started = 0;
  }
}

/* Stop (30 s for the group in flight) and free everything the Cdc owns;
   NULL is a no-op. */
void cdc_free (Cdc *c) {
  if (c == NULL)
    return;
  cdc_stop(c, 30);
  session_close(c);
  if (c->monitor != NULL)
    PQfinish(c->monitor);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cond);
  pthread_cond_destroy(&c->qcond);
  free(c->source);
  free(c->target);
  free(c->slot);
  free(c->publication);
  free(c->origin);
  free(c->state_dir);
  free(c->identity);
  free(c->session_sql);
  for (int i = 0; i < c->nrow_only; i++)
    free(c->row_only[i]);
  free(c->row_only);
  for (int i = 0; i < c->cfg.nsync; i++) {
    free((char *)c->sync[i].schema);
    free((char *)c->sync[i].table);
  }
  free(c->sync);
  free(c);
}

/* }====================================================== */

/*
** {======================================================
** Slots, publications, cleanup
** =======================================================
*/

/* The n bytes of "schema.table" (or "table") as quoted identifiers. */
static void quote_qualified (Buf *b, const char *name, size_t n) {
  const char *dot = memchr(name, '.', n);
  if (dot != NULL) {
    quote_qualified(b, name, (size_t)(dot - name));
    buf_putc(b, '.');
    quote_qualified(b, dot + 1, n - (size_t)(dot - name) - 1);
    return;
  }
  apply_quote_ident(b, name, n);
}

/*
** See cdc.h: creates the publication when missing (FOR ALL TABLES, or
** FOR TABLE the listed ones), then the slot (a temporary one goes with
** the session) on a replication connection that exports its snapshot
** and stays open in the CdcSlot.
*/
CdcSlot *cdc_slot_create (const char *source, const char *slot, const char *publication,
                          const char *tables, int temporary, CdcError *err) {
  char msg[PGCONN_ERRLEN];
  PGconn *conn;
  PGresult *res = NULL;
  CdcSlot *s;
  const char *vals[1];
  if (stream_check_name("slot", slot, err) != 0)
    return NULL;
  if (publication != NULL && publication[0] != '\0') {
    conn = pgconn_open(source, "source", PGCONN_NORMAL, msg, sizeof(msg));
    if (conn == NULL) {
      cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
      return NULL;
    }
    vals[0] = publication;
    if (apply_exec(conn, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, vals, &res,
                   "look up the publication", err) != 0) {
      PQfinish(conn);
      return NULL;
    }
    if (PQntuples(res) == 0) {
      Buf sql = BUF_INIT;
      int rc;
      buf_puts(&sql, "CREATE PUBLICATION ");
      apply_quote_ident(&sql, publication, strlen(publication));
      if (tables == NULL || tables[0] == '\0') {
        buf_puts(&sql, " FOR ALL TABLES");
      } else {
        const char *p = tables;
        int first = 1;
        buf_puts(&sql, " FOR TABLE ");
        while (*p) {
          size_t n;
          while (*p == ',' || *p == ' ')
            p++;
          n = strcspn(p, ", ");
          if (n == 0)
            break;
          if (!first)
            buf_puts(&sql, ", ");
          quote_qualified(&sql, p, n);
          first = 0;
          p += n;
        }
      }
      rc = apply_exec(conn, sql.data, 0, NULL, NULL, "create the publication", err);
      buf_free(&sql);
      if (rc != 0) {
        PQclear(res);
        PQfinish(conn);
        return NULL;
      }
      log_info("cdc: created publication %s", publication);
    }
    PQclear(res);
    PQfinish(conn);
  }
  conn = pgconn_open(source, "source", PGCONN_REPLICATION, msg, sizeof(msg));
  if (conn == NULL) {
    cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
    return NULL;
  }
  s = xcalloc(1, sizeof(CdcSlot));
  s->conn = conn;
  if (stream_create_slot(conn, slot, temporary, 1, &s->info, err) != 0) {
    cdc_slot_close(s);
    return NULL;
  }
  {
    char l[PGO_LSN_BUFSZ];
    log_info("cdc: created %sreplication slot %s at %s (snapshot %s)", temporary ? "temporary " : "",
             slot, pgo_lsn_format(s->info.lsn, l), s->info.snapshot);
  }
  return s;
}

/* End the exporting session (the snapshot goes) and free s; the slot
   itself stays.  NULL is a no-op. */
void cdc_slot_close (CdcSlot *s) {
  if (s == NULL)
    return;
  if (s->conn != NULL)
    PQfinish(s->conn);
  free(s);
}

/* See cdc.h: the slot's state from pg_replication_slots (exists = 0
   when there is none) and the server's current WAL position.  -1 with
   err when the source cannot be queried. */
int cdc_slot_info (const char *source, const char *slot, CdcSlotInfo *out, CdcError *err) {
  char msg[PGCONN_ERRLEN];
  const char *vals[1];
  PGresult *res = NULL;
  PGconn *conn = pgconn_open(source, "source", PGCONN_NORMAL, msg, sizeof(msg));
  memset(out, 0, sizeof(*out));
  out->retained_bytes = -1;
  if (conn == NULL) {
    cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
    return -1;
  }
  vals[0] = slot;
  if (apply_exec(conn,
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, "
        "s.active, s.restart_lsn, s.confirmed_flush_lsn, s.wal_status, "
        "pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
        "ELSE pg_current_wal_lsn() END, s.restart_lsn)::bigint "
        "FROM (SELECT 1) one LEFT JOIN pg_replication_slots s ON s.slot_name = $1",
        1, vals, &res, "read the replication slot", err) != 0) {
    PQfinish(conn);
    return -1;
  }
  pgo_lsn_parse(PQgetvalue(res, 0, 0), &out->current_lsn);
  out->exists = !PQgetisnull(res, 0, 1);
  if (out->exists) {
    out->active = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    if (!PQgetisnull(res, 0, 2))
      pgo_lsn_parse(PQgetvalue(res, 0, 2), &out->restart_lsn);
    if (!PQgetisnull(res, 0, 3))
      pgo_lsn_parse(PQgetvalue(res, 0, 3), &out->confirmed_lsn);
    strlcpy_(out->wal_status, PQgetvalue(res, 0, 4), sizeof(out->wal_status));
    if (!PQgetisnull(res, 0, 5))
      out->retained_bytes = strtoll(PQgetvalue(res, 0, 5), NULL, 10);
  }
  PQclear(res);
  PQfinish(conn);
  return 0;
}

/* See cdc.h: drop what exists of the slot and publication (source) and
   the progress origin and row (target); missing objects are fine.
   -1 with err on the first failure. */
int cdc_drop (const CdcDrop *d, CdcError *err) {
  const char *source = d->source, *slot = d->slot, *publication = d->publication;
  const char *target = d->target, *origin = d->origin;
  char msg[PGCONN_ERRLEN];
  const char *vals[1];
  if (source != NULL && ((slot != NULL && slot[0]) || (publication != NULL && publication[0]))) {
    PGconn *conn = pgconn_open(source, "source", PGCONN_NORMAL, msg, sizeof(msg));
    if (conn == NULL) {
      cdc_err_set(err, CDC_ERR_CONNECTION, 1, "%s", msg);
      return -1;
    }
    if (slot != NULL && slot[0]) {
      /* an active walsender (a stopping pgtide) releases the slot shortly */
      int tries;
      vals[0] = slot;
      for (tries = 0;; tries++) {
        if (apply_exec(conn, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                       "WHERE slot_name = $1", 1, vals, NULL, "drop the replication slot", err) == 0)
          break;
        if (strcmp(err->sqlstate, "55006") != 0 || tries >= 50) {
          PQfinish(conn);
          return -1;
        }
        usleep(200000);
      }
    }
    if (publication != NULL && publication[0]) {
      Buf sql = BUF_INIT;
      int rc;
      buf_puts(&sql, "DROP PUBLICATION IF EXISTS ");
      apply_quote_ident(&sql, publication, strlen(publication));
      rc = apply_exec(conn, sql.data, 0, NULL, NULL, "drop the publication", err);
      buf_free(&sql);
      if (rc != 0) {
        PQfinish(conn);
        return -1;
      }
    }
    PQfinish(conn);
  }
  if (target != NULL && origin != NULL && origin[0])
    return apply_drop_progress(target, origin, d->progress, d->identity, err);
  return 0;
}

/* }====================================================== */
