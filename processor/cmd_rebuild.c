/* processor/cmd_rebuild.c - `flushout-processor rebuild`: a state directory from the
 * topics, offline.
 *
 * From the changes topic, each change record is applied as a partition's new owner
 * applies it when catching up (resolved commands, no interceptors). From the flushes
 * topic, every record goes through processor_apply_record(), the processor's own path,
 * with no output produced; since processing is deterministic the result is the same
 * state the live processor built. */
#include "cmd_rebuild.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cmd_apply.h"
#include "codec/alloc.h"
#include "handler.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "run.h"

#define COMMIT_EVERY 1000 /* records per store write */
#define PROGRESS_S   2

typedef struct rebuild_s {
    const processor_config_t *cfg;
    bool from_changes;
    const char *topic;
    int32_t partition_count; /* of the flushes topic */
    codec_value_t *initial_document;
    codec_limits_t limits;
} rebuild_t;

/* Rebuilds one partition. @returns 0, or -1 (logged). */
static int rebuild_partition(const rebuild_t *rb, int32_t partition)
{
    const processor_config_t *cfg = rb->cfg;
    char dir[PATH_MAX], errstr[512];
    snprintf(dir, sizeof(dir), "%s/partition-%d", cfg->state_dir, partition);
    struct stat st;
    if (stat(dir, &st) == 0) {
        LOG_ERROR("partition %d: %s exists; rebuild never writes over a store (remove it "
                  "first)",
                  partition, dir);
        return -1;
    }
    state_store_conf_t sc =
        processor_store_conf(cfg, dir, (size_t)cfg->cache_mb << 20, rb->initial_document);
    state_store_t *store = state_store_open(&sc, errstr, sizeof(errstr));
    if (!store) {
        LOG_ERROR("partition %d: %s", partition, errstr);
        return -1;
    }
    processor_handler_conf_t hc = {
        .store = store,
        .master = processor_master_conf(cfg),
        .history = cfg->history,
        .limits = rb->limits,
        .max_document_bytes = cfg->max_document_bytes,
        .changes = true, /* to count applied flushes; nothing is produced */
    };
    processor_handler_t *handler = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);

    rd_kafka_conf_t *conf = processor_kafka_conf(
        cfg, cfg->bootstrap_servers, PROCESSOR_KAFKA_RESTORE, errstr, sizeof(errstr));
    rd_kafka_t *rk =
        conf ? rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr)) : NULL;
    int rc = -1;
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t err;
    if (!rk) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        LOG_ERROR("partition %d: %s", partition, errstr);
        goto done;
    }
    if ((err = rd_kafka_query_watermark_offsets(rk, rb->topic, partition, &lo, &hi,
                                                10000))) {
        LOG_ERROR("partition %d: offsets of %s: %s", partition, rb->topic,
                  rd_kafka_err2str(err));
        goto done;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rb->topic, partition)->offset = lo;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);

    double start = processor_monotonic_s(), last_log = start;
    uint64_t applied = 0, skipped = 0, since_commit = 0;
    int64_t position = lo, next_input = -1;
    rc = 0;
    while (position < hi && !rc) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m)
            continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            position = hi;
        } else if (m->err) {
            LOG_WARN("partition %d: %s", partition, rd_kafka_message_errstr(m));
        } else if (rb->from_changes) {
            int64_t input = -1;
            switch (state_store_apply_change(store, partition, m->key, m->key_len,
                                             m->payload ? m->payload : "", m->len, &input,
                                             errstr, sizeof(errstr))) {
            case STATE_CHANGE_APPLIED:
                applied++;
                break;
            case STATE_CHANGE_SKIPPED:
                skipped++;
                break;
            case STATE_CHANGE_GAP:
            case STATE_CHANGE_FAILED:
                LOG_ERROR("partition %d: %s offset %lld: %s", partition, rb->topic,
                          (long long)m->offset, errstr);
                rc = -1;
                break;
            }
            if (input + 1 > next_input)
                next_input = input + 1;
            position = m->offset + 1;
        } else {
            processor_apply_record(handler, cfg, rb->partition_count, m, &out);
            if (out.error == CODEC_ERR_STORE_FAILED) {
                LOG_ERROR("partition %d offset %lld: %s", partition, (long long)m->offset,
                          out.message);
                rc = -1;
            }
            applied += out.change.size > 0;
            skipped += out.change.size == 0;
            next_input = m->offset + 1;
            position = m->offset + 1;
        }
        rd_kafka_message_destroy(m);
        if (!rc && (++since_commit >= COMMIT_EVERY || position >= hi)) {
            if (rb->from_changes)
                state_store_set_changes_offset(store, partition, position);
            if (state_store_commit(store, partition, next_input, errstr,
                                   sizeof(errstr))) {
                LOG_ERROR("partition %d: %s", partition, errstr);
                rc = -1;
            }
            since_commit = 0;
        }
        double t = processor_monotonic_s();
        if (t - last_log >= PROGRESS_S && position < hi) {
            double rate = (double)(position - lo) / (t - start);
            LOG_INFO("partition %d: %lld of %lld records of %s (%.0f/s, %.0f%%, %.0f s "
                     "left)",
                     partition, (long long)(position - lo), (long long)(hi - lo),
                     rb->topic, rate, 100.0 * (double)(position - lo) / (double)(hi - lo),
                     rate > 0 ? (double)(hi - position) / rate : 0.0);
            last_log = t;
        }
    }
    if (!rc) {
        double secs = processor_monotonic_s() - start;
        LOG_INFO("partition %d: rebuilt from %s: %lld records in %.2f s (%.0f/s); %llu "
                 "%s, %llu %s",
                 partition, rb->topic, (long long)(hi - lo), secs,
                 secs > 0 ? (double)(hi - lo) / secs : 0.0, (unsigned long long)applied,
                 rb->from_changes ? "applied" : "flushes applied",
                 (unsigned long long)skipped,
                 rb->from_changes ? "already reflected" : "other records");
    }
