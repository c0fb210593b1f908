/*
** test_xml.c
** The expat-based XML tree: names, text, entities, namespaces, limits,
** rejection of DTDs and malformed input with a located message.
*/
#include <stdlib.h>
#include <string.h>

#include "aws/xml.h"
#include "test.h"

static XmlNode *parse (const char *s, char *err, size_t errlen) {
  return xml_parse(s, strlen(s), err, errlen);
}

static void query_response_tree (void) {
  const char *doc =
    "<?xml version=\"1.0\"?>\n"
    "<DescribeStacksResponse xmlns=\"http://cloudformation.amazonaws.com/doc/2010-05-15/\">\n"
    "  <DescribeStacksResult><Stacks>\n"
    "    <member><StackName>a &amp; b</StackName><Outputs/></member>\n"
    "    <member><StackName>&#x41;&#66;&lt;&gt;&quot;&apos;</StackName></member>\n"
    "  </Stacks></DescribeStacksResult>\n"
    "  <ResponseMetadata><RequestId>rid-1</RequestId></ResponseMetadata>\n"
    "</DescribeStacksResponse>";
  char err[200];
  XmlNode *root = parse(doc, err, sizeof(err));
  const XmlNode *stacks;
  CHECK(root != NULL);
  if (root == NULL)
    return;
  CHECK_STR(root->name, "DescribeStacksResponse");
  stacks = xml_path(root, "DescribeStacksResult/Stacks");
  CHECK(stacks != NULL && stacks->nchildren == 2);
  CHECK_STR(xml_path_text(stacks->children[0], "StackName"), "a & b");
  CHECK_STR(xml_path_text(stacks->children[1], "StackName"), "AB<>\"'");
  CHECK_STR(xml_path_text(stacks->children[0], "Outputs"), "");
  CHECK(xml_path(stacks->children[1], "Outputs") == NULL);
  CHECK_STR(xml_path_text(root, "ResponseMetadata/RequestId"), "rid-1");
  xml_free(root);
}

static void prefixes_and_whitespace_text_kept (void) {
  char err[200];
  XmlNode *root = parse("<s3:Key xmlns:s3=\"u\">  spaced key  </s3:Key>", err, sizeof(err));
  CHECK(root != NULL);
  if (root != NULL) {
    CHECK_STR(root->name, "Key");
    CHECK_STR(root->text, "  spaced key  ");
    CHECK_INT(root->text_len, 14);
  }
  xml_free(root);
  root = parse("<a>caf\xc3\xa9 <![CDATA[<raw>]]></a>", err, sizeof(err));
  CHECK(root != NULL && strcmp(root->text, "caf\xc3\xa9 <raw>") == 0);
  xml_free(root);
}

static void malformed_is_reported_with_location (void) {
  char err[200];
  CHECK(parse("<a><b></a>", err, sizeof(err)) == NULL);
  CHECK(strstr(err, "mismatched tag") != NULL);
  CHECK(strstr(err, "line 1") != NULL);
  CHECK(parse("", err, sizeof(err)) == NULL);
  CHECK(parse("<a>", err, sizeof(err)) == NULL);
  CHECK(parse("not xml", err, sizeof(err)) == NULL);
  CHECK(parse("<a/><b/>", err, sizeof(err)) == NULL);
  CHECK(parse("<html><body>502 Bad Gateway</body>", err, sizeof(err)) == NULL);
}

static void dtd_and_entities_rejected (void) {
  char err[200];
  const char *bomb =
    "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">"
    "<!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]><lolz>&lol2;</lolz>";
  CHECK(parse(bomb, err, sizeof(err)) == NULL);
  CHECK(strstr(err, "DTD") != NULL);
  CHECK(parse("<!DOCTYPE a SYSTEM \"file:///etc/passwd\"><a/>", err, sizeof(err)) == NULL);
  CHECK(parse("<a>&undefined;</a>", err, sizeof(err)) == NULL);
}

static void depth_limit (void) {
  Buf b = BUF_INIT;
  char err[200];
  int i;
  XmlNode *root;
  for (i = 0; i < XML_MAX_DEPTH + 10; i++)
    buf_puts(&b, "<a>");
  for (i = 0; i < XML_MAX_DEPTH + 10; i++)
    buf_puts(&b, "</a>");
  CHECK(xml_parse(b.data, b.len, err, sizeof(err)) == NULL);
  CHECK(strstr(err, "nested too deeply") != NULL);
  buf_reset(&b);
  for (i = 0; i < XML_MAX_DEPTH - 1; i++)
    buf_puts(&b, "<a>");
  for (i = 0; i < XML_MAX_DEPTH - 1; i++)
    buf_puts(&b, "</a>");
  root = xml_parse(b.data, b.len, err, sizeof(err));
  CHECK(root != NULL);
  xml_free(root);
  buf_free(&b);
}

static void escape_round_trip (void) {
  Buf b = BUF_INIT;
  char err[200];
  XmlNode *root;
  const char *key = "a<b>&\"c'd\re";
  buf_puts(&b, "<Key>");
  xml_escape(&b, key, strlen(key));
  buf_puts(&b, "</Key>");
  root = xml_parse(b.data, b.len, err, sizeof(err));
  CHECK(root != NULL && strcmp(root->text, key) == 0);
  xml_free(root);
  buf_free(&b);
}

int main (void) {
  RUN_TEST(query_response_tree);
  RUN_TEST(prefixes_and_whitespace_text_kept);
  RUN_TEST(malformed_is_reported_with_location);
  RUN_TEST(dtd_and_entities_rejected);
  RUN_TEST(depth_limit);
  RUN_TEST(escape_round_trip);
  return TEST_SUMMARY();
}
