/* processor/cmd_send.h - `flushout-processor send`: a kcat-like client that produces
 * requests (JSON in, msgpack on the wire) and prints each matching reply as JSON. */
#ifndef FLUSHOUT_PROCESSOR_CMD_SEND_H
#define FLUSHOUT_PROCESSOR_CMD_SEND_H

#include <stdio.h>

#include "options.h"

/** Sends cfg->request (or, for "-", each NDJSON line of in) and writes each reply to
 *  out. @returns the process exit code: 0, 1 on a timeout or Kafka error, 2 on bad
 *  input. */
int processor_cmd_send(processor_config_t *cfg, FILE *in, FILE *out);

#endif
