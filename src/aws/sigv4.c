/*
** sigv4.c
** AWS Signature Version 4 on OpenSSL (see sigv4.h for the rules).  No
** Lua, no I/O: everything here is a pure function of its inputs, so the
** unit tests compare it byte for byte with botocore.
*/
#include "aws/sigv4.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/* Headers botocore never signs (SIGNED_HEADERS_BLACKLIST). */
static const char *const unsigned_headers[] = {
  "connection", "expect", "keep-alive", "proxy-authenticate",
  "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
  "user-agent", "x-amzn-trace-id", NULL
};

void sigv4_hex (const unsigned char *data, size_t n, char *hex) {
  static const char digits[] = "0123456789abcdef";
  size_t i;
  for (i = 0; i < n; i++) {
    hex[2 * i] = digits[data[i] >> 4];
    hex[2 * i + 1] = digits[data[i] & 15];
  }
  hex[2 * n] = '\0';
}

void sigv4_sha256_hex (const void *data, size_t n, char hex[SIGV4_HEX_LEN]) {
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_Digest(data != NULL ? data : "", n, md, &mdlen, EVP_sha256(), NULL);
  sigv4_hex(md, 32, hex);
}

void sigv4_hmac_sha256 (const void *key, size_t keylen, const void *msg, size_t n,
                        unsigned char out[32]) {
  unsigned int outlen = 32;
  HMAC(EVP_sha256(), key, (int)keylen, (const unsigned char *)msg, n, out, &outlen);
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
   "aws4_request") */
void sigv4_signing_key (const char *secret, const char *date8, const char *region,
                        const char *service, unsigned char key[32]) {
  Buf k = BUF_INIT;
  unsigned char a[32], b[32];
  buf_printf(&k, "AWS4%s", secret);
  sigv4_hmac_sha256(k.data, k.len, date8, strlen(date8), a);
  sigv4_hmac_sha256(a, 32, region, strlen(region), b);
  sigv4_hmac_sha256(b, 32, service, strlen(service), a);
  sigv4_hmac_sha256(a, 32, "aws4_request", 12, key);
  OPENSSL_cleanse(k.data, k.len);
  OPENSSL_cleanse(a, sizeof(a));
  OPENSSL_cleanse(b, sizeof(b));
  buf_free(&k);
}

static int unreserved (int c) {
  return isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~';
}

/* Percent-encode every byte but A-Z a-z 0-9 - _ . ~ (and '/' when
   keep_slash), upper-case hex, as SigV4 requires. */
void sigv4_uri_encode (Buf *out, const char *s, size_t n, int keep_slash) {
  static const char digits[] = "0123456789ABCDEF";
  size_t i;
  buf_reserve(out, n);
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (unreserved(c) || (keep_slash && c == '/')) {
      buf_putc(out, (char)c);
    } else {
      char esc[3] = {'%', digits[c >> 4], digits[c & 15]};
      buf_append(out, esc, 3);
    }
  }
}

static int hexval (int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decode %XX escapes; invalid escapes are kept literally. */
void sigv4_uri_decode (Buf *out, const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < n &&
        (hi = hexval((unsigned char)s[i + 1])) >= 0 &&
        (lo = hexval((unsigned char)s[i + 2])) >= 0) {
      buf_putc(out, (char)(hi * 16 + lo));
      i += 2;
    } else {
      buf_putc(out, s[i]);
    }
  }
}

/*
** RFC 3986 remove_dot_segments as botocore does it: split on '/', drop
** empty and "." segments, ".." pops; keep a leading '/' and a trailing
** '/' (when something is left).  An empty path becomes "/".
*/
void sigv4_normalize_path (Buf *out, const char *path, size_t n) {
  size_t *starts, *lens, nseg = 0, i = 0, k;
  if (n == 0) {
    buf_putc(out, '/');
    return;
  }
  starts = xmalloc((n + 1) * sizeof(size_t));
  lens = xmalloc((n + 1) * sizeof(size_t));
  while (i <= n) {
    size_t j = i;
    while (j < n && path[j] != '/')
      j++;
    if (j - i == 2 && path[i] == '.' && path[i + 1] == '.') {
      if (nseg > 0)
        nseg--;
    } else if (j > i && !(j - i == 1 && path[i] == '.')) {
      starts[nseg] = i;
      lens[nseg] = j - i;
      nseg++;
    }
    i = j + 1;
  }
  if (path[0] == '/')
    buf_putc(out, '/');
  for (k = 0; k < nseg; k++) {
    if (k > 0)
      buf_putc(out, '/');
    buf_append(out, path + starts[k], lens[k]);
  }
  if (path[n - 1] == '/' && nseg > 0)
    buf_putc(out, '/');
  free(starts);
  free(lens);
}

