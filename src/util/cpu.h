/*
** cpu.h
** The number of CPUs online: the default number of workers of the full
** load and of the post-data statements.
*/
#ifndef PGTIDE_CPU_H
#define PGTIDE_CPU_H

/* CPUs online, at least 1. */
int cpu_count(void);

#endif
