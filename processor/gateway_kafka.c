/* processor/gateway_kafka.c - the gateway's Kafka side: producing requests addressed
 * back to this gateway, reading its share of the replies topic, and reading the
 * changes partitions its subscribers watch. Two threads (replies, changes) hand what
 * they read to the service thread as events. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "codec/alloc.h"
#include "codec/msgpack.h"
#include "gateway_int.h"
#include "kafka.h"
#include "log.h"

#define REPLY_TOPIC_HEADER       "kafka_replyTopic"
#define REPLY_PARTITION_HEADER   "kafka_replyPartition"
#define REPLY_CORRELATION_HEADER "kafka_correlationId"
#define CORRELATION_BYTES        16 /* this gateway's random 8 bytes, then a counter */

static void put_be64(unsigned char *b, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *b)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

/* Queues e for the service thread, waking it only when the queue was empty: it takes
 * the whole queue each time it wakes, so one wake-up serves every event queued until
 * then (a wake-up makes libwebsockets poll every connection). */
static void push_event(processor_gateway_t *gw, gw_event_t *e)
{
    pthread_mutex_lock(&gw->lock);
    bool was_empty = !gw->events_head;
    if (gw->events_tail)
        gw->events_tail->next = e;
    else
        gw->events_head = e;
    gw->events_tail = e;
    pthread_mutex_unlock(&gw->lock);
    if (was_empty)
        lws_cancel_service(gw->lws);
}

gw_event_t *gw_events_take(processor_gateway_t *gw)
{
    pthread_mutex_lock(&gw->lock);
    gw_event_t *e = gw->events_head;
    gw->events_head = gw->events_tail = NULL;
    pthread_mutex_unlock(&gw->lock);
    return e;
}

void gw_event_free(gw_event_t *e)
{
    if (!e)
        return;
    free(e->bytes);
    free(e);
}

/* Producer delivery reports, on the replies thread (it polls the producer). */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    if (!m->err)
        return;
    processor_gateway_t *gw = opaque;
    gw_event_t *e = codec_xcalloc(1, sizeof(*e));
    e->kind = GW_EVENT_FAILED;
    e->corr = (uint64_t)(uintptr_t)m->_private;
    e->err = m->err;
    push_event(gw, e);
}

/* The group's assignment of the replies topic, cooperative: partitions come and go
 * one by one, and the ones that stay keep answering. Each partition starts at its
 * current end, fixed before it is used: a reply to a request sent once the partition
 * is ours is always after that offset (auto.offset.reset would resolve "latest" later,
 * and could skip it). */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    processor_gateway_t *gw = opaque;
    bool assign = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
    if (assign)
        for (int i = 0; i < parts->cnt; i++) {
            int64_t low = 0, high = RD_KAFKA_OFFSET_END;
            if (rd_kafka_query_watermark_offsets(rk, parts->elems[i].topic,
                                                 parts->elems[i].partition, &low, &high,
                                                 PROCESSOR_KAFKA_TIMEOUT_MS))
                high = RD_KAFKA_OFFSET_END;
            parts->elems[i].offset = high;
        }
    rd_kafka_error_t *error = assign ? rd_kafka_incremental_assign(rk, parts)
                                     : rd_kafka_incremental_unassign(rk, parts);
    if (error) {
        LOG_WARN("gateway: %s partitions of %s: %s", assign ? "assigning" : "revoking",
                 gw->cfg->replies_topic, rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    pthread_mutex_lock(&gw->lock);
    gw->joined = true;
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        size_t at = 0;
        while (at < gw->n_reply_partitions && gw->reply_partitions[at] != p)
            at++;
        if (assign && at == gw->n_reply_partitions) {
            gw->reply_partitions = codec_xrealloc(
                gw->reply_partitions, (gw->n_reply_partitions + 1) * sizeof(int32_t));
            gw->reply_partitions[gw->n_reply_partitions++] = p;
        } else if (!assign && at < gw->n_reply_partitions) {
            gw->reply_partitions[at] = gw->reply_partitions[--gw->n_reply_partitions];
        }
    }
    size_t now = gw->n_reply_partitions;
    pthread_mutex_unlock(&gw->lock);
    LOG_INFO("gateway: %s %d partition(s) of %s; replies come to %zu",
             assign ? "got" : "gave up", parts->cnt, gw->cfg->replies_topic, now);
}

bool gw_kafka_ready(processor_gateway_t *gw)
{
    pthread_mutex_lock(&gw->lock);
    bool ready = gw->n_reply_partitions > 0;
    pthread_mutex_unlock(&gw->lock);
    return ready;
}

