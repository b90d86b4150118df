/* processor/run_takeover.c - taking a partition over: open its store, produce what its
 * outbox still holds, restore and catch up from the changes and snapshots topics, and
 * start consuming where everything before is done.
 *
 * A partition's worker runs it (run_prepare()), between the assignment that paused the
 * partition (run_handoff.c) and its first step. A transient Kafka error makes it try
 * again later with backoff, the worker free meanwhile; anything else fails the
 * partition. processor/README.md, "Taking a partition over", says why it is safe. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint.h"
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
    so->items[so->len++] = run_delivery_new(
        p, id, rec, -1, !strcmp(rec->topic, p->r->cfg->changes_topic), NULL);
    return 0;
}

/* Catching up (catch_up.h): the partition's stop check and failpoint. */
static bool part_stopped(void *ctx)
{
    part_t *p = ctx;
    pthread_mutex_lock(&p->lock);
    bool abort = p->abort;
    pthread_mutex_unlock(&p->lock);
    return abort || *p->r->stop;
}

static void part_applied(void *ctx)
{
    (void)ctx;
    failpoint(FAILPOINT_CATCH_UP);
}

processor_catch_up_conf_t run_catch_up_conf(const runner_t *r, state_store_t *store,
                                            int32_t partition)
{
    return (processor_catch_up_conf_t){
        .cfg = r->cfg,
        .bootstrap = r->bootstrap,
        .rk = r->producer,
        .store = store,
        .partition = partition,
        .snapshots_topic = r->cfg->snapshot_topic_every ? r->cfg->snapshots_topic : NULL,
        .settings = r->settings,
        .partition_count = r->partition_count,
    };
}

/* Catches the partition's store up from the changes and snapshots topics (the rules
 * are in catch_up.h). @returns 0, -1 (logged; r->fatal set when every partition would
 * fail the same way), or TAKEOVER_AGAIN (a transient error: p->attempt_why). */
static int catch_up(part_t *p)
{
    runner_t *r = p->r;
    processor_catch_up_conf_t conf = run_catch_up_conf(r, p->store, p->id);
    conf.stopped = part_stopped;
    conf.applied = part_applied;
    conf.ctx = p;
    conf.remaining = &p->catch_up_remaining;
    processor_catch_up_stats_t st;
    int rc = processor_catch_up(&conf, &st, p->attempt_why, sizeof(p->attempt_why));
    if (rc == PROCESSOR_CATCH_UP_AGAIN)
        return TAKEOVER_AGAIN;
    if (rc == PROCESSOR_CATCH_UP_FATAL)
        atomic_store(&r->fatal, true);
    if (rc)
        return -1;
    if (st.position > p->changes_stored)
        p->changes_stored = st.position;
    return 0;
}

int run_state_check(const runner_t *r, state_store_t *store, const char *dir,
                    bool *count_recorded, char **recorded, char *errstr,
                    size_t errstr_size)
{
    return processor_state_check(store, dir, r->cfg->flushes_topic, r->partition_count,
                                 r->settings, count_recorded, recorded, errstr,
                                 errstr_size);
}

/* Checks the partition's store with run_state_check(), and records the partition count
 * and settings in a store that lacks them. A mismatch is fatal: every partition is
 * affected. @returns 0, or -1 (logged). */
