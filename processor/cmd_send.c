/* processor/cmd_send.c - `flushout-processor send`. */
#include "cmd_send.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "cmd_apply.h"
#include "codec/json.h"
#include "codec/msgpack.h"
#include "kafka.h"
#include "log.h"

typedef struct sender_s {
    processor_config_t *cfg;
    rd_kafka_t *producer, *consumer;
    uint64_t seq;
    msgpack_sbuffer buf;
} sender_t;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Reads replies until the one for (model, client, seq) arrives. */
static int await_reply(sender_t *s, const char *model, const char *client, uint64_t seq,
                       FILE *out)
{
    const processor_config_t *cfg = s->cfg;
    double deadline = now_ms() + (double)cfg->timeout_ms;
    size_t client_len = strlen(client), model_len = strlen(model);
    while (now_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->consumer, 100);
        if (!m)
            continue;
        codec_value_t *v = NULL;
        char err[256];
        bool ours = false;
        if (!m->err && m->key_len == client_len && !memcmp(m->key, client, client_len) &&
            codec_msgpack_decode(m->payload, m->len, &codec_limits_trusted, &v, err,
                                 sizeof(err)) == CODEC_OK &&
            v->type == CODEC_VALUE_MAP) {
            const codec_value_t *rs = codec_map_get(v, "seq", 3);
            const codec_value_t *rm = codec_map_get(v, "model", 5);
            ours = rs && rs->type == CODEC_VALUE_INT && (uint64_t)rs->u.i == seq &&
                   (!rm || (rm->type == CODEC_VALUE_STR && rm->u.str.len == model_len &&
                            !memcmp(rm->u.str.ptr, model, model_len)));
        } else if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            LOG_WARN("send: %s", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
        if (ours) {
            processor_print_json(out, v);
            fflush(out);
        }
        codec_value_destroy(v);
        if (ours)
            return 0;
    }
    LOG_ERROR("send: no reply to seq %llu within %llu ms (is a processor running on "
              "%s?)",
              (unsigned long long)seq, (unsigned long long)cfg->timeout_ms,
              cfg->flushes_topic);
    return 1;
}

/* The string field name of request v, else fallback (NULL when neither). */
static const char *field_or(const codec_value_t *v, const char *name,
                            const char *fallback, char *buf, size_t size)
{
    const codec_value_t *f = codec_map_get(v, name, strlen(name));
    if (!f || f->type != CODEC_VALUE_STR || f->u.str.len >= size)
        return fallback;
    memcpy(buf, f->u.str.ptr, f->u.str.len);
    buf[f->u.str.len] = '\0';
    return buf;
}

/* Produces one request given as JSON: the model is its "model" or --model; "client"
 * and "seq" are filled in from --client and the running seq unless given. */
static int send_one(sender_t *s, const char *json, size_t len, FILE *out)
{
    const processor_config_t *cfg = s->cfg;
    codec_value_t *v = NULL;
    char err[512], model_buf[1024], client_buf[1024];
    if (codec_json_decode(json, len, NULL, &v, err, sizeof(err))) {
        LOG_ERROR("send: the request is not JSON: %s", err);
        return 2;
    }
    const char *model = NULL, *client = NULL;
    if (v->type == CODEC_VALUE_MAP) {
        model = field_or(v, "model", cfg->model, model_buf, sizeof(model_buf));
        client = field_or(v, "client", cfg->client, client_buf, sizeof(client_buf));
    }
    if (!model || !client) {
        LOG_ERROR("send: the request must be a JSON object naming its model and client "
                  "(or give --model and --client)");
        codec_value_destroy(v);
        return 2;
    }
    if (!codec_map_get(v, "client", 6))
        codec_map_set(v, "client", 6, codec_value_str(client, strlen(client)));
    const codec_value_t *given = codec_map_get(v, "seq", 3);
    uint64_t seq =
        given && given->type == CODEC_VALUE_INT ? (uint64_t)given->u.i : s->seq;
    if (!given)
        codec_map_set(v, "seq", 3, codec_value_int((int64_t)seq));
    s->seq = seq + 1;
    msgpack_sbuffer_clear(&s->buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s->buf, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        s->producer, RD_KAFKA_V_TOPIC(cfg->flushes_topic),
        RD_KAFKA_V_KEY(model, strlen(model)), RD_KAFKA_V_VALUE(s->buf.data, s->buf.size),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e) {
        LOG_ERROR("send: %s", rd_kafka_err2str(e));
        return 1;
    }
    if (rd_kafka_flush(s->producer, (int)cfg->timeout_ms)) {
        LOG_ERROR("send: the request was not delivered within %llu ms",
                  (unsigned long long)cfg->timeout_ms);
        return 1;
    }
    return await_reply(s, model, client, seq, out);
}

