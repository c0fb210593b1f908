/*
** test_aws_proto.c
** Model-free protocol pieces: error documents of each protocol, retry
** classification and backoff, timestamps, base64/MD5, the INI reader,
** profile/region/endpoint resolution, credential documents (process,
** container, IMDS, STS), command splitting, and the parts of the
** credential chain that need no network (environment, files, process).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aws/config.h"
#include "aws/creds.h"
#include "aws/proto.h"
#include "aws/request.h"
#include "test.h"
#include "util/redact.h"

static void json_errors (void) {
  AwsError e;
  HttpField h[] = {{"x-amzn-RequestId", "req-123"}};
  const char *body = "{\"__type\":\"com.amazonaws.dms#ResourceNotFoundFault:http://x\","
                     "\"message\":\"Task not found\"}";
  memset(&e, 0, sizeof(e));
  aws_error_from_response(&e, "json", 400, h, 1, body, strlen(body));
  CHECK_STR(e.code, "ResourceNotFoundFault");
  CHECK_STR(e.message, "Task not found");
  CHECK_STR(e.request_id, "req-123");
  CHECK_INT(e.status, 400);
  CHECK(!e.retryable);
  body = "{\"__type\":\"ThrottlingException\",\"Message\":\"Rate exceeded\"}";
  aws_error_from_response(&e, "json", 400, NULL, 0, body, strlen(body));
  CHECK_STR(e.code, "ThrottlingException");
  CHECK_STR(e.message, "Rate exceeded");
  CHECK(e.retryable && e.throttling);
  {
    HttpField q[] = {{"x-amzn-query-error", "Throttling;Sender"}};
    body = "{\"__type\":\"com.amazon.coral.availability#ThrottlingException\"}";
    aws_error_from_response(&e, "json", 400, q, 1, body, strlen(body));
    CHECK_STR(e.code, "Throttling");
  }
}

static void xml_errors (void) {
  AwsError e;
  const char *q = "<ErrorResponse xmlns=\"x\"><Error><Type>Sender</Type><Code>ValidationError"
                  "</Code><Message>Stack with id nope does not exist</Message></Error>"
                  "<RequestId>abc</RequestId></ErrorResponse>";
  const char *ec2 = "<Response><Errors><Error><Code>InvalidPermission.Duplicate</Code>"
                    "<Message>dup</Message></Error></Errors><RequestID>r2</RequestID>"
                    "</Response>";
  const char *s3 = "<Error><Code>NoSuchBucket</Code><Message>no bucket</Message>"
                   "<RequestId>r3</RequestId></Error>";
  const char *slow = "<Error><Code>SlowDown</Code><Message>x</Message></Error>";
  memset(&e, 0, sizeof(e));
  aws_error_from_response(&e, "query", 400, NULL, 0, q, strlen(q));
  CHECK_STR(e.code, "ValidationError");
  CHECK_STR(e.message, "Stack with id nope does not exist");
  CHECK_STR(e.request_id, "abc");
  aws_error_from_response(&e, "ec2", 400, NULL, 0, ec2, strlen(ec2));
  CHECK_STR(e.code, "InvalidPermission.Duplicate");
  CHECK_STR(e.request_id, "r2");
  aws_error_from_response(&e, "rest-xml", 404, NULL, 0, s3, strlen(s3));
  CHECK_STR(e.code, "NoSuchBucket");
  CHECK_STR(e.request_id, "r3");
  aws_error_from_response(&e, "rest-xml", 503, NULL, 0, slow, strlen(slow));
  CHECK(e.retryable && e.throttling);
}

static void bare_and_garbage_errors (void) {
  AwsError e;
  const char *html = "<html><body>502 Bad Gateway password=hunter2</body>";
  memset(&e, 0, sizeof(e));
  aws_error_from_response(&e, "rest-xml", 404, NULL, 0, "", 0);
  CHECK_STR(e.code, "404");
  CHECK_STR(e.message, "HTTP 404 Not Found");
  CHECK(!e.retryable);
  aws_error_from_response(&e, "query", 502, NULL, 0, html, strlen(html));
  CHECK_STR(e.code, "502");
  CHECK(strstr(e.message, "unexpected response body") != NULL);
  CHECK(strstr(e.message, "hunter2") == NULL);     /* redacted excerpt */
  CHECK(e.retryable);
  aws_error_from_response(&e, "json", 500, NULL, 0, "{not json", 9);
  CHECK_STR(e.code, "500");
  CHECK(e.retryable);
  aws_error_from_response(&e, "json", 400, NULL, 0, "[1,2]", 5);
  CHECK_STR(e.code, "400");
}

