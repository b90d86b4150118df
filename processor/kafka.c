/* processor/kafka.c - librdkafka clients: configuration, creation, producing, reading. */
#include "kafka.h"

#include <dirent.h>
#include <fnmatch.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "setup.h"
#include "codec/alloc.h"
#include "codec/error.h"
#include "log.h"
#include "metrics.h"

/* Properties correctness depends on, and what to use instead. */
static const struct {
    const char *name;
    const char *instead;
} owned[] = {
    {"bootstrap.servers", "--bootstrap-servers"},
    {"metadata.broker.list", "--bootstrap-servers"},
    {"group.id", "--group-id"},
    {"group.instance.id", "--group-instance-id"},
    {"enable.auto.commit", "nothing: offsets are stored with the state and committed "
                           "once a step's records are delivered"},
    {"auto.commit.interval.ms", "nothing"},
    {"enable.auto.offset.store", "nothing: offsets are the processor's"},
    {"auto.offset.reset", "nothing: a partition without state starts at its beginning"},
    {"partition.assignment.strategy", "nothing: the processor needs cooperative-sticky "
                                      "to hand partitions over one by one"},
    {"enable.idempotence", "nothing: the producer is idempotent, so that retries neither "
                           "duplicate nor reorder change records"},
    {"acks", "nothing: acks=all"},
    {"request.required.acks", "nothing: acks=all"},
    {"message.timeout.ms", "nothing: records are retried until delivered, in order"},
    {"delivery.timeout.ms", "nothing: records are retried until delivered, in order"},
    {"enable.partition.eof", "nothing"},
    {"allow.auto.create.topics", "nothing: a missing topic is an error, never created "
                                 "by a metadata request or a reply"},
    {"isolation.level", "nothing"},
};

/* librdkafka's own table of properties (rd_kafka_conf_properties_show()), so that
 * each -X property goes only to the clients it applies to, as in the library
 * linked. */
static char *property_table;
static pthread_once_t property_table_once = PTHREAD_ONCE_INIT;

static void read_property_table(void)
{
    size_t len = 0;
    FILE *fp = open_memstream(&property_table, &len);
    if (!fp)
        return;
    rd_kafka_conf_properties_show(fp);
    fclose(fp);
}

/* 'C' (consumers), 'P' (producers), '*' (both) or 0 when unknown. */
static char property_scope(const char *name)
{
    pthread_once(&property_table_once, read_property_table);
    size_t n = strlen(name);
    for (const char *line = property_table; line && *line;) {
        const char *end = strchr(line, '\n');
        if (!strncmp(line, name, n) && line[n] == ' ') {
            const char *c = strchr(line, '|');
            if (c && (!end || c < end)) {
                for (c++; *c == ' '; c++)
                    ;
                return *c;
            }
        }
        line = end ? end + 1 : NULL;
    }
    return 0;
}

static int set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
               size_t errstr_size)
{
    char err[512];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errstr_size, "%s=%s: %s", name, value, err);
        return -1;
    }
    return 0;
}

