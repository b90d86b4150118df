/* processor/cmd_rebuild.c - `flushout-processor rebuild`: a state directory from the
 * topics, offline.
 *
 * From the changes topic, each partition is caught up exactly as a partition's new
 * owner catches up (catch_up.h: the same code, restoring from the snapshots topic
 * where the changes do not reach back), into a new store, recording the input offset
 * the change records reach. From the flushes topic, every record goes through
 * processor_apply_record(), the processor's own path, with no output produced; since
 * processing is deterministic the result is the same state the live processor built.
 * Either way the store records the partition count and settings it was built for. */
#include "cmd_rebuild.h"

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "catch_up.h"
#include "checkpoint.h"
#include "codec/alloc.h"
#include "handler.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "run.h"
#include "setup.h"

#define REBUILD_ATTEMPTS 5 /* catching up, when Kafka fails: tries in all */

typedef struct rebuild_s {
    const processor_config_t *cfg;
    bool from_changes;
    const char *topic;
    const char *snapshots_topic; /* from_changes: restores from it (NULL: none) */
    rd_kafka_t *rk;              /* watermark queries */
    int32_t partition_count;     /* of the flushes topic */
    codec_value_t *initial_document;
    codec_limits_t limits;
    char *settings; /* processor_settings(): recorded with each partition */
} rebuild_t;

/* What one partition's rebuild read and did. */
typedef struct rebuilt_s {
    uint64_t records, applied, skipped;
    int64_t next_input; /* the input offset the state reflects, when known */
} rebuilt_t;

/* Catches the new store up from the changes topic as a partition's new owner does
 * (catch_up.h), with the input offset the change records reach; a transient Kafka
 * error is tried again, the store keeping what was applied. @returns 0, or -1
 * (logged). */
static int rebuild_from_changes(const rebuild_t *rb, state_store_t *store,
                                int32_t partition, rebuilt_t *done)
{
    processor_catch_up_conf_t conf = {
        .cfg = rb->cfg,
        .bootstrap = rb->cfg->bootstrap_servers,
        .rk = rb->rk,
        .store = store,
        .partition = partition,
        .snapshots_topic = rb->snapshots_topic,
        .settings = rb->settings,
        .partition_count = rb->partition_count,
        .track_input = true,
    };
    processor_catch_up_stats_t st;
    char why[256];
    int rc;
    for (unsigned attempt = 1, delay = 1;
         (rc = processor_catch_up(&conf, &st, why, sizeof(why))) ==
         PROCESSOR_CATCH_UP_AGAIN;
         attempt++, delay *= 2) {
        if (attempt == REBUILD_ATTEMPTS) {
            LOG_ERROR("partition %d: %s (%u attempts)", partition, why, attempt);
            return -1;
        }
        LOG_WARN("partition %d: %s; trying again in %u s", partition, why, delay);
        sleep(delay);
    }
    *done = (rebuilt_t){st.records, st.applied, st.skipped, st.next_input};
    return rc ? -1 : 0;
}

/* Rebuilding from the flushes topic: every record through the processor's own path. */
typedef struct flushes_s {
    const rebuild_t *rb;
    int32_t partition;
    state_store_t *store;
    processor_handler_t *handler;
    processor_output_t out;
    rebuilt_t *done;
    uint64_t since_commit;
} flushes_t;

/* Applies one flush; commits as often as catching up does. */
static int apply_flush(const rd_kafka_message_t *m, void *ctx)
{
    flushes_t *f = ctx;
    char errstr[512];
    processor_apply_record(f->handler, f->rb->cfg, f->rb->partition_count, m, &f->out);
    if (f->out.error == CODEC_ERR_STORE_FAILED) {
        LOG_ERROR("partition %d offset %lld: %s", f->partition, (long long)m->offset,
                  f->out.message);
        return -1;
    }
    f->done->records++;
    f->done->applied += f->out.change.size > 0;
    f->done->skipped += f->out.change.size == 0;
    f->done->next_input = m->offset + 1;
    if (++f->since_commit < PROCESSOR_RESTORE_COMMIT_EVERY)
        return 0;
    f->since_commit = 0;
    if (state_store_commit(f->store, f->done->next_input, errstr, sizeof(errstr))) {
        LOG_ERROR("partition %d: %s", f->partition, errstr);
        return -1;
    }
    return 0;
}

/* @returns 0, or -1 (logged). */
static int rebuild_from_flushes(const rebuild_t *rb, state_store_t *store,
                                int32_t partition, rebuilt_t *done)
{
    const processor_config_t *cfg = rb->cfg;
    /* Change records counted as applied flushes; nothing is produced. */
    processor_handler_conf_t hc =
        processor_partition_handler_conf(cfg, store, rb->limits);
    flushes_t f = {rb, partition, store, processor_handler_new(&hc)};
    f.done = done;
    processor_output_init(&f.out);
    /* No settings check: the flushes topic's headers are the clients'. */
    processor_partition_read_t rd = {rb->topic, partition, -1, -1, apply_flush, NULL, &f};
    int rc = processor_read_partition(cfg, cfg->bootstrap_servers, &rd);
    if (rc == PROCESSOR_READ_GAP)
        LOG_ERROR("partition %d: records of %s were deleted while being read; the "
                  "partition cannot be rebuilt from it",
                  partition, rb->topic);
    processor_output_destroy(&f.out);
    processor_handler_destroy(f.handler);
    return rc ? -1 : 0;
}

