/*
** log.c
** Process-wide logger (see log.h).  One mutex serialises writers so lines
** from worker threads never interleave; the status line is redrawn after
** each message on a TTY.
*/
#include "util/log.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "util/buf.h"
#include "util/redact.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static LogLevel level = LOG_INFO;
static FILE *logfile;
static char context[128];
static char topics[256];
static char *status;
static int use_stderr = 1;
static int tty = -1;
static unsigned long counts[LOG_OFF];   /* messages logged, by level (under lock) */
static int columns;                     /* terminal width; 0: ask again */
static volatile sig_atomic_t resized;   /* SIGWINCH seen */

static const char *const names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"};

void log_set_level (LogLevel l) { level = l; }
LogLevel log_get_level (void) { return level; }

const char *log_level_name (LogLevel l) {
  return (l >= LOG_TRACE && l <= LOG_OFF) ? names[l] : "?";
}

int log_level_from_name (const char *name) {
  int i;
  for (i = LOG_TRACE; i <= LOG_OFF; i++)
    if (strcasecmp(name, names[i]) == 0)
      return i;
  if (strcasecmp(name, "warning") == 0)
    return LOG_WARN;
  return -1;
}

/* Also append log lines to 'path' (0, or -1 with errno). */
int log_open_file (const char *path) {
  FILE *f = fopen(path, "a");
  if (f == NULL)
    return -1;
  pthread_mutex_lock(&lock);
  if (logfile != NULL)
    fclose(logfile);
  logfile = f;
  setvbuf(logfile, NULL, _IOLBF, 0);
  pthread_mutex_unlock(&lock);
  return 0;
}

void log_close_file (void) {
  pthread_mutex_lock(&lock);
  if (logfile != NULL)
    fclose(logfile);
  logfile = NULL;
  pthread_mutex_unlock(&lock);
}

void log_set_context (const char *step) {
  pthread_mutex_lock(&lock);
  strlcpy_(context, step != NULL ? step : "", sizeof(context));
  pthread_mutex_unlock(&lock);
}

void log_set_topics (const char *csv) {
  strlcpy_(topics, csv != NULL ? csv : "", sizeof(topics));
}

/* Is the debug topic on (--debug topic1,topic2 or all)? */
int log_topic (const char *topic) {
  const char *p = topics;
  size_t n = strlen(topic);
  while (*p) {
    const char *e = strchr(p, ',');
    size_t l = e ? (size_t)(e - p) : strlen(p);
    if ((l == n && strncmp(p, topic, n) == 0) || (l == 3 && strncmp(p, "all", 3) == 0))
      return 1;
    if (e == NULL)
      break;
    p = e + 1;
  }
  return 0;
}

void log_set_stderr (int enabled) { use_stderr = enabled; }

int log_stderr_is_tty (void) {
  if (tty < 0)
    tty = isatty(STDERR_FILENO) && getenv("PGTIDE_NO_TTY") == NULL;
  return tty;
}

/* Erase the status line before printing above it (caller holds lock). */
static void clear_status (void) {
  if (status != NULL && use_stderr && log_stderr_is_tty())
    fputs("\r\033[K", stderr);
}

/* SIGWINCH: the terminal was resized; the next status line asks its width. */
static void on_winch (int sig) {
  (void)sig;
  resized = 1;
}

/*
** The width of the terminal on stderr (TIOCGWINSZ), asked once and again
** after each SIGWINCH (the handler is installed with the first status
** line); COLUMNS, then 80, when the terminal does not say.
*/
static int term_columns (void) {
  struct winsize ws;
  if (columns == 0 || resized) {
    static int installed;
    if (!installed) {
      struct sigaction sa;
      memset(&sa, 0, sizeof(sa));
      sa.sa_handler = on_winch;
      sa.sa_flags = SA_RESTART;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGWINCH, &sa, NULL);
      installed = 1;
    }
    resized = 0;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
      columns = ws.ws_col;
    else
      columns = getenv("COLUMNS") != NULL && atoi(getenv("COLUMNS")) > 0 ? atoi(getenv("COLUMNS")) : 80;
  }
  return columns;
}

size_t log_fit_width (const char *s, int cols) {
  size_t i, cut = 0;
  int used = 0;
  if (cols < 2)
    cols = 2;
  for (i = 0; s[i] != '\0' && s[i] != '\n'; i++) {
    if (((unsigned char)s[i] & 0xC0) == 0x80)
      continue;                       /* a UTF-8 continuation byte: same column */
    if (used == cols - 1)
      return cut;                     /* the last column stays free: no autowrap */
    used++;
    cut = i;
    while (s[cut + 1] != '\0' && ((unsigned char)s[cut + 1] & 0xC0) == 0x80)
      cut++;
    cut++;
  }
  return i;
}

/* Draw the status line cut to the terminal's width (caller holds lock):
   a line that wrapped could not be erased, and the screen would scroll. */
static void draw_status (void) {
  if (status != NULL && use_stderr && log_stderr_is_tty()) {
    fwrite(status, 1, log_fit_width(status, term_columns()), stderr);
    fflush(stderr);
  }
}

/*
** Write one log line: timestamp, level, context, the message redacted.
** On stderr (without the date) around the TTY status line, and to the
** log file.  Thread-safe.
*/
void log_str (LogLevel l, const char *msg) {
  struct timeval tv;
  struct tm tm;
  char stamp[40];
  Buf line = BUF_INIT;
  if (l < level || l >= LOG_OFF)
    return;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  pthread_mutex_lock(&lock);
  counts[l]++;
  buf_printf(&line, "%s.%03dZ %-5s ", stamp, (int)(tv.tv_usec / 1000), names[l]);
  if (context[0] != '\0')
    buf_printf(&line, "[%s] ", context);
  redact_into(&line, msg, strlen(msg));
  while (line.len > 0 && line.data[line.len - 1] == '\n')
    line.data[--line.len] = '\0';
  buf_putc(&line, '\n');
  if (use_stderr) {
    clear_status();
    /* on stderr the date is dropped: the time of day is enough */
    fputs(line.data + 11, stderr);
    draw_status();
  }
  if (logfile != NULL)
    fputs(line.data, logfile);
  pthread_mutex_unlock(&lock);
  buf_free(&line);
}

void log_vmsg (LogLevel l, const char *fmt, va_list ap) {
  Buf msg = BUF_INIT;
  if (l < level)
    return;
  buf_vprintf(&msg, fmt, ap);
  log_str(l, buf_cstr(&msg));
  buf_free(&msg);
}

void log_msg (LogLevel l, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_vmsg(l, fmt, ap);
  va_end(ap);
}

/* How many messages were logged at level l (at or above the log level). */
unsigned long log_count (LogLevel l) {
  unsigned long n;
  if (l < LOG_TRACE || l >= LOG_OFF)
    return 0;
  pthread_mutex_lock(&lock);
  n = counts[l];
  pthread_mutex_unlock(&lock);
  return n;
}

/* Draw (or with NULL, clear) the TTY status line; no-op when stderr is
   not a TTY. */
void log_status (const char *line) {
  pthread_mutex_lock(&lock);
  clear_status();
  free(status);
  status = NULL;
  if (line != NULL) {
    char *masked = redact_str(line);
    status = masked;
    draw_status();
  } else if (use_stderr && log_stderr_is_tty()) {
    fflush(stderr);
  }
  pthread_mutex_unlock(&lock);
}
