/* processor/run_sweep.c - snapshot records: the count-based ones of a step, and the
 * sweep that publishes every model changed since its last one.
 *
 * Snapshot records are not in the outbox: a lost count-based one is replaced by the
 * next, a lost swept one leaves the model's mark for the next pass. Both are published
 * between steps, of committed state. */
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec/alloc.h"
#include "codec/msgpack.h"
#include "log.h"
#include "run_int.h"

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
        LOG_WARN("partition %d model " MODEL_FMT ": no snapshot record: %s", p->id,
                 MODEL_ARG(model, model_len), errstr);
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
        /* Sized at once, and handed to librdkafka below rather than copied: a 10 MB
         * document's record, grown by doubling and then copied, was most of a step's
         * time (and page faults) in the 10 MB document benchmark. */
        sb.alloc = (size < r->max_message_bytes ? size : r->max_message_bytes) + 4096;
        sb.data = codec_xmalloc(sb.alloc);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, codec_sbuffer_write);
        if (state_store_pack_snapshot_record(p->store, model, model_len, &pk, errstr,
                                             sizeof(errstr))) {
            LOG_WARN("partition %d model " MODEL_FMT ": no snapshot record: %s", p->id,
                     MODEL_ARG(model, model_len), errstr);
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
                "partition %d model " MODEL_FMT ": no snapshot record, %s (%zu bytes) "
                "is larger than message.max.bytes (%zu); a restore replays its change "
                "records instead, so keep them (logged once a minute)",
                p->id, MODEL_ARG(model, model_len),
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
        rd_kafka_resp_err_t err =
            processor_produce(r->producer, &rec, RD_KAFKA_MSG_F_FREE);
        if (err) {
            rd_kafka_headers_destroy(hdrs); /* still ours: nothing was produced */
            LOG_WARN("partition %d model " MODEL_FMT ": snapshot record not produced: %s",
                     p->id, MODEL_ARG(model, model_len), rd_kafka_err2str(err));
            free(sw);
        } else if (swept) {
            state_store_snapshot_sent(p->store, model, model_len);
        }
        published = !err;
        if (published) {
            atomic_fetch_add(&r->snapshot_records, 1);
            sb.data = NULL; /* librdkafka's now */
        }
    }
    msgpack_sbuffer_destroy(&sb);
    return published;
}

void run_snapshots_produce(part_t *p, const step_out_t *so)
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
    /* The mark is cleared when Kafka confirms the record (run_take_done()). */
    sw->published += publish_snapshot(p, model, model_len, true);
    return 0;
}

bool run_sweep_chunk(part_t *p)
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
        run_part_fail(p);
        return false;
    }
    p->sweep_published += sw.published;
    if (sw.visited == SWEEP_CHUNK)
        return true;
    /* The pass is over. */
    if (p->sweep_published)
        LOG_INFO("partition %d: %llu snapshot records published (models changed since "
                 "their last one) in %.2f s",
                 p->id, (unsigned long long)p->sweep_published,
                 processor_monotonic_s() - p->sweep_started_at);
    run_sweep_plan(p, p->sweep_started_at +
                          (double)r->cfg->snapshot_topic_interval_ms / 1e3);
    return false;
}

void run_sweep_plan(part_t *p, double at)
{
    atomic_store(&p->sweep_at, at);
    p->sweep_started_at = 0;
    p->sweep_published = 0;
    free(p->sweep_after);
    p->sweep_after = NULL;
    p->sweep_after_len = 0;
}
