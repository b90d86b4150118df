/* processor/cmd_repartition.c - `flushout-processor repartition`: every model moved
 * from one partition count (the layout) to another.
 *
 * A model's partition is its key's hash modulo the partition count, so a new count
 * puts most models in another partition, where neither their change records nor their
 * snapshots are. The tool rebuilds the old layout's models offline, as a new owner
 * catches up (processor_rebuild_with_snapshots(): the changes topic, restoring from
 * the snapshots topic where it does not reach back), writes each model's snapshot
 * record to the new snapshots topic in the partition its key maps to there, and
 * forwards the flushes the old consumer group left unprocessed to the new flushes
 * topic. Processors started on the new topics with empty state restore the models
 * from that snapshots topic before they process anything (catch_up.h, rule 3).
 *
 * What is not carried over: command history (a client whose "from" predates the move
 * gets a full snapshot once) and the old topics themselves (left as they were). */
#include "cmd_repartition.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "codec/hash.h"
/* Seeded: model and client ids come from clients (hash flooding). */
#define HASH_FUNCTION CODEC_UTHASH_FUNCTION
#include <uthash.h>

#include "setup.h"
#include "cmd_rebuild.h"
#include "codec/alloc.h"
#include "kafka.h"
#include "log.h"
#include "state/store.h"

#define FLUSH_TIMEOUT_MS 60000

typedef struct repartition_s {
    const processor_config_t *cfg;
    codec_value_t *initial_document; /* models without a snapshot start from it */
    char *settings;                  /* processor_settings(): on every snapshot record */
    char settings_id[PROCESSOR_SETTINGS_ID_LEN + 1];
    rd_kafka_t *producer;
    int32_t old_count, new_count;
    atomic_uint_fast64_t delivery_failures;
    uint64_t snapshots, forwarded, keyless;
} repartition_t;

typedef struct model_name_s {
    char *name;
    size_t len;
    UT_hash_handle hh;
} model_name_t;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    repartition_t *rp = opaque;
    if (m->err) {
        if (atomic_fetch_add(&rp->delivery_failures, 1) < 10)
            LOG_ERROR("repartition: a record to %s was not delivered: %s",
                      rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
    }
}

/* The partition count of a layout's flushes, changes and snapshots topics
 * (co-partitioned).
 * @returns it, or -1 (logged). */
static int32_t layout_partitions(rd_kafka_t *rk, const char *layout,
                                 const char *const topics[3])
{
    char errstr[512];
    int counts[3];
    for (int i = 0; i < 3; i++) {
        counts[i] = processor_topic_partitions(rk, topics[i], PROCESSOR_KAFKA_TIMEOUT_MS,
                                               errstr, sizeof(errstr));
        if (counts[i] < 0) {
            LOG_ERROR("repartition: %s", errstr);
            return -1;
        }
    }
    if (processor_copartition_check(topics, counts, 3, errstr, sizeof(errstr))) {
        LOG_ERROR("repartition: the %s layout's topics: %s", layout, errstr);
        return -1;
    }
    return counts[0];
}

/* Checks the topics of both layouts. @returns 0, or -1 (logged). */
static int check_topics(repartition_t *rp)
{
    const processor_config_t *cfg = rp->cfg;
    const char *old_topics[] = {cfg->flushes_topic, cfg->changes_topic,
                                cfg->snapshots_topic};
    const char *new_topics[] = {cfg->to_flushes_topic, cfg->to_changes_topic,
                                cfg->to_snapshots_topic};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (!strcmp(old_topics[i], new_topics[j])) {
                LOG_ERROR("repartition: %s is a topic of both layouts: the new layout "
                          "needs topics of its own",
                          old_topics[i]);
                return -1;
            }
    if (!strcmp(cfg->partitioner, "any")) {
        LOG_ERROR("repartition: --partitioner any does not say which partition a model "
                  "belongs to; give the producers' partitioner");
        return -1;
    }
    if ((rp->old_count = layout_partitions(rp->producer, "old", old_topics)) < 0 ||
        (rp->new_count = layout_partitions(rp->producer, "new", new_topics)) < 0)
        return -1;
    /* Change records in the new layout mean processors already run there: their models
     * would be overwritten by older snapshots' absence of their changes. */
    for (int32_t p = 0; p < rp->new_count; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            rp->producer, cfg->to_changes_topic, p, &lo, &hi, PROCESSOR_KAFKA_TIMEOUT_MS);
        if (err) {
            LOG_ERROR("repartition: the offsets of %s partition %d: %s",
                      cfg->to_changes_topic, p, rd_kafka_err2str(err));
            return -1;
        }
        if (hi > 0) {
            LOG_ERROR("repartition: %s partition %d already has records: processors ran "
                      "on the new layout; repartition only into new, empty topics",
                      cfg->to_changes_topic, p);
            return -1;
        }
    }
    LOG_INFO("repartition: %s (%d partitions) -> %s (%d partitions)", cfg->flushes_topic,
             rp->old_count, cfg->to_flushes_topic, rp->new_count);
    return 0;
}

