/*
** config.c
** Shared config and credentials files, profile, region and endpoint
** resolution (see config.h).
*/
#include "aws/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int aws_truthy (const char *v) {
  return v != NULL && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
                       strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0);
}

static char *trim_dup (const char *s, size_t n) {
  while (n > 0 && isspace((unsigned char)*s)) {
    s++;
    n--;
  }
  while (n > 0 && isspace((unsigned char)s[n - 1]))
    n--;
  return xstrndup(s, n);
}

static void lower (char *s) {
  for (; *s; s++)
    *s = (char)tolower((unsigned char)*s);
}

/* Add key = value to a section (taking ownership of both); a repeated
   key replaces the earlier value. */
static void ini_add (IniFile *f, const char *section, char *key, char *value) {
  size_t i;
  lower(key);
  for (i = 0; i < f->n; i++)   /* a repeated key: the last one wins */
    if (strcmp(f->entries[i].section, section) == 0 && strcmp(f->entries[i].key, key) == 0) {
      free(f->entries[i].value);
      f->entries[i].value = value;
      free(key);
      return;
    }
  f->entries = xrealloc(f->entries, (f->n + 1) * sizeof(IniEntry));
  f->entries[f->n].section = xstrdup(section);
  f->entries[f->n].key = key;
  f->entries[f->n].value = value;
  f->n++;
}

/*
** Parse INI text into f: [section] headers, key = value lines, indented
** continuation lines as nested "parent.key" entries (for s3 = ... and
** services sections), comments.  Never fails: malformed lines are
** skipped.
*/
void ini_parse (IniFile *f, const char *text, size_t len) {
  char *section = NULL, *parent = NULL;
  size_t i = 0;
  while (i < len) {
    size_t e = i, n, lead = 0;
    const char *line = text + i, *delim;
    while (e < len && text[e] != '\n')
      e++;
    n = e - i;
    i = e + 1;
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
      n--;
    while (lead < n && (line[lead] == ' ' || line[lead] == '\t'))
      lead++;
    if (lead == n || line[lead] == '#' || line[lead] == ';')
      continue;
    if (line[lead] == '[' && line[n - 1] == ']' && n - lead >= 2) {
      free(section);
      section = trim_dup(line + lead + 1, n - lead - 2);
      free(parent);
      parent = NULL;
      continue;
    }
    if (section == NULL)
      continue;
    /* first '=' or ':' splits key and value */
    for (delim = line + lead; delim < line + n && *delim != '=' && *delim != ':'; delim++)
      ;
    if (lead > 0 && parent != NULL) {           /* continuation: a nested key */
      if (delim < line + n) {
        char *sub = trim_dup(line + lead, (size_t)(delim - line) - lead);
        Buf k = BUF_INIT;
        lower(sub);
        buf_printf(&k, "%s.%s", parent, sub);
        ini_add(f, section, buf_steal(&k),
                trim_dup(delim + 1, (size_t)(line + n - delim - 1)));
        free(sub);
      }
      continue;
    }
    if (delim >= line + n)
      continue;
    free(parent);
    parent = trim_dup(line + lead, (size_t)(delim - line) - lead);
    lower(parent);
    ini_add(f, section, xstrdup(parent), trim_dup(delim + 1, (size_t)(line + n - delim - 1)));
  }
  free(section);
  free(parent);
}

/* Load an INI file; a missing file is an empty one (f->exists = 0). */
void ini_load (IniFile *f, const char *path) {
  FILE *fp;
  Buf b = BUF_INIT;
  char chunk[4096];
  size_t n;
  memset(f, 0, sizeof(*f));
  f->path = xstrdup(path);
  fp = fopen(path, "r");
  if (fp == NULL)
    return;
  f->exists = 1;
  while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0 && b.len < (16u << 20))
    buf_append(&b, chunk, n);
  fclose(fp);
  ini_parse(f, buf_cstr(&b), b.len);
  buf_free(&b);
}

/* Free every entry and the path. */
void ini_free (IniFile *f) {
  size_t i;
  for (i = 0; i < f->n; i++) {
    free(f->entries[i].section);
    free(f->entries[i].key);
    free(f->entries[i].value);
  }
  free(f->entries);
  free(f->path);
  memset(f, 0, sizeof(*f));
}

const char *ini_get (const IniFile *f, const char *section, const char *key) {
  size_t i;
  for (i = 0; i < f->n; i++)
    if (strcmp(f->entries[i].section, section) == 0 && strcasecmp(f->entries[i].key, key) == 0)
      return f->entries[i].value;
  return NULL;
}

int ini_has_section (const IniFile *f, const char *section) {
  size_t i;
  for (i = 0; i < f->n; i++)
    if (strcmp(f->entries[i].section, section) == 0)
      return 1;
  return 0;
}

/* The config-file section of a profile: "profile NAME", or for the
   default profile "profile default" then "default". */
static const char *config_section (const AwsConfig *c, const char *profile, Buf *tmp) {
  buf_reset(tmp);
  buf_printf(tmp, "profile %s", profile);
  if (strcmp(profile, "default") == 0 && !ini_has_section(&c->config, tmp->data))
    return "default";
  return tmp->data;
}

const char *aws_profile_config_get (const AwsConfig *c, const char *profile, const char *key) {
  Buf tmp = BUF_INIT;
  const char *v;
  if (profile == NULL)
    profile = c->profile;
  v = ini_get(&c->config, config_section(c, profile, &tmp), key);
  buf_free(&tmp);
  return v;
}

const char *aws_profile_credentials_get (const AwsConfig *c, const char *profile,
                                         const char *key) {
  return ini_get(&c->credentials, profile != NULL ? profile : c->profile, key);
}

