/*
** xml.c
** expat -> XmlNode tree (see xml.h).  The parser state is a stack of open
** elements; character data goes to the innermost one.  Any limit or
** policy violation stops the parser and is reported like a syntax error.
*/
#include "aws/xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <expat.h>

typedef struct Builder {
  XML_Parser parser;
  XmlNode *root;
  XmlNode *stack[XML_MAX_DEPTH];
  Buf text[XML_MAX_DEPTH];     /* character data of each open element */
  int depth;
  size_t nodes;
  const char *error;           /* our own reason for stopping, or NULL */
} Builder;

static void stop (Builder *b, const char *why) {
  if (b->error == NULL)
    b->error = why;
  XML_StopParser(b->parser, XML_FALSE);
}

/* expat start-element callback: push a new child (namespace prefix
   dropped), enforcing the depth and node limits. */
static void XMLCALL on_start (void *ud, const XML_Char *name, const XML_Char **atts) {
  Builder *b = ud;
  const char *local = strrchr(name, ':');
  XmlNode *n;
  (void)atts;
  if (b->error != NULL)
    return;
  if (b->depth >= XML_MAX_DEPTH) {
    stop(b, "elements nested too deeply");
    return;
  }
  if (++b->nodes > XML_MAX_NODES) {
    stop(b, "too many elements");
    return;
  }
  n = xcalloc(1, sizeof(XmlNode));
  n->name = xstrdup(local != NULL ? local + 1 : name);
  if (b->depth == 0) {
    b->root = n;
  } else {
    XmlNode *p = b->stack[b->depth - 1];
    if (p->nchildren == p->cap) {
      p->cap = p->cap ? p->cap * 2 : 4;
      p->children = xrealloc(p->children, p->cap * sizeof(XmlNode *));
    }
    p->children[p->nchildren++] = n;
  }
  b->stack[b->depth] = n;
  buf_reset(&b->text[b->depth]);
  b->depth++;
}

/* expat end-element callback: keep the node's text (trimmed when it has
   children) and pop it. */
static void XMLCALL on_end (void *ud, const XML_Char *name) {
  Builder *b = ud;
  XmlNode *n;
  Buf *t;
  (void)name;
  if (b->error != NULL || b->depth == 0)
    return;
  b->depth--;
  n = b->stack[b->depth];
  t = &b->text[b->depth];
  n->text_len = t->len;
  n->text = xmalloc(t->len + 1);
  if (t->len > 0)
    memcpy(n->text, t->data, t->len);
  n->text[t->len] = '\0';
}

static void XMLCALL on_text (void *ud, const XML_Char *s, int len) {
  Builder *b = ud;
  if (b->error != NULL || b->depth == 0 || len <= 0)
    return;
  buf_append(&b->text[b->depth - 1], s, (size_t)len);
}

static void XMLCALL on_doctype (void *ud, const XML_Char *name, const XML_Char *sysid,
                                const XML_Char *pubid, int has_internal_subset) {
  (void)name; (void)sysid; (void)pubid; (void)has_internal_subset;
  stop(ud, "DTDs are not accepted");
}

static void XMLCALL on_entity (void *ud, const XML_Char *name, int pe, const XML_Char *value,
                               int value_len, const XML_Char *base, const XML_Char *sysid,
                               const XML_Char *pubid, const XML_Char *notation) {
  (void)name; (void)pe; (void)value; (void)value_len; (void)base; (void)sysid;
  (void)pubid; (void)notation;
  stop(ud, "entity declarations are not accepted");
}

/* Free a tree iteratively (the depth bound makes recursion safe too, but
   an explicit stack keeps this independent of it). */