rd_kafka_conf_t *processor_kafka_conf(const processor_config_t *cfg,
                                      const char *bootstrap_servers,
                                      processor_kafka_role_t role, char *errstr,
                                      size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Role settings first; -X may then tune everything not owned. */
    bool producer = role == PROCESSOR_KAFKA_PRODUCER || role == PROCESSOR_KAFKA_SENDER ||
                    role == PROCESSOR_KAFKA_GATEWAY_SENDER;
    if (set(conf, "bootstrap.servers", bootstrap_servers, errstr, errstr_size) ||
        set(conf, "client.id", "flushout-processor", errstr, errstr_size) ||
        (producer && set(conf, "partitioner", "murmur2_random", errstr, errstr_size)))
        goto err;
    /* Brokers answer a fetch as soon as data arrives, but librdkafka's mock cluster
     * holds every fetch for fetch.wait.max.ms: short waits keep dev and send
     * interactive. Nagle's delay is never wanted for small records. */
    /* librdkafka's producer defaults to allow.auto.create.topics=true: its metadata
     * requests would let a broker with auto.create.topics.enable create any topic a
     * record names. Consumers default to false; setting it on them too would only add
     * a warning per connection on brokers before 0.11 (and the mock cluster). */
    if (producer && set(conf, "allow.auto.create.topics", "false", errstr, errstr_size))
        goto err;
    if (set(conf, "socket.nagle.disable", "true", errstr, errstr_size) ||
        (cfg->low_latency && !producer &&
         set(conf, "fetch.wait.max.ms", "10", errstr, errstr_size)))
        goto err;
    /* The mock cluster also keeps a member that left the group until its session
     * times out, holding up the next join: keep sessions short there. */
    if (cfg->low_latency &&
        (role == PROCESSOR_KAFKA_CONSUMER || role == PROCESSOR_KAFKA_GATEWAY) &&
        set(conf, "session.timeout.ms", "6000", errstr, errstr_size))
        goto err;
    switch (role) {
    case PROCESSOR_KAFKA_CONSUMER:
        if (set(conf, "group.id", cfg->group_id, errstr, errstr_size) ||
            set(conf, "partition.assignment.strategy", "cooperative-sticky", errstr,
                errstr_size) ||
            /* librdkafka commits what the processor stores (rd_kafka_offsets_store):
             * offsets whose records are applied and whose output is delivered. */
            set(conf, "enable.auto.commit", "true", errstr, errstr_size) ||
            set(conf, "auto.commit.interval.ms", "1000", errstr, errstr_size) ||
            set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) ||
            set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) ||
            (cfg->group_instance_id &&
             set(conf, "group.instance.id", cfg->group_instance_id, errstr, errstr_size)))
            goto err;
        break;
    case PROCESSOR_KAFKA_RESTORE:
    case PROCESSOR_KAFKA_READER:
        /* librdkafka assigns partitions only with a group id; this consumer never
         * joins the group (no subscribe) and never commits. */
        if (set(conf, "group.id", "flushout-reader", errstr, errstr_size) ||
            set(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
            set(conf, "enable.partition.eof",
                role == PROCESSOR_KAFKA_RESTORE ? "true" : "false", errstr,
                errstr_size) ||
            /* A reader overtaken by retention must say so (a gap), never jump. */
            set(conf, "auto.offset.reset",
                role == PROCESSOR_KAFKA_RESTORE ? "error" : "earliest", errstr,
                errstr_size))
            goto err;
        break;
    case PROCESSOR_KAFKA_PRODUCER:
        /* linger.ms=5 (librdkafka's own default): under load, 2 ms made so many small
         * produce requests that the broker's per-request work doubled the round trip's
         * p99 (tests/bench/run.sh); an idle record waits at most 5 ms. */
        if (set(conf, "enable.idempotence", "true", errstr, errstr_size) ||
            set(conf, "acks", "all", errstr, errstr_size) ||
            set(conf, "message.timeout.ms", "0", errstr, errstr_size) ||
            set(conf, "linger.ms", "5", errstr, errstr_size))
            goto err;
        /* The mock cluster checks the sequence numbers of transactional producers
         * only: after a failed Produce request, a later one of the partition is
         * written, and librdkafka takes the failed request's records as delivered
         * ("implicitly acked") although they never were. One request in flight per
         * connection leaves no later request to succeed; a real broker refuses it
         * (tests/processor/test_kafka.c, a_failed_produce_request_...). */
        if (cfg->low_latency &&
            set(conf, "max.in.flight.requests.per.connection", "1", errstr, errstr_size))
            goto err;
        break;
    case PROCESSOR_KAFKA_SENDER:
        if (set(conf, "enable.idempotence", "true", errstr, errstr_size) ||
            set(conf, "linger.ms", "0", errstr, errstr_size))
            goto err;
        break;
    case PROCESSOR_KAFKA_GATEWAY:
        /* Replies are wanted only while their request waits: an older one has no
         * reader, so a gateway starts at the end and keeps no position. */
        /* Cooperative: a gateway joining or leaving moves only the partitions that
         * change hands; with the eager assignors every gateway would give up all its
         * partitions (and answer 503) for the whole rebalance. */
        if (set(conf, "group.id", cfg->gateway_group, errstr, errstr_size) ||
            set(conf, "partition.assignment.strategy", "cooperative-sticky", errstr,
                errstr_size) ||
            set(conf, "enable.auto.commit", "false", errstr, errstr_size) ||
            set(conf, "auto.offset.reset", "latest", errstr, errstr_size))
            goto err;
        break;
    case PROCESSOR_KAFKA_GATEWAY_SENDER:
        /* A millisecond of linger lets requests that arrive together share a produce
         * request: one per flush cost the gateway most of its CPU under load. */
        if (set(conf, "enable.idempotence", "true", errstr, errstr_size) ||
            set(conf, "linger.ms", "1", errstr, errstr_size))
            goto err;
        break;
    case PROCESSOR_KAFKA_ADMIN:
        break;
    }
    for (size_t i = 0; i + 1 < cfg->kafka_prop_count; i += 2) {
        const char *name = cfg->kafka_props[i];
        for (size_t j = 0; j < sizeof(owned) / sizeof(owned[0]); j++) {
            if (!strcmp(name, owned[j].name)) {
                snprintf(errstr, errstr_size, "-X %s is owned by the processor; use %s",
                         name, owned[j].instead);
                goto err;
            }
        }
        char scope = property_scope(name);
        if ((scope == 'C' && producer) || (scope == 'P' && !producer))
            continue;
        if (set(conf, name, cfg->kafka_props[i + 1], errstr, errstr_size))
            goto err;
    }
    return conf;
err:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *processor_kafka_new(const processor_config_t *cfg,
                                const char *bootstrap_servers,
                                processor_kafka_role_t role,
                                const processor_kafka_callbacks_t *callbacks,
                                char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf =
        processor_kafka_conf(cfg, bootstrap_servers, role, errstr, errstr_size);
    if (!conf)
        return NULL;
    if (callbacks) {
        if (callbacks->delivery)
            rd_kafka_conf_set_dr_msg_cb(conf, callbacks->delivery);
        if (callbacks->rebalance)
            rd_kafka_conf_set_rebalance_cb(conf, callbacks->rebalance);
        if (callbacks->log)
            rd_kafka_conf_set_log_cb(conf, callbacks->log);
        if (callbacks->error)
            rd_kafka_conf_set_error_cb(conf, callbacks->error);
        rd_kafka_conf_set_opaque(conf, callbacks->opaque);
    }
    bool producer = role == PROCESSOR_KAFKA_PRODUCER || role == PROCESSOR_KAFKA_SENDER ||
                    role == PROCESSOR_KAFKA_GATEWAY_SENDER;
    char why[256];
    rd_kafka_t *rk = rd_kafka_new(producer ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER, conf,
                                  why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf); /* still ours: rd_kafka_new() failed */
        snprintf(errstr, errstr_size, "cannot create a Kafka %s: %s",
                 producer ? "producer" : "consumer", why);
        return NULL;
    }
    conf = NULL; /* now owned by rk */
    return rk;
}

size_t processor_max_message_bytes(const processor_config_t *cfg)
{
    size_t max = 1000000; /* librdkafka's default */
    for (size_t i = 0; i + 1 < cfg->kafka_prop_count; i += 2)
        if (!strcmp(cfg->kafka_props[i], "message.max.bytes"))
            max = (size_t)strtoull(cfg->kafka_props[i + 1], NULL, 10);
    return max;
}

size_t processor_max_output_bytes(const processor_config_t *cfg)
{
    size_t max = processor_max_message_bytes(cfg);
    size_t framing = PROCESSOR_RECORD_OVERHEAD + PROCESSOR_REPLY_HEADERS_MAX;
    return max > framing ? max - framing : 0;
}

