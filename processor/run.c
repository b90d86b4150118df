/* processor/run.c - the Kafka stream processor.
 *
 * Threads: the main thread polls the group consumer (rd_kafka_consumer_poll, never the
 * batch APIs), serves rebalances and hands each record to its partition's queue;
 * --threads workers take partitions with queued records and process them one step at
 * a time; one thread serves the producer's delivery reports. A partition is in at
 * most one worker at a time (flags `scheduled` and `running` under its lock), so its
 * store and handler need no locking. Lock order: a partition's lock, then the run
 * queue's. */
#include "run.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd_apply.h"
#include "codec/alloc.h"
#include "handler.h"
#include "http.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"

#define STEP_MAX_RECORDS 500 /* records applied in one step (one store write) */
/* A step also ends once its outputs pass this many bytes: they are one outbox value
 * in RocksDB (at most 4 GiB), held in memory until delivered, and a record's outputs
 * can be several times its size (a full sync of a large document answers a tiny
 * flush). The step's last record adds at most 3 * message.max.bytes (1e9 at most). */
#define STEP_MAX_OUTPUT_BYTES (64u << 20)
#define QUEUE_PAUSE_BYTES     (16 << 20) /* stop fetching a partition beyond this backlog */
#define COMMIT_INTERVAL_S     1     /* consumer offsets to Kafka, and outbox cleanup */
#define FLUSH_TIMEOUT_MS      30000 /* waiting for deliveries at a revoke or exit */
#define KAFKA_TIMEOUT_MS      10000 /* metadata, committed offsets, watermarks */
/* A takeover that fails on a transient Kafka error is tried again after a delay that
 * doubles from the first to the last (the worker is free meanwhile); /healthz fails
 * once it has failed for --takeover-timeout-ms. */
#define TAKEOVER_RETRY_FIRST_S 1
#define TAKEOVER_RETRY_LAST_S  16

typedef struct part_s part_t;
typedef struct runner_s runner_t;

/* A processing step whose records are produced: the input offset to commit once all
 * of them are delivered. */
typedef struct step_s {
    uint64_t seq;
    int64_t next_offset; /* -1: nothing to commit (a step of leftovers) */
    uint32_t pending;
    uint64_t outbox_first, outbox_last; /* the outbox ids its records came from */
} step_t;

/* Outbox ids whose records are all delivered, deleted by the next step. */
typedef struct outbox_range_s {
    uint64_t first, last;
} outbox_range_t;

/* What a delivery report's opaque points to: a delivery_t or a swept_t. */
typedef enum opaque_kind_e { OPAQUE_OUTBOX = 1, OPAQUE_SWEPT } opaque_kind_t;

/* One record on its way to Kafka: what the delivery report needs, and the bytes. */
typedef struct delivery_s {
    opaque_kind_t kind; /* OPAQUE_OUTBOX; first, like swept_t's */
    part_t *part;
    uint64_t generation; /* the partition's assignment it belongs to */
    uint64_t step_seq;
    uint64_t outbox_id;
    bool change; /* a change record: its offset moves the partition's changes position */
    int32_t partition;
    int64_t input_offset;
    char *topic, *key, *value;
    size_t key_len, value_len;
    size_t header_count;
    state_header_t *headers;
} delivery_t;

/* A snapshot record published by the sweep: once Kafka confirms it, the model's
 * "changed" mark is deleted, unless the model changed since (state/store.h). */
typedef struct swept_s {
    opaque_kind_t kind; /* OPAQUE_SWEPT */
    part_t *part;
    uint64_t generation;
    size_t model_len;
    char model[];
} swept_t;

/* A record waiting for its step, and when the consumer handed it over. */
typedef struct queued_s {
    rd_kafka_message_t *m;
    double consumed_at;
} queued_t;

struct part_s {
    int32_t id;
    runner_t *r;
    pthread_mutex_t lock;
    pthread_cond_t idle; /* broadcast when a step ends */
    /* Under lock: */
    queued_t *queue;
    size_t queue_len, queue_cap, queue_bytes;
    bool assigned, ready, scheduled, running, paused, failed, abort;
    int64_t expected;    /* next input offset the dispatcher accepts */
    uint64_t generation; /* one more with every assignment */
    step_t *steps;       /* produced steps not yet fully delivered, oldest first */
    size_t steps_len, steps_cap;
    uint64_t next_step_seq;
    outbox_range_t *done; /* delivered outbox ids, deleted by the next step */
    size_t done_len, done_cap;
    swept_t **swept; /* delivered sweep records, their marks cleared by the next step */
    size_t swept_len, swept_cap;
    int64_t committable;  /* every record before it is applied and its output delivered */
    int64_t committed;    /* what was last committed to Kafka */
    int64_t changes_next; /* after the newest change record delivered */
    /* Taking the partition over: a transient failure is retried at retry_at (> 0),
     * after retry_delay; failing_since > 0 since the first failure; why: the last
     * failure (transient or, with failed, for good), for /healthz and /readyz. */
    double retry_at, retry_delay, failing_since;
    char why[192];
    /* The worker's, while running (and the main thread's while not assigned): */
    _Atomic int64_t changes_stored; /* written by the worker, read by housekeeping */
    state_store_t *store;
    processor_handler_t *handler;
    part_t *next_ready;
    bool leftovers_produced; /* this store's outbox, once per store opened */
    char attempt_why[192];   /* why the takeover in progress failed */
    size_t cache_bytes;      /* the store's share of --cache-mb */
    /* For /metrics: */
    atomic_int_fast64_t catch_up_remaining; /* records left to read while catching up */
    state_store_stats_t stats;              /* under lock; refreshed by the worker */
    double stats_at;                        /* the worker's, like store */
    uint64_t cache_hits_counted, cache_misses_counted; /* the worker's */
    /* The snapshot sweep (the worker's): when the next pass starts, where this one is. */
    _Atomic double sweep_at; /* read by the main thread's housekeeping */
    double sweep_started_at;
    char *sweep_after; /* the last model visited by the pass in progress */
    size_t sweep_after_len;
    uint64_t sweep_published;
};

struct runner_s {
    const processor_config_t *cfg;
    const char *state_dir;
    const char *bootstrap;
    volatile sig_atomic_t *stop;
    rd_kafka_t *consumer, *producer;
    codec_limits_t limits;
    codec_value_t *initial_document;
    int32_t partition_count;               /* of the flushes topic */
    size_t max_message_bytes;              /* the producer's message.max.bytes */
    atomic_long snapshot_too_large_logged; /* when, in seconds (one line a minute) */
    part_t **parts; /* by partition id; created by the main thread */
    size_t parts_cap;
    atomic_int assigned_count;
    atomic_size_t cache_share; /* --cache-mb divided among the assigned partitions */
    char *settings;            /* processor_settings(): recorded with each store */
    /* processor_settings_id(): a header of every change and snapshot record */
    char settings_id[PROCESSOR_SETTINGS_ID_LEN + 1];

    pthread_mutex_t runq_lock;
    pthread_cond_t runq_cond;
    part_t *runq_head, *runq_tail;
    bool stopping;
    pthread_t *workers;
    size_t worker_count;
    pthread_t producer_thread;
    atomic_bool producer_stop;
    atomic_bool fatal;
    atomic_bool joined;   /* the group gave this instance an assignment (maybe empty) */
    bool consumer_leaked; /* not destroyed: see processor_run() */

    atomic_uint_fast64_t records, errors, dead_letters;
    atomic_uint_fast64_t delivery_failures; /* outbox records Kafka never took */
    /* Partition counts of the topics replies were addressed to (reply_topic_partitions):
     * workers share it. */
    pthread_mutex_t reply_topics_lock;
    struct {
        char name[256];
        int count; /* -1: no such topic */
        double at;
    } reply_topics[256];
    size_t reply_topics_len;
    processor_histogram_t record_latency; /* consumed -> its outputs produced */
    /* For /metrics (see render_metrics()): */
    atomic_uint_fast64_t flushes_applied, commands_applied;
    atomic_uint_fast64_t errors_by_code[CODEC_ERR__COUNT];
    atomic_uint_fast64_t dead_letters_by_code[CODEC_ERR__COUNT];
    atomic_uint_fast64_t cache_hits, cache_misses;
    atomic_uint_fast64_t snapshot_records; /* handed to the producer, both kinds */
    atomic_uint_fast64_t takeover_retries; /* takeovers failed on a transient error */
    processor_histogram_t step_duration;   /* apply, store commit, hand to the producer */
    pthread_mutex_t parts_lock;            /* parts' growth vs. the HTTP thread */
    _Atomic double loop_at;                /* the main loop's last turn (liveness) */
    processor_http_t *http;
};

/* ---- failpoints (tests only) ---- */

/* FLUSHOUT_FAILPOINT=after-commit:N or catch-up:N makes the process die as kill -9
 * would (_exit, nothing flushed) at the N-th such moment: right after a step's store
 * commit and before its records are produced, or after the N-th change record applied
 * while catching up. catch-up-slow:MS makes each change record applied take MS;
 * step-output-bytes:N lowers STEP_MAX_OUTPUT_BYTES to N (a step of one record each).
 * The crash and fault tests use them to hit those windows on purpose. */
typedef enum failpoint_e {
    FAILPOINT_NONE,
    FAILPOINT_AFTER_COMMIT,
    FAILPOINT_CATCH_UP,
    FAILPOINT_CATCH_UP_SLOW,
    FAILPOINT_STEP_OUTPUT_BYTES,
} failpoint_t;
static failpoint_t failpoint_kind;
static atomic_long failpoint_countdown;
static size_t step_max_output_bytes = STEP_MAX_OUTPUT_BYTES;

static void failpoint_init(void)
{
    const char *fp = getenv("FLUSHOUT_FAILPOINT");
    long n;
    failpoint_kind = FAILPOINT_NONE;
    step_max_output_bytes = STEP_MAX_OUTPUT_BYTES;
    if (!fp)
        return;
    if (sscanf(fp, "step-output-bytes:%ld", &n) == 1 && n > 0) {
        failpoint_kind = FAILPOINT_STEP_OUTPUT_BYTES;
        step_max_output_bytes = (size_t)n;
        LOG_WARN("failpoint %s armed: steps end after %ld bytes of outputs", fp, n);
        return;
    }
    if (sscanf(fp, "after-commit:%ld", &n) == 1)
        failpoint_kind = FAILPOINT_AFTER_COMMIT;
    else if (sscanf(fp, "catch-up-slow:%ld", &n) == 1)
        failpoint_kind = FAILPOINT_CATCH_UP_SLOW;
    else if (sscanf(fp, "catch-up:%ld", &n) == 1)
        failpoint_kind = FAILPOINT_CATCH_UP;
    else
        return;
    atomic_store(&failpoint_countdown, n);
    LOG_WARN("failpoint %s armed: this process will die on purpose", fp);
}

static void failpoint(failpoint_t kind)
{
    if (kind == FAILPOINT_CATCH_UP && failpoint_kind == FAILPOINT_CATCH_UP_SLOW) {
        usleep((useconds_t)atomic_load(&failpoint_countdown) * 1000);
        return;
    }
    if (failpoint_kind == kind && atomic_fetch_sub(&failpoint_countdown, 1) == 1) {
        LOG_WARN("failpoint reached: dying now");
        _exit(137);
    }
}

/* ---- small helpers ---- */

static rd_kafka_topic_partition_list_t *one_partition(const char *topic,
                                                      int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
    return l;
}

/* ---- the run queue ---- */