static void retry_classification_and_backoff (void) {
  CHECK(aws_is_throttling_code("RequestLimitExceeded"));
  CHECK(aws_is_throttling_code("Throttling"));
  CHECK(!aws_is_throttling_code("AccessDenied"));
  CHECK(aws_is_transient_code("RequestTimeout"));
  CHECK(aws_backoff_delay(1, 1.0, 20.0, 0.5) == 0.5);
  CHECK(aws_backoff_delay(3, 1.0, 20.0, 1.0) == 4.0);
  CHECK(aws_backoff_delay(10, 1.0, 20.0, 1.0) == 20.0);
  CHECK(aws_backoff_delay(60, 1.0, 20.0, 0.25) == 5.0);
  CHECK(aws_backoff_delay(2, 1.0, 20.0, 0.0) == 0.0);
}

static void timestamps (void) {
  double t;
  char buf[64];
  CHECK_INT(aws_time_parse("2026-01-01T00:00:00Z", &t), 0);
  CHECK(t == 1767225600.0);
  CHECK_INT(aws_time_parse("2026-01-01T01:30:00+01:30", &t), 0);
  CHECK(t == 1767225600.0);
  CHECK_INT(aws_time_parse("2026-01-01T00:00:00.250Z", &t), 0);
  CHECK(t == 1767225600.25);
  CHECK_INT(aws_time_parse("Thu, 01 Jan 2026 00:00:00 GMT", &t), 0);
  CHECK(t == 1767225600.0);
  CHECK_INT(aws_time_parse("1767225600.5", &t), 0);
  CHECK(t == 1767225600.5);
  CHECK_INT(aws_time_parse("2026-13-01T00:00:00Z", &t), -1);
  CHECK_INT(aws_time_parse("yesterday", &t), -1);
  CHECK_INT(aws_time_parse("", &t), -1);
  aws_time_iso8601(1767225600.0, buf);
  CHECK_STR(buf, "2026-01-01T00:00:00Z");
  aws_time_iso8601(1767225600.5, buf);
  CHECK_STR(buf, "2026-01-01T00:00:00.500Z");
  aws_time_rfc1123(1767225600.0, buf);
  CHECK_STR(buf, "Thu, 01 Jan 2026 00:00:00 GMT");
}

static void base64_and_md5 (void) {
  Buf b = BUF_INIT;
  char md5[32];
  aws_base64_encode(&b, "hello", 5);
  CHECK_STR(buf_cstr(&b), "aGVsbG8=");
  buf_reset(&b);
  CHECK_INT(aws_base64_decode(&b, "aGVsbG8=", 8), 0);
  CHECK_STR(buf_cstr(&b), "hello");
  buf_reset(&b);
  CHECK_INT(aws_base64_decode(&b, "aGV*", 4), -1);
  buf_free(&b);
  aws_md5_base64("", 0, md5);
  CHECK_STR(md5, "1B2M2Y8AsgTpgAmY7PhCfg==");
}

static void ini_reader (void) {
  IniFile f;
  const char *text =
    "# comment\n[default]\nregion = us-west-2\n; other\n"
    "[profile dev]\r\nRegion=eu-west-1\naws_access_key_id: AKIDEV\n"
    "s3 =\n  endpoint_url = http://127.0.0.1:9000\n  addressing_style=path\n"
    "[services local]\ndms =\n  endpoint_url = http://localhost:5055\n"
    "garbage line\n[broken\n";
  memset(&f, 0, sizeof(f));
  ini_parse(&f, text, strlen(text));
  CHECK_STR(ini_get(&f, "default", "region"), "us-west-2");
  CHECK_STR(ini_get(&f, "profile dev", "region"), "eu-west-1");
  CHECK_STR(ini_get(&f, "profile dev", "aws_access_key_id"), "AKIDEV");
  CHECK_STR(ini_get(&f, "profile dev", "s3.endpoint_url"), "http://127.0.0.1:9000");
  CHECK_STR(ini_get(&f, "profile dev", "s3.addressing_style"), "path");
  CHECK_STR(ini_get(&f, "services local", "dms.endpoint_url"), "http://localhost:5055");
  CHECK(ini_get(&f, "profile dev", "garbage line") == NULL);
  CHECK(ini_has_section(&f, "services local"));
  ini_free(&f);
}

