/*
** test_sigv4_botocore.c
** Thousands of random requests (tests/lib/sigv4_oracle.py: unicode paths,
** spaces, dots, double slashes, repeated and unsorted query parameters,
** headers with extra whitespace and duplicates, bodies, session tokens,
** S3 and non-S3, header and presigned) signed by botocore and by
** sigv4_sign(): canonical request, string to sign, signature, added
** headers and presigned URL must all be identical.
**
** Environment: SIGV4_CASES (default 3000), SIGV4_SEED (default random).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "aws/sigv4.h"
#include "test.h"

static const char *jstr (const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool (const cJSON *o, const char *k) {
  return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k));
}

/* Base64-decode 'in' into a new buffer; *n gets the length. */
static unsigned char *b64 (const char *in, size_t *n) {
  size_t len = strlen(in);
  unsigned char *out = malloc(len / 4 * 3 + 4);
  int r = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
  if (r < 0)
    r = 0;
  while (len > 0 && in[len - 1] == '=' && r > 0) {  /* padding decodes to zeros */
    len--;
    r--;
  }
  *n = (size_t)r;
  return out;
}

static const char *added (const SigV4Result *res, const char *name) {
  size_t i;
  for (i = 0; i < res->nheaders; i++)
    if (strcmp(res->headers[i].name, name) == 0)
      return res->headers[i].value;
  return NULL;
}

static int ncases, nfailed;
static char first_failure[2048];

static void note_failure (int id, const char *what, const char *got, const char *want) {
  nfailed++;
  if (first_failure[0] == '\0')
    snprintf(first_failure, sizeof(first_failure),
             "case %d: %s differs\n--- ours\n%s\n--- botocore\n%s", id, what,
             got ? got : "(null)", want ? want : "(null)");
}

static void check_case (const cJSON *c) {
  const cJSON *exp = cJSON_GetObjectItemCaseSensitive(c, "expect");
  const cJSON *hs = cJSON_GetObjectItemCaseSensitive(c, "headers"), *h;
  SigV4Header hdrs[64];
  SigV4Request req;
  SigV4Result res;
  char err[256];
  size_t nh = 0, blen;
  unsigned char *body = b64(jstr(c, "body_b64"), &blen);
  int id = cJSON_GetObjectItemCaseSensitive(c, "id")->valueint;
  const cJSON *exv;

  cJSON_ArrayForEach(h, hs) {
    if (nh < 64) {
      hdrs[nh].name = cJSON_GetArrayItem(h, 0)->valuestring;
      hdrs[nh].value = cJSON_GetArrayItem(h, 1)->valuestring;
      nh++;
    }
  }
  memset(&req, 0, sizeof(req));
  req.method = jstr(c, "method");
  req.url = jstr(c, "url");
  req.headers = hdrs;
  req.nheaders = nh;
  req.body = (const char *)body;
  req.body_len = blen;
  req.service = jstr(c, "service");
  req.region = jstr(c, "region");
  req.access_key_id = jstr(c, "access_key_id");
  req.secret_access_key = jstr(c, "secret_access_key");
  req.session_token = jstr(c, "session_token");
  req.time = (time_t)cJSON_GetObjectItemCaseSensitive(c, "time")->valuedouble;
  req.presign = jbool(c, "presign");
  exv = cJSON_GetObjectItemCaseSensitive(c, "expires");
  req.expires = cJSON_IsNumber(exv) ? (long)exv->valuedouble : 0;
  req.s3 = jbool(c, "s3");
  ncases++;
  if (sigv4_sign(&req, &res, err, sizeof(err)) != 0) {
    note_failure(id, "sign() result", err, "success");
    free(body);
    return;
  }
  if (strcmp(res.canonical_request, jstr(exp, "canonical_request")) != 0)
    note_failure(id, "canonical request", res.canonical_request, jstr(exp, "canonical_request"));
  else if (strcmp(res.string_to_sign, jstr(exp, "string_to_sign")) != 0)
    note_failure(id, "string to sign", res.string_to_sign, jstr(exp, "string_to_sign"));
  else if (strcmp(res.signature, jstr(exp, "signature")) != 0)
    note_failure(id, "signature", res.signature, jstr(exp, "signature"));
  else if (req.presign) {
    if (res.url == NULL || strcmp(res.url, jstr(exp, "url")) != 0)
      note_failure(id, "presigned url", res.url, jstr(exp, "url"));
  } else {
    const char *want_sha = jstr(exp, "content_sha256"), *got_sha = added(&res, "X-Amz-Content-SHA256");
    int has_caller_sha = 0;
    size_t i;
    for (i = 0; i < nh; i++)
      if (strcasecmp(hdrs[i].name, "x-amz-content-sha256") == 0)
        has_caller_sha = 1;
    if (added(&res, "Authorization") == NULL ||
        strcmp(added(&res, "Authorization"), jstr(exp, "authorization")) != 0)
      note_failure(id, "authorization", added(&res, "Authorization"), jstr(exp, "authorization"));
    else if (strcmp(added(&res, "X-Amz-Date"), jstr(exp, "x_amz_date")) != 0)
      note_failure(id, "x-amz-date", added(&res, "X-Amz-Date"), jstr(exp, "x_amz_date"));
    else if (!has_caller_sha && want_sha != NULL &&
             (got_sha == NULL || strcmp(got_sha, want_sha) != 0))
      note_failure(id, "x-amz-content-sha256", got_sha, want_sha);
    else if ((req.session_token != NULL) != (added(&res, "X-Amz-Security-Token") != NULL))
      note_failure(id, "x-amz-security-token presence", "", "");
  }
  sigv4_result_free(&res);
  free(body);
}