int processor_check_output_limits(const processor_config_t *cfg, char *errstr,
                                  size_t errstr_size)
{
    size_t max = processor_max_message_bytes(cfg);
    size_t out = processor_max_output_bytes(cfg);
    /* Ids longer than the default add to the envelope: the model id twice (key and
     * value) and the client id. */
    size_t envelope = PROCESSOR_ENVELOPE_BYTES;
    if (cfg->max_id_bytes > CODEC_DEFAULT_MAX_ID_BYTES)
        envelope += 3 * (size_t)(cfg->max_id_bytes - CODEC_DEFAULT_MAX_ID_BYTES);
    size_t room = out > envelope ? out - envelope : 0;
    const char *name = NULL;
    uint64_t value = 0;
    if (cfg->max_record_bytes > room) {
        name = "--max-record-bytes";
        value = cfg->max_record_bytes;
    } else if (cfg->max_document_bytes > room) {
        name = "--max-document-bytes";
        value = cfg->max_document_bytes;
    }
    if (!name)
        return 0;
    snprintf(errstr, errstr_size,
             "%s %llu does not fit the producer's message.max.bytes %zu: a request's "
             "change record and reply carry it whole, with up to %zu bytes around it; "
             "lower %s to %zu or less, or raise -X message.max.bytes together with the "
             "topics' max.message.bytes",
             name, (unsigned long long)value, max, max - room, name, room);
    return -1;
}

/* Kafka's rule for topic names. */
static bool valid_topic_name(const char *topic, size_t len)
{
    if (len == 0 || len > 249 || (len == 1 && topic[0] == '.') ||
        (len == 2 && !memcmp(topic, "..", 2)))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = topic[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

int processor_reply_topic_check(const processor_config_t *cfg, const char *topic,
                                size_t topic_len, char *why, size_t why_size)
{
    if (!valid_topic_name(topic, topic_len)) {
        snprintf(why, why_size, "kafka_replyTopic is not a valid topic name");
        return -1;
    }
    char name[256];
    memcpy(name, topic, topic_len);
    name[topic_len] = '\0';
    const char *own[] = {cfg->flushes_topic, cfg->changes_topic, cfg->snapshots_topic,
                         cfg->dlq_topic};
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++) {
        if (own[i] && !strcmp(own[i], name)) {
            snprintf(why, why_size,
                     "kafka_replyTopic %s is one of the processor's own topics; replies "
                     "never go there",
                     name);
            return -1;
        }
    }
    if (cfg->replies_topic && !strcmp(cfg->replies_topic, name))
        return 0;
    for (const char *e = cfg->reply_topics; e && *e;) {
        size_t n = strcspn(e, ",");
        const char *next = e + n + (e[n] == ',');
        while (n && *e == ' ') /* "a, b" */
            e++, n--;
        while (n && e[n - 1] == ' ')
            n--;
        char pattern[512];
        if (n && n < sizeof(pattern)) {
            memcpy(pattern, e, n);
            pattern[n] = '\0';
            if (!fnmatch(pattern, name, 0))
                return 0;
        }
        e = next;
    }
    snprintf(why, why_size,
             "kafka_replyTopic %s is not allowed (the processor replies on %s and the "
             "topics --reply-topics names)",
             name, cfg->replies_topic ? cfg->replies_topic : "its replies topic");
    return -1;
}

int32_t processor_key_partition(const char *partitioner, const char *key, size_t key_len,
                                int32_t partition_count)
{
    /* Both functions are pure for a non-NULL key: they never touch the topic. */
    if (!strcmp(partitioner, "murmur2_random"))
        return rd_kafka_msg_partitioner_murmur2_random(NULL, key, key_len,
                                                       partition_count, NULL, NULL);
    if (!strcmp(partitioner, "consistent_random"))
        return rd_kafka_msg_partitioner_consistent_random(NULL, key, key_len,
                                                          partition_count, NULL, NULL);
    return -1;
}

static atomic_int produce_waiting;

int processor_produce_waiting(void)
{
    return atomic_load(&produce_waiting);
}

rd_kafka_resp_err_t processor_produce(rd_kafka_t *rk, const processor_record_t *rec,
                                      int msgflags)
{
    bool waiting = false;
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(rec->topic), RD_KAFKA_V_PARTITION(rec->partition),
            RD_KAFKA_V_KEY(rec->key, rec->key_len),
            RD_KAFKA_V_VALUE((void *)rec->value, rec->value_len),
            RD_KAFKA_V_HEADERS(rec->headers), RD_KAFKA_V_OPAQUE(rec->opaque),
            RD_KAFKA_V_MSGFLAGS(msgflags), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (waiting)
                atomic_fetch_sub(&produce_waiting, 1);
            return err;
        }
        if (!waiting) {
            waiting = true;
            atomic_fetch_add(&produce_waiting, 1);
        }
        /* Delivery reports make room; where a thread of the caller's serves them too,
         * this only waits a little. */
        rd_kafka_poll(rk, 10);
    }
}