/* Queues p for a worker unless it is queued or running. Caller holds p->lock. */
static void schedule(part_t *p)
{
    if (p->scheduled || p->running)
        return;
    p->scheduled = true;
    runner_t *r = p->r;
    pthread_mutex_lock(&r->runq_lock);
    p->next_ready = NULL;
    if (r->runq_tail)
        r->runq_tail->next_ready = p;
    else
        r->runq_head = p;
    r->runq_tail = p;
    pthread_cond_signal(&r->runq_cond);
    pthread_mutex_unlock(&r->runq_lock);
}

static part_t *part_get(runner_t *r, int32_t id)
{
    pthread_mutex_lock(&r->parts_lock);
    if ((size_t)id >= r->parts_cap) {
        size_t cap = (size_t)id + 16;
        r->parts = codec_xrealloc(r->parts, cap * sizeof(*r->parts));
        memset(r->parts + r->parts_cap, 0, (cap - r->parts_cap) * sizeof(*r->parts));
        r->parts_cap = cap;
    }
    if (!r->parts[id]) {
        part_t *p = codec_xcalloc(1, sizeof(*p));
        p->id = id;
        p->r = r;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->idle, NULL);
        r->parts[id] = p;
    }
    part_t *p = r->parts[id];
    pthread_mutex_unlock(&r->parts_lock);
    return p;
}

/* The partition's state, or NULL if it was never assigned here. */
static part_t *part_find(const runner_t *r, int32_t id)
{
    return id >= 0 && (size_t)id < r->parts_cap ? r->parts[id] : NULL;
}

static void part_drop_queue(part_t *p)
{
    for (size_t i = 0; i < p->queue_len; i++)
        rd_kafka_message_destroy(p->queue[i].m);
    p->queue_len = 0;
    p->queue_bytes = 0;
}

/* ---- producing ---- */

static delivery_t *delivery_new(part_t *p, uint64_t outbox_id,
                                const state_outbox_rec_t *rec, int64_t input_offset,
                                bool change)
{
    delivery_t *d = codec_xcalloc(1, sizeof(*d));
    d->kind = OPAQUE_OUTBOX;
    d->part = p;
    d->outbox_id = outbox_id;
    d->change = change;
    d->partition = rec->partition;
    d->input_offset = input_offset;
    d->topic = codec_xmemdup(rec->topic, strlen(rec->topic) + 1);
    d->key = rec->key ? codec_xmemdup(rec->key, rec->key_len) : NULL;
    d->key_len = rec->key_len;
    d->value = codec_xmemdup(rec->value, rec->value_len);
    d->value_len = rec->value_len;
    d->header_count = rec->header_count;
    d->headers = codec_xcalloc(rec->header_count + 1, sizeof(*d->headers));
    for (size_t i = 0; i < rec->header_count; i++) {
        const state_header_t *h = &rec->headers[i];
        d->headers[i].name = codec_xmemdup(h->name, strlen(h->name) + 1);
        d->headers[i].value = codec_xmemdup(h->value, h->value_len);
        d->headers[i].value_len = h->value_len;
    }
    return d;
}

static void delivery_free(delivery_t *d)
{
    for (size_t i = 0; i < d->header_count; i++) {
        free((char *)d->headers[i].name);
        free((char *)d->headers[i].value);
    }
    free(d->headers);
    free(d->topic);
    free(d->key);
    free(d->value);
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
        if (!p->steps_len) /* a revoke waits for this (revoke_partitions()) */
            pthread_cond_broadcast(&p->idle);
    }
}

/* Marks the partition failed: it is paused and no longer processed until it is
 * assigned again (a restart, or a rebalance). */
static void part_fail(part_t *p);

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
        part_fail(p);
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
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
    delivery_free(d);
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
    rd_kafka_resp_err_t err = processor_produce(r->producer, &rec, false);
    if (!err)
        return;
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    delivery_failed(d->part, d, rd_kafka_err2str(err));
    delivery_free(d);
}

/* Produces a step's records: the input offset next_offset is committable once they
 * are all delivered. */