static int collect_model(void *opaque, const state_store_item_t *item)
{
    model_name_t **models = opaque;
    if (!item->model ||
        (item->kind != STATE_ITEM_SNAPSHOT && item->kind != STATE_ITEM_HISTORY &&
         item->kind != STATE_ITEM_CLIENT))
        return 0;
    model_name_t *m = NULL;
    HASH_FIND(hh, *models, item->model, item->model_len, m);
    if (!m) {
        m = codec_xcalloc(1, sizeof(*m));
        m->name = codec_xmemdup(item->model, item->model_len);
        m->len = item->model_len;
        HASH_ADD_KEYPTR(hh, *models, m->name, m->len, m);
    }
    return 0;
}

/* Writes the snapshot record of every model of one rebuilt old partition to the new
 * snapshots topic. *next_input gets the old flushes offset its state reflects.
 * @returns 0, or -1 (logged). */
static int move_models(repartition_t *rp, int32_t partition, int64_t *next_input)
{
    const processor_config_t *cfg = rp->cfg;
    char dir[PATH_MAX], errstr[512];
    processor_partition_dir(dir, sizeof(dir), cfg->state_dir, partition);
    state_store_conf_t sc = processor_store_conf(
        cfg, dir, partition, (size_t)cfg->cache_mb << 20, rp->initial_document);
    state_store_t *store = state_store_open(&sc, errstr, sizeof(errstr));
    if (!store) {
        LOG_ERROR("repartition: partition %d: %s", partition, errstr);
        return -1;
    }
    *next_input = state_store_next_offset(store);
    model_name_t *models = NULL, *m, *tmp;
    int rc = state_store_scan(store, collect_model, &models, errstr, sizeof(errstr));
    if (rc)
        LOG_ERROR("repartition: partition %d: %s", partition, errstr);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    HASH_ITER(hh, models, m, tmp)
    {
        if (!rc) {
            msgpack_sbuffer_clear(&buf);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
            rc = state_store_pack_snapshot_record(store, m->name, m->len, &pk, errstr,
                                                  sizeof(errstr));
            if (rc)
                LOG_ERROR("repartition: partition %d model " MODEL_FMT ": %s", partition,
                          MODEL_ARG(m->name, m->len), errstr);
        }
        if (!rc) {
            int32_t to =
                processor_key_partition(cfg->partitioner, m->name, m->len, rp->new_count);
            /* The settings it was given, as the processors' own snapshot records. */
            rd_kafka_headers_t *hdrs = rd_kafka_headers_new(2);
            rd_kafka_header_add(hdrs, PROCESSOR_SETTINGS_HEADER, -1, rp->settings_id, -1);
            rd_kafka_header_add(hdrs, PROCESSOR_SETTINGS_TEXT_HEADER, -1, rp->settings,
                                -1);
            processor_record_t rec = {cfg->to_snapshots_topic,
                                      to,
                                      m->name,
                                      m->len,
                                      buf.data,
                                      buf.size,
                                      hdrs,
                                      NULL};
            rd_kafka_resp_err_t err =
                processor_produce(rp->producer, &rec, RD_KAFKA_MSG_F_COPY);
            if (err) {
                rd_kafka_headers_destroy(hdrs);
                LOG_ERROR("repartition: producing the snapshot of " MODEL_FMT
                          " to %s: %s",
                          MODEL_ARG(m->name, m->len), cfg->to_snapshots_topic,
                          rd_kafka_err2str(err));
                rc = -1;
            } else if (++rp->snapshots % 1000 == 0 &&
                       state_store_commit(store, -1, errstr, sizeof(errstr))) {
                /* The commit evicts: the models packed so far need not stay decoded. */
                LOG_ERROR("repartition: partition %d: %s", partition, errstr);
                rc = -1;
            }
        }
        HASH_DEL(models, m);
        free(m->name);
        free(m);
    }
    msgpack_sbuffer_destroy(&buf);
    state_store_close(store);
    return rc ? -1 : 0;
}