done:
    if (rk)
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    processor_output_destroy(&out);
    processor_handler_destroy(handler);
    state_store_close(store);
    return rc;
}

int processor_cmd_rebuild(const processor_config_t *cfg)
{
    char errstr[512];
    rebuild_t rb = {
        .cfg = cfg,
        .from_changes = !strcmp(cfg->from, "changes"),
        .limits = processor_limits(cfg),
    };
    rb.topic = rb.from_changes ? cfg->changes_topic : cfg->flushes_topic;
    if (processor_make_dirs(cfg->state_dir, errstr, sizeof(errstr))) {
        LOG_ERROR("rebuild: %s", errstr);
        return 1;
    }
    if (cfg->initial_document &&
        !(rb.initial_document = processor_read_document(cfg->initial_document, &rb.limits,
                                                        errstr, sizeof(errstr)))) {
        LOG_ERROR("rebuild: %s", errstr);
        return 1;
    }
    /* The partition count decides which keys belong where, as in the processor. */
    rd_kafka_conf_t *conf = processor_kafka_conf(
        cfg, cfg->bootstrap_servers, PROCESSOR_KAFKA_RESTORE, errstr, sizeof(errstr));
    rd_kafka_t *rk =
        conf ? rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr)) : NULL;
    if (!rk) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        LOG_ERROR("rebuild: %s", errstr);
        codec_value_destroy(rb.initial_document);
        return 1;
    }
    rb.partition_count =
        processor_topic_partitions(rk, cfg->flushes_topic, 10000, errstr, sizeof(errstr));
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (rb.partition_count < 0) {
        LOG_ERROR("rebuild: %s", errstr);
        codec_value_destroy(rb.initial_document);
        return 1;
    }

    int rc = 0;
    if (cfg->partition_list) {
        const char *s = cfg->partition_list;
        while (*s && !rc) {
            char *end;
            long p = strtol(s, &end, 10);
            if (end == s || p < 0 || p >= rb.partition_count || (*end && *end != ',')) {
                LOG_ERROR(
                    "rebuild: --partitions %s: expected partition numbers below %d, "
                    "comma-separated",
                    cfg->partition_list, rb.partition_count);
                rc = -1;
                break;
            }
            rc = rebuild_partition(&rb, (int32_t)p);
            s = *end ? end + 1 : end;
        }
    } else {
        for (int32_t p = 0; p < rb.partition_count && !rc; p++)
            rc = rebuild_partition(&rb, p);
    }
    codec_value_destroy(rb.initial_document);
    return rc ? 1 : 0;
}
