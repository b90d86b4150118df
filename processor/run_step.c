/* processor/run_step.c - a record of the flushes topic -> its outputs: the reply, the
 * change record, the dead letter, with their headers.
 *
 * Everything a record's outputs hold is decided here, from the record, the handler
 * and the configuration; the outputs go to the step's outbox (run_delivery.c produces
 * them once the step is committed). Spring Kafka's reply and dead-letter headers are
 * read and written here only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "log.h"
#include "run_int.h"

/* Spring Kafka's request/reply headers (ReplyingKafkaTemplate): where the reply goes,
 * and what it carries back. */
#define REPLY_TOPIC_HEADER       "kafka_replyTopic"
#define REPLY_PARTITION_HEADER   "kafka_replyPartition"
#define REPLY_CORRELATION_HEADER "kafka_correlationId"

static void step_out_due(step_out_t *so, const char *model, size_t len)
{
    for (size_t i = 0; i < so->due_len; i++)
        if (so->snapshots_due[i].len == len &&
            !memcmp(so->snapshots_due[i].ptr, model, len))
            return;
    if (so->due_len == so->due_cap) {
        so->due_cap = so->due_cap ? so->due_cap * 2 : 8;
        so->snapshots_due =
            codec_xrealloc(so->snapshots_due, so->due_cap * sizeof(*so->snapshots_due));
    }
    so->snapshots_due[so->due_len++] = (model_ref_t){codec_xmemdup(model, len), len};
}

static void step_out_add(part_t *p, step_out_t *so, const state_outbox_rec_t *rec,
                         int64_t input_offset, bool change)
{
    size_t value_at;
    uint64_t id = state_store_outbox_add(p->store, rec, &value_at);
    if (so->len == so->cap) {
        so->cap = so->cap ? so->cap * 2 : 64;
        so->items = codec_xrealloc(so->items, so->cap * sizeof(*so->items));
    }
    so->items[so->len++] = run_delivery_new(p, id, rec, input_offset, change, &value_at);
    so->bytes += rec->key_len + rec->value_len;
    for (size_t i = 0; i < rec->header_count; i++)
        so->bytes += strlen(rec->headers[i].name) + rec->headers[i].value_len;
}

/* Errors that are the request's fault: the record is dead-lettered. The others are
 * answers to well-formed requests (a stale seq, a history range). */
static bool is_bad_record(codec_err_t err)
{
    return err != CODEC_OK && err != CODEC_ERR_STALE_SEQ && err != CODEC_ERR_BAD_RANGE &&
           err != CODEC_ERR_HISTORY_UNAVAILABLE && err != CODEC_ERR_STORE_FAILED &&
           err != CODEC_ERR_REPLY_TOO_LARGE;
}

/* Spring's request/reply headers of a record, read once per record (each lookup walks
 * every header). A header found with a null value has found set and ptr NULL. */
typedef struct reply_header_s {
    const char *ptr;
    size_t len;
    bool found;
} reply_header_t;

typedef struct reply_route_s {
    reply_header_t topic, partition, correlation;
} reply_route_t;

static void reply_route_read(const rd_kafka_message_t *m, reply_route_t *rt)
{
    *rt = (reply_route_t){0};
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(m, &hdrs) || !rd_kafka_header_cnt(hdrs))
        return;
    const char *names[3] = {REPLY_TOPIC_HEADER, REPLY_PARTITION_HEADER,
                            REPLY_CORRELATION_HEADER};
    reply_header_t *into[3] = {&rt->topic, &rt->partition, &rt->correlation};
    for (int i = 0; i < 3; i++) {
        const void *v;
        size_t len;
        if (!rd_kafka_header_get_last(hdrs, names[i], &v, &len))
            *into[i] = (reply_header_t){v, v ? len : 0, true};
    }
}

static void be_bytes(unsigned char *out, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        out[i] = (unsigned char)v;
}

/* The dead letter of m: its key, value and headers, plus Spring Kafka's kafka_dlt-*
 * headers (DeadLetterPublishingRecoverer's names and encodings). It must itself fit in
 * one record (message.max.bytes): what does not is cut, our headers first kept whole,
 * then the key (at most 256 KiB), the original headers that fit in 16 KiB, and as much
 * of the value as fits; a flushout_truncated header then gives the original sizes of
 * what was cut ("key:N,value:N,headers:N", N headers dropped). */
