/*
** load_progress.c
** Progress of a running load: done share weighted by size estimates,
** rows, bytes, MB/s and ETA, per-table figures, the one-line summary,
** and the status line (TTY) or periodic log lines.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "load/load_internal.h"

/* See fullload.h: bytes below 1 kB, else one decimal in 1024 units. */
void fullload_format_bytes (int64_t n, char *out, size_t outlen) {
  static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = (double)n;
  int i = 0;
  while (v >= 1024.0 && i < 4) {
    v /= 1024.0;
    i++;
  }
  if (i == 0)
    snprintf(out, outlen, "%lld B", (long long)n);
  else
    snprintf(out, outlen, "%.1f %s", v, units[i]);
}

/* Share of the plan done, weighting units by their size estimate. */
double fl_done_fraction (FullLoad *fl, int include_running) {
  double total = 0, done = 0;
  int i;
  for (i = 0; i < fl->plan.n; i++) {
    FlUnit *u = &fl->plan.units[i];
    double w = u->est_bytes > 0 ? (double)u->est_bytes : 1.0;
    int st = u->state;
    total += w;
    if (st == FL_DONE || st == FL_SKIPPED)
      done += w;
    else if (include_running && st == FL_RUNNING && u->est_bytes > 0) {
      double f = (double)u->live.bytes / (double)u->est_bytes;
      done += w * (f > 0.99 ? 0.99 : f);
    }
  }
  return total > 0 ? done / total : 1.0;
}

/* See fullload.h: totals and per-table figures under the lock; the
   caller frees p's tables with fullload_progress_free. */
void fullload_progress (FullLoad *fl, FlProgress *p) {
  int i;
  double frac, gained;
  memset(p, 0, sizeof(*p));
  p->units = fl->plan.n;
  p->tables = xcalloc((size_t)fl->ntables + 1, sizeof(FlTableProgress));
  p->ntables = fl->ntables;
  for (i = 0; i < fl->ntables; i++) {
    FlUnit *u = &fl->plan.units[fl->tables[i].first_unit];
    p->tables[i].nspname = u->nspname;
    p->tables[i].relname = u->relname;
    p->tables[i].units = fl->tables[i].units;
    p->tables[i].est_bytes = fl->tables[i].est_bytes;
  }
  for (i = 0; i < fl->plan.n; i++) {
    FlUnit *u = &fl->plan.units[i];
    FlTableProgress *t = &p->tables[fl->unit_table[i]];
    int st = u->state;
    int64_t rows = 0, bytes = 0;
    if (st == FL_DONE) {
      rows = u->rows;
      bytes = u->bytes;
      p->units_done++;
      t->units_done++;
    } else if (st == FL_SKIPPED) {
      p->units_skipped++;
      t->units_done++;
    } else if (st == FL_RUNNING) {
      rows = u->live.rows;
      bytes = u->live.bytes;
      p->units_running++;
    }
    p->rows += rows;
    p->bytes += bytes;
    p->est_bytes += u->est_bytes;
    t->rows += rows;
    t->bytes += bytes;
  }
  pthread_mutex_lock(&fl->mu);
  p->finished = fl->running == 0;
  p->tasks = fl->tasks;
  p->tasks_done = fl->tasks_done;
  p->checks = fl->checks_run;
  p->checks_done = fl->checks_done;
  p->copy_seconds = (fl->copy_end > 0 ? fl->copy_end : fl_now_s()) - fl->t0;
  for (i = 0; i < fl->ntables; i++)
    p->tables[i].index_seconds = fl->tables[i].index_seconds;
  pthread_mutex_unlock(&fl->mu);
  frac = fl_done_fraction(fl, 1);
  p->percent = 100.0 * frac;
  p->elapsed = fl_now_s() - fl->t0;
  {
    double copy_end = fl->copy_end > 0 ? fl->copy_end - fl->t0 : p->elapsed;
    p->mb_per_s = copy_end > 0 ? (double)p->bytes / 1048576.0 / copy_end : 0;
  }
  gained = frac - fl->base_fraction;
  p->eta = (gained > 0.001 && p->elapsed > 1.0) ? p->elapsed * (1.0 - frac) / gained : -1;
}

void fullload_progress_free (FlProgress *p) {
  free(p->tables);
  p->tables = NULL;
}

/* "m:ss", or "h:mm:ss" from an hour on. */
static void format_duration (double s, char *out, size_t outlen) {
  long n = (long)(s + 0.5);
  if (n >= 3600)
    snprintf(out, outlen, "%ld:%02ld:%02ld", n / 3600, (n / 60) % 60, n % 60);
  else
    snprintf(out, outlen, "%ld:%02ld", n / 60, n % 60);
}

/* See fullload.h: percent, units, bytes, throughput and the ETA when
   known, in out (truncated to outlen). */
void fullload_progress_line (const FlProgress *p, char *out, size_t outlen) {
  char b[32], eta[32];
  fullload_format_bytes(p->bytes, b, sizeof(b));
  if (p->eta >= 0)
    format_duration(p->eta, eta, sizeof(eta));
  else
    strlcpy_(eta, "?", sizeof(eta));
  snprintf(out, outlen, "full load %3.0f%%  %d/%d units  %s  %.1f MB/s  ETA %s",
           p->percent, p->units_done + p->units_skipped, p->units, b, p->mb_per_s, eta);
  if (p->tasks > 0) {
    size_t n = strlen(out);
    snprintf(out + n, outlen > n ? outlen - n : 0, "  indexes %d/%d tables", p->tasks_done, p->tasks);
  }
  if (p->checks > 0) {
    size_t n = strlen(out);
    snprintf(out + n, outlen > n ? outlen - n : 0, "  verified %d/%d", p->checks_done, p->checks);
  }
}

/* The status line on a TTY: the summary plus the biggest tables in
   flight; plain log lines otherwise, every log_interval seconds. */
void fl_draw_progress (FullLoad *fl, int force) {
  double t = fl_now_s();
  FlProgress p;
  char line[256];
  int tty = log_stderr_is_tty();
  if (!fl->progress)
    return;
  if (!force && (tty ? t - fl->last_draw < 0.5 : t - fl->last_log < fl->log_interval))
    return;
  fullload_progress(fl, &p);
  fullload_progress_line(&p, line, sizeof(line));
  if (tty) {
    Buf b = BUF_INIT;
    int i, shown = 0;
    buf_puts(&b, line);
    for (i = 0; i < p.ntables && shown < 2; i++) {
      FlTableProgress *tp = &p.tables[i];
      if (tp->units_done < tp->units && tp->bytes > 0 && tp->est_bytes > 0) {
        double f = 100.0 * (double)tp->bytes / (double)tp->est_bytes;
        buf_printf(&b, "  | %s %.0f%%", tp->relname, f > 99 ? 99 : f);
        shown++;
      }
    }
    log_status(buf_cstr(&b));
    fl->status_shown = 1;
    buf_free(&b);
    fl->last_draw = t;
  } else {
    log_info("%s", line);
    fl->last_log = t;
  }
  fullload_progress_free(&p);
}