void xml_free (XmlNode *root) {
  XmlNode **stack;
  size_t top = 0, cap = 64;
  if (root == NULL)
    return;
  stack = xmalloc(cap * sizeof(XmlNode *));
  stack[top++] = root;
  while (top > 0) {
    XmlNode *n = stack[--top];
    size_t i;
    for (i = 0; i < n->nchildren; i++) {
      if (top == cap) {
        cap *= 2;
        stack = xrealloc(stack, cap * sizeof(XmlNode *));
      }
      stack[top++] = n->children[i];
    }
    free(n->children);
    free(n->name);
    free(n->text);
    free(n);
  }
  free(stack);
}

/* Parse a document into an element tree (see xml.h); NULL with a
   message (line, column) in err.  Caller frees with xml_free(). */
XmlNode *xml_parse (const char *data, size_t len, char *err, size_t errlen) {
  Builder *b = xcalloc(1, sizeof(Builder));
  XmlNode *root = NULL;
  int i, ok;
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  b->parser = XML_ParserCreate("UTF-8");
  if (b->parser == NULL) {
    free(b);
    if (err != NULL)
      snprintf(err, errlen, "cannot create an XML parser");
    return NULL;
  }
  XML_SetUserData(b->parser, b);
  XML_SetElementHandler(b->parser, on_start, on_end);
  XML_SetCharacterDataHandler(b->parser, on_text);
  XML_SetStartDoctypeDeclHandler(b->parser, on_doctype);
  XML_SetEntityDeclHandler(b->parser, on_entity);
  ok = 1;
  /* expat takes an int length: feed large documents in pieces */
  while (ok && len > (size_t)1 << 30) {
    ok = XML_Parse(b->parser, data, 1 << 30, 0) == XML_STATUS_OK;
    data += (size_t)1 << 30;
    len -= (size_t)1 << 30;
  }
  if (ok)
    ok = XML_Parse(b->parser, data, (int)len, 1) == XML_STATUS_OK;
  if (!ok || b->error != NULL || b->root == NULL || b->depth != 0) {
    if (err != NULL && errlen > 0) {
      const char *why = b->error != NULL ? b->error
                      : (ok ? "no root element" : XML_ErrorString(XML_GetErrorCode(b->parser)));
      snprintf(err, errlen, "%s at line %lu, column %lu", why,
               (unsigned long)XML_GetCurrentLineNumber(b->parser),
               (unsigned long)XML_GetCurrentColumnNumber(b->parser) + 1);
    }
    xml_free(b->root);
  } else {
    root = b->root;
  }
  for (i = 0; i < XML_MAX_DEPTH; i++)
    buf_free(&b->text[i]);
  XML_ParserFree(b->parser);
  free(b);
  return root;
}

const XmlNode *xml_child (const XmlNode *n, const char *name) {
  size_t i;
  if (n == NULL)
    return NULL;
  for (i = 0; i < n->nchildren; i++)
    if (strcmp(n->children[i]->name, name) == 0)
      return n->children[i];
  return NULL;
}

/* Follow a '/'-separated path of child names ("Error/Code"), or NULL. */
const XmlNode *xml_path (const XmlNode *n, const char *path) {
  char part[256];
  while (n != NULL && *path) {
    size_t l = strcspn(path, "/");
    if (l >= sizeof(part))
      return NULL;
    memcpy(part, path, l);
    part[l] = '\0';
    n = xml_child(n, part);
    path += l;
    if (*path == '/')
      path++;
  }
  return n;
}

const char *xml_path_text (const XmlNode *n, const char *path) {
  const XmlNode *c = xml_path(n, path);
  return c != NULL ? c->text : NULL;
}

/* Append s with & < > " ' escaped (request bodies). */
void xml_escape (Buf *out, const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    switch (s[i]) {
      case '&': buf_puts(out, "&amp;"); break;
      case '<': buf_puts(out, "&lt;"); break;
      case '>': buf_puts(out, "&gt;"); break;
      case '"': buf_puts(out, "&quot;"); break;
      case '\'': buf_puts(out, "&apos;"); break;
      case '\r': buf_puts(out, "&#13;"); break;   /* keep CR through parsing */
      default: buf_putc(out, s[i]);
    }
  }
}