#define DEAD_LETTER_KEY_MAX     (256u << 10)
#define DEAD_LETTER_HEADERS_MAX (16u << 10) /* of the original headers */
/* The original headers kept go with ours into one outbox record, which holds at most
 * STATE_OUTBOX_MAX_HEADERS headers with names under STATE_OUTBOX_NAME_BYTES: room is
 * kept for flushout_truncated (and one spare). */
#define DEAD_LETTER_HEADER_SLOTS (STATE_OUTBOX_MAX_HEADERS - 2)
#define DEAD_LETTER_NAME_MAX     200
_Static_assert(DEAD_LETTER_NAME_MAX < STATE_OUTBOX_NAME_BYTES,
               "a kept header name must fit the outbox");

static void add_dead_letter(part_t *p, step_out_t *so, const rd_kafka_message_t *m,
                            const processor_output_t *out)
{
    runner_t *r = p->r;
    state_header_t hs[STATE_OUTBOX_MAX_HEADERS];
    size_t n = 0;
    unsigned char partition[4], offset[8], timestamp[8];
    be_bytes(partition, (uint32_t)m->partition, 4);
    be_bytes(offset, (uint64_t)m->offset, 8);
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);
    be_bytes(timestamp, (uint64_t)ts, 8);
    const char *fqcn = "io.flushout.processor.BadRecordException";
    const char *code = codec_err_name(out->error);
    hs[n++] = (state_header_t){"kafka_dlt-original-topic", r->cfg->flushes_topic,
                               strlen(r->cfg->flushes_topic)};
    hs[n++] = (state_header_t){"kafka_dlt-original-partition", (char *)partition, 4};
    hs[n++] = (state_header_t){"kafka_dlt-original-offset", (char *)offset, 8};
    hs[n++] = (state_header_t){"kafka_dlt-original-timestamp", (char *)timestamp, 8};
    hs[n++] = (state_header_t){
        "kafka_dlt-original-timestamp-type",
        tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME ? "LogAppendTime" : "CreateTime",
        tstype == RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME ? 13 : 10};
    hs[n++] = (state_header_t){"kafka_dlt-original-consumer-group", r->cfg->group_id,
                               strlen(r->cfg->group_id)};
    hs[n++] = (state_header_t){"kafka_dlt-exception-fqcn", fqcn, strlen(fqcn)};
    hs[n++] = (state_header_t){"kafka_dlt-exception-message", out->message,
                               strlen(out->message)};
    hs[n++] = (state_header_t){"flushout_error_code", code, strlen(code)};
    /* The room left once our headers (and a flushout_truncated header) are in. */
    size_t room = r->max_message_bytes > PROCESSOR_RECORD_OVERHEAD
                      ? r->max_message_bytes - PROCESSOR_RECORD_OVERHEAD
                      : 0;
    size_t used = 64;
    for (size_t i = 0; i < n; i++)
        used += strlen(hs[i].name) + hs[i].value_len + 8;
    room = room > used ? room - used : 0;
    size_t key_len = m->key_len < DEAD_LETTER_KEY_MAX ? m->key_len : DEAD_LETTER_KEY_MAX;
    key_len = key_len < room ? key_len : room;
    room -= key_len;
    size_t dropped = 0;
    rd_kafka_headers_t *orig;
    if (!rd_kafka_message_headers(m, &orig)) {
        const char *name;
        const void *v;
        size_t len;
        size_t header_room =
            room < DEAD_LETTER_HEADERS_MAX ? room : DEAD_LETTER_HEADERS_MAX;
        for (size_t i = 0; !rd_kafka_header_get_all(orig, i, &name, &v, &len); i++) {
            size_t size = strlen(name) + len + 8;
            if (n < DEAD_LETTER_HEADER_SLOTS && strlen(name) < DEAD_LETTER_NAME_MAX &&
                size <= header_room) {
                hs[n++] = (state_header_t){name, v, len};
                header_room -= size;
                room -= size;
            } else {
                dropped++;
            }
        }
    }
    size_t value_len = m->len < room ? m->len : room;
    char truncated[96];
    int t = 0;
    if (key_len < m->key_len)
        t +=
            snprintf(truncated + t, sizeof(truncated) - (size_t)t, "key:%zu", m->key_len);
    if (value_len < m->len)
        t += snprintf(truncated + t, sizeof(truncated) - (size_t)t, "%svalue:%zu",
                      t ? "," : "", m->len);
    if (dropped)
        t += snprintf(truncated + t, sizeof(truncated) - (size_t)t, "%sheaders:%zu",
                      t ? "," : "", dropped);
    if (t)
        hs[n++] = (state_header_t){"flushout_truncated", truncated, (size_t)t};
    state_outbox_rec_t rec = {
        .topic = r->cfg->dlq_topic,
        .partition = -1,
        .key = m->key,
        .key_len = key_len,
        .value = m->payload ? m->payload : "",
        .value_len = value_len,
        .headers = hs,
        .header_count = n,
    };
    step_out_add(p, so, &rec, m->offset, false);
    atomic_fetch_add(&r->dead_letters, 1);
    atomic_fetch_add(&r->dead_letters_by_code[out->error], 1);
}