static void sigv4_matches_botocore_on_random_requests (void) {
  const char *root = getenv("PGTIDE_TEST_ROOT");
  const char *count = getenv("SIGV4_CASES");
  const char *seed = getenv("SIGV4_SEED");
  char cmd[1024], *line = NULL;
  size_t cap = 0;
  FILE *p;
  int seen_seed = 0;
  snprintf(cmd, sizeof(cmd), "python3 %s/tests/lib/sigv4_oracle.py --count %s %s%s 2>&1",
           root ? root : ".", count ? count : "3000", seed ? "--seed " : "", seed ? seed : "");
  p = popen(cmd, "r");
  if (p == NULL)
    SKIP("cannot run python3");
  while (getline(&line, &cap, p) > 0) {
    cJSON *c = cJSON_Parse(line);
    if (c == NULL) {
      fprintf(stderr, "oracle: %s", line);
      test_failed_checks++;
      continue;
    }
    if (jstr(c, "skip") != NULL) {
      static char why[300];
      snprintf(why, sizeof(why), "%s", jstr(c, "skip"));
      cJSON_Delete(c);
      free(line);
      pclose(p);
      SKIP(why);
    }
    if (cJSON_GetObjectItemCaseSensitive(c, "seed") != NULL) {
      fprintf(stderr, "oracle seed %d (rerun with SIGV4_SEED=%d)\n",
              cJSON_GetObjectItemCaseSensitive(c, "seed")->valueint,
              cJSON_GetObjectItemCaseSensitive(c, "seed")->valueint);
      seen_seed = 1;
    } else {
      check_case(c);
    }
    cJSON_Delete(c);
  }
  free(line);
  CHECK_INT(pclose(p), 0);
  CHECK(seen_seed);
  fprintf(stderr, "%d cases compared with botocore, %d differ\n", ncases, nfailed);
  if (first_failure[0] != '\0')
    fprintf(stderr, "%s\n", first_failure);
  CHECK(ncases >= 1000 || (count != NULL && ncases == atoi(count)));
  CHECK_INT(nfailed, 0);
}

int main (void) {
  RUN_TEST(sigv4_matches_botocore_on_random_requests);
  return TEST_SUMMARY();
}