int processor_copartition_check(const char *const *topics, const int *counts, size_t n,
                                char *errstr, size_t errstr_size)
{
    int first = -1;
    bool equal = true;
    for (size_t i = 0; i < n; i++) {
        if (counts[i] < 0)
            continue;
        if (first < 0)
            first = counts[i];
        else if (counts[i] != first)
            equal = false;
    }
    if (equal)
        return 0;
    size_t used = (size_t)snprintf(
        errstr, errstr_size,
        "co-partitioning: the processor needs equal partition counts, but");
    for (size_t i = 0; i < n && used < errstr_size; i++)
        if (counts[i] >= 0)
            used += (size_t)snprintf(errstr + used, errstr_size - used, " %s has %d",
                                     topics[i], counts[i]);
    return -1;
}

int processor_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms,
                               char *errstr, size_t errstr_size)
{
    /* All topics, not this one by name: a request naming a missing topic makes a
     * broker with auto.create.topics.enable create it, with its default partition
     * count, where a missing topic must stop the processor instead. */
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    int count = -1;
    if (err) {
        snprintf(errstr, errstr_size, "metadata of topic %s: %s", topic,
                 rd_kafka_err2str(err));
        return -1;
    }
    snprintf(errstr, errstr_size,
             "topic %s: not found (create it: `flushout-processor "
             "topics create`)",
             topic);
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic))
            continue;
        if (md->topics[i].err)
            snprintf(errstr, errstr_size, "topic %s: %s", topic,
                     rd_kafka_err2str(md->topics[i].err));
        else
            count = md->topics[i].partition_cnt;
        break;
    }
    rd_kafka_metadata_destroy(md);
    return count;
}

/* Whether m was written under settings other than rd->settings (id: their identity)
 * that --accept-settings does not accept; logs why, naming the record. */
static bool settings_refused(const processor_config_t *cfg,
                             const processor_partition_read_t *rd, const char *id,
                             const rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs;
    const void *v;
    size_t len;
    if (rd_kafka_message_headers(m, &hdrs) ||
        rd_kafka_header_get_last(hdrs, PROCESSOR_SETTINGS_HEADER, &v, &len))
        return false; /* written before the settings travelled with the records */
    if (len == PROCESSOR_SETTINGS_ID_LEN && !memcmp(v, id, len))
        return false;
    for (const char *s = cfg->accept_settings; s && *s;) {
        size_t item = strcspn(s, ",");
        if (item == len && !memcmp(s, v, len))
            return false;
        s += item + (s[item] == ',');
    }
    /* Snapshot records carry the whole string: name the settings that differ. */
    char differ[1024] = "";
    const void *text;
    size_t text_len;
    if (!rd_kafka_header_get_last(hdrs, PROCESSOR_SETTINGS_TEXT_HEADER, &text,
                                  &text_len)) {
        char *written = codec_xmemdup(text, text_len);
        processor_settings_diff(written, rd->settings, differ, sizeof(differ));
        free(written);
    }
    int shown = len > 64 ? 64 : (int)len;
    LOG_ERROR("partition %d: the record at %s offset %lld was written under other "
              "settings (%.*s, this instance's are %s)%s%s: instances configured "
              "differently answer the same records differently, so it is refused. Give "
              "every instance (and rebuild) the settings the records were written "
              "under; for a deliberate change of the settings, accept the old ones with "
              "--accept-settings %.*s",
              rd->partition, rd->topic, (long long)m->offset, shown, (const char *)v, id,
              differ[0] ? ": " : "", differ, shown, (const char *)v);
    return true;
}

#define PROGRESS_S 10.0

