/*
** proto.c
** AWS protocol helpers without a service model (see proto.h): error
** documents, retry classification, backoff, timestamps, base64, MD5.
*/
#include "aws/proto.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "aws/xml.h"
#include "util/redact.h"

/* Throttling error codes of the standard retry mode (botocore
   retries/standard.py), plus SNS's "Throttled". */
static const char *const throttling_codes[] = {
  "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
  "TooManyRequestsException", "ProvisionedThroughputExceededException",
  "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
  "LimitExceededException", "RequestThrottled", "SlowDown", "PriorRequestNotComplete",
  "EC2ThrottledException", "Throttled", NULL
};

/* Transient codes: retried like 5xx. */
static const char *const transient_codes[] = {
  "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
  "IDPCommunicationError", "InternalError", "InternalFailure", "ServiceUnavailable",
  NULL
};

static int in_list (const char *const *list, const char *code) {
  int i;
  for (i = 0; list[i] != NULL; i++)
    if (strcmp(list[i], code) == 0)
      return 1;
  return 0;
}

int aws_is_throttling_code (const char *code) {
  return code != NULL && in_list(throttling_codes, code);
}

int aws_is_transient_code (const char *code) {
  return code != NULL && in_list(transient_codes, code);
}

void aws_error_classify (AwsError *e) {
  e->throttling = aws_is_throttling_code(e->code) || e->status == 429;
  e->retryable = e->throttling || aws_is_transient_code(e->code) ||
                 e->status == 500 || e->status == 502 || e->status == 503 || e->status == 504;
}

double aws_backoff_delay (int retry, double base, double cap, double r) {
  double d = base;
  int i;
  for (i = 1; i < retry && d < cap; i++)
    d *= 2;
  if (d > cap)
    d = cap;
  return r * d;
}

static void set_message (AwsError *e, const char *msg) {
  char *clean = redact_str(msg != NULL ? msg : "");
  snprintf(e->message, sizeof(e->message), "%s", clean);
  free(clean);
}

/* Reset e (keeping service, operation and attempts: the retry loop set
   them) and set code, status and a redacted, formatted message. */
void aws_error_set (AwsError *e, const char *code, int status, const char *fmt, ...) {
  Buf b = BUF_INIT;
  va_list ap;
  char service[64], operation[128];
  int attempts = e->attempts;
  /* keep who was called: the retry loop fills these before failing */
  memcpy(service, e->service, sizeof(service));
  memcpy(operation, e->operation, sizeof(operation));
  memset(e, 0, sizeof(*e));
  memcpy(e->service, service, sizeof(service));
  memcpy(e->operation, operation, sizeof(operation));
  e->attempts = attempts;
  snprintf(e->code, sizeof(e->code), "%s", code);
  e->status = status;
  va_start(ap, fmt);
  buf_vprintf(&b, fmt, ap);
  va_end(ap);
  set_message(e, buf_cstr(&b));
  buf_free(&b);
}

/* The HTTP reason phrase of the statuses AWS answers with. */
static const char *reason_phrase (long status) {
  switch (status) {
    case 301: return "Moved Permanently";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "HTTP error";
  }
}

/* At most 'max' printable bytes of a body (others as spaces), redacted,
   with "..." when cut. */
void aws_excerpt (Buf *out, const char *body, size_t len, size_t max) {
  Buf raw = BUF_INIT;
  size_t i;
  char *clean;
  for (i = 0; i < len && i < max; i++) {
    unsigned char c = (unsigned char)body[i];
    buf_putc(&raw, (c >= 32 && c < 127) ? (char)c : ' ');
  }
  clean = redact_str(buf_cstr(&raw));
  buf_puts(out, clean);
  if (len > max)
    buf_puts(out, "...");
  free(clean);
  buf_free(&raw);
}

/* JSON 1.0/1.1 code: "ns#Code:uri" -> "Code". */
static void json_code (char *dst, size_t dstlen, const char *type) {
  const char *hash = strrchr(type, '#');
  const char *start = hash != NULL ? hash + 1 : type;
  size_t n = strcspn(start, ":");
  if (n >= dstlen)
    n = dstlen - 1;
  memcpy(dst, start, n);
  dst[n] = '\0';
}