typedef struct QueryPair {
  char *name;     /* encoded */
  char *value;    /* encoded */
} QueryPair;

static int cmp_pair (const void *a, const void *b) {
  const QueryPair *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c != 0 ? c : strcmp(x->value, y->value);
}

/* Re-encode one raw "name=value" piece into a pair (decoded first). */
static void encode_piece (const char *s, size_t n, QueryPair *p) {
  const char *eq = memchr(s, '=', n);
  size_t nl = eq != NULL ? (size_t)(eq - s) : n;
  Buf raw = BUF_INIT, enc = BUF_INIT;
  sigv4_uri_decode(&raw, s, nl);
  sigv4_uri_encode(&enc, raw.data != NULL ? raw.data : "", raw.len, 0);
  p->name = xstrdup(buf_cstr(&enc));
  buf_reset(&raw);
  buf_reset(&enc);
  if (eq != NULL)
    sigv4_uri_decode(&raw, eq + 1, n - nl - 1);
  sigv4_uri_encode(&enc, raw.data != NULL ? raw.data : "", raw.len, 0);
  p->value = xstrdup(buf_cstr(&enc));
  buf_free(&raw);
  buf_free(&enc);
}

/* Split a raw query into encoded pairs (empty pieces skipped). */
static QueryPair *split_query (const char *q, size_t n, size_t *count) {
  QueryPair *pairs = NULL;
  size_t np = 0, cap = 0, i = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && q[j] != '&')
      j++;
    if (j > i) {
      if (np == cap) {
        cap = cap ? cap * 2 : 8;
        pairs = xrealloc(pairs, cap * sizeof(QueryPair));
      }
      encode_piece(q + i, j - i, &pairs[np++]);
    }
    i = j + 1;
  }
  *count = np;
  return pairs;
}

static void free_pairs (QueryPair *pairs, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    free(pairs[i].name);
    free(pairs[i].value);
  }
  free(pairs);
}

static void join_sorted (Buf *out, QueryPair *pairs, size_t n) {
  size_t i;
  if (n == 0)
    return;
  qsort(pairs, n, sizeof(QueryPair), cmp_pair);
  for (i = 0; i < n; i++)
    buf_printf(out, "%s%s=%s", i > 0 ? "&" : "", pairs[i].name, pairs[i].value);
}

void sigv4_canonical_query (Buf *out, const char *query, size_t n) {
  size_t np;
  QueryPair *pairs = split_query(query, n, &np);
  join_sorted(out, pairs, np);
  free_pairs(pairs, np);
}

void sigv4_amz_date (time_t t, char out[17]) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

/* Split a URL into scheme, lowercase host[:port] (default port dropped),
   path and query (see sigv4.h); -1 when it cannot be parsed. */
int sigv4_split_url (const char *url, Buf *scheme, Buf *host, Buf *path, Buf *query) {
  const char *p = url, *sep, *auth, *auth_end, *h, *h_end, *port = NULL;
  size_t i;
  if (url == NULL)
    return -1;
  sep = strstr(url, "://");
  if (url[0] != '/') {
    if (sep == NULL || sep == url)
      return -1;
    for (i = 0; url + i < sep; i++)
      buf_putc(scheme, (char)tolower((unsigned char)url[i]));
    auth = sep + 3;
    auth_end = auth + strcspn(auth, "/?#");
    /* strip userinfo */
    h = auth;
    for (p = auth; p < auth_end; p++)
      if (*p == '@')
        h = p + 1;
    h_end = auth_end;
    if (h < auth_end && *h == '[') {
      const char *rb = memchr(h, ']', (size_t)(auth_end - h));
      if (rb == NULL)
        return -1;
      if (rb + 1 < auth_end && rb[1] == ':')
        port = rb + 2;
      h_end = rb + 1;
    } else {
      const char *c = memchr(h, ':', (size_t)(auth_end - h));
      if (c != NULL) {
        port = c + 1;
        h_end = c;
      }
    }
    if (h_end == h)
      return -1;
    for (p = h; p < h_end; p++)
      buf_putc(host, (char)tolower((unsigned char)*p));
    if (port != NULL && port < auth_end) {
      long pn = 0;
      for (p = port; p < auth_end; p++) {
        if (!isdigit((unsigned char)*p) || pn > 65535)
          return -1;
        pn = pn * 10 + (*p - '0');
      }
      if (!((pn == 443 && strcmp(buf_cstr(scheme), "https") == 0) ||
            (pn == 80 && strcmp(buf_cstr(scheme), "http") == 0)))
        buf_printf(host, ":%ld", pn);
    }
    p = auth_end;
  }
  i = strcspn(p, "?#");
  buf_append(path, p, i);
  p += i;
  if (*p == '?') {
    p++;
    buf_append(query, p, strcspn(p, "#"));
  }
  return 0;
}

