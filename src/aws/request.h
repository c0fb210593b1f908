/*
** request.h
** An AWS session (configuration, region, credentials cache, HTTP
** connection, retry settings) and the request loop: resolve and refresh
** credentials, sign (SigV4), send, classify the outcome, retry in the
** standard mode, and log each attempt under `--debug aws` with secrets
** redacted.  Lua-free: src/aws/aws_lua.c is the binding and
** lua/pgtide/aws.lua builds the requests from the service models.
**
** Retry (standard mode): at most max_attempts attempts (default 3; option,
** AWS_MAX_ATTEMPTS or the profile's max_attempts), delay before retry n
** is rand[0,1) * min(base * 2^(n-1), 20 s) with base 1 s, on throttling
** codes, transient codes, HTTP 500/502/503/504, timeouts and connection
** errors; a token bucket (500, 5 per retry, 10 per timeout, refunded on
** success) stops retry storms.  A clock-skew error is retried once with
** the server's Date.  Credentials are refreshed 15 minutes before they
** expire; if the refresh fails, credentials with more than 10 minutes left
** are kept (with a warning), otherwise the request fails.
*/
#ifndef PGTIDE_AWS_REQUEST_H
#define PGTIDE_AWS_REQUEST_H

#include "aws/config.h"
#include "aws/creds.h"
#include "aws/http.h"
#include "aws/proto.h"

typedef struct AwsSessionOptions {
  const char *profile;              /* NULL: AWS_PROFILE or "default" */
  const char *region;               /* NULL: environment or profile */
  const char *access_key_id;        /* explicit credentials (all optional) */
  const char *secret_access_key;
  const char *session_token;
  int max_attempts;                 /* 0: configured or 3 */
  double retry_base;                /* seconds; 0: 1 s */
  double retry_cap;                 /* seconds; 0: 20 s */
  long timeout_ms;                  /* per attempt; 0: 60 s */
  long connect_timeout_ms;          /* 0: 10 s */
} AwsSessionOptions;

typedef struct AwsSession {
  AwsConfig cfg;
  char *region;                     /* NULL when none is configured */
  HttpClient *http;
  AwsCreds creds;                   /* cached; access_key_id NULL until resolved */
  int fixed_creds;                  /* explicit: never refreshed */
  int max_attempts;
  double retry_base, retry_cap;
  int quota;                        /* retry token bucket */
  long timeout_ms, connect_timeout_ms;
  char *ca_bundle;
  double clock_skew;                /* seconds to add to the local clock */
  unsigned long long rng;           /* jitter */
} AwsSession;

int aws_session_init(AwsSession *s, const AwsSessionOptions *o, AwsError *err);
void aws_session_free(AwsSession *s);

/* Current credentials (resolved on first use, refreshed before expiry);
   the result points into the session. */
int aws_session_credentials(AwsSession *s, const AwsCreds **out, AwsError *err);

typedef struct AwsRequest {
  const char *protocol;             /* "json" "query" "ec2" "rest-xml": error parsing */
  const char *service;              /* for messages and logs: "dms" */
  const char *operation;            /* "CreateEndpoint" */
  const char *signing_name;         /* "dms", "states", "monitoring"... */
  const char *region;               /* signing region */
  const char *method;
  const char *url;                  /* absolute, path and query as on the wire */
  const HttpHeader *headers;        /* besides the signing headers */
  size_t nheaders;
  const char *body;
  size_t body_len;
  int s3;                           /* S3 signing rules */
  int unsigned_request;             /* no signature (web identity) */
  const AwsCreds *creds;            /* NULL: the session's */
  int max_attempts;                 /* 0: the session's */
} AwsRequest;

/*
** Send with retries.  0: a 2xx response in 'resp' (free it with
** http_response_free).  -1: 'err' describes the last failure (service
** error, transport error or credentials) and 'resp' is empty.
*/
int aws_request_send(AwsSession *s, const AwsRequest *r, HttpResponse *resp, AwsError *err);

/* POST a query-protocol form to STS and return the body (credentials). */
int aws_sts_call(AwsSession *s, const char *action, const char *form, const AwsCreds *creds,
                 int unsigned_request, HttpResponse *resp, AwsError *err);

#endif
