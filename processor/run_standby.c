/* processor/run_standby.c - warm standbys (--standby-interval-ms): the partitions this
 * instance does not own are kept caught up in its state directory, so that taking one
 * over (a rebalance, an instance lost) replays only what came since the last pass
 * instead of the partition's whole changes topic.
 *
 * Kafka Streams' standby replicas, without an assignor of their own: the group's
 * assignment says which partitions this instance owns, and every other one is kept.
 * One thread visits them in turn, each pass: it catches the partition's store up as a
 * new owner would (processor_catch_up(), the one implementation of catch_up.h's rules)
 * when its changes topic has grown since, and keeps the store open for the next pass
 * with its models cached (opening the store and reloading the models each pass cost
 * three fifths of the standby's CPU): every kept store has its partition's share of
 * --cache-mb, so that they fit it together.
 *
 * Handing a partition between the standby and its owner: the takeover claims it
 * (run_standby_claim()), which stops a catch-up in progress after its record and waits
 * until the standby thread has closed the store; a revoke gives it back once the owner
 * has closed it (run_standby_return()). Neither side ever opens a store the other holds.
 * A standby's store is what a new owner's catch-up would have made of it (the same
 * function, from the same topic), so what the owner does next is unchanged: its own
 * catch-up from where the standby got to, then the flushes from Kafka's committed
 * offset. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/alloc.h"
#include "log.h"
#include "run_int.h"

/* One partition, as the standby sees it. */
typedef struct standby_part_s {
    state_store_t *store; /* kept open between passes; the standby thread's alone */
    /* @locality under the standby's lock. */
    bool owned;      /* assigned here (claimed, not yet returned) */
    bool held;       /* the standby has its store open */
    bool refused;    /* another layout or settings, or refused: left to the owner */
    bool warned;     /* the store could not be opened: said once until it can */
    int64_t reached; /* the changes position the last pass left (-1: unknown) */
} standby_part_t;

struct standby_s {
    runner_t *r;
    pthread_t thread;
    standby_part_t *parts; /* by partition id */
    /* @locality under lock: the standby thread, the workers' claims, the main thread's
     * returns and /metrics. */
    pthread_mutex_t lock;
    pthread_cond_t changed; /* a store closed, a claim, or stop */
    int32_t busy;           /* the partition being caught up, -1: none */
    bool claimed;           /* a claim waits for its store to be closed */
    bool stop;
    bool thread_joined; /* the main thread's */
    uint64_t passes, applied;
};

/* processor_catch_up()'s stop check: a partition was claimed (this one, or one whose
 * store the standby must close for its owner now: rebalances are rare, a takeover must
 * not wait for another partition's catch-up), or everything stops. */
typedef struct standby_ctx_s {
    standby_t *sb;
    int32_t partition;
} standby_ctx_t;

static bool standby_stopped(void *opaque)
{
    standby_ctx_t *ctx = opaque;
    standby_t *sb = ctx->sb;
    pthread_mutex_lock(&sb->lock);
    bool stopped = sb->stop || sb->parts[ctx->partition].owned || sb->claimed;
    pthread_mutex_unlock(&sb->lock);
    return stopped || *sb->r->stop;
}

/* Closes the partition's store, and tells a claim waiting for it. */
static void standby_close(standby_t *sb, int32_t id)
{
    standby_part_t *sp = &sb->parts[id];
    state_store_close(sp->store);
    sp->store = NULL;
    pthread_mutex_lock(&sb->lock);
    sp->held = false;
    pthread_cond_broadcast(&sb->changed);
    pthread_mutex_unlock(&sb->lock);
}

/* Closes the stores of the partitions claimed since (their owners wait). Caller holds
 * lock, which is released while the stores close. */
static void standby_serve_claims(standby_t *sb)
{
    sb->claimed = false;
    for (int32_t id = 0; id < sb->r->partition_count; id++) {
        if (sb->parts[id].held && sb->parts[id].owned) {
            pthread_mutex_unlock(&sb->lock);
            standby_close(sb, id);
            pthread_mutex_lock(&sb->lock);
        }
    }
}

