/*
** request.c
** AWS sessions and the signed request loop with standard-mode retries
** (see request.h).
*/
#include "aws/request.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "aws/sigv4.h"
#include "util/interrupt.h"
#include "util/log.h"
#include "util/redact.h"

#define QUOTA_MAX 500
#define RETRY_COST 5
#define TIMEOUT_RETRY_COST 10
#define REFRESH_ADVISORY 900.0   /* refresh this long before expiry */
#define REFRESH_MANDATORY 600.0  /* below this, a failed refresh is fatal */
#define LOG_BODY_MAX 8192

static double now_seconds (void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* xorshift64*: jitter only, not security. */
static double next_random (AwsSession *s) {
  s->rng ^= s->rng >> 12;
  s->rng ^= s->rng << 25;
  s->rng ^= s->rng >> 27;
  return (double)((s->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static int config_int (const AwsConfig *c, const char *env, const char *key) {
  const char *v = getenv(env);
  if (v == NULL || v[0] == '\0')
    v = aws_profile_get(c, NULL, key);
  return v != NULL ? atoi(v) : 0;
}

/*
** Load the configuration (profile, region, endpoints), create the HTTP
** client and take the retry settings (standard mode defaults).  Static
** credentials in the options are used as given.  0, or -1 with err (the
** session is then freed).
*/
int aws_session_init (AwsSession *s, const AwsSessionOptions *o, AwsError *err) {
  const char *region, *ca;
  memset(s, 0, sizeof(*s));
  if (aws_config_load(&s->cfg, o->profile, err) != 0) {
    aws_config_free(&s->cfg);
    return -1;
  }
  region = aws_config_region(&s->cfg, o->region);
  s->region = region != NULL ? xstrdup(region) : NULL;
  s->http = http_client_new();
  if (s->http == NULL) {
    aws_error_set(err, "HttpError", 0, "cannot initialise libcurl");
    aws_session_free(s);
    return -1;
  }
  s->max_attempts = o->max_attempts > 0 ? o->max_attempts
                  : config_int(&s->cfg, "AWS_MAX_ATTEMPTS", "max_attempts");
  if (s->max_attempts <= 0)
    s->max_attempts = 3;
  s->retry_base = o->retry_base > 0 ? o->retry_base : 1.0;
  s->retry_cap = o->retry_cap > 0 ? o->retry_cap : 20.0;
  s->quota = QUOTA_MAX;
  s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 60000;
  s->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000;
  ca = getenv("AWS_CA_BUNDLE");
  if (ca == NULL || ca[0] == '\0')
    ca = aws_profile_get(&s->cfg, NULL, "ca_bundle");
  s->ca_bundle = (ca != NULL && ca[0] != '\0') ? xstrdup(ca) : NULL;
  s->rng = ((unsigned long long)time(NULL) << 20) ^ (unsigned long long)getpid() ^
           (unsigned long long)(uintptr_t)s;
  if (s->rng == 0)
    s->rng = 88172645463325252ULL;
  if (o->access_key_id != NULL || o->secret_access_key != NULL) {
    if (o->access_key_id == NULL || o->secret_access_key == NULL ||
        o->access_key_id[0] == '\0' || o->secret_access_key[0] == '\0') {
      aws_error_set(err, "PartialCredentials", 0, "explicit credentials need both "
                    "access_key_id and secret_access_key");
      aws_session_free(s);
      return -1;
    }
    aws_creds_set(&s->creds, xstrdup(o->access_key_id), xstrdup(o->secret_access_key),
                  o->session_token ? xstrdup(o->session_token) : NULL, 0, "explicit");
    s->fixed_creds = 1;
  }
  return 0;
}

void aws_session_free (AwsSession *s) {
  aws_creds_clear(&s->creds);
  aws_config_free(&s->cfg);
  http_client_free(s->http);
  free(s->region);
  free(s->ca_bundle);
  memset(s, 0, sizeof(*s));
}

/* The session's credentials: resolved on first use, refreshed 15 minutes
   before they expire (a failed refresh is tolerated until 10 minutes
   before).  *c points into the session. */
int aws_session_credentials (AwsSession *s, const AwsCreds **out, AwsError *err) {
  double now = now_seconds() + s->clock_skew;
  AwsCreds fresh;
  AwsError e2;
  if (s->creds.access_key_id != NULL &&
      (s->fixed_creds || s->creds.expiration == 0 ||
       now < s->creds.expiration - REFRESH_ADVISORY)) {
    *out = &s->creds;
    return 0;
  }
  memset(&fresh, 0, sizeof(fresh));
  memset(&e2, 0, sizeof(e2));
  if (aws_creds_resolve(s, &fresh, &e2) != 0) {
    aws_creds_clear(&fresh);
    if (s->creds.access_key_id != NULL && now < s->creds.expiration - REFRESH_MANDATORY) {
      log_warn("aws: refreshing credentials (%s) failed, using the current ones for "
               "%.0f more minutes: %s", s->creds.source,
               (s->creds.expiration - now) / 60, e2.message);
      *out = &s->creds;
      return 0;
    }
    memcpy(err->code, e2.code, sizeof(err->code));
    memcpy(err->message, e2.message, sizeof(err->message));
    err->status = e2.status;
    err->retryable = 0;
    return -1;
  }
  if (s->creds.access_key_id != NULL)
    log_info("aws: credentials refreshed (%s)", fresh.source);
  else if (log_topic("aws"))
    log_info("aws: using credentials from %s", fresh.source);
  aws_creds_clear(&s->creds);
  s->creds = fresh;
  *out = &s->creds;
  return 0;
}

/* Topic logging: DEBUG when the level shows it, else INFO (asked for). */
static LogLevel topic_level (void) {
  return log_get_level() <= LOG_DEBUG ? LOG_DEBUG : LOG_INFO;
}

static int is_secret_header (const char *name) {
  return strcasecmp(name, "Authorization") == 0 ||
         strcasecmp(name, "X-Amz-Security-Token") == 0 ||
         strcasecmp(name, "X-aws-ec2-metadata-token") == 0;
}

static void log_body (Buf *b, const char *body, size_t len) {
  size_t i, n = len < LOG_BODY_MAX ? len : LOG_BODY_MAX;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)body[i];
    buf_putc(b, (c >= 32 || c == '\n' || c == '\t' || c >= 128) ? (char)c : '.');
  }
  if (len > n)
    buf_printf(b, "... (%zu bytes)", len);
}

/* --debug aws: the request line, headers (secret ones masked) and body. */
static void log_request (const AwsRequest *r, int attempt, int max, const HttpHeader *h,
                         size_t nh) {
  Buf b = BUF_INIT;
  size_t i;
  buf_printf(&b, "aws: %s.%s attempt %d/%d: %s %s", r->service, r->operation, attempt, max,
             r->method, r->url);
  for (i = 0; i < nh; i++)
    buf_printf(&b, "\n  %s: %s", h[i].name, is_secret_header(h[i].name) ? REDACTED : h[i].value);
  if (r->body_len > 0) {
    buf_puts(&b, "\n  ");
    log_body(&b, r->body, r->body_len);
  }
  log_str(topic_level(), b.data);   /* the logger redacts secrets */
  buf_free(&b);
}

/* --debug aws: the status, time, headers and body of a response. */
static void log_response (const AwsRequest *r, const HttpResponse *resp) {
  Buf b = BUF_INIT;
  size_t i;
  buf_printf(&b, "aws: %s.%s -> HTTP %ld (%.3f s)", r->service, r->operation, resp->status,
             resp->seconds);
  for (i = 0; i < resp->nheaders; i++)
    buf_printf(&b, "\n  %s: %s", resp->headers[i].name, resp->headers[i].value);
  if (resp->body.len > 0) {
    buf_puts(&b, "\n  ");
    log_body(&b, resp->body.data, resp->body.len);
  }
  log_str(topic_level(), b.data);
  buf_free(&b);
}

/* Sleep in slices so SIGINT ends the wait; 0 when interrupted. */
static int backoff_sleep (double seconds) {
  double end = now_seconds() + seconds;
  while (!interrupt_requested()) {
    double left = end - now_seconds();
    struct timespec ts;
    if (left <= 0)
      return 1;
    if (left > 0.1)
      left = 0.1;
    ts.tv_sec = 0;
    ts.tv_nsec = (long)(left * 1e9);
    nanosleep(&ts, NULL);
  }
  return 0;
}

static int clock_skew_error (const AwsError *e) {
  return strcmp(e->code, "RequestTimeTooSkewed") == 0 ||
         strcmp(e->code, "RequestExpired") == 0 ||
         strcmp(e->code, "RequestInTheFuture") == 0 ||
         ((strcmp(e->code, "InvalidSignatureException") == 0 ||
           strcmp(e->code, "SignatureDoesNotMatch") == 0) &&
          strstr(e->message, "expired") != NULL);
}

static void transport_error (AwsError *e, HttpResult r, const char *msg, const char *url) {
  const char *code = r == HTTP_ERR_TIMEOUT ? "Timeout"
                   : r == HTTP_ERR_CONNECT ? "ConnectionError"
                   : r == HTTP_ERR_INTERRUPTED ? "Interrupted"
                   : r == HTTP_ERR_TOO_LARGE ? "ResponseTooLarge" : "HttpError";
  aws_error_set(e, code, 0, "%s: %s", url, msg);
  e->retryable = (r == HTTP_ERR_TIMEOUT || r == HTTP_ERR_CONNECT);
}

/* Sign 'r' for one attempt: the caller's headers plus the signing ones. */
static int sign_attempt (AwsSession *s, const AwsRequest *r, const AwsCreds *creds,
                         SigV4Result *sig, HttpHeader **all, size_t *nall, AwsError *err) {
  SigV4Request sr;
  char e[256];
  size_t i;
  memset(sig, 0, sizeof(*sig));
  if (creds != NULL) {
    SigV4Header *sh = xmalloc((r->nheaders + 1) * sizeof(SigV4Header));
    int rc;
    for (i = 0; i < r->nheaders; i++) {
      sh[i].name = r->headers[i].name;
      sh[i].value = r->headers[i].value;
    }
    memset(&sr, 0, sizeof(sr));
    sr.method = r->method;
    sr.url = r->url;
    sr.headers = sh;
    sr.nheaders = r->nheaders;
    sr.body = r->body;
    sr.body_len = r->body_len;
    sr.service = r->signing_name;
    sr.region = r->region;
    sr.access_key_id = creds->access_key_id;
    sr.secret_access_key = creds->secret_access_key;
    sr.session_token = creds->session_token;
    sr.time = (time_t)(now_seconds() + s->clock_skew);
    sr.s3 = r->s3;
    rc = sigv4_sign(&sr, sig, e, sizeof(e));
    free(sh);
    if (rc != 0) {
      aws_error_set(err, "SigningError", 0, "%s", e);
      return -1;
    }
  }
  *nall = r->nheaders + sig->nheaders;
  *all = xmalloc((*nall + 1) * sizeof(HttpHeader));
  for (i = 0; i < r->nheaders; i++)
    (*all)[i] = r->headers[i];
  for (i = 0; i < sig->nheaders; i++) {
    (*all)[r->nheaders + i].name = sig->headers[i].name;
    (*all)[r->nheaders + i].value = sig->headers[i].value;
  }
  return 0;
}

/*
** One HTTP exchange: credentials (unless unsigned), signing, the request.
** Returns the transport result; on a transport failure err describes it
** and resp is empty.  -1 (not an HttpResult) when credentials or signing
** failed: err says why and the request must not be retried.
*/
static int send_once (AwsSession *s, const AwsRequest *r, int attempt, int max,
                      HttpResponse *resp, AwsError *err) {
  const AwsCreds *creds = NULL;
  SigV4Result sig;
  HttpHeader *all = NULL;
  size_t nall = 0;
  HttpRequest hr;
  HttpResult hres;
  char e[512];
  if (!r->unsigned_request) {
    creds = r->creds;
    if (creds == NULL && aws_session_credentials(s, &creds, err) != 0)
      return -1;
  }
  if (sign_attempt(s, r, creds, &sig, &all, &nall, err) != 0)
    return -1;
  if (log_topic("aws"))
    log_request(r, attempt, max, all, nall);
  memset(&hr, 0, sizeof(hr));
  hr.method = r->method;
  hr.url = r->url;
  hr.headers = all;
  hr.nheaders = nall;
  hr.body = r->body;
  hr.body_len = r->body_len;
  hr.timeout_ms = s->timeout_ms;
  hr.connect_timeout_ms = s->connect_timeout_ms;
  hr.ca_bundle = s->ca_bundle;
  hres = http_do(s->http, &hr, resp, e, sizeof(e));
  free(all);
  sigv4_result_free(&sig);
  if (hres != HTTP_OK) {
    http_response_free(resp);    /* whatever arrived before the failure */
    transport_error(err, hres, e, r->url);
    if (log_topic("aws"))
      log_str(topic_level(), err->message);
  } else if (log_topic("aws")) {
    log_response(r, resp);
  }
  return (int)hres;
}

/*
** The server said our clock is off: take its time from the Date header
** as the session's skew.  Returns 1 when corrected (retry at once).
*/
static int fix_clock_skew (AwsSession *s, const AwsRequest *r, const HttpResponse *resp) {
  const char *date = http_field(resp->headers, resp->nheaders, "Date");
  double server;
  if (date == NULL || aws_time_parse(date, &server) != 0)
    return 0;
  s->clock_skew = server - now_seconds();
  log_warn("aws: clock skew of %.0f s detected by %s, retrying with the server's time",
           s->clock_skew, r->service);
  return 1;
}

/* S3 names the bucket's region when the request went to another one. */
static void note_bucket_region (const HttpResponse *resp, AwsError *err) {
  const char *br = http_field(resp->headers, resp->nheaders, "x-amz-bucket-region");
  if (br != NULL && (resp->status == 301 || resp->status == 400)) {
    size_t l = strlen(err->message);
    snprintf(err->message + l, sizeof(err->message) - l, " (the bucket is in region %s)", br);
  }
}

/*
** Standard retry mode after a failed attempt: retry when the error is
** retryable, attempts and the retry quota are left and no interrupt
** came; then sleep the backoff delay.  Returns 1 to retry.
*/
static int retry_after (AwsSession *s, const AwsRequest *r, const AwsError *err, int attempt,
                        int max, int cost) {
  double delay;
  if (!err->retryable || attempt >= max || interrupt_requested())
    return 0;
  if (s->quota < cost) {
    log_warn("aws: retry quota exhausted, not retrying %s.%s", r->service, r->operation);
    return 0;
  }
  s->quota -= cost;
  delay = aws_backoff_delay(attempt, s->retry_base, s->retry_cap, next_random(s));
  log_info("aws: %s.%s failed (%s%s%s), retrying in %.1f s (attempt %d of %d)",
           r->service, r->operation, err->code, err->status ? ", HTTP " : "",
           err->status ? (err->status >= 500 ? "5xx" : "4xx") : "", delay, attempt + 1, max);
  return backoff_sleep(delay);
}

/*
** Send a request with retries (see request.h): sign each attempt afresh,
** retry transport failures, throttling and 5xx with backoff, retry once
** at once after correcting a clock skew.  Returns 0 with a 2xx response
** in resp (caller frees), or -1 with err filled (resp empty).
*/
int aws_request_send (AwsSession *s, const AwsRequest *r, HttpResponse *resp, AwsError *err) {
  int max = r->max_attempts > 0 ? r->max_attempts : s->max_attempts;
  int attempt, skew_retried = 0;
  memset(resp, 0, sizeof(*resp));
  memset(err, 0, sizeof(*err));
  snprintf(err->service, sizeof(err->service), "%s", r->service ? r->service : "");
  snprintf(err->operation, sizeof(err->operation), "%s", r->operation ? r->operation : "");
  for (attempt = 1;; attempt++) {
    int hres, cost = RETRY_COST;
    err->attempts = attempt;
    hres = send_once(s, r, attempt, max, resp, err);
    if (hres < 0)
      return -1;
    if (hres != HTTP_OK) {
      cost = hres == HTTP_ERR_TIMEOUT ? TIMEOUT_RETRY_COST : RETRY_COST;
    } else if (resp->status >= 200 && resp->status < 300) {
      s->quota += attempt == 1 ? 1 : RETRY_COST;
      if (s->quota > QUOTA_MAX)
        s->quota = QUOTA_MAX;
      return 0;
    } else {
      aws_error_from_response(err, r->protocol, resp->status, resp->headers, resp->nheaders,
                              resp->body.data, resp->body.len);
      if (clock_skew_error(err) && !skew_retried && fix_clock_skew(s, r, resp)) {
        skew_retried = 1;
        http_response_free(resp);
        attempt--;       /* this retry is free */
        continue;
      }
      note_bucket_region(resp, err);
      http_response_free(resp);
    }
    if (!retry_after(s, r, err, attempt, max, cost))
      return -1;
  }
}

/*
** POST a query-protocol form to STS (the configured endpoint, the
** regional one, or the global one without a region), signed with
** 'creds' or unsigned.  0 with the response (caller frees), or -1.
*/
int aws_sts_call (AwsSession *s, const char *action, const char *form, const AwsCreds *creds,
                  int unsigned_request, HttpResponse *resp, AwsError *err) {
  static const HttpHeader ct[] = {
    {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}
  };
  const char *region = s->region != NULL ? s->region : "us-east-1";
  const char *ep = NULL;
  Buf url = BUF_INIT;
  AwsRequest r;
  int rc;
  if (aws_config_endpoint(&s->cfg, "sts", &ep, err) != 0)
    return -1;
  if (ep != NULL)
    buf_puts(&url, ep);
  else if (s->region == NULL)
    buf_puts(&url, "https://sts.amazonaws.com");
  else
    buf_printf(&url, "https://sts.%s.%s", region,
               strncmp(region, "cn-", 3) == 0 ? "amazonaws.com.cn" : "amazonaws.com");
  while (url.len > 0 && url.data[url.len - 1] == '/')
    url.data[--url.len] = '\0';
  buf_putc(&url, '/');
  memset(&r, 0, sizeof(r));
  r.protocol = "query";
  r.service = "sts";
  r.operation = action;
  r.signing_name = "sts";
  r.region = region;
  r.method = "POST";
  r.url = url.data;
  r.headers = ct;
  r.nheaders = 1;
  r.body = form;
  r.body_len = strlen(form);
  r.unsigned_request = unsigned_request;
  r.creds = creds;
  rc = aws_request_send(s, &r, resp, err);
  buf_free(&url);
  return rc;
}
