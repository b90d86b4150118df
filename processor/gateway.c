/* processor/gateway.c - `flushout-processor gateway` (GATEWAY.md): the service
 * thread's loop, what it does with the Kafka threads' events, and the command. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "gateway_int.h"
#include "log.h"
#include "metrics.h"
#include "run.h"
#include "setup.h"

#define TICK_US (100 * LWS_US_PER_MS) /* how often deadlines are checked */

/* Answers a request that will get no reply with a 503 (code, why), and forgets it. */
static void fail_pending(processor_gateway_t *gw, gw_pending_t *p, int code,
                         const char *why)
{
    size_t len = 0;
    char *json =
        gw_error_json(code, why, p->model, p->client, p->client ? &p->seq : NULL, &len);
    gw_conn_answer(gw, p->conn_id, gw_status(code), json, len);
    gw_pending_free(gw, p);
}

void gw_on_events(processor_gateway_t *gw)
{
    for (gw_event_t *e = gw_events_take(gw), *next; e; e = next) {
        next = e->next;
        gw_pending_t *p = NULL;
        if (e->kind == GW_EVENT_REPLY || e->kind == GW_EVENT_FAILED)
            HASH_FIND(hh, gw->pending, &e->corr, sizeof(e->corr), p);
        if (p && e->kind == GW_EVENT_REPLY) {
            unsigned status = 0;
            size_t len = 0;
            char *json = gw_reply_answer(gw, p, e->bytes, e->len, &status, &len);
            gw->answered++;
            double waited = processor_monotonic_s() - p->sent_at;
            processor_histogram_record(&gw->round_trip,
                                       waited > 0 ? (uint64_t)(waited * 1e6) : 0);
            gw_conn_answer(gw, p->conn_id, status, json, len);
            gw_pending_free(gw, p);
        } else if (p) {
            char why[256];
            snprintf(why, sizeof(why), "Kafka did not take the request (%s): retry",
                     rd_kafka_err2str(e->err));
            fail_pending(gw, p, GW_UNAVAILABLE, why);
        } else if (e->kind == GW_EVENT_CHANGED) {
            gw_notify_changed(gw, e->bytes, e->count);
        } else if (e->kind == GW_EVENT_READING) {
            gw_partition_reading(gw, (int32_t)e->count);
        }
        gw_event_free(e);
    }
}

void gw_expire(processor_gateway_t *gw, double now)
{
    while (gw->pending_head && gw->pending_head->deadline <= now) {
        gw_pending_t *p = gw->pending_head;
        char why[400];
        snprintf(why, sizeof(why),
                 "no reply from the processor within %llu ms; the request may still be "
                 "applied: a retry with the same seq is safe (a flush already applied is "
                 "answered as a duplicate)",
                 (unsigned long long)gw->cfg->timeout_ms);
        gw->timeouts++;
        fail_pending(gw, p, GW_TIMEOUT, why);
    }
}

void gw_metrics_write(processor_gateway_t *gw, FILE *fp)
{
    size_t kinds[3] = {0, 0, 0};
    for (gw_conn_t *c = gw->conns; c; c = c->hh.next)
        kinds[c->kind]++;
    pthread_mutex_lock(&gw->lock);
    size_t reply_partitions = gw->n_reply_partitions;
    pthread_mutex_unlock(&gw->lock);
    fprintf(fp,
            "# HELP flushout_gateway_requests_total Requests produced to the flushes "
            "topic.\n# TYPE flushout_gateway_requests_total counter\n"
            "flushout_gateway_requests_total %llu\n",
            (unsigned long long)gw->requests);
    fprintf(fp, "# HELP flushout_gateway_answers_total Answers to clients (HTTP "
                "responses and WebSocket replies), by status.\n"
                "# TYPE flushout_gateway_answers_total counter\n");
    for (unsigned s = 0; s < sizeof(gw->answers) / sizeof(gw->answers[0]); s++)
        if (gw->answers[s])
            fprintf(fp, "flushout_gateway_answers_total{status=\"%u\"} %llu\n", s,
                    (unsigned long long)gw->answers[s]);
    fprintf(fp,
            "# HELP flushout_gateway_timeouts_total Requests answered 503 timeout.\n"
            "# TYPE flushout_gateway_timeouts_total counter\n"
            "flushout_gateway_timeouts_total %llu\n",
            (unsigned long long)gw->timeouts);
    static const char *const kind_names[3] = {"http", "events", "websocket"};
    fprintf(fp, "# HELP flushout_gateway_connections Open connections by kind.\n"
                "# TYPE flushout_gateway_connections gauge\n");
    for (int k = 0; k < 3; k++)
        fprintf(fp, "flushout_gateway_connections{kind=\"%s\"} %zu\n", kind_names[k],
                kinds[k]);
    fprintf(fp,
            "# HELP flushout_gateway_waiting Requests waiting for their replies.\n"
            "# TYPE flushout_gateway_waiting gauge\nflushout_gateway_waiting %u\n"
            "# HELP flushout_gateway_watched_models Models with subscribers here.\n"
            "# TYPE flushout_gateway_watched_models gauge\n"
            "flushout_gateway_watched_models %u\n"
            "# HELP flushout_gateway_reply_partitions Replies topic partitions this "
            "gateway owns (0: not ready).\n"
            "# TYPE flushout_gateway_reply_partitions gauge\n"
            "flushout_gateway_reply_partitions %zu\n",
            HASH_COUNT(gw->pending), HASH_COUNT(gw->watches), reply_partitions);
    processor_histogram_write_prometheus(
        fp, "flushout_gateway_round_trip_seconds",
        "From a request produced to its reply read, as this gateway saw it.",
        &gw->round_trip);
}

