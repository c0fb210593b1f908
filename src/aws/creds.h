/*
** creds.h
** AWS credentials and the provider chain, in the AWS CLI's order:
**   1. explicit keys given to the session;
**   2. environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
**      AWS_SESSION_TOKEN (or AWS_SECURITY_TOKEN), AWS_CREDENTIAL_EXPIRATION
**      (skipped when the profile was chosen explicitly, as with --profile);
**   3. assume role: the profile's role_arn with source_profile (resolved
**      recursively, cycles refused) or credential_source (Environment,
**      Ec2InstanceMetadata, EcsContainer), through STS AssumeRole;
**   4. web identity: web_identity_token_file + role_arn in the profile, or
**      AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (+ AWS_ROLE_SESSION_NAME),
**      through an unsigned STS AssumeRoleWithWebIdentity;
**   5. the shared credentials file's keys for the profile;
**   6. credential_process (run without a shell, JSON Version 1 on stdout);
**   7. the config file's keys for the profile;
**   8. container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
**      (http://169.254.170.2) or _FULL_URI (loopback, the ECS/EKS link-local
**      hosts or https), with AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE);
**   9. EC2 instance metadata, IMDSv2 (token PUT then GET; v1 fallback
**      only on 403/404/405 unless AWS_EC2_METADATA_V1_DISABLED), 1 s
**      timeout and 1 attempt by default (AWS_METADATA_SERVICE_TIMEOUT,
**      _NUM_ATTEMPTS), AWS_EC2_METADATA_SERVICE_ENDPOINT,
**      AWS_EC2_METADATA_DISABLED.
** Every secret and token resolved is registered with util/redact.
*/
#ifndef PGTIDE_AWS_CREDS_H
#define PGTIDE_AWS_CREDS_H

#include <stddef.h>

#include "aws/proto.h"

typedef struct AwsCreds {
  char *access_key_id;
  char *secret_access_key;
  char *session_token;       /* NULL for long-term keys */
  double expiration;         /* epoch seconds; 0: does not expire */
  char source[160];          /* where they came from, for messages */
} AwsCreds;

struct AwsSession;

void aws_creds_clear(AwsCreds *c);
void aws_creds_copy(AwsCreds *dst, const AwsCreds *src);
/* Take ownership of the strings and register the secrets for redaction. */
void aws_creds_set(AwsCreds *c, char *akid, char *secret, char *token, double expiration,
                   const char *source);

/*
** Run the chain for session 's' (its config, region and HTTP client).
** 0 with 'out' filled, or -1 with 'err' set (NoCredentials when no
** source applies; other codes when a configured source fails).
*/
int aws_creds_resolve(struct AwsSession *s, AwsCreds *out, AwsError *err);

/*
** Parse the JSON of credential_process ("process"), the container
** endpoint ("container") or IMDS ("imds").  0 on success, else -1 with a
** message in err.  Lua-free and fuzzed (tests/fuzz/fuzz_awsjson.c).
*/
int aws_creds_from_json(const char *kind, const char *body, size_t len, AwsCreds *out,
                        char *err, size_t errlen);

/* Parse an STS <XResponse><XResult><Credentials> document ('result' is
   "AssumeRoleResult" or "AssumeRoleWithWebIdentityResult"). */
int aws_creds_from_sts_xml(const char *result, const char *body, size_t len, AwsCreds *out,
                           char *err, size_t errlen);

/* Split a command line shell-style (quotes, backslashes), no expansion.
   Returns a NULL-terminated argv (free with aws_argv_free) or NULL on an
   unterminated quote. */
char **aws_split_command(const char *cmd);
void aws_argv_free(char **argv);

#endif
