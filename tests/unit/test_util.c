/*
** test_util.c
** Unit tests for the Lua-free utilities: Buf, redaction, log formatting.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
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

int main (void) {
  RUN_TEST(buf_grows_and_formats);
  RUN_TEST(redact_masks_secret_shapes);
  RUN_TEST(redact_masks_registered_values);
  RUN_TEST(log_lines_are_redacted_in_the_file);
  RUN_TEST(status_lines_fit_the_terminal);
  return TEST_SUMMARY();
}
