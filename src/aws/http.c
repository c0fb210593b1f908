/*
** http.c
** libcurl wrapper (see http.h).  One CURL easy handle per HttpClient,
** reset before each request so no option leaks between requests while
** the connection cache survives.
*/
#include "aws/http.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "util/interrupt.h"

#ifdef PGTIDE_VERSION
#define HTTP_VERSION_TAG PGTIDE_VERSION
#else
#define HTTP_VERSION_TAG "dev"
#endif

struct HttpClient {
  CURL *curl;
};

typedef struct Transfer {
  HttpResponse *resp;
  size_t max;
  int too_large;
} Transfer;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void global_init (void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* A client holding one reusable curl handle (connection reuse); NULL
   when libcurl cannot be initialised. */
HttpClient *http_client_new (void) {
  HttpClient *c;
  pthread_once(&init_once, global_init);
  c = xcalloc(1, sizeof(HttpClient));
  c->curl = curl_easy_init();
  if (c->curl == NULL) {
    free(c);
    return NULL;
  }
  return c;
}

void http_client_free (HttpClient *c) {
  if (c == NULL)
    return;
  curl_easy_cleanup(c->curl);
  free(c);
}

/* Free a response's headers and body; it is empty afterwards. */
void http_response_free (HttpResponse *resp) {
  size_t i;
  for (i = 0; i < resp->nheaders; i++) {
    free(resp->headers[i].name);
    free(resp->headers[i].value);
  }
  free(resp->headers);
  buf_free(&resp->body);
  memset(resp, 0, sizeof(*resp));
}

const char *http_field (const HttpField *h, size_t n, const char *name) {
  size_t i;
  for (i = 0; i < n; i++)
    if (strcasecmp(h[i].name, name) == 0)
      return h[i].value;
  return NULL;
}

/* curl write callback: append to the body, refusing more than t->max. */
static size_t on_body (char *p, size_t size, size_t nmemb, void *ud) {
  Transfer *t = ud;
  size_t n = size * nmemb;
  if (t->resp->body.len + n > t->max) {
    t->too_large = 1;
    return 0;   /* makes libcurl fail with CURLE_WRITE_ERROR */
  }
  buf_append(&t->resp->body, p, n);
  return n;
}

static void clear_headers (HttpResponse *r) {
  size_t i;
  for (i = 0; i < r->nheaders; i++) {
    free(r->headers[i].name);
    free(r->headers[i].value);
  }
  r->nheaders = 0;
}

/* One header line; a new status line (after 100 Continue) starts over. */
static size_t on_header (char *p, size_t size, size_t nmemb, void *ud) {
  Transfer *t = ud;
  size_t n = size * nmemb, k, v, e;
  if (n >= 5 && strncmp(p, "HTTP/", 5) == 0) {
    clear_headers(t->resp);
    return n;
  }
  for (k = 0; k < n && p[k] != ':'; k++)
    ;
  if (k == 0 || k >= n)
    return n;
  for (v = k + 1; v < n && (p[v] == ' ' || p[v] == '\t'); v++)
    ;
  for (e = n; e > v && (p[e - 1] == '\r' || p[e - 1] == '\n' || p[e - 1] == ' ' ||
                        p[e - 1] == '\t'); e--)
    ;
  t->resp->headers = xrealloc(t->resp->headers, (t->resp->nheaders + 1) * sizeof(HttpField));
  t->resp->headers[t->resp->nheaders].name = xstrndup(p, k);
  t->resp->headers[t->resp->nheaders].value = xstrndup(p + v, e - v);
  t->resp->nheaders++;
  return n;
}

static int on_progress (void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                        curl_off_t ulnow) {
  (void)ud; (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
  return interrupt_requested() ? 1 : 0;
}

static int has_header (const HttpRequest *req, const char *name) {
  size_t i;
  for (i = 0; i < req->nheaders; i++)
    if (strcasecmp(req->headers[i].name, name) == 0)
      return 1;
  return 0;
}

/* Which libcurl failures are timeouts, connection errors (retried) or
   interrupts. */
static HttpResult classify (CURLcode rc) {
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return HTTP_ERR_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT: case CURLE_SEND_ERROR: case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING: case CURLE_SSL_CONNECT_ERROR: case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
      return HTTP_ERR_CONNECT;
    case CURLE_ABORTED_BY_CALLBACK:
      return HTTP_ERR_INTERRUPTED;
    default:
      return HTTP_ERR_OTHER;
  }
}

/*
** The request's header lines for libcurl, plus empty "Expect:" and
** "Content-Type:" lines that stop libcurl adding its own (they would be
** sent unsigned).  NULL when out of memory.
*/
static struct curl_slist *header_list (const HttpRequest *req, int has_body) {
  struct curl_slist *hl = NULL, *n;
  size_t i;
  for (i = 0; i < req->nheaders; i++) {
    Buf line = BUF_INIT;
    if (req->headers[i].value == NULL || req->headers[i].value[0] == '\0')
      buf_printf(&line, "%s;", req->headers[i].name);   /* "Name;" sends an empty value */
    else
      buf_printf(&line, "%s: %s", req->headers[i].name, req->headers[i].value);
    n = curl_slist_append(hl, line.data);
    buf_free(&line);
    if (n == NULL) {
      curl_slist_free_all(hl);
      return NULL;
    }
    hl = n;
  }
  if (!has_header(req, "Expect") && (n = curl_slist_append(hl, "Expect:")) != NULL)
    hl = n;
  if (has_body && !has_header(req, "Content-Type") &&
      (n = curl_slist_append(hl, "Content-Type:")) != NULL)
    hl = n;
  return hl;
}

/* The method and body: HEAD without a body, other methods than GET and
   POST by name, a body (possibly empty) for POST, PUT and PATCH. */
static void set_method (CURL *h, const HttpRequest *req, int has_body) {
  if (strcmp(req->method, "HEAD") == 0) {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (strcmp(req->method, "GET") != 0 || req->body != NULL) {
    if (strcmp(req->method, "POST") != 0)
      curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
    if (has_body) {
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
      curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body != NULL ? req->body : "");
    }
  }
}

/*
** One HTTP exchange on the client's reused handle (see http.h): no
** redirects, http(s) only, bounded time and response size, aborted on
** SIGINT.  Returns HTTP_OK when a response arrived (any status; resp
** filled, caller frees), otherwise the kind of failure with a message
** in err.
*/
HttpResult http_do (HttpClient *c, const HttpRequest *req, HttpResponse *resp,
                    char *err, size_t errlen) {
  CURL *h = c->curl;
  struct curl_slist *hl;
  char errbuf[CURL_ERROR_SIZE];
  Transfer t;
  CURLcode rc;
  HttpResult result = HTTP_OK;
  int has_body = req->body != NULL || strcmp(req->method, "POST") == 0 ||
                 strcmp(req->method, "PUT") == 0 || strcmp(req->method, "PATCH") == 0;

  memset(resp, 0, sizeof(*resp));
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  hl = header_list(req, has_body);
  if (hl == NULL) {
    if (err != NULL)
      snprintf(err, errlen, "out of memory building headers");
    return HTTP_ERR_OTHER;
  }
  curl_easy_reset(h);
  errbuf[0] = '\0';
  t.resp = resp;
  t.max = req->max_response ? req->max_response : (size_t)256 << 20;
  t.too_large = 0;
  curl_easy_setopt(h, CURLOPT_URL, req->url);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 60000L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   req->connect_timeout_ms > 0 ? req->connect_timeout_ms : 10000L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "pgtide/" HTTP_VERSION_TAG);   /* never signed */
  if (req->ca_bundle != NULL && req->ca_bundle[0] != '\0')
    curl_easy_setopt(h, CURLOPT_CAINFO, req->ca_bundle);
  set_method(h, req, has_body);

  rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp->status);
  curl_easy_getinfo(h, CURLINFO_TOTAL_TIME, &resp->seconds);
  if (t.too_large) {
    result = HTTP_ERR_TOO_LARGE;
    if (err != NULL)
      snprintf(err, errlen, "response larger than %zu bytes", t.max);
  } else if (rc != CURLE_OK) {
    result = classify(rc);
    if (err != NULL)
      snprintf(err, errlen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
  }
  curl_slist_free_all(hl);
  /* never leave pointers to our stack in the reusable handle */
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
  return result;
}
