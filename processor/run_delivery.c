/* processor/run_delivery.c - delivery of the outbox: producing a step's records and
 * serving Kafka's delivery reports.
 *
 * A step's records are in its outbox entry (one RocksDB value, or held in memory until
 * the next memtable flush in `run`'s changelog stores) before they are produced; the
 * entry is dropped by a later step once Kafka confirms every one of them,
 * and the input offset of the step becomes committable then. A record Kafka refuses
 * for good stops the partition instead: nothing is lost, the next assignment produces
 * the outbox again. The producer thread (run_producer_main()) serves the reports. */
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "log.h"
#include "run_int.h"

/* One allocation holds the delivery, its header array and every byte it points to
 * but the value of a step's record, which stays in the step's bytes: two of these per
 * flush, where one per string made malloc and free a tenth of the process. */
delivery_t *run_delivery_new(part_t *p, uint64_t outbox_id, const state_outbox_rec_t *rec,
                             int64_t input_offset, bool change, const size_t *value_at)
{
    size_t topic_len = strlen(rec->topic) + 1;
    size_t copied_value = value_at ? 0 : rec->value_len;
    size_t size = sizeof(delivery_t) + rec->header_count * sizeof(state_header_t) +
                  topic_len + rec->key_len + copied_value;
    for (size_t i = 0; i < rec->header_count; i++)
        size += strlen(rec->headers[i].name) + 1 + rec->headers[i].value_len;
    delivery_t *d = codec_xmalloc(size);
    *d = (delivery_t){
        .kind = OPAQUE_OUTBOX,
        .part = p,
        .outbox_id = outbox_id,
        .change = change,
        .partition = rec->partition,
        .input_offset = input_offset,
        .key_len = rec->key_len,
        .value_len = rec->value_len,
        .header_count = rec->header_count,
        .headers = (state_header_t *)(d + 1),
        .value_at = value_at ? *value_at : SIZE_MAX,
    };
    char *at = (char *)(d->headers + rec->header_count);
    d->topic = memcpy(at, rec->topic, topic_len);
    at += topic_len;
    if (rec->key) {
        d->key = memcpy(at, rec->key, rec->key_len);
        at += rec->key_len;
    }
    d->value = copied_value ? memcpy(at, rec->value, copied_value) : at;
    at += copied_value;
    for (size_t i = 0; i < rec->header_count; i++) {
        const state_header_t *h = &rec->headers[i];
        size_t name_len = strlen(h->name) + 1;
        d->headers[i].name = memcpy(at, h->name, name_len);
        at += name_len;
        d->headers[i].value = h->value_len ? memcpy(at, h->value, h->value_len) : at;
        at += h->value_len;
        d->headers[i].value_len = h->value_len;
    }
    return d;
}

int run_delivery_attach(delivery_t **ds, size_t n, state_outbox_bytes_t *b, uint64_t id)
{
    size_t len = 0;
    const char *data = b ? state_outbox_bytes_data(b, &len) : NULL;
    size_t shared = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        delivery_t *d = ds[i];
        if (d->value_at == SIZE_MAX)
            continue;
        if (!b || d->outbox_id != id || d->value_at > len ||
            d->value_len > len - d->value_at) {
            rc = -1;
            continue;
        }
        d->value = data + d->value_at;
        d->step_bytes = b;
        shared++;
    }
    if (b) {
        state_outbox_bytes_ref(b, (unsigned)shared);
        state_outbox_bytes_unref(b);
    }
    return rc;
}

void run_delivery_free(delivery_t *d)
{
    state_outbox_bytes_unref(d->step_bytes);
    free(d);
}

/* Called with p->lock held: Kafka confirmed the record. */
static void delivered_locked(part_t *p, delivery_t *d, int64_t offset)
{
    if (d->generation != p->generation)
        return; /* from an earlier assignment: its outbox is read again anyway */
    if (d->change && offset + 1 > p->changes_next)
        p->changes_next = offset + 1;
    for (size_t i = 0; i < p->steps_len; i++) {
        step_t *st = &p->steps[i];
        if (st->seq != d->step_seq)
            continue;
        /* The step's outbox entry goes only once all its records are delivered: a
         * crash before then produces them all again. */
        if (--st->pending == 0) {
            if (p->done_len == p->done_cap) {
                p->done_cap = p->done_cap ? p->done_cap * 2 : 64;
                p->done = codec_xrealloc(p->done, p->done_cap * sizeof(*p->done));
            }
            p->done[p->done_len++] = (outbox_range_t){st->outbox_first, st->outbox_last};
        }
        break;
    }
    size_t n = 0;
    while (n < p->steps_len && p->steps[n].pending == 0) {
        if (p->steps[n].next_offset > p->committable)
            p->committable = p->steps[n].next_offset;
        n++;
    }
    if (n) {
        memmove(p->steps, p->steps + n, (p->steps_len - n) * sizeof(*p->steps));
        p->steps_len -= n;
        if (!p->steps_len) /* a revoke waits for this (run_handoff.c) */
            pthread_cond_broadcast(&p->idle);
    }
}

