/*
** xml.h
** A small read-only XML tree built with expat, for AWS responses (query,
** EC2 and S3 protocols).  Elements keep their local name (any "prefix:"
** removed), their character data (concatenated, untrimmed) and their
** child elements in document order.  Attributes, comments and processing
** instructions are dropped.  DTDs and entity declarations are rejected
** outright: AWS never sends them and they are the usual attack surface.
** Depth and node count are bounded, so hostile input cannot exhaust the
** stack or memory beyond a fixed factor of its size.
*/
#ifndef PGTIDE_XML_H
#define PGTIDE_XML_H

#include <stddef.h>

#include "util/buf.h"

#define XML_MAX_DEPTH 256
#define XML_MAX_NODES 1000000

typedef struct XmlNode {
  char *name;                  /* local name */
  char *text;                  /* character data directly inside ("" if none) */
  size_t text_len;
  struct XmlNode **children;
  size_t nchildren;
  size_t cap;
} XmlNode;

/*
** Parse 'len' bytes.  Returns the root element (free with xml_free) or
** NULL with a message such as "not well-formed (invalid token) at line 3,
** column 7" in err.
*/
XmlNode *xml_parse(const char *data, size_t len, char *err, size_t errlen);
void xml_free(XmlNode *root);

/* First child named 'name', or NULL. */
const XmlNode *xml_child(const XmlNode *n, const char *name);
/* Follow a '/'-separated path of child names ("Error/Code"), or NULL. */
const XmlNode *xml_path(const XmlNode *n, const char *path);
/* Text of xml_path(n, path), or NULL when absent. */
const char *xml_path_text(const XmlNode *n, const char *path);

/* Append 's' with & < > " ' escaped (for request bodies). */
void xml_escape(Buf *out, const char *s, size_t n);

#endif
