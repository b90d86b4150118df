/* processor/cmd_dev.h - `flushout-processor dev`: an embedded Kafka-protocol broker
 * (librdkafka's mock cluster, in memory, for development and tests) with the topics
 * created, and the processor running against it. */
#ifndef FLUSHOUT_PROCESSOR_CMD_DEV_H
#define FLUSHOUT_PROCESSOR_CMD_DEV_H

#include "options.h"

/** Prints "bootstrap.servers=HOST:PORT,..." as the first line of stdout, then runs
 *  the processor (or, with --broker-only, just the broker) until SIGTERM or SIGINT.
 *  @returns the process exit code. */
int processor_cmd_dev(processor_config_t *cfg);

#endif
