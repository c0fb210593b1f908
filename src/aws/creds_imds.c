/*
** creds_imds.c
** The metadata-service clients of the credential chain: the ECS/EKS
** container endpoint (relative or full URI, authorization token) and
** EC2 instance metadata (IMDSv2 token, v1 fallback where allowed),
** with their short timeouts and attempt counts.
*/
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "aws/creds.h"
#include "aws/creds_internal.h"
#include "aws/http.h"
#include "aws/request.h"
#include "aws/sigv4.h"
#include "util/log.h"
#include "util/redact.h"

/* GET a metadata URL with the given headers, 'attempts' tries. */
static int metadata_get (AwsSession *s, const char *method, const char *url,
                         const HttpHeader *h, size_t nh, long timeout_ms, int attempts,
                         HttpResponse *resp, char *err, size_t errlen) {
  HttpRequest req;
  HttpResult r = HTTP_ERR_OTHER;
  int i;
  memset(&req, 0, sizeof(req));
  req.method = method;
  req.url = url;
  req.headers = h;
  req.nheaders = nh;
  req.timeout_ms = timeout_ms;
  req.connect_timeout_ms = timeout_ms;
  req.max_response = 1u << 20;
  for (i = 0; i < attempts; i++) {
    if (i > 0)
      http_response_free(resp);
    r = http_do(s->http, &req, resp, err, errlen);
    if (r == HTTP_OK && resp->status < 500)
      break;
  }
  return r == HTTP_OK ? 0 : -1;
}

/* Allowed hosts for AWS_CONTAINER_CREDENTIALS_FULL_URI over http. */
static int container_host_ok (const char *url) {
  Buf scheme = BUF_INIT, host = BUF_INIT, path = BUF_INIT, query = BUF_INIT;
  const char *h;
  char *colon;
  int ok = 0;
  if (sigv4_split_url(url, &scheme, &host, &path, &query) == 0) {
    h = buf_cstr(&host);
    if (h[0] == '[') {
      ok = strncmp(h, "[::1]", 5) == 0 || strncmp(h, "[fd00:ec2::23]", 14) == 0;
    } else {
      if ((colon = strchr(host.data, ':')) != NULL)
        *colon = '\0';
      ok = strncmp(h, "127.", 4) == 0 || strcmp(h, "localhost") == 0 ||
           strcmp(h, "169.254.170.2") == 0 || strcmp(h, "169.254.170.23") == 0;
    }
    ok = ok || strcmp(buf_cstr(&scheme), "https") == 0;
  }
  buf_free(&scheme); buf_free(&host); buf_free(&path); buf_free(&query);
  return ok;
}

