/* processor/cmd_rebuild.c - `flushout-processor rebuild`: a state directory from the
 * topics, offline.
 *
 * From the changes topic, each change record is applied as a partition's new owner
 * applies it when catching up (resolved commands, no interceptors). From the flushes
 * topic, every record goes through processor_apply_record(), the processor's own path,
 * with no output produced; since processing is deterministic the result is the same
 * state the live processor built. */
#include "cmd_rebuild.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cmd_apply.h"
#include "codec/alloc.h"
#include "handler.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "run.h"

#define COMMIT_EVERY 1000 /* records per store write */
#define REBUILD_GAP  2    /* a change record after a gap: restore from snapshots first */

typedef struct rebuild_s {
    const processor_config_t *cfg;
    bool from_changes;
    const char *topic;
    const char *snapshots_topic; /* from_changes: installed first (NULL: none) */
    int32_t partition_count;     /* of the flushes topic */
    codec_value_t *initial_document;
    codec_limits_t limits;
    char *settings; /* processor_settings(): recorded with each partition */
} rebuild_t;

/* One partition's rebuild in progress. */
typedef struct rebuild_partition_s {
    const rebuild_t *rb;
    int32_t partition;
    state_store_t *store;
    processor_handler_t *handler;
    processor_output_t *out;
    uint64_t applied, skipped, since_commit;
    int64_t next_input;   /* the input offset the state reflects, when known */
    int64_t position;     /* after the last record read */
    uint64_t installed;   /* snapshot records installed */
    bool snapshots_first; /* the snapshots were installed before the changes */
} rebuild_partition_t;

/* Installs one snapshot record when it is ahead of its model; committed at once, since
 * a later record of the same model reads it back. */
static int install_visit(const rd_kafka_message_t *m, void *ctx)
{
    rebuild_partition_t *rp = ctx;
    char errstr[512];
    int rc = state_store_install_snapshot(rp->store, m->key, m->key_len,
                                          m->payload ? m->payload : "", m->len, errstr,
                                          sizeof(errstr));
    if (rc < 0) { /* skipping it would rebuild the model rolled back */
        LOG_ERROR("partition %d: snapshot record at %s offset %lld: %s", rp->partition,
                  rp->rb->snapshots_topic, (long long)m->offset, errstr);
        return -1;
    }
    rp->installed += (uint64_t)rc;
    if (rc && state_store_commit(rp->store, -1, errstr, sizeof(errstr))) {
        LOG_ERROR("partition %d: %s", rp->partition, errstr);
        return -1;
    }
    return 0;
}

/* Applies one record; commits every COMMIT_EVERY records. */
static int rebuild_visit(const rd_kafka_message_t *m, void *ctx)
{
    rebuild_partition_t *rp = ctx;
    const rebuild_t *rb = rp->rb;
    char errstr[512];
    if (rb->from_changes) {
        int64_t input = -1;
        switch (state_store_apply_change(rp->store, m->key, m->key_len,
                                         m->payload ? m->payload : "", m->len, &input,
                                         errstr, sizeof(errstr))) {
        case STATE_CHANGE_APPLIED:
            rp->applied++;
            break;
        case STATE_CHANGE_SKIPPED:
            rp->skipped++;
            break;
        case STATE_CHANGE_GAP:
            if (rb->snapshots_topic && !rp->snapshots_first)
                return REBUILD_GAP;
            /* fall through */
        case STATE_CHANGE_FAILED:
            LOG_ERROR("partition %d: %s offset %lld: %s", rp->partition, rb->topic,
                      (long long)m->offset, errstr);
            return -1;
        }
        if (input + 1 > rp->next_input)
            rp->next_input = input + 1;
    } else {
        processor_apply_record(rp->handler, rb->cfg, rb->partition_count, m, rp->out);
        if (rp->out->error == CODEC_ERR_STORE_FAILED) {
            LOG_ERROR("partition %d offset %lld: %s", rp->partition, (long long)m->offset,
                      rp->out->message);
            return -1;
        }
        rp->applied += rp->out->change.size > 0;
        rp->skipped += rp->out->change.size == 0;
        rp->next_input = m->offset + 1;
    }
    rp->position = m->offset + 1;
    if (++rp->since_commit >= COMMIT_EVERY) {
        if (rb->from_changes)
            state_store_set_changes_offset(rp->store, rp->position);
        if (state_store_commit(rp->store, rp->next_input, errstr, sizeof(errstr))) {
            LOG_ERROR("partition %d: %s", rp->partition, errstr);
            return -1;
        }
        rp->since_commit = 0;
    }
    return 0;
}

