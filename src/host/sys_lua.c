/*
** sys_lua.c
** Lua module "sys": the few operating-system services the runbook engine
** needs that Lua's standard library lacks (atomic file writes with
** fsync, directories, signals and interrupts, time, file locks), plus
** access to the secret redactor and the embedded resources.  Failures
** that a caller may want to handle return nil, message (io-style);
** misuse raises.
*/
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "host/embedded.h"
#include "host/host.h"
#include "host/luax.h"
#include "host/modules.h"
#include "util/atomic_file.h"
#include "util/buf.h"
#include "util/interrupt.h"
#include "util/redact.h"

/* The io-style failure result: nil, "<what> <path>: <strerror(errno)>". */
static int fail (lua_State *L, const char *what, const char *path) {
  lua_pushnil(L);
  lua_pushfstring(L, "%s %s: %s", what, path, strerror(errno));
  return 2;
}

static int sys_time (lua_State *L) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  lua_pushnumber(L, (double)tv.tv_sec + tv.tv_usec / 1e6);
  return 1;
}

static int sys_monotonic (lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec / 1e9);
  return 1;
}

/* sys.sleep(seconds) -> true, or false when interrupted meanwhile. */
static int sys_sleep (lua_State *L) {
  double s = luaL_checknumber(L, 1);
  struct timespec ts;
  while (s > 0 && !interrupt_requested()) {
    double slice = s > 0.05 ? 0.05 : s;
    ts.tv_sec = (time_t)slice;
    ts.tv_nsec = (long)((slice - (double)ts.tv_sec) * 1e9);
    nanosleep(&ts, NULL);
    s -= slice;
  }
  lua_pushboolean(L, !interrupt_requested());
  return 1;
}

