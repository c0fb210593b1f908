/*
** test_util.c
** Unit tests for the Lua-free utilities: Buf, redaction, log formatting,
** atomic file replacement, and the shared SQL text helpers (pg/pgsql.c).
*/
#include <stdio.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "pg/pgsql.h"
#include "util/atomic_file.h"
#include "util/buf.h"
#include "util/log.h"
#include "util/redact.h"

static void buf_grows_and_formats (void) {
  Buf b = BUF_INIT;
  int i;
  CHECK_STR(buf_cstr(&b), "");
  for (i = 0; i < 1000; i++)
    buf_printf(&b, "%d,", i);
  CHECK(b.len > 3000);
  CHECK(strncmp(b.data, "0,1,2,", 6) == 0);
  CHECK(b.data[b.len] == '\0');
  buf_reset(&b);
  buf_append(&b, "a\0b", 3);
  CHECK_INT(b.len, 3);
  CHECK(memcmp(b.data, "a\0b", 3) == 0);
  buf_free(&b);
  {
    char small[4];
    CHECK_INT(strlcpy_(small, "abcdef", sizeof(small)), 6);
    CHECK_STR(small, "abc");
  }
}

static void check_redact (const char *in, const char *want) {
  char *got = redact_str(in);
  CHECK_STR(got, want);
  free(got);
}

static void redact_masks_secret_shapes (void) {
  check_redact("host=a password=hunter2 dbname=b", "host=a password=*** dbname=b");
  check_redact("host=a password = 'a b\\'c' x=1", "host=a password = '***' x=1");
  check_redact("PGPASSWORD=abc123 psql", "PGPASSWORD=*** psql");
  check_redact("postgresql://u:p%40ss@h:5432/d", "postgresql://u:***@h:5432/d");
  check_redact("see http://example.com:80/x", "see http://example.com:80/x");
  check_redact("Authorization: AWS4-HMAC-SHA256 Credential=A/B, Signature=c\nnext",
               "Authorization: ***\nnext");
  check_redact("X-Amz-Security-Token: FQoG//abc", "X-Amz-Security-Token: ***");
  check_redact("&X-Amz-Security-Token=FQoG%2Fabc&X-Amz-Date=1", "&X-Amz-Security-Token=***&X-Amz-Date=1");
  check_redact("\"SecretAccessKey\": \"wJalr/K7\"", "\"SecretAccessKey\": \"***\"");
  check_redact("<SessionToken>tok</SessionToken>", "<SessionToken>***</SessionToken>");
  check_redact("aws_secret_access_key = abc/def", "aws_secret_access_key = ***");
  check_redact("passwordless login", "passwordless login");
  check_redact("the password is wrong", "the password is wrong");
  check_redact("NextToken=x", "NextToken=x");
}

static void redact_masks_registered_values (void) {
  redact_clear();
  redact_register("abc");  /* too short: ignored */
  redact_register("s3cr3t-value");
  check_redact("abc and s3cr3t-value and s3cr3t-value!", "abc and *** and ***!");
  redact_register("s3cr3t");  /* a prefix of another secret: the longest wins */
  check_redact("x s3cr3t-value y s3cr3t z", "x *** y *** z");
  redact_clear();
  check_redact("s3cr3t-value", "s3cr3t-value");
}

static void log_lines_are_redacted_in_the_file (void) {
  char path[] = "/tmp/pgtide-logtest-XXXXXX";
  int fd = mkstemp(path);
  FILE *f;
  char line[512];
  CHECK(fd >= 0);
  close(fd);
  log_set_stderr(0);
  CHECK_INT(log_open_file(path), 0);
  redact_register("topsecret-77");
  log_set_context("schema");
  log_info("connecting with password=%s to %s", "hunter22", "db");
  log_warn("token topsecret-77 seen");
  log_debug("not shown at INFO");
  log_close_file();
  log_set_context(NULL);
  f = fopen(path, "r");
  CHECK(f != NULL);
  if (f != NULL) {
    CHECK(fgets(line, sizeof(line), f) != NULL);
    CHECK(strstr(line, " INFO  [schema] connecting with password=*** to db\n") != NULL);
    CHECK(strstr(line, "hunter22") == NULL);
    CHECK(fgets(line, sizeof(line), f) != NULL);
    CHECK(strstr(line, "WARN  [schema] token *** seen") != NULL);
    CHECK(fgets(line, sizeof(line), f) == NULL);
    fclose(f);
  }
  unlink(path);
  redact_clear();
  log_set_stderr(1);
}