/* Rebuilds one partition. @returns 0, or -1 (logged). */
static int rebuild_partition(const rebuild_t *rb, int32_t partition)
{
    const processor_config_t *cfg = rb->cfg;
    char dir[PATH_MAX], errstr[512];
    snprintf(dir, sizeof(dir), "%s/partition-%d", cfg->state_dir, partition);
    struct stat st;
    if (stat(dir, &st) == 0) {
        LOG_ERROR("partition %d: %s exists; rebuild never writes over a store (remove it "
                  "first)",
                  partition, dir);
        return -1;
    }
    state_store_conf_t sc =
        processor_store_conf(cfg, dir, (size_t)cfg->cache_mb << 20, rb->initial_document);
    sc.partition = partition;
    state_store_t *store = state_store_open(&sc, errstr, sizeof(errstr));
    if (!store) {
        LOG_ERROR("partition %d: %s", partition, errstr);
        return -1;
    }
    processor_handler_conf_t hc = {
        .store = store,
        .master = processor_master_conf(cfg),
        .history = cfg->history,
        .limits = rb->limits,
        .max_document_bytes = cfg->max_document_bytes,
        .max_output_bytes = processor_max_output_bytes(cfg),
        .changes = true, /* to count applied flushes; nothing is produced */
    };
    processor_handler_t *handler = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);
    rebuild_partition_t rp = {rb, partition, store, handler, &out, 0,
                              0,  0,         -1,    0,       0,    false};
    double start = processor_monotonic_s();
    processor_partition_read_t rd = {rb->topic,     partition, -1, -1,
                                     rebuild_visit, NULL,      &rp};
    rd.contiguous = rb->from_changes;
    /* Change and snapshot records written under other settings are refused (the
     * flushes topic's headers are the clients'). */
    rd.settings = rb->from_changes ? rb->settings : NULL;
    int rc = processor_read_partition(cfg, cfg->bootstrap_servers, &rd);
    /* Retention overtook the reader: from the changes, a gap like any other; from the
     * flushes, records were lost and no rebuild can be right. */
    if (rc == PROCESSOR_READ_GAP && rb->from_changes)
        rc = REBUILD_GAP;
    else if (rc == PROCESSOR_READ_GAP)
        LOG_ERROR("partition %d: records of %s were deleted while being read; the "
                  "partition cannot be rebuilt from it",
                  partition, rb->topic);
    /* From the changes alone, as long as they reach back: the stores then hold the
     * same history as the live processor's. When they do not (a gap: retention), start
     * again from the snapshots. Either way the snapshots ahead of what the changes
     * gave are installed at the end: models in the snapshots topic alone (moved by
     * `repartition`, their changes deleted by retention). */
    if (rc == REBUILD_GAP) {
        LOG_INFO("partition %d: %s does not reach back far enough; restoring from %s "
                 "first",
                 partition, rb->topic, rb->snapshots_topic);
        rc = state_store_drop_partition(store, errstr, sizeof(errstr)) ? -1 : 0;
        if (rc)
            LOG_ERROR("partition %d: %s", partition, errstr);
        rp.applied = rp.skipped = rp.since_commit = 0;
        rp.next_input = -1;
        rp.snapshots_first = true;
    }
    if (rb->snapshots_topic && (rp.snapshots_first || !rc)) {
        processor_partition_read_t srd = {rb->snapshots_topic, partition, -1, -1,
                                          install_visit,       NULL,      &rp};
        srd.settings = rb->settings;
        if (!rc)
            rc = processor_read_partition(cfg, cfg->bootstrap_servers, &srd);
        if (!rc)
            LOG_INFO("partition %d: %llu models restored from %s", partition,
                     (unsigned long long)rp.installed, rb->snapshots_topic);
        if (!rc && rp.snapshots_first) {
            rd.from = rd.to = -1;
            rc = processor_read_partition(cfg, cfg->bootstrap_servers, &rd);
        }
    }
    if (!rc) { /* the rest since the last commit, and the position reached */
        if (rb->from_changes)
            state_store_set_changes_offset(store, rd.to);
        state_store_set_partition_count(store, rb->partition_count);
        state_store_set_settings(store, rb->settings);
        if (state_store_commit(store, rp.next_input, errstr, sizeof(errstr))) {
            LOG_ERROR("partition %d: %s", partition, errstr);
            rc = -1;
        }
    }
    if (!rc) {
        double secs = processor_monotonic_s() - start;
        LOG_INFO("partition %d: rebuilt from %s: %lld records in %.2f s (%.0f/s); %llu "
                 "%s, %llu %s",
                 partition, rb->topic, (long long)(rd.to - rd.from), secs,
                 secs > 0 ? (double)(rd.to - rd.from) / secs : 0.0,
                 (unsigned long long)rp.applied,
                 rb->from_changes ? "applied" : "flushes applied",
                 (unsigned long long)rp.skipped,
                 rb->from_changes ? "already reflected" : "other records");
    }
    processor_output_destroy(&out);
    processor_handler_destroy(handler);
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
    for (size_t i;
         !atomic_load(&q->failed) && (i = atomic_fetch_add(&q->next, 1)) < q->count;)
        if (rebuild_partition(q->rb, q->parts[i]))
            atomic_store(&q->failed, 1);
    return NULL;
}

