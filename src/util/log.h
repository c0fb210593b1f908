/*
** log.h
** The process-wide logger used by C code and (through the "log" Lua
** module) by runbooks.  Every line is "TIMESTAMP LEVEL [step] message",
** goes to stderr and, once opened, to the state directory's log file.
** Every message passes through redact_into() first: nothing logged can
** carry a registered secret or a password-shaped value.  Thread-safe,
** so full-load and apply workers may log.
**
** On a TTY a status line (progress bar) can be kept at the bottom of
** stderr: log lines are printed above it and it is redrawn after them.
*/
#ifndef PGTIDE_LOG_H
#define PGTIDE_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum LogLevel {
  LOG_TRACE = 0, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF
} LogLevel;

void log_set_level(LogLevel level);
LogLevel log_get_level(void);
int log_level_from_name(const char *name);      /* -1 when unknown */
const char *log_level_name(LogLevel level);

/* Append log lines to 'path' as well (0 on success, -1 with errno). */
int log_open_file(const char *path);
void log_close_file(void);

/* The step name shown in brackets; NULL or "" for none. */
void log_set_context(const char *step);

/* Debug topics (--debug aws,sql): log_topic("aws") is true when enabled. */
void log_set_topics(const char *csv);
int log_topic(const char *topic);

/* Quiet stderr (file logging continues); used by tests and --quiet. */
void log_set_stderr(int enabled);

void log_msg(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(LogLevel level, const char *fmt, va_list ap);
/* Log a preformatted message (no format interpretation). */
void log_str(LogLevel level, const char *msg);

/* Status line on a TTY (progress); NULL clears it.  No-op when stderr
   is not a TTY: callers then log plain progress lines instead. */
void log_status(const char *line);
int log_stderr_is_tty(void);

/* The number of bytes of s (up to its first newline) that fit in a
   terminal of 'cols' columns without touching the last column, whole
   UTF-8 characters counted as one column each. */
size_t log_fit_width(const char *s, int cols);

/* How many messages were logged at 'level' (those below the log level
   are not counted). */
unsigned long log_count(LogLevel level);

#define log_trace(...) log_msg(LOG_TRACE, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