/* Write 'text' to a temporary file; returns its path (static buffer). */
static const char *tmpfile_with (const char *name, const char *text) {
  static char paths[4][256];
  static int n;
  char *p = paths[n++ % 4];
  const char *dir = getenv("TEST_TMP") ? getenv("TEST_TMP") : "/tmp";
  FILE *fp;
  snprintf(p, 256, "%s/aws-proto-%d-%s", dir, (int)getpid(), name);
  fp = fopen(p, "w");
  fputs(text, fp);
  fclose(fp);
  return p;
}

static void clear_env (void) {
  static const char *const vars[] = {
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DATABASE_MIGRATION_SERVICE", "AWS_ENDPOINT_URL_SFN",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CREDENTIAL_EXPIRATION", NULL
  };
  int i;
  for (i = 0; vars[i] != NULL; i++)
    unsetenv(vars[i]);
  setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
}

static void profiles_region_endpoints (void) {
  AwsConfig c;
  AwsError e;
  const char *url;
  clear_env();
  setenv("AWS_CONFIG_FILE", tmpfile_with("config",
    "[default]\nregion = us-west-2\n"
    "[profile dev]\nregion = eu-west-1\nservices = local\nendpoint_url = http://global:1\n"
    "[profile bad]\nservices = missing\n"
    "[services local]\ndatabase_migration_service =\n  endpoint_url = http://dms:2\n"), 1);
  setenv("AWS_SHARED_CREDENTIALS_FILE", tmpfile_with("creds", "[dev]\nregion = ap-south-1\n"),
         1);
  memset(&e, 0, sizeof(e));
  CHECK_INT(aws_config_load(&c, NULL, &e), 0);
  CHECK_STR(c.profile, "default");
  CHECK_STR(aws_config_region(&c, NULL), "us-west-2");
  CHECK_STR(aws_config_region(&c, "ca-central-1"), "ca-central-1");
  setenv("AWS_DEFAULT_REGION", "sa-east-1", 1);
  CHECK_STR(aws_config_region(&c, NULL), "sa-east-1");
  setenv("AWS_REGION", "me-south-1", 1);
  CHECK_STR(aws_config_region(&c, NULL), "me-south-1");
  unsetenv("AWS_REGION");
  unsetenv("AWS_DEFAULT_REGION");
  CHECK_INT(aws_config_endpoint(&c, "sts", &url, &e), 0);
  CHECK(url == NULL);
  aws_config_free(&c);

  setenv("AWS_PROFILE", "dev", 1);
  CHECK_INT(aws_config_load(&c, NULL, &e), 0);
  CHECK(!c.profile_explicit);
  CHECK_STR(aws_config_region(&c, NULL), "ap-south-1");    /* credentials file wins */
  CHECK_INT(aws_config_endpoint(&c, "database_migration_service", &url, &e), 0);
  CHECK_STR(url, "http://dms:2");
  CHECK_INT(aws_config_endpoint(&c, "sfn", &url, &e), 0);
  CHECK_STR(url, "http://global:1");
  setenv("AWS_ENDPOINT_URL", "http://env:3", 1);
  CHECK_INT(aws_config_endpoint(&c, "database_migration_service", &url, &e), 0);
  CHECK_STR(url, "http://env:3");
  setenv("AWS_ENDPOINT_URL_SFN", "http://sfn:4", 1);
  CHECK_INT(aws_config_endpoint(&c, "sfn", &url, &e), 0);
  CHECK_STR(url, "http://sfn:4");
  setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true", 1);
  CHECK_INT(aws_config_endpoint(&c, "sfn", &url, &e), 0);
  CHECK(url == NULL);
  aws_config_free(&c);
  clear_env();

  CHECK_INT(aws_config_load(&c, "bad", &e), 0);
  CHECK(c.profile_explicit);
  CHECK_INT(aws_config_endpoint(&c, "sts", &url, &e), -1);
  CHECK_STR(e.code, "InvalidConfig");
  aws_config_free(&c);
  CHECK_INT(aws_config_load(&c, "nope", &e), -1);
  CHECK_STR(e.code, "ProfileNotFound");
  aws_config_free(&c);
}