/* Rebuilds cfg->partition_list (NULL: every partition of the flushes topic) into
 * cfg->state_dir. @returns 0, or 1 (logged). */
static int rebuild(const processor_config_t *cfg, bool from_changes,
                   const char *snapshots_topic)
{
    char errstr[512];
    rebuild_t rb = {
        .cfg = cfg,
        .from_changes = from_changes,
        .snapshots_topic = snapshots_topic,
        .limits = processor_limits(cfg),
    };
    rb.topic = rb.from_changes ? cfg->changes_topic : cfg->flushes_topic;
    if (processor_make_dirs(cfg->state_dir, errstr, sizeof(errstr))) {
        LOG_ERROR("rebuild: %s", errstr);
        return 1;
    }
    if (cfg->initial_document &&
        !(rb.initial_document = processor_read_document(cfg->initial_document, &rb.limits,
                                                        errstr, sizeof(errstr)))) {
        LOG_ERROR("rebuild: %s", errstr);
        return 1;
    }
    rb.settings = processor_settings(cfg, rb.initial_document);
    /* The partition count decides which keys belong where, as in the processor. */
    rd_kafka_conf_t *conf = processor_kafka_conf(
        cfg, cfg->bootstrap_servers, PROCESSOR_KAFKA_RESTORE, errstr, sizeof(errstr));
    rd_kafka_t *rk =
        conf ? rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr)) : NULL;
    if (!rk) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        LOG_ERROR("rebuild: %s", errstr);
        codec_value_destroy(rb.initial_document);
        free(rb.settings);
        return 1;
    }
    rb.partition_count =
        processor_topic_partitions(rk, cfg->flushes_topic, 10000, errstr, sizeof(errstr));
    if (rb.partition_count >= 0 && rb.snapshots_topic) {
        char why[512];
        int count =
            processor_topic_partitions(rk, rb.snapshots_topic, 10000, why, sizeof(why));
        if (count < 0) {
            LOG_WARN("rebuild: %s; rebuilding from %s alone", why, rb.topic);
            rb.snapshots_topic = NULL;
        } else if (count != rb.partition_count) {
            snprintf(errstr, sizeof(errstr),
                     "%s has %d partitions, %s %d: they must be co-partitioned",
                     rb.snapshots_topic, count, cfg->flushes_topic, rb.partition_count);
            rb.partition_count = -1;
        }
    }
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (rb.partition_count < 0) {
        LOG_ERROR("rebuild: %s", errstr);
        codec_value_destroy(rb.initial_document);
        free(rb.settings);
        return 1;
    }

    int32_t *parts = codec_xcalloc((size_t)rb.partition_count, sizeof(*parts));
    size_t n = 0;
    int rc = 0;
    if (cfg->partition_list) {
        const char *s = cfg->partition_list;
        while (*s && !rc) {
            char *end;
            long p = strtol(s, &end, 10);
            if (end == s || p < 0 || p >= rb.partition_count || (*end && *end != ',') ||
                n == (size_t)rb.partition_count) {
                LOG_ERROR(
                    "rebuild: --partitions %s: expected partition numbers below %d, "
                    "comma-separated",
                    cfg->partition_list, rb.partition_count);
                rc = -1;
                break;
            }
            parts[n++] = (int32_t)p;
            s = *end ? end + 1 : end;
        }
    } else {
        for (int32_t p = 0; p < rb.partition_count; p++)
            parts[n++] = p;
    }
    if (!rc) {
        /* Partitions have their own stores: --threads of them at once. */
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        size_t threads =
            cfg->threads ? (size_t)cfg->threads : (size_t)(cores > 0 ? cores : 1);
        if (threads > n)
            threads = n;
        rebuild_queue_t q = {&rb, parts, n, 0, 0};
        pthread_t *tids = codec_xcalloc(threads ? threads : 1, sizeof(*tids));
        for (size_t i = 1; i < threads; i++)
            pthread_create(&tids[i], NULL, rebuild_worker, &q);
        rebuild_worker(&q);
        for (size_t i = 1; i < threads; i++)
            pthread_join(tids[i], NULL);
        free(tids);
        rc = atomic_load(&q.failed) ? -1 : 0;
    }
    free(parts);
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