/* A kafka_replyPartition header's value: a 4-byte big-endian int. */
static int32_t be_int32(const char *b)
{
    return (int32_t)(((uint32_t)(unsigned char)b[0] << 24) |
                     ((uint32_t)(unsigned char)b[1] << 16) |
                     ((uint32_t)(unsigned char)b[2] << 8) |
                     (uint32_t)(unsigned char)b[3]);
}

/* Checks Spring's request/reply headers against the configuration: a reply goes only to
 * the replies topic or one --reply-topics allows, never to the processor's own topics,
 * to a partition given as 4 bytes and not negative, with a correlation id of at most
 * PROCESSOR_CORRELATION_MAX bytes. Whether the partition exists is checked when the
 * reply is addressed (add_reply()), from metadata. Depends on the configuration alone,
 * so every instance (and rebuild) refuses the same requests. @returns 0, or -1 and
 * why. */
static int check_reply_headers(const processor_config_t *cfg, const reply_route_t *rt,
                               char *why, size_t why_size)
{
    if (rt->topic.found &&
        processor_reply_topic_check(cfg, rt->topic.ptr ? rt->topic.ptr : "",
                                    rt->topic.len, why, why_size))
        return -1;
    if (rt->partition.found && (!rt->partition.ptr || rt->partition.len != 4 ||
                                be_int32(rt->partition.ptr) < 0)) {
        snprintf(why, why_size,
                 "kafka_replyPartition must be a 4-byte big-endian partition number, not "
                 "%s",
                 !rt->partition.ptr || rt->partition.len != 4
                     ? "a value of another length"
                     : "negative");
        return -1;
    }
    if (rt->correlation.found && rt->correlation.len > PROCESSOR_CORRELATION_MAX) {
        snprintf(why, why_size, "kafka_correlationId of %zu bytes is longer than %d",
                 rt->correlation.len, PROCESSOR_CORRELATION_MAX);
        return -1;
    }
    return 0;
}

/* The reply to m: to the replies topic keyed by client, or where Spring's
 * request/reply headers say (checked by check_reply_headers()), with the correlation
 * id copied. A reply addressed to a partition the topic does not have (or to a topic
 * that is gone) would be refused by Kafka, which stops the partition: it becomes a
 * bad_reply_topic error on the replies topic and a dead letter instead (an error reply
 * just goes to the replies topic). */
