/*
** creds_process.c
** credential_process: the profile's command split shell-style (no
** shell is run), run with stdout and stderr captured (bounded output,
** a timeout, the child killed when it passes), and its JSON read.
*/
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aws/creds.h"
#include "aws/creds_internal.h"
#include "util/log.h"
#include "util/redact.h"

#define PROCESS_TIMEOUT_S 60
#define PROCESS_MAX_OUTPUT (1u << 20)

/* Split a command line shell-style (quotes, backslashes), no expansion;
   NULL on an unterminated quote.  Caller frees with aws_argv_free(). */
char **aws_split_command (const char *cmd) {
  char **argv = NULL;
  size_t argc = 0;
  Buf word = BUF_INIT;
  int in_word = 0;
  const char *p = cmd;
  for (;;) {
    char ch = *p;
    if (ch == '\0' || isspace((unsigned char)ch)) {
      if (in_word) {
        argv = xrealloc(argv, (argc + 2) * sizeof(char *));
        argv[argc++] = xstrdup(buf_cstr(&word));
        buf_reset(&word);
        in_word = 0;
      }
      if (ch == '\0')
        break;
      p++;
    } else if (ch == '\'') {
      const char *q = strchr(p + 1, '\'');
      if (q == NULL)
        goto bad;
      buf_append(&word, p + 1, (size_t)(q - p - 1));
      in_word = 1;
      p = q + 1;
    } else if (ch == '"') {
      p++;
      while (*p != '"') {
        if (*p == '\0')
          goto bad;
        if (*p == '\\' && (p[1] == '"' || p[1] == '\\' || p[1] == '$' || p[1] == '`'))
          p++;
        buf_putc(&word, *p++);
      }
      p++;
      in_word = 1;
    } else if (ch == '\\') {
      if (p[1] == '\0')
        goto bad;
      buf_putc(&word, p[1]);
      p += 2;
      in_word = 1;
    } else {
      buf_putc(&word, ch);
      in_word = 1;
      p++;
    }
  }
  buf_free(&word);
  if (argv == NULL)
    argv = xcalloc(1, sizeof(char *));
  argv[argc] = NULL;
  return argv;
bad:
  buf_free(&word);
  if (argv != NULL) {
    argv[argc] = NULL;
    aws_argv_free(argv);
  }
  return NULL;
}

void aws_argv_free (char **argv) {
  size_t i;
  if (argv == NULL)
    return;
  for (i = 0; argv[i] != NULL; i++)
    free(argv[i]);
  free(argv);
}

/* Read all of fd into b (up to max bytes) until EOF or the deadline. */
static int drain (int fds[2], Buf out[2], time_t deadline) {
  int open_fds = 2, i;
  while (open_fds > 0) {
    struct pollfd p[2];
    int n = 0, map[2], wait_ms = (int)(deadline - time(NULL)) * 1000;
    if (wait_ms <= 0)
      return -1;
    for (i = 0; i < 2; i++)
      if (fds[i] >= 0) {
        p[n].fd = fds[i];
        p[n].events = POLLIN;
        map[n++] = i;
      }
    if (poll(p, (nfds_t)n, wait_ms) < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    for (i = 0; i < n; i++) {
      if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        char chunk[4096];
        ssize_t r = read(fds[map[i]], chunk, sizeof(chunk));
        if (r > 0 && out[map[i]].len < PROCESS_MAX_OUTPUT) {
          buf_append(&out[map[i]], chunk, (size_t)r);
        } else if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
          close(fds[map[i]]);
          fds[map[i]] = -1;
          open_fds--;
        }
      }
    }
  }
  return 0;
}

/*
** Run argv (no shell) with stdout and stderr captured into out[0] and
** out[1] (PROCESS_MAX_OUTPUT each), killing it after PROCESS_TIMEOUT_S.
** Returns 0 with waitpid's *status and *timed_out, or -1 with err when
** it could not be started.
*/
static int run_capture (char **argv, Buf out[2], int *status, int *timed_out, AwsError *err) {
  int po[2] = {-1, -1}, pe[2] = {-1, -1}, fds[2];
  pid_t pid;
  if (pipe(po) != 0 || pipe(pe) != 0) {
    aws_error_set(err, "CredentialProcessError", 0, "cannot create pipes: %s", strerror(errno));
    pid = -1;
  } else if ((pid = fork()) < 0) {
    aws_error_set(err, "CredentialProcessError", 0, "cannot fork: %s", strerror(errno));
  } else if (pid == 0) {
    dup2(po[1], 1);
    dup2(pe[1], 2);
    close(po[0]); close(po[1]); close(pe[0]); close(pe[1]);
    execvp(argv[0], argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  if (po[1] >= 0) close(po[1]);
  if (pe[1] >= 0) close(pe[1]);
  if (pid < 0) {
    if (po[0] >= 0) close(po[0]);
    if (pe[0] >= 0) close(pe[0]);
    return -1;
  }
  fds[0] = po[0];
  fds[1] = pe[0];
  *timed_out = drain(fds, out, time(NULL) + PROCESS_TIMEOUT_S) != 0;
  if (fds[0] >= 0) close(fds[0]);
  if (fds[1] >= 0) close(fds[1]);
  if (*timed_out)
    kill(pid, SIGKILL);
  while (waitpid(pid, status, 0) < 0 && errno == EINTR)
    ;
  return 0;
}

/*
** credential_process: run the profile's command without a shell and
** read credentials from its stdout (the process credential JSON).
** Returns 1 with credentials, or -1 with err (bad command, failure,
** timeout, bad output: stderr is quoted, shortened).
*/
int creds_from_process (const char *cmd, const char *profile, AwsCreds *out, AwsError *err) {
  char **argv = aws_split_command(cmd);
  Buf bufs[2] = {BUF_INIT, BUF_INIT};
  char perr[200];
  int rc = -1, status = 0, timed_out = 0;
  if (argv == NULL || argv[0] == NULL) {
    aws_error_set(err, "InvalidConfig", 0, "profile %s: credential_process is empty or has "
                  "an unterminated quote", profile);
    aws_argv_free(argv);
    return -1;
  }
  if (run_capture(argv, bufs, &status, &timed_out, err) != 0) {
    /* err says why */
  } else if (timed_out) {
    aws_error_set(err, "CredentialProcessError", 0, "profile %s: credential_process %s did "
                  "not finish within %d s", profile, argv[0], PROCESS_TIMEOUT_S);
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    Buf m = BUF_INIT;
    aws_excerpt(&m, buf_cstr(&bufs[1]), bufs[1].len, 300);
    aws_error_set(err, "CredentialProcessError", 0, "profile %s: credential_process %s "
                  "failed (%s %d): %s", profile, argv[0],
                  WIFEXITED(status) ? "exit status" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), buf_cstr(&m));
    buf_free(&m);
  } else if (aws_creds_from_json("process", buf_cstr(&bufs[0]), bufs[0].len, out, perr,
                                 sizeof(perr)) != 0) {
    aws_error_set(err, "CredentialProcessError", 0, "profile %s: credential_process %s: %s",
                  profile, argv[0], perr);
  } else {
    snprintf(out->source, sizeof(out->source), "credential_process (profile %s)", profile);
    rc = 1;
  }
  if (bufs[0].data != NULL)
    explicit_bzero(bufs[0].data, bufs[0].len);   /* it held the secret */
  buf_free(&bufs[0]);
  buf_free(&bufs[1]);
  aws_argv_free(argv);
  return rc;
}