/* Whether the partition's changes end where the last pass left them: then there is
 * nothing to apply. *end gets where they end now (-1: the broker did not say, which
 * means "look"). */
static bool standby_nothing_new(standby_t *sb, int32_t id, int64_t *end)
{
    runner_t *r = sb->r;
    pthread_mutex_lock(&sb->lock);
    int64_t reached = sb->parts[id].reached;
    pthread_mutex_unlock(&sb->lock);
    int64_t lo = 0, hi = 0;
    *end = rd_kafka_query_watermark_offsets(r->producer, r->cfg->changes_topic, id, &lo,
                                            &hi, PROCESSOR_KAFKA_TIMEOUT_MS)
               ? -1
               : hi;
    return reached >= 0 && *end == reached;
}

/* The partition's store, opened (and checked) unless it is open already. @returns NULL
 * when it cannot be opened (warned once) or is of another layout or settings (refused).
 */
static state_store_t *standby_store(standby_t *sb, int32_t id)
{
    standby_part_t *sp = &sb->parts[id];
    if (sp->store)
        return sp->store;
    runner_t *r = sb->r;
    char dir[PATH_MAX], errstr[2048];
    processor_partition_dir(dir, sizeof(dir), r->state_dir, id);
    /* Every kept store's cache together within --cache-mb: a partition's share of it. */
    state_store_conf_t sc = processor_store_conf(
        r->cfg, dir, id, ((size_t)r->cfg->cache_mb << 20) / (size_t)r->partition_count,
        r->initial_document);
    sc.changelog = true; /* as the owner opens it: the changes topic is its log */
    state_store_t *store = state_store_open(&sc, errstr, sizeof(errstr));
    pthread_mutex_lock(&sb->lock);
    bool say = !store && !sp->warned;
    sp->warned = !store;
    pthread_mutex_unlock(&sb->lock);
    if (say)
        LOG_WARN("standby: partition %d: cannot open its store (tried again each pass): "
                 "%s",
                 id, errstr);
    if (!store)
        return NULL;
    bool count_recorded;
    char *recorded = NULL;
    int rc = run_state_check(r, store, dir, &count_recorded, &recorded, errstr,
                             sizeof(errstr));
    if (rc == 0 && (!count_recorded || !recorded)) {
        /* A store the standby made records what it is built for, as a takeover's would
         * (what it applies was written under these settings: the reader checks). */
        if (!count_recorded)
            state_store_set_partition_count(store, r->partition_count);
        if (!recorded)
            state_store_set_settings(store, r->settings);
        rc = state_store_commit(store, -1, errstr, sizeof(errstr));
    }
    free(recorded);
    if (rc) {
        LOG_WARN("standby: partition %d: left alone until it is assigned here: %s", id,
                 errstr);
        state_store_close(store);
        pthread_mutex_lock(&sb->lock);
        sp->refused = true;
        pthread_mutex_unlock(&sb->lock);
        return NULL;
    }
    sp->store = store;
    pthread_mutex_lock(&sb->lock);
    sp->held = true;
    pthread_mutex_unlock(&sb->lock);
    return store;
}

/* Catches one partition's store up; it stays open for the next pass unless the catch-up
 * stopped or failed. @returns the change records applied. */
