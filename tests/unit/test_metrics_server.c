/*
** test_metrics_server.c
** The /metrics HTTP endpoint (src/metrics/metrics_server.c) over real
** loopback sockets: address parsing, port 0, the document served and
** replaced, 404/405, concurrent scrapes while the document changes, and
** the port released by stop.
*/
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics/metrics_server.h"
#include "test.h"
#include "util/buf.h"

/* One HTTP/1.0 request to 127.0.0.1:port; the whole response into out. */
static int http (int port, const char *request, Buf *out) {
  struct sockaddr_in a;
  char tmp[4096];
  ssize_t n;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct timeval tv = {5, 0};
  if (fd < 0)
    return -1;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  if (write(fd, request, strlen(request)) < 0) {
    close(fd);
    return -1;
  }
  while ((n = read(fd, tmp, sizeof(tmp))) > 0)
    buf_append(out, tmp, (size_t)n);
  close(fd);
  return 0;
}

static int port_of (MetricsServer *s) {
  const char *a = metrics_server_address(s);
  return atoi(strrchr(a, ':') + 1);
}

static void parses_addresses (void) {
  char h[64], p[16], e[256];
  CHECK_INT(metrics_parse_address("127.0.0.1:9187", h, sizeof(h), p, sizeof(p), e, sizeof(e)), 0);
  CHECK_STR(h, "127.0.0.1");
  CHECK_STR(p, "9187");
  CHECK_INT(metrics_parse_address("[::1]:80", h, sizeof(h), p, sizeof(p), e, sizeof(e)), 0);
  CHECK_STR(h, "::1");
  CHECK_STR(p, "80");
  CHECK_INT(metrics_parse_address(":0", h, sizeof(h), p, sizeof(p), e, sizeof(e)), 0);
  CHECK_STR(h, "");
  CHECK_INT(metrics_parse_address("localhost", h, sizeof(h), p, sizeof(p), e, sizeof(e)), -1);
  CHECK(strstr(e, "HOST:PORT") != NULL);
  CHECK_INT(metrics_parse_address("host:70000", h, sizeof(h), p, sizeof(p), e, sizeof(e)), -1);
  CHECK(strstr(e, "0 to 65535") != NULL);
  CHECK_INT(metrics_parse_address("::1:80", h, sizeof(h), p, sizeof(p), e, sizeof(e)), -1);
  CHECK_INT(metrics_parse_address("[::1]80", h, sizeof(h), p, sizeof(p), e, sizeof(e)), -1);
  CHECK_INT(metrics_parse_address("", h, sizeof(h), p, sizeof(p), e, sizeof(e)), -1);
}

static void serves_and_replaces (void) {
  char err[256];
  Buf r = BUF_INIT;
  MetricsServer *s = metrics_server_start("127.0.0.1:0", err, sizeof(err));
  int port;
  CHECK(s != NULL);
  if (s == NULL) {
    fprintf(stderr, "%s\n", err);
    return;
  }
  port = port_of(s);
  CHECK(port > 0);
  CHECK(strncmp(metrics_server_address(s), "127.0.0.1:", 10) == 0);
  /* empty before the first document */
  CHECK_INT(http(port, "GET /metrics HTTP/1.0\r\n\r\n", &r), 0);
  CHECK(strstr(buf_cstr(&r), "200 OK") != NULL);
  CHECK(strstr(buf_cstr(&r), "Content-Length: 0") != NULL);
  buf_reset(&r);
  metrics_server_set(s, "a_metric 1\n", 11);
  CHECK_INT(http(port, "GET /metrics HTTP/1.0\r\n\r\n", &r), 0);
  CHECK(strstr(buf_cstr(&r), "Content-Type: text/plain; version=0.0.4") != NULL);
  CHECK(strstr(buf_cstr(&r), "\r\n\r\na_metric 1\n") != NULL);
  buf_reset(&r);
  metrics_server_set(s, "a_metric 2\nb 3\n", 15);
  CHECK_INT(http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &r), 0);
  CHECK(strstr(buf_cstr(&r), "\r\n\r\na_metric 2\nb 3\n") != NULL);
  buf_reset(&r);
  CHECK_INT(http(port, "GET / HTTP/1.0\r\n\r\n", &r), 0);
  CHECK(strstr(buf_cstr(&r), "404") != NULL);
  CHECK(strstr(buf_cstr(&r), "/metrics") != NULL);
  buf_reset(&r);
  CHECK_INT(http(port, "DELETE /metrics HTTP/1.0\r\n\r\n", &r), 0);
  CHECK(strstr(buf_cstr(&r), "405") != NULL);
  buf_reset(&r);
  CHECK_INT(metrics_server_scrapes(s), 3);
  metrics_server_stop(s);
  buf_free(&r);
}