static void add_reply(part_t *p, step_out_t *so, const rd_kafka_message_t *m,
                      const reply_route_t *rt, const processor_output_t *out)
{
    runner_t *r = p->r;
    size_t topic_len = 0, partition_len = 0, corr_len = 0;
    const char *topic = NULL, *partition = NULL, *corr = NULL;
    char why[400];
    /* Headers refused, or not checked because the record was refused first (no key,
     * too large, wrong partition): the error goes to the replies topic. */
    if (out->error != CODEC_ERR_BAD_REPLY_TOPIC &&
        !check_reply_headers(r->cfg, rt, why, sizeof(why))) {
        topic = rt->topic.ptr, topic_len = rt->topic.len;
        partition = rt->partition.ptr, partition_len = rt->partition.len;
        corr = rt->correlation.ptr, corr_len = rt->correlation.len;
    }
    char topic_buf[STATE_OUTBOX_NAME_BYTES]; /* the outbox's limit on a topic name */
    state_header_t hs[1];
    state_outbox_rec_t rec = {
        .topic = r->cfg->replies_topic,
        .partition = -1,
        .key = out->reply_key,
        .key_len = out->reply_key_len,
        .value = out->reply.data,
        .value_len = out->reply.size,
        .headers = hs,
    };
    if (topic && topic_len > 0 && topic_len < sizeof(topic_buf)) {
        memcpy(topic_buf, topic, topic_len);
        topic_buf[topic_len] = '\0';
        rec.topic = topic_buf;
    }
    if (partition && partition_len == 4)
        rec.partition = be_int32(partition);
    if (corr && corr_len <= PROCESSOR_CORRELATION_MAX)
        hs[rec.header_count++] =
            (state_header_t){REPLY_CORRELATION_HEADER, corr, corr_len};
    int count = rec.topic != r->cfg->replies_topic || rec.partition >= 0
                    ? run_reply_topic_partitions(r, rec.topic, why, sizeof(why))
                    : 1;
    if (count >= 0 && rec.partition < count) {
        step_out_add(p, so, &rec, m->offset, false);
        return;
    }
    if (count >= 0)
        snprintf(why, sizeof(why),
                 "kafka_replyPartition %d does not exist: topic %s has %d partitions",
                 rec.partition, rec.topic, count);
    if (out->error) { /* an error reply already: it goes to the replies topic */
        LOG_WARN("partition %d offset %lld: %s; the %s error reply goes to %s", p->id,
                 (long long)m->offset, why, codec_err_name(out->error),
                 r->cfg->replies_topic);
        rec.topic = r->cfg->replies_topic;
        rec.partition = -1;
        step_out_add(p, so, &rec, m->offset, false);
        return;
    }
    char message[512];
    snprintf(message, sizeof(message),
             "%s; the request was processed, its reply not sent", why);
    processor_output_t bad;
    processor_output_init(&bad);
    processor_handler_refuse(p->handler, m->key, m->key_len, m->payload ? m->payload : "",
                             m->len, CODEC_ERR_BAD_REPLY_TOPIC, message, &bad);
    atomic_fetch_add(&r->errors, 1);
    atomic_fetch_add(&r->errors_by_code[CODEC_ERR_BAD_REPLY_TOPIC], 1);
    LOG_WARN("partition %d offset %lld model " MODEL_FMT ": %s: %s", p->id,
             (long long)m->offset, MODEL_ARG(m->key, m->key_len),
             codec_err_name(bad.error), bad.message);
    if (bad.reply_key) {
        state_outbox_rec_t err = {
            .topic = r->cfg->replies_topic,
            .partition = -1,
            .key = bad.reply_key,
            .key_len = bad.reply_key_len,
            .value = bad.reply.data,
            .value_len = bad.reply.size,
        };
        step_out_add(p, so, &err, m->offset, false);
    }
    add_dead_letter(p, so, m, &bad);
    processor_output_destroy(&bad);
}

/* processor_apply_record() with m's reply headers already read (run reads them once
 * for this and for the reply's address). */
static void apply_record(processor_handler_t *h, const processor_config_t *cfg,
                         int32_t partition_count, const rd_kafka_message_t *m,
                         const reply_route_t *rt, processor_output_t *out)
{
    const char *value = m->payload ? m->payload : "";
    processor_output_reset(out);
    char why[256];
    int32_t expected;
    codec_limits_t limits = processor_limits(cfg);
    codec_err_t err;
    if (!m->key || m->key_len == 0) {
        processor_handler_refuse(h, NULL, 0, value, m->len, CODEC_ERR_MISSING_KEY,
                                 "the record has no key, or an empty one: the key must "
                                 "be the model id",
                                 out);
    } else if ((err = codec_id_check("the record key", m->key, m->key_len, true, &limits,
                                     why, sizeof(why)))) {
        /* Checked before anything else: the key becomes a store key, the key of the
         * change and snapshot records, and a field of the reply. */
        processor_handler_refuse(h, m->key, m->key_len, value, m->len, err, why, out);
    } else if (m->len > cfg->max_record_bytes) {
        snprintf(why, sizeof(why), "the record value of %zu bytes exceeds %llu", m->len,
                 (unsigned long long)cfg->max_record_bytes);
        processor_handler_refuse(h, m->key, m->key_len, value, m->len,
                                 CODEC_ERR_TOO_LARGE, why, out);
    } else if ((expected = processor_key_partition(cfg->partitioner, m->key, m->key_len,
                                                   partition_count)) >= 0 &&
               expected != m->partition) {
        snprintf(why, sizeof(why),
                 "the key belongs to partition %d under %s, not %d: produce with that "
                 "partitioner (see --partitioner)",
                 expected, cfg->partitioner, m->partition);
        processor_handler_refuse(h, m->key, m->key_len, value, m->len,
                                 CODEC_ERR_WRONG_PARTITION, why, out);
    } else if (check_reply_headers(cfg, rt, why, sizeof(why))) {
        processor_handler_refuse(h, m->key, m->key_len, value, m->len,
                                 CODEC_ERR_BAD_REPLY_TOPIC, why, out);
    } else {
        /* CreateTime is the producer's, LogAppendTime the broker's: either is kept in
         * the topic, so a replay gives interceptors the same meta.timestamp. */
        int64_t timestamp = rd_kafka_message_timestamp(m, NULL);
        processor_handler_handle(h, m->offset, timestamp, m->key, m->key_len, value,
                                 m->len, out);
    }
}

