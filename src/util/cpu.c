/*
** cpu.c
** The number of CPUs online (see cpu.h).
*/
#include "util/cpu.h"

#include <unistd.h>

int cpu_count (void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}