static uint64_t standby_catch_up(standby_t *sb, int32_t id)
{
    int64_t end;
    if (standby_nothing_new(sb, id, &end))
        return 0;
    standby_ctx_t ctx = {sb, id};
    if (standby_stopped(&ctx)) /* a claim came meanwhile: it goes first */
        return 0;
    state_store_t *store = standby_store(sb, id);
    if (!store)
        return 0;
    processor_catch_up_conf_t conf = run_catch_up_conf(sb->r, store, id);
    conf.quiet = true;
    conf.stopped = standby_stopped;
    conf.ctx = &ctx;
    processor_catch_up_stats_t st;
    char why[256];
    int rc = processor_catch_up(&conf, &st, why, sizeof(why));
    int64_t reached = -1;
    bool refuse = false;
    if (rc == 0) {
        /* At least where the changes ended before it: a partition whose records all
         * expired leaves no position in the store, and must not be read every pass. */
        int64_t position = state_store_changes_offset(store);
        reached = position > end ? position : end;
    } else if (rc == PROCESSOR_CATCH_UP_AGAIN) {
        LOG_DEBUG("standby: partition %d: %s; next pass", id, why);
    } else if (!standby_stopped(&ctx)) {
        /* Logged by the catch-up; its owner will meet the same records. */
        LOG_WARN("standby: partition %d: left alone (its owner will refuse it too)", id);
        refuse = true;
    }
    /* Stopped or failed: the store may hold what no commit has (its cache). */
    if (rc != 0 && rc != PROCESSOR_CATCH_UP_AGAIN)
        standby_close(sb, id);
    pthread_mutex_lock(&sb->lock);
    sb->parts[id].refused = refuse;
    sb->parts[id].reached = reached;
    pthread_mutex_unlock(&sb->lock);
    /* What a stopped catch-up applied since its last commit is gone. */
    return rc == 0 || rc == PROCESSOR_CATCH_UP_AGAIN ? st.applied : 0;
}

/* Waits up to ms, until a claim, or until stop. @returns false once stopping. Caller
 * holds lock. */
static bool standby_wait(standby_t *sb, uint64_t ms)
{
    struct timespec until = processor_clock_after_ms(CLOCK_REALTIME, ms);
    while (!sb->stop && !*sb->r->stop && !sb->claimed &&
           pthread_cond_timedwait(&sb->changed, &sb->lock, &until) == 0)
        ;
    return !sb->stop && !*sb->r->stop;
}

static void *standby_main(void *opaque)
{
    standby_t *sb = opaque;
    runner_t *r = sb->r;
    pthread_mutex_lock(&sb->lock);
    /* Not before the first assignment: the partitions it gives are not worth a pass. */
    while (!atomic_load(&r->joined) && standby_wait(sb, 100))
        ;
    double next_pass = 0;
    while (!sb->stop && !*r->stop) {
        standby_serve_claims(sb);
        double now = processor_monotonic_s();
        if (now < next_pass) { /* woken by a claim: the rest of the interval */
            standby_wait(sb, (uint64_t)((next_pass - now) * 1e3) + 1);
            continue;
        }
        for (int32_t id = 0; id < r->partition_count && !sb->stop && !*r->stop; id++) {
            if (sb->claimed)
                standby_serve_claims(sb);
            if (sb->parts[id].owned || sb->parts[id].refused)
                continue;
            sb->busy = id;
            pthread_mutex_unlock(&sb->lock);
            uint64_t applied = standby_catch_up(sb, id);
            pthread_mutex_lock(&sb->lock);
            sb->busy = -1;
            sb->applied += applied;
            pthread_cond_broadcast(&sb->changed);
        }
        sb->passes++;
        next_pass = processor_monotonic_s() + (double)r->cfg->standby_interval_ms / 1e3;
        standby_wait(sb, r->cfg->standby_interval_ms);
    }
    pthread_mutex_unlock(&sb->lock);
    for (int32_t id = 0; id < r->partition_count; id++)
        if (sb->parts[id].store)
            standby_close(sb, id);
    return NULL;
}

