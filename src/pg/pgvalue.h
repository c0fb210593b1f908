/*
** pgvalue.h
** Conversions between PostgreSQL's text format and plain C values, used
** by the pg Lua binding and anything else that reads query results:
** bytea hex decoding and encoding, array literal quoting, exact number
** formatting and the names of built-in type OIDs.
** No Lua and no libpq connection here: everything is unit-tested
** directly (tests/unit/test_pgvalue.c).
*/
#ifndef PGTIDE_PGVALUE_H
#define PGTIDE_PGVALUE_H

#include <stddef.h>

#include "util/buf.h"

/* Built-in type OIDs the conversions care about (pg_type.dat). */
#define PGV_BOOLOID 16
#define PGV_BYTEAOID 17
#define PGV_INT8OID 20
#define PGV_INT2OID 21
#define PGV_INT4OID 23
#define PGV_TEXTOID 25
#define PGV_OIDOID 26
#define PGV_JSONOID 114
#define PGV_FLOAT4OID 700
#define PGV_FLOAT8OID 701
#define PGV_BYTEAARRAYOID 1001
#define PGV_NUMERICOID 1700
#define PGV_JSONBOID 3802

/* How a result value of a given type is handed to Lua. */
typedef enum PgValueKind {
  PGV_KIND_TEXT = 0,     /* the text representation, unchanged */
  PGV_KIND_BOOL,         /* 't' / 'f' */
  PGV_KIND_INTEGER,      /* int2, int4, int8, oid: a 64-bit integer */
  PGV_KIND_FLOAT,        /* float4, float8: a double (exact round trip) */
  PGV_KIND_BYTEA         /* hex text decoded to raw bytes */
} PgValueKind;

PgValueKind pgvalue_kind(unsigned int type_oid);

/* The SQL name of a built-in type ("int8", "_text" is "text[]"), or NULL
   when the OID is not one of the built-in types listed in pgvalue.c. */
const char *pgvalue_type_name(unsigned int type_oid);

/* Decode bytea output ("\x4142" hex format, or the legacy escape format)
   into raw bytes appended to 'out'.  Returns 0, or -1 on malformed input
   (out then holds a partial value). */
int pgvalue_bytea_decode(const char *in, size_t len, Buf *out);

/* Append the hex input form of raw bytes ("\x" followed by hex digits). */
void pgvalue_bytea_encode(Buf *out, const unsigned char *in, size_t len);

/* Parse an integer result ("-9223372036854775808").  Returns 0 and sets
   *v, or -1 when the text is not a complete in-range integer. */
int pgvalue_parse_int(const char *s, long long *v);

/* Parse a float result, including "NaN", "Infinity" and "-Infinity".
   Returns 0 and sets *v, or -1. */
int pgvalue_parse_float(const char *s, double *v);

/* Format a double so PostgreSQL reads back the same value: shortest
   exact "%.17g" form, and NaN / Infinity / -Infinity spelled as the
   server expects.  'dst' should hold at least 32 bytes. */
void pgvalue_format_float(char *dst, size_t dstlen, double v);

/* Append one element of an array literal, double-quoted with '"' and
   '\' escaped, so any text (including "NULL", braces, commas and
   spaces) is read back as itself. */
void pgvalue_array_quote(Buf *out, const char *s, size_t len);

#endif
