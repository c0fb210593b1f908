/*
** interrupt.c
** Signal flag and stop request for clean stops (see interrupt.h).
*/
#include "util/interrupt.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t flag;
static volatile sig_atomic_t stop_flag;
static void (*hook)(void);

/* SIGINT / SIGTERM / SIGHUP: set the flag (a second one exits at once) and run
   the async-signal-safe hook. */
static void handler (int sig) {
  if (flag) {  /* second signal: give up waiting and die the default way */
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  flag = 1;
  if (hook != NULL)
    hook();
}

/* Install the handlers for SIGINT and SIGTERM (see interrupt.h). */
void interrupt_install (void (*on_signal)(void)) {
  struct sigaction sa;
  hook = on_signal;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  /* a closed terminal (SIGHUP) stops a run like Ctrl-C, marked interrupted;
     under nohup the signal stays ignored */
  {
    struct sigaction old;
    if (sigaction(SIGHUP, NULL, &old) == 0 && old.sa_handler != SIG_IGN)
      sigaction(SIGHUP, &sa, NULL);
  }
  signal(SIGPIPE, SIG_IGN);
}

int interrupt_requested (void) { return flag != 0; }
void interrupt_clear (void) { flag = 0; }
void interrupt_raise (void) { flag = 1; }

void interrupt_request_stop (void) { stop_flag = 1; }
void interrupt_clear_stop (void) { stop_flag = 0; }
int interrupt_stop_requested (void) { return stop_flag != 0; }