static int check_layout(part_t *p, const char *dir)
{
    runner_t *r = p->r;
    char errstr[2048];
    bool count_recorded;
    char *recorded;
    if (run_state_check(r, p->store, dir, &count_recorded, &recorded, errstr,
                        sizeof(errstr))) {
        LOG_ERROR("partition %d: %s", p->id, errstr);
        atomic_store(&r->fatal, true);
        return -1;
    }
    /* A store from before settings were recorded takes the current ones, and so does
     * one whose settings differ only in the interceptor (run_state_check() let nothing
     * else through): the operator deployed another script. */
    bool record_settings = !recorded || strcmp(recorded, r->settings) != 0;
    if (recorded && record_settings) {
        const char *was = strstr(recorded, ";" INTERCEPTOR_SETTING);
        const char *now = strstr(r->settings, ";" INTERCEPTOR_SETTING);
        int64_t next = state_store_next_offset(p->store);
        LOG_WARN("partition %d: the interceptor changed (%s when the state was last "
                 "taken over, %s now): flushes from offset %lld on get the new one",
                 p->id, was ? was + 1 : "none", now ? now + 1 : "none",
                 (long long)(next > 0 ? next : 0));
    }
    free(recorded);
    if (count_recorded && !record_settings)
        return 0;
    if (!count_recorded)
        state_store_set_partition_count(p->store, r->partition_count);
    if (record_settings)
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

/* --checkpoint-dir: a partition with no store here starts from its latest checkpoint
 * (processor/checkpoint.h), as `rebuild` does, and catches up from there; with none,
 * from the topics. @returns 0, or -1 (logged). */
static int install_checkpoint(part_t *p, const char *dir)
{
    const char *from = p->r->cfg->checkpoint_dir;
    struct stat st;
    if (!from || stat(dir, &st) == 0)
        return 0;
    char checkpoint[PATH_MAX], errstr[PATH_MAX + 256];
    int found = processor_checkpoint_restore(from, p->id, dir, checkpoint,
                                             sizeof(checkpoint), errstr, sizeof(errstr));
    if (found < 0)
        LOG_ERROR("partition %d: %s", p->id, errstr);
    else if (found)
        LOG_INFO("partition %d: no store in %s; starting from the checkpoint %s", p->id,
                 dir, checkpoint);
    return found < 0 ? -1 : 0;
}

/* Opens the partition's store and its handler (unless an earlier attempt did) and
 * checks its layout and settings. @returns 0, or -1 (the takeover failed). */
static int prepare_store(part_t *p, const char *dir)
{
    runner_t *r = p->r;
    char errstr[512];
    if (!p->store && install_checkpoint(p, dir)) {
        takeover_failed(p, "its checkpoint cannot be installed");
        return -1;
    }
    if (!p->store) {
        size_t cache = atomic_load(&r->cache_share);
        state_store_conf_t sc =
            processor_store_conf(r->cfg, dir, p->id, cache, r->initial_document);
        /* The changes topic is its log: what a crash loses, catching up restores. */
        sc.changelog = true;
        /* A busy partition may use what the others leave of --cache-mb. */
        sc.cache_pool = &r->cache_pool;
        sc.cache_pool_bytes = (size_t)r->cfg->cache_mb << 20;
        p->store = state_store_open(&sc, errstr, sizeof(errstr));
        if (!p->store) {
            LOG_ERROR("partition %d: cannot open its store: %s", p->id, errstr);
            takeover_failed(p, "its store cannot be opened");
            return -1;
        }
        p->cache_bytes = cache;
        p->leftovers_produced = false;
        p->checkpointed = 0;
        atomic_store(&p->checkpoint_at, 0.0);
        processor_handler_conf_t hc =
            processor_partition_handler_conf(r->cfg, p->store, r->limits);
        hc.snapshot_every = r->cfg->snapshot_topic_every;
        p->handler = processor_handler_new(&hc);
        p->stats_at = 0;
        p->cache_hits_counted = p->cache_misses_counted = 0;
    }
    run_cache_share_apply(p);
    if (check_layout(p, dir)) {
        takeover_failed(p, "its state was built for another layout or settings");
        return -1;
    }
    p->changes_stored = state_store_changes_offset(p->store);
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
    if (state_store_outbox_scan(p->store, produce_leftover, args, errstr,
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
    *start = state_store_next_offset(p->store);
    rd_kafka_topic_partition_list_t *l =
        run_one_partition(r->cfg->flushes_topic, p->id, RD_KAFKA_OFFSET_INVALID);
    rd_kafka_resp_err_t err =
        rd_kafka_committed(r->consumer, l, PROCESSOR_KAFKA_TIMEOUT_MS);
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
                                           &hi, PROCESSOR_KAFKA_TIMEOUT_MS);
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
    rd_kafka_error_t *e =
        rd_kafka_seek_partitions(r->consumer, l, PROCESSOR_KAFKA_TIMEOUT_MS);
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
    run_standby_claim(p->r, p->id); /* the standby may hold its store (run_standby.c) */
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
