/*
** atomic_file.h
** Replacing a file so that readers see the old or the new contents,
** never a torn file, even after kill -9 or a power loss: a temporary
** file beside it, fsync, rename over it, fsync of the directory.
** The state file, reports and status files go through here.
*/
#ifndef PGTIDE_ATOMIC_FILE_H
#define PGTIDE_ATOMIC_FILE_H

#include <stddef.h>

/* Flags of atomic_file_write. */
enum {
  ATOMIC_FILE_DURABLE = 1    /* fsync the file before the rename and the directory
                                after: the new contents survive a power loss (without
                                it, only a crash of the process is covered: a file
                                rewritten every second, such as a status file) */
};

/*
** Write data[0..len) to 'path' atomically, creating it with 'mode'
** (e.g. 0600) when new; 'flags' as above.  The temporary file is
** "<path>.tmp.<pid>.<n>" (n counts the calls, so threads of one process
** never share one).
** Returns 0, or -1 with "<what> <file>: <reason>" in err ("cannot
** create", "cannot write" name the temporary file, "cannot save" the
** path); the temporary file is then removed.
*/
int atomic_file_write(const char *path, const void *data, size_t len, int mode, int flags,
                      char *err, size_t errlen);

/* fsync the directory holding 'path' so a rename in it is durable
   (best effort: failures are ignored). */
void atomic_file_sync_dir(const char *path);

#endif
