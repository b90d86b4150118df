/* tests/bench/passthrough.c - the throughput ceiling for the end-to-end benchmark: a
 * consume -> produce program with no state.
 *
 * It takes the processor's options (so the same topics, group and -X properties) and
 * the processor's own client settings (processor_kafka_conf: the same consumer group
 * protocol, idempotent acks=all producer, linger), and for each flush record produces
 * what the processor produces per flush, without applying anything: the request echoed
 * to the replies topic keyed by its client (found by the same shallow scan), and the
 * request again to the changes topic, same partition and key. Offsets are stored once
 * the records are handed to the producer and committed by librdkafka's timer, which is
 * cheaper than the processor's wait for delivery: this is a ceiling, not a rival.
 *
 *   passthrough --bootstrap-servers B [run's options]   (SIGTERM or SIGINT stops it) */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "codec/msgpack.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/options.h"
#include "processor/run.h"

static void produce(rd_kafka_t *producer, const char *topic, int32_t partition,
                    const void *key, size_t key_len, void *value, size_t len)
{
    processor_record_t rec = {topic, partition, key, key_len, value, len, NULL, NULL};
    rd_kafka_resp_err_t err = processor_produce(producer, &rec, RD_KAFKA_MSG_F_COPY);
    if (err)
        LOG_ERROR("produce to %s: %s", topic, rd_kafka_err2str(err));
}

int main(int argc, char **argv)
{
    processor_config_t cfg;
    char errstr[512];
    int rc = processor_config_load(&cfg, PROCESSOR_CMD_RUN, "run", argc - 1, argv + 1,
                                   errstr, sizeof(errstr));
    if (rc) {
        if (rc < 0)
            fprintf(stderr, "passthrough: %s\n", errstr);
        return rc < 0 ? 2 : 0;
    }
    static volatile sig_atomic_t stop;
    processor_catch_signals(&stop);

    rd_kafka_conf_t *pconf = processor_kafka_conf(
        &cfg, cfg.bootstrap_servers, PROCESSOR_KAFKA_PRODUCER, errstr, sizeof(errstr));
    rd_kafka_t *producer =
        pconf ? rd_kafka_new(RD_KAFKA_PRODUCER, pconf, errstr, sizeof(errstr)) : NULL;
    rd_kafka_conf_t *cconf =
        producer ? processor_kafka_conf(&cfg, cfg.bootstrap_servers,
                                        PROCESSOR_KAFKA_CONSUMER, errstr, sizeof(errstr))
                 : NULL;
    rd_kafka_t *consumer =
        cconf ? rd_kafka_new(RD_KAFKA_CONSUMER, cconf, errstr, sizeof(errstr)) : NULL;
    if (!consumer) {
        fprintf(stderr, "passthrough: %s\n", errstr);
        return 1;
    }
    rd_kafka_poll_set_consumer(consumer);
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, cfg.flushes_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        fprintf(stderr, "passthrough: subscribe: %s\n", rd_kafka_err2str(err));
        return 1;
    }
    LOG_INFO("passthrough: %s -> %s and %s", cfg.flushes_topic, cfg.replies_topic,
             cfg.changes_topic);
    unsigned long long records = 0;
    while (!stop) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
        rd_kafka_poll(producer, 0);
        if (!m)
            continue;
        if (!m->err) {
            codec_identity_t id;
            codec_msgpack_identify(m->payload, m->len, &id);
            if (id.client)
                produce(producer, cfg.replies_topic, RD_KAFKA_PARTITION_UA, id.client,
                        id.client_len, m->payload, m->len);
            produce(producer, cfg.changes_topic, m->partition, m->key, m->key_len,
                    m->payload, m->len);
            rd_kafka_offset_store(m->rkt, m->partition, m->offset);
            records++;
        }
        rd_kafka_message_destroy(m);
    }
    LOG_INFO("passthrough: %llu records; stopping", records);
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    rd_kafka_flush(producer, 10000);
    rd_kafka_destroy(producer);
    processor_config_clear(&cfg);
    return 0;
}
