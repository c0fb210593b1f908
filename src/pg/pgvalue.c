/*
** pgvalue.c
** Text-format value conversions (see pgvalue.h).
*/
#include "pg/pgvalue.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct TypeName {
  unsigned int oid;
  const char *name;
} TypeName;

/* Built-in types of PostgreSQL 15 (pg_catalog, OID < 10000), sorted by
   OID; arrays are written "elem[]".  Generated from pg_type. */
static const TypeName type_names[] = {
  {16, "bool"},
  {17, "bytea"},
  {18, "char"},
  {19, "name"},
  {20, "int8"},
  {21, "int2"},
  {22, "int2vector"},
  {23, "int4"},
  {24, "regproc"},
  {25, "text"},
  {26, "oid"},
  {27, "tid"},
  {28, "xid"},
  {29, "cid"},
  {30, "oidvector"},
  {114, "json"},
  {142, "xml"},
  {143, "xml[]"},
  {199, "json[]"},
  {269, "table_am_handler"},
  {271, "xid8[]"},
  {325, "index_am_handler"},
  {600, "point"},
  {601, "lseg"},
  {602, "path"},
  {603, "box"},
  {604, "polygon"},
  {628, "line"},
  {629, "line[]"},
  {650, "cidr"},
  {651, "cidr[]"},
  {700, "float4"},
  {701, "float8"},
  {705, "unknown"},
  {718, "circle"},
  {719, "circle[]"},
  {774, "macaddr8"},
  {775, "macaddr8[]"},
  {790, "money"},
  {791, "money[]"},
  {829, "macaddr"},
  {869, "inet"},
  {1000, "bool[]"},
  {1001, "bytea[]"},
  {1002, "char[]"},
  {1003, "name[]"},
  {1005, "int2[]"},
  {1006, "int2vector[]"},
  {1007, "int4[]"},
  {1008, "regproc[]"},
  {1009, "text[]"},
  {1010, "tid[]"},
  {1011, "xid[]"},
  {1012, "cid[]"},
  {1013, "oidvector[]"},
  {1014, "bpchar[]"},
  {1015, "varchar[]"},
  {1016, "int8[]"},
  {1017, "point[]"},
  {1018, "lseg[]"},
  {1019, "path[]"},
  {1020, "box[]"},
  {1021, "float4[]"},
  {1022, "float8[]"},
  {1027, "polygon[]"},
  {1028, "oid[]"},
  {1033, "aclitem"},
  {1034, "aclitem[]"},
  {1040, "macaddr[]"},
  {1041, "inet[]"},
  {1042, "bpchar"},
  {1043, "varchar"},
  {1082, "date"},
  {1083, "time"},
  {1114, "timestamp"},
  {1115, "timestamp[]"},
  {1182, "date[]"},
  {1183, "time[]"},
  {1184, "timestamptz"},
  {1185, "timestamptz[]"},
  {1186, "interval"},
  {1187, "interval[]"},
  {1231, "numeric[]"},
  {1263, "cstring[]"},
  {1266, "timetz"},
  {1270, "timetz[]"},
  {1560, "bit"},
  {1561, "bit[]"},
  {1562, "varbit"},
  {1563, "varbit[]"},
  {1700, "numeric"},
  {1790, "refcursor"},
  {2201, "refcursor[]"},
  {2202, "regprocedure"},
  {2203, "regoper"},
  {2204, "regoperator"},
  {2205, "regclass"},
  {2206, "regtype"},
  {2207, "regprocedure[]"},
  {2208, "regoper[]"},
  {2209, "regoperator[]"},
  {2210, "regclass[]"},
  {2211, "regtype[]"},
  {2249, "record"},
  {2275, "cstring"},
  {2276, "any"},
  {2277, "anyarray"},
  {2278, "void"},
  {2279, "trigger"},
  {2280, "language_handler"},
  {2281, "internal"},
  {2283, "anyelement"},
  {2287, "record[]"},
  {2776, "anynonarray"},
  {2949, "txid_snapshot[]"},
  {2950, "uuid"},
  {2951, "uuid[]"},
  {2970, "txid_snapshot"},
  {3115, "fdw_handler"},
  {3310, "tsm_handler"},
  {3500, "anyenum"},
  {3614, "tsvector"},
  {3615, "tsquery"},
  {3642, "gtsvector"},
  {3643, "tsvector[]"},
  {3644, "gtsvector[]"},
  {3645, "tsquery[]"},
  {3734, "regconfig"},
  {3735, "regconfig[]"},
  {3769, "regdictionary"},
  {3770, "regdictionary[]"},
  {3802, "jsonb"},
  {3807, "jsonb[]"},
  {3831, "anyrange"},
  {3838, "event_trigger"},
  {3904, "int4range"},
  {3905, "int4range[]"},
  {3906, "numrange"},
  {3907, "numrange[]"},
  {3908, "tsrange"},
  {3909, "tsrange[]"},
  {3910, "tstzrange"},
  {3911, "tstzrange[]"},
  {3912, "daterange"},
  {3913, "daterange[]"},
  {3926, "int8range"},
  {3927, "int8range[]"},
  {4072, "jsonpath"},
  {4073, "jsonpath[]"},
  {4089, "regnamespace"},
  {4090, "regnamespace[]"},
  {4096, "regrole"},
  {4097, "regrole[]"},
  {4191, "regcollation"},
  {4192, "regcollation[]"},
  {4451, "int4multirange"},
  {4532, "nummultirange"},
  {4533, "tsmultirange"},
  {4534, "tstzmultirange"},
  {4535, "datemultirange"},
  {4536, "int8multirange"},
  {4537, "anymultirange"},
  {4538, "anycompatiblemultirange"},
  {5069, "xid8"},
  {5077, "anycompatible"},
  {5078, "anycompatiblearray"},
  {5079, "anycompatiblenonarray"},
  {5080, "anycompatiblerange"},
  {6150, "int4multirange[]"},
  {6151, "nummultirange[]"},
  {6152, "tsmultirange[]"},
  {6153, "tstzmultirange[]"},
  {6155, "datemultirange[]"},
  {6157, "int8multirange[]"},
};

