/*
** creds.c
** The credential provider chain (see creds.h for the order).  Each
** provider returns 1 (found: 'out' filled), 0 (not configured here: try
** the next one) or -1 (configured but failing: stop with 'err' set, as
** the AWS CLI does, rather than silently using other credentials).
*/
#include "aws/creds.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "aws/request.h"
#include "aws/sigv4.h"
#include "aws/xml.h"
#include "util/log.h"
#include "util/redact.h"

#define MAX_ROLE_CHAIN 8
#define PROCESS_TIMEOUT_S 60
#define PROCESS_MAX_OUTPUT (1u << 20)

/* Free the strings (the secret ones wiped first) and zero c. */
void aws_creds_clear (AwsCreds *c) {
  if (c->secret_access_key != NULL)
    explicit_bzero(c->secret_access_key, strlen(c->secret_access_key));
  if (c->session_token != NULL)
    explicit_bzero(c->session_token, strlen(c->session_token));
  free(c->access_key_id);
  free(c->secret_access_key);
  free(c->session_token);
  memset(c, 0, sizeof(*c));
}

/* Take ownership of the strings and register the secrets for redaction. */
void aws_creds_set (AwsCreds *c, char *akid, char *secret, char *token, double expiration,
                    const char *source) {
  aws_creds_clear(c);
  c->access_key_id = akid;
  c->secret_access_key = secret;
  c->session_token = (token != NULL && token[0] != '\0') ? token : NULL;
  if (token != NULL && c->session_token == NULL)
    free(token);
  c->expiration = expiration;
  snprintf(c->source, sizeof(c->source), "%s", source);
  redact_register(secret);
  redact_register(c->session_token);
}

void aws_creds_copy (AwsCreds *dst, const AwsCreds *src) {
  aws_creds_set(dst, xstrdup(src->access_key_id), xstrdup(src->secret_access_key),
                src->session_token ? xstrdup(src->session_token) : NULL, src->expiration,
                src->source);
}

static int set_err (char *err, size_t errlen, const char *msg) {
  if (err != NULL && errlen > 0)
    snprintf(err, errlen, "%s", msg);
  return -1;
}

/*{====================================================================
** Parsers (Lua-free, fuzzed)
** =====================================================================*/

static const char *jstring (const cJSON *o, const char *k) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/*
** Parse credential JSON (credential_process, container endpoint, IMDS):
** AccessKeyId / SecretAccessKey / Token or SessionToken / Expiration;
** credential_process output must carry Version 1.  0 on success, else
** -1 with a message in err.
*/
int aws_creds_from_json (const char *kind, const char *body, size_t len, AwsCreds *out,
                         char *err, size_t errlen) {
  cJSON *doc = cJSON_ParseWithLength(body, len);
  const char *akid, *secret, *token, *exp, *code;
  double expiration = 0;
  int process = strcmp(kind, "process") == 0;
  int rc = -1;
  if (doc == NULL || !cJSON_IsObject(doc)) {
    set_err(err, errlen, "response is not a JSON object");
    goto done;
  }
  if (process) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, "Version");
    if (!cJSON_IsNumber(v) || v->valuedouble != 1) {
      set_err(err, errlen, "unsupported Version (must be 1)");
      goto done;
    }
  }
  code = jstring(doc, "Code");
  if (strcmp(kind, "imds") == 0 && code != NULL && strcmp(code, "Success") != 0) {
    char m[160];
    snprintf(m, sizeof(m), "instance metadata returned Code %.60s", code);
    set_err(err, errlen, m);
    goto done;
  }
  akid = jstring(doc, "AccessKeyId");
  secret = jstring(doc, "SecretAccessKey");
  token = jstring(doc, process ? "SessionToken" : "Token");
  exp = jstring(doc, "Expiration");
  if (akid == NULL || secret == NULL || akid[0] == '\0' || secret[0] == '\0') {
    set_err(err, errlen, "AccessKeyId or SecretAccessKey missing");
    goto done;
  }
  if (!process && (token == NULL || exp == NULL)) {
    set_err(err, errlen, "Token or Expiration missing");
    goto done;
  }
  if (exp != NULL && aws_time_parse(exp, &expiration) != 0) {
    set_err(err, errlen, "Expiration is not a timestamp");
    goto done;
  }
  aws_creds_set(out, xstrdup(akid), xstrdup(secret), token ? xstrdup(token) : NULL,
                expiration, kind);
  rc = 0;