static void produce_step(part_t *p, delivery_t **ds, size_t n, int64_t next_offset)
{
    pthread_mutex_lock(&p->lock);
    if (p->failed) {
        /* A record of an earlier step was refused: nothing after it goes out of order.
         * This step is in the outbox; the partition's next assignment produces it. */
        pthread_mutex_unlock(&p->lock);
        for (size_t i = 0; i < n; i++)
            delivery_free(ds[i]);
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

static void *producer_main(void *opaque)
{
    runner_t *r = opaque;
    while (!atomic_load(&r->producer_stop))
        rd_kafka_poll(r->producer, 100);
    return NULL;
}

/* ---- a processing step ---- */

typedef struct model_ref_s {
    char *ptr;
    size_t len;
} model_ref_t;

/* Output records of one step, not yet produced. */
typedef struct step_out_s {
    delivery_t **items;
    size_t len, cap;
    size_t bytes;               /* of the items' keys, values and headers */
    model_ref_t *snapshots_due; /* models whose snapshot record is due, once each
                                 * (ids may hold NUL bytes: lengths, not strlen) */
    size_t due_len, due_cap;
} step_out_t;

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
    uint64_t id = state_store_outbox_add(p->store, rec);
    if (so->len == so->cap) {
        so->cap = so->cap ? so->cap * 2 : 64;
        so->items = codec_xrealloc(so->items, so->cap * sizeof(*so->items));
    }
    so->items[so->len++] = delivery_new(p, id, rec, input_offset, change);
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

static const char *header(const rd_kafka_message_t *m, const char *name, size_t *len)
{
    rd_kafka_headers_t *hdrs;
    const void *v;
    if (rd_kafka_message_headers(m, &hdrs) ||
        rd_kafka_header_get_last(hdrs, name, &v, len))
        return NULL;
    return v;
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

static void add_dead_letter(part_t *p, step_out_t *so, const rd_kafka_message_t *m,
                            const processor_output_t *out)
{
    runner_t *r = p->r;
    state_header_t hs[32];
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
        /* The outbox keeps at most 32 headers with names under 256 bytes. */
        for (size_t i = 0; !rd_kafka_header_get_all(orig, i, &name, &v, &len); i++) {
            size_t size = strlen(name) + len + 8;
            if (n < 30 && strlen(name) < 200 && size <= header_room) {
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
static int check_reply_headers(const processor_config_t *cfg, const rd_kafka_message_t *m,
                               char *why, size_t why_size)
{
    size_t len;
    const char *v;
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(m, &hdrs))
        return 0;
    if (!rd_kafka_header_get_last(hdrs, "kafka_replyTopic", (const void **)&v, &len) &&
        processor_reply_topic_check(cfg, v ? v : "", v ? len : 0, why, why_size))
        return -1;
    if (!rd_kafka_header_get_last(hdrs, "kafka_replyPartition", (const void **)&v,
                                  &len) &&
        (!v || len != 4 || be_int32(v) < 0)) {
        snprintf(why, why_size,
                 "kafka_replyPartition must be a 4-byte big-endian partition number, not "
                 "%s",
                 !v || len != 4 ? "a value of another length" : "negative");
        return -1;
    }
    if (!rd_kafka_header_get_last(hdrs, "kafka_correlationId", (const void **)&v, &len) &&
        len > PROCESSOR_CORRELATION_MAX) {
        snprintf(why, why_size, "kafka_correlationId of %zu bytes is longer than %d", len,
                 PROCESSOR_CORRELATION_MAX);
        return -1;
    }
    return 0;
}

/* The partition count of a topic a reply is addressed to, from metadata cached for a
 * minute: partitions are only ever added, so a count a minute old errs on the safe
 * side (and is used when metadata cannot be had). @returns the count, or -1 and why. */
#define REPLY_TOPICS_CACHED 256
#define REPLY_TOPIC_TTL_S   60

static int reply_topic_partitions(runner_t *r, const char *topic, char *why,
                                  size_t why_size)
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
        count = processor_topic_partitions(r->producer, topic, KAFKA_TIMEOUT_MS, errstr,
                                           sizeof(errstr));
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

/* The reply to m: to the replies topic keyed by client, or where Spring's
 * request/reply headers say (checked by check_reply_headers()), with the correlation
 * id copied. A reply addressed to a partition the topic does not have (or to a topic
 * that is gone) would be refused by Kafka, which stops the partition: it becomes a
 * bad_reply_topic error on the replies topic and a dead letter instead (an error reply
 * just goes to the replies topic). */
static void add_reply(part_t *p, step_out_t *so, const rd_kafka_message_t *m,
                      const processor_output_t *out)
{
    runner_t *r = p->r;
    size_t topic_len = 0, partition_len = 0, corr_len = 0;
    const char *topic = NULL, *partition = NULL, *corr = NULL;
    char why[400];
    /* Headers refused, or not checked because the record was refused first (no key,
     * too large, wrong partition): the error goes to the replies topic. */
    if (out->error != CODEC_ERR_BAD_REPLY_TOPIC &&
        !check_reply_headers(r->cfg, m, why, sizeof(why))) {
        topic = header(m, "kafka_replyTopic", &topic_len);
        partition = header(m, "kafka_replyPartition", &partition_len);
        corr = header(m, "kafka_correlationId", &corr_len);
    }
    char topic_buf[256];
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
        hs[rec.header_count++] = (state_header_t){"kafka_correlationId", corr, corr_len};
    int count = rec.topic != r->cfg->replies_topic || rec.partition >= 0
                    ? reply_topic_partitions(r, rec.topic, why, sizeof(why))
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
    LOG_WARN("partition %d offset %lld model \"%.*s\": %s: %s", p->id,
             (long long)m->offset, (int)(m->key_len > 60 ? 60 : m->key_len),
             m->key ? (const char *)m->key : "", codec_err_name(bad.error), bad.message);
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

void processor_apply_record(processor_handler_t *h, const processor_config_t *cfg,
                            int32_t partition_count, const rd_kafka_message_t *m,
                            processor_output_t *out)
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
    } else if (check_reply_headers(cfg, m, why, sizeof(why))) {
        processor_handler_refuse(h, m->key, m->key_len, value, m->len,
                                 CODEC_ERR_BAD_REPLY_TOPIC, why, out);
    } else {
        processor_handler_handle(h, m->offset, m->key, m->key_len, value, m->len, out);
    }
}

/* Applies one record; output records go to so. @returns false when the partition must
 * stop (the store failed). */
static bool process_record(part_t *p, const rd_kafka_message_t *m,
                           processor_output_t *out, step_out_t *so)
{
    runner_t *r = p->r;
    processor_apply_record(p->handler, r->cfg, r->partition_count, m, out);
    if (out->error == CODEC_ERR_STORE_FAILED) {
        atomic_fetch_add(&r->errors_by_code[CODEC_ERR_STORE_FAILED], 1);
        LOG_ERROR("partition %d offset %lld model \"%.*s\": %s; the partition stops",
                  p->id, (long long)m->offset, (int)(m->key_len > 60 ? 60 : m->key_len),
                  (const char *)m->key, out->message);
        return false;
    }
    atomic_fetch_add(&r->records, 1);
    LOG_DEBUG("partition %d offset %lld model \"%.*s\": %zu bytes -> %s", p->id,
              (long long)m->offset, (int)(m->key_len > 60 ? 60 : m->key_len),
              m->key ? (const char *)m->key : "", m->len,
              out->error ? codec_err_name(out->error) : "ok");
    if (out->change.size) {
        atomic_fetch_add(&r->flushes_applied, 1);
        atomic_fetch_add(&r->commands_applied, out->commands_applied);
    }
    if (out->error) {
        atomic_fetch_add(&r->errors, 1);
        atomic_fetch_add(&r->errors_by_code[out->error], 1);
        LOG_WARN("partition %d offset %lld model \"%.*s\": %s: %s", p->id,
                 (long long)m->offset, (int)(m->key_len > 60 ? 60 : m->key_len),
                 m->key ? (const char *)m->key : "", codec_err_name(out->error),
                 out->message);
    }
    if (out->reply_key)
        add_reply(p, so, m, out);
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

/* Pauses or resumes fetching the partition's records. */
static void set_fetching(part_t *p, bool on)
{
    rd_kafka_topic_partition_list_t *l =
        one_partition(p->r->cfg->flushes_topic, p->id, RD_KAFKA_OFFSET_INVALID);
    if (on)
        rd_kafka_resume_partitions(p->r->consumer, l);
    else
        rd_kafka_pause_partitions(p->r->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Marks the partition failed: it is paused and no longer processed until it is
 * assigned again (a restart, or a rebalance). */
static void part_fail(part_t *p)
{
    pthread_mutex_lock(&p->lock);
    p->failed = true;
    part_drop_queue(p);
    pthread_mutex_unlock(&p->lock);
    set_fetching(p, false);
}

/* Adds the delivered outbox ids and the changes position to the store's batch. */
static void take_done(part_t *p)
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

/* Publishes the model's snapshot record, as committed (call between steps). It is not
 * in the outbox: a lost count-based one is replaced by the next, and the sweep clears a
 * model's mark only when Kafka confirms its record (swept). @returns true when the
 * record was handed to the producer. */
static bool publish_snapshot(part_t *p, const char *model, size_t model_len, bool swept)
{
    runner_t *r = p->r;
    char errstr[256];
    state_model_t *m =
        state_store_model(p->store, model, model_len, errstr, sizeof(errstr));
    if (!m) {
        LOG_WARN("partition %d model \"%.*s\": no snapshot record: %s", p->id,
                 (int)(model_len > 60 ? 60 : model_len), model, errstr);
        return false;
    }
    /* A count-based record skips a document that may be too large without packing it
     * (the bound is at most about twice its size); the sweep packs and measures, so
     * that every document that fits is published at least by it. */
    size_t size = state_model_document_bound(m);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    bool published = false;
    if (swept || size <= r->max_message_bytes) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (state_store_pack_snapshot_record(p->store, model, model_len, &pk, errstr,
                                             sizeof(errstr))) {
            LOG_WARN("partition %d model \"%.*s\": no snapshot record: %s", p->id,
                     (int)(model_len > 60 ? 60 : model_len), model, errstr);
            msgpack_sbuffer_destroy(&sb);
            return false;
        }
        size = sb.size;
    }
    if (size > r->max_message_bytes) {
        long now = (long)processor_monotonic_s();
        long last = atomic_load(&r->snapshot_too_large_logged);
        if (now - last >= 60 &&
            atomic_compare_exchange_strong(&r->snapshot_too_large_logged, &last, now))
            LOG_WARN(
                "partition %d model \"%.*s\": no snapshot record, %s (%zu bytes) "
                "is larger than message.max.bytes (%zu); a restore replays its change "
                "records instead, so keep them (logged once a minute)",
                p->id, (int)(model_len > 60 ? 60 : model_len), model,
                swept ? "the record" : "its document may be: its bound", size,
                r->max_message_bytes);
    } else {
        swept_t *sw = NULL;
        if (swept) {
            sw = codec_xcalloc(1, sizeof(*sw) + model_len);
            sw->kind = OPAQUE_SWEPT;
            sw->part = p;
            pthread_mutex_lock(&p->lock);
            sw->generation = p->generation;
            pthread_mutex_unlock(&p->lock);
            sw->model_len = model_len;
            memcpy(sw->model, model, model_len);
        }
        /* The settings, whole: a reader under others can name the differences. */
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(2);
        rd_kafka_header_add(hdrs, PROCESSOR_SETTINGS_HEADER, -1, r->settings_id, -1);
        rd_kafka_header_add(hdrs, PROCESSOR_SETTINGS_TEXT_HEADER, -1, r->settings, -1);
        processor_record_t rec = {
            r->cfg->snapshots_topic, p->id, model, model_len, sb.data, sb.size, hdrs, sw};
        rd_kafka_resp_err_t err = processor_produce(r->producer, &rec, true);
        if (err) {
            rd_kafka_headers_destroy(hdrs); /* still ours: nothing was produced */
            LOG_WARN("partition %d model \"%.*s\": snapshot record not produced: %s",
                     p->id, (int)(model_len > 60 ? 60 : model_len), model,
                     rd_kafka_err2str(err));
            free(sw);
        } else if (swept) {
            state_store_snapshot_sent(p->store, model, model_len);
        }
        published = !err;
        if (published)
            atomic_fetch_add(&r->snapshot_records, 1);
    }
    msgpack_sbuffer_destroy(&sb);
    return published;
}

/* Publishes the snapshot records due in a step, as committed. */
static void produce_snapshots(part_t *p, const step_out_t *so)
{
    for (size_t i = 0; i < so->due_len; i++)
        publish_snapshot(p, so->snapshots_due[i].ptr, so->snapshots_due[i].len, false);
}

/* ---- the snapshot sweep ---- */

/* A pass publishes the snapshot record of every model changed since its last one, a
 * chunk of models per step so that records do not wait behind it; the next pass
 * starts --snapshot-topic-interval-ms after this one started. With it, a restore never
 * needs change records older than about one interval, whatever the model's pace, so
 * the changes topic may have a finite retention (deploy/README.md, "Retention"). */
#define SWEEP_CHUNK 256

typedef struct sweep_s {
    part_t *p;
    size_t visited, published;
} sweep_t;

static int sweep_visit(void *opaque, const char *model, size_t model_len)
{
    sweep_t *sw = opaque;
    part_t *p = sw->p;
    sw->visited++;
    free(p->sweep_after);
    p->sweep_after = codec_xmemdup(model, model_len);
    p->sweep_after_len = model_len;
    /* The mark is cleared when Kafka confirms the record (take_done()). */
    sw->published += publish_snapshot(p, model, model_len, true);
    return 0;
}

/* Runs one chunk of the sweep when it is due. Worker thread, between steps (the state
 * is committed). @returns true when the pass has more to do. */
static bool sweep_chunk(part_t *p)
{
    runner_t *r = p->r;
    double now = processor_monotonic_s();
    if (!r->cfg->snapshot_topic_interval_ms || !r->cfg->snapshot_topic_every ||
        now < atomic_load(&p->sweep_at))
        return false;
    if (!p->sweep_started_at)
        p->sweep_started_at = now;
    sweep_t sw = {p, 0, 0};
    char errstr[512];
    int rc =
        state_store_changed_models(p->store, p->sweep_after, p->sweep_after_len,
                                   SWEEP_CHUNK, sweep_visit, &sw, errstr, sizeof(errstr));
    /* Loading the models may have grown the cache: a commit evicts. */
    if (!rc && state_store_commit(p->store, -1, errstr, sizeof(errstr)))
        rc = -1;
    if (rc) {
        LOG_ERROR("partition %d: snapshot sweep: %s", p->id, errstr);
        part_fail(p);
        return false;
    }
    p->sweep_published += sw.published;
    if (sw.visited == SWEEP_CHUNK)
        return true;
    { /* the pass is over */
        if (p->sweep_published)
            LOG_INFO(
                "partition %d: %llu snapshot records published (models changed since "
                "their last one) in %.2f s",
                p->id, (unsigned long long)p->sweep_published,
                processor_monotonic_s() - p->sweep_started_at);
        atomic_store(&p->sweep_at, p->sweep_started_at +
                                       (double)r->cfg->snapshot_topic_interval_ms / 1e3);
        p->sweep_started_at = 0;
        p->sweep_published = 0;
        free(p->sweep_after);
        p->sweep_after = NULL;
        p->sweep_after_len = 0;
    }
    return false;
}

/* Applies msgs[0..n) in one step, or the first of them whose outputs reach
 * STEP_MAX_OUTPUT_BYTES. @returns how many were applied (the rest go back to the
 * queue). */
static size_t process_step(part_t *p, rd_kafka_message_t **msgs,
                           const double *consumed_at, size_t n)
{
    double started_at = processor_monotonic_s();
    step_out_t so = {0};
    processor_output_t out;
    processor_output_init(&out);
    int64_t next_offset = -1;
    bool ok = true;
    size_t applied = 0;
    while (applied < n && ok && so.bytes < step_max_output_bytes) {
        ok = process_record(p, msgs[applied], &out, &so);
        if (ok)
            next_offset = msgs[applied]->offset + 1;
        applied++;
    }
    n = applied;
    processor_output_destroy(&out);
    take_done(p);
    char errstr[512];
    if (ok && processor_handler_commit(p->handler, next_offset, errstr, sizeof(errstr))) {
        LOG_ERROR(
            "partition %d: the state store failed: %s; the partition stops (nothing "
            "of this step is answered or committed)",
            p->id, errstr);
        atomic_fetch_add(&p->r->errors_by_code[CODEC_ERR_STORE_FAILED], 1);
        ok = false;
    }
    if (!ok) {
        for (size_t i = 0; i < so.len; i++)
            delivery_free(so.items[i]);
        part_fail(p);
    } else {
        failpoint(FAILPOINT_AFTER_COMMIT);
        produce_step(p, so.items, so.len, next_offset);
        produce_snapshots(p, &so);
        double produced_at = processor_monotonic_s();
        for (size_t i = 0; i < n; i++)
            processor_histogram_record(&p->r->record_latency,
                                       (uint64_t)((produced_at - consumed_at[i]) * 1e6));
        if (n)
            processor_histogram_record(&p->r->step_duration,
                                       (uint64_t)((produced_at - started_at) * 1e6));
    }
    for (size_t i = 0; i < so.due_len; i++)
        free(so.snapshots_due[i].ptr);
    free(so.snapshots_due);
    free(so.items);
    return applied;
}

/* ---- taking a partition over ---- */

static int produce_leftover(void *opaque, uint64_t id, const state_outbox_rec_t *rec)
{
    void **args = opaque;
    part_t *p = args[0];
    step_out_t *so = args[1];
    if (so->len == so->cap) {
        so->cap = so->cap ? so->cap * 2 : 64;
        so->items = codec_xrealloc(so->items, so->cap * sizeof(*so->items));
    }
    so->items[so->len++] =
        delivery_new(p, id, rec, -1, !strcmp(rec->topic, p->r->cfg->changes_topic));
    return 0;
}

/* Reads topic's partition p->id from offset from to hi (processor_read_partition()),
 * handing each record to visit (0, or non-zero to stop with that code).
 * @returns 0 at the end, visit's code, or -1 (aborted or no consumer). */
typedef struct part_read_s {
    part_t *p;
    int64_t hi;
    int (*visit)(part_t *p, const rd_kafka_message_t *m, void *ctx);
    void *ctx;
} part_read_t;

#define READ_FAILED 5 /* part_read_visit(): the visit failed for good (-1) */

static int part_read_visit(const rd_kafka_message_t *m, void *ctx)
{
    part_read_t *pr = ctx;
    atomic_store(&pr->p->catch_up_remaining, pr->hi - m->offset - 1);
    int rc = pr->visit(pr->p, m, pr->ctx);
    return rc < 0 ? READ_FAILED : rc; /* not the reader's own -1 */
}

static bool part_read_stopped(void *ctx)
{
    part_t *p = ((part_read_t *)ctx)->p;
    pthread_mutex_lock(&p->lock);
    bool abort = p->abort;
    pthread_mutex_unlock(&p->lock);
    return abort || *p->r->stop;
}

#define TAKEOVER_AGAIN 3 /* prepare() and its helpers: a transient error, try again */

/* @returns 0, visit's code (> 0), -1 (a visit failed for good), or TAKEOVER_AGAIN (the
 * reader failed, or retention overtook it: the next attempt starts from the
 * watermarks again). */
static int read_partition(part_t *p, const char *topic, int64_t from, int64_t hi,
                          int (*visit)(part_t *p, const rd_kafka_message_t *m, void *ctx),
                          void *ctx)
{
    part_read_t pr = {p, hi, visit, ctx};
    processor_partition_read_t rd = {
        topic, p->id, from, hi, part_read_visit, part_read_stopped, &pr};
    rd.contiguous = !strcmp(topic, p->r->cfg->changes_topic);
    rd.settings = p->r->settings;
    atomic_store(&p->catch_up_remaining, hi - from);
    int rc = processor_read_partition(p->r->cfg, p->r->bootstrap, &rd);
    atomic_store(&p->catch_up_remaining, 0);
    /* Written under other settings: every partition would diverge the same way. */
    if (rc == PROCESSOR_READ_SETTINGS) {
        atomic_store(&p->r->fatal, true);
        return -1;
    }
    if (rc == READ_FAILED || (rc == -1 && part_read_stopped(&pr)))
        return -1; /* being revoked, or stopping: no takeover to try again */
    if (rc == -1 || rc == PROCESSOR_READ_GAP) {
        snprintf(p->attempt_why, sizeof(p->attempt_why), "reading %s failed", topic);
        return TAKEOVER_AGAIN;
    }
    return rc;
}

#define REPARTITION_HINT                                                                \
    "keys map to partitions by the partition count, so this state belongs to another "  \
    "layout; move the models with `flushout-processor repartition` (deploy/README.md, " \
    "\"Repartitioning\") and start on empty state directories"

#define SETTINGS_HINT                                                                  \
    "instances that process the same partitions must have the same settings, or they " \
    "would answer the same records differently: run with the settings the state was "  \
    "built with, or remove the partition directories to rebuild them from the topics " \
    "under the new settings (every instance of the group must then use them)"

/* Checks that a record of the changes or snapshots topic belongs to the partition it
 * is in: one that does not was written under another partition count. Fatal.
 * @returns 0, or -1 (logged). */
static int check_record_layout(part_t *p, const char *topic, const rd_kafka_message_t *m)
{
    runner_t *r = p->r;
    int32_t owner = m->key ? processor_key_partition(r->cfg->partitioner, m->key,
                                                     m->key_len, r->partition_count)
                           : -1;
    if (owner < 0 || owner == p->id)
        return 0;
    LOG_ERROR("partition %d: the record at %s offset %lld is model \"%.*s\", which "
              "belongs to partition %d of %d: the topic was written under another "
              "partition count (or --partitioner); " REPARTITION_HINT,
              p->id, topic, (long long)m->offset,
              (int)(m->key_len > 60 ? 60 : m->key_len), (const char *)m->key, owner,
              r->partition_count);
    atomic_store(&r->fatal, true);
    return -1;
}

/* Catching up: counts, and the changes position to store. */
typedef struct catch_up_s {
    uint64_t applied, skipped, uncommitted, installed;
    int64_t position;
    /* A new store keeps no changes position until its catch-up is complete (snapshots
     * ahead installed too): interrupted, it starts again as new. */
    bool hold_position;
} catch_up_t;

#define CATCH_UP_GAP 2 /* read_partition() code: change records are missing */

static int commit_catch_up(part_t *p, catch_up_t *cu)
{
    char errstr[512];
    if (cu->position >= 0 && !cu->hold_position)
        state_store_set_changes_offset(p->store, cu->position);
    if (state_store_commit(p->store, -1, errstr, sizeof(errstr))) {
        LOG_ERROR("partition %d: the state store failed: %s", p->id, errstr);
        return -1;
    }
    cu->uncommitted = 0;
    return 0;
}

static int apply_change(part_t *p, const rd_kafka_message_t *m, void *ctx)
{
    catch_up_t *cu = ctx;
    char errstr[512];
    int64_t input_offset;
    if (check_record_layout(p, p->r->cfg->changes_topic, m))
        return -1;
    switch (state_store_apply_change(p->store, m->key, m->key_len,
                                     m->payload ? m->payload : "", m->len, &input_offset,
                                     errstr, sizeof(errstr))) {
    case STATE_CHANGE_APPLIED:
        cu->applied++;
        failpoint(FAILPOINT_CATCH_UP);
        break;
    case STATE_CHANGE_SKIPPED:
        cu->skipped++;
        break;
    case STATE_CHANGE_GAP:
        LOG_WARN("partition %d: change record at %s offset %lld: %s", p->id,
                 p->r->cfg->changes_topic, (long long)m->offset, errstr);
        return commit_catch_up(p, cu) ? -1 : CATCH_UP_GAP;
    case STATE_CHANGE_FAILED:
        LOG_ERROR(
            "partition %d: change record at %s offset %lld: %s; the partition is not "
            "served (its state would be wrong)",
            p->id, p->r->cfg->changes_topic, (long long)m->offset, errstr);
        return -1;
    }
    cu->position = m->offset + 1;
    return ++cu->uncommitted >= 1000 ? commit_catch_up(p, cu) : 0;
}

static int install_snapshot(part_t *p, const rd_kafka_message_t *m, void *ctx)
{
    catch_up_t *cu = ctx;
    char errstr[512];
    if (check_record_layout(p, p->r->cfg->snapshots_topic, m))
        return -1;
    int rc = state_store_install_snapshot(p->store, m->key, m->key_len,
                                          m->payload ? m->payload : "", m->len, errstr,
                                          sizeof(errstr));
    if (rc < 0) { /* skipping it would serve the model rolled back */
        LOG_ERROR("partition %d: snapshot record at %s offset %lld: %s; the partition is "
                  "not served (its state would be wrong)",
                  p->id, p->r->cfg->snapshots_topic, (long long)m->offset, errstr);
        return -1;
    }
    cu->installed += (uint64_t)rc;
    /* Each install is committed: a later record of the same model reads it back. */
    return rc ? commit_catch_up(p, cu) : 0;
}

/* The first and next offsets of topic's partition p->id. @returns 0, or
 * TAKEOVER_AGAIN (a timeout, no leader, ...: p->attempt_why says which). */
static int partition_ends(part_t *p, const char *topic, int64_t *lo, int64_t *hi)
{
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
        p->r->producer, topic, p->id, lo, hi, KAFKA_TIMEOUT_MS);
    if (err)
        snprintf(p->attempt_why, sizeof(p->attempt_why),
                 "cannot read the offsets of %s: %s", topic, rd_kafka_err2str(err));
    return err ? TAKEOVER_AGAIN : 0;
}

/* Installs the latest snapshot of every model of the partition that is ahead of the
 * store. @returns 0, -1 (logged), or TAKEOVER_AGAIN. */
static int restore_snapshots(part_t *p, catch_up_t *cu)
{
    runner_t *r = p->r;
    const char *topic = r->cfg->snapshots_topic;
    int64_t lo, hi;
    int rc = partition_ends(p, topic, &lo, &hi);
    if (rc)
        return rc;
    LOG_INFO("partition %d: restoring from %s offsets %lld..%lld", p->id, topic,
             (long long)lo, (long long)hi);
    int64_t position = cu->position;
    cu->position = -1; /* installing says nothing about the changes position */
    rc = lo < hi ? read_partition(p, topic, lo, hi, install_snapshot, cu) : 0;
    cu->position = position;
    if (!rc)
        LOG_INFO("partition %d: %llu snapshot records installed (models restored)", p->id,
                 (unsigned long long)cu->installed);
    return rc == TAKEOVER_AGAIN ? rc : rc ? -1 : 0;
}

/* Applies the partition's change records from the store's changes position to the end
 * of the changes partition. When they do not reach back far enough (deleted by
 * retention, or a gap), the models are first restored from the snapshots topic; when
 * that does not reach far enough either, the partition is refused. @returns 0, -1
 * (logged), or TAKEOVER_AGAIN (a transient error: p->attempt_why). */
static int catch_up(part_t *p)
{
    runner_t *r = p->r;
    const char *topic = r->cfg->changes_topic;
    int64_t from = state_store_changes_offset(p->store);
    int64_t lo, hi;
    int rc = partition_ends(p, topic, &lo, &hi);
    if (rc)
        return rc;
    bool restored = false, fresh = from < 0;
    catch_up_t cu = {.position = -1,
                     .hold_position = fresh && r->cfg->snapshot_topic_every};
    if (from < lo && lo > 0) {
        LOG_WARN(
            "partition %d: %s starts at %lld (retention), after this store's position "
            "%lld",
            p->id, topic, (long long)lo, (long long)from);
        if (!r->cfg->snapshot_topic_every)
            return -1;
        if ((rc = restore_snapshots(p, &cu)))
            return rc;
        restored = true;
    }
    if (from < lo)
        from = lo;
    double start = processor_monotonic_s();
    if (from < hi) {
        LOG_INFO("partition %d: catching up from %s offsets %lld..%lld", p->id, topic,
                 (long long)from, (long long)hi);
        rc = read_partition(p, topic, from, hi, apply_change, &cu);
        if (rc == CATCH_UP_GAP && !restored && r->cfg->snapshot_topic_every) {
            restored = true;
            rc = restore_snapshots(p, &cu);
            if (!rc)
                rc = read_partition(p, topic, from, hi, apply_change, &cu);
        }
        if (rc == CATCH_UP_GAP)
            LOG_ERROR(
                "partition %d: neither %s nor %s reaches back far enough to rebuild its "
                "models; the partition is not served rather than served wrong (rebuild "
                "it, or restore the topics)",
                p->id, topic, r->cfg->snapshots_topic);
    }
    /* A new store also installs every snapshot record ahead of what the change records
     * gave it: a model moved by `repartition` and not changed since is in the
     * snapshots topic alone. Installing only what is ahead keeps the history the
     * change records gave the others. */
    if (!rc && fresh && !restored && r->cfg->snapshot_topic_every)
        rc = restore_snapshots(p, &cu);
    /* Tried again later: what was applied is kept, the rest comes next time. */
    if (rc == TAKEOVER_AGAIN)
        return commit_catch_up(p, &cu) ? -1 : rc;
    cu.hold_position = false;
    if (rc || commit_catch_up(p, &cu))
        return -1;
    if (cu.position > p->changes_stored)
        p->changes_stored = cu.position;
    LOG_INFO("partition %d: caught up: %llu change records applied, %llu already "
             "reflected, in %.1f s",
             p->id, (unsigned long long)cu.applied, (unsigned long long)cu.skipped,
             processor_monotonic_s() - start);
    return 0;
}

/* Refreshes the partition's store figures for /metrics, at most once a second unless
 * forced. Worker thread (the store's). */
static void refresh_stats(part_t *p, bool force)
{
    double now = processor_monotonic_s();
    if (!p->store || (!force && now - p->stats_at < 1.0))
        return;
    p->stats_at = now;
    state_store_stats_t st;
    state_store_stats(p->store, &st);
    /* The runner's counters only grow; a store's restart from 0 when reopened. */
    atomic_fetch_add(&p->r->cache_hits, st.cache_hits - p->cache_hits_counted);
    atomic_fetch_add(&p->r->cache_misses, st.cache_misses - p->cache_misses_counted);
    p->cache_hits_counted = st.cache_hits;
    p->cache_misses_counted = st.cache_misses;
    pthread_mutex_lock(&p->lock);
    p->stats = st;
    pthread_mutex_unlock(&p->lock);
}

/* Checks that the partition's store was built for the flushes topic's partition count
 * (recording it in a new store). A mismatch is fatal: every partition is affected.
 * @returns 0, or -1 (logged). */
static int check_layout(part_t *p, const char *dir)
{
    runner_t *r = p->r;
    int32_t built_for = state_store_partition_count(p->store);
    if (built_for > 0 && built_for != r->partition_count) {
        LOG_ERROR("partition %d: the state in %s was built for %d partitions of %s, "
                  "which has %d: " REPARTITION_HINT,
                  p->id, dir, built_for, r->cfg->flushes_topic, r->partition_count);
        atomic_store(&r->fatal, true);
        return -1;
    }
    char *settings = state_store_settings(p->store);
    char differ[1024];
    if (settings &&
        processor_settings_diff(settings, r->settings, differ, sizeof(differ))) {
        LOG_ERROR("partition %d: the state in %s was built with other settings: %s; "
                  "" SETTINGS_HINT,
                  p->id, dir, differ);
        free(settings);
        atomic_store(&r->fatal, true);
        return -1;
    }
    bool recorded = settings != NULL;
    free(settings);
    if (built_for > 0 && recorded)
        return 0;
    char errstr[512];
    if (built_for <= 0)
        state_store_set_partition_count(p->store, r->partition_count);
    /* A store from before settings were recorded takes the current ones. */
    if (!recorded)
        state_store_set_settings(p->store, r->settings);
    if (state_store_commit(p->store, -1, errstr, sizeof(errstr))) {
        LOG_ERROR("partition %d: %s", p->id, errstr);
        return -1;
    }
    return 0;
}

/* The takeover failed for good (a store that cannot be read or written, a gap in the
 * changelog): the partition is not served until it is assigned again. */
static void takeover_failed(part_t *p, const char *why)
{
    pthread_mutex_lock(&p->lock);
    snprintf(p->why, sizeof(p->why), "%s", why);
    p->retry_at = 0;
    pthread_mutex_unlock(&p->lock);
    part_fail(p);
}

/* The takeover failed on a transient Kafka error (p->attempt_why): housekeeping
 * schedules it again after a delay, doubling up to TAKEOVER_RETRY_LAST_S; the worker
 * is free for other partitions meanwhile. */
static void takeover_again(part_t *p)
{
    double now = processor_monotonic_s();
    pthread_mutex_lock(&p->lock);
    if (p->failing_since <= 0)
        p->failing_since = now;
    p->retry_delay = p->retry_delay <= 0                          ? TAKEOVER_RETRY_FIRST_S
                     : p->retry_delay * 2 > TAKEOVER_RETRY_LAST_S ? TAKEOVER_RETRY_LAST_S
                                                                  : p->retry_delay * 2;
    p->retry_at = now + p->retry_delay;
    snprintf(p->why, sizeof(p->why), "%s", p->attempt_why);
    double delay = p->retry_delay, failing = now - p->failing_since;
    pthread_mutex_unlock(&p->lock);
    atomic_fetch_add(&p->r->takeover_retries, 1);
    LOG_WARN("partition %d: %s; taking it over again in %.0f s (failing for %.0f s)",
             p->id, p->attempt_why, delay, failing);
}

/* Applies the partition's share of --cache-mb to its store (between steps). */
static void apply_cache_share(part_t *p)
{
    size_t share = atomic_load(&p->r->cache_share);
    if (p->store && share && share != p->cache_bytes) {
        state_store_set_cache_bytes(p->store, share);
        p->cache_bytes = share;
    }
}

/* Opens the partition's store, produces what its outbox still holds, catches up
 * from the changes topic, and starts consuming where both the store and Kafka's
 * committed offset say everything before is done. A transient Kafka error makes it
 * try again later (takeover_again()); anything else fails the partition. */
static void prepare(part_t *p)
{
    runner_t *r = p->r;
    char errstr[512];
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/partition-%d", r->state_dir, p->id);
    if (!p->store) {
        size_t cache = atomic_load(&r->cache_share);
        state_store_conf_t sc =
            processor_store_conf(r->cfg, dir, cache, r->initial_document);
        sc.partition = p->id;
        p->store = state_store_open(&sc, errstr, sizeof(errstr));
        if (!p->store) {
            LOG_ERROR("partition %d: cannot open its store: %s", p->id, errstr);
            takeover_failed(p, "its store cannot be opened");
            return;
        }
        p->cache_bytes = cache;
        p->leftovers_produced = false;
        processor_handler_conf_t hc = {
            .store = p->store,
            .master = processor_master_conf(r->cfg),
            .history = r->cfg->history,
            .limits = r->limits,
            .max_document_bytes = r->cfg->max_document_bytes,
            .max_output_bytes = processor_max_output_bytes(r->cfg),
            .changes = true,
            .snapshot_every = r->cfg->snapshot_topic_every,
        };
        p->handler = processor_handler_new(&hc);
        p->stats_at = 0;
        p->cache_hits_counted = p->cache_misses_counted = 0;
    }
    apply_cache_share(p);
    if (check_layout(p, dir)) {
        takeover_failed(p, "its state was built for another layout or settings");
        return;
    }
    p->changes_stored = state_store_changes_offset(p->store);

    if (!p->leftovers_produced) { /* not again when a takeover is tried again */
        step_out_t leftovers = {0};
        void *args[2] = {p, &leftovers};
        if (state_store_outbox_scan(p->store, produce_leftover, args, errstr,
                                    sizeof(errstr))) {
            LOG_ERROR("partition %d: %s", p->id, errstr);
            takeover_failed(p, "its store cannot be read");
            return;
        }
        if (leftovers.len)
            LOG_INFO("partition %d: producing %zu records left in its outbox", p->id,
                     leftovers.len);
        produce_step(p, leftovers.items, leftovers.len, -1);
        free(leftovers.items);
        p->leftovers_produced = true;
    }

    int rc = catch_up(p);
    if (rc == TAKEOVER_AGAIN) {
        takeover_again(p);
        return;
    }
    if (rc) {
        takeover_failed(p, "its state cannot be rebuilt from the changes and snapshots "
                           "topics (see the log)");
        return;
    }

    /* Without the committed offset a new store would start at the topic's beginning
     * and answer every flush again: a failed query is tried again, never taken as "no
     * committed offset". */
    int64_t start = state_store_next_offset(p->store);
    rd_kafka_topic_partition_list_t *l =
        one_partition(r->cfg->flushes_topic, p->id, RD_KAFKA_OFFSET_INVALID);
    rd_kafka_resp_err_t err = rd_kafka_committed(r->consumer, l, KAFKA_TIMEOUT_MS);
    if (!err)
        err = l->elems[0].err;
    int64_t committed = err ? -1 : l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        snprintf(p->attempt_why, sizeof(p->attempt_why),
                 "cannot read the committed offset: %s", rd_kafka_err2str(err));
        takeover_again(p);
        return;
    }
    if (committed > start)
        start = committed;
    int64_t lo = 0, hi = 0;
    err = rd_kafka_query_watermark_offsets(r->consumer, r->cfg->flushes_topic, p->id, &lo,
                                           &hi, KAFKA_TIMEOUT_MS);
    if (err) {
        snprintf(p->attempt_why, sizeof(p->attempt_why),
                 "cannot read the offsets of %s: %s", r->cfg->flushes_topic,
                 rd_kafka_err2str(err));
        takeover_again(p);
        return;
    }
    if (start > hi) {
        LOG_ERROR(
            "partition %d: the state in %s is at offset %lld but %s ends at %lld: "
            "the topic was recreated or truncated; remove that directory to rebuild "
            "the partition from the changes topic",
            p->id, dir, (long long)start, r->cfg->flushes_topic, (long long)hi);
        takeover_failed(p, "its state is ahead of the flushes topic (see the log)");
        return;
    }
    if (start < lo) {
        if (start > 0)
            LOG_WARN("partition %d: records %lld..%lld of %s were deleted by retention "
                     "before being processed",
                     p->id, (long long)start, (long long)lo - 1, r->cfg->flushes_topic);
        start = lo;
    }

    pthread_mutex_lock(&p->lock);
    p->expected = start;
    p->committed = committed;
    if (start > p->committable && p->steps_len == 0)
        p->committable = start;
    p->ready = true;
    p->paused = false;
    p->retry_at = p->retry_delay = p->failing_since = 0;
    p->why[0] = '\0';
    pthread_mutex_unlock(&p->lock);

    l = one_partition(r->cfg->flushes_topic, p->id, start);
    rd_kafka_error_t *e = rd_kafka_seek_partitions(r->consumer, l, KAFKA_TIMEOUT_MS);
    if (e) {
        LOG_WARN("partition %d: seek to %lld: %s", p->id, (long long)start,
                 rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_resume_partitions(r->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    refresh_stats(p, true);
    /* The first pass soon, not a whole interval on: an instance restarted more often
     * than the interval must still sweep. */
    double interval_s = (double)r->cfg->snapshot_topic_interval_ms / 1e3;
    atomic_store(&p->sweep_at,
                 processor_monotonic_s() + (interval_s < 60 ? interval_s : 60));
    p->sweep_started_at = 0;
    p->sweep_published = 0;
    free(p->sweep_after);
    p->sweep_after = NULL;
    p->sweep_after_len = 0;
    LOG_INFO("partition %d: processing from offset %lld", p->id, (long long)start);
}

/* ---- workers ---- */

static void run_step(part_t *p)
{
    pthread_mutex_lock(&p->lock);
    p->scheduled = false;
    /* abort: being revoked (it may still be in the run queue); its store is the main
     * thread's now. */
    if (!p->assigned || p->failed || p->abort) {
        pthread_mutex_unlock(&p->lock);
        return;
    }
    p->running = true;
    bool ready = p->ready;
    size_t n = 0;
    rd_kafka_message_t *msgs[STEP_MAX_RECORDS];
    double consumed_at[STEP_MAX_RECORDS];
    if (ready && p->queue_len) { /* no queue yet is a step of outbox cleanup only */
        n = p->queue_len < STEP_MAX_RECORDS ? p->queue_len : STEP_MAX_RECORDS;
        for (size_t i = 0; i < n; i++) {
            msgs[i] = p->queue[i].m;
            consumed_at[i] = p->queue[i].consumed_at;
            p->queue_bytes -= msgs[i]->len;
        }
        memmove(p->queue, p->queue + n, (p->queue_len - n) * sizeof(*p->queue));
        p->queue_len -= n;
    }
    pthread_mutex_unlock(&p->lock);

    bool sweeping = false;
    if (!ready)
        prepare(p);
    else {
        apply_cache_share(p);
        size_t applied = process_step(p, msgs, consumed_at, n);
        pthread_mutex_lock(&p->lock);
        bool serving = !p->failed && !p->abort;
        if (serving && applied < n) { /* the rest, back to the front of the queue */
            size_t rest = n - applied;
            if (p->queue_len + rest > p->queue_cap) {
                p->queue_cap = p->queue_len + rest;
                p->queue = codec_xrealloc(p->queue, p->queue_cap * sizeof(*p->queue));
            }
            memmove(p->queue + rest, p->queue, p->queue_len * sizeof(*p->queue));
            for (size_t i = 0; i < rest; i++) {
                p->queue[i] = (queued_t){msgs[applied + i], consumed_at[applied + i]};
                p->queue_bytes += msgs[applied + i]->len;
            }
            p->queue_len += rest;
            n = applied; /* the requeued ones are the queue's now */
        }
        pthread_mutex_unlock(&p->lock);
        sweeping = serving && sweep_chunk(p);
        refresh_stats(p, false);
    }
    for (size_t i = 0; i < n; i++)
        rd_kafka_message_destroy(msgs[i]);

    pthread_mutex_lock(&p->lock);
    p->running = false;
    if ((p->queue_len || sweeping) && p->ready && !p->failed)
        schedule(p);
    if (p->paused && p->ready && !p->failed && p->queue_bytes < QUEUE_PAUSE_BYTES / 2) {
        p->paused = false;
        set_fetching(p, true);
    }
    pthread_cond_broadcast(&p->idle);
    pthread_mutex_unlock(&p->lock);
}

static void *worker_main(void *opaque)
{
    runner_t *r = opaque;
    for (;;) {
        pthread_mutex_lock(&r->runq_lock);
        while (!r->runq_head && !r->stopping)
            pthread_cond_wait(&r->runq_cond, &r->runq_lock);
        part_t *p = r->runq_head;
        if (!p) {
            pthread_mutex_unlock(&r->runq_lock);
            return NULL;
        }
        r->runq_head = p->next_ready;
        if (!r->runq_head)
            r->runq_tail = NULL;
        pthread_mutex_unlock(&r->runq_lock);
        run_step(p);
    }
}

/* ---- the main thread: dispatch, rebalances, commits ---- */

static void dispatch(runner_t *r, rd_kafka_message_t *m)
{
    part_t *p = part_find(r, m->partition);
    if (!p) {
        rd_kafka_message_destroy(m);
        return;
    }
    pthread_mutex_lock(&p->lock);
    /* Before the partition is ready nothing is accepted (it seeks to its start then);
     * after a seek, records before the expected offset may come again. */
    if (!p->assigned || !p->ready || p->failed || m->offset < p->expected) {
        pthread_mutex_unlock(&p->lock);
        rd_kafka_message_destroy(m);
        return;
    }
    p->expected = m->offset + 1;
    if (p->queue_len == p->queue_cap) {
        p->queue_cap = p->queue_cap ? p->queue_cap * 2 : 256;
        p->queue = codec_xrealloc(p->queue, p->queue_cap * sizeof(*p->queue));
    }
    p->queue[p->queue_len++] = (queued_t){m, processor_monotonic_s()};
    p->queue_bytes += m->len;
    schedule(p);
    if (!p->paused && p->queue_bytes > QUEUE_PAUSE_BYTES) {
        p->paused = true;
        set_fetching(p, false);
    }
    pthread_mutex_unlock(&p->lock);
}

/* Hands each partition's committable offset to librdkafka, which commits it on its
 * auto-commit timer and when the partition is revoked. Its timer knows when the group
 * is rebalancing; a commit of ours sent then would fail with an illegal generation,
 * and librdkafka 2.0 answers that by dropping the whole assignment. */
static void commit_offsets(runner_t *r, const rd_kafka_topic_partition_list_t *only)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    for (size_t i = 0; i < r->parts_cap; i++) {
        part_t *p = r->parts[i];
        if (!p)
            continue;
        if (only &&
            !rd_kafka_topic_partition_list_find(only, r->cfg->flushes_topic, p->id))
            continue;
        pthread_mutex_lock(&p->lock);
        if ((only || p->assigned) && p->committable > p->committed &&
            p->committable >= 0) {
            rd_kafka_topic_partition_list_add(l, r->cfg->flushes_topic, p->id)->offset =
                p->committable;
            p->committed = p->committable;
        }
        pthread_mutex_unlock(&p->lock);
    }
    if (l->cnt) {
        rd_kafka_resp_err_t err = rd_kafka_offsets_store(r->consumer, l);
        if (err && err != RD_KAFKA_RESP_ERR__STATE)
            LOG_WARN("storing offsets: %s", rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Every second: takeovers to try again, outbox cleanup for idle partitions, and offset
 * commits. */
static void housekeeping(runner_t *r)
{
    double now = processor_monotonic_s();
    for (size_t i = 0; i < r->parts_cap; i++) {
        part_t *p = r->parts[i];
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        if (p->assigned && !p->ready && !p->failed && !p->abort && p->retry_at > 0 &&
            now >= p->retry_at) {
            p->retry_at = 0;
            schedule(p);
        }
        if (p->assigned && p->ready && !p->failed &&
            (p->done_len || p->swept_len || p->changes_next > p->changes_stored ||
             (r->cfg->snapshot_topic_interval_ms && r->cfg->snapshot_topic_every &&
              processor_monotonic_s() >= atomic_load(&p->sweep_at))))
            schedule(p);
        pthread_mutex_unlock(&p->lock);
    }
    commit_offsets(r, NULL);
}

/* Divides --cache-mb among the assigned partitions: the stores together stay within
 * it, whatever the order of assignments. */
static void share_cache(runner_t *r)
{
    int n = atomic_load(&r->assigned_count);
    atomic_store(&r->cache_share,
                 ((size_t)r->cfg->cache_mb << 20) / (size_t)(n > 0 ? n : 1));
}

static void assign_partitions(runner_t *r, rd_kafka_topic_partition_list_t *parts)
{
    char errstr[512];
    int count = processor_topic_partitions(r->consumer, r->cfg->flushes_topic,
                                           KAFKA_TIMEOUT_MS, errstr, sizeof(errstr));
    if (count > 0 && count != r->partition_count) {
        LOG_ERROR("%s has %d partitions now, not %d: " REPARTITION_HINT "; stopping",
                  r->cfg->flushes_topic, count, r->partition_count);
        atomic_store(&r->fatal, true);
        return;
    }
    rd_kafka_error_t *e = rd_kafka_incremental_assign(r->consumer, parts);
    if (e) {
        LOG_ERROR("assigning partitions: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return;
    }
    /* Paused until caught up; prepare() seeks and resumes. */
    rd_kafka_pause_partitions(r->consumer, parts);
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = part_get(r, parts->elems[i].partition);
        pthread_mutex_lock(&p->lock);
        if (!p->assigned)
            atomic_fetch_add(&r->assigned_count, 1);
        p->assigned = true;
        p->ready = p->failed = p->abort = false;
        p->paused = true;
        p->generation++;
        p->steps_len = p->done_len = 0;
        p->committable = p->committed = p->changes_next = -1;
        p->retry_at = p->retry_delay = p->failing_since = 0;
        p->why[0] = '\0';
        part_drop_queue(p);
        pthread_mutex_unlock(&p->lock);
        LOG_INFO("partition %d assigned", p->id);
    }
    /* The new partitions are prepared with the new share; the others shrink to it at
     * their next step, which comes now. */
    share_cache(r);
    for (size_t i = 0; i < r->parts_cap; i++) {
        part_t *p = r->parts[i];
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        if (p->assigned && !p->failed && (p->ready || p->retry_at <= 0))
            schedule(p); /* a takeover being retried waits for its time */
        pthread_mutex_unlock(&p->lock);
    }
}

static void revoke_partitions(runner_t *r, rd_kafka_topic_partition_list_t *parts,
                              bool lost)
{
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = part_find(r, parts->elems[i].partition);
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        p->abort = true;
        part_drop_queue(p);
        while (p->running)
            pthread_cond_wait(&p->idle, &p->lock);
        p->ready = false;
        pthread_mutex_unlock(&p->lock);
    }
    /* The partitions' outputs are delivered before they go; not those of the
     * partitions that stay (a slow partition elsewhere must not hold up a rebalance). */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += FLUSH_TIMEOUT_MS / 1000;
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = part_find(r, parts->elems[i].partition);
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        int err = 0;
        while (p->steps_len && err != ETIMEDOUT)
            err = pthread_cond_timedwait(&p->idle, &p->lock, &until);
        if (p->steps_len)
            LOG_WARN("partition %d: some records were not delivered within %d ms; they "
                     "stay in the outbox and are produced again when the partition "
                     "comes back",
                     p->id, FLUSH_TIMEOUT_MS);
        pthread_mutex_unlock(&p->lock);
    }
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = part_find(r, parts->elems[i].partition);
        if (!p)
            continue;
        if (p->store && !p->failed) {
            char errstr[512];
            take_done(p);
            if (state_store_commit(p->store, -1, errstr, sizeof(errstr)))
                LOG_WARN("partition %d: %s", p->id, errstr);
        }
        processor_handler_destroy(p->handler);
        p->handler = NULL;
        state_store_close(p->store);
        p->store = NULL;
    }
    if (!lost)
        commit_offsets(r, parts);
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = part_find(r, parts->elems[i].partition);
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        if (p->assigned)
            atomic_fetch_sub(&r->assigned_count, 1);
        p->assigned = false;
        p->generation++;
        pthread_mutex_unlock(&p->lock);
        LOG_INFO("partition %d %s", p->id, lost ? "lost" : "revoked");
    }
    share_cache(r); /* the others may grow into what these held, at their next step */
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(r->consumer, parts);
    if (e) {
        LOG_WARN("unassigning partitions: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    runner_t *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        r->joined = true;
        assign_partitions(r, parts);
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        revoke_partitions(r, parts, rd_kafka_assignment_lost(rk));
    else
        LOG_ERROR("rebalance: %s", rd_kafka_err2str(err));
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    processor_log(level <= 3   ? PROCESSOR_LOG_ERROR
                  : level <= 4 ? PROCESSOR_LOG_WARN
                  : level <= 6 ? PROCESSOR_LOG_INFO
                               : PROCESSOR_LOG_DEBUG,
                  "kafka %s: %s", fac, buf);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    runner_t *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[512];
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        LOG_ERROR("kafka fatal error: %s", fatal);
        atomic_store(&r->fatal, true);
        return;
    }
    /* Transport errors are retried by librdkafka; they are worth a line, no more. */
    LOG_WARN("kafka: %s", reason);
}

/* Checks that the topics exist and that changes are co-partitioned with flushes. */
static int check_topics(runner_t *r, char *errstr, size_t errstr_size)
{
    const processor_config_t *c = r->cfg;
    const char *topics[] = {c->flushes_topic, c->changes_topic, c->replies_topic,
                            c->dlq_topic, c->snapshots_topic};
    int counts[5];
    int n = c->snapshot_topic_every ? 5 : 4;
    for (int i = 0; i < n; i++) {
        counts[i] = processor_topic_partitions(r->producer, topics[i], KAFKA_TIMEOUT_MS,
                                               errstr, errstr_size);
        if (counts[i] < 0)
            return -1;
    }
    if (counts[0] != counts[1]) {
        snprintf(errstr, errstr_size,
                 "topic %s has %d partitions but %s has %d: changes must be "
                 "co-partitioned with flushes",
                 c->changes_topic, counts[1], c->flushes_topic, counts[0]);
        return -1;
    }
    if (n == 5 && counts[4] != counts[0]) {
        snprintf(errstr, errstr_size,
                 "topic %s has %d partitions but %s has %d: snapshots must be "
                 "co-partitioned with flushes",
                 c->snapshots_topic, counts[4], c->flushes_topic, counts[0]);
        return -1;
    }
    r->partition_count = counts[0];
    return 0;
}

/* Checks every partition store already in the state directory against the flushes
 * topic's partition count before joining the group, so that a processor pointed at
 * repartitioned topics stops at once instead of at its first assignment.
 * @returns 0, or -1 and errstr. */
static int check_state_layout(runner_t *r, char *errstr, size_t errstr_size)
{
    DIR *d = opendir(r->state_dir);
    if (!d)
        return 0; /* created later; nothing in it yet */
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        int partition;
        char rest;
        if (sscanf(e->d_name, "partition-%d%c", &partition, &rest) != 1 || partition < 0)
            continue;
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/%s", r->state_dir, e->d_name);
        state_store_conf_t sc = processor_store_conf(r->cfg, dir, 8u << 20, NULL);
        sc.partition = partition;
        char why[512];
        state_store_t *store = state_store_open(&sc, why, sizeof(why));
        if (!store) { /* refused with the partition, if it is ever assigned here */
            LOG_WARN("partition %d: cannot open its store: %s", partition, why);
            continue;
        }
        int32_t built_for = state_store_partition_count(store);
        char *settings = state_store_settings(store);
        state_store_close(store);
        char differ[1024];
        if (built_for > 0 && built_for != r->partition_count) {
            snprintf(
                errstr, errstr_size,
                "the state in %.200s was built for %d partitions of %s, which has %d: "
                "" REPARTITION_HINT,
                dir, built_for, r->cfg->flushes_topic, r->partition_count);
            rc = -1;
        } else if (settings && processor_settings_diff(settings, r->settings, differ,
                                                       sizeof(differ))) {
            snprintf(
                errstr, errstr_size,
                "the state in %.200s was built with other settings: %s; " SETTINGS_HINT,
                dir, differ);
            rc = -1;
        }
        free(settings);
    }
    closedir(d);
    return rc;
}

/* The producer or the group consumer, with the runner's callbacks. */
static rd_kafka_t *new_client(runner_t *r, processor_kafka_role_t role, char *errstr,
                              size_t errstr_size)
{
    rd_kafka_conf_t *conf =
        processor_kafka_conf(r->cfg, r->bootstrap, role, errstr, errstr_size);
    if (!conf)
        return NULL;
    bool producer = role == PROCESSOR_KAFKA_PRODUCER;
    if (producer)
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    else
        rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, r);
    char why[256];
    rd_kafka_t *rk = rd_kafka_new(producer ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER, conf,
                                  why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errstr_size, "creating the %s: %s",
                 producer ? "producer" : "consumer", why);
    }
    return rk;
}

/* The stats line: totals, and the time from a record consumed to its outputs handed to
 * the producer (the processor's own share of a round trip). rate < 0: the final line. */
static void log_stats(runner_t *r, double rate)
{
    char rate_str[32] = "";
    if (rate >= 0)
        snprintf(rate_str, sizeof(rate_str), " (%.0f/s)", rate);
    const processor_histogram_t *h = &r->record_latency;
    LOG_INFO("%s%llu records%s, %llu errors, %llu dead letters, %d partitions; consumed "
             "to produced: p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms",
             rate < 0 ? "total: " : "", (unsigned long long)atomic_load(&r->records),
             rate_str, (unsigned long long)atomic_load(&r->errors),
             (unsigned long long)atomic_load(&r->dead_letters),
             atomic_load(&r->assigned_count),
             (double)processor_histogram_quantile(h, 0.5) / 1e3,
             (double)processor_histogram_quantile(h, 0.99) / 1e3,
             (double)processor_histogram_quantile(h, 0.999) / 1e3,
             (double)atomic_load(&h->max_us) / 1e3);
}

/* ---- HTTP: /metrics, /healthz, /readyz (on the server's thread) ---- */

#define LOOP_STALLED_S 90 /* longer than any wait of the main loop (a revoke: 30 s) */

static void metric_header(FILE *fp, const char *name, const char *type, const char *help)
{
    fprintf(fp, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric_value(FILE *fp, const char *name, const char *type, const char *help,
                         uint64_t value)
{
    metric_header(fp, name, type, help);
    fprintf(fp, "%s %llu\n", name, (unsigned long long)value);
}

static void metric_by_code(FILE *fp, const char *name, const char *help,
                           atomic_uint_fast64_t *by_code)
{
    metric_header(fp, name, "counter", help);
    for (int c = 1; c < CODEC_ERR__COUNT; c++) {
        uint64_t v = atomic_load(&by_code[c]);
        if (v)
            fprintf(fp, "%s{code=\"%s\"} %llu\n", name, codec_err_name((codec_err_t)c),
                    (unsigned long long)v);
    }
}

/* An assigned partition as /metrics and /readyz see it. */
typedef struct part_view_s {
    int32_t id;
    bool ready, failed;
    double failing_for; /* > 0: its takeover has failed on transient errors this long */
    char why[192];      /* why it failed (for good, or the last transient error) */
    int64_t lag;        /* -1: unknown */
    int64_t catch_up_remaining;
    uint64_t outbox_records;
    state_store_stats_t stats;
} part_view_t;

/* The assigned partitions now, each read under its lock. @returns the count. */
static size_t view_parts(runner_t *r, part_view_t **out)
{
    pthread_mutex_lock(&r->parts_lock);
    part_view_t *views = codec_xcalloc(r->parts_cap ? r->parts_cap : 1, sizeof(*views));
    size_t n = 0;
    for (size_t i = 0; i < r->parts_cap; i++) {
        part_t *p = r->parts[i];
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        if (p->assigned) {
            part_view_t *v = &views[n++];
            v->id = p->id;
            v->ready = p->ready;
            v->failed = p->failed;
            if (!p->ready && !p->failed && p->failing_since > 0)
                v->failing_for = processor_monotonic_s() - p->failing_since;
            snprintf(v->why, sizeof(v->why), "%s", p->why[0] ? p->why : "see the log");
            v->stats = p->stats;
            v->catch_up_remaining = atomic_load(&p->catch_up_remaining);
            for (size_t k = 0; k < p->steps_len; k++)
                v->outbox_records += p->steps[k].pending;
            /* Lag: records of the partition not yet applied with outputs delivered. */
            int64_t done = p->committable >= 0 ? p->committable : p->expected;
            int64_t lo = -1, hi = -1;
            v->lag = -1;
            if (p->ready && done >= 0 &&
                !rd_kafka_get_watermark_offsets(r->consumer, r->cfg->flushes_topic, p->id,
                                                &lo, &hi) &&
                hi >= 0)
                v->lag = hi > done ? hi - done : 0;
        }
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&r->parts_lock);
    *out = views;
    return n;
}

/* A gauge with one sample per partition: field is read from each view. */
#define PART_GAUGE(fp, views, n, name, help, expr)                                      \
    do {                                                                                \
        metric_header(fp, name, "gauge", help);                                         \
        for (size_t i_ = 0; i_ < (n); i_++) {                                           \
            const part_view_t *v = &(views)[i_];                                        \
            fprintf(fp, "%s{partition=\"%d\"} %lld\n", name, v->id, (long long)(expr)); \
        }                                                                               \
    } while (0)

static void render_metrics(runner_t *r, FILE *fp)
{
    metric_value(fp, "flushout_records_total", "counter",
                 "Records of the flushes topic processed.", atomic_load(&r->records));
    metric_value(fp, "flushout_flushes_applied_total", "counter",
                 "Flushes applied (each has a change record).",
                 atomic_load(&r->flushes_applied));
    metric_value(fp, "flushout_commands_applied_total", "counter",
                 "Commands applied (the models' command counts grew by this much).",
                 atomic_load(&r->commands_applied));
    metric_by_code(fp, "flushout_errors_total",
                   "Records answered with an error, by error code (codec/PROTOCOL.md).",
                   r->errors_by_code);
    metric_by_code(fp, "flushout_dead_letters_total",
                   "Records written to the dead-letter topic, by error code.",
                   r->dead_letters_by_code);
    processor_histogram_write_prometheus(
        fp, "flushout_step_duration_seconds",
        "One processing step of a partition: apply its records, commit the store, hand "
        "the outputs to the producer.",
        &r->step_duration);
    processor_histogram_write_prometheus(
        fp, "flushout_record_latency_seconds",
        "From a record consumed to its outputs handed to the producer.",
        &r->record_latency);
    metric_value(
        fp, "flushout_delivery_failures_total", "counter",
        "Replies, change records and dead letters that Kafka refused; each stops "
        "its partition (the outbox keeps the record).",
        atomic_load(&r->delivery_failures));
    metric_value(fp, "flushout_snapshot_records_total", "counter",
                 "Snapshot records published (every --snapshot-topic-every commands, and "
                 "by the sweep).",
                 atomic_load(&r->snapshot_records));
    metric_value(fp, "flushout_cache_hits_total", "counter",
                 "Model lookups served by the cache of decoded models.",
                 atomic_load(&r->cache_hits));
    metric_value(fp, "flushout_cache_misses_total", "counter",
                 "Model lookups that loaded the model from RocksDB (or created it).",
                 atomic_load(&r->cache_misses));

    part_view_t *views;
    size_t n = view_parts(r, &views);
    uint64_t cache_bytes = 0, cache_models = 0;
    for (size_t i = 0; i < n; i++) {
        cache_bytes += views[i].stats.cache_bytes;
        cache_models += views[i].stats.cache_models;
    }
    metric_value(fp, "flushout_assigned_partitions", "gauge",
                 "Partitions of the flushes topic assigned to this instance.", n);
    uint64_t failed = 0, retrying = 0;
    for (size_t i = 0; i < n; i++) {
        failed += views[i].failed;
        retrying += views[i].failing_for > 0;
    }
    metric_value(fp, "flushout_partitions_failed", "gauge",
                 "Assigned partitions not served for good until assigned again (a store "
                 "that cannot be read or written, a gap in the changelog; see the log).",
                 failed);
    metric_value(fp, "flushout_partitions_retrying", "gauge",
                 "Assigned partitions whose takeover failed on a transient Kafka error "
                 "and is tried again (/healthz fails after --takeover-timeout-ms).",
                 retrying);
    metric_value(fp, "flushout_takeover_retries_total", "counter",
                 "Takeovers of a partition that failed on a transient Kafka error and "
                 "were tried again.",
                 atomic_load(&r->takeover_retries));
    metric_value(fp, "flushout_cache_bytes", "gauge",
                 "Bytes of decoded models in the cache (see --cache-mb).", cache_bytes);
    metric_value(fp, "flushout_cache_models", "gauge", "Models in the cache.",
                 cache_models);
    PART_GAUGE(fp, views, n, "flushout_partition_ready",
               "1 once the partition has caught up and is processed.",
               v->ready && !v->failed);
    PART_GAUGE(fp, views, n, "flushout_consumer_lag",
               "Records of the partition not yet processed and delivered (-1: unknown).",
               v->lag);
    PART_GAUGE(fp, views, n, "flushout_catch_up_remaining",
               "Records left to read while catching up or restoring the partition.",
               v->catch_up_remaining);
    PART_GAUGE(fp, views, n, "flushout_outbox_records",
               "Records produced and not yet confirmed by Kafka.", v->outbox_records);
    PART_GAUGE(fp, views, n, "flushout_rocksdb_sst_bytes",
               "rocksdb.total-sst-files-size of the partition's store.",
               v->stats.sst_bytes);
    PART_GAUGE(fp, views, n, "flushout_rocksdb_memtable_bytes",
               "rocksdb.cur-size-all-mem-tables.", v->stats.memtable_bytes);
    PART_GAUGE(fp, views, n, "flushout_rocksdb_pending_compaction_bytes",
               "rocksdb.estimate-pending-compaction-bytes: compaction debt.",
               v->stats.pending_compaction_bytes);
    PART_GAUGE(fp, views, n, "flushout_rocksdb_running_compactions",
               "rocksdb.num-running-compactions.", v->stats.running_compactions);
    PART_GAUGE(fp, views, n, "flushout_rocksdb_write_stopped",
               "rocksdb.is-write-stopped: 1 while writes wait for compactions.",
               v->stats.write_stopped);
    PART_GAUGE(fp, views, n, "flushout_rocksdb_estimated_keys",
               "rocksdb.estimate-num-keys.", v->stats.estimated_keys);
    free(views);
}

static int render(void *ctx, const char *path, FILE *fp)
{
    runner_t *r = ctx;
    if (!strcmp(path, "/metrics")) {
        render_metrics(r, fp);
        return 200;
    }
    if (!strcmp(path, "/healthz")) {
        double stalled = processor_monotonic_s() - atomic_load(&r->loop_at);
        if (atomic_load(&r->fatal)) {
            fprintf(fp, "failed: a fatal error stops the processor (see its log)\n");
            return 503;
        }
        /* A main loop waiting (in a revoke) for a step that waits for Kafka to take its
         * records is not stuck: restarting would not bring Kafka back. */
        if (stalled > LOOP_STALLED_S && !processor_produce_waiting()) {
            fprintf(fp, "stalled: the main loop has not turned for %.0f s\n", stalled);
            return 503;
        }
        /* A partition that transient errors kept from being taken over for that long
         * needs a fresh start (connections, metadata), or another instance. */
        part_view_t *views;
        size_t n = view_parts(r, &views), stuck = 0;
        double limit = (double)r->cfg->takeover_timeout_ms / 1e3;
        for (size_t i = 0; i < n; i++) {
            if (views[i].failing_for <= limit || limit <= 0)
                continue;
            fprintf(fp, "%spartition %d cannot be taken over for %.0f s: %s",
                    stuck++ ? "; " : "failed: ", views[i].id, views[i].failing_for,
                    views[i].why);
        }
        free(views);
        if (stuck) {
            fprintf(fp, "\n");
            return 503;
        }
        if (stalled > LOOP_STALLED_S) {
            fprintf(fp, "ok: waiting for Kafka to take records (%.0f s)\n", stalled);
            return 200;
        }
        fprintf(fp, "ok\n");
        return 200;
    }
    if (!strcmp(path, "/readyz")) {
        if (!atomic_load(&r->joined) || atomic_load(&r->fatal)) {
            fprintf(fp, "not ready: %s\n",
                    atomic_load(&r->fatal) ? "failed" : "not in the group yet");
            return 503;
        }
        part_view_t *views;
        size_t n = view_parts(r, &views), waiting = 0;
        for (size_t i = 0; i < n; i++) {
            if (views[i].ready && !views[i].failed)
                continue;
            if (views[i].failed)
                fprintf(fp, "%spartition %d failed: %s",
                        waiting++ ? ", " : "not ready: ", views[i].id, views[i].why);
            else if (views[i].failing_for > 0)
                fprintf(fp, "%spartition %d being taken over again (%s)",
                        waiting++ ? ", " : "not ready: ", views[i].id, views[i].why);
            else
                fprintf(fp, "%spartition %d catching up",
                        waiting++ ? ", " : "not ready: ", views[i].id);
        }
        free(views);
        if (waiting) {
            fprintf(fp, "\n");
            return 503;
        }
        fprintf(fp, "ready: %zu partitions caught up\n", n);
        return 200;
    }
    return 404;
}

int processor_run(const processor_config_t *cfg, const char *bootstrap_servers,
                  const char *state_dir, volatile sig_atomic_t *stop)
{
    runner_t *r = codec_xcalloc(1, sizeof(*r));
    r->cfg = cfg;
    r->state_dir = state_dir;
    r->bootstrap = bootstrap_servers;
    r->stop = stop;
    r->limits = processor_limits(cfg);
    failpoint_init();
    pthread_mutex_init(&r->runq_lock, NULL);
    pthread_cond_init(&r->runq_cond, NULL);
    pthread_mutex_init(&r->parts_lock, NULL);
    pthread_mutex_init(&r->reply_topics_lock, NULL);
    atomic_store(&r->loop_at, processor_monotonic_s());
    int rc = 1;
    char errstr[2048]; /* a settings mismatch names every differing setting */

    if (processor_check_output_limits(cfg, errstr, sizeof(errstr)) ||
        processor_make_dirs(state_dir, errstr, sizeof(errstr))) {
        LOG_ERROR("%s", errstr);
        goto out;
    }
    if (cfg->initial_document &&
        !(r->initial_document = processor_read_document(cfg->initial_document, &r->limits,
                                                        errstr, sizeof(errstr)))) {
        LOG_ERROR("%s", errstr);
        goto out;
    }

    r->settings = processor_settings(cfg, r->initial_document);
    processor_settings_id(r->settings, r->settings_id);
    share_cache(r);
    if (!(r->producer =
              new_client(r, PROCESSOR_KAFKA_PRODUCER, errstr, sizeof(errstr))) ||
        check_topics(r, errstr, sizeof(errstr)) ||
        check_state_layout(r, errstr, sizeof(errstr)) ||
        !(r->consumer =
              new_client(r, PROCESSOR_KAFKA_CONSUMER, errstr, sizeof(errstr)))) {
        LOG_ERROR("%s", errstr);
        goto out;
    }
    rd_kafka_poll_set_consumer(r->consumer);
    if (cfg->http_port) {
        if (!(r->http = processor_http_start(cfg->http_address, (uint16_t)cfg->http_port,
                                             render, r, errstr, sizeof(errstr)))) {
            LOG_ERROR("%s", errstr);
            goto out;
        }
        LOG_INFO("serving /metrics, /healthz and /readyz on %s port %llu",
                 cfg->http_address ? cfg->http_address : "every interface",
                 (unsigned long long)cfg->http_port);
    }
    char max_bytes[32];
    size_t max_bytes_len = sizeof(max_bytes);
    r->max_message_bytes = 1000000; /* librdkafka's default */
    if (rd_kafka_conf_get(rd_kafka_conf(r->producer), "message.max.bytes", max_bytes,
                          &max_bytes_len) == RD_KAFKA_CONF_OK)
        r->max_message_bytes = (size_t)strtoull(max_bytes, NULL, 10);
    atomic_store(&r->snapshot_too_large_logged, -60);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    r->worker_count =
        cfg->threads ? (size_t)cfg->threads : (size_t)(cores > 0 ? cores : 1);
    r->workers = codec_xcalloc(r->worker_count, sizeof(*r->workers));
    for (size_t i = 0; i < r->worker_count; i++)
        pthread_create(&r->workers[i], NULL, worker_main, r);
    pthread_create(&r->producer_thread, NULL, producer_main, r);

    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, cfg->flushes_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(r->consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        LOG_ERROR("subscribing to %s: %s", cfg->flushes_topic, rd_kafka_err2str(err));
    } else {
        LOG_INFO(
            "processing %s (%d partitions) in group %s with %zu threads; state in %s",
            cfg->flushes_topic, r->partition_count, cfg->group_id, r->worker_count,
            state_dir);
        LOG_DEBUG("limits: record %llu bytes, document %llu bytes, %u completions, depth "
                  "%u, path %u, string %u bytes",
                  (unsigned long long)cfg->max_record_bytes,
                  (unsigned long long)cfg->max_document_bytes, r->limits.max_completions,
                  r->limits.max_depth, r->limits.max_path_length,
                  r->limits.max_string_bytes);
        double last = processor_monotonic_s(), last_stats = last;
        uint64_t last_records = 0;
        while (!*stop && !atomic_load(&r->fatal)) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 100);
            if (m && m->err) {
                LOG_WARN("consumer: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
            } else if (m) {
                dispatch(r, m);
            }
            double t = processor_monotonic_s();
            atomic_store(&r->loop_at, t);
            if (t - last >= COMMIT_INTERVAL_S) {
                housekeeping(r);
                last = t;
            }
            if (t - last_stats >= 30) {
                uint64_t n = atomic_load(&r->records);
                log_stats(r, (double)(n - last_records) / (t - last_stats));
                last_records = n;
                last_stats = t;
            }
        }
        rc = atomic_load(&r->fatal) ? 1 : 0;
        LOG_INFO("stopping: finishing the steps in flight, delivering, committing");
    }
    /* librdkafka 2.0 aborts when a cooperative-sticky consumer is closed before its
     * first assignment (librdkafka issue #4312, fixed in 2.3): wait a while for it. */
    for (double until = processor_monotonic_s() + 15; !err && !r->joined &&
                                                      !atomic_load(&r->fatal) &&
                                                      processor_monotonic_s() < until;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 100);
        if (m)
            rd_kafka_message_destroy(m); /* nothing is assigned: nothing to process */
    }
    if (r->joined || err) {
        /* Closing revokes every partition: steps finish, the outbox is delivered,
         * offsets are committed, and the group is left. */
        rd_kafka_consumer_close(r->consumer);
    } else {
        LOG_WARN("leaving without closing the consumer: the group never answered its "
                 "join, and librdkafka %s cannot close it before (issue #4312); the "
                 "group forgets this member after session.timeout.ms",
                 rd_kafka_version_str());
        r->consumer_leaked = true;
    }

out:
    processor_http_stop(r->http); /* it reads the parts and the consumer */
    if (r->workers) {
        pthread_mutex_lock(&r->runq_lock);
        r->stopping = true;
        pthread_cond_broadcast(&r->runq_cond);
        pthread_mutex_unlock(&r->runq_lock);
        for (size_t i = 0; i < r->worker_count; i++)
            pthread_join(r->workers[i], NULL);
        atomic_store(&r->producer_stop, true);
        pthread_join(r->producer_thread, NULL);
    }
    if (r->consumer)
        log_stats(r, -1);
    if (r->producer) {
        rd_kafka_flush(r->producer, FLUSH_TIMEOUT_MS);
        rd_kafka_destroy(r->producer);
    }
    if (r->consumer && !r->consumer_leaked)
        rd_kafka_destroy(r->consumer);
    for (size_t i = 0; i < r->parts_cap; i++) {
        part_t *p = r->parts[i];
        if (!p)
            continue;
        part_drop_queue(p);
        processor_handler_destroy(p->handler);
        state_store_close(p->store);
        free(p->queue);
        free(p->steps);
        free(p->done);
        for (size_t k = 0; k < p->swept_len; k++)
            free(p->swept[k]);
        free(p->swept);
        free(p->sweep_after);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->idle);
        free(p);
    }
    free(r->parts);
    free(r->workers);
    codec_value_destroy(r->initial_document);
    free(r->settings);
    pthread_mutex_destroy(&r->runq_lock);
    pthread_cond_destroy(&r->runq_cond);
    pthread_mutex_destroy(&r->parts_lock);
    pthread_mutex_destroy(&r->reply_topics_lock);
    free(r);
    if (!rc)
        LOG_INFO("stopped");
    return rc;
}

static volatile sig_atomic_t *signal_flag;

static void on_signal(int sig)
{
    (void)sig;
    *signal_flag = 1;
}

void processor_catch_signals(volatile sig_atomic_t *flag)
{
    signal_flag = flag;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int processor_cmd_run(const processor_config_t *cfg)
{
    static volatile sig_atomic_t stop;
    processor_catch_signals(&stop);
    return processor_run(cfg, cfg->bootstrap_servers, cfg->state_dir, &stop);
}
