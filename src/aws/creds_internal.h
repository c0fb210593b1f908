/*
** creds_internal.h
** Shared by the credential files of src/aws (not for other callers,
** whose API is creds.h):
**   creds.c          the chain in the AWS CLI's order, static keys,
**                    environment, profiles, assume role, web identity,
**                    and the credential documents (JSON, STS XML)
**   creds_process.c  credential_process: split, run, read its JSON
**   creds_imds.c     metadata services: ECS/EKS container endpoint and
**                    EC2 instance metadata (IMDSv2)
** Each provider returns 1 (found: 'out' filled), 0 (not configured:
** try the next one) or -1 (configured but failing: 'err' set).
*/
#ifndef PGTIDE_AWS_CREDS_INTERNAL_H
#define PGTIDE_AWS_CREDS_INTERNAL_H

#include <stddef.h>

#include "aws/creds.h"
#include "aws/request.h"
#include "util/buf.h"

/* Read a small file (a token) into out, at most about 'max' bytes.
   Returns 0, or -1 with errno set when it cannot be opened.  creds.c */
int creds_read_small_file(const char *path, size_t max, Buf *out);

/* credential_process 'cmd' of 'profile': 1 with credentials, or -1 with
   err.  creds_process.c */
int creds_from_process(const char *cmd, const char *profile, AwsCreds *out, AwsError *err);

/* ECS/EKS container credentials: 1, 0 when not configured, -1 with
   err.  creds_imds.c */
int creds_from_container(AwsSession *s, AwsCreds *out, AwsError *err);

/* EC2 instance metadata (IMDSv2, v1 fallback where allowed): 1, 0 when
   disabled or absent, -1 with err.  creds_imds.c */
int creds_from_imds(AwsSession *s, AwsCreds *out, AwsError *err);

#endif
