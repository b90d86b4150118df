/* processor/run.c - taking a partition over: open its store, produce what its outbox
 * still holds, restore and catch up from the changes and snapshots topics, and start
 * consuming where everything before is done.
 *
 * A partition's worker runs it (run_prepare()), between the assignment that paused the
 * partition (run_handoff.c) and its first step. A transient Kafka error makes it try
 * again later with backoff, the worker free meanwhile; anything else fails the
 * partition. processor/README.md, "Taking a partition over", says why it is safe. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "log.h"
#include "run_int.h"

/* A transient failure is tried again after a delay that doubles from the first to the
 * last (the worker is free meanwhile); /healthz fails once it has failed for
 * --takeover-timeout-ms. */
#define TAKEOVER_RETRY_FIRST_S 1
#define TAKEOVER_RETRY_LAST_S  16

/* state_store_outbox_scan()'s visit: a record a step left in the outbox (a crash, a
 * revoke before its delivery), produced again by prepare_leftovers(). */
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
        run_delivery_new(p, id, rec, -1, !strcmp(rec->topic, p->r->cfg->changes_topic));
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
        state_store_set_changes_offset(p->store, p->id, cu->position);
    if (state_store_commit(p->store, p->id, -1, errstr, sizeof(errstr))) {
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
    switch (state_store_apply_change(p->store, p->id, m->key, m->key_len,
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
    int rc = state_store_install_snapshot(p->store, p->id, m->key, m->key_len,
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
    int64_t from = state_store_changes_offset(p->store, p->id);
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

/* Checks that the partition's store was built for the flushes topic's partition count
 * (recording it in a new store). A mismatch is fatal: every partition is affected.
 * @returns 0, or -1 (logged). */
static int check_layout(part_t *p, const char *dir)
{
    runner_t *r = p->r;
    int32_t built_for = state_store_partition_count(p->store, p->id);
    if (built_for > 0 && built_for != r->partition_count) {
        LOG_ERROR("partition %d: the state in %s was built for %d partitions of %s, "
                  "which has %d: " REPARTITION_HINT,
                  p->id, dir, built_for, r->cfg->flushes_topic, r->partition_count);
        atomic_store(&r->fatal, true);
        return -1;
    }
    char *settings = state_store_settings(p->store, p->id);
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
        state_store_set_partition_count(p->store, p->id, r->partition_count);
    /* A store from before settings were recorded takes the current ones. */
    if (!recorded)
        state_store_set_settings(p->store, p->id, r->settings);
    if (state_store_commit(p->store, p->id, -1, errstr, sizeof(errstr))) {
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
    run_part_fail(p);
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

/* Opens the partition's store and its handler (unless an earlier attempt did) and
 * checks its layout and settings. @returns 0, or -1 (the takeover failed). */
static int prepare_store(part_t *p, const char *dir)
{
    runner_t *r = p->r;
    char errstr[512];
    if (!p->store) {
        size_t cache = atomic_load(&r->cache_share);
        state_store_conf_t sc =
            processor_store_conf(r->cfg, dir, cache, r->initial_document);
        p->store = state_store_open(&sc, errstr, sizeof(errstr));
        if (!p->store) {
            LOG_ERROR("partition %d: cannot open its store: %s", p->id, errstr);
            takeover_failed(p, "its store cannot be opened");
            return -1;
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
    run_cache_share_apply(p);
    if (check_layout(p, dir)) {
        takeover_failed(p, "its state was built for another layout or settings");
        return -1;
    }
    p->changes_stored = state_store_changes_offset(p->store, p->id);
    return 0;
}

/* Produces what the store's outbox still holds (left by a crash), once per store
 * opened: not again when a takeover is tried again. @returns 0, or -1 (the takeover
 * failed). */
static int prepare_leftovers(part_t *p)
{
    if (p->leftovers_produced)
        return 0;
    char errstr[512];
    step_out_t leftovers = {0};
    void *args[2] = {p, &leftovers};
    if (state_store_outbox_scan(p->store, p->id, produce_leftover, args, errstr,
                                sizeof(errstr))) {
        LOG_ERROR("partition %d: %s", p->id, errstr);
        takeover_failed(p, "its store cannot be read");
        return -1;
    }
    if (leftovers.len)
        LOG_INFO("partition %d: producing %zu records left in its outbox", p->id,
                 leftovers.len);
    run_produce_step(p, leftovers.items, leftovers.len, -1);
    free(leftovers.items);
    p->leftovers_produced = true;
    return 0;
}

/* Where consuming starts: the larger of the store's next offset and Kafka's committed
 * offset (*committed), not before the topic's first record. @returns 0, or -1 (the
 * takeover is tried again, or failed). */
static int prepare_start(part_t *p, const char *dir, int64_t *start, int64_t *committed)
{
    runner_t *r = p->r;
    /* Without the committed offset a new store would start at the topic's beginning
     * and answer every flush again: a failed query is tried again, never taken as "no
     * committed offset". */
    *start = state_store_next_offset(p->store, p->id);
    rd_kafka_topic_partition_list_t *l =
        run_one_partition(r->cfg->flushes_topic, p->id, RD_KAFKA_OFFSET_INVALID);
    rd_kafka_resp_err_t err = rd_kafka_committed(r->consumer, l, KAFKA_TIMEOUT_MS);
    if (!err)
        err = l->elems[0].err;
    *committed = err ? -1 : l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        snprintf(p->attempt_why, sizeof(p->attempt_why),
                 "cannot read the committed offset: %s", rd_kafka_err2str(err));
        takeover_again(p);
        return -1;
    }
    if (*committed > *start)
        *start = *committed;
    int64_t lo = 0, hi = 0;
    err = rd_kafka_query_watermark_offsets(r->consumer, r->cfg->flushes_topic, p->id, &lo,
                                           &hi, KAFKA_TIMEOUT_MS);
    if (err) {
        snprintf(p->attempt_why, sizeof(p->attempt_why),
                 "cannot read the offsets of %s: %s", r->cfg->flushes_topic,
                 rd_kafka_err2str(err));
        takeover_again(p);
        return -1;
    }
    if (*start > hi) {
        LOG_ERROR(
            "partition %d: the state in %s is at offset %lld but %s ends at %lld: "
            "the topic was recreated or truncated; remove that directory to rebuild "
            "the partition from the changes topic",
            p->id, dir, (long long)*start, r->cfg->flushes_topic, (long long)hi);
        takeover_failed(p, "its state is ahead of the flushes topic (see the log)");
        return -1;
    }
    if (*start < lo) {
        if (*start > 0)
            LOG_WARN("partition %d: records %lld..%lld of %s were deleted by retention "
                     "before being processed",
                     p->id, (long long)*start, (long long)lo - 1, r->cfg->flushes_topic);
        *start = lo;
    }
    return 0;
}

/* Serves the partition from start: ready, seeked there and resumed, its first sweep
 * pass planned. */
static void prepare_serve(part_t *p, int64_t start, int64_t committed)
{
    runner_t *r = p->r;
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

    rd_kafka_topic_partition_list_t *l =
        run_one_partition(r->cfg->flushes_topic, p->id, start);
    rd_kafka_error_t *e = rd_kafka_seek_partitions(r->consumer, l, KAFKA_TIMEOUT_MS);
    if (e) {
        LOG_WARN("partition %d: seek to %lld: %s", p->id, (long long)start,
                 rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
    rd_kafka_resume_partitions(r->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    run_stats_refresh(p, true);
    /* The first pass soon, not a whole interval on: an instance restarted more often
     * than the interval must still sweep. */
    double interval_s = (double)r->cfg->snapshot_topic_interval_ms / 1e3;
    run_sweep_plan(p, processor_monotonic_s() + (interval_s < 60 ? interval_s : 60));
    LOG_INFO("partition %d: processing from offset %lld", p->id, (long long)start);
}

/* Opens the partition's store, produces what its outbox still holds, catches up
 * from the changes topic, and starts consuming where both the store and Kafka's
 * committed offset say everything before is done. A transient Kafka error makes it
 * try again later (takeover_again()); anything else fails the partition. */
void run_prepare(part_t *p)
{
    char dir[PATH_MAX];
    processor_partition_dir(dir, sizeof(dir), p->r->state_dir, p->id);
    if (prepare_store(p, dir) || prepare_leftovers(p))
        return;
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
    int64_t start, committed;
    if (prepare_start(p, dir, &start, &committed))
        return;
    prepare_serve(p, start, committed);
}