/* How a result column of this type maps to Lua (see pgvalue.h). */
PgValueKind pgvalue_kind (unsigned int type_oid) {
  switch (type_oid) {
    case PGV_BOOLOID: return PGV_KIND_BOOL;
    case PGV_INT2OID: case PGV_INT4OID: case PGV_INT8OID: case PGV_OIDOID:
      return PGV_KIND_INTEGER;
    case PGV_FLOAT4OID: case PGV_FLOAT8OID: return PGV_KIND_FLOAT;
    case PGV_BYTEAOID: return PGV_KIND_BYTEA;
    default: return PGV_KIND_TEXT;
  }
}

/* The SQL name of a built-in type ("_text" is "text[]"), or NULL. */
const char *pgvalue_type_name (unsigned int type_oid) {
  size_t lo = 0, hi = sizeof(type_names) / sizeof(type_names[0]);
  while (lo < hi) {  /* binary search: the table is sorted by OID */
    size_t mid = lo + (hi - lo) / 2;
    if (type_names[mid].oid == type_oid)
      return type_names[mid].name;
    if (type_names[mid].oid < type_oid)
      lo = mid + 1;
    else
      hi = mid;
  }
  return NULL;
}

static int hexval (int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/*
** Hex format is what servers send since 9.0 (bytea_output = hex); the
** escape format (octal \ooo and \\) is still decoded for servers set to
** bytea_output = escape.
*/
int pgvalue_bytea_decode (const char *in, size_t len, Buf *out) {
  size_t i;
  buf_reserve(out, len / 2 + 1);
  if (len >= 2 && in[0] == '\\' && in[1] == 'x') {
    for (i = 2; i < len; ) {
      int hi, lo;
      if (in[i] == ' ' || in[i] == '\n' || in[i] == '\t' || in[i] == '\r') {
        i++;
        continue;
      }
      if (i + 1 >= len)
        return -1;
      hi = hexval((unsigned char)in[i]);
      lo = hexval((unsigned char)in[i + 1]);
      if (hi < 0 || lo < 0)
        return -1;
      buf_putc(out, (char)(hi * 16 + lo));
      i += 2;
    }
    return 0;
  }
  for (i = 0; i < len; ) {
    if (in[i] != '\\') {
      buf_putc(out, in[i++]);
    } else if (i + 1 < len && in[i + 1] == '\\') {
      buf_putc(out, '\\');
      i += 2;
    } else if (i + 3 < len && in[i + 1] >= '0' && in[i + 1] <= '3' &&
               in[i + 2] >= '0' && in[i + 2] <= '7' && in[i + 3] >= '0' && in[i + 3] <= '7') {
      buf_putc(out, (char)((in[i + 1] - '0') * 64 + (in[i + 2] - '0') * 8 + (in[i + 3] - '0')));
      i += 4;
    } else {
      return -1;
    }
  }
  return 0;
}

/* Append \x and the hex digits of raw bytes (bytea's input form). */
void pgvalue_bytea_encode (Buf *out, const unsigned char *in, size_t len) {
  static const char digits[] = "0123456789abcdef";
  size_t i;
  buf_reserve(out, 2 + 2 * len);
  buf_puts(out, "\\x");
  for (i = 0; i < len; i++) {
    out->data[out->len++] = digits[in[i] >> 4];
    out->data[out->len++] = digits[in[i] & 15];
  }
  out->data[out->len] = '\0';
}

/* A complete, in-range decimal integer: 0 and *v, else -1. */
int pgvalue_parse_int (const char *s, long long *v) {
  char *end;
  long long r;
  if (s == NULL || *s == '\0')
    return -1;
  errno = 0;
  r = strtoll(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return -1;
  *v = r;
  return 0;
}

/* A float result, "NaN" and "[-]Infinity" included: 0 and *v, else -1. */
int pgvalue_parse_float (const char *s, double *v) {
  char *end;
  if (s == NULL || *s == '\0')
    return -1;
  if (strcmp(s, "NaN") == 0) { *v = NAN; return 0; }
  if (strcmp(s, "Infinity") == 0) { *v = INFINITY; return 0; }
  if (strcmp(s, "-Infinity") == 0) { *v = -INFINITY; return 0; }
  errno = 0;
  *v = strtod(s, &end);
  if (*end != '\0')
    return -1;
  /* ERANGE on denormals still yields the nearest value: keep it */
  return 0;
}

/* The shortest text that reads back as exactly v, NaN and infinities
   spelled as PostgreSQL expects. */
void pgvalue_format_float (char *dst, size_t dstlen, double v) {
  int prec;
  if (isnan(v)) {
    snprintf(dst, dstlen, "NaN");
    return;
  }
  if (isinf(v)) {
    snprintf(dst, dstlen, "%s", v > 0 ? "Infinity" : "-Infinity");
    return;
  }
  /* shortest precision that reads back exactly */
  for (prec = 15; prec <= 17; prec++) {
    snprintf(dst, dstlen, "%.*g", prec, v);
    if (strtod(dst, NULL) == v)
      return;
  }
}

/* Append one array-literal element, quoted so any text reads back as
   itself. */
void pgvalue_array_quote (Buf *out, const char *s, size_t len) {
  size_t i;
  buf_putc(out, '"');
  for (i = 0; i < len; i++) {
    if (s[i] == '"' || s[i] == '\\')
      buf_putc(out, '\\');
    buf_putc(out, s[i]);
  }
  buf_putc(out, '"');
}
