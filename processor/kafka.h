/* processor/kafka.h - librdkafka clients: their configuration and creation for every
 * command, output sizes, producing, and reading a partition.
 *
 * Every client gets bootstrap.servers, the -X properties, and the settings its role
 * needs for correctness. Properties that correctness depends on are owned here and
 * refused from -X with a message saying which option to use instead. */
#ifndef FLUSHOUT_PROCESSOR_KAFKA_H
#define FLUSHOUT_PROCESSOR_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "options.h"

typedef enum processor_kafka_role_e {
    PROCESSOR_KAFKA_CONSUMER,       /* the group consumer of the flushes topic */
    PROCESSOR_KAFKA_RESTORE,        /* reads a changes partition, no group */
    PROCESSOR_KAFKA_PRODUCER,       /* replies, change records, dead letters */
    PROCESSOR_KAFKA_SENDER,         /* send: produces requests */
    PROCESSOR_KAFKA_READER,         /* send: reads replies, no group */
    PROCESSOR_KAFKA_ADMIN,          /* topics: Admin API and metadata, a consumer handle
                                       that never joins a group */
    PROCESSOR_KAFKA_GATEWAY,        /* gateway: reads its share of the replies topic in
                                       group --gateway-group, from the end, never commits */
    PROCESSOR_KAFKA_GATEWAY_SENDER, /* gateway: produces requests */
} processor_kafka_role_t;

/* How long one request to the cluster may take (metadata, watermarks, committed
 * offsets, seeks) before it fails. Not send's --timeout-ms: that bounds the wait for a
 * reply, a processor's whole round trip, and is the user's to choose. */
#define PROCESSOR_KAFKA_TIMEOUT_MS 10000

/** A configuration for role, or NULL and errstr (an unknown or owned -X property, a
 *  bad value). */
rd_kafka_conf_t *processor_kafka_conf(const processor_config_t *cfg,
                                      const char *bootstrap_servers,
                                      processor_kafka_role_t role, char *errstr,
                                      size_t errstr_size);