/* Reads every partition of the replies topic from its current end, so that no reply
 * to what is sent next can be missed, whichever client it is for. */
static int start_consumer(sender_t *s, char *errstr, size_t errstr_size)
{
    const processor_config_t *cfg = s->cfg;
    int count = processor_topic_partitions(
        s->consumer, cfg->replies_topic, PROCESSOR_KAFKA_TIMEOUT_MS, errstr, errstr_size);
    if (count < 0)
        return -1;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(count);
    for (int32_t p = 0; p < count; p++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
            s->consumer, cfg->replies_topic, p, &lo, &hi, PROCESSOR_KAFKA_TIMEOUT_MS);
        if (err) {
            snprintf(errstr, errstr_size, "offsets of %s: %s", cfg->replies_topic,
                     rd_kafka_err2str(err));
            rd_kafka_topic_partition_list_destroy(l);
            return -1;
        }
        rd_kafka_topic_partition_list_add(l, cfg->replies_topic, p)->offset = hi;
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(s->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        snprintf(errstr, errstr_size, "assign: %s", rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

int processor_cmd_send(processor_config_t *cfg, FILE *in, FILE *out)
{
    char errstr[512];
    if (!cfg->request) {
        LOG_ERROR("send: give a request as JSON, or - to read NDJSON from stdin");
        return 2;
    }
    sender_t s = {.cfg = cfg};
    if (cfg->seq) {
        char *end;
        s.seq = strtoull(cfg->seq, &end, 10);
        if (*end || end == cfg->seq || cfg->seq[0] == '-') {
            LOG_ERROR("send: --seq must be a non-negative integer, not \"%s\"", cfg->seq);
            return 2;
        }
    } else {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        s.seq = (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
    }
    cfg->low_latency = 1;
    int rc = 1;
    msgpack_sbuffer_init(&s.buf);
    if (!(s.producer =
              processor_kafka_new(cfg, cfg->bootstrap_servers, PROCESSOR_KAFKA_SENDER,
                                  NULL, errstr, sizeof(errstr))) ||
        !(s.consumer =
              processor_kafka_new(cfg, cfg->bootstrap_servers, PROCESSOR_KAFKA_READER,
                                  NULL, errstr, sizeof(errstr)))) {
        LOG_ERROR("send: %s", errstr);
        goto out;
    }
    /* Learning the topic's partitions now saves the producer's first send a wait for
     * its periodic metadata refresh (a second). */
    if (start_consumer(&s, errstr, sizeof(errstr)) ||
        processor_topic_partitions(s.producer, cfg->flushes_topic,
                                   PROCESSOR_KAFKA_TIMEOUT_MS, errstr,
                                   sizeof(errstr)) < 0) {
        LOG_ERROR("send: %s", errstr);
        goto out;
    }
    if (strcmp(cfg->request, "-")) {
        rc = send_one(&s, cfg->request, strlen(cfg->request), out);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        rc = 0;
        while (!rc && (n = getline(&line, &cap, in)) != -1)
            if (strspn(line, " \t\r\n") != (size_t)n)
                rc = send_one(&s, line, (size_t)n, out);
        free(line);
    }
out:
    if (s.consumer) /* never joined a group: nothing to leave */
        rd_kafka_destroy_flags(s.consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (s.producer)
        rd_kafka_destroy(s.producer);
    msgpack_sbuffer_destroy(&s.buf);
    return rc;
}