static void credential_documents (void) {
  AwsCreds c;
  char err[200];
  const char *imds = "{\"Code\":\"Success\",\"Type\":\"AWS-HMAC\",\"AccessKeyId\":\"ASIA1\","
                     "\"SecretAccessKey\":\"sec1\",\"Token\":\"tok1\","
                     "\"Expiration\":\"2030-01-01T00:00:00Z\"}";
  const char *proc = "{\"Version\":1,\"AccessKeyId\":\"AKIA2\",\"SecretAccessKey\":\"sec2\"}";
  const char *sts = "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>ASIA3"
                    "</AccessKeyId><SecretAccessKey>sec3</SecretAccessKey><SessionToken>tok3"
                    "</SessionToken><Expiration>2030-01-01T00:00:00Z</Expiration>"
                    "</Credentials></AssumeRoleResult></AssumeRoleResponse>";
  memset(&c, 0, sizeof(c));
  CHECK_INT(aws_creds_from_json("imds", imds, strlen(imds), &c, err, sizeof(err)), 0);
  CHECK_STR(c.access_key_id, "ASIA1");
  CHECK_STR(c.session_token, "tok1");
  CHECK(c.expiration == 1893456000.0);
  CHECK_INT(aws_creds_from_json("process", proc, strlen(proc), &c, err, sizeof(err)), 0);
  CHECK_STR(c.access_key_id, "AKIA2");
  CHECK(c.session_token == NULL && c.expiration == 0);
  CHECK_INT(aws_creds_from_json("container", proc, strlen(proc), &c, err, sizeof(err)), -1);
  CHECK(strstr(err, "Token or Expiration") != NULL);
  CHECK_INT(aws_creds_from_json("process", "{\"Version\":2}", 13, &c, err, sizeof(err)), -1);
  CHECK(strstr(err, "Version") != NULL);
  CHECK_INT(aws_creds_from_json("imds", "{\"Code\":\"Expired\"}", 18, &c, err, sizeof(err)),
            -1);
  CHECK_INT(aws_creds_from_json("imds", "nope", 4, &c, err, sizeof(err)), -1);
  CHECK_INT(aws_creds_from_sts_xml("AssumeRoleResult", sts, strlen(sts), &c, err,
                                   sizeof(err)), 0);
  CHECK_STR(c.secret_access_key, "sec3");
  CHECK_INT(aws_creds_from_sts_xml("AssumeRoleWithWebIdentityResult", sts, strlen(sts), &c,
                                   err, sizeof(err)), -1);
  aws_creds_clear(&c);
}

static void command_splitting (void) {
  char **argv = aws_split_command("/bin/tool --arg 'two words' \"q\\\"d\" a\\ b ''");
  CHECK(argv != NULL);
  if (argv != NULL) {
    CHECK_STR(argv[0], "/bin/tool");
    CHECK_STR(argv[1], "--arg");
    CHECK_STR(argv[2], "two words");
    CHECK_STR(argv[3], "q\"d");
    CHECK_STR(argv[4], "a b");
    CHECK_STR(argv[5], "");
    CHECK(argv[6] == NULL);
  }
  aws_argv_free(argv);
  CHECK(aws_split_command("a 'unterminated") == NULL);
}

static int resolve (const char *profile, AwsCreds *c, AwsError *e) {
  AwsSession s;
  AwsSessionOptions o;
  int rc;
  memset(&o, 0, sizeof(o));
  o.profile = profile;
  memset(e, 0, sizeof(*e));
  if (aws_session_init(&s, &o, e) != 0)
    return -1;
  rc = aws_creds_resolve(&s, c, e);
  aws_session_free(&s);
  return rc;
}

