/*
** interrupt.h
** SIGINT/SIGTERM/SIGHUP handling shared by the Lua host and long-running C code.
** The first signal sets a flag (checked by COPY loops, apply, waits) and
** calls the host's hook so a running Lua chunk raises "interrupted" at
** its next instruction; the second signal terminates the process.
** Also the stop request: a clean stop asked from code (Lua's
** load.request_stop()), polled by the full load and its post-load
** statements; it does not make Lua raise.
*/
#ifndef PGTIDE_INTERRUPT_H
#define PGTIDE_INTERRUPT_H

/* Install handlers; 'on_signal' (may be NULL) runs inside the handler
   and must be async-signal-safe (lua_sethook is). */
void interrupt_install(void (*on_signal)(void));

/* Non-zero once SIGINT or SIGTERM arrived (until interrupt_clear). */
int interrupt_requested(void);
void interrupt_clear(void);

/* Raise the flag from code (tests, `pgtide cutover` handling). */
void interrupt_raise(void);

/* The stop request (async-signal-safe to set): every running full load
   and post-data run stops as on an interrupt, until cleared. */
void interrupt_request_stop(void);
void interrupt_clear_stop(void);
int interrupt_stop_requested(void);

#endif
