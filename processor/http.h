/* processor/http.h - the processor's HTTP endpoint (/metrics, /healthz, /readyz),
 * served by libmicrohttpd on its own thread. */
#ifndef FLUSHOUT_PROCESSOR_HTTP_H
#define FLUSHOUT_PROCESSOR_HTTP_H

#include <stdint.h>
#include <stdio.h>

/* Writes the body for path to body and returns the HTTP status (404 for a path it
 * does not serve). Called on the server's thread, one request at a time. */
typedef int (*processor_http_render_t)(void *ctx, const char *path, FILE *body);

typedef struct processor_http_s processor_http_t;

/** Serves GET requests on port through render: on address (an IP address or a host
 *  name, its first address), or on every interface when address is NULL or empty.
 *  @returns the server, or NULL and errstr (the port is taken, no such address, ...). */
processor_http_t *processor_http_start(const char *address, uint16_t port,
                                       processor_http_render_t render, void *ctx,
                                       char *errstr, size_t errstr_size);

/** Stops serving (waits for a request in progress). NULL-safe. */
void processor_http_stop(processor_http_t *http);

#endif
