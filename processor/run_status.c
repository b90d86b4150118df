/* processor/run_status.c - what the runner tells about itself: the stats line, and
 * /metrics, /healthz and /readyz.
 *
 * The HTTP thread (processor/http.c) reads only atomics (counters, histograms,
 * catch-up progress, the main loop's last turn) and what it reads under a partition's
 * lock (readiness, steps pending delivery, the store figures each worker copies there
 * at most once a second); the list of partitions under the runner's parts_lock. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "interceptor.h"
#include "log.h"
#include "run_int.h"

void run_stats_refresh(part_t *p, bool force)
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

/* The stats line: totals, and the time from a record consumed to its outputs handed to
 * the producer (the processor's own share of a round trip). rate < 0: the final line. */
void run_stats_log(runner_t *r, double rate)
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

/* ---- /metrics, /healthz, /readyz (on the HTTP thread) ---- */

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

/* processor/INTERCEPTORS.md, "Metrics". */
static void render_interceptor_metrics(const processor_interceptor_t *ic, FILE *fp)
{
    if (!ic)
        return;
    processor_interceptor_stats_t st;
    processor_interceptor_stats(ic, &st);
    metric_header(fp, "flushout_interceptor_info", "gauge",
                  "1, labelled with the SHA-256 of the --interceptor script.");
    fprintf(fp, "flushout_interceptor_info{sha256=\"%s\"} 1\n",
            processor_interceptor_sha256(ic));
    metric_value(fp, "flushout_interceptor_calls_total", "counter",
                 "Commands given to the interceptor.", st.calls);
    metric_value(fp, "flushout_interceptor_new_props_total", "counter",
                 "Interceptor calls that returned newProps.", st.new_props);
    metric_value(fp, "flushout_interceptor_rejections_total", "counter",
                 "Interceptor calls that rejected their command.", st.rejections);
    metric_value(fp, "flushout_interceptor_errors_total", "counter",
                 "Interceptor calls that failed (script errors, malformed results, "
                 "bounds); each rejects its command.",
                 st.errors);
    metric_header(fp, "flushout_interceptor_over_budget_total", "counter",
                  "Failed interceptor calls that hit a bound.");
    fprintf(fp,
            "flushout_interceptor_over_budget_total{bound=\"instructions\"} %llu\n"
            "flushout_interceptor_over_budget_total{bound=\"memory\"} %llu\n",
            (unsigned long long)st.over_instructions, (unsigned long long)st.over_memory);
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
    double checkpoint_age; /* s since its last checkpoint (-1: none since assigned) */
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
            double at = atomic_load(&p->checkpoint_at);
            v->checkpoint_age = at > 0 ? processor_monotonic_s() - at : -1;
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

    render_interceptor_metrics(r->cfg->interceptor_loaded, fp);

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
    standby_view_t sv;
    if (run_standby_view(r, &sv)) {
        metric_value(fp, "flushout_standby_partitions", "gauge",
                     "Partitions this instance does not own, kept caught up "
                     "(--standby-interval-ms).",
                     (uint64_t)sv.kept);
        metric_value(fp, "flushout_standby_partitions_refused", "gauge",
                     "Partitions not owned here whose store or records are of another "
                     "layout or settings: not kept (see the log).",
                     (uint64_t)sv.refused);
        metric_value(fp, "flushout_standby_passes_total", "counter",
                     "Passes of the standby over the partitions it keeps.", sv.passes);
        metric_value(fp, "flushout_standby_change_records_applied_total", "counter",
                     "Change records the standby applied to the partitions it keeps.",
                     sv.applied);
    }
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
    if (r->cfg->checkpoint_dir) {
        metric_value(fp, "flushout_checkpoints_total", "counter",
                     "Checkpoints of the partitions' stores made (--checkpoint-dir).",
                     atomic_load(&r->checkpoints));
        metric_value(fp, "flushout_checkpoint_failures_total", "counter",
                     "Checkpoints that could not be made (see the log); the last one of "
                     "the partition stays.",
                     atomic_load(&r->checkpoint_failures));
        PART_GAUGE(fp, views, n, "flushout_checkpoint_age_seconds",
                   "Seconds since the partition's last checkpoint (-1: none since it was "
                   "assigned). Flush points come every 30 s.",
                   v->checkpoint_age);
    }
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

/* /healthz: fails on a fatal error, a stuck main loop, or a partition that transient
 * errors kept from being taken over for --takeover-timeout-ms. */
static int healthz(runner_t *r, FILE *fp)
{
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

/* /readyz: fails until every assigned partition is served, naming the others. */
static int readyz(runner_t *r, FILE *fp)
{
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

int run_status_render(void *ctx, const char *path, FILE *fp)
{
    runner_t *r = ctx;
    if (!strcmp(path, "/metrics")) {
        render_metrics(r, fp);
        return 200;
    }
    if (!strcmp(path, "/healthz"))
        return healthz(r, fp);
    if (!strcmp(path, "/readyz"))
        return readyz(r, fp);
    return 404;
}
