/*
** fuzz_awsjson.c
** libFuzzer target for the JSON side of the AWS response parsers: JSON
** 1.0/1.1 error documents (proto.c, with and without the x-amzn headers)
** and the credential documents of credential_process, the container
** endpoint and instance metadata (creds.c).  Lua-free.
*/
#include <stdint.h>
#include <string.h>

#include "aws/creds.h"
#include "aws/proto.h"
#include "util/redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  static const char *const kinds[] = {"process", "container", "imds"};
  HttpField h[2];
  AwsError e;
  AwsCreds c;
  char err[256], hdr[64];
  size_t i, n = size < sizeof(hdr) - 1 ? size : sizeof(hdr) - 1;
  memset(&e, 0, sizeof(e));
  aws_error_from_response(&e, "json", 400, NULL, 0, s, size);
  /* the same body with the first bytes as x-amzn-ErrorType / query-error */
  memcpy(hdr, s, n);
  hdr[n] = '\0';
  h[0].name = (char *)"x-amzn-ErrorType";
  h[0].value = hdr;
  h[1].name = (char *)"x-amzn-query-error";
  h[1].value = hdr;
  memset(&e, 0, sizeof(e));
  aws_error_from_response(&e, "json", 500, h, 2, s, size);
  for (i = 0; i < 3; i++) {
    memset(&c, 0, sizeof(c));
    if (aws_creds_from_json(kinds[i], s, size, &c, err, sizeof(err)) == 0)
      aws_creds_clear(&c);
  }
  redact_clear();
  return 0;
}
