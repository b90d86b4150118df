/* processor/run_loop.c - the runner's main loop: setup, polling the group consumer,
 * housekeeping, and the clean shutdown.
 *
 * processor_run() checks the configuration, the topics and the state directory before
 * joining the group, starts the workers and the producer thread, polls until told to
 * stop, then closes the consumer (which revokes every partition: steps finish, outputs
 * are delivered, offsets committed) and tears the runner down. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/alloc.h"
#include "log.h"
#include "run_int.h"

#define COMMIT_INTERVAL_S 1  /* consumer offsets to Kafka, and outbox cleanup */
#define STATS_INTERVAL_S  30 /* the stats line */

/* Every second: takeovers to try again, outbox cleanup for idle partitions, a step
 * for every partition while the stores' caches together exceed --cache-mb (a store
 * over its share evicts at its commit: an idle one holding what a busy one took
 * beyond its share gives it back), and offset commits. */
static void housekeeping(runner_t *r)
{
    double now = processor_monotonic_s();
    bool caches_over = atomic_load(&r->cache_pool) > ((size_t)r->cfg->cache_mb << 20);
    for (size_t i = 0; i < r->parts_cap; i++) {
        part_t *p = r->parts[i];
        if (!p)
            continue;
        pthread_mutex_lock(&p->lock);
        if (p->assigned && !p->ready && !p->failed && !p->abort && p->retry_at > 0 &&
            now >= p->retry_at) {
            p->retry_at = 0;
            run_schedule(p);
        }
        if (p->assigned && p->ready && !p->failed &&
            (caches_over || p->done_len || p->swept_len ||
             p->changes_next > p->changes_stored ||
             (r->cfg->snapshot_topic_interval_ms && r->cfg->snapshot_topic_every &&
              processor_monotonic_s() >= atomic_load(&p->sweep_at))))
            run_schedule(p);
        pthread_mutex_unlock(&p->lock);
    }
    run_offsets_commit(r, NULL);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    processor_log(level <= 3   ? PROCESSOR_LOG_ERROR
                  : level <= 4 ? PROCESSOR_LOG_WARN
                  : level <= 6 ? PROCESSOR_LOG_INFO
                               : PROCESSOR_LOG_DEBUG,
                  "kafka %s: %s", fac, buf);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    runner_t *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[512];
        rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        LOG_ERROR("kafka fatal error: %s", fatal);
        atomic_store(&r->fatal, true);
        return;
    }
    /* Transport errors are retried by librdkafka; they are worth a line, no more. */
    LOG_WARN("kafka: %s", reason);
}

/* Checks that the topics exist and that changes are co-partitioned with flushes. */
static int check_topics(runner_t *r, char *errstr, size_t errstr_size)
{
    const processor_config_t *c = r->cfg;
    const char *topics[] = {c->flushes_topic, c->changes_topic, c->replies_topic,
                            c->dlq_topic, c->snapshots_topic};
    int counts[5];
    int n = c->snapshot_topic_every ? 5 : 4;
    for (int i = 0; i < n; i++) {
        counts[i] = processor_topic_partitions(
            r->producer, topics[i], PROCESSOR_KAFKA_TIMEOUT_MS, errstr, errstr_size);
        if (counts[i] < 0)
            return -1;
    }
    const char *copartitioned[] = {topics[0], topics[1], topics[4]};
    int copartitioned_counts[] = {counts[0], counts[1], n == 5 ? counts[4] : -1};
    if (processor_copartition_check(copartitioned, copartitioned_counts, 3, errstr,
                                    errstr_size))
        return -1;
    r->partition_count = counts[0];
    return 0;
}

/* Checks every partition store already in the state directory against the flushes
 * topic's partition count before joining the group, so that a processor pointed at
 * repartitioned topics stops at once instead of at its first assignment.
 * @returns 0, or -1 and errstr. */
