/* processor/cmd_dev.c - `flushout-processor dev`: embedded broker + processor. */
#define _GNU_SOURCE /* nftw */
#include "cmd_dev.h"

#include <ftw.h>
#include <pthread.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/alloc.h"
#include "gateway.h"
#include "kafka.h"
#include "log.h"
#include "run.h"

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Creates the --extra-topics, "name:partitions,...". @returns 0, or -1 (logged). */
static int create_extra_topics(rd_kafka_mock_cluster_t *mc, const char *list,
                               int replication)
{
    while (list && *list) {
        size_t len = strcspn(list, ",");
        const char *colon = memchr(list, ':', len);
        char name[256];
        char *end = NULL;
        long partitions = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == list || (size_t)(colon - list) >= sizeof(name) ||
            end != list + len || partitions < 1 || partitions > 100000) {
            LOG_ERROR("dev: --extra-topics: expected NAME:PARTITIONS[,...], not \"%.*s\"",
                      (int)len, list);
            return -1;
        }
        memcpy(name, list, (size_t)(colon - list));
        name[colon - list] = '\0';
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(mc, name, (int)partitions, replication);
        if (err) {
            LOG_ERROR("dev: creating topic %s: %s", name, rd_kafka_err2str(err));
            return -1;
        }
        list += len + (list[len] == ',');
    }
    return 0;
}

/* dev's gateway: --no-auth, served on its own thread while the processor runs. */
typedef struct dev_gateway_s {
    processor_gateway_t *gw;
    pthread_t thread;
    volatile sig_atomic_t stop;
} dev_gateway_t;

static void *dev_gateway_main(void *arg)
{
    dev_gateway_t *g = arg;
    processor_gateway_serve(g->gw, &g->stop);
    return NULL;
}

static char *default_str(char *value, const char *fallback)
{
    return value ? value : codec_xmemdup(fallback, strlen(fallback));
}

static int dev_gateway_start(dev_gateway_t *g, processor_config_t *cfg,
                             const char *bootstrap)
{
    /* The gateway's own options are not dev's: development settings. */
    cfg->no_auth = 1;
    cfg->timeout_ms = 5000;
    cfg->rate_limit = 0;
    cfg->rate_burst = 1;
    cfg->max_connections = 1024;
    cfg->max_in_flight = 64;
    cfg->gateway_group = default_str(cfg->gateway_group, "flushout-gateway");
    cfg->jwt_alg = default_str(cfg->jwt_alg, "HS256");
    char errstr[512];
    g->gw = processor_gateway_start(cfg, bootstrap, (uint16_t)cfg->gateway_port, errstr,
                                    sizeof(errstr));
    if (!g->gw) {
        LOG_ERROR("dev: gateway: %s", errstr);
        return -1;
    }
    if (pthread_create(&g->thread, NULL, dev_gateway_main, g)) {
        LOG_ERROR("dev: cannot start the gateway's thread");
        processor_gateway_destroy(g->gw);
        g->gw = NULL;
        return -1;
    }
    LOG_INFO("dev: gateway at http://localhost:%llu/v1/models/{model} (no "
             "authentication)",
             (unsigned long long)cfg->gateway_port);
    return 0;
}

static void dev_gateway_stop(dev_gateway_t *g)
{
    if (!g->gw)
        return;
    g->stop = 1;
    pthread_join(g->thread, NULL);
    processor_gateway_destroy(g->gw);
    g->gw = NULL;
}

int processor_cmd_dev(processor_config_t *cfg)
{
    static volatile sig_atomic_t stop;
    processor_catch_signals(&stop);
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "client.id", "flushout-dev-broker", NULL, 0);
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0); /* it only hosts the cluster */
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        LOG_ERROR("dev: %s", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, (int)cfg->brokers);
    if (!mc) {
        LOG_ERROR("dev: cannot start the embedded broker");
        rd_kafka_destroy(rk);
        return 1;
    }
    const char *topics[] = {cfg->flushes_topic, cfg->replies_topic, cfg->changes_topic,
                            cfg->dlq_topic, cfg->snapshots_topic};
    int replication = cfg->brokers < 3 ? (int)cfg->brokers : 3;
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++) {
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(mc, topics[i], (int)cfg->partitions, replication);
        if (err) {
            LOG_ERROR("dev: creating topic %s: %s", topics[i], rd_kafka_err2str(err));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            return 1;
        }
    }
    if (create_extra_topics(mc, cfg->extra_topics, replication)) {
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        return 1;
    }
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);
    /* Before any client connects: the bootstrap servers are not printed yet. */
    if (processor_mock_nodelay(bootstrap) < (int)cfg->brokers)
        LOG_WARN("dev: could not turn Nagle's algorithm off on every broker's socket; "
                 "responses may wait 40 ms for the client's acknowledgements");
    printf("bootstrap.servers=%s\n", bootstrap);
    fflush(stdout);
    LOG_INFO("dev: embedded Kafka-protocol broker (%llu brokers, %llu partitions per "
             "topic) at %s. It keeps everything in memory and loses it at exit: for "
             "development and tests only",
             (unsigned long long)cfg->brokers, (unsigned long long)cfg->partitions,
             bootstrap);

    int rc = 0;
    if (cfg->broker_only) {
        while (!stop)
            usleep(100 * 1000);
    } else {
        /* The broker starts empty, so the state must too: a fresh directory. */
        char dir[] = "/tmp/flushout-dev-XXXXXX";
        if (!mkdtemp(dir)) {
            LOG_ERROR("dev: cannot create a state directory in /tmp");
            rc = 1;
        } else {
            cfg->low_latency = 1;
            dev_gateway_t gateway = {.stop = 0};
            if (cfg->gateway_port && dev_gateway_start(&gateway, cfg, bootstrap))
                rc = 1;
            else
                rc = processor_run(cfg, bootstrap, dir, &stop);
            dev_gateway_stop(&gateway);
            nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return rc;
}
