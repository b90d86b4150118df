/* processor/gateway.h - `flushout-processor gateway`: HTTP, Server-Sent Events and
 * WebSocket in front of the processor (processor/GATEWAY.md). */
#ifndef FLUSHOUT_PROCESSOR_GATEWAY_H
#define FLUSHOUT_PROCESSOR_GATEWAY_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "options.h"

typedef struct processor_gateway_s processor_gateway_t;

/** Starts a gateway on port against the cluster at bootstrap (its Kafka threads run
 *  from here on; serve it with processor_gateway_serve()).
 *  @returns it, or NULL and errstr (the port is taken, a bad key file, ...). */
processor_gateway_t *processor_gateway_start(const processor_config_t *cfg,
                                             const char *bootstrap, uint16_t port,
                                             char *errstr, size_t errstr_size);

/** Serves connections on the calling thread until *stop is set. */
void processor_gateway_serve(processor_gateway_t *gw, volatile sig_atomic_t *stop);

/** Stops the Kafka threads and frees the gateway. NULL-safe. */
void processor_gateway_destroy(processor_gateway_t *gw);

/** The gateway command: start, serve until SIGTERM or SIGINT, stop. */
int processor_cmd_gateway(processor_config_t *cfg);

#endif