/*
** ECS/EKS container credentials: GET the relative URI on 169.254.170.2
** or the full URI (https, loopback or the link-local ECS/EKS hosts
** only), with the authorization token from the token file or the
** environment.  Returns 1 with credentials, 0 when not configured, -1
** with err (a configured endpoint that fails is an error, not a
** fallthrough).
*/
int creds_from_container (AwsSession *s, AwsCreds *out, AwsError *err) {
  const char *rel = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
  const char *full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
  const char *tokfile = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
  Buf url = BUF_INIT, auth = BUF_INIT;
  HttpHeader h[1];
  HttpResponse resp;
  char e[256];
  int rc = -1, nh = 0;
  if (rel != NULL && rel[0] != '\0') {
    buf_printf(&url, "http://169.254.170.2%s%s", rel[0] == '/' ? "" : "/", rel);
  } else if (full != NULL && full[0] != '\0') {
    if (!container_host_ok(full)) {
      aws_error_set(err, "InvalidConfig", 0, "AWS_CONTAINER_CREDENTIALS_FULL_URI must use "
                    "https or a loopback or ECS/EKS link-local host: %s", full);
      return -1;
    }
    buf_puts(&url, full);
  } else {
    return 0;
  }
  if (tokfile != NULL && tokfile[0] != '\0') {   /* re-read on every fetch */
    if (creds_read_small_file(tokfile, 65536, &auth) != 0) {
      aws_error_set(err, "InvalidConfig", 0, "cannot read %s: %s", tokfile, strerror(errno));
      buf_free(&url);
      return -1;
    }
    while (auth.len > 0 && isspace((unsigned char)auth.data[auth.len - 1]))
      auth.data[--auth.len] = '\0';
  } else if (getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN") != NULL) {
    buf_puts(&auth, getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN"));
  }
  if (auth.len > 0) {
    if (strpbrk(auth.data, "\r\n") != NULL) {
      aws_error_set(err, "InvalidConfig", 0, "the container authorization token contains "
                    "a line break");
      goto done;
    }
    redact_register(auth.data);
    h[0].name = "Authorization";
    h[0].value = auth.data;
    nh = 1;
  }
  if (metadata_get(s, "GET", url.data, h, (size_t)nh, 2000, 3, &resp, e, sizeof(e)) != 0) {
    aws_error_set(err, "CredentialsEndpointError", 0, "container credentials endpoint %s: %s",
                  url.data, e);
  } else if (resp.status != 200) {
    aws_error_set(err, "CredentialsEndpointError", (int)resp.status, "container credentials "
                  "endpoint %s returned HTTP %ld", url.data, resp.status);
  } else if (aws_creds_from_json("container", buf_cstr(&resp.body), resp.body.len, out, e,
                                 sizeof(e)) != 0) {
    aws_error_set(err, "CredentialsEndpointError", 0, "container credentials endpoint %s: %s",
                  url.data, e);
  } else {
    snprintf(out->source, sizeof(out->source), "container credentials");
    rc = 1;
  }
  http_response_free(&resp);
done:
  buf_free(&url);
  buf_free(&auth);
  return rc;
}

/*
** IMDSv2: PUT for a session token.  Returns 1 with the token in 'token'
** (registered as a secret), 0 to go on without one (IMDSv1, unless
** disabled), -1 when no usable instance metadata answered (not on EC2:
** not an error).
*/
static int imds_token (AwsSession *s, const char *base, long timeout_ms, int attempts,
                       Buf *token) {
  HttpHeader th[1] = {{"X-aws-ec2-metadata-token-ttl-seconds", "21600"}};
  HttpResponse resp;
  Buf url = BUF_INIT;
  char e[256];
  int rc;
  buf_printf(&url, "%s/latest/api/token", base);
  if (metadata_get(s, "PUT", url.data, th, 1, timeout_ms, attempts, &resp, e, sizeof(e)) != 0) {
    log_debug("aws: instance metadata not available at %s: %s", base, e);
    rc = -1;
  } else if (resp.status == 200 && resp.body.len > 0) {
    buf_append(token, resp.body.data, resp.body.len);
    redact_register(token->data);
    rc = 1;
  } else if ((resp.status == 403 || resp.status == 404 || resp.status == 405) &&
             !aws_truthy(getenv("AWS_EC2_METADATA_V1_DISABLED"))) {
    rc = 0;
  } else {
    log_debug("aws: instance metadata token request returned HTTP %ld", resp.status);
    rc = -1;
  }
  http_response_free(&resp);
  buf_free(&url);
  return rc;
}

/*
** EC2 instance metadata (IMDSv2 token, then the instance profile's role,
** then its credentials), with the SDKs' environment and profile
** settings for the endpoint, timeout and attempts.  Returns 1 with
** credentials, 0 when there is no instance metadata or no role, -1 with
** err when the role's credentials cannot be read.
*/
int creds_from_imds (AwsSession *s, AwsCreds *out, AwsError *err) {
  const char *ep = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
  const char *tmo = getenv("AWS_METADATA_SERVICE_TIMEOUT");
  const char *att = getenv("AWS_METADATA_SERVICE_NUM_ATTEMPTS");
  const char *mode = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
  long timeout_ms = 1000;
  int attempts = 1, rc = 0;
  Buf base = BUF_INIT, url = BUF_INIT, token = BUF_INIT, role = BUF_INIT;
  HttpHeader h[1];
  HttpResponse resp;
  size_t nh = 0;
  char e[256];
  if (aws_truthy(getenv("AWS_EC2_METADATA_DISABLED")))
    return 0;
  if (ep == NULL || ep[0] == '\0')
    ep = aws_profile_config_get(&s->cfg, NULL, "ec2_metadata_service_endpoint");
  if (mode == NULL)
    mode = aws_profile_config_get(&s->cfg, NULL, "ec2_metadata_service_endpoint_mode");
  if (ep == NULL || ep[0] == '\0')
    ep = (mode != NULL && strcasecmp(mode, "IPv6") == 0) ? "http://[fd00:ec2::254]"
                                                         : "http://169.254.169.254";
  buf_puts(&base, ep);
  while (base.len > 0 && base.data[base.len - 1] == '/')
    base.data[--base.len] = '\0';
  if (tmo != NULL && atof(tmo) > 0)
    timeout_ms = (long)(atof(tmo) * 1000);
  if (att != NULL && atoi(att) > 0)
    attempts = atoi(att);
  switch (imds_token(s, base.data, timeout_ms, attempts, &token)) {
    case -1:
      goto done;
    case 1:
      h[0].name = "X-aws-ec2-metadata-token";
      h[0].value = token.data;
      nh = 1;
      break;
    default:
      break;
  }
  buf_printf(&url, "%s/latest/meta-data/iam/security-credentials/", base.data);
  if (metadata_get(s, "GET", url.data, h, nh, timeout_ms, attempts, &resp, e, sizeof(e)) != 0 ||
      resp.status != 200 || resp.body.len == 0) {
    log_debug("aws: no instance profile role in instance metadata");
    http_response_free(&resp);
    goto done;
  }
  buf_append(&role, resp.body.data, strcspn(resp.body.data, "\r\n"));
  http_response_free(&resp);
  sigv4_uri_encode(&url, role.data, role.len, 0);
  if (metadata_get(s, "GET", url.data, h, nh, timeout_ms, attempts, &resp, e, sizeof(e)) != 0) {
    aws_error_set(err, "CredentialsEndpointError", 0, "instance metadata: %s", e);
    rc = -1;
  } else if (resp.status != 200) {
    aws_error_set(err, "CredentialsEndpointError", (int)resp.status, "instance metadata "
                  "returned HTTP %ld for role %s", resp.status, role.data);
    rc = -1;
  } else if (aws_creds_from_json("imds", buf_cstr(&resp.body), resp.body.len, out, e,
                                 sizeof(e)) != 0) {
    aws_error_set(err, "CredentialsEndpointError", 0, "instance metadata role %s: %s",
                  role.data, e);
    rc = -1;
  } else {
    snprintf(out->source, sizeof(out->source), "instance metadata (role %.60s)", role.data);
    rc = 1;
  }
  http_response_free(&resp);
done:
  buf_free(&base); buf_free(&url); buf_free(&token); buf_free(&role);
  return rc;
}
