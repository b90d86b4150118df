/* processor/run.h - the Kafka stream processor (`flushout-processor run`).
 *
 * A consumer in group --group-id reads the flushes topic; each assigned partition
 * has its own RocksDB store (state-dir/partition-N) and is processed by one of
 * --threads workers at a time, strictly in offset order. A processing step applies
 * the records polled for a partition, writes state, next offset and outbox (replies,
 * change records, dead letters) in one batch, then produces the outbox; records are
 * deleted from the outbox as Kafka confirms them, and the consumer offset is
 * committed to Kafka once every record before it is delivered. How handoff and
 * recovery stay correct is written down in processor/README.md. The runner is
 * implemented by processor/run*.c, one file per concept (the README's map), around
 * the private run_int.h. */
#ifndef FLUSHOUT_PROCESSOR_RUN_H
#define FLUSHOUT_PROCESSOR_RUN_H

#include <signal.h>

#include <librdkafka/rdkafka.h>

#include "handler.h"
#include "options.h"

/** Runs until *stop becomes non-zero, then shuts down cleanly (finishes the step in
 *  flight, delivers the outbox, commits, leaves the group).
 *  @returns 0, or 1 after a fatal error (logged). */
int processor_run(const processor_config_t *cfg, const char *bootstrap_servers,
                  const char *state_dir, volatile sig_atomic_t *stop);

/** Applies one record of the flushes topic exactly as the processor does: refuses a
 *  record without a key, larger than --max-record-bytes or in the wrong partition
 *  (of partition_count), else hands it to the handler. out gets the reply, the change
 *  record and the error. Shared with `rebuild --from flushes`, which must decide
 *  alike to rebuild the same state. */
void processor_apply_record(processor_handler_t *h, const processor_config_t *cfg,
                            int32_t partition_count, const rd_kafka_message_t *m,
                            processor_output_t *out);

/** `flushout-processor run`: processor_run() until SIGTERM or SIGINT. */
int processor_cmd_run(const processor_config_t *cfg);

/** Makes SIGTERM and SIGINT set *flag (and ignores SIGPIPE). */
void processor_catch_signals(volatile sig_atomic_t *flag);

#endif
