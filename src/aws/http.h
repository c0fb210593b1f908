/*
** http.h
** A minimal HTTP client over libcurl for the AWS module: one request at a
** time on a reusable handle (keep-alive), exact control of the headers
** sent (libcurl's default Content-Type and Expect are suppressed), binary
** bodies, response headers and body captured, bounded response size, and
** transport failures classified (timeout, connection, other) so the
** retry policy can decide.  A SIGINT (util/interrupt.h) aborts a transfer.
*/
#ifndef PGTIDE_HTTP_H
#define PGTIDE_HTTP_H

#include <stddef.h>

#include "util/buf.h"

typedef struct HttpHeader {      /* request header (borrowed strings) */
  const char *name;
  const char *value;
} HttpHeader;

typedef struct HttpField {       /* response header (owned strings) */
  char *name;
  char *value;
} HttpField;

typedef struct HttpRequest {
  const char *method;            /* GET POST PUT DELETE HEAD PATCH */
  const char *url;
  const HttpHeader *headers;
  size_t nheaders;
  const char *body;
  size_t body_len;
  long timeout_ms;               /* whole transfer; 0: 60 s */
  long connect_timeout_ms;       /* 0: 10 s */
  const char *ca_bundle;         /* NULL: system default */
  size_t max_response;           /* 0: 256 MiB */
} HttpRequest;

typedef struct HttpResponse {
  long status;
  HttpField *headers;
  size_t nheaders;
  Buf body;
  double seconds;                /* total time */
} HttpResponse;

typedef enum HttpResult {
  HTTP_OK = 0,                   /* a response arrived (any status) */
  HTTP_ERR_TIMEOUT,              /* connect or transfer timed out */
  HTTP_ERR_CONNECT,              /* refused, unreachable, DNS, reset, TLS */
  HTTP_ERR_TOO_LARGE,            /* response exceeded max_response */
  HTTP_ERR_INTERRUPTED,          /* SIGINT/SIGTERM */
  HTTP_ERR_OTHER
} HttpResult;

typedef struct HttpClient HttpClient;

HttpClient *http_client_new(void);
void http_client_free(HttpClient *c);

/*
** Perform one request.  'resp' is always initialised (free it with
** http_response_free, whatever the result); on failure err gets a short
** message naming the cause.
*/
HttpResult http_do(HttpClient *c, const HttpRequest *req, HttpResponse *resp,
                   char *err, size_t errlen);
void http_response_free(HttpResponse *resp);

/* Case-insensitive lookup of a response header (first match) or NULL. */
const char *http_field(const HttpField *h, size_t n, const char *name);

#endif