/*
** JSON protocols: the code from __type (or x-amzn-ErrorType; the
** x-amzn-query-error header wins for awsQueryCompatible services) and
** the message from message / Message / errorMessage.  Returns non-zero
** when a code was found.
*/
static int parse_json_error (AwsError *e, const HttpField *h, size_t nh, const char *body,
                             size_t len) {
  cJSON *doc = len > 0 ? cJSON_ParseWithLength(body, len) : NULL;
  const char *type = NULL, *msg = NULL, *qe;
  const cJSON *v;
  if (doc != NULL && cJSON_IsObject(doc)) {
    v = cJSON_GetObjectItemCaseSensitive(doc, "__type");
    if (cJSON_IsString(v))
      type = v->valuestring;
    v = cJSON_GetObjectItemCaseSensitive(doc, "message");
    if (!cJSON_IsString(v))
      v = cJSON_GetObjectItemCaseSensitive(doc, "Message");
    if (!cJSON_IsString(v))
      v = cJSON_GetObjectItemCaseSensitive(doc, "errorMessage");
    if (cJSON_IsString(v))
      msg = v->valuestring;
  }
  if (type == NULL)
    type = http_field(h, nh, "x-amzn-ErrorType");
  if (type != NULL)
    json_code(e->code, sizeof(e->code), type);
  /* awsQueryCompatible services: "Code;Sender" names the query error code */
  qe = http_field(h, nh, "x-amzn-query-error");
  if (qe != NULL && qe[0] != '\0' && qe[0] != ';') {
    size_t n = strcspn(qe, ";");
    if (n < sizeof(e->code)) {
      memcpy(e->code, qe, n);
      e->code[n] = '\0';
    }
  }
  if (msg != NULL)
    set_message(e, msg);
  cJSON_Delete(doc);
  return e->code[0] != '\0';
}

/* Query, EC2 and S3 error documents: find the <Error> element. */
static int parse_xml_error (AwsError *e, const char *body, size_t len) {
  char err[128];
  XmlNode *root = len > 0 ? xml_parse(body, len, err, sizeof(err)) : NULL;
  const XmlNode *error = NULL;
  const char *code, *msg, *rid;
  if (root == NULL)
    return 0;
  if (strcmp(root->name, "Error") == 0)                       /* S3 */
    error = root;
  else if ((error = xml_path(root, "Error")) == NULL)        /* query */
    error = xml_path(root, "Errors/Error");                   /* EC2 */
  code = xml_path_text(error, "Code");
  msg = xml_path_text(error, "Message");
  if (code != NULL && code[0] != '\0') {
    snprintf(e->code, sizeof(e->code), "%s", code);
    if (msg != NULL)
      set_message(e, msg);
  }
  rid = xml_path_text(root, "RequestId");
  if (rid == NULL)
    rid = xml_path_text(root, "RequestID");
  if (rid == NULL)
    rid = xml_path_text(error, "RequestId");
  if (rid != NULL && e->request_id[0] == '\0')
    snprintf(e->request_id, sizeof(e->request_id), "%s", rid);
  xml_free(root);
  return e->code[0] != '\0';
}

/*
** Fill e from an HTTP error response: request id, code and message from
** the protocol's error document (the other format as a fallback), else
** the status as the code and the reason phrase plus a redacted body
** excerpt as the message; then classify retryability.
*/
void aws_error_from_response (AwsError *e, const char *protocol, long status,
                              const HttpField *h, size_t nh, const char *body, size_t len) {
  const char *rid;
  int parsed;
  e->code[0] = '\0';
  e->message[0] = '\0';
  e->request_id[0] = '\0';
  e->status = (int)status;
  rid = http_field(h, nh, "x-amzn-RequestId");
  if (rid == NULL)
    rid = http_field(h, nh, "x-amz-request-id");
  if (rid != NULL)
    snprintf(e->request_id, sizeof(e->request_id), "%s", rid);
  /* the protocol's format first, then the other one: front ends (and
     emulators) sometimes answer a JSON service in XML and vice versa */
  if (protocol != NULL && (strcmp(protocol, "json") == 0 || strcmp(protocol, "rest-json") == 0))
    parsed = parse_json_error(e, h, nh, body, len) || parse_xml_error(e, body, len);
  else
    parsed = parse_xml_error(e, body, len) || parse_json_error(e, h, nh, body, len);
  if (!parsed) {
    Buf m = BUF_INIT;
    snprintf(e->code, sizeof(e->code), "%ld", status);
    buf_printf(&m, "HTTP %ld %s", status, reason_phrase(status));
    if (len > 0) {
      buf_puts(&m, " (unexpected response body: ");
      aws_excerpt(&m, body, len, 160);
      buf_putc(&m, ')');
    }
    snprintf(e->message, sizeof(e->message), "%s", buf_cstr(&m));  /* already redacted */
    buf_free(&m);
  } else if (e->message[0] == '\0') {
    snprintf(e->message, sizeof(e->message), "%s", reason_phrase(status));
  }
  aws_error_classify(e);
}

/* Parse exactly 'n' digits. */
static int digits (const char **p, int n, int *out) {
  int v = 0, i;
  for (i = 0; i < n; i++) {
    if (!isdigit((unsigned char)(*p)[i]))
      return -1;
    v = v * 10 + ((*p)[i] - '0');
  }
  *p += n;
  *out = v;
  return 0;
}

static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
                                     "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};