static void *replies_main(void *arg)
{
    processor_gateway_t *gw = arg;
    while (!gw->kafka_stop) {
        rd_kafka_poll(gw->producer, 0);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(gw->replies, 50);
        if (!m)
            continue;
        rd_kafka_headers_t *hdrs = NULL;
        const void *corr = NULL;
        size_t corr_len = 0;
        if (!m->err && !rd_kafka_message_headers(m, &hdrs) &&
            !rd_kafka_header_get_last(hdrs, REPLY_CORRELATION_HEADER, &corr, &corr_len) &&
            corr_len == CORRELATION_BYTES && get_be64(corr) == gw->corr_base) {
            gw_event_t *e = codec_xcalloc(1, sizeof(*e));
            e->kind = GW_EVENT_REPLY;
            e->corr = get_be64((const unsigned char *)corr + 8);
            e->bytes = codec_xmemdup(m->payload ? m->payload : "", m->len);
            e->len = m->len;
            push_event(gw, e);
        } else if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            LOG_WARN("gateway: reading %s: %s", gw->cfg->replies_topic,
                     rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

/* The command count a change record leaves its model at, or 0 for one that applied
 * no command (nothing changed for a subscriber to fetch). */
static uint64_t change_count(const void *value, size_t len)
{
    codec_value_t *v = NULL;
    char err[128];
    uint64_t count = 0;
    if (codec_msgpack_decode(value, len, &codec_limits_trusted, &v, err, sizeof(err)))
        return 0;
    const codec_value_t *applied = codec_map_get(v, "applied", 7);
    const codec_value_t *from = applied ? codec_map_get(applied, "from", 4) : NULL;
    const codec_value_t *done =
        applied ? codec_map_get(applied, "completions", 11) : NULL;
    if (from && from->type == CODEC_VALUE_INT && done &&
        done->type == CODEC_VALUE_ARRAY && done->u.array.len > 0)
        count = (uint64_t)from->u.i + done->u.array.len;
    codec_value_destroy(v);
    return count;
}

/* Assigns the wanted changes partitions: the ones kept where they are, new ones from
 * their current end; then says which partitions are read (GW_EVENT_READING), so that
 * subscriptions waiting for them are confirmed. */
static void changes_reassign(processor_gateway_t *gw, bool *assigned)
{
    int32_t n = gw->changes_partitions;
    bool *wanted = codec_xcalloc((size_t)n, sizeof(bool));
    bool any = !strcmp(gw->cfg->partitioner, "any");
    pthread_mutex_lock(&gw->lock);
    for (int32_t p = 0; p < n; p++)
        wanted[p] = gw->watching[any ? 0 : p] > 0;
    gw->wanted_dirty = false;
    pthread_mutex_unlock(&gw->lock);
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(n);
    for (int32_t p = 0; p < n; p++) {
        if (!wanted[p])
            continue;
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_add(list, gw->cfg->changes_topic, p);
        tp->offset = RD_KAFKA_OFFSET_INVALID;
        if (assigned[p]) {
            rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(pos, gw->cfg->changes_topic, p);
            if (!rd_kafka_position(gw->changes, pos) && pos->elems[0].offset >= 0)
                tp->offset = pos->elems[0].offset;
            rd_kafka_topic_partition_list_destroy(pos);
        }
        if (tp->offset < 0) {
            int64_t low = 0, high = RD_KAFKA_OFFSET_END;
            if (rd_kafka_query_watermark_offsets(gw->changes, gw->cfg->changes_topic, p,
                                                 &low, &high, PROCESSOR_KAFKA_TIMEOUT_MS))
                high = RD_KAFKA_OFFSET_END;
            tp->offset = high;
        }
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(gw->changes, list);
    if (err)
        LOG_WARN("gateway: reading %s: %s", gw->cfg->changes_topic,
                 rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
    memcpy(assigned, wanted, (size_t)n * sizeof(bool));
    for (int32_t p = 0; p < n; p++) {
        if (!wanted[p])
            continue;
        gw_event_t *e = codec_xcalloc(1, sizeof(*e));
        e->kind = GW_EVENT_READING;
        e->count = (uint64_t)p;
        push_event(gw, e);
    }
    free(wanted);
}

static void *changes_main(void *arg)
{
    processor_gateway_t *gw = arg;
    bool *assigned = codec_xcalloc((size_t)gw->changes_partitions, sizeof(bool));
    while (!gw->kafka_stop) {
        pthread_mutex_lock(&gw->lock);
        bool dirty = gw->wanted_dirty;
        pthread_mutex_unlock(&gw->lock);
        if (dirty)
            changes_reassign(gw, assigned);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(gw->changes, 50);
        if (!m)
            continue;
        if (!m->err && m->key && m->key_len) {
            gw_name_t *name = NULL;
            pthread_mutex_lock(&gw->lock);
            HASH_FIND(hh, gw->watched_models, m->key, m->key_len, name);
            pthread_mutex_unlock(&gw->lock);
            uint64_t count = name ? change_count(m->payload, m->len) : 0;
            if (count) {
                gw_event_t *e = codec_xcalloc(1, sizeof(*e));
                e->kind = GW_EVENT_CHANGED;
                e->bytes = codec_xmemdup(m->key, m->key_len);
                e->len = m->key_len;
                e->count = count;
                push_event(gw, e);
            }
        } else if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            LOG_WARN("gateway: reading %s: %s", gw->cfg->changes_topic,
                     rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    free(assigned);
    return NULL;
}

int32_t gw_model_partition(const processor_gateway_t *gw, const char *model, size_t len)
{
    return processor_key_partition(gw->cfg->partitioner, model, len,
                                   gw->changes_partitions);
}

bool gw_kafka_watch(processor_gateway_t *gw, const char *model, int32_t partition,
                    bool watched)
{
    size_t len = strlen(model);
    if (!gw->watching) /* Kafka never started */
        return false;
    pthread_mutex_lock(&gw->lock);
    gw_name_t *name = NULL;
    HASH_FIND(hh, gw->watched_models, model, len, name);
    /* Under --partitioner any (partition -1) a model may be anywhere: every partition
     * is read while any model is watched, counted in slot 0. */
    uint32_t *count = &gw->watching[partition < 0 ? 0 : partition];
    if (watched && !name) {
        name = codec_xcalloc(1, sizeof(*name));
        name->name = codec_xmemdup(model, len);
        HASH_ADD_KEYPTR(hh, gw->watched_models, name->name, len, name);
        ++*count;
    } else if (!watched && name) {
        HASH_DEL(gw->watched_models, name);
        free(name->name);
        free(name);
        --*count;
    }
    bool still = *count > 0;
    gw->wanted_dirty = true;
    pthread_mutex_unlock(&gw->lock);
    return still;
}

int gw_kafka_produce(processor_gateway_t *gw, const char *model, size_t model_len,
                     const char *value, size_t value_len, uint64_t corr, uint64_t conn_id)
{
    /* One reply partition per connection: a model's replies then reach a WebSocket in
     * the order the processor answered them. */
    pthread_mutex_lock(&gw->lock);
    size_t n = gw->n_reply_partitions;
    int32_t partition = n ? gw->reply_partitions[conn_id % n] : -1;
    pthread_mutex_unlock(&gw->lock);
    if (partition < 0)
        return GW_UNAVAILABLE;
    unsigned char corr_bytes[CORRELATION_BYTES], part_bytes[4];
    put_be64(corr_bytes, gw->corr_base);
    put_be64(corr_bytes + 8, corr);
    for (int i = 0; i < 4; i++)
        part_bytes[i] = (unsigned char)((uint32_t)partition >> (24 - 8 * i));
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(3);
    rd_kafka_header_add(hdrs, REPLY_TOPIC_HEADER, -1, gw->cfg->replies_topic, -1);
    rd_kafka_header_add(hdrs, REPLY_PARTITION_HEADER, -1, part_bytes, 4);
    rd_kafka_header_add(hdrs, REPLY_CORRELATION_HEADER, -1, corr_bytes,
                        sizeof(corr_bytes));
    /* The partition the processor expects under --partitioner (the flushes topic is
     * co-partitioned with the changes topic), whatever the producer's own default. */
    int32_t target = gw_model_partition(gw, model, model_len);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        gw->producer, RD_KAFKA_V_TOPIC(gw->cfg->flushes_topic),
        RD_KAFKA_V_PARTITION(target >= 0 ? target : RD_KAFKA_PARTITION_UA),
        RD_KAFKA_V_KEY(model, model_len), RD_KAFKA_V_VALUE((void *)value, value_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs),
        RD_KAFKA_V_OPAQUE((void *)(uintptr_t)corr), RD_KAFKA_V_END);
    if (err) {
        rd_kafka_headers_destroy(hdrs);
        LOG_WARN("gateway: producing to %s: %s", gw->cfg->flushes_topic,
                 rd_kafka_err2str(err));
        return GW_UNAVAILABLE;
    }
    return 0;
}

int gw_kafka_start(processor_gateway_t *gw, const char *bootstrap, char *errstr,
                   size_t errstr_size)
{
    const processor_config_t *cfg = gw->cfg;
    unsigned char base[8];
    if (getrandom(base, sizeof(base), 0) != (ssize_t)sizeof(base)) {
        snprintf(errstr, errstr_size, "getrandom: %s", strerror(errno));
        return -1;
    }
    gw->corr_base = get_be64(base);
    processor_kafka_callbacks_t produce_cbs = {.delivery = on_delivery, .opaque = gw};
    processor_kafka_callbacks_t reply_cbs = {.rebalance = on_rebalance, .opaque = gw};
    if (!(gw->producer =
              processor_kafka_new(cfg, bootstrap, PROCESSOR_KAFKA_GATEWAY_SENDER,
                                  &produce_cbs, errstr, errstr_size)) ||
        !(gw->replies = processor_kafka_new(cfg, bootstrap, PROCESSOR_KAFKA_GATEWAY,
                                            &reply_cbs, errstr, errstr_size)) ||
        !(gw->changes = processor_kafka_new(cfg, bootstrap, PROCESSOR_KAFKA_READER, NULL,
                                            errstr, errstr_size)))
        return -1;
    rd_kafka_poll_set_consumer(gw->replies);
    rd_kafka_poll_set_consumer(gw->changes);
    int n = processor_topic_partitions(gw->changes, cfg->changes_topic,
                                       PROCESSOR_KAFKA_TIMEOUT_MS, errstr, errstr_size);
    if (n < 0)
        return -1;
    gw->changes_partitions = n;
    gw->watching = codec_xcalloc((size_t)n, sizeof(uint32_t));
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, cfg->replies_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(gw->replies, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        snprintf(errstr, errstr_size, "subscribing to %s: %s", cfg->replies_topic,
                 rd_kafka_err2str(err));
        return -1;
    }
    if (pthread_create(&gw->replies_thread, NULL, replies_main, gw)) {
        snprintf(errstr, errstr_size, "cannot start a thread");
        return -1;
    }
    if (pthread_create(&gw->changes_thread, NULL, changes_main, gw)) {
        gw->kafka_stop = 1;
        pthread_join(gw->replies_thread, NULL);
        snprintf(errstr, errstr_size, "cannot start a thread");
        return -1;
    }
    gw->threads_started = true;
    return 0;
}

void gw_kafka_stop_threads(processor_gateway_t *gw)
{
    if (gw->threads_started) {
        gw->kafka_stop = 1;
        pthread_join(gw->replies_thread, NULL);
        pthread_join(gw->changes_thread, NULL);
        gw->threads_started = false;
    }
}

void gw_kafka_destroy(processor_gateway_t *gw)
{
    gw_kafka_stop_threads(gw);
    if (gw->replies) {
        /* librdkafka 2.0 aborts when a cooperative-sticky consumer is closed before its
         * first assignment (issue #4312, fixed in 2.3): wait a while for it, as the
         * processor does (run_loop.c). */
        for (double until = processor_monotonic_s() + 10;
             !gw->joined && processor_monotonic_s() < until;) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(gw->replies, 100);
            if (m)
                rd_kafka_message_destroy(m);
        }
        if (gw->joined) {
            rd_kafka_consumer_close(gw->replies);
            rd_kafka_destroy(gw->replies);
        } else {
            LOG_WARN("gateway: leaving without closing the replies consumer: the group "
                     "never answered its join, and librdkafka %s cannot close it before "
                     "(issue #4312)",
                     rd_kafka_version_str());
        }
    }
    if (gw->changes) {
        rd_kafka_consumer_close(gw->changes);
        rd_kafka_destroy(gw->changes);
    }
    if (gw->producer) {
        rd_kafka_flush(gw->producer, 2000);
        rd_kafka_destroy(gw->producer);
    }
    gw->replies = gw->changes = gw->producer = NULL;
    gw_name_t *n, *tmp;
    HASH_ITER(hh, gw->watched_models, n, tmp)
    {
        HASH_DEL(gw->watched_models, n);
        free(n->name);
        free(n);
    }
    free(gw->watching);
    free(gw->reply_partitions);
    gw->watching = NULL;
    gw->reply_partitions = NULL;
    for (gw_event_t *e = gw_events_take(gw), *next; e; e = next) {
        next = e->next;
        gw_event_free(e);
    }
}
