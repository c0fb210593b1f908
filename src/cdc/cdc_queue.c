/*
** cdc_queue.c
** Source transactions (a spill buffer each) and the queue that carries
** complete ones from the receiver to the applier, in commit order.
** The receiver appends (cdc_receiver.c: enqueue), the apply loop takes
** (cdc_worker.c: take); both under the Cdc's mu.
*/
#include "cdc/cdc_internal.h"

#include <stdlib.h>

#include "util/buf.h"

/* A new, empty transaction; its buffer moves to a file in the state
   directory past a quarter of the memory budget.  Freed by
   cdc_txn_free(). */
Txn *cdc_txn_new (Cdc *c, uint32_t xid) {
  Txn *t = xcalloc(1, sizeof(Txn));
  t->xid = xid;
  /* one transaction may hold a quarter of the budget in RAM */
  spill_init(&t->buf, c->state_dir, c->cfg.memory_cap / 4);
  return t;
}

/* Free a transaction and its spill buffer (files included); NULL is a no-op. */
void cdc_txn_free (Txn *t) {
  if (t == NULL)
    return;
  spill_free(&t->buf);
  free(t->subs);
  free(t);
}

/* Bytes the queued transactions hold in memory.  Caller holds mu. */
size_t cdc_queued_mem (Cdc *c) {
  return (size_t)c->st.queued_bytes;
}

/* Free every queued transaction (a session ends).  Caller holds mu. */
void cdc_queue_clear (Cdc *c) {
  while (c->qhead != NULL) {
    Txn *t = c->qhead;
    c->qhead = t->next;
    cdc_txn_free(t);
  }
  c->qtail = NULL;
  c->st.queued_txns = 0;
  c->st.queued_bytes = 0;
}