void run_standby_start(runner_t *r)
{
    if (!r->cfg->standby_interval_ms)
        return;
    standby_t *sb = codec_xcalloc(1, sizeof(*sb));
    sb->r = r;
    sb->busy = -1;
    size_t n = (size_t)(r->partition_count > 0 ? r->partition_count : 1);
    sb->parts = codec_xcalloc(n, sizeof(*sb->parts));
    for (size_t i = 0; i < n; i++)
        sb->parts[i].reached = -1;
    pthread_mutex_init(&sb->lock, NULL);
    pthread_cond_init(&sb->changed, NULL);
    if (pthread_create(&sb->thread, NULL, standby_main, sb)) {
        LOG_ERROR("standby: cannot start its thread: running without standbys");
        sb->thread_joined = true; /* nothing to join */
        r->standby = sb;
        run_standby_free(r);
        return;
    }
    pthread_setname_np(sb->thread, "fo:standby");
    r->standby = sb;
    LOG_INFO("standby: keeping the partitions this instance does not own caught up, "
             "every %llu ms",
             (unsigned long long)r->cfg->standby_interval_ms);
}

void run_standby_stop(runner_t *r)
{
    standby_t *sb = r->standby;
    if (!sb || sb->thread_joined)
        return;
    pthread_mutex_lock(&sb->lock);
    sb->stop = true;
    pthread_cond_broadcast(&sb->changed);
    pthread_mutex_unlock(&sb->lock);
    pthread_join(sb->thread, NULL);
    sb->thread_joined = true;
}

void run_standby_free(runner_t *r)
{
    standby_t *sb = r->standby;
    if (!sb)
        return;
    run_standby_stop(r);
    r->standby = NULL;
    pthread_mutex_destroy(&sb->lock);
    pthread_cond_destroy(&sb->changed);
    free(sb->parts);
    free(sb);
}

/* The runner's standby, if it has one and partition is one of the flushes topic's. */
static standby_t *standby_of(runner_t *r, int32_t partition)
{
    return partition >= 0 && partition < r->partition_count ? r->standby : NULL;
}

/* Marks the partition owned and wakes the standby thread. Caller holds sb->lock. */
static void standby_own(standby_t *sb, int32_t partition)
{
    sb->parts[partition].owned = true;
    /* Only a store the standby holds needs its thread now (a catch-up of the partition
     * itself stops on owned): a claim stops the catch-up in progress. */
    if (sb->parts[partition].held) {
        sb->claimed = true;
        pthread_cond_broadcast(&sb->changed);
    }
}

void run_standby_own(runner_t *r, int32_t partition)
{
    standby_t *sb = standby_of(r, partition);
    if (!sb)
        return;
    pthread_mutex_lock(&sb->lock);
    standby_own(sb, partition);
    pthread_mutex_unlock(&sb->lock);
}

void run_standby_claim(runner_t *r, int32_t partition)
{
    standby_t *sb = standby_of(r, partition);
    if (!sb)
        return;
    pthread_mutex_lock(&sb->lock);
    standby_own(sb, partition);
    /* A catch-up in progress stops after its record; a store kept open is closed by the
     * standby thread (it alone uses it), which a claim wakes. A standby that stopped
     * has closed every store. */
    while (sb->busy == partition || sb->parts[partition].held)
        pthread_cond_wait(&sb->changed, &sb->lock);
    pthread_mutex_unlock(&sb->lock);
}

void run_standby_return(runner_t *r, int32_t partition)
{
    standby_t *sb = standby_of(r, partition);
    if (!sb)
        return;
    pthread_mutex_lock(&sb->lock);
    standby_part_t *sp = &sb->parts[partition];
    sp->owned = false;
    sp->refused = false; /* the next pass looks again */
    sp->reached = -1;    /* its owner here moved the store on */
    pthread_mutex_unlock(&sb->lock);
}

bool run_standby_view(runner_t *r, standby_view_t *out)
{
    standby_t *sb = r->standby;
    if (!sb)
        return false;
    pthread_mutex_lock(&sb->lock);
    *out = (standby_view_t){.passes = sb->passes, .applied = sb->applied};
    for (int32_t id = 0; id < r->partition_count; id++) {
        out->kept += !sb->parts[id].owned && !sb->parts[id].refused;
        out->refused += !sb->parts[id].owned && sb->parts[id].refused;
    }
    pthread_mutex_unlock(&sb->lock);
    return true;
}