done:
  cJSON_Delete(doc);
  return rc;
}

/* Parse an STS <XResponse><XResult><Credentials> document ('result' is
   "AssumeRoleResult" or "AssumeRoleWithWebIdentityResult"). */
int aws_creds_from_sts_xml (const char *result, const char *body, size_t len, AwsCreds *out,
                            char *err, size_t errlen) {
  char perr[160];
  XmlNode *root = xml_parse(body, len, perr, sizeof(perr));
  const XmlNode *c;
  const char *akid, *secret, *token, *exp;
  double expiration = 0;
  int rc = -1;
  if (root == NULL) {
    char m[200];
    snprintf(m, sizeof(m), "STS response is not XML: %s", perr);
    return set_err(err, errlen, m);
  }
  c = xml_path(xml_child(root, result), "Credentials");
  akid = xml_path_text(c, "AccessKeyId");
  secret = xml_path_text(c, "SecretAccessKey");
  token = xml_path_text(c, "SessionToken");
  exp = xml_path_text(c, "Expiration");
  if (akid == NULL || secret == NULL || token == NULL || akid[0] == '\0' ||
      secret[0] == '\0') {
    set_err(err, errlen, "STS response has no Credentials");
  } else if (exp != NULL && aws_time_parse(exp, &expiration) != 0) {
    set_err(err, errlen, "STS Expiration is not a timestamp");
  } else {
    aws_creds_set(out, xstrdup(akid), xstrdup(secret), xstrdup(token), expiration, result);
    rc = 0;
  }
  xml_free(root);
  return rc;
}

/* Split a command line shell-style (quotes, backslashes), no expansion;
   NULL on an unterminated quote.  Caller frees with aws_argv_free(). */
char **aws_split_command (const char *cmd) {
  char **argv = NULL;
  size_t argc = 0;
  Buf word = BUF_INIT;
  int in_word = 0;
  const char *p = cmd;
  for (;;) {
    char ch = *p;
    if (ch == '\0' || isspace((unsigned char)ch)) {
      if (in_word) {
        argv = xrealloc(argv, (argc + 2) * sizeof(char *));
        argv[argc++] = xstrdup(buf_cstr(&word));
        buf_reset(&word);
        in_word = 0;
      }
      if (ch == '\0')
        break;
      p++;
    } else if (ch == '\'') {
      const char *q = strchr(p + 1, '\'');
      if (q == NULL)
        goto bad;
      buf_append(&word, p + 1, (size_t)(q - p - 1));
      in_word = 1;
      p = q + 1;
    } else if (ch == '"') {
      p++;
      while (*p != '"') {
        if (*p == '\0')
          goto bad;
        if (*p == '\\' && (p[1] == '"' || p[1] == '\\' || p[1] == '$' || p[1] == '`'))
          p++;
        buf_putc(&word, *p++);
      }
      p++;
      in_word = 1;
    } else if (ch == '\\') {
      if (p[1] == '\0')
        goto bad;
      buf_putc(&word, p[1]);
      p += 2;
      in_word = 1;
    } else {
      buf_putc(&word, ch);
      in_word = 1;
      p++;
    }
  }
  buf_free(&word);
  if (argv == NULL)
    argv = xcalloc(1, sizeof(char *));
  argv[argc] = NULL;
  return argv;
bad:
  buf_free(&word);
  if (argv != NULL) {
    argv[argc] = NULL;
    aws_argv_free(argv);
  }
  return NULL;
}

void aws_argv_free (char **argv) {
  size_t i;
  if (argv == NULL)
    return;
  for (i = 0; argv[i] != NULL; i++)
    free(argv[i]);
  free(argv);
}

/*}====================================================================*/

/*{====================================================================
** Providers
** =====================================================================*/