/* Callbacks a client is created with (NULL: librdkafka's default), and their opaque. */
typedef struct processor_kafka_callbacks_s {
    void (*delivery)(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
    void (*rebalance)(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *partitions, void *opaque);
    void (*log)(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
    void (*error)(rd_kafka_t *rk, int err, const char *reason, void *opaque);
    void *opaque;
} processor_kafka_callbacks_t;

/** A client for role (a producer for PRODUCER and SENDER, a consumer for the others)
 *  configured by processor_kafka_conf(), with callbacks (NULL: none).
 *  @returns it (rd_kafka_destroy() it), or NULL and errstr. */
rd_kafka_t *processor_kafka_new(const processor_config_t *cfg,
                                const char *bootstrap_servers,
                                processor_kafka_role_t role,
                                const processor_kafka_callbacks_t *callbacks,
                                char *errstr, size_t errstr_size);

/* Sizes of output records. librdkafka refuses a record whose key, value and headers
 * exceed message.max.bytes; a little is kept for the framing around them. */
#define PROCESSOR_RECORD_OVERHEAD   1024 /* Kafka's framing of one record */
#define PROCESSOR_REPLY_HEADERS_MAX 2048 /* a reply's headers (kafka_correlationId) */
#define PROCESSOR_CORRELATION_MAX   1024 /* the longest kafka_correlationId copied */
#define PROCESSOR_ENVELOPE_BYTES                       \
    16384 /* what a change record or reply adds around \
             a request (model id, field names, ...) */

/** The producer's message.max.bytes: the last -X message.max.bytes, or librdkafka's
 *  default (1000000). A function of the configuration alone, so that rebuild refuses
 *  exactly what run refused. */
size_t processor_max_message_bytes(const processor_config_t *cfg);

/** The most a reply or change record (key and value) may take: what the handler
 *  checks its outputs against (processor_handler_conf_t.max_output_bytes). */
size_t processor_max_output_bytes(const processor_config_t *cfg);

/** Checks that the limits fit message.max.bytes: a request of --max-record-bytes must
 *  fit in its change record and reply, a document of --max-document-bytes in a
 *  snapshot reply. @returns 0, or -1 and errstr (what to change). */
int processor_check_output_limits(const processor_config_t *cfg, char *errstr,
                                  size_t errstr_size);

/** Whether a kafka_replyTopic header may name topic: the replies topic, or a topic
 *  --reply-topics allows, never the flushes, changes, snapshots or dead-letter topic.
 *  Depends on the configuration alone (the same answer on every instance).
 *  @returns 0, or -1 and why. */
int processor_reply_topic_check(const processor_config_t *cfg, const char *topic,
                                size_t topic_len, char *why, size_t why_size);

/** The partition that producers using partitioner put key in, or -1 when the
 *  partitioner is "any" (no check). */
int32_t processor_key_partition(const char *partitioner, const char *key, size_t key_len,
                                int32_t partition_count);

/* A record to produce. */
typedef struct processor_record_s {
    const char *topic;
    int32_t partition; /* RD_KAFKA_PARTITION_UA: the producer's partitioner chooses */
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    rd_kafka_headers_t *headers; /* NULL, or taken over by librdkafka on success */
    void *opaque;                /* for the delivery report */
} processor_record_t;

/** Produces rec, waiting for room while the producer's queue is full. msgflags:
 *  RD_KAFKA_MSG_F_COPY (librdkafka copies the value), RD_KAFKA_MSG_F_FREE (it takes
 *  the malloc()ed value and frees it), or 0 (the value must live until the delivery
 *  report); the key is always copied.
 *  @returns 0, or the error (nothing produced; headers and value are still the
 *  caller's). */
rd_kafka_resp_err_t processor_produce(rd_kafka_t *rk, const processor_record_t *rec,
                                      int msgflags);

/** How many threads wait in processor_produce() for room in a producer's queue now:
 *  non-zero while Kafka does not take records as fast as they come (an outage). */
int processor_produce_waiting(void);

/** Co-partitioning: partition N of the flushes, changes and snapshots topics holds the
 *  same models, so their partition counts must be equal. counts[i] is topics[i]'s
 *  (negative: the topic is not there, left out).
 *  @returns 0, or -1 and errstr naming every count. */
int processor_copartition_check(const char *const *topics, const int *counts, size_t n,
                                char *errstr, size_t errstr_size);

/** The number of partitions of topic, or -1 and errstr. */
int processor_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms,
                               char *errstr, size_t errstr_size);

/* Reading one partition of a topic from start to a fixed end, outside any group: how
 * a partition catches up from the changes and snapshots topics, and how `rebuild`
 * reads. */
typedef struct processor_partition_read_s {
    const char *topic;
    int32_t partition;
    int64_t from, to; /* [from, to); -1: the low / high watermark, set on return */
    /* Called for each record; non-zero stops the read with that code. */
    int (*visit)(const rd_kafka_message_t *m, void *ctx);
    /* Polled between records; true stops the read with -1. NULL: never. */
    bool (*stopped)(void *ctx);
    void *ctx;
    /* Every offset holds a record (the changes topic: written by one idempotent
     * producer, never compacted), so one that skips is a gap. */
    bool contiguous;
    /* The reader's settings (processor_settings()), for the changes and snapshots
     * topics: a record whose settings header says others (and not one of
     * --accept-settings) stops the read with PROCESSOR_READ_SETTINGS. A record without
     * the header (written before it existed) is accepted. NULL: no check (the flushes
     * topic, whose headers are the clients'). */
    const char *settings;
} processor_partition_read_t;

/* processor_read_partition(): records are missing (retention deleted them while, or
 * before, they were read; or, when contiguous, a record came after a gap). */
#define PROCESSOR_READ_GAP (-2)
/* processor_read_partition(): a record was written under other settings (logged, with
 * its topic, partition and offset, and the differing settings where it names them). */
#define PROCESSOR_READ_SETTINGS (-3)

/** Reads rd->topic's partition, with a progress line (records/s, percent, time left)
 *  every 10 s. The reader never skips: where librdkafka would reset to the earliest
 *  offset (auto.offset.reset), the read stops with PROCESSOR_READ_GAP.
 *  @returns 0 at the end, visit's code, PROCESSOR_READ_GAP, PROCESSOR_READ_SETTINGS,
 *  or -1 (stopped, no consumer, no watermarks; logged). */
int processor_read_partition(const processor_config_t *cfg, const char *bootstrap_servers,
                             processor_partition_read_t *rd);

/* Turns Nagle's algorithm off on the listening sockets of librdkafka's mock cluster
 * whose "host:port,..." is bootstrap, which their connections inherit (Linux). The mock
 * leaves it on, so a response written while the client had not yet acknowledged the
 * one before waited for the client's delayed ACK, 40 ms: a watermark query (two
 * requests) and pipelined produce responses stalled. Kafka's brokers set TCP_NODELAY.
 * Call it before any client connects. @returns how many listeners were changed. */
int processor_mock_nodelay(const char *bootstrap);

#endif
