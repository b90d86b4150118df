/* processor/run_worker.c - the run queue and the workers: a partition's records, one
 * step at a time.
 *
 * The main thread appends each record to its partition's queue (run_dispatch()) and
 * queues the partition for a worker (run_schedule()); a worker takes the partition,
 * applies up to STEP_MAX_RECORDS of its records in one step, commits the store and
 * hands the outputs to the producer. A partition is in at most one worker at a time,
 * so its store needs no locks; different partitions run in parallel. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "codec/alloc.h"
#include "interceptor.h"
#include "log.h"
#include "run_int.h"

#define STEP_MAX_RECORDS  500        /* records applied in one step (one store write) */
#define QUEUE_PAUSE_BYTES (16 << 20) /* stop fetching a partition beyond this backlog */
/* A step also ends once its outputs pass this many bytes: they are one outbox value
 * in RocksDB (at most 4 GiB), held in memory until delivered, and a record's outputs
 * can be several times its size (a full sync of a large document answers a tiny
 * flush). The step's last record adds at most 3 * message.max.bytes (1e9 at most). */
#define STEP_MAX_OUTPUT_BYTES (64u << 20)

rd_kafka_topic_partition_list_t *run_one_partition(const char *topic, int32_t partition,
                                                   int64_t offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = offset;
    return l;
}

void run_schedule(part_t *p)
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

part_t *run_part_get(runner_t *r, int32_t id)
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

part_t *run_part_find(const runner_t *r, int32_t id)
{
    return id >= 0 && (size_t)id < r->parts_cap ? r->parts[id] : NULL;
}

void run_part_drop_queue(part_t *p)
{
    for (size_t i = 0; i < p->queue_len; i++)
        rd_kafka_message_destroy(p->queue[i].m);
    p->queue_len = 0;
    p->queue_bytes = 0;
}

/* Pauses or resumes fetching the partition's records. */
static void set_fetching(part_t *p, bool on)
{
    rd_kafka_topic_partition_list_t *l =
        run_one_partition(p->r->cfg->flushes_topic, p->id, RD_KAFKA_OFFSET_INVALID);
    if (on)
        rd_kafka_resume_partitions(p->r->consumer, l);
    else
        rd_kafka_pause_partitions(p->r->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
}

void run_part_fail(part_t *p)
{
    pthread_mutex_lock(&p->lock);
    p->failed = true;
    run_part_drop_queue(p);
    pthread_mutex_unlock(&p->lock);
    set_fetching(p, false);
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
    size_t max_bytes = failpoint_step_output_bytes(STEP_MAX_OUTPUT_BYTES);
    size_t applied = 0;
    while (applied < n && ok && so.bytes < max_bytes) {
        ok = run_process_record(p, msgs[applied], &out, &so);
        if (ok)
            next_offset = msgs[applied]->offset + 1;
        applied++;
    }
    n = applied;
    processor_output_destroy(&out);
    run_take_done(p);
    char errstr[512];
    if (ok && processor_handler_commit(p->handler, next_offset, errstr, sizeof(errstr))) {
        LOG_ERROR(
            "partition %d: the state store failed: %s; the partition stops (nothing "
            "of this step is answered or committed)",
            p->id, errstr);
        atomic_fetch_add(&p->r->errors_by_code[CODEC_ERR_STORE_FAILED], 1);
        ok = false;
    }
    uint64_t step_id = 0;
    state_outbox_bytes_t *step_bytes =
        ok ? state_store_outbox_take_step(p->store, &step_id) : NULL;
    if (ok && run_delivery_attach(so.items, so.len, step_bytes, step_id)) {
        /* Not the step its records went to: a bug, but what was committed is in the
         * outbox, and the partition's next assignment produces it from there. */
        LOG_ERROR("partition %d: the step's outbox records are not where they were "
                  "added; the partition stops (they stay in the outbox)",
                  p->id);
        ok = false;
    }
    if (!ok) {
        for (size_t i = 0; i < so.len; i++)
            run_delivery_free(so.items[i]);
        run_part_fail(p);
    } else {
        failpoint(FAILPOINT_AFTER_COMMIT);
        run_produce_step(p, so.items, so.len, next_offset);
        run_snapshots_produce(p, &so);
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

void run_checkpoint(part_t *p, bool now)
{
    const char *dir = p->r->cfg->checkpoint_dir;
    if (!dir || !p->store || p->failed)
        return;
    char errstr[512], path[PATH_MAX];
    if (now && state_store_flush_point(p->store, errstr, sizeof(errstr))) {
        LOG_WARN("partition %d: no checkpoint: %s", p->id, errstr);
        atomic_fetch_add(&p->r->checkpoint_failures, 1);
        return;
    }
    double started_at = processor_monotonic_s();
    uint64_t was = p->checkpointed;
    int rc = processor_checkpoint_take(p->store, dir, p->id, &p->checkpointed, path,
                                       sizeof(path), errstr, sizeof(errstr));
    if (rc < 0) {
        LOG_WARN("partition %d: no checkpoint: %s; the last one stays, and the next "
                 "flush point tries again",
                 p->id, errstr);
        p->checkpointed = state_store_flush_points(p->store);
        atomic_fetch_add(&p->r->checkpoint_failures, 1);
    } else if (p->checkpointed != was) {
        double made_at = processor_monotonic_s();
        LOG_DEBUG("partition %d: checkpoint %s in %.3f s", p->id, path,
                  made_at - started_at);
        atomic_store(&p->checkpoint_at, made_at);
        atomic_fetch_add(&p->r->checkpoints, 1);
    }
}

/* ---- workers ---- */

/* One turn of a worker on p: takes it over when it is not ready yet, else one step of
 * its queue (what did not fit goes back to the front), a chunk of the sweep when one
 * is due; then p is queued again if it has more to do. */
static void worker_step(part_t *p)
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
        run_prepare(p);
    else {
        run_cache_share_apply(p);
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
        sweeping = serving && run_sweep_chunk(p);
        if (serving)
            run_checkpoint(p, false);
        run_stats_refresh(p, false);
    }
    for (size_t i = 0; i < n; i++)
        rd_kafka_message_destroy(msgs[i]);

    pthread_mutex_lock(&p->lock);
    p->running = false;
    if ((p->queue_len || sweeping) && p->ready && !p->failed)
        run_schedule(p);
    if (p->paused && p->ready && !p->failed && p->queue_bytes < QUEUE_PAUSE_BYTES / 2) {
        p->paused = false;
        set_fetching(p, true);
    }
    pthread_cond_broadcast(&p->idle);
    pthread_mutex_unlock(&p->lock);
}

void *run_worker_main(void *opaque)
{
    runner_t *r = opaque;
    state_store_thread_start();
    /* The worker's Lua state, made now rather than by its first command. */
    if (r->cfg->interceptor_loaded)
        processor_interceptor_thread_start(r->cfg->interceptor_loaded);
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
        worker_step(p);
    }
}

/* ---- the main thread's side ---- */

void run_dispatch(runner_t *r, rd_kafka_message_t *m, double consumed_at)
{
    part_t *p = run_part_find(r, m->partition);
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
    p->queue[p->queue_len++] = (queued_t){m, consumed_at};
    p->queue_bytes += m->len;
    run_schedule(p);
    if (!p->paused && p->queue_bytes > QUEUE_PAUSE_BYTES) {
        p->paused = true;
        set_fetching(p, false);
    }
    pthread_mutex_unlock(&p->lock);
}
