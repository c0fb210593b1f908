/*
** fuzz_xml.c
** libFuzzer target for the XML side of the AWS response parsers: the
** expat tree (xml.c), the error documents of the query, EC2 and S3
** protocols (proto.c) and the STS credential documents (creds.c).
** Lua-free.  Any crash, leak or sanitizer report is a bug.
*/
#include <stdint.h>
#include <string.h>

#include "aws/creds.h"
#include "aws/proto.h"
#include "aws/xml.h"
#include "util/redact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Visit every node (bounded by XML_MAX_NODES) and use its fields. */
static size_t walk (const XmlNode *n) {
  size_t i, total = n->text_len + strlen(n->name);
  for (i = 0; i < n->nchildren; i++)
    total += walk(n->children[i]);
  return total;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  static const char *const protocols[] = {"query", "ec2", "rest-xml"};
  char err[256];
  XmlNode *root = xml_parse(s, size, err, sizeof(err));
  AwsError e;
  AwsCreds c;
  size_t i;
  if (root != NULL) {
    volatile size_t sink = walk(root);
    (void)sink;
    (void)xml_path_text(root, "Errors/Error/Code");
    xml_free(root);
  }
  for (i = 0; i < 3; i++) {
    memset(&e, 0, sizeof(e));
    aws_error_from_response(&e, protocols[i], 400 + (long)(size % 200), NULL, 0, s, size);
  }
  memset(&c, 0, sizeof(c));
  if (aws_creds_from_sts_xml("AssumeRoleResult", s, size, &c, err, sizeof(err)) == 0)
    aws_creds_clear(&c);
  if (aws_creds_from_sts_xml("AssumeRoleWithWebIdentityResult", s, size, &c, err,
                             sizeof(err)) == 0)
    aws_creds_clear(&c);
  redact_clear();   /* parsed "secrets" would otherwise accumulate */
  return 0;
}
