/*
** test.h
** A tiny harness for the Lua-free C units.  Each test is a function run
** by RUN_TEST; checks record failures with file:line and the test keeps
** going.  Output is one line per test, in the format tests/run.sh counts:
**   ok - name        not ok - name        skip - name: reason
** main() ends with `return TEST_SUMMARY();` (non-zero when any failed).
** TEST_ONLY=substring in the environment runs only the tests whose
** function name contains it (the others are not run nor reported).
*/
#ifndef PGTIDE_TEST_H
#define PGTIDE_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failed_checks;   /* failures inside the current test */
static int test_npass, test_nfail, test_nskip;
static const char *test_skip_reason;

#define CHECK(cond) do { \
    if (!(cond)) { \
      test_failed_checks++; \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    } \
  } while (0)

#define CHECK_INT(got, want) do { \
    long long got_ = (long long)(got), want_ = (long long)(want); \
    if (got_ != want_) { \
      test_failed_checks++; \
      fprintf(stderr, "%s:%d: %s = %lld, want %lld\n", \
              __FILE__, __LINE__, #got, got_, want_); \
    } \
  } while (0)

#define CHECK_STR(got, want) do { \
    const char *got_ = (got), *want_ = (want); \
    if (got_ == NULL || want_ == NULL || strcmp(got_, want_) != 0) { \
      test_failed_checks++; \
      fprintf(stderr, "%s:%d: %s = \"%s\", want \"%s\"\n", __FILE__, __LINE__, \
              #got, got_ ? got_ : "(null)", want_ ? want_ : "(null)"); \
    } \
  } while (0)

#define CHECK_MEM(got, want, n) do { \
    if (memcmp((got), (want), (n)) != 0) { \
      test_failed_checks++; \
      fprintf(stderr, "%s:%d: %s differs from %s\n", __FILE__, __LINE__, #got, #want); \
    } \
  } while (0)

/* Inside a test: mark it skipped with a reason and return. */
#define SKIP(reason) do { test_skip_reason = (reason); return; } while (0)

#define RUN_TEST(fn) do { \
    const char *only_ = getenv("TEST_ONLY"); \
    if (only_ != NULL && *only_ != '\0' && strstr(#fn, only_) == NULL) \
      break; \
    test_failed_checks = 0; \
    test_skip_reason = NULL; \
    fn(); \
    if (test_skip_reason != NULL) { \
      test_nskip++; \
      printf("skip - %s: %s\n", #fn, test_skip_reason); \
    } else if (test_failed_checks == 0) { \
      test_npass++; \
      printf("ok - %s\n", #fn); \
    } else { \
      test_nfail++; \
      printf("not ok - %s\n", #fn); \
    } \
    fflush(stdout); \
  } while (0)

#define TEST_SUMMARY() \
  (fprintf(stderr, "%d passed, %d failed, %d skipped\n", \
           test_npass, test_nfail, test_nskip), test_nfail != 0)

#endif