/*
** sys.write_atomic(path, data [, mode]) -> true | nil, err.
** Writes a temporary file beside 'path', fsyncs it, renames it over
** 'path' and fsyncs the directory (util/atomic_file.c): readers see
** the old or the new contents, never a torn file, even after kill -9 or
** a power loss.
*/
static int sys_write_atomic (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int mode = (int)luaL_optinteger(L, 3, 0600);
  char err[PATH_MAX + 300];
  if (atomic_file_write(path, data, len, mode, ATOMIC_FILE_DURABLE, err, sizeof(err)) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* sys.mkdir_p(path [, mode]) -> true | nil, err.  Creates the missing
   directories of path; an existing non-directory is an error. */
static int sys_mkdir_p (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int mode = (int)luaL_optinteger(L, 2, 0700);
  char tmp[PATH_MAX];
  struct stat st;
  char *p;
  if (strlcpy_(tmp, path, sizeof(tmp)) >= sizeof(tmp))
    return luaL_error(L, "path too long");
  for (p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = '\0';
      if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
        return fail(L, "cannot create directory", tmp);
      *p = '/';
    }
  if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
    return fail(L, "cannot create directory", tmp);
  if (stat(tmp, &st) != 0)
    return fail(L, "cannot create directory", tmp);
  if (!S_ISDIR(st.st_mode)) {
    errno = ENOTDIR;
    return fail(L, "cannot create directory", tmp);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int sys_exists (lua_State *L) {
  struct stat st;
  lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0);
  return 1;
}

static int sys_isdir (lua_State *L) {
  struct stat st;
  lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0 && S_ISDIR(st.st_mode));
  return 1;
}

/* sys.readfile(path) -> contents | nil, err */
static int sys_readfile (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  FILE *f = fopen(path, "rb");
  luaL_Buffer b;
  size_t n;
  if (f == NULL)
    return fail(L, "cannot read", path);
  luaL_buffinit(L, &b);
  do {
    char *p = luaL_prepbuffer(&b);
    n = fread(p, 1, LUAL_BUFFERSIZE, f);
    luaL_addsize(&b, n);
  } while (n == LUAL_BUFFERSIZE);
  if (ferror(f)) {   /* a read error is not the end of the file */
    int e = errno;
    fclose(f);
    errno = e;
    return fail(L, "cannot read", path);
  }
  fclose(f);
  luaL_pushresult(&b);
  return 1;
}

static int cmpname (const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* sys.readdir(path) -> sorted list of names (no . and ..) | nil, err */
static int sys_readdir (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d = opendir(path);
  struct dirent *e;
  char **names = NULL;
  size_t n = 0, cap = 0, i;
  if (d == NULL)
    return fail(L, "cannot list", path);
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 32;
      names = xrealloc(names, cap * sizeof(char *));
    }
    names[n++] = xstrdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof(char *), cmpname);
  lua_createtable(L, (int)n, 0);
  for (i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    free(names[i]);
  }
  free(names);
  return 1;
}

static int sys_getpid (lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* sys.kill(pid, signal) where signal is a number or "KILL"/"TERM"/"INT"/"STOP"/"CONT"/"HUP"/"ZERO". */
static int sys_kill (lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  int sig;
  if (lua_type(L, 2) == LUA_TSTRING) {
    static const char *const names[] = {"KILL", "TERM", "INT", "STOP", "CONT", "HUP", "ZERO", NULL};
    static const int nums[] = {SIGKILL, SIGTERM, SIGINT, SIGSTOP, SIGCONT, SIGHUP, 0};
    sig = nums[luaL_checkoption(L, 2, NULL, names)];
  } else
    sig = (int)luaL_optinteger(L, 2, SIGTERM);
  if (kill(pid, sig) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int sys_isatty (lua_State *L) {
  static const char *const names[] = {"stdin", "stdout", "stderr", NULL};
  int fd = lua_type(L, 1) == LUA_TSTRING ? luaL_checkoption(L, 1, NULL, names)
                                          : (int)luaL_optinteger(L, 1, 0);
  lua_pushboolean(L, isatty(fd) && getenv("PGTIDE_NO_TTY") == NULL);
  return 1;
}

static int sys_ncpu (lua_State *L) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

static int sys_interrupted (lua_State *L) {
  lua_pushboolean(L, interrupt_requested());
  return 1;
}

static int sys_clear_interrupt (lua_State *L) {
  (void)L;
  interrupt_clear();
  return 0;
}

/* sys.resource(path) -> contents of an embedded (or --lua-path) file, or nil */
static int sys_resource (lua_State *L) {
  if (!host_push_resource(L, luaL_checkstring(L, 1)))
    lua_pushnil(L);
  return 1;
}

/* sys.resources() -> sorted list of the embedded file paths */
static int sys_resources (lua_State *L) {
  const EmbeddedFile *e;
  lua_Integer i = 0;
  lua_newtable(L);
  for (e = embedded_files; e->path != NULL; e++) {
    lua_pushstring(L, e->path);
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

static int sys_realpath (lua_State *L) {
  char out[PATH_MAX];
  const char *path = luaL_checkstring(L, 1);
  if (realpath(path, out) == NULL)
    return fail(L, "cannot resolve", path);
  lua_pushstring(L, out);
  return 1;
}

/*
** sys.lock(path) -> true | nil, err.  Takes an exclusive, non-blocking
** flock on 'path' (created if needed) for the life of the process, so
** two pgtide runs cannot drive the same migration at once.  The lock
** is released by the kernel when the process exits, even on kill -9.
*/
static int sys_lock (lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat sb;
  /* a directory is locked itself: unlike a lock file inside it, it cannot
     be deleted from under a running process while it holds anything */
  int fd = (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
             ? open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
             : open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return fail(L, "cannot open lock file", path);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(fd);
    lua_pushnil(L);
    lua_pushstring(L, e == EWOULDBLOCK ? "locked by another process" : strerror(e));
    return 2;
  }
  lua_pushboolean(L, 1);  /* fd intentionally kept open until exit */
  return 1;
}

/* sys.peak_rss_kb() -> peak resident set size of this process in KiB */
static int sys_peak_rss_kb (lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushinteger(L, (lua_Integer)ru.ru_maxrss);
  return 1;
}

static int sys_hostname (lua_State *L) {
  char name[256];
  if (gethostname(name, sizeof(name)) != 0)
    strlcpy_(name, "localhost", sizeof(name));
  name[sizeof(name) - 1] = '\0';
  lua_pushstring(L, name);
  return 1;
}

static int sys_setenv (lua_State *L) {
  const char *k = luaL_checkstring(L, 1);
  if (lua_isnoneornil(L, 2))
    unsetenv(k);
  else
    setenv(k, luaL_checkstring(L, 2), 1);
  return 0;
}

/* sys.register_secret(value): mask 'value' in every later log line. */
static int sys_register_secret (lua_State *L) {
  if (!lua_isnoneornil(L, 1))
    redact_register(luaL_checkstring(L, 1));
  return 0;
}

/* sys.redact(text) -> text with secrets masked */
static int sys_redact (lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  Buf out = BUF_INIT;
  redact_into(&out, s, n);
  return luax_pushbuf(L, &out);
}

static int sys_version (lua_State *L) {
#ifdef PGTIDE_VERSION
  lua_pushstring(L, PGTIDE_VERSION);
#else
  lua_pushliteral(L, "dev");
#endif
  return 1;
}

static const luaL_Reg sys_funcs[] = {
  {"time", sys_time},
  {"monotonic", sys_monotonic},
  {"sleep", sys_sleep},
  {"write_atomic", sys_write_atomic},
  {"mkdir_p", sys_mkdir_p},
  {"exists", sys_exists},
  {"isdir", sys_isdir},
  {"readfile", sys_readfile},
  {"readdir", sys_readdir},
  {"getpid", sys_getpid},
  {"kill", sys_kill},
  {"isatty", sys_isatty},
  {"ncpu", sys_ncpu},
  {"interrupted", sys_interrupted},
  {"clear_interrupt", sys_clear_interrupt},
  {"resource", sys_resource},
  {"resources", sys_resources},
  {"realpath", sys_realpath},
  {"lock", sys_lock},
  {"peak_rss_kb", sys_peak_rss_kb},
  {"hostname", sys_hostname},
  {"setenv", sys_setenv},
  {"register_secret", sys_register_secret},
  {"redact", sys_redact},
  {"version", sys_version},
  {NULL, NULL}
};

int luaopen_sys (lua_State *L) {
  luaL_newlib(L, sys_funcs);
  return 1;
}
