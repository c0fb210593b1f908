/*
** metrics_server.h
** A small HTTP endpoint serving one text document on /metrics (the
** Prometheus/OpenMetrics exposition that `pgtide run --metrics` keeps up
** to date), over libmicrohttpd with its own polling thread.  Lua-free:
** the caller builds the text and replaces it whenever it likes; scrapes
** are answered from a copy taken under a mutex, so a scrape never waits
** for the run and the run never waits for a scrape.
*/
#ifndef PGTIDE_METRICS_SERVER_H
#define PGTIDE_METRICS_SERVER_H

#include <stddef.h>

typedef struct MetricsServer MetricsServer;

/* The content type of the exposition (Prometheus text format 0.0.4). */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/*
** Parse "HOST:PORT" ("127.0.0.1:9187", "localhost:9187", "[::1]:9187",
** ":9187" for every address) into host (empty for any) and port.
** Returns 0, or -1 with a message in err.
*/
int metrics_parse_address(const char *addr, char *host, size_t hostlen, char *port,
                          size_t portlen, char *err, size_t errlen);

/*
** Listen on 'addr' (see metrics_parse_address; port 0 picks a free one)
** and serve GET /metrics from a thread of its own until
** metrics_server_stop.  Returns the server, or NULL with a message in
** err (bad address, address in use, ...).  The document is empty until
** metrics_server_set.
*/
MetricsServer *metrics_server_start(const char *addr, char *err, size_t errlen);

/* The address actually bound, "HOST:PORT" (IPv6 in brackets). */
const char *metrics_server_address(const MetricsServer *s);

/* Replace the document served on /metrics (copied). */
void metrics_server_set(MetricsServer *s, const char *text, size_t len);

/* How many GET /metrics were answered so far. */
unsigned long metrics_server_scrapes(MetricsServer *s);

/* Stop serving, close the socket and free the server (NULL is fine). */
void metrics_server_stop(MetricsServer *s);

#endif
