/*
** atomic_file.c
** Atomic file replacement with fsync (see atomic_file.h).
*/
#include "util/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util/buf.h"

void atomic_file_sync_dir (const char *path) {
  char dir[PATH_MAX];
  char *slash;
  int fd;
  strlcpy_(dir, path, sizeof(dir));
  slash = strrchr(dir, '/');
  if (slash == NULL)
    strlcpy_(dir, ".", sizeof(dir));
  else if (slash == dir)
    dir[1] = '\0';
  else
    *slash = '\0';
  fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

/* Write all of data[0..len) to fd; returns 0, or -1 with errno set. */
static int write_all (int fd, const char *data, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    off += (size_t)w;
  }
  return 0;
}

/* The failure message: "<what> <file>: <strerror(errno)>". */
static int fail (char *err, size_t errlen, const char *what, const char *file) {
  snprintf(err, errlen, "%s %s: %s", what, file, strerror(errno));
  return -1;
}

/*
** See atomic_file.h.  The message is built before close()/unlink() can
** change errno.
*/
int atomic_file_write (const char *path, const void *data, size_t len, int mode, int flags,
                       char *err, size_t errlen) {
  static atomic_uint calls;
  Buf tmp = BUF_INIT;
  int fd, rc = 0, durable = (flags & ATOMIC_FILE_DURABLE) != 0;
  buf_printf(&tmp, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&calls, 1));
  fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    rc = fail(err, errlen, "cannot create", tmp.data);
  } else if (write_all(fd, data, len) != 0) {
    rc = fail(err, errlen, "cannot write", tmp.data);
    close(fd);
    unlink(tmp.data);
  } else if (durable && fsync(fd) != 0) {
    rc = fail(err, errlen, "cannot save", path);
    close(fd);
    unlink(tmp.data);
  } else if (close(fd) != 0 || rename(tmp.data, path) != 0) {
    rc = fail(err, errlen, "cannot save", path);
    unlink(tmp.data);
  } else if (durable) {
    atomic_file_sync_dir(path);
  }
  buf_free(&tmp);
  return rc;
}