const char *aws_profile_get (const AwsConfig *c, const char *profile, const char *key) {
  const char *v = aws_profile_credentials_get(c, profile, key);
  return v != NULL ? v : aws_profile_config_get(c, profile, key);
}

int aws_profile_exists (const AwsConfig *c, const char *profile) {
  Buf tmp = BUF_INIT;
  int yes = ini_has_section(&c->credentials, profile) ||
            ini_has_section(&c->config, config_section(c, profile, &tmp));
  buf_free(&tmp);
  return yes;
}

/* The path in environment variable 'env' (a leading ~/ expanded), else
   $HOME/rel.  Caller frees. */
static char *home_path (const char *env, const char *rel) {
  const char *v = getenv(env), *home;
  Buf b = BUF_INIT;
  if (v != NULL && v[0] != '\0') {
    if (v[0] == '~' && v[1] == '/' && (home = getenv("HOME")) != NULL)
      buf_printf(&b, "%s%s", home, v + 1);
    else
      buf_puts(&b, v);
  } else {
    home = getenv("HOME");
    buf_printf(&b, "%s/%s", home != NULL ? home : ".", rel);
  }
  return buf_steal(&b);
}

/*
** Load the credentials and config files and choose the profile (the
** explicit one, AWS_PROFILE, else "default").  A profile asked for but
** found in neither file is an error (ProfileNotFound).
*/
int aws_config_load (AwsConfig *c, const char *profile, AwsError *err) {
  char *cp = home_path("AWS_CONFIG_FILE", ".aws/config");
  char *sp = home_path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
  const char *envp = getenv("AWS_PROFILE");
  memset(c, 0, sizeof(*c));
  ini_load(&c->config, cp);
  ini_load(&c->credentials, sp);
  free(cp);
  free(sp);
  if (envp == NULL || envp[0] == '\0')
    envp = getenv("AWS_DEFAULT_PROFILE");
  if (profile != NULL && profile[0] != '\0') {
    c->profile = xstrdup(profile);
    c->profile_explicit = 1;
  } else if (envp != NULL && envp[0] != '\0') {
    c->profile = xstrdup(envp);
  } else {
    c->profile = xstrdup("default");
    return 0;
  }
  if (!aws_profile_exists(c, c->profile)) {
    aws_error_set(err, "ProfileNotFound", 0,
                  "AWS profile '%s' not found in %s or %s", c->profile, c->config.path,
                  c->credentials.path);
    return -1;
  }
  return 0;
}

void aws_config_free (AwsConfig *c) {
  ini_free(&c->config);
  ini_free(&c->credentials);
  free(c->profile);
  memset(c, 0, sizeof(*c));
}

/* The region: the explicit one, AWS_REGION, AWS_DEFAULT_REGION, then
   the profile's; NULL when none (borrowed). */
const char *aws_config_region (const AwsConfig *c, const char *explicit_region) {
  const char *v;
  if (explicit_region != NULL && explicit_region[0] != '\0')
    return explicit_region;
  if ((v = getenv("AWS_REGION")) != NULL && v[0] != '\0')
    return v;
  if ((v = getenv("AWS_DEFAULT_REGION")) != NULL && v[0] != '\0')
    return v;
  v = aws_profile_get(c, NULL, "region");
  return (v != NULL && v[0] != '\0') ? v : NULL;
}

/*
** Endpoint override for a service id: AWS_ENDPOINT_URL_<SERVICE>, the
** profile's services section, AWS_ENDPOINT_URL, the profile's
** endpoint_url, unless ignore_configured_endpoint_urls.  *url is
** borrowed (NULL: none); -1 when the named services section is missing.
*/
int aws_config_endpoint (const AwsConfig *c, const char *service_id, const char **url,
                         AwsError *err) {
  Buf name = BUF_INIT;
  const char *v, *services;
  size_t i;
  *url = NULL;
  if (aws_truthy(getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")) ||
      aws_truthy(aws_profile_get(c, NULL, "ignore_configured_endpoint_urls")))
    return 0;
  buf_puts(&name, "AWS_ENDPOINT_URL_");
  for (i = 0; service_id[i]; i++)
    buf_putc(&name, service_id[i] == '-' || service_id[i] == ' '
                    ? '_' : (char)toupper((unsigned char)service_id[i]));
  v = getenv(name.data);
  if (v == NULL || v[0] == '\0')
    v = getenv("AWS_ENDPOINT_URL");
  if (v != NULL && v[0] != '\0') {
    *url = v;
    buf_free(&name);
    return 0;
  }
  services = aws_profile_config_get(c, NULL, "services");
  if (services != NULL && services[0] != '\0') {
    buf_reset(&name);
    buf_printf(&name, "services %s", services);
    if (!ini_has_section(&c->config, name.data)) {
      aws_error_set(err, "InvalidConfig", 0,
                    "profile '%s' uses services section '%s', which does not exist in %s",
                    c->profile, services, c->config.path);
      buf_free(&name);
      return -1;
    }
    {
      Buf key = BUF_INIT;
      for (i = 0; service_id[i]; i++)
        buf_putc(&key, service_id[i] == '-' || service_id[i] == ' '
                       ? '_' : (char)tolower((unsigned char)service_id[i]));
      buf_puts(&key, ".endpoint_url");
      v = ini_get(&c->config, name.data, key.data);
      buf_free(&key);
    }
    if (v != NULL && v[0] != '\0') {
      *url = v;
      buf_free(&name);
      return 0;
    }
  }
  buf_free(&name);
  v = aws_profile_get(c, NULL, "endpoint_url");
  if (v != NULL && v[0] != '\0')
    *url = v;
  return 0;
}