typedef struct {
  int port, ok, n;
} Scraper;

/* Scrape n times; every answer must be one whole document. */
static void *scrape (void *arg) {
  Scraper *sc = arg;
  int i;
  for (i = 0; i < sc->n; i++) {
    Buf r = BUF_INIT;
    const char *body;
    if (http(sc->port, "GET /metrics HTTP/1.0\r\n\r\n", &r) == 0 &&
        (body = strstr(buf_cstr(&r), "\r\n\r\n")) != NULL &&
        (strcmp(body + 4, "") == 0 ||
         (strncmp(body + 4, "v ", 2) == 0 && strstr(body + 4, "\nend\n") != NULL)))
      sc->ok++;
    buf_free(&r);
  }
  return NULL;
}

static void concurrent_scrapes_see_whole_documents (void) {
  char err[256], doc[8192];
  MetricsServer *s = metrics_server_start(":0", err, sizeof(err));
  pthread_t th[4];
  Scraper sc[4];
  int i, k;
  CHECK(s != NULL);
  if (s == NULL)
    return;
  for (i = 0; i < 4; i++) {
    sc[i].port = port_of(s);
    sc[i].ok = 0;
    sc[i].n = 50;
    pthread_create(&th[i], NULL, scrape, &sc[i]);
  }
  for (k = 0; k < 2000; k++) {   /* documents of changing length */
    int n = snprintf(doc, sizeof(doc), "v %d\n%*s\nend\n", k, k % 4000, "");
    metrics_server_set(s, doc, (size_t)n);
  }
  for (i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK_INT(sc[i].ok, 50);
  }
  metrics_server_stop(s);
}

static void stop_releases_the_port (void) {
  char err[256], addr[64];
  MetricsServer *s = metrics_server_start("127.0.0.1:0", err, sizeof(err));
  MetricsServer *busy, *again;
  CHECK(s != NULL);
  if (s == NULL)
    return;
  snprintf(addr, sizeof(addr), "%s", metrics_server_address(s));
  busy = metrics_server_start(addr, err, sizeof(err));
  CHECK(busy == NULL);
  CHECK(strstr(err, "cannot listen on 127.0.0.1:") != NULL);
  CHECK(strstr(err, "in use") != NULL);
  metrics_server_stop(s);
  again = metrics_server_start(addr, err, sizeof(err));
  CHECK(again != NULL);
  metrics_server_stop(again);
  metrics_server_stop(NULL);
}

static void refuses_bad_hosts (void) {
  char err[256];
  MetricsServer *s = metrics_server_start("no-such-host.invalid:9187", err, sizeof(err));
  CHECK(s == NULL);
  CHECK(strstr(err, "cannot resolve 'no-such-host.invalid'") != NULL);
}

int main (void) {
  RUN_TEST(parses_addresses);
  RUN_TEST(serves_and_replaces);
  RUN_TEST(concurrent_scrapes_see_whole_documents);
  RUN_TEST(stop_releases_the_port);
  RUN_TEST(refuses_bad_hosts);
  return TEST_SUMMARY();
}