/* "Sun, 06 Nov 1994 08:49:37 GMT" -> epoch seconds; 0 on success. */
static int parse_rfc1123 (const char *s, double *out) {
  struct tm tm;
  char mon[4];
  int i, n = 0;
  memset(&tm, 0, sizeof(tm));
  /* "Sun, 06 Nov 1994 08:49:37 GMT" */
  if (sscanf(s, "%*3s, %2d %3s %4d %2d:%2d:%2d GMT%n", &tm.tm_mday, mon, &tm.tm_year,
             &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 || n == 0 || s[n] != '\0')
    return -1;
  tm.tm_mon = -1;
  for (i = 0; i < 12; i++)
    if (strcmp(mon, months[i]) == 0)
      tm.tm_mon = i;
  if (tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
      tm.tm_min > 59 || tm.tm_sec > 60)
    return -1;
  tm.tm_year -= 1900;
  *out = (double)timegm(&tm);
  return 0;
}

/*
** Epoch seconds from AWS timestamps: epoch seconds as text, ISO 8601
** (date, optional time, fraction, Z or +hh:mm offset) or RFC 1123.
** Returns 0 and sets *out, or -1.
*/
int aws_time_parse (const char *s, double *out) {
  const char *p = s;
  struct tm tm;
  double frac = 0;
  int y, mo, d, h = 0, mi = 0, sec = 0, off = 0;
  char *end;
  if (s == NULL || *s == '\0')
    return -1;
  /* plain epoch seconds */
  {
    double v = strtod(s, &end);
    if (*end == '\0' && end != s && isfinite(v)) {
      *out = v;
      return 0;
    }
  }
  if (isalpha((unsigned char)s[0]))
    return parse_rfc1123(s, out);
  if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
      digits(&p, 2, &d))
    return -1;
  if (*p == 'T' || *p == 't' || *p == ' ') {
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
      return -1;
    if (*p == ':') {
      p++;
      if (digits(&p, 2, &sec))
        return -1;
    }
    if (*p == '.' || *p == ',') {
      double scale = 0.1;
      p++;
      if (!isdigit((unsigned char)*p))
        return -1;
      while (isdigit((unsigned char)*p)) {
        frac += (*p - '0') * scale;
        scale /= 10;
        p++;
      }
    }
    if (*p == 'Z' || *p == 'z') {
      p++;
    } else if (*p == '+' || *p == '-') {
      int sign = *p == '-' ? -1 : 1, oh, om = 0;
      p++;
      if (digits(&p, 2, &oh))
        return -1;
      if (*p == ':')
        p++;
      if (isdigit((unsigned char)*p) && digits(&p, 2, &om))
        return -1;
      off = sign * (oh * 3600 + om * 60);
    }
  }
  if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
    return -1;
  memset(&tm, 0, sizeof(tm));
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  *out = (double)timegm(&tm) - off + frac;
  return 0;
}

/* "2024-03-01T12:00:00Z" (milliseconds only when not zero). */
void aws_time_iso8601 (double t, char out[64]) {
  time_t s = (time_t)floor(t);
  int ms = (int)lround((t - (double)s) * 1000.0);
  struct tm tm;
  if (ms >= 1000) {
    s++;
    ms -= 1000;
  }
  gmtime_r(&s, &tm);
  if (ms > 0)
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  else
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void aws_time_rfc1123 (double t, char out[64]) {
  time_t s = (time_t)floor(t);
  struct tm tm;
  gmtime_r(&s, &tm);
  snprintf(out, 64, "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday], tm.tm_mday,
           months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void aws_base64_encode (Buf *out, const void *data, size_t n) {
  size_t need = 4 * ((n + 2) / 3) + 1;
  buf_reserve(out, need);
  EVP_EncodeBlock((unsigned char *)out->data + out->len, data, (int)n);
  out->len += need - 1;
  out->data[out->len] = '\0';
}

static int b64val (int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

/* Decode standard or URL-safe base64; whitespace ignored, padding optional. */
int aws_base64_decode (Buf *out, const char *s, size_t n) {
  unsigned acc = 0;
  int bits = 0;
  size_t i, pad = 0;
  for (i = 0; i < n; i++) {
    int v;
    if (isspace((unsigned char)s[i]))
      continue;
    if (s[i] == '=') {
      pad++;
      continue;
    }
    if (pad > 0 || (v = b64val((unsigned char)s[i])) < 0)
      return -1;
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      buf_putc(out, (char)((acc >> bits) & 0xff));
    }
  }
  return pad > 2 ? -1 : 0;
}

void aws_md5_base64 (const void *data, size_t n, char out[32]) {
  unsigned char md[16];
  unsigned int mdlen = 0;
  EVP_Digest(data != NULL ? data : "", n, md, &mdlen, EVP_md5(), NULL);
  EVP_EncodeBlock((unsigned char *)out, md, 16);
}