/* Forwards one unprocessed flush to the new flushes topic, headers included. */
static int forward_visit(const rd_kafka_message_t *m, void *ctx)
{
    repartition_t *rp = ctx;
    int32_t to = RD_KAFKA_PARTITION_UA; /* no key: the processor dead-letters it */
    if (m->key && m->key_len)
        to = processor_key_partition(rp->cfg->partitioner, m->key, m->key_len,
                                     rp->new_count);
    else
        rp->keyless++;
    rd_kafka_headers_t *orig = NULL, *copy = NULL;
    if (!rd_kafka_message_headers(m, &orig))
        copy = rd_kafka_headers_copy(orig);
    processor_record_t rec = {rp->cfg->to_flushes_topic,
                              to,
                              m->key,
                              m->key_len,
                              m->payload,
                              m->len,
                              copy,
                              NULL};
    rd_kafka_resp_err_t err = processor_produce(rp->producer, &rec, RD_KAFKA_MSG_F_COPY);
    if (err) {
        rd_kafka_headers_destroy(copy);
        LOG_ERROR("repartition: forwarding %s offset %lld to %s: %s",
                  rp->cfg->flushes_topic, (long long)m->offset, rp->cfg->to_flushes_topic,
                  rd_kafka_err2str(err));
        return -1;
    }
    rp->forwarded++;
    return 0;
}