int processor_read_partition(const processor_config_t *cfg, const char *bootstrap_servers,
                             processor_partition_read_t *rd)
{
    char errstr[512];
    rd_kafka_t *rk = processor_kafka_new(cfg, bootstrap_servers, PROCESSOR_KAFKA_RESTORE,
                                         NULL, errstr, sizeof(errstr));
    if (!rk) {
        LOG_ERROR("partition %d: cannot create a consumer for %s: %s", rd->partition,
                  rd->topic, errstr);
        return -1;
    }
    int rc = 0;
    if (rd->from < 0 || rd->to < 0) {
        int64_t lo, hi;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            rk, rd->topic, rd->partition, &lo, &hi, PROCESSOR_KAFKA_TIMEOUT_MS);
        if (err) {
            LOG_ERROR("partition %d: offsets of %s: %s", rd->partition, rd->topic,
                      rd_kafka_err2str(err));
            rc = -1;
        }
        if (rd->from < 0)
            rd->from = lo;
        if (rd->to < 0)
            rd->to = hi;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, rd->topic, rd->partition)->offset = rd->from;
    if (!rc)
        rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);

    char id[PROCESSOR_SETTINGS_ID_LEN + 1] = "";
    if (rd->settings)
        processor_settings_id(rd->settings, id);
    double start = processor_monotonic_s(), last_log = start;
    uint64_t read = 0;
    int64_t position = rd->from;
    while (!rc && position < rd->to) {
        if (rd->stopped && rd->stopped(rd->ctx)) {
            rc = -1;
            break;
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (m && m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        bool gap = m && (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
                         m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE ||
                         (!m->err && rd->contiguous && m->offset != position));
        if (gap) {
            LOG_WARN("partition %d: reading %s at offset %lld: %s; records are missing "
                     "(deleted by retention while being read?)",
                     rd->partition, rd->topic, (long long)position,
                     m->err ? rd_kafka_message_errstr(m) : "a record after a gap");
            rc = PROCESSOR_READ_GAP;
        } else if (m && m->err) {
            LOG_WARN("partition %d: reading %s: %s", rd->partition, rd->topic,
                     rd_kafka_message_errstr(m));
        } else if (m && rd->settings && settings_refused(cfg, rd, id, m)) {
            rc = PROCESSOR_READ_SETTINGS;
        } else if (m) {
            rc = rd->visit(m, rd->ctx);
            position = m->offset + 1;
        }
        bool idle = !m;
        if (m)
            rd_kafka_message_destroy(m);
        /* A long read says how far it got every PROGRESS_S, so that a restore of
         * millions of records is not minutes of silence (nor a stalled one); the
         * clock is read every 4096 records, or after a poll that brought none. */
        double t = idle || (++read & 4095) == 0 ? processor_monotonic_s() : last_log;
        if (t - last_log >= PROGRESS_S && position < rd->to) {
            int64_t done = position - rd->from, all = rd->to - rd->from;
            double rate = (double)done / (t - start);
            LOG_INFO("partition %d: reading %s: %lld of %lld records (%.0f/s, %.0f%%, "
                     "%.0f s left)",
                     rd->partition, rd->topic, (long long)done, (long long)all, rate,
                     100.0 * (double)done / (double)all,
                     rate > 0 ? (double)(rd->to - position) / rate : 0.0);
            last_log = t;
        }
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return rc;
}

/* Whether the listening socket fd serves one of the "host:port,..." in bootstrap. */
static bool serves_bootstrap(int fd, const char *bootstrap)
{
    int listening = 0;
    socklen_t len = sizeof(listening);
    struct sockaddr_storage addr;
    socklen_t addr_len = sizeof(addr);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) || !listening ||
        getsockname(fd, (struct sockaddr *)&addr, &addr_len))
        return false;
    unsigned port =
        addr.ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)&addr)->sin_port)
        : addr.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&addr)->sin6_port)
                                     : 0;
    /* Each item's port follows its last colon ("[::1]:9092" too). */
    for (const char *s = bootstrap; port && *s;) {
        size_t item = strcspn(s, ",");
        const char *colon = NULL;
        for (const char *c = s; c < s + item; c++)
            if (*c == ':')
                colon = c;
        if (colon && strtoul(colon + 1, NULL, 10) == port)
            return true;
        s += item + (s[item] == ',');
    }
    return false;
}

int processor_mock_nodelay(const char *bootstrap)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    int changed = 0;
    const int on = 1;
    for (struct dirent *e; (e = readdir(d));) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || fd == dirfd(d) ||
            !serves_bootstrap((int)fd, bootstrap))
            continue;
        changed += !setsockopt((int)fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    }
    closedir(d);
    return changed;
}