/* A record of the outbox that Kafka will never take (refused, or not even queued). It
 * is never counted as delivered: its step stays pending, so the outbox entry is kept
 * and no offset is committed past it, and the partition stops, loudly, until it is
 * next assigned, when the outbox is produced again. Going on would lose the reply or
 * dead letter, or leave the changes topic without a change record that the next
 * owner's catch-up needs. @locality any thread (delivery reports, workers). */
static void delivery_failed(part_t *p, const delivery_t *d, const char *why)
{
    atomic_fetch_add(&p->r->delivery_failures, 1);
    pthread_mutex_lock(&p->lock);
    bool current = d->generation == p->generation && p->assigned && !p->failed;
    pthread_mutex_unlock(&p->lock);
    LOG_ERROR("partition %d offset %lld: the %s record to topic %s was not delivered: "
              "%s; %s",
              p->id, (long long)d->input_offset,
              d->change                                 ? "change"
              : !strcmp(d->topic, p->r->cfg->dlq_topic) ? "dead-letter"
                                                        : "reply",
              d->topic, why,
              current ? "the partition stops (its outbox is kept and produced again, and "
                        "no offset is committed past it, when it is next assigned)"
                      : "it stays in the outbox");
    if (current)
        run_part_fail(p);
}

void run_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    delivery_t *d = m->_private;
    if (!d || d->kind == OPAQUE_SWEPT) { /* a snapshot record, not in the outbox */
        if (m->err)
            LOG_WARN("a snapshot record to partition %d of %s was not delivered: %s%s",
                     m->partition, rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err),
                     d ? " (the sweep publishes it again)" : "");
        swept_t *sw = (swept_t *)d;
        if (sw && !m->err) {
            part_t *p = sw->part;
            pthread_mutex_lock(&p->lock);
            if (sw->generation == p->generation) {
                if (p->swept_len == p->swept_cap)
                    p->swept = codec_xrealloc(
                        p->swept, (p->swept_cap = p->swept_cap ? p->swept_cap * 2 : 64) *
                                      sizeof(*p->swept));
                p->swept[p->swept_len++] = sw;
                sw = NULL;
            }
            pthread_mutex_unlock(&p->lock);
        }
        free(sw);
        return;
    }
    part_t *p = d->part;
    if (m->err) {
        /* Retriable errors are retried forever (message.timeout.ms=0), in order: what
         * arrives here will never be delivered. */
        delivery_failed(p, d, rd_kafka_err2str(m->err));
    } else {
        pthread_mutex_lock(&p->lock);
        delivered_locked(p, d, m->offset);
        pthread_mutex_unlock(&p->lock);
    }
    run_delivery_free(d);
}

/* Produces d (ownership passes on). */
static void produce(runner_t *r, delivery_t *d)
{
    rd_kafka_headers_t *hdrs = NULL;
    if (d->header_count) {
        hdrs = rd_kafka_headers_new(d->header_count);
        for (size_t i = 0; i < d->header_count; i++)
            rd_kafka_header_add(hdrs, d->headers[i].name, -1, d->headers[i].value,
                                (ssize_t)d->headers[i].value_len);
    }
    /* Not copied: d owns the bytes until its delivery report frees it. */
    processor_record_t rec = {
        d->topic, d->partition < 0 ? RD_KAFKA_PARTITION_UA : d->partition,
        d->key,   d->key_len,
        d->value, d->value_len,
        hdrs,     d};
    rd_kafka_resp_err_t err = processor_produce(r->producer, &rec, 0);
    if (!err)
        return;
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    delivery_failed(d->part, d, rd_kafka_err2str(err));
    run_delivery_free(d);
}