/* Rebuilds one partition into a new store. @returns 0, or -1 (logged). */
static int rebuild_partition(const rebuild_t *rb, int32_t partition)
{
    const processor_config_t *cfg = rb->cfg;
    char dir[PATH_MAX], errstr[512];
    processor_partition_dir(dir, sizeof(dir), cfg->state_dir, partition);
    struct stat st;
    if (stat(dir, &st) == 0) {
        LOG_ERROR("partition %d: %s exists; rebuild never writes over a store (remove it "
                  "first)",
                  partition, dir);
        return -1;
    }
    double start = processor_monotonic_s();
    char checkpoint[PATH_MAX];
    int found = rb->from_changes && cfg->checkpoint_dir
                    ? processor_checkpoint_restore(cfg->checkpoint_dir, partition, dir,
                                                   checkpoint, sizeof(checkpoint), errstr,
                                                   sizeof(errstr))
                    : 0;
    if (found < 0) {
        LOG_ERROR("partition %d: %s", partition, errstr);
        return -1;
    }
    if (found)
        LOG_INFO("partition %d: starting from the checkpoint %s", partition, checkpoint);
    else if (cfg->checkpoint_dir && rb->from_changes)
        LOG_INFO("partition %d: no checkpoint in %s; from the topics' start", partition,
                 cfg->checkpoint_dir);
    state_store_conf_t sc = processor_store_conf(
        cfg, dir, partition, (size_t)cfg->cache_mb << 20, rb->initial_document);
    state_store_t *store = state_store_open(&sc, errstr, sizeof(errstr));
    if (!store) {
        LOG_ERROR("partition %d: %s", partition, errstr);
        return -1;
    }
    /* A checkpoint of this partition, under these settings and this layout: every
     * store run serves has recorded its partition count (under its partition's keys). */
    if (found > 0) {
        bool count_recorded;
        int bad = processor_state_check(store, checkpoint, cfg->flushes_topic,
                                        rb->partition_count, rb->settings,
                                        &count_recorded, NULL, errstr, sizeof(errstr));
        if (!bad && !count_recorded) {
            snprintf(errstr, sizeof(errstr), "%.400s holds no state of partition %d",
                     checkpoint, partition);
            bad = -1;
        }
        if (bad) {
            LOG_ERROR("partition %d: %s", partition, errstr);
            state_store_close(store);
            return -1;
        }
    }
    rebuilt_t done = {.next_input = -1};
    /* Without the write-ahead log until the end, as catching up does (catch_up.c): a
     * store that a crash left half-built is refused anyway (it exists). */
    state_store_restore_begin(store);
    int rc = rb->from_changes ? rebuild_from_changes(rb, store, partition, &done)
                              : rebuild_from_flushes(rb, store, partition, &done);
    if (!rc) { /* the rest since the last commit, and what the state was built for */
        state_store_set_partition_count(store, rb->partition_count);
        state_store_set_settings(store, rb->settings);
        if (state_store_commit(store, done.next_input, errstr, sizeof(errstr)) ||
            state_store_restore_end(store, errstr, sizeof(errstr))) {
            LOG_ERROR("partition %d: %s", partition, errstr);
            rc = -1;
        }
    }
    if (!rc) {
        double secs = processor_monotonic_s() - start;
        LOG_INFO("partition %d: rebuilt from %s: %llu records in %.2f s (%.0f/s); %llu "
                 "%s, %llu %s",
                 partition, rb->topic, (unsigned long long)done.records, secs,
                 secs > 0 ? (double)done.records / secs : 0.0,
                 (unsigned long long)done.applied,
                 rb->from_changes ? "applied" : "flushes applied",
                 (unsigned long long)done.skipped,
                 rb->from_changes ? "already reflected" : "other records");
    }
    state_store_close(store);
    return rc;
}

/* The partitions to rebuild, taken one at a time by each thread. */
typedef struct rebuild_queue_s {
    const rebuild_t *rb;
    const int32_t *parts;
    size_t count;
    atomic_size_t next;
    atomic_int failed;
} rebuild_queue_t;

static void *rebuild_worker(void *opaque)
{
    rebuild_queue_t *q = opaque;
    state_store_thread_start();
    for (size_t i;
         !atomic_load(&q->failed) && (i = atomic_fetch_add(&q->next, 1)) < q->count;)
        if (rebuild_partition(q->rb, q->parts[i]))
            atomic_store(&q->failed, 1);
    return NULL;
}

/* The partitions cfg->partition_list names (NULL: all count of them) into parts.
 * @returns how many, or -1 (logged). */
