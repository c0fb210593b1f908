/*
** config.h
** The AWS shared configuration: ~/.aws/config and ~/.aws/credentials (or
** AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE), the active profile,
** the region and endpoint overrides, following botocore:
**   profile:  explicit > AWS_PROFILE > AWS_DEFAULT_PROFILE > "default"
**   region:   explicit > AWS_REGION > AWS_DEFAULT_REGION > profile region
**   endpoint: AWS_ENDPOINT_URL_<SERVICE> > AWS_ENDPOINT_URL > the profile's
**             [services NAME] section ("<service> =\n  endpoint_url = ...")
**             > the profile's endpoint_url; all ignored when
**             AWS_IGNORE_CONFIGURED_ENDPOINT_URLS or the profile's
**             ignore_configured_endpoint_urls is true.
** INI syntax is configparser's: "key = value" or "key: value", keys
** lowercased, '#'/';' comment lines, indented lines continue the previous
** key and "sub = value" lines under an empty key become "key.sub".
*/
#ifndef PGTIDE_AWS_CONFIG_H
#define PGTIDE_AWS_CONFIG_H

#include <stddef.h>

#include "aws/proto.h"

typedef struct IniEntry {
  char *section;
  char *key;          /* lowercase; nested keys as "parent.sub" */
  char *value;
} IniEntry;

typedef struct IniFile {
  char *path;
  int exists;
  IniEntry *entries;
  size_t n;
} IniFile;

/* Parse INI text (never fails: malformed lines are skipped). */
void ini_parse(IniFile *f, const char *text, size_t len);
/* Load a file; a missing file is an empty one (f->exists = 0). */
void ini_load(IniFile *f, const char *path);
void ini_free(IniFile *f);
const char *ini_get(const IniFile *f, const char *section, const char *key);
int ini_has_section(const IniFile *f, const char *section);

typedef struct AwsConfig {
  char *profile;            /* active profile name */
  int profile_explicit;     /* given by the caller: environment keys are skipped */
  IniFile config;
  IniFile credentials;
} AwsConfig;

/*
** Load both files and choose the profile.  A profile that was asked for
** (explicitly or by AWS_PROFILE) but exists in neither file is an error
** (code ProfileNotFound).  0 on success.
*/
int aws_config_load(AwsConfig *c, const char *profile, AwsError *err);
void aws_config_free(AwsConfig *c);

/* A key of profile 'profile' (NULL: the active one): credentials file
   first, then the config file. */
const char *aws_profile_get(const AwsConfig *c, const char *profile, const char *key);
/* The same key from one file only. */
const char *aws_profile_config_get(const AwsConfig *c, const char *profile, const char *key);
const char *aws_profile_credentials_get(const AwsConfig *c, const char *profile,
                                        const char *key);
int aws_profile_exists(const AwsConfig *c, const char *profile);

/* Region as described above, or NULL.  The result is borrowed. */
const char *aws_config_region(const AwsConfig *c, const char *explicit_region);

/*
** Endpoint override for a service, by its snake-case service id
** ("database_migration_service", "sfn", "s3"...).  Sets *url (borrowed,
** NULL when none) and returns 0, or -1 when the profile names a services
** section that does not exist.
*/
int aws_config_endpoint(const AwsConfig *c, const char *service_id, const char **url,
                        AwsError *err);

/* "true"/"1"/"yes"/"on" (any case). */
int aws_truthy(const char *v);

#endif
