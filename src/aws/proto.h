/*
** proto.h
** The model-free parts of the AWS wire protocols: error objects and how
** each protocol reports errors (JSON 1.0/1.1 "__type", query and EC2 XML
** error documents, S3 <Error>), which errors are retryable in the
** standard retry mode, the backoff formula, timestamps (ISO 8601, RFC
** 1123, epoch), base64 and Content-MD5.  Lua-free; the model-driven
** serialisation of operation inputs lives in lua/pgtide/aws/.
*/
#ifndef PGTIDE_AWS_PROTO_H
#define PGTIDE_AWS_PROTO_H

#include <stddef.h>

#include "aws/http.h"
#include "util/buf.h"

typedef struct AwsError {
  char code[128];           /* AWS error code, "503" for a bare status, or
                               a client-side code (NoCredentials...) */
  char message[1024];       /* redacted */
  int status;               /* HTTP status; 0 when no response */
  char request_id[128];
  int retryable;
  int throttling;
  int attempts;             /* attempts made (retry loop) */
  char service[64];
  char operation[128];
} AwsError;

/* Reset and fill code/status/message (message formatted, then redacted). */
void aws_error_set(AwsError *e, const char *code, int status, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

/*
** Fill 'e' from an HTTP error response of the given protocol ("json",
** "query", "ec2", "rest-xml"); unparseable or empty bodies give the status
** as the code and the reason phrase (plus a redacted excerpt of a non-AWS
** body) as the message.  Also classifies retryability.
*/
void aws_error_from_response(AwsError *e, const char *protocol, long status,
                             const HttpField *h, size_t nh, const char *body, size_t len);

/* Set e->retryable / e->throttling from e->code and e->status. */
void aws_error_classify(AwsError *e);
int aws_is_throttling_code(const char *code);
int aws_is_transient_code(const char *code);

/* Standard mode: r * min(base * 2^(retry-1), cap) seconds, r in [0,1). */
double aws_backoff_delay(int retry, double base, double cap, double r);

/* Timestamps: ISO 8601 (fraction, Z or offset), RFC 1123, or epoch
   seconds as text.  0 on success. */
int aws_time_parse(const char *s, double *out);
void aws_time_iso8601(double t, char out[64]);     /* ...T...Z, .sss if fractional */
void aws_time_rfc1123(double t, char out[64]);     /* "Sun, 06 Nov 1994 08:49:37 GMT" */

void aws_base64_encode(Buf *out, const void *data, size_t n);
int aws_base64_decode(Buf *out, const char *s, size_t n);     /* -1: invalid */
void aws_md5_base64(const void *data, size_t n, char out[32]);

/* Printable, redacted excerpt of at most 'max' bytes of a body. */
void aws_excerpt(Buf *out, const char *body, size_t len, size_t max);

#endif