typedef struct HdrEntry {
  char *name;        /* lowercase */
  const char *value; /* borrowed */
  size_t order;
} HdrEntry;

static int cmp_hdr (const void *a, const void *b) {
  const HdrEntry *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  if (c != 0)
    return c;
  return x->order < y->order ? -1 : (x->order > y->order);
}

/* Trimall: strip, collapse whitespace runs to one space. */
static void trimall (Buf *out, const char *v) {
  int space = 0, started = 0;
  for (; *v; v++) {
    if (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r' || *v == '\v' || *v == '\f') {
      space = 1;
    } else {
      if (space && started)
        buf_putc(out, ' ');
      buf_putc(out, *v);
      space = 0;
      started = 1;
    }
  }
}

static int is_unsigned_header (const char *lname) {
  int i;
  for (i = 0; unsigned_headers[i] != NULL; i++)
    if (strcmp(lname, unsigned_headers[i]) == 0)
      return 1;
  return 0;
}

static char *lower_dup (const char *s) {
  char *d = xstrdup(s), *p;
  for (p = d; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  return d;
}

static void add_out_header (SigV4Result *out, const char *name, const char *value) {
  out->headers = xrealloc(out->headers, (out->nheaders + 1) * sizeof(SigV4OutHeader));
  out->headers[out->nheaders].name = xstrdup(name);
  out->headers[out->nheaders].value = xstrdup(value);
  out->nheaders++;
}

/* Free everything a successful sigv4_sign() allocated. */
void sigv4_result_free (SigV4Result *res) {
  size_t i;
  for (i = 0; i < res->nheaders; i++) {
    free(res->headers[i].name);
    free(res->headers[i].value);
  }
  free(res->headers);
  free(res->url);
  free(res->canonical_request);
  free(res->string_to_sign);
  memset(res, 0, sizeof(*res));
}

static const char *find_header (const SigV4Request *req, const char *name) {
  size_t i;
  for (i = 0; i < req->nheaders; i++)
    if (strcasecmp(req->headers[i].name, name) == 0)
      return req->headers[i].value;
  return NULL;
}

static int fail (char *err, size_t errlen, const char *msg) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", msg);
  return -1;
}

/*
** Build the canonical header block and the signed-header list from the
** caller's headers plus the ones signing adds ('extra', already final).
*/
static void canonical_headers (const SigV4Request *req, const SigV4Header *extra,
                               size_t nextra, const char *host, Buf *block,
                               Buf *signed_list) {
  size_t n = 0, i, cap = req->nheaders + nextra + 1;
  HdrEntry *h = xmalloc(cap * sizeof(HdrEntry));
  int have_host = 0;
  for (i = 0; i < req->nheaders; i++) {
    char *ln = lower_dup(req->headers[i].name);
    int drop = is_unsigned_header(ln) || strcmp(ln, "authorization") == 0;
    /* headers the signer sets itself replace the caller's */
    if (!drop && !req->presign && strcmp(ln, "x-amz-date") == 0)
      drop = 1;
    if (!drop && !req->presign && req->session_token != NULL &&
        req->session_token[0] != '\0' && strcmp(ln, "x-amz-security-token") == 0)
      drop = 1;
    if (drop) {
      free(ln);
      continue;
    }
    if (strcmp(ln, "host") == 0)
      have_host = 1;
    h[n].name = ln;
    h[n].value = req->headers[i].value != NULL ? req->headers[i].value : "";
    h[n].order = n;
    n++;
  }
  for (i = 0; i < nextra; i++) {
    h[n].name = lower_dup(extra[i].name);
    h[n].value = extra[i].value;
    h[n].order = n;
    n++;
  }
  if (!have_host) {
    h[n].name = xstrdup("host");
    h[n].value = host;
    h[n].order = n;
    n++;
  }
  qsort(h, n, sizeof(HdrEntry), cmp_hdr);
  for (i = 0; i < n; i++) {
    int first = (i == 0 || strcmp(h[i].name, h[i - 1].name) != 0);
    int last = (i + 1 == n || strcmp(h[i].name, h[i + 1].name) != 0);
    if (first) {
      buf_printf(block, "%s:", h[i].name);
      if (signed_list->len > 0)
        buf_putc(signed_list, ';');
      buf_puts(signed_list, h[i].name);
    } else {
      buf_putc(block, ',');
    }
    trimall(block, h[i].value);
    if (last)
      buf_putc(block, '\n');
  }
  for (i = 0; i < n; i++)
    free(h[i].name);
  free(h);
}

