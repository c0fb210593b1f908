/*
** metrics_server.c
** The /metrics endpoint (see metrics_server.h): our own listening socket
** (so that "HOST:PORT" resolves with getaddrinfo, port 0 works and the
** bound address can be read back), handed to libmicrohttpd, which runs
** the HTTP side in its internal polling thread.
*/
#include "metrics/metrics_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/buf.h"

struct MetricsServer {
  struct MHD_Daemon *daemon;
  int fd;
  pthread_mutex_t mu;
  char *text;                /* the document (owned), under mu */
  size_t len;
  unsigned long scrapes;     /* under mu */
  char address[128];
};

int metrics_parse_address (const char *addr, char *host, size_t hostlen, char *port,
                           size_t portlen, char *err, size_t errlen) {
  const char *colon, *h = addr, *hend;
  char *end;
  long p;
  if (addr == NULL || *addr == '\0') {
    snprintf(err, errlen, "empty address: give HOST:PORT, e.g. 127.0.0.1:9187");
    return -1;
  }
  if (addr[0] == '[') {            /* [IPv6]:PORT */
    hend = strchr(addr, ']');
    if (hend == NULL || hend[1] != ':') {
      snprintf(err, errlen, "'%s': an IPv6 address is written [ADDR]:PORT", addr);
      return -1;
    }
    h = addr + 1;
    colon = hend + 1;
  } else {
    colon = strrchr(addr, ':');
    if (colon == NULL || memchr(addr, ':', (size_t)(colon - addr)) != NULL) {
      snprintf(err, errlen, "'%s' is not HOST:PORT (e.g. 127.0.0.1:9187, [::1]:9187, :9187)", addr);
      return -1;
    }
    hend = colon;
  }
  errno = 0;
  p = strtol(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end != '\0' || errno != 0 || p < 0 || p > 65535) {
    snprintf(err, errlen, "'%s': the port must be a number from 0 to 65535", addr);
    return -1;
  }
  if ((size_t)(hend - h) >= hostlen) {
    snprintf(err, errlen, "'%s': host name too long", addr);
    return -1;
  }
  memcpy(host, h, (size_t)(hend - h));
  host[hend - h] = '\0';
  snprintf(port, portlen, "%ld", p);
  return 0;
}

/* Answer one request: GET or HEAD of /metrics, else 404/405. */
static enum MHD_Result handle (void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls) {
  MetricsServer *s = cls;
  struct MHD_Response *resp;
  unsigned int code = MHD_HTTP_OK;
  const char *type = METRICS_CONTENT_TYPE;
  enum MHD_Result rc;
  (void)version;
  (void)upload;
  (void)con_cls;
  if (*upload_size != 0) {   /* no request body is expected: drop it */
    *upload_size = 0;
    return MHD_YES;
  }
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    static const char msg[] = "only GET is served here\n";
    code = MHD_HTTP_METHOD_NOT_ALLOWED;
    type = "text/plain; charset=utf-8";
    resp = MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
  } else if (strcmp(url, "/metrics") != 0) {
    static const char msg[] = "pgtide serves its metrics on /metrics\n";
    code = MHD_HTTP_NOT_FOUND;
    type = "text/plain; charset=utf-8";
    resp = MHD_create_response_from_buffer(sizeof(msg) - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
  } else {
    pthread_mutex_lock(&s->mu);
    resp = MHD_create_response_from_buffer(s->len, s->text != NULL ? s->text : (void *)"",
                                           MHD_RESPMEM_MUST_COPY);
    s->scrapes++;
    pthread_mutex_unlock(&s->mu);
  }
  if (resp == NULL)
    return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  rc = MHD_queue_response(conn, code, resp);
  MHD_destroy_response(resp);
  return rc;
}

/* Open, bind and listen on host:port; returns the socket or -1 (err). */
static int listen_on (const char *host, const char *port, char *err, size_t errlen) {
  struct addrinfo hints, *res = NULL, *ai;
  int fd = -1, rc, e = 0;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
  if (rc != 0) {
    snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
    return -1;
  }
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    int one = 1;
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      e = errno;
      continue;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 32) == 0)
      break;
    e = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0)
    snprintf(err, errlen, "cannot listen on %s%s%s:%s: %s", strchr(host, ':') ? "[" : "", host,
             strchr(host, ':') ? "]" : "", port, strerror(e));
  return fd;
}

/* "HOST:PORT" of the bound socket into out. */
static void bound_address (int fd, char *out, size_t outlen) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  char h[INET6_ADDRSTRLEN] = "?";
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
    snprintf(out, outlen, "?");
    return;
  }
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a->sin6_addr, h, sizeof(h));
    snprintf(out, outlen, "[%s]:%u", h, (unsigned)ntohs(a->sin6_port));
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a->sin_addr, h, sizeof(h));
    snprintf(out, outlen, "%s:%u", h, (unsigned)ntohs(a->sin_port));
  }
}

MetricsServer *metrics_server_start (const char *addr, char *err, size_t errlen) {
  char host[256], port[16];
  MetricsServer *s;
  int fd;
  if (metrics_parse_address(addr, host, sizeof(host), port, sizeof(port), err, errlen) != 0)
    return NULL;
  fd = listen_on(host, port, err, errlen);
  if (fd < 0)
    return NULL;
  s = xcalloc(1, sizeof(*s));
  s->fd = fd;
  pthread_mutex_init(&s->mu, NULL);
  bound_address(fd, s->address, sizeof(s->address));
  s->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, handle, s,
                               MHD_OPTION_LISTEN_SOCKET, fd,
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned int)32,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10,
                               MHD_OPTION_END);
  if (s->daemon == NULL) {
    /* whether MHD closed the socket it was given is not said: leave it rather than
       risk closing a descriptor someone else opened since */
    snprintf(err, errlen, "cannot start the HTTP server on %s", s->address);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return NULL;
  }
  return s;
}

const char *metrics_server_address (const MetricsServer *s) {
  return s->address;
}

void metrics_server_set (MetricsServer *s, const char *text, size_t len) {
  char *copy = xmalloc(len + 1);
  char *old;
  memcpy(copy, text, len);
  copy[len] = '\0';
  pthread_mutex_lock(&s->mu);
  old = s->text;
  s->text = copy;
  s->len = len;
  pthread_mutex_unlock(&s->mu);
  free(old);
}

unsigned long metrics_server_scrapes (MetricsServer *s) {
  unsigned long n;
  pthread_mutex_lock(&s->mu);
  n = s->scrapes;
  pthread_mutex_unlock(&s->mu);
  return n;
}

void metrics_server_stop (MetricsServer *s) {
  if (s == NULL)
    return;
  MHD_stop_daemon(s->daemon);   /* joins its thread and closes the listening socket */
  pthread_mutex_destroy(&s->mu);
  free(s->text);
  free(s);
}