void processor_apply_record(processor_handler_t *h, const processor_config_t *cfg,
                            int32_t partition_count, const rd_kafka_message_t *m,
                            processor_output_t *out)
{
    reply_route_t rt;
    reply_route_read(m, &rt);
    apply_record(h, cfg, partition_count, m, &rt, out);
}

bool run_process_record(part_t *p, const rd_kafka_message_t *m, processor_output_t *out,
                        step_out_t *so)
{
    runner_t *r = p->r;
    reply_route_t rt;
    reply_route_read(m, &rt);
    apply_record(p->handler, r->cfg, r->partition_count, m, &rt, out);
    if (out->error == CODEC_ERR_STORE_FAILED && out->store_intact)
        LOG_ERROR("partition %d offset %lld model " MODEL_FMT ": %s; answered with the "
                  "error, the partition goes on",
                  p->id, (long long)m->offset, MODEL_ARG(m->key, m->key_len),
                  out->message);
    else if (out->error == CODEC_ERR_STORE_FAILED) {
        atomic_fetch_add(&r->errors_by_code[CODEC_ERR_STORE_FAILED], 1);
        LOG_ERROR("partition %d offset %lld model " MODEL_FMT ": %s; the partition stops",
                  p->id, (long long)m->offset, MODEL_ARG(m->key, m->key_len),
                  out->message);
        return false;
    }
    atomic_fetch_add(&r->records, 1);
    LOG_DEBUG("partition %d offset %lld model " MODEL_FMT ": %zu bytes -> %s", p->id,
              (long long)m->offset, MODEL_ARG(m->key, m->key_len), m->len,
              out->error ? codec_err_name(out->error) : "ok");
    if (out->change.size) {
        atomic_fetch_add(&r->flushes_applied, 1);
        atomic_fetch_add(&r->commands_applied, out->commands_applied);
    }
    if (out->error) {
        atomic_fetch_add(&r->errors, 1);
        atomic_fetch_add(&r->errors_by_code[out->error], 1);
        LOG_WARN("partition %d offset %lld model " MODEL_FMT ": %s: %s", p->id,
                 (long long)m->offset, MODEL_ARG(m->key, m->key_len),
                 codec_err_name(out->error), out->message);
    }
    if (out->reply_key)
        add_reply(p, so, m, &rt, out);
    if (out->change.size) {
        /* The settings' identity only (16 bytes): one change record per flush. */
        state_header_t hs[1] = {
            {PROCESSOR_SETTINGS_HEADER, r->settings_id, PROCESSOR_SETTINGS_ID_LEN}};
        state_outbox_rec_t rec = {
            .topic = r->cfg->changes_topic,
            .partition = p->id,
            .key = m->key,
            .key_len = m->key_len,
            .value = out->change.data,
            .value_len = out->change.size,
            .headers = hs,
            .header_count = 1,
        };
        step_out_add(p, so, &rec, m->offset, true);
    }
    if (is_bad_record(out->error))
        add_dead_letter(p, so, m, out);
    if (out->snapshot_due)
        step_out_due(so, m->key, m->key_len);
    return true;
}
