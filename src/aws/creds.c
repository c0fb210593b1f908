/*
** creds.c
** The credential provider chain (see creds.h for the order) and the
** documents credentials come in (credential JSON, STS XML).  Each
** provider returns 1 (found: 'out' filled), 0 (not configured here: try
** the next one) or -1 (configured but failing: stop with 'err' set, as
** the AWS CLI does, rather than silently using other credentials).
** credential_process is creds_process.c; the container endpoint and
** EC2 instance metadata are creds_imds.c.
*/
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "aws/creds.h"
#include "aws/creds_internal.h"
#include "aws/request.h"
#include "aws/sigv4.h"
#include "aws/xml.h"
#include "util/log.h"
#include "util/redact.h"

#define MAX_ROLE_CHAIN 8

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

/* Read a small file (a token) into out, at most about 'max' bytes.
   Returns 0, or -1 with errno set when it cannot be opened. */
int creds_read_small_file (const char *path, size_t max, Buf *out) {
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
  if (creds_read_small_file(token_file, 1u << 20, &token) != 0) {
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
    r = creds_from_imds(s, source, err);
    if (r == 0)
      aws_error_set(err, "NoCredentials", 0, "profile %s: no credentials from instance "
                    "metadata", profile);
  } else if (strcmp(csrc, "EcsContainer") == 0) {
    r = creds_from_container(s, source, err);
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
    return creds_from_process(proc, profile, out, err);
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
    return creds_from_process(proc, profile, out, err) > 0 ? 0 : -1;
  if ((r = from_profile_file(s, profile, 1, out, err)) != 0)
    return r > 0 ? 0 : -1;
  if ((r = creds_from_container(s, out, err)) != 0)
    return r > 0 ? 0 : -1;
  if ((r = creds_from_imds(s, out, err)) != 0)
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
