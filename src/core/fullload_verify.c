/*
** fullload_verify.c
** The full load's per-table verification (fullload.h, FlCheck): a batch
** of loaded tables compared row by row with the validation core
** (src/validate, offline mode), the source read under the load's own
** snapshot.  Lua-free; runs on a load worker's thread.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fullload.h"
#include "util/buf.h"
#include "validate/validate.h"

#define LOCK_TIMEOUT_MS 2000

/* Whether report table r is validation name 'name' (schema.table, parts
   possibly quoted; no schema means public). */
static int same_table (const VTableResult *r, const char *name) {
  char *schema = NULL, *table = NULL;
  int same;
  if (validate_parse_name(name, &schema, &table) != 0)
    return 0;
  same = strcmp(schema, r->schema) == 0 && strcmp(table, r->name) == 0;
  free(schema);
  free(table);
  return same;
}

/*
** See fullload.h.  Differences are only counted here: a table that
** differs is compared again, with the full report, by the caller.
**
** The lock timeout: the load's copy sessions keep their snapshot
** transactions, and with them a lock on every table they copied, until
** the load ends.  An application statement that needs an exclusive lock
** on such a table (TRUNCATE, ALTER TABLE) waits for that, and any new
** lock request queues behind it: a comparison that waited there would
** wait for the end of the load, which waits for the comparison.  So
** the comparison gives up after LOCK_TIMEOUT_MS instead (the table is
** then compared by the caller after the load).
*/
int fl_verify (const char *source, const char *target, const char *snapshot, const char *const *names,
               int n, int jobs, int (*cancel)(void *ud), void *ud, FlCheckResult *results) {
  VOptions o;
  VReport r;
  char err[512];
  int i, j, rc;
  validate_options_init(&o);
  o.source = source;
  o.target = target;
  o.tables = names;
  o.ntables = n;
  o.jobs = jobs > 0 ? jobs : 1;
  o.max_rows = 1;
  o.progress = 0;
  o.mode = VMODE_OFFLINE;
  o.source_snapshot = snapshot;
  o.cancel = cancel;
  o.cancel_ud = ud;
  o.lock_timeout_ms = LOCK_TIMEOUT_MS;
  rc = validate_run(&o, &r, err, sizeof(err));
  for (i = 0; i < n; i++) {
    FlCheckResult *c = &results[i];
    const VTableResult *t = NULL;
    c->seconds = r.seconds;
    for (j = 0; j < r.ntables && t == NULL; j++)
      if (same_table(&r.tables[j], names[i]))
        t = &r.tables[j];
    if (rc != 0 || t == NULL) {
      c->status = FL_CHECK_FAILED;
      strlcpy_(c->error, rc != 0 ? err : "not in the validation report", sizeof(c->error));
      continue;
    }
    c->source_rows = t->source_rows;
    c->target_rows = t->target_rows;
    c->missing = t->missing;
    c->extra = t->extra;
    c->changed = t->changed;
    switch (t->status) {
      case VT_EQUAL:
        c->status = FL_CHECK_EQUAL;
        break;
      case VT_DIFFERENT:
        c->status = FL_CHECK_DIFFERENT;
        break;
      default:
        c->status = FL_CHECK_FAILED;
        strlcpy_(c->error, t->error != NULL ? t->error : validate_status_name(t->status), sizeof(c->error));
        break;
    }
  }
  validate_report_free(&r);
  return rc == 0 ? 0 : -1;
}