static int check_state_layout(runner_t *r, char *errstr, size_t errstr_size)
{
    DIR *d = opendir(r->state_dir);
    if (!d)
        return 0; /* created later; nothing in it yet */
    int rc = 0;
    for (struct dirent *e; !rc && (e = readdir(d));) {
        int32_t partition;
        if (!processor_partition_dir_parse(e->d_name, &partition))
            continue;
        char dir[PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/%s", r->state_dir, e->d_name);
        state_store_conf_t sc =
            processor_store_conf(r->cfg, dir, partition, 8u << 20, NULL);
        char why[512];
        state_store_t *store = state_store_open(&sc, why, sizeof(why));
        if (!store) { /* refused with the partition, if it is ever assigned here */
            LOG_WARN("partition %d: cannot open its store: %s", partition, why);
            continue;
        }
        rc = run_state_check(r, store, dir, NULL, NULL, errstr, errstr_size);
        state_store_close(store);
    }
    closedir(d);
    return rc;
}

/* The producer or the group consumer, with the runner's callbacks. */
static rd_kafka_t *new_client(runner_t *r, processor_kafka_role_t role, char *errstr,
                              size_t errstr_size)
{
    bool producer = role == PROCESSOR_KAFKA_PRODUCER;
    processor_kafka_callbacks_t callbacks = {
        .delivery = producer ? run_on_delivery : NULL,
        .rebalance = producer ? NULL : run_on_rebalance,
        .log = on_log,
        .error = on_error,
        .opaque = r,
    };
    return processor_kafka_new(r->cfg, r->bootstrap, role, &callbacks, errstr,
                               errstr_size);
}

/* The runner, before anything that can fail. */
static runner_t *runner_new(const processor_config_t *cfg, const char *bootstrap_servers,
                            const char *state_dir, volatile sig_atomic_t *stop)
{
    runner_t *r = codec_xcalloc(1, sizeof(*r));
    r->cfg = cfg;
    r->state_dir = state_dir;
    r->bootstrap = bootstrap_servers;
    r->stop = stop;
    r->limits = processor_limits(cfg);
    failpoint_init();
    pthread_mutex_init(&r->runq_lock, NULL);
    pthread_cond_init(&r->runq_cond, NULL);
    pthread_mutex_init(&r->parts_lock, NULL);
    pthread_mutex_init(&r->reply_topics_lock, NULL);
    atomic_store(&r->loop_at, processor_monotonic_s());
    return r;
}

/* Checks the configuration, the topics and the state directory, creates the clients
 * and starts the HTTP server: everything before joining the group.
 * @returns 0, or -1 and errstr. */
static int runner_setup(runner_t *r, char *errstr, size_t errstr_size)
{
    const processor_config_t *cfg = r->cfg;
    if (processor_check_output_limits(cfg, errstr, errstr_size) ||
        processor_make_dirs(r->state_dir, errstr, errstr_size) ||
        (cfg->checkpoint_dir &&
         processor_make_dirs(cfg->checkpoint_dir, errstr, errstr_size)))
        return -1;
    if (cfg->initial_document &&
        !(r->initial_document = processor_read_document(cfg->initial_document, &r->limits,
                                                        errstr, errstr_size)))
        return -1;

    r->settings = processor_settings(cfg, r->initial_document);
    processor_settings_id(r->settings, r->settings_id);
    run_cache_share(r);
    if (!(r->producer = new_client(r, PROCESSOR_KAFKA_PRODUCER, errstr, errstr_size)) ||
        check_topics(r, errstr, errstr_size) ||
        check_state_layout(r, errstr, errstr_size) ||
        !(r->consumer = new_client(r, PROCESSOR_KAFKA_CONSUMER, errstr, errstr_size)))
        return -1;
    rd_kafka_poll_set_consumer(r->consumer);
    if (cfg->http_port) {
        if (!(r->http = processor_http_start(cfg->http_address, (uint16_t)cfg->http_port,
                                             run_status_render, r, errstr, errstr_size)))
            return -1;
        LOG_INFO("serving /metrics, /healthz and /readyz on %s port %llu",
                 cfg->http_address ? cfg->http_address : "every interface",
                 (unsigned long long)cfg->http_port);
    }
    char max_bytes[32];
    size_t max_bytes_len = sizeof(max_bytes);
    r->max_message_bytes = 1000000; /* librdkafka's default */
    if (rd_kafka_conf_get(rd_kafka_conf(r->producer), "message.max.bytes", max_bytes,
                          &max_bytes_len) == RD_KAFKA_CONF_OK)
        r->max_message_bytes = (size_t)strtoull(max_bytes, NULL, 10);
    atomic_store(&r->snapshot_too_large_logged, -60);
    return 0;
}

/* Starts the workers and the thread that serves the delivery reports. */
static void runner_start_threads(runner_t *r)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    r->worker_count =
        r->cfg->threads ? (size_t)r->cfg->threads : (size_t)(cores > 0 ? cores : 1);
    r->workers = codec_xcalloc(r->worker_count, sizeof(*r->workers));
    /* Named like librdkafka's rdk:* threads, so that top -H and perf tell them apart. */
    char name[16];
    for (size_t i = 0; i < r->worker_count; i++) {
        pthread_create(&r->workers[i], NULL, run_worker_main, r);
        snprintf(name, sizeof(name), "fo:worker%u", (unsigned)(i % 1000));
        pthread_setname_np(r->workers[i], name);
    }
    pthread_create(&r->producer_thread, NULL, run_producer_main, r);
    pthread_setname_np(r->producer_thread, "fo:delivery");
}