static ssize_t partition_list(const processor_config_t *cfg, int32_t count,
                              int32_t *parts)
{
    size_t n = 0;
    if (!cfg->partition_list) {
        for (int32_t p = 0; p < count; p++)
            parts[n++] = p;
        return (ssize_t)n;
    }
    for (const char *s = cfg->partition_list; *s;) {
        char *end;
        long p = strtol(s, &end, 10);
        if (end == s || p < 0 || p >= count || (*end && *end != ',') ||
            n == (size_t)count) {
            LOG_ERROR("rebuild: --partitions %s: expected partition numbers below %d, "
                      "comma-separated",
                      cfg->partition_list, count);
            return -1;
        }
        parts[n++] = (int32_t)p;
        s = *end ? end + 1 : end;
    }
    return (ssize_t)n;
}

/* Rebuilds cfg->partition_list (NULL: every partition of the flushes topic) into
 * cfg->state_dir. @returns 0, or 1 (logged). */
static int rebuild(const processor_config_t *cfg, bool from_changes,
                   const char *snapshots_topic)
{
    char errstr[512];
    int32_t *parts = NULL;
    int rc = -1;
    rebuild_t rb = {
        .cfg = cfg,
        .from_changes = from_changes,
        .snapshots_topic = snapshots_topic,
        .limits = processor_limits(cfg),
    };
    rb.topic = rb.from_changes ? cfg->changes_topic : cfg->flushes_topic;
    if (processor_make_dirs(cfg->state_dir, errstr, sizeof(errstr)))
        goto err;
    if (cfg->initial_document &&
        !(rb.initial_document = processor_read_document(cfg->initial_document, &rb.limits,
                                                        errstr, sizeof(errstr))))
        goto err;
    rb.settings = processor_settings(cfg, rb.initial_document);
    /* The partition count decides which keys belong where, as in the processor. */
    rb.rk = processor_kafka_new(cfg, cfg->bootstrap_servers, PROCESSOR_KAFKA_RESTORE,
                                NULL, errstr, sizeof(errstr));
    if (!rb.rk)
        goto err;
    rb.partition_count = processor_topic_partitions(
        rb.rk, cfg->flushes_topic, PROCESSOR_KAFKA_TIMEOUT_MS, errstr, sizeof(errstr));
    if (rb.partition_count < 0)
        goto err;
    if (rb.snapshots_topic) {
        char why[512];
        int count = processor_topic_partitions(
            rb.rk, rb.snapshots_topic, PROCESSOR_KAFKA_TIMEOUT_MS, why, sizeof(why));
        if (count < 0) {
            LOG_WARN("rebuild: %s; rebuilding from %s alone", why, rb.topic);
            rb.snapshots_topic = NULL;
        } else if (processor_copartition_check(
                       (const char *const[]){cfg->flushes_topic, rb.snapshots_topic},
                       (const int[]){rb.partition_count, count}, 2, errstr,
                       sizeof(errstr))) {
            goto err;
        }
    }

    parts = codec_xcalloc((size_t)rb.partition_count, sizeof(*parts));
    ssize_t n = partition_list(cfg, rb.partition_count, parts);
    if (n >= 0) {
        /* Partitions have their own stores: --threads of them at once; by default two
         * per core, since each partition also waits, on its store's files as they are
         * created, flushed and closed and on its consumer's first fetch, and another
         * partition's records fill that time (0.85-0.92x the wall time of one per
         * core on 2 cores, tests/bench/BENCHMARKS.md). */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        size_t threads =
            cfg->threads ? (size_t)cfg->threads : 2 * (size_t)(cores > 0 ? cores : 1);
        if (threads > (size_t)n)
            threads = (size_t)n;
        rebuild_queue_t q = {&rb, parts, (size_t)n, 0, 0};
        pthread_t *tids = codec_xcalloc(threads ? threads : 1, sizeof(*tids));
        for (size_t i = 1; i < threads; i++)
            pthread_create(&tids[i], NULL, rebuild_worker, &q);
        rebuild_worker(&q);
        for (size_t i = 1; i < threads; i++)
            pthread_join(tids[i], NULL);
        free(tids);
        rc = atomic_load(&q.failed) ? -1 : 0;
    }
    errstr[0] = '\0'; /* logged already */
err:
    if (rc && errstr[0])
        LOG_ERROR("rebuild: %s", errstr);
    free(parts);
    if (rb.rk)
        rd_kafka_destroy_flags(rb.rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    codec_value_destroy(rb.initial_document);
    free(rb.settings);
    return rc ? 1 : 0;
}

int processor_cmd_rebuild(const processor_config_t *cfg)
{
    bool from_changes = !strcmp(cfg->from, "changes");
    return rebuild(cfg, from_changes, from_changes ? cfg->snapshots_topic : NULL);
}

int processor_rebuild_with_snapshots(const processor_config_t *cfg)
{
    return rebuild(cfg, true, cfg->snapshots_topic);
}