void run_produce_step(part_t *p, delivery_t **ds, size_t n, int64_t next_offset)
{
    pthread_mutex_lock(&p->lock);
    if (p->failed) {
        /* A record of an earlier step was refused: nothing after it goes out of order.
         * This step is in the outbox; the partition's next assignment produces it. */
        pthread_mutex_unlock(&p->lock);
        for (size_t i = 0; i < n; i++)
            run_delivery_free(ds[i]);
        return;
    }
    uint64_t seq = p->next_step_seq++;
    uint64_t generation = p->generation;
    if (n == 0 && p->steps_len == 0) {
        if (next_offset > p->committable)
            p->committable = next_offset;
    } else if (n > 0 || next_offset >= 0) {
        /* An empty step behind unfinished ones is done as soon as they are. */
        if (p->steps_len == p->steps_cap) {
            p->steps_cap = p->steps_cap ? p->steps_cap * 2 : 16;
            p->steps = codec_xrealloc(p->steps, p->steps_cap * sizeof(*p->steps));
        }
        step_t st = {seq, next_offset, (uint32_t)n, UINT64_MAX, 0};
        for (size_t i = 0; i < n; i++) {
            if (ds[i]->outbox_id < st.outbox_first)
                st.outbox_first = ds[i]->outbox_id;
            if (ds[i]->outbox_id > st.outbox_last)
                st.outbox_last = ds[i]->outbox_id;
        }
        p->steps[p->steps_len++] = st;
    }
    pthread_mutex_unlock(&p->lock);
    for (size_t i = 0; i < n; i++) {
        ds[i]->generation = generation;
        ds[i]->step_seq = seq;
        produce(p->r, ds[i]);
    }
}

void *run_producer_main(void *opaque)
{
    runner_t *r = opaque;
    while (!atomic_load(&r->producer_stop))
        rd_kafka_poll(r->producer, 100);
    return NULL;
}

void run_take_done(part_t *p)
{
    pthread_mutex_lock(&p->lock);
    for (size_t i = 0; i < p->done_len; i++)
        state_store_outbox_done(p->store, p->done[i].first, p->done[i].last);
    p->done_len = 0;
    int64_t changes_next = p->changes_next;
    swept_t **swept = p->swept;
    size_t swept_len = p->swept_len;
    p->swept = NULL;
    p->swept_len = p->swept_cap = 0;
    pthread_mutex_unlock(&p->lock);
    if (changes_next > p->changes_stored) {
        state_store_set_changes_offset(p->store, changes_next);
        p->changes_stored = changes_next;
    }
    /* A model changed since its swept record keeps its mark for the next pass. */
    for (size_t i = 0; i < swept_len; i++) {
        state_store_snapshot_published(p->store, swept[i]->model, swept[i]->model_len);
        free(swept[i]);
    }
    free(swept);
}

/* The partition count of a topic a reply is addressed to, from metadata cached for a
 * minute: partitions are only ever added, so a count a minute old errs on the safe
 * side (and is used when metadata cannot be had). @returns the count, or -1 and why. */
#define REPLY_TOPICS_CACHED 256
#define REPLY_TOPIC_TTL_S   60

int run_reply_topic_partitions(runner_t *r, const char *topic, char *why, size_t why_size)
{
    double now = processor_monotonic_s();
    int count = -1, stale = -1;
    bool fresh = false;
    pthread_mutex_lock(&r->reply_topics_lock);
    for (size_t i = 0; i < r->reply_topics_len; i++) {
        if (strcmp(r->reply_topics[i].name, topic))
            continue;
        stale = count = r->reply_topics[i].count;
        fresh = now - r->reply_topics[i].at < REPLY_TOPIC_TTL_S;
        break;
    }
    pthread_mutex_unlock(&r->reply_topics_lock);
    if (!fresh) {
        char errstr[300];
        count = processor_topic_partitions(r->producer, topic, PROCESSOR_KAFKA_TIMEOUT_MS,
                                           errstr, sizeof(errstr));
        if (count < 0 && stale > 0)
            count = stale;
        pthread_mutex_lock(&r->reply_topics_lock);
        size_t i = 0;
        while (i < r->reply_topics_len && strcmp(r->reply_topics[i].name, topic))
            i++;
        if (i == REPLY_TOPICS_CACHED) /* a hostile pattern's worth of names: start over */
            i = r->reply_topics_len = 0;
        if (i == r->reply_topics_len)
            r->reply_topics_len++;
        snprintf(r->reply_topics[i].name, sizeof(r->reply_topics[i].name), "%s", topic);
        r->reply_topics[i].count = count;
        r->reply_topics[i].at = now;
        pthread_mutex_unlock(&r->reply_topics_lock);
        if (count < 0)
            snprintf(why, why_size, "%s", errstr);
    } else if (count < 0) {
        snprintf(why, why_size, "topic %s: not found", topic);
    }
    return count;
}
