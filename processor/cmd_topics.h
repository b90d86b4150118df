/* processor/cmd_topics.h - `flushout-processor topics create|describe`. */
#ifndef FLUSHOUT_PROCESSOR_CMD_TOPICS_H
#define FLUSHOUT_PROCESSOR_CMD_TOPICS_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "options.h"

#define PROCESSOR_TOPIC_COUNT       5 /* flushes, replies, changes, snapshots, dlq */
#define PROCESSOR_TOPIC_CONFIGS_MAX 3 /* cleanup.policy, retention.ms, min.insync... */

/* What one of the processor's topics must look like. */
typedef struct processor_topic_spec_s {
    const char *role; /* "flushes", "replies", "changes", "snapshots" or "dlq" */
    const char *name; /* the topic: cfg's string, lives as long as cfg */
    int partitions;   /* 0: not given (describe then compares no number) */
    int replication_factor;
    bool copartitioned; /* flushes, changes, snapshots: their counts must be equal */
    size_t config_count;
    struct {
        const char *name; /* a topic config, e.g. "retention.ms" */
        char value[24];   /* as the broker reports it, e.g. "604800000" */
    } configs[PROCESSOR_TOPIC_CONFIGS_MAX];
} processor_topic_spec_t;

/* What the cluster has for one topic. */
typedef struct processor_topic_state_s {
    bool exists;
    int partitions;
    int replicas_min, replicas_max; /* over the partitions */
    bool configs_read;              /* false: the cluster could not describe configs */
    /* The spec's configs, in its order, as the cluster reports them (owned by whoever
     * filled the state); NULL: not reported. */
    char *configs[PROCESSOR_TOPIC_CONFIGS_MAX];
} processor_topic_state_t;

/** Fills specs (flushes, replies, changes, snapshots, dlq, in that order) from cfg's
 *  options. Pure: no I/O.
 *  @returns 0, or -1 and errstr: --partitions 0 when require_partitions (create),
 *           --min-insync-replicas above --replication-factor, an empty topic name,
 *           or two topic options naming the same topic. */
int processor_topic_specs(const processor_config_t *cfg, bool require_partitions,
                          processor_topic_spec_t specs[PROCESSOR_TOPIC_COUNT],
                          char *errstr, size_t errstr_size);

/** The CreateTopics request object for spec (the caller destroys it), or NULL and
 *  errstr (librdkafka refused a value). */
rd_kafka_NewTopic_t *processor_topic_new(const processor_topic_spec_t *spec, char *errstr,
                                         size_t errstr_size);

/** How an existing topic differs from spec, as "; "-separated text in buf ("" when
 *  it does not). Partitions are compared only when spec gives them, configs only
 *  when they were read. Pure.
 *  @returns the number of differences. */
int processor_topic_compare(const processor_topic_spec_t *spec,
                            const processor_topic_state_t *state, char *buf, size_t size);

/** Creates the missing topics (create) or checks them (describe); the report goes to
 *  out, one line per topic.
 *  @returns 0, or 1 (a topic missing, different or not created, or an error; logged). */
int processor_cmd_topics(const processor_config_t *cfg, FILE *out);

#endif