/*
** Credentials from an access key id and secret (and optional token):
** 1 with out set, 0 when both are absent, -1 when only one is given.
** 'where' names the source in messages.
*/
static int static_keys (const char *akid, const char *secret, const char *token,
                        const char *where, AwsCreds *out, AwsError *err) {
  if ((akid == NULL || akid[0] == '\0') && (secret == NULL || secret[0] == '\0'))
    return 0;
  if (akid == NULL || akid[0] == '\0' || secret == NULL || secret[0] == '\0') {
    aws_error_set(err, "PartialCredentials", 0, "%s has an access key id or a secret "
                  "access key but not both", where);
    return -1;
  }
  aws_creds_set(out, xstrdup(akid), xstrdup(secret),
                (token != NULL && token[0] != '\0') ? xstrdup(token) : NULL, 0, where);
  return 1;
}

/* AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (or
   AWS_SECURITY_TOKEN) and AWS_CREDENTIAL_EXPIRATION: 1, 0 or -1. */
static int from_env (AwsCreds *out, AwsError *err) {
  const char *token = getenv("AWS_SESSION_TOKEN"), *exp = getenv("AWS_CREDENTIAL_EXPIRATION");
  int r;
  if (token == NULL || token[0] == '\0')
    token = getenv("AWS_SECURITY_TOKEN");
  r = static_keys(getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"), token,
                  "environment", out, err);
  if (r == 1 && exp != NULL && exp[0] != '\0' && aws_time_parse(exp, &out->expiration) != 0) {
    aws_error_set(err, "InvalidConfig", 0, "AWS_CREDENTIAL_EXPIRATION is not a timestamp");
    return -1;
  }
  return r;
}

/* Static keys of a profile in the credentials file (config_file = 0)
   or the config file: 1, 0 or -1 as static_keys(). */
static int from_profile_file (AwsSession *s, const char *profile, int config_file,
                              AwsCreds *out, AwsError *err) {
  const char *(*get)(const AwsConfig *, const char *, const char *) =
    config_file ? aws_profile_config_get : aws_profile_credentials_get;
  const char *token = get(&s->cfg, profile, "aws_session_token");
  char where[200];
  if (token == NULL)
    token = get(&s->cfg, profile, "aws_security_token");
  snprintf(where, sizeof(where), "profile %s in %s", profile,
           config_file ? s->cfg.config.path : s->cfg.credentials.path);
  return static_keys(get(&s->cfg, profile, "aws_access_key_id"),
                     get(&s->cfg, profile, "aws_secret_access_key"), token, where, out, err);
}

/* Read all of fd into b (up to max bytes) until EOF or the deadline. */
static int drain (int fds[2], Buf out[2], time_t deadline) {
  int open_fds = 2, i;
  while (open_fds > 0) {
    struct pollfd p[2];
    int n = 0, map[2], wait_ms = (int)(deadline - time(NULL)) * 1000;
    if (wait_ms <= 0)
      return -1;
    for (i = 0; i < 2; i++)
      if (fds[i] >= 0) {
        p[n].fd = fds[i];
        p[n].events = POLLIN;
        map[n++] = i;
      }
    if (poll(p, (nfds_t)n, wait_ms) < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    for (i = 0; i < n; i++) {
      if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        char chunk[4096];
        ssize_t r = read(fds[map[i]], chunk, sizeof(chunk));
        if (r > 0 && out[map[i]].len < PROCESS_MAX_OUTPUT) {
          buf_append(&out[map[i]], chunk, (size_t)r);
        } else if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
          close(fds[map[i]]);
          fds[map[i]] = -1;
          open_fds--;
        }
      }
    }
  }
  return 0;
}