/* Subscribes and polls the group consumer until told to stop or a fatal error; *rc
 * becomes processor_run()'s result. @returns rd_kafka_subscribe()'s error (logged). */
static rd_kafka_resp_err_t runner_poll(runner_t *r, int *rc)
{
    const processor_config_t *cfg = r->cfg;
    rd_kafka_topic_partition_list_t *sub = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(sub, cfg->flushes_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(r->consumer, sub);
    rd_kafka_topic_partition_list_destroy(sub);
    if (err) {
        LOG_ERROR("subscribing to %s: %s", cfg->flushes_topic, rd_kafka_err2str(err));
        return err;
    }
    LOG_INFO("processing %s (%d partitions) in group %s with %zu threads; state in %s",
             cfg->flushes_topic, r->partition_count, cfg->group_id, r->worker_count,
             r->state_dir);
    LOG_DEBUG("limits: record %llu bytes, document %llu bytes, %u completions, depth "
              "%u, path %u, string %u bytes",
              (unsigned long long)cfg->max_record_bytes,
              (unsigned long long)cfg->max_document_bytes, r->limits.max_completions,
              r->limits.max_depth, r->limits.max_path_length, r->limits.max_string_bytes);
    double last = processor_monotonic_s(), last_stats = last;
    uint64_t last_records = 0;
    while (!*r->stop && !atomic_load(&r->fatal)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 100);
        double t = processor_monotonic_s(); /* one clock read per record */
        if (m && m->err) {
            LOG_WARN("consumer: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
        } else if (m) {
            run_dispatch(r, m, t);
        }
        atomic_store(&r->loop_at, t);
        if (t - last >= COMMIT_INTERVAL_S) {
            housekeeping(r);
            last = t;
        }
        if (t - last_stats >= STATS_INTERVAL_S) {
            uint64_t n = atomic_load(&r->records);
            run_stats_log(r, (double)(n - last_records) / (t - last_stats));
            last_records = n;
            last_stats = t;
        }
    }
    *rc = atomic_load(&r->fatal) ? 1 : 0;
    LOG_INFO("stopping: finishing the steps in flight, delivering, committing");
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

/* Leaves the group: closing the consumer revokes every partition (steps finish, the
 * outbox is delivered, offsets are committed). err: the subscription's. */
static void runner_leave(runner_t *r, rd_kafka_resp_err_t err)
{
    /* librdkafka 2.0 aborts when a cooperative-sticky consumer is closed before its
     * first assignment (librdkafka issue #4312, fixed in 2.3): wait a while for it. */
    for (double until = processor_monotonic_s() + 15; !err && !r->joined &&
                                                      !atomic_load(&r->fatal) &&
                                                      processor_monotonic_s() < until;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(r->consumer, 100);
        if (m)
            rd_kafka_message_destroy(m); /* nothing is assigned: nothing to process */
    }
    if (r->joined || err) {
        /* Closing revokes every partition: steps finish, the outbox is delivered,
         * offsets are committed, and the group is left. */
        rd_kafka_consumer_close(r->consumer);
    } else {
        LOG_WARN("leaving without closing the consumer: the group never answered its "
                 "join, and librdkafka %s cannot close it before (issue #4312); the "
                 "group forgets this member after session.timeout.ms",
                 rd_kafka_version_str());
        r->consumer_leaked = true;
    }
}

static void part_destroy(part_t *p)
{
    run_part_drop_queue(p);
    processor_handler_destroy(p->handler);
    state_store_close(p->store);
    free(p->queue);
    free(p->steps);
    free(p->done);
    for (size_t k = 0; k < p->swept_len; k++)
        free(p->swept[k]);
    free(p->swept);
    free(p->sweep_after);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->idle);
    free(p);
}

/* Stops the HTTP server and the threads, flushes the producer, destroys the clients
 * and frees the runner (whatever runner_setup() got to). */
static void runner_destroy(runner_t *r)
{
    processor_http_stop(r->http); /* it reads the parts and the consumer */
    if (r->workers) {
        pthread_mutex_lock(&r->runq_lock);
        r->stopping = true;
        pthread_cond_broadcast(&r->runq_cond);
        pthread_mutex_unlock(&r->runq_lock);
        for (size_t i = 0; i < r->worker_count; i++)
            pthread_join(r->workers[i], NULL);
        atomic_store(&r->producer_stop, true);
        pthread_join(r->producer_thread, NULL);
    }
    run_standby_free(r); /* after the workers: a takeover in flight may claim */
    if (r->consumer)
        run_stats_log(r, -1);
    if (r->producer) {
        rd_kafka_flush(r->producer, FLUSH_TIMEOUT_MS);
        rd_kafka_destroy(r->producer);
    }
    if (r->consumer && !r->consumer_leaked)
        rd_kafka_destroy(r->consumer);
    for (size_t i = 0; i < r->parts_cap; i++)
        if (r->parts[i])
            part_destroy(r->parts[i]);
    free(r->parts);
    free(r->workers);
    codec_value_destroy(r->initial_document);
    free(r->settings);
    pthread_mutex_destroy(&r->runq_lock);
    pthread_cond_destroy(&r->runq_cond);
    pthread_mutex_destroy(&r->parts_lock);
    pthread_mutex_destroy(&r->reply_topics_lock);
    free(r);
}

int processor_run(const processor_config_t *cfg, const char *bootstrap_servers,
                  const char *state_dir, volatile sig_atomic_t *stop)
{
    runner_t *r = runner_new(cfg, bootstrap_servers, state_dir, stop);
    int rc = 1;
    char errstr[2048]; /* a settings mismatch names every differing setting */
    if (runner_setup(r, errstr, sizeof(errstr))) {
        LOG_ERROR("%s", errstr);
    } else {
        runner_start_threads(r);
        run_standby_start(r);
        rd_kafka_resp_err_t err = runner_poll(r, &rc);
        run_standby_stop(r);
        runner_leave(r, err);
    }
    runner_destroy(r);
    if (!rc)
        LOG_INFO("stopped");
    return rc;
}

static volatile sig_atomic_t *signal_flag;

static void on_signal(int sig)
{
    (void)sig;
    *signal_flag = 1;
}

void processor_catch_signals(volatile sig_atomic_t *flag)
{
    signal_flag = flag;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int processor_cmd_run(const processor_config_t *cfg)
{
    static volatile sig_atomic_t stop;
    processor_catch_signals(&stop);
    return processor_run(cfg, cfg->bootstrap_servers, cfg->state_dir, &stop);
}