/*
** The payload hash, in this order: the caller's x-amz-content-sha256
** header (trimmed), an explicit req->payload_hash, UNSIGNED-PAYLOAD for
** presigned S3 URLs, else the SHA-256 of the body.  Sets *add_header
** when an X-Amz-Content-SHA256 header must be added and signed (S3 and
** explicit hashes, header signing only).
*/
static void payload_hash (const SigV4Request *req, char *out, size_t outlen, int *add_header) {
  const char *hv = find_header(req, "x-amz-content-sha256");
  *add_header = 0;
  if (hv != NULL) {
    Buf t = BUF_INIT;
    trimall(&t, hv);
    snprintf(out, outlen, "%s", buf_cstr(&t));
    buf_free(&t);
  } else if (req->payload_hash != NULL) {
    snprintf(out, outlen, "%s", req->payload_hash);
    *add_header = !req->presign;
  } else if (req->presign && req->s3) {
    snprintf(out, outlen, "%s", SIGV4_UNSIGNED_PAYLOAD);
  } else {
    sigv4_sha256_hex(req->body, req->body_len, out);
    *add_header = req->s3 && !req->presign;
  }
}

/* The canonical URI: S3 paths as sent (encoded once, not normalised),
   other services' normalised and encoded a second time. */
static void canonical_uri (const SigV4Request *req, Buf *path, Buf *uri) {
  if (req->s3) {
    if (path->len == 0)
      buf_putc(uri, '/');
    else
      buf_append(uri, path->data, path->len);
  } else {
    Buf norm = BUF_INIT;
    sigv4_normalize_path(&norm, buf_cstr(path), path->len);
    sigv4_uri_encode(uri, buf_cstr(&norm), norm.len, 1);
    buf_free(&norm);
  }
}

/*
** The query string of a presigned URL, before the signature: the
** caller's parameters (normalised, in their order), then X-Amz-Algorithm,
** -Credential, -Date, -Expires, -SignedHeaders and -Security-Token.
*/
static void presign_query (const SigV4Request *req, Buf *query, const char *scope,
                           const char *amzdate, const Buf *signed_list, const char *token,
                           Buf *out) {
  Buf cred = BUF_INIT;
  QueryPair *pairs;
  size_t np, i;
  pairs = split_query(buf_cstr(query), query->len, &np);
  for (i = 0; i < np; i++)
    buf_printf(out, "%s=%s&", pairs[i].name, pairs[i].value);
  free_pairs(pairs, np);
  buf_puts(out, "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=");
  buf_printf(&cred, "%s/%s", req->access_key_id, scope);
  sigv4_uri_encode(out, cred.data, cred.len, 0);
  buf_free(&cred);
  buf_printf(out, "&X-Amz-Date=%s&X-Amz-Expires=%ld&X-Amz-SignedHeaders=", amzdate,
             req->expires > 0 ? req->expires : 3600L);
  sigv4_uri_encode(out, signed_list->data, signed_list->len, 0);
  if (token != NULL) {
    buf_puts(out, "&X-Amz-Security-Token=");
    sigv4_uri_encode(out, token, strlen(token), 0);
  }
}

/* The presigned URL: the request URL up to its query, then the query
   and the signature.  Caller frees. */
static char *presigned_url (const char *url, const char *query, const char *signature) {
  Buf u = BUF_INIT;
  const char *rest = url;
  if (url[0] != '/') {            /* absolute: keep scheme and host as given */
    const char *a = strstr(url, "://") + 3;
    rest = a + strcspn(a, "/?#");
    buf_append(&u, url, (size_t)(rest - url));
  }
  buf_append(&u, rest, strcspn(rest, "?#"));
  buf_printf(&u, "?%s&X-Amz-Signature=%s", query, signature);
  return buf_steal(&u);
}