static void chain_without_network (void) {
  AwsCreds c;
  AwsError e;
  const char *script = tmpfile_with("proc.sh",
    "#!/bin/sh\n"
    "if [ \"$1\" = fail ]; then echo 'no luck today' >&2; exit 3; fi\n"
    "echo '{\"Version\": 1, \"AccessKeyId\": \"AKIAPROC\", \"SecretAccessKey\": \"'$1'\","
    " \"SessionToken\": \"tokproc\", \"Expiration\": \"2031-01-01T00:00:00Z\"}'\n");
  Buf cfg = BUF_INIT;
  chmod(script, 0700);
  clear_env();
  buf_printf(&cfg,
    "[profile proc]\ncredential_process = %s 'proc secret'\n"
    "[profile procfail]\ncredential_process = %s fail\n"
    "[profile cfgkeys]\naws_access_key_id = AKIACFG\naws_secret_access_key = cfgsecret\n"
    "[profile both]\naws_access_key_id = AKIACFG2\naws_secret_access_key = s2\n"
    "credential_process = %s x\n"
    "[profile loop1]\nrole_arn = arn:aws:iam::1:role/a\nsource_profile = loop2\n"
    "[profile loop2]\nrole_arn = arn:aws:iam::1:role/b\nsource_profile = loop1\n"
    "[profile nosrc]\nrole_arn = arn:aws:iam::1:role/c\n"
    "[profile sso]\nsso_session = corp\n", script, script, script);
  setenv("AWS_CONFIG_FILE", tmpfile_with("config2", cfg.data), 1);
  setenv("AWS_SHARED_CREDENTIALS_FILE", tmpfile_with("creds2",
    "[default]\naws_access_key_id = AKIAFILE\naws_secret_access_key = filesecret\n"
    "[both]\naws_access_key_id = AKIAFILE2\naws_secret_access_key = s3\n"
    "[partial]\naws_access_key_id = AKIAPART\n"), 1);
  buf_free(&cfg);
  memset(&c, 0, sizeof(c));

  CHECK_INT(resolve(NULL, &c, &e), 0);                       /* credentials file */
  CHECK_STR(c.access_key_id, "AKIAFILE");
  setenv("AWS_ACCESS_KEY_ID", "AKIAENV", 1);                 /* environment first */
  setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
  setenv("AWS_SESSION_TOKEN", "envtoken", 1);
  CHECK_INT(resolve(NULL, &c, &e), 0);
  CHECK_STR(c.access_key_id, "AKIAENV");
  CHECK_STR(c.session_token, "envtoken");
  CHECK_STR(c.source, "environment");
  CHECK_INT(resolve("cfgkeys", &c, &e), 0);                  /* explicit profile skips env */
  CHECK_STR(c.access_key_id, "AKIACFG");
  unsetenv("AWS_SECRET_ACCESS_KEY");
  CHECK_INT(resolve(NULL, &c, &e), -1);
  CHECK_STR(e.code, "PartialCredentials");
  clear_env();

  CHECK_INT(resolve("proc", &c, &e), 0);
  CHECK_STR(c.access_key_id, "AKIAPROC");
  CHECK_STR(c.secret_access_key, "proc secret");
  CHECK(c.expiration == 1924992000.0);
  CHECK(strstr(c.source, "credential_process") != NULL);
  CHECK_INT(resolve("procfail", &c, &e), -1);
  CHECK_STR(e.code, "CredentialProcessError");
  CHECK(strstr(e.message, "no luck today") != NULL);
  CHECK(strstr(e.message, "exit status 3") != NULL);
  CHECK_INT(resolve("both", &c, &e), 0);                     /* credentials file first */
  CHECK_STR(c.access_key_id, "AKIAFILE2");
  CHECK_INT(resolve("partial", &c, &e), -1);
  CHECK_STR(e.code, "PartialCredentials");
  CHECK_INT(resolve("loop1", &c, &e), -1);
  CHECK(strstr(e.message, "loops back") != NULL);
  CHECK_INT(resolve("nosrc", &c, &e), -1);
  CHECK(strstr(e.message, "source_profile") != NULL);
  CHECK_INT(resolve("sso", &c, &e), -1);
  CHECK(strstr(e.message, "SSO") != NULL);
  setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/creds", 1);
  CHECK_INT(resolve(NULL, &c, &e), -1);
  CHECK_STR(e.code, "NoCredentials");
  aws_creds_clear(&c);
  /* secrets seen are masked from then on */
  {
    char *r = redact_str("value proc secret here");
    CHECK(strstr(r, "proc secret") == NULL);
    free(r);
  }
}

/* Remove the temporary files tmpfile_with() wrote. */
static void cleanup (void) {
  static const char *const names[] = {"config", "creds", "proc.sh", "config2", "creds2", NULL};
  const char *dir = getenv("TEST_TMP") ? getenv("TEST_TMP") : "/tmp";
  char p[256];
  int i;
  for (i = 0; names[i] != NULL; i++) {
    snprintf(p, sizeof(p), "%s/aws-proto-%d-%s", dir, (int)getpid(), names[i]);
    unlink(p);
  }
}

int main (void) {
  atexit(cleanup);
  RUN_TEST(json_errors);
  RUN_TEST(xml_errors);
  RUN_TEST(bare_and_garbage_errors);
  RUN_TEST(retry_classification_and_backoff);
  RUN_TEST(timestamps);
  RUN_TEST(base64_and_md5);
  RUN_TEST(ini_reader);
  RUN_TEST(profiles_region_endpoints);
  RUN_TEST(credential_documents);
  RUN_TEST(command_splitting);
  RUN_TEST(chain_without_network);
  return TEST_SUMMARY();
}
