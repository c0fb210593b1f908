/*
** test_pgvalue.c
** Unit tests for src/pg/pgvalue.c (text-format conversions) and the
** Lua-free helpers of src/pg/pgconn.c (error kinds, password split).
*/
#include <math.h>
#include <stdlib.h>

#include "pg/pgconn.h"
#include "pg/pgvalue.h"
#include "test.h"

static void test_bytea_hex_roundtrip (void) {
  unsigned char all[256];
  Buf hex = BUF_INIT, back = BUF_INIT;
  int i;
  for (i = 0; i < 256; i++)
    all[i] = (unsigned char)i;
  pgvalue_bytea_encode(&hex, all, sizeof(all));
  CHECK_INT(hex.len, 2 + 512);
  CHECK(strncmp(hex.data, "\\x000102", 8) == 0);
  CHECK(strcmp(hex.data + hex.len - 4, "feff") == 0);
  CHECK_INT(pgvalue_bytea_decode(hex.data, hex.len, &back), 0);
  CHECK_INT(back.len, 256);
  CHECK_MEM(back.data, all, 256);
  buf_free(&hex);
  buf_free(&back);
}

static void test_bytea_decode_forms (void) {
  Buf b = BUF_INIT;
  CHECK_INT(pgvalue_bytea_decode("\\x", 2, &b), 0);
  CHECK_INT(b.len, 0);
  buf_reset(&b);
  CHECK_INT(pgvalue_bytea_decode("\\x4A4b", 6, &b), 0);
  CHECK_STR(buf_cstr(&b), "JK");
  buf_reset(&b);
  /* escape format: octal and doubled backslash */
  CHECK_INT(pgvalue_bytea_decode("a\\000b\\\\c\\377", 13, &b), 0);
  CHECK_INT(b.len, 6);
  CHECK_MEM(b.data, "a\0b\\c\377", 6);
  buf_reset(&b);
  CHECK_INT(pgvalue_bytea_decode("\\x4", 3, &b), -1);
  buf_reset(&b);
  CHECK_INT(pgvalue_bytea_decode("\\xzz", 4, &b), -1);
  buf_reset(&b);
  CHECK_INT(pgvalue_bytea_decode("a\\9", 3, &b), -1);
  buf_free(&b);
}

static void test_parse_int (void) {
  long long v = 0;
  CHECK_INT(pgvalue_parse_int("9223372036854775807", &v), 0);
  CHECK(v == 9223372036854775807LL);
  CHECK_INT(pgvalue_parse_int("-9223372036854775808", &v), 0);
  CHECK(v == (-9223372036854775807LL - 1));
  CHECK_INT(pgvalue_parse_int("9223372036854775808", &v), -1);
  CHECK_INT(pgvalue_parse_int("", &v), -1);
  CHECK_INT(pgvalue_parse_int("12x", &v), -1);
}

static void test_floats (void) {
  char buf[32];
  double v = 0;
  CHECK_INT(pgvalue_parse_float("NaN", &v), 0);
  CHECK(isnan(v));
  CHECK_INT(pgvalue_parse_float("-Infinity", &v), 0);
  CHECK(isinf(v) && v < 0);
  CHECK_INT(pgvalue_parse_float("1.5", &v), 0);
  CHECK(v == 1.5);
  CHECK_INT(pgvalue_parse_float("1.5x", &v), -1);
  pgvalue_format_float(buf, sizeof(buf), 0.1);
  CHECK_STR(buf, "0.1");
  pgvalue_format_float(buf, sizeof(buf), 1.0 / 3.0);
  CHECK(strtod(buf, NULL) == 1.0 / 3.0);
  pgvalue_format_float(buf, sizeof(buf), 3.0);
  CHECK_STR(buf, "3");
  pgvalue_format_float(buf, sizeof(buf), INFINITY);
  CHECK_STR(buf, "Infinity");
  pgvalue_format_float(buf, sizeof(buf), -INFINITY);
  CHECK_STR(buf, "-Infinity");
  pgvalue_format_float(buf, sizeof(buf), NAN);
  CHECK_STR(buf, "NaN");
}

static void test_array_quote (void) {
  Buf b = BUF_INIT;
  pgvalue_array_quote(&b, "a\"b\\c", 5);
  CHECK_STR(buf_cstr(&b), "\"a\\\"b\\\\c\"");
  buf_reset(&b);
  pgvalue_array_quote(&b, "NULL", 4);
  CHECK_STR(buf_cstr(&b), "\"NULL\"");
  buf_free(&b);
}

static void test_type_names (void) {
  CHECK_STR(pgvalue_type_name(20), "int8");
  CHECK_STR(pgvalue_type_name(1009), "text[]");
  CHECK_STR(pgvalue_type_name(3802), "jsonb");
  CHECK_STR(pgvalue_type_name(16), "bool");
  CHECK(pgvalue_type_name(16385) == NULL);
  CHECK_INT(pgvalue_kind(PGV_INT8OID), PGV_KIND_INTEGER);
  CHECK_INT(pgvalue_kind(PGV_NUMERICOID), PGV_KIND_TEXT);
  CHECK_INT(pgvalue_kind(PGV_BYTEAOID), PGV_KIND_BYTEA);
}

static void test_error_kinds (void) {
  CHECK_STR(pgconn_error_kind("FATAL:  password authentication failed for user \"x\""), "auth");
  CHECK_STR(pgconn_error_kind("FATAL:  database \"nope\" does not exist"), "database");
  CHECK_STR(pgconn_error_kind("connection to server at \"h\", port 1 failed: Connection refused"),
            "unreachable");
  CHECK_STR(pgconn_error_kind("SSL error: certificate verify failed"), "tls");
  CHECK_STR(pgconn_error_kind("no pg_hba.conf entry for host \"1.2.3.4\", SSL off"), "hba");
  CHECK(pgconn_error_kind("something else") == NULL);
}

static void test_strip_password (void) {
  char err[256], *pw = NULL, *rest;
  rest = pgconn_strip_password("host=h port=5 password='se cr\\'et' dbname=d", &pw, err, sizeof(err));
  CHECK(rest != NULL && strstr(rest, "password") == NULL);
  CHECK(rest != NULL && strstr(rest, "host='h'") != NULL && strstr(rest, "dbname='d'") != NULL);
  CHECK_STR(pw, "se cr'et");
  free(rest);
  free(pw);
  rest = pgconn_strip_password("postgresql://u:p%40ss@h:5433/db?sslmode=require", &pw, err, sizeof(err));
  CHECK(rest != NULL && strstr(rest, "p@ss") == NULL && strstr(rest, "sslmode='require'") != NULL);
  CHECK_STR(pw, "p@ss");
  free(rest);
  free(pw);
  rest = pgconn_strip_password("mydb", &pw, err, sizeof(err));
  CHECK_STR(rest, "dbname='mydb'");
  CHECK(pw == NULL);
  free(rest);
  rest = pgconn_strip_password("host=h bogus=1", &pw, err, sizeof(err));
  CHECK(rest == NULL);
}

int main (void) {
  RUN_TEST(test_bytea_hex_roundtrip);
  RUN_TEST(test_bytea_decode_forms);
  RUN_TEST(test_parse_int);
  RUN_TEST(test_floats);
  RUN_TEST(test_array_quote);
  RUN_TEST(test_type_names);
  RUN_TEST(test_error_kinds);
  RUN_TEST(test_strip_password);
  return TEST_SUMMARY();
}
