/*
** repl.c
** Lua module "repl": the read-eval-print loop behind `pgtide repl`,
** following lua.c's algorithm: try "return <line>" first so expressions
** print their value, otherwise compile the line as a statement and keep
** reading continuation lines while the chunk is incomplete (its syntax
** error ends at <eof>).  libedit provides line editing and persistent
** history on a TTY; with piped stdin lines are read with fgets and no
** prompt is printed, so transcripts can be tested.
**
**   repl.loop{ env = table, print = function(...), prompt = "pgtide> ",
**              prompt2 = "pgtide>> ", history = path }
**
** Each chunk runs with 'env' as its _ENV and its results go to 'print'.
** Errors are printed (redacted) and the loop continues; it returns at
** end of input.
*/
#include <editline/readline.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/host.h"
#include "host/luax.h"
#include "host/modules.h"
#include "util/interrupt.h"
#include "util/redact.h"

#define EOFMARK "<eof>"

typedef struct Repl {
  int tty;
  const char *prompt, *prompt2;
} Repl;

/* Read one line without its newline (any length); NULL at end of
   input.  Caller frees. */
static char *read_line (Repl *r, int first) {
  char *buf = NULL;
  size_t cap = 0;
  ssize_t n;
  if (r->tty)
    return readline(first ? r->prompt : r->prompt2);
  n = getline(&buf, &cap, stdin);
  if (n < 0) {
    free(buf);
    return NULL;
  }
  if (n > 0 && buf[n - 1] == '\n')
    buf[n - 1] = '\0';
  return buf;
}

/* Is the status a syntax error that only lacks more input? */
static int incomplete (lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    size_t lmark = sizeof(EOFMARK) - 1;
    if (lmsg >= lmark && strcmp(msg + lmsg - lmark, EOFMARK) == 0) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

/* Try to compile "return <line>;"; pushes the chunk and returns LUA_OK,
   or pops nothing and returns an error status. */
static int try_return (lua_State *L, const char *line) {
  int status;
  const char *code = lua_pushfstring(L, "return %s;", line);
  status = luaL_loadbuffer(L, code, strlen(code), "=stdin");
  lua_remove(L, -2);  /* remove the modified code */
  if (status != LUA_OK)
    lua_pop(L, 1);
  return status;
}

/*
** Read and compile one complete statement.  Pushes the compiled chunk
** and returns LUA_OK, pushes an error message and returns its status, or
** returns -1 at end of input (nothing pushed).  The source text is left
** in *text for the history (caller frees).
*/
static int load_statement (lua_State *L, Repl *r, char **text) {
  char *line = read_line(r, 1);
  luaL_Buffer b;
  int status;
  *text = NULL;
  if (line == NULL)
    return -1;
  if (try_return(L, line) == LUA_OK) {
    *text = line;
    return LUA_OK;
  }
  lua_pushstring(L, line);
  free(line);
  for (;;) {
    size_t len;
    const char *code = lua_tolstring(L, -1, &len);
    status = luaL_loadbuffer(L, code, len, "=stdin");
    if (!incomplete(L, status))
      break;
    line = read_line(r, 0);
    if (line == NULL) {  /* end of input inside a statement */
      luaL_loadbuffer(L, code, len, "=stdin");  /* reproduce the error */
      status = LUA_ERRSYNTAX;
      break;
    }
    luaL_buffinit(L, &b);
    lua_pushvalue(L, -2);
    luaL_addvalue(&b);
    luaL_addchar(&b, '\n');
    luaL_addstring(&b, line);
    free(line);
    luaL_pushresult(&b);
    lua_remove(L, -2);  /* the shorter code */
  }
  *text = strdup(lua_tostring(L, -2));
  lua_remove(L, -2);  /* the code; the chunk or error stays */
  return status;
}

/*
** Print an error: its message, and from its traceback only the frames in
** code typed at the prompt (the host's own frames are noise there).
*/
static void report (lua_State *L) {
  char *masked, *tb, *line;
  const char *msg = luaL_tolstring(L, -1, NULL);
  masked = redact_str(msg);
  tb = strstr(masked, "\nstack traceback:");
  if (tb != NULL) {
    *tb = '\0';
    fprintf(stdout, "%s\n", masked);
    for (line = strtok(tb + 1, "\n"); line != NULL; line = strtok(NULL, "\n"))
      if (strstr(line, "stdin:") != NULL && strstr(line, "in main chunk") == NULL)
        fprintf(stdout, "  %s\n", line + strspn(line, "\t "));
  } else
    fprintf(stdout, "%s\n", masked);
  fflush(stdout);
  free(masked);
  lua_pop(L, 2);
}

/*
** repl.loop(options): the loop itself (see the top of this file).
** Returns at end of input; raises only on bad options.  Stack while it
** runs: 1 options, 2 env, 3 print, then the chunk being run.
*/
static int repl_loop (lua_State *L) {
  Repl r;
  const char *history;
  char *text;
  int status;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  r.prompt = luax_opt_string(L, 1, "prompt", "pgtide> ");
  r.prompt2 = luax_opt_string(L, 1, "prompt2", "pgtide>> ");
  history = luax_opt_string(L, 1, "history", NULL);
  lua_getfield(L, 1, "env");        /* 2 */
  if (!lua_istable(L, 2))
    return luaL_error(L, "option 'env' must be a table");
  if (luax_opt_function(L, 1, "print") == 0)   /* 3 */
    return luaL_error(L, "option 'print' is required");
  r.tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  if (r.tty) {
    using_history();
    if (history != NULL)
      read_history(history);
  }
  while ((status = load_statement(L, &r, &text)) != -1) {
    if (status == LUA_OK) {
      int base = lua_gettop(L);  /* the chunk */
      if (r.tty && text != NULL && text[0] != '\0')
        add_history(text);
      lua_pushvalue(L, 2);
      if (lua_setupvalue(L, -2, 1) == NULL)  /* _ENV = env */
        lua_pop(L, 1);
      status = host_docall(L, 0, LUA_MULTRET);
      if (status == LUA_OK) {
        int n = lua_gettop(L) - base + 1;
        if (n > 0) {
          lua_pushvalue(L, 3);
          lua_insert(L, base);
          status = host_docall(L, n, 0);
          if (status != LUA_OK)
            report(L);
        }
      } else
        report(L);
    } else
      report(L);
    free(text);
    interrupt_clear();
    lua_settop(L, 3);
  }
  if (r.tty) {
    fputc('\n', stdout);
    if (history != NULL) {
      stifle_history(1000);
      write_history(history);
    }
  }
  return 0;
}

static const luaL_Reg funcs[] = {
  {"loop", repl_loop},
  {NULL, NULL}
};

int luaopen_repl (lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
