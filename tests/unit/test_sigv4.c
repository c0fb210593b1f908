/*
** test_sigv4.c
** SigV4 primitives and the published AWS examples (signing-key
** derivation, the S3 GetObject header and presigned-URL examples, the
** v4 suite's get-vanilla case), plus the path and query rules.
*/
#include <string.h>

#include "aws/sigv4.h"
#include "test.h"

#define DOC_AKID "AKIAIOSFODNN7EXAMPLE"
#define DOC_SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

static const char *added (const SigV4Result *res, const char *name) {
  size_t i;
  for (i = 0; i < res->nheaders; i++)
    if (strcmp(res->headers[i].name, name) == 0)
      return res->headers[i].value;
  return NULL;
}

static void sha256_of_empty_string (void) {
  char hex[SIGV4_HEX_LEN];
  sigv4_sha256_hex("", 0, hex);
  CHECK_STR(hex, SIGV4_EMPTY_SHA256);
  sigv4_sha256_hex("{}", 2, hex);
  CHECK_STR(hex, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
}

/* Example from the AWS documentation on deriving a SigV4 signing key */
static void signing_key_matches_aws_example (void) {
  unsigned char key[32];
  char hex[SIGV4_HEX_LEN];
  sigv4_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1",
                    "iam", key);
  sigv4_hex(key, sizeof(key), hex);
  CHECK_STR(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

/* The S3 documentation's "GET Object" example (header signing). */
static void s3_get_object_doc_example (void) {
  SigV4Header h[] = {{"Range", "bytes=0-9"}};
  SigV4Request r;
  SigV4Result res;
  char err[128];
  memset(&r, 0, sizeof(r));
  r.method = "GET";
  r.url = "https://examplebucket.s3.amazonaws.com/test.txt";
  r.headers = h;
  r.nheaders = 1;
  r.service = "s3";
  r.region = "us-east-1";
  r.access_key_id = DOC_AKID;
  r.secret_access_key = DOC_SECRET;
  r.time = 1369353600;           /* 20130524T000000Z */
  r.s3 = 1;
  CHECK_INT(sigv4_sign(&r, &res, err, sizeof(err)), 0);
  CHECK_STR(res.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  CHECK_STR(added(&res, "X-Amz-Content-SHA256"), SIGV4_EMPTY_SHA256);
  CHECK_STR(added(&res, "X-Amz-Date"), "20130524T000000Z");
  CHECK_STR(added(&res, "Authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  sigv4_result_free(&res);
}

/* The S3 documentation's presigned URL example (24 hours). */
static void s3_presigned_doc_example (void) {
  SigV4Request r;
  SigV4Result res;
  char err[128];
  memset(&r, 0, sizeof(r));
  r.method = "GET";
  r.url = "https://examplebucket.s3.amazonaws.com/test.txt";
  r.service = "s3";
  r.region = "us-east-1";
  r.access_key_id = DOC_AKID;
  r.secret_access_key = DOC_SECRET;
  r.time = 1369353600;
  r.presign = 1;
  r.expires = 86400;
  r.s3 = 1;
  CHECK_INT(sigv4_sign(&r, &res, err, sizeof(err)), 0);
  CHECK_STR(res.signature, "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
  CHECK_STR(res.url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
            "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404");
  CHECK(res.nheaders == 0);
  sigv4_result_free(&res);
}

/* The v4 test suite's get-vanilla case (service "service"). */
static void suite_get_vanilla (void) {
  SigV4Header h[] = {{"Host", "example.amazonaws.com"}, {"X-Amz-Date", "20150830T123600Z"}};
  SigV4Request r;
  SigV4Result res;
  char err[128];
  memset(&r, 0, sizeof(r));
  r.method = "GET";
  r.url = "/";
  r.headers = h;
  r.nheaders = 2;
  r.service = "service";
  r.region = "us-east-1";
  r.access_key_id = DOC_AKID;
  r.secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
  r.time = 1440938160;           /* 20150830T123600Z */
  CHECK_INT(sigv4_sign(&r, &res, err, sizeof(err)), 0);
  CHECK_STR(res.canonical_request,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
            "host;x-amz-date\n" SIGV4_EMPTY_SHA256);
  CHECK_STR(res.signature, "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
  sigv4_result_free(&res);
}

static void path_normalisation (void) {
  static const char *const cases[][2] = {
    {"", "/"}, {"/", "/"}, {"/a/./b/../c", "/a/c"}, {"//a//b//", "/a/b/"},
    {"/..", "/"}, {"/a/..", "/"}, {"/a/b/..", "/a"}, {"/./", "/"},
    {"/example/..//photo", "/photo"}, {"/a/.../b", "/a/.../b"},
  };
  size_t i;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    Buf b = BUF_INIT;
    sigv4_normalize_path(&b, cases[i][0], strlen(cases[i][0]));
    CHECK_STR(buf_cstr(&b), cases[i][1]);
    buf_free(&b);
  }
}

static void query_canonicalisation (void) {
  static const char *const cases[][2] = {
    {"Param-3=Value3&Param=Value2&%E1%88%B4=Value1",
     "%E1%88%B4=Value1&Param=Value2&Param-3=Value3"},
    {"versions&max-keys=1000", "max-keys=1000&versions="},
    {"b=2&a=2&a=1", "a=1&a=2&b=2"},
    {"k=a%2fb%7e", "k=a%2Fb~"},          /* re-encoded canonically */
    {"", ""}, {"&&x=1&", "x=1"},
  };
  size_t i;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    Buf b = BUF_INIT;
    sigv4_canonical_query(&b, cases[i][0], strlen(cases[i][0]));
    CHECK_STR(buf_cstr(&b), cases[i][1]);
    buf_free(&b);
  }
}

static void url_splitting (void) {
  static const char *const cases[][5] = {
    {"https://Host.Example.com:443/a?b=1", "https", "host.example.com", "/a", "b=1"},
    {"http://127.0.0.1:5055/", "http", "127.0.0.1:5055", "/", ""},
    {"http://user:pw@h:80/x#frag", "http", "h", "/x", ""},
    {"http://[::1]:9000/p?q", "http", "[::1]:9000", "/p", "q"},
    {"https://h", "https", "h", "", ""},
    {"/rel?x=y", "", "", "/rel", "x=y"},
  };
  size_t i;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    Buf s = BUF_INIT, h = BUF_INIT, p = BUF_INIT, q = BUF_INIT;
    CHECK_INT(sigv4_split_url(cases[i][0], &s, &h, &p, &q), 0);
    CHECK_STR(buf_cstr(&s), cases[i][1]);
    CHECK_STR(buf_cstr(&h), cases[i][2]);
    CHECK_STR(buf_cstr(&p), cases[i][3]);
    CHECK_STR(buf_cstr(&q), cases[i][4]);
    buf_free(&s); buf_free(&h); buf_free(&p); buf_free(&q);
  }
  {
    Buf s = BUF_INIT, h = BUF_INIT, p = BUF_INIT, q = BUF_INIT;
    CHECK_INT(sigv4_split_url("no-scheme", &s, &h, &p, &q), -1);
    CHECK_INT(sigv4_split_url("http://h:99999999/", &s, &h, &p, &q), -1);
    buf_free(&s); buf_free(&h); buf_free(&p); buf_free(&q);
  }
}

static void session_token_and_errors (void) {
  SigV4Request r;
  SigV4Result res;
  char err[128];
  memset(&r, 0, sizeof(r));
  r.method = "POST";
  r.url = "https://sts.us-east-1.amazonaws.com/";
  r.body = "Action=GetCallerIdentity&Version=2011-06-15";
  r.body_len = strlen(r.body);
  r.service = "sts";
  r.region = "us-east-1";
  r.access_key_id = DOC_AKID;
  r.secret_access_key = DOC_SECRET;
  r.session_token = "TOKEN-VALUE";
  r.time = 1440938160;
  CHECK_INT(sigv4_sign(&r, &res, err, sizeof(err)), 0);
  CHECK_STR(added(&res, "X-Amz-Security-Token"), "TOKEN-VALUE");
  CHECK(strstr(res.canonical_request, "x-amz-security-token:TOKEN-VALUE\n") != NULL);
  CHECK(added(&res, "X-Amz-Content-SHA256") == NULL);   /* not S3 */
  sigv4_result_free(&res);

  r.secret_access_key = NULL;
  CHECK_INT(sigv4_sign(&r, &res, err, sizeof(err)), -1);
  CHECK(strstr(err, "credentials") != NULL);
  r.secret_access_key = DOC_SECRET;
  r.url = "/relative";
  CHECK_INT(sigv4_sign(&r, &res, err, sizeof(err)), -1);
  CHECK(strstr(err, "Host") != NULL);
}

int main (void) {
  RUN_TEST(sha256_of_empty_string);
  RUN_TEST(signing_key_matches_aws_example);
  RUN_TEST(s3_get_object_doc_example);
  RUN_TEST(s3_presigned_doc_example);
  RUN_TEST(suite_get_vanilla);
  RUN_TEST(path_normalisation);
  RUN_TEST(query_canonicalisation);
  RUN_TEST(url_splitting);
  RUN_TEST(session_token_and_errors);
  return TEST_SUMMARY();
}