static void on_tick(lws_sorted_usec_list_t *sul)
{
    processor_gateway_t *gw = lws_container_of(sul, processor_gateway_t, tick);
    gw_expire(gw, processor_monotonic_s());
    gw_streams_sweep(gw);
    lws_sul_schedule(gw->lws, 0, &gw->tick, on_tick, TICK_US);
}

/* libwebsockets' own log lines go through ours, warnings and errors only. */
static void lws_log(int level, const char *line)
{
    size_t len = strcspn(line, "\n");
    if (level & LLL_ERR)
        LOG_ERROR("gateway: libwebsockets: %.*s", (int)len, line);
    else
        LOG_WARN("gateway: libwebsockets: %.*s", (int)len, line);
}

processor_gateway_t *processor_gateway_start(const processor_config_t *cfg,
                                             const char *bootstrap, uint16_t port,
                                             char *errstr, size_t errstr_size)
{
    processor_gateway_t *gw = codec_xcalloc(1, sizeof(*gw));
    gw->cfg = cfg;
    gw->limits = processor_limits(cfg);
    pthread_mutex_init(&gw->lock, NULL);
    if (gw_auth_setup(gw, errstr, errstr_size))
        goto fail;
    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = port;
    info.iface = cfg->http_address && *cfg->http_address ? cfg->http_address : NULL;
    info.protocols = gw_protocols;
    info.user = gw;
    info.max_http_header_data = 16384; /* room for a long bearer token */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8;
    info.fd_limit_per_thread = (unsigned)cfg->max_connections + 64;
    info.timeout_secs = 30;
    info.keepalive_timeout = 60; /* an idle keep-alive connection, between requests */
    gw->lws = lws_create_context(&info);
    if (!gw->lws) {
        snprintf(errstr, errstr_size, "cannot serve on %s port %u (is it taken?)",
                 info.iface ? info.iface : "every interface", (unsigned)port);
        goto fail;
    }
    if (gw_kafka_start(gw, bootstrap, errstr, errstr_size))
        goto fail;
    gw->reading = codec_xcalloc((size_t)gw->changes_partitions + 1, sizeof(bool));
    lws_sul_schedule(gw->lws, 0, &gw->tick, on_tick, TICK_US);
    if (cfg->no_auth)
        LOG_WARN("gateway: --no-auth: every request is accepted without a token, with "
                 "the context and client id it names. For development only.");
    LOG_INFO("gateway: serving HTTP, event streams and WebSocket on port %u; requests to "
             "%s, replies from %s (group %s)",
             (unsigned)port, cfg->flushes_topic, cfg->replies_topic, cfg->gateway_group);
    return gw;
fail:
    processor_gateway_destroy(gw);
    return NULL;
}

void processor_gateway_serve(processor_gateway_t *gw, volatile sig_atomic_t *stop)
{
    while (!*stop)
        if (lws_service(gw->lws, 0) < 0)
            break;
}

void processor_gateway_destroy(processor_gateway_t *gw)
{
    if (!gw)
        return;
    /* The threads first (they wake the service thread), then the connections (closing
     * them ends their subscriptions), then the Kafka clients. */
    gw_kafka_stop_threads(gw);
    if (gw->lws) {
        lws_sul_cancel(&gw->tick);
        lws_context_destroy(gw->lws);
    }
    gw_kafka_destroy(gw);
    while (gw->pending_head)
        gw_pending_free(gw, gw->pending_head);
    gw_auth_destroy(gw);
    free(gw->reading);
    pthread_mutex_destroy(&gw->lock);
    LOG_INFO("gateway: stopped after %llu requests, %llu replies, %llu timeouts",
             (unsigned long long)gw->requests, (unsigned long long)gw->answered,
             (unsigned long long)gw->timeouts);
    free(gw);
}

int processor_cmd_gateway(processor_config_t *cfg)
{
    static volatile sig_atomic_t stop;
    processor_catch_signals(&stop);
    cfg->low_latency = 1; /* replies are waited for: short fetch waits */
    char errstr[512];
    processor_gateway_t *gw = processor_gateway_start(
        cfg, cfg->bootstrap_servers, (uint16_t)cfg->gateway_port, errstr, sizeof(errstr));
    if (!gw) {
        LOG_ERROR("gateway: %s", errstr);
        return 1;
    }
    processor_gateway_serve(gw, &stop);
    processor_gateway_destroy(gw);
    return 0;
}
