/*
** embedded.h
** Files compiled into the binary by scripts/embed.c: everything under
** lua/ and runbooks/ (Lua code, templates), keyed by repository path.
*/
#ifndef PGTIDE_EMBEDDED_H
#define PGTIDE_EMBEDDED_H

#include <stddef.h>

typedef struct EmbeddedFile {
  const char *path;       /* e.g. "lua/pgtide/runbook.lua"; NULL ends the list */
  const char *data;
  size_t size;
} EmbeddedFile;

extern const EmbeddedFile embedded_files[];

#endif
