/* processor/run_handoff.c - the main thread's side of a handoff: partitions assigned
 * and revoked by the group, offsets to commit, the cache shared among the partitions.
 *
 * An assigned partition is paused and scheduled; its worker takes it over
 * (run_takeover.c) and resumes it. A revoked one finishes its step in flight, delivers
 * its outputs, commits its outbox deletions and offsets, and closes its store before it
 * goes. */
#include <errno.h>
#include <time.h>

#include "log.h"
#include "run_int.h"

/* Hands each partition's committable offset to librdkafka, which commits it on its
 * auto-commit timer and when the partition is revoked. Its timer knows when the group
 * is rebalancing; a commit of ours sent then would fail with an illegal generation,
 * and librdkafka 2.0 answers that by dropping the whole assignment. */
void run_offsets_commit(runner_t *r, const rd_kafka_topic_partition_list_t *only)
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

/* Divides --cache-mb among the assigned partitions: the stores together stay within
 * it, whatever the order of assignments. */
void run_cache_share(runner_t *r)
{
    int n = atomic_load(&r->assigned_count);
    atomic_store(&r->cache_share,
                 ((size_t)r->cfg->cache_mb << 20) / (size_t)(n > 0 ? n : 1));
}

void run_cache_share_apply(part_t *p)
{
    size_t share = atomic_load(&p->r->cache_share);
    if (p->store && share && share != p->cache_bytes) {
        state_store_set_cache_bytes(p->store, share);
        p->cache_bytes = share;
    }
}

static void assign_partitions(runner_t *r, rd_kafka_topic_partition_list_t *parts)
{
    failpoint(FAILPOINT_ASSIGN_SLOW);
    char errstr[512];
    int count =
        processor_topic_partitions(r->consumer, r->cfg->flushes_topic,
                                   PROCESSOR_KAFKA_TIMEOUT_MS, errstr, sizeof(errstr));
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
    /* Paused until caught up; run_prepare() seeks and resumes. */
    rd_kafka_pause_partitions(r->consumer, parts);
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = run_part_get(r, parts->elems[i].partition);
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
        run_part_drop_queue(p);
        pthread_mutex_unlock(&p->lock);
        run_standby_own(r, p->id); /* its store closes while the others are taken over */
        LOG_INFO("partition %d assigned", p->id);
    }
    /* The new partitions are prepared with the new share; the others shrink to it at
     * their next step, which comes now. */
    run_cache_share(r);
    for (size_t i = 0; i < r->parts_cap; i++) {
        part_t *p = r->parts[i];
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        if (p->assigned && !p->failed && (p->ready || p->retry_at <= 0))
            run_schedule(p); /* a takeover being retried waits for its time */
        pthread_mutex_unlock(&p->lock);
    }
}

static void revoke_partitions(runner_t *r, rd_kafka_topic_partition_list_t *parts,
                              bool lost)
{
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = run_part_find(r, parts->elems[i].partition);
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        p->abort = true;
        run_part_drop_queue(p);
        while (p->running)
            pthread_cond_wait(&p->idle, &p->lock);
        p->ready = false;
        pthread_mutex_unlock(&p->lock);
    }
    /* The partitions' outputs are delivered before they go; not those of the
     * partitions that stay (a slow partition elsewhere must not hold up a rebalance). */
    long wait_ms = failpoint_revoke_wait_ms(FLUSH_TIMEOUT_MS);
    struct timespec until = processor_clock_after_ms(CLOCK_REALTIME, (uint64_t)wait_ms);
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = run_part_find(r, parts->elems[i].partition);
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        int err = 0;
        while (p->steps_len && err != ETIMEDOUT)
            err = pthread_cond_timedwait(&p->idle, &p->lock, &until);
        if (p->steps_len)
            LOG_WARN("partition %d: some records were not delivered within %ld ms; they "
                     "stay in the outbox and are produced again when the partition "
                     "comes back",
                     p->id, wait_ms);
        pthread_mutex_unlock(&p->lock);
    }
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = run_part_find(r, parts->elems[i].partition);
        if (!p)
            continue;
        if (p->store && !p->failed) {
            char errstr[512];
            run_take_done(p);
            if (state_store_commit(p->store, -1, errstr, sizeof(errstr)))
                LOG_WARN("partition %d: %s", p->id, errstr);
            else if (!lost) /* a lost one may have a new owner checkpointing it */
                run_checkpoint(p, true); /* closing flushes the memtable anyway */
        }
        processor_handler_destroy(p->handler);
        p->handler = NULL;
        state_store_close(p->store);
        p->store = NULL;
        run_standby_return(r, p->id); /* closed: the standby may keep it warm now */
    }
    if (!lost)
        run_offsets_commit(r, parts);
    for (int i = 0; i < parts->cnt; i++) {
        part_t *p = run_part_find(r, parts->elems[i].partition);
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
    run_cache_share(r); /* the others may grow into what these held, at their next step */
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(r->consumer, parts);
    if (e) {
        LOG_WARN("unassigning partitions: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

void run_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    runner_t *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        assign_partitions(r, parts);
        /* After the partitions are registered: /readyz would say ready with none. */
        r->joined = true;
    } else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        revoke_partitions(r, parts, rd_kafka_assignment_lost(rk));
    else
        LOG_ERROR("rebalance: %s", rd_kafka_err2str(err));
}