/* The old group's committed offsets of the flushes topic (-1 where none). */
static int committed_offsets(repartition_t *rp, int64_t *committed)
{
    const processor_config_t *cfg = rp->cfg;
    char errstr[512];
    rd_kafka_t *rk =
        processor_kafka_new(cfg, cfg->bootstrap_servers, PROCESSOR_KAFKA_CONSUMER, NULL,
                            errstr, sizeof(errstr));
    if (!rk) {
        LOG_ERROR("repartition: %s", errstr);
        return -1;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(rp->old_count);
    for (int32_t p = 0; p < rp->old_count; p++)
        rd_kafka_topic_partition_list_add(l, cfg->flushes_topic, p);
    /* Only reads the group's offsets: the consumer never subscribes. */
    rd_kafka_resp_err_t err = rd_kafka_committed(rk, l, PROCESSOR_KAFKA_TIMEOUT_MS);
    for (int i = 0; !err && i < l->cnt; i++)
        committed[l->elems[i].partition] = l->elems[i].err ? -1 : l->elems[i].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (err)
        LOG_ERROR("repartition: the committed offsets of group %s: %s", cfg->group_id,
                  rd_kafka_err2str(err));
    return err ? -1 : 0;
}

int processor_cmd_repartition(const processor_config_t *cfg)
{
    char errstr[512];
    repartition_t rp = {.cfg = cfg};
    processor_kafka_callbacks_t callbacks = {.delivery = on_delivery, .opaque = &rp};
    rp.producer =
        processor_kafka_new(cfg, cfg->bootstrap_servers, PROCESSOR_KAFKA_PRODUCER,
                            &callbacks, errstr, sizeof(errstr));
    if (!rp.producer) {
        LOG_ERROR("repartition: %s", errstr);
        return 1;
    }
    codec_limits_t limits = processor_limits(cfg);
    if (cfg->initial_document &&
        !(rp.initial_document = processor_read_document(cfg->initial_document, &limits,
                                                        errstr, sizeof(errstr)))) {
        LOG_ERROR("repartition: %s", errstr);
        rd_kafka_destroy(rp.producer);
        return 1;
    }
    rp.settings = processor_settings(cfg, rp.initial_document);
    processor_settings_id(rp.settings, rp.settings_id);
    int rc = check_topics(&rp);
    /* 1. The old layout's models, as the processors left them. */
    if (!rc && processor_rebuild_with_snapshots(cfg))
        rc = -1;
    int64_t *committed =
        codec_xcalloc((size_t)(rp.old_count > 0 ? rp.old_count : 1), sizeof(*committed));
    if (!rc)
        rc = committed_offsets(&rp, committed);
    /* 2. Every model's snapshot into the new layout, 3. the unprocessed flushes. */
    for (int32_t p = 0; !rc && p < rp.old_count; p++) {
        int64_t next_input = -1;
        uint64_t snapshots = rp.snapshots, forwarded = rp.forwarded;
        if (move_models(&rp, p, &next_input)) {
            rc = -1;
            break;
        }
        /* A flush at or after both the committed offset and the last change record is
         * unprocessed. Forwarding one the processors did apply is harmless: it reaches
         * the new processor as a resend (same client and seq) and is answered as such. */
        int64_t from = committed[p] > next_input ? committed[p] : next_input;
        if (committed[p] < 0)
            LOG_WARN("repartition: group %s has no committed offset for %s partition %d "
                     "(another --group-id?): forwarding from %s",
                     cfg->group_id, cfg->flushes_topic, p,
                     next_input >= 0 ? "after its last change record" : "its start");
        if (from < 0)
            from = 0;
        processor_partition_read_t rd = {cfg->flushes_topic, p,    from, -1,
                                         forward_visit,      NULL, &rp};
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            rp.producer, cfg->flushes_topic, p, &lo, &hi, PROCESSOR_KAFKA_TIMEOUT_MS);
        if (err) { /* forwarding nothing would lose the unprocessed flushes */
            LOG_ERROR("repartition: the offsets of %s partition %d: %s",
                      cfg->flushes_topic, p, rd_kafka_err2str(err));
            rc = -1;
            break;
        }
        if (from < lo)
            rd.from = lo;
        if (rd.from < hi && processor_read_partition(cfg, cfg->bootstrap_servers, &rd)) {
            rc = -1;
            break;
        }
        LOG_INFO("repartition: partition %d: %llu models written to %s, %llu unprocessed "
                 "flushes (from offset %lld) forwarded to %s",
                 p, (unsigned long long)(rp.snapshots - snapshots),
                 cfg->to_snapshots_topic, (unsigned long long)(rp.forwarded - forwarded),
                 (long long)rd.from, cfg->to_flushes_topic);
    }
    free(committed);
    if (rd_kafka_flush(rp.producer, FLUSH_TIMEOUT_MS)) {
        LOG_ERROR("repartition: records not delivered within %d ms", FLUSH_TIMEOUT_MS);
        rc = -1;
    }
    if (atomic_load(&rp.delivery_failures)) {
        LOG_ERROR("repartition: %llu records were not delivered",
                  (unsigned long long)atomic_load(&rp.delivery_failures));
        rc = -1;
    }
    rd_kafka_destroy(rp.producer);
    codec_value_destroy(rp.initial_document);
    free(rp.settings);
    if (rc) {
        LOG_ERROR(
            "repartition: failed; the old topics are untouched. Fix the cause, empty "
            "--state-dir and run it again (the new topics may hold part of the "
            "output: snapshots are installed only when ahead, and a flush forwarded "
            "twice is answered as a resend)");
        return 1;
    }
    LOG_INFO("repartition: done: %llu models moved to %s (%d partitions), %llu flushes "
             "forwarded to %s (%llu without a key). Start the processors on the new "
             "topics with empty state directories.",
             (unsigned long long)rp.snapshots, cfg->to_snapshots_topic, rp.new_count,
             (unsigned long long)rp.forwarded, cfg->to_flushes_topic,
             (unsigned long long)rp.keyless);
    return 0;
}
