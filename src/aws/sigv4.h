/*
** sigv4.h
** AWS Signature Version 4 (header and presigned-query forms), Lua-free,
** on OpenSSL.  The request is described as it goes on the wire: the URL
** carries the path and query string already percent-encoded once, the
** headers are the ones that will be sent.  sigv4_sign() computes the
** canonical request, the string to sign and the signature, and returns
** either the headers to add (X-Amz-Date, X-Amz-Security-Token,
** X-Amz-Content-SHA256 for S3, Authorization) or the presigned URL.
**
** Rules (those of botocore's SigV4Auth / S3SigV4Auth / SigV4QueryAuth):
**   - path: non-S3 paths are normalised (dot segments and empty segments
**     removed) and percent-encoded a second time; S3 paths are used as is;
**   - query: names and values decoded then re-encoded with the RFC 3986
**     unreserved set, sorted by name then value, "name=" for no value;
**   - headers: names lowercased; values trimmed, internal whitespace runs
**     collapsed; repeated headers joined with ',' in their original order;
**     hop-by-hop headers, User-Agent and X-Amzn-Trace-Id never signed;
**     Host derived from the URL (without a default port) unless given;
**   - payload: SHA-256 of the body, or the value of an X-Amz-Content-SHA256
**     header the caller sends (e.g. UNSIGNED-PAYLOAD), or payload_hash;
**     presigned S3 URLs always use UNSIGNED-PAYLOAD.
*/
#ifndef PGTIDE_SIGV4_H
#define PGTIDE_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "util/buf.h"

#define SIGV4_HEX_LEN 65                 /* 64 hex digits + NUL */
#define SIGV4_UNSIGNED_PAYLOAD "UNSIGNED-PAYLOAD"
#define SIGV4_EMPTY_SHA256 \
  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

typedef struct SigV4Header {     /* input header (borrowed strings) */
  const char *name;
  const char *value;
} SigV4Header;

typedef struct SigV4OutHeader {  /* header to add (owned strings) */
  char *name;
  char *value;
} SigV4OutHeader;

typedef struct SigV4Request {
  const char *method;
  const char *url;                 /* "https://host[:port]/path?query" or "/path?query" */
  const SigV4Header *headers;      /* as sent; duplicates allowed */
  size_t nheaders;
  const char *body;                /* may be NULL when body_len is 0 */
  size_t body_len;
  const char *service;             /* signing name: "dms", "states", "s3"... */
  const char *region;              /* signing region */
  const char *access_key_id;
  const char *secret_access_key;
  const char *session_token;       /* NULL or "" for long-term keys */
  time_t time;                     /* signing time (UTC seconds) */
  int presign;                     /* 1: query-string signature */
  long expires;                    /* presign: X-Amz-Expires (seconds) */
  int s3;                          /* S3 rules: no path normalisation... */
  const char *payload_hash;        /* NULL: SHA-256 of the body */
} SigV4Request;

typedef struct SigV4Result {
  SigV4OutHeader *headers;         /* header mode: headers to add */
  size_t nheaders;
  char *url;                       /* presign mode: the signed URL (owned) */
  char *canonical_request;         /* owned */
  char *string_to_sign;            /* owned */
  char signature[SIGV4_HEX_LEN];
} SigV4Result;

/*
** Sign 'req'.  On success fills 'out' (free with sigv4_result_free) and
** returns 0; on a malformed request (bad URL, missing credentials) writes
** a message to err and returns -1 with 'out' empty.
*/
int sigv4_sign(const SigV4Request *req, SigV4Result *out, char *err, size_t errlen);
void sigv4_result_free(SigV4Result *res);

/* Primitives, exposed for tests and for the protocol code. */
void sigv4_hex(const unsigned char *data, size_t n, char *hex);   /* 2n+1 bytes */
void sigv4_sha256_hex(const void *data, size_t n, char hex[SIGV4_HEX_LEN]);
void sigv4_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
                       unsigned char out[32]);
void sigv4_signing_key(const char *secret, const char *date8, const char *region,
                       const char *service, unsigned char key[32]);
/* Percent-encode every byte but A-Z a-z 0-9 - _ . ~ (and '/' if keep_slash). */
void sigv4_uri_encode(Buf *out, const char *s, size_t n, int keep_slash);
/* Decode %XX escapes (invalid escapes are kept literally). */
void sigv4_uri_decode(Buf *out, const char *s, size_t n);
/* botocore's remove_dot_segments: also drops empty segments ("//"). */
void sigv4_normalize_path(Buf *out, const char *path, size_t n);
/* Canonical query string of a raw (wire) query, without the '?'. */
void sigv4_canonical_query(Buf *out, const char *query, size_t n);
/* "YYYYMMDDTHHMMSSZ" (17 bytes with the NUL). */
void sigv4_amz_date(time_t t, char out[17]);

/* Split a URL into scheme, host[:port] for the Host header (lowercase,
   default port dropped), path (without query) and query (without '?').
   Relative URLs ("/p?q") give empty scheme and host.  Returns -1 when the
   URL cannot be parsed.  All outputs are appended to the given buffers. */
int sigv4_split_url(const char *url, Buf *scheme, Buf *host, Buf *path, Buf *query);

#endif