/*
** Run argv (no shell) with stdout and stderr captured into out[0] and
** out[1] (PROCESS_MAX_OUTPUT each), killing it after PROCESS_TIMEOUT_S.
** Returns 0 with waitpid's *status and *timed_out, or -1 with err when
** it could not be started.
*/
static int run_capture (char **argv, Buf out[2], int *status, int *timed_out, AwsError *err) {
  int po[2] = {-1, -1}, pe[2] = {-1, -1}, fds[2];
  pid_t pid;
  if (pipe(po) != 0 || pipe(pe) != 0) {
    aws_error_set(err, "CredentialProcessError", 0, "cannot create pipes: %s", strerror(errno));
    pid = -1;
  } else if ((pid = fork()) < 0) {
    aws_error_set(err, "CredentialProcessError", 0, "cannot fork: %s", strerror(errno));
  } else if (pid == 0) {
    dup2(po[1], 1);
    dup2(pe[1], 2);
    close(po[0]); close(po[1]); close(pe[0]); close(pe[1]);
    execvp(argv[0], argv);
    fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  if (po[1] >= 0) close(po[1]);
  if (pe[1] >= 0) close(pe[1]);
  if (pid < 0) {
    if (po[0] >= 0) close(po[0]);
    if (pe[0] >= 0) close(pe[0]);
    return -1;
  }
  fds[0] = po[0];
  fds[1] = pe[0];
  *timed_out = drain(fds, out, time(NULL) + PROCESS_TIMEOUT_S) != 0;
  if (fds[0] >= 0) close(fds[0]);
  if (fds[1] >= 0) close(fds[1]);
  if (*timed_out)
    kill(pid, SIGKILL);
  while (waitpid(pid, status, 0) < 0 && errno == EINTR)
    ;
  return 0;
}

/*
** credential_process: run the profile's command without a shell and
** read credentials from its stdout (the process credential JSON).
** Returns 1 with credentials, or -1 with err (bad command, failure,
** timeout, bad output: stderr is quoted, shortened).
*/
static int from_process (const char *cmd, const char *profile, AwsCreds *out, AwsError *err) {
  char **argv = aws_split_command(cmd);
  Buf bufs[2] = {BUF_INIT, BUF_INIT};
  char perr[200];
  int rc = -1, status = 0, timed_out = 0;
  if (argv == NULL || argv[0] == NULL) {
    aws_error_set(err, "InvalidConfig", 0, "profile %s: credential_process is empty or has "
                  "an unterminated quote", profile);
    aws_argv_free(argv);
    return -1;
  }
  if (run_capture(argv, bufs, &status, &timed_out, err) != 0) {
    /* err says why */
  } else if (timed_out) {
    aws_error_set(err, "CredentialProcessError", 0, "profile %s: credential_process %s did "
                  "not finish within %d s", profile, argv[0], PROCESS_TIMEOUT_S);
  } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    Buf m = BUF_INIT;
    aws_excerpt(&m, buf_cstr(&bufs[1]), bufs[1].len, 300);
    aws_error_set(err, "CredentialProcessError", 0, "profile %s: credential_process %s "
                  "failed (%s %d): %s", profile, argv[0],
                  WIFEXITED(status) ? "exit status" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), buf_cstr(&m));
    buf_free(&m);
  } else if (aws_creds_from_json("process", buf_cstr(&bufs[0]), bufs[0].len, out, perr,
                                 sizeof(perr)) != 0) {
    aws_error_set(err, "CredentialProcessError", 0, "profile %s: credential_process %s: %s",
                  profile, argv[0], perr);
  } else {
    snprintf(out->source, sizeof(out->source), "credential_process (profile %s)", profile);
    rc = 1;
  }
  if (bufs[0].data != NULL)
    explicit_bzero(bufs[0].data, bufs[0].len);   /* it held the secret */
  buf_free(&bufs[0]);
  buf_free(&bufs[1]);
  aws_argv_free(argv);
  return rc;
}

/* Read a small file (a token) into out, at most about 'max' bytes.
   Returns 0, or -1 with errno set when it cannot be opened. */
static int read_small_file (const char *path, size_t max, Buf *out) {
  FILE *fp = fopen(path, "r");
  char chunk[4096];
  size_t n;
  if (fp == NULL)
    return -1;
  while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0 && out->len < max)
    buf_append(out, chunk, n);
  fclose(fp);
  return 0;
}

/* Append "&name=value" (value percent-encoded) to a query form. */
static void form_param (Buf *form, const char *name, const char *value) {
  buf_printf(form, "&%s=", name);
  sigv4_uri_encode(form, value, strlen(value), 0);
}