/* Status lines are cut to the terminal width, never wrapping. */
static void status_lines_fit_the_terminal (void) {
  CHECK_INT(log_fit_width("abcdef", 80), 6);
  CHECK_INT(log_fit_width("abcdef", 6), 5);      /* the last column stays free */
  CHECK_INT(log_fit_width("abcdef", 7), 6);
  CHECK_INT(log_fit_width("abc\ndef", 80), 3);   /* one line only */
  /* "é" is two bytes and one column: never cut inside a character */
  CHECK_INT(log_fit_width("\xc3\xa9\xc3\xa9\xc3\xa9x", 3), 4);
  CHECK_INT(log_fit_width("\xc3\xa9\xc3\xa9\xc3\xa9x", 80), 7);
  CHECK_INT(log_fit_width("", 80), 0);
  CHECK_INT(log_fit_width("abc", 0), 1);
}

static void sql_text_helpers (void) {
  Buf b = BUF_INIT;
  const char *v[] = {"a", "x\"y\\z", ""};
  pgsql_quote_ident(&b, "Mixed\"Case");
  buf_putc(&b, '.');
  pgsql_quote_ident_n(&b, "tablexyz", 5);
  CHECK_STR(buf_cstr(&b), "\"Mixed\"\"Case\".\"table\"");
  buf_reset(&b);
  pgsql_quote_literal(&b, "it's \\");
  CHECK_STR(buf_cstr(&b), "'it''s \\'");
  buf_reset(&b);
  pgsql_text_array(&b, v, 3, 1);
  CHECK_STR(buf_cstr(&b), "{\"a\",\"x\\\"y\\\\z\",\"\"}");
  buf_reset(&b);
  pgsql_text_array(&b, v, 0, 1);
  CHECK_STR(buf_cstr(&b), "{}");
  buf_free(&b);
  CHECK(pgsql_retryable("40P01", PGSQL_RETRY_LOCK));
  CHECK(pgsql_retryable("55P03", PGSQL_RETRY_LOCK));
  CHECK(!pgsql_retryable("08006", PGSQL_RETRY_LOCK));
  CHECK(pgsql_retryable("08006", PGSQL_RETRY_TRANSIENT));
  CHECK(pgsql_retryable("57P01", PGSQL_RETRY_TRANSIENT));
  CHECK(pgsql_retryable("55006", PGSQL_RETRY_TRANSIENT));
  CHECK(!pgsql_retryable("23505", PGSQL_RETRY_TRANSIENT));
  CHECK(!pgsql_retryable("", PGSQL_RETRY_TRANSIENT));
  CHECK(!pgsql_retryable(NULL, PGSQL_RETRY_LOCK));
}

/* The number of entries in dir other than . and .. */
static int count_entries (const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  if (d == NULL)
    return -1;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
      n++;
  closedir(d);
  return n;
}

static void atomic_file_replaces_whole_files (void) {
  char dir[] = "/tmp/pgtide-atomic.XXXXXX", path[256], err[256], got[64];
  FILE *f;
  size_t n;
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof(path), "%s/state.json", dir);
  CHECK_INT(atomic_file_write(path, "first", 5, 0600, ATOMIC_FILE_DURABLE, err, sizeof(err)), 0);
  CHECK_INT(atomic_file_write(path, "second", 6, 0600, 0, err, sizeof(err)), 0);
  f = fopen(path, "r");
  CHECK(f != NULL);
  n = f != NULL ? fread(got, 1, sizeof(got) - 1, f) : 0;
  got[n] = '\0';
  if (f != NULL)
    fclose(f);
  CHECK_STR(got, "second");
  CHECK_INT(count_entries(dir), 1);   /* no temporary file left */
  snprintf(path, sizeof(path), "%s/missing/state.json", dir);
  CHECK_INT(atomic_file_write(path, "x", 1, 0600, ATOMIC_FILE_DURABLE, err, sizeof(err)), -1);
  CHECK(strstr(err, "cannot create") != NULL && strstr(err, "No such file") != NULL);
  snprintf(path, sizeof(path), "%s/state.json", dir);
  unlink(path);
  rmdir(dir);
}

int main (void) {
  RUN_TEST(buf_grows_and_formats);
  RUN_TEST(sql_text_helpers);
  RUN_TEST(atomic_file_replaces_whole_files);
  RUN_TEST(redact_masks_secret_shapes);
  RUN_TEST(redact_masks_registered_values);
  RUN_TEST(log_lines_are_redacted_in_the_file);
  RUN_TEST(status_lines_fit_the_terminal);
  return TEST_SUMMARY();
}
