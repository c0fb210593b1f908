/*
** redact.h
** The one place that removes secrets from text before it is logged,
** stored in a state file, put in a report or shown in an error.
**
** Two mechanisms: literal secrets registered at run time (passwords
** read from the environment or .pgpass, AWS secret keys and session
** tokens as they are resolved), and patterns that look like secrets
** whatever their value (password=... in a conninfo, user:pass@ in a
** URI, Authorization and X-Amz-Security-Token headers, JSON/XML/INI
** fields named like secrets).  Thread-safe.
*/
#ifndef PGTIDE_REDACT_H
#define PGTIDE_REDACT_H

#include "util/buf.h"

#define REDACTED "***"

/* Remember a secret value (copied); later text containing it is masked.
   Values shorter than 4 bytes are ignored to avoid masking noise. */
void redact_register(const char *secret);

/* Forget every registered secret (tests). */
void redact_clear(void);

/* Append 'in' (n bytes) to 'out' with secrets masked. */
void redact_into(Buf *out, const char *in, size_t n);

/* Return a newly allocated masked copy of the C string 'in'. */
char *redact_str(const char *in);

#endif