/* The role session name: the configured one, else pgtide-session-<time>. */
static void session_name (Buf *b, const char *configured) {
  if (configured != NULL && configured[0] != '\0')
    buf_puts(b, configured);
  else
    buf_printf(b, "pgtide-session-%ld", (long)time(NULL));
}

/*
** Web identity: AssumeRoleWithWebIdentity (unsigned) with the token read
** from token_file.  Returns 1 with credentials in out, or -1 with err.
*/
static int web_identity (AwsSession *s, const char *role_arn, const char *token_file,
                         const char *sname, AwsCreds *out, AwsError *err) {
  Buf form = BUF_INIT, token = BUF_INIT, name = BUF_INIT;
  HttpResponse resp;
  char perr[200];
  int rc = -1;
  if (read_small_file(token_file, 1u << 20, &token) != 0) {
    aws_error_set(err, "InvalidConfig", 0, "cannot read web identity token file %s: %s",
                  token_file, strerror(errno));
    return -1;
  }
  redact_register(buf_cstr(&token));
  session_name(&name, sname);
  buf_puts(&form, "Action=AssumeRoleWithWebIdentity&Version=2011-06-15");
  form_param(&form, "RoleArn", role_arn);
  form_param(&form, "RoleSessionName", name.data);
  form_param(&form, "WebIdentityToken", buf_cstr(&token));
  if (aws_sts_call(s, "AssumeRoleWithWebIdentity", form.data, NULL, 1, &resp, err) == 0) {
    if (aws_creds_from_sts_xml("AssumeRoleWithWebIdentityResult", buf_cstr(&resp.body),
                               resp.body.len, out, perr, sizeof(perr)) == 0) {
      snprintf(out->source, sizeof(out->source), "web identity (%.80s)", role_arn);
      rc = 1;
    } else {
      aws_error_set(err, "InvalidResponse", (int)resp.status, "AssumeRoleWithWebIdentity: %s",
                    perr);
    }
    http_response_free(&resp);
  }
  if (token.data != NULL)
    explicit_bzero(token.data, token.len);
  buf_free(&token);
  buf_free(&form);
  buf_free(&name);
  return rc;
}

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
static int from_container (AwsSession *s, AwsCreds *out, AwsError *err) {
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
    if (read_small_file(tokfile, 65536, &auth) != 0) {
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
static int from_imds (AwsSession *s, AwsCreds *out, AwsError *err) {
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

static int profile_creds (AwsSession *s, const char *profile, const char **visited,
                          int depth, AwsCreds *out, AwsError *err);

/*
** The credentials a role profile assumes the role with: its
** source_profile's (following role chains, detecting loops) or its
** credential_source's (Environment, Ec2InstanceMetadata, EcsContainer).
** Returns 1 with credentials in 'source', or -1 with err.
*/
static int role_source_creds (AwsSession *s, const char *profile, const char **visited,
                              int depth, AwsCreds *source, AwsError *err) {
  const char *src = aws_profile_get(&s->cfg, profile, "source_profile");
  const char *csrc = aws_profile_get(&s->cfg, profile, "credential_source");
  int r, i;
  if ((src != NULL) == (csrc != NULL)) {
    aws_error_set(err, "InvalidConfig", 0, "profile %s has role_arn and needs exactly one of "
                  "source_profile and credential_source", profile);
    return -1;
  }
  if (depth >= MAX_ROLE_CHAIN) {
    aws_error_set(err, "InvalidConfig", 0, "profile %s: role chain longer than %d profiles",
                  profile, MAX_ROLE_CHAIN);
    return -1;
  }
  if (src != NULL) {
    visited[depth] = profile;
    for (i = 0; i <= depth; i++)   /* a cycle, unless the profile has its own keys */
      if (strcmp(visited[i], src) == 0 && !(strcmp(src, profile) == 0 &&
          aws_profile_get(&s->cfg, src, "aws_access_key_id") != NULL)) {
        aws_error_set(err, "InvalidConfig", 0, "profile %s: source_profile chain loops back "
                      "to %s", profile, src);
        return -1;
      }
    if (!aws_profile_exists(&s->cfg, src)) {
      aws_error_set(err, "ProfileNotFound", 0, "profile %s: source_profile %s not found",
                    profile, src);
      return -1;
    }
    r = strcmp(src, profile) == 0
      ? from_profile_file(s, src, 0, source, err)
      : profile_creds(s, src, visited, depth + 1, source, err);
    if (r == 0 && strcmp(src, profile) == 0)
      r = from_profile_file(s, src, 1, source, err);
    if (r == 0)
      aws_error_set(err, "NoCredentials", 0, "profile %s: source_profile %s has no "
                    "credentials", profile, src);
  } else if (strcmp(csrc, "Environment") == 0) {
    r = from_env(source, err);
    if (r == 0)
      aws_error_set(err, "NoCredentials", 0, "profile %s: credential_source Environment but "
                    "AWS_ACCESS_KEY_ID is not set", profile);
  } else if (strcmp(csrc, "Ec2InstanceMetadata") == 0) {
    r = from_imds(s, source, err);
    if (r == 0)
      aws_error_set(err, "NoCredentials", 0, "profile %s: no credentials from instance "
                    "metadata", profile);
  } else if (strcmp(csrc, "EcsContainer") == 0) {
    r = from_container(s, source, err);
    if (r == 0)
      aws_error_set(err, "NoCredentials", 0, "profile %s: credential_source EcsContainer but "
                    "no container credentials are configured", profile);
  } else {
    aws_error_set(err, "InvalidConfig", 0, "profile %s: unknown credential_source %s",
                  profile, csrc);
    r = -1;
  }
  return r == 1 ? 1 : -1;
}

/*
** A profile with role_arn: get the source credentials, then call STS
** AssumeRole (RoleSessionName, ExternalId, DurationSeconds from the
** profile; MFA is refused: there is no prompt).  Returns 1 with the
** role's credentials in out, or -1 with err.
*/
static int assume_role (AwsSession *s, const char *profile, const char **visited, int depth,
                        AwsCreds *out, AwsError *err) {
  const char *role = aws_profile_get(&s->cfg, profile, "role_arn");
  const char *v;
  AwsCreds source;
  Buf form = BUF_INIT, name = BUF_INIT;
  HttpResponse resp;
  char perr[200];
  int rc = -1;
  memset(&source, 0, sizeof(source));
  if (role_source_creds(s, profile, visited, depth, &source, err) != 1)
    goto done;
  if (aws_profile_get(&s->cfg, profile, "mfa_serial") != NULL) {
    aws_error_set(err, "InvalidConfig", 0, "profile %s uses mfa_serial: pgtide cannot prompt "
                  "for an MFA code; use credential_process or exported session credentials",
                  profile);
    goto done;
  }
  session_name(&name, aws_profile_get(&s->cfg, profile, "role_session_name"));
  buf_puts(&form, "Action=AssumeRole&Version=2011-06-15");
  form_param(&form, "RoleArn", role);
  form_param(&form, "RoleSessionName", name.data);
  if ((v = aws_profile_get(&s->cfg, profile, "external_id")) != NULL)
    form_param(&form, "ExternalId", v);
  if ((v = aws_profile_get(&s->cfg, profile, "duration_seconds")) != NULL)
    form_param(&form, "DurationSeconds", v);
  if (aws_sts_call(s, "AssumeRole", form.data, &source, 0, &resp, err) == 0) {
    if (aws_creds_from_sts_xml("AssumeRoleResult", buf_cstr(&resp.body), resp.body.len, out,
                               perr, sizeof(perr)) == 0) {
      snprintf(out->source, sizeof(out->source), "assume role %.60s (profile %.20s)", role,
               profile);
      rc = 1;
    } else {
      aws_error_set(err, "InvalidResponse", (int)resp.status, "AssumeRole: %s", perr);
    }
    http_response_free(&resp);
  }
done:
  aws_creds_clear(&source);
  buf_free(&form);
  buf_free(&name);
  return rc;
}

/*
** Credentials of a profile used as a source_profile: its own role (chain),
** web identity, static keys, then credential_process.
*/
static int profile_creds (AwsSession *s, const char *profile, const char **visited,
                          int depth, AwsCreds *out, AwsError *err) {
  const char *role = aws_profile_get(&s->cfg, profile, "role_arn");
  const char *wif = aws_profile_get(&s->cfg, profile, "web_identity_token_file");
  const char *proc;
  int r;
  if (role != NULL && wif != NULL)
    return web_identity(s, role, wif, aws_profile_get(&s->cfg, profile, "role_session_name"),
                        out, err);
  if (role != NULL)
    return assume_role(s, profile, visited, depth, out, err);
  if ((r = from_profile_file(s, profile, 0, out, err)) != 0)
    return r;
  if ((r = from_profile_file(s, profile, 1, out, err)) != 0)
    return r;
  proc = aws_profile_get(&s->cfg, profile, "credential_process");
  if (proc != NULL && proc[0] != '\0')
    return from_process(proc, profile, out, err);
  return 0;
}

/*
** The credential chain in the AWS CLI's order (see creds.h): environment
** (unless a profile was named explicitly), the profile's role_arn (with
** source credentials or a web identity token file), AWS_ROLE_ARN with
** AWS_WEB_IDENTITY_TOKEN_FILE, the credentials file, credential_process,
** the config file, container credentials, instance metadata.  0 with
** out filled, or -1 with err (SSO profiles get a hint).
*/
int aws_creds_resolve (AwsSession *s, AwsCreds *out, AwsError *err) {
  const char *profile = s->cfg.profile, *role, *wif, *proc;
  const char *visited[MAX_ROLE_CHAIN + 1];
  int r;

  if (!s->cfg.profile_explicit && (r = from_env(out, err)) != 0)
    return r > 0 ? 0 : -1;
  role = aws_profile_get(&s->cfg, profile, "role_arn");
  wif = aws_profile_get(&s->cfg, profile, "web_identity_token_file");
  if (role != NULL && wif == NULL)
    return assume_role(s, profile, visited, 0, out, err) > 0 ? 0 : -1;
  if (role != NULL && wif != NULL)
    return web_identity(s, role, wif, aws_profile_get(&s->cfg, profile, "role_session_name"),
                        out, err) > 0 ? 0 : -1;
  wif = getenv("AWS_WEB_IDENTITY_TOKEN_FILE");
  role = getenv("AWS_ROLE_ARN");
  if (wif != NULL && wif[0] != '\0' && role != NULL && role[0] != '\0')
    return web_identity(s, role, wif, getenv("AWS_ROLE_SESSION_NAME"), out, err) > 0 ? 0 : -1;
  if ((r = from_profile_file(s, profile, 0, out, err)) != 0)
    return r > 0 ? 0 : -1;
  proc = aws_profile_get(&s->cfg, profile, "credential_process");
  if (proc != NULL && proc[0] != '\0')
    return from_process(proc, profile, out, err) > 0 ? 0 : -1;
  if ((r = from_profile_file(s, profile, 1, out, err)) != 0)
    return r > 0 ? 0 : -1;
  if ((r = from_container(s, out, err)) != 0)
    return r > 0 ? 0 : -1;
  if ((r = from_imds(s, out, err)) != 0)
    return r > 0 ? 0 : -1;
  if (aws_profile_get(&s->cfg, profile, "sso_session") != NULL ||
      aws_profile_get(&s->cfg, profile, "sso_start_url") != NULL) {
    aws_error_set(err, "NoCredentials", 0, "profile %s uses AWS SSO, which pgtide does not "
                  "support natively: run 'aws sso login' and set credential_process = aws "
                  "configure export-credentials --profile %s --format process", profile,
                  profile);
    return -1;
  }
  aws_error_set(err, "NoCredentials", 0, "no AWS credentials found (tried %sprofile '%s' in "
                "%s and %s, container credentials and instance metadata)",
                s->cfg.profile_explicit ? "" : "the environment, ", profile,
                s->cfg.credentials.path, s->cfg.config.path);
  return -1;
}

/*}====================================================================*/