/*
** Sign a request (see sigv4.h): canonical request, string to sign,
** signature, then either the headers to add or the presigned URL.  The
** secret and the signing key never leave this function (the key is
** cleansed).  Returns 0, or -1 with a message in err (out is then empty).
*/
int sigv4_sign (const SigV4Request *req, SigV4Result *out, char *err, size_t errlen) {
  Buf scheme = BUF_INIT, host = BUF_INIT, path = BUF_INIT, query = BUF_INIT;
  Buf cr = BUF_INIT, uri = BUF_INIT, hdrs = BUF_INIT, signed_list = BUF_INIT;
  Buf cq = BUF_INIT, scope = BUF_INIT, sts = BUF_INIT, pq = BUF_INIT;
  SigV4Header extra[3];
  size_t nextra = 0, i;
  char amzdate[17], date8[9], payload[SIGV4_HEX_LEN + 64], crhash[SIGV4_HEX_LEN];
  unsigned char key[32], sig[32];
  const char *token;
  int rc = -1, add_sha_header;

  memset(out, 0, sizeof(*out));
  if (req->method == NULL || req->url == NULL || req->service == NULL ||
      req->region == NULL || req->service[0] == '\0' || req->region[0] == '\0')
    return fail(err, errlen, "sigv4: method, url, service and region are required");
  if (req->access_key_id == NULL || req->secret_access_key == NULL ||
      req->access_key_id[0] == '\0' || req->secret_access_key[0] == '\0')
    return fail(err, errlen, "sigv4: credentials are required (access key id and secret)");
  if (sigv4_split_url(req->url, &scheme, &host, &path, &query) != 0) {
    fail(err, errlen, "sigv4: cannot parse the URL");
    goto done;
  }
  if (host.len == 0 && find_header(req, "host") == NULL) {
    fail(err, errlen, "sigv4: a relative URL needs a Host header");
    goto done;
  }
  token = (req->session_token != NULL && req->session_token[0] != '\0')
        ? req->session_token : NULL;
  sigv4_amz_date(req->time, amzdate);
  memcpy(date8, amzdate, 8);
  date8[8] = '\0';
  buf_printf(&scope, "%s/%s/%s/aws4_request", date8, req->region, req->service);
  payload_hash(req, payload, sizeof(payload), &add_sha_header);

  /* the headers signing adds (header mode only) */
  if (!req->presign) {
    extra[nextra].name = "X-Amz-Date";
    extra[nextra++].value = amzdate;
    if (token != NULL) {
      extra[nextra].name = "X-Amz-Security-Token";
      extra[nextra++].value = token;
    }
    if (add_sha_header) {
      extra[nextra].name = "X-Amz-Content-SHA256";
      extra[nextra++].value = payload;
    }
  }
  canonical_headers(req, extra, nextra, buf_cstr(&host), &hdrs, &signed_list);
  canonical_uri(req, &path, &uri);
  if (req->presign) {     /* the auth parameters are part of the canonical query */
    presign_query(req, &query, buf_cstr(&scope), amzdate, &signed_list, token, &pq);
    sigv4_canonical_query(&cq, pq.data, pq.len);
  } else {
    sigv4_canonical_query(&cq, buf_cstr(&query), query.len);
  }

  /* canonical request, string to sign, signature */
  for (i = 0; req->method[i]; i++)
    buf_putc(&cr, (char)toupper((unsigned char)req->method[i]));
  buf_printf(&cr, "\n%s\n%s\n%s\n%s\n%s", buf_cstr(&uri), buf_cstr(&cq), buf_cstr(&hdrs),
             buf_cstr(&signed_list), payload);
  sigv4_sha256_hex(cr.data, cr.len, crhash);
  buf_printf(&sts, "AWS4-HMAC-SHA256\n%s\n%s\n%s", amzdate, buf_cstr(&scope), crhash);
  sigv4_signing_key(req->secret_access_key, date8, req->region, req->service, key);
  sigv4_hmac_sha256(key, 32, sts.data, sts.len, sig);
  OPENSSL_cleanse(key, sizeof(key));
  sigv4_hex(sig, 32, out->signature);

  if (req->presign) {
    out->url = presigned_url(req->url, buf_cstr(&pq), out->signature);
  } else {
    Buf auth = BUF_INIT;
    for (i = 0; i < nextra; i++)
      add_out_header(out, extra[i].name, extra[i].value);
    buf_printf(&auth, "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s",
               req->access_key_id, buf_cstr(&scope), buf_cstr(&signed_list),
               out->signature);
    add_out_header(out, "Authorization", buf_cstr(&auth));
    buf_free(&auth);
  }
  out->canonical_request = buf_steal(&cr);
  out->string_to_sign = buf_steal(&sts);
  rc = 0;

done:
  buf_free(&scheme); buf_free(&host); buf_free(&path); buf_free(&query);
  buf_free(&cr); buf_free(&uri); buf_free(&hdrs); buf_free(&signed_list);
  buf_free(&cq); buf_free(&scope); buf_free(&sts); buf_free(&pq);
  return rc;
}
