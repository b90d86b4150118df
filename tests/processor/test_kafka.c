/* tests/processor/test_kafka.c - the Kafka processor end to end on librdkafka's mock
 * cluster, in process: replies and change records, snapshot and history requests,
 * many models over partitions against an in-memory reference, Spring's request/reply
 * headers, bad records to the dead-letter topic, a second instance catching up from
 * the changes topic, and identical output from two instances given the same input.
 * Each test has its own cluster (Criterion runs each in its own process). */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <dirent.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "processor/setup.h"
#include "processor/handler.h"
#include "processor/interceptor.h"
#include "processor/cmd_rebuild.h"
#include "processor/kafka.h"
#include "processor/log.h"
#include "processor/run.h"

#define PARTITIONS 4
#define WAIT_MS    30000
#define STR(x)     #x
#define XSTR(x)    STR(x)

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;
static int mock_brokers = 1;
static char bootstrap[256];
static char dir[] = "/tmp/flushout-test-kafka-XXXXXX";

/* ---- processor instances, each a thread running processor_run() ---- */

/* What an instance's thread reads, on the heap and listed until joined: a failed
 * assertion leaves the test's frame (and the instance_t in it) behind while the thread
 * runs on, so teardown stops what is still listed before the process exits under it. */
typedef struct instance_run_s {
    processor_config_t cfg; /* the instance's, copied: the same strings, not owned */
    char state_dir[PATH_MAX];
    pthread_t thread;
    volatile sig_atomic_t stop;
    int rc;
    struct instance_run_s *next;
} instance_run_t;

typedef struct instance_s {
    processor_config_t cfg;
    instance_run_t *run; /* NULL once joined */
} instance_t;

static instance_run_t *running; /* started and not joined yet */

static void *instance_main(void *opaque)
{
    instance_run_t *run = opaque;
    run->rc = processor_run(&run->cfg, bootstrap, run->state_dir, &run->stop);
    return NULL;
}

/* The state and limit options of every instance (and of rebuild, which must match). */
static const char *const state_options[] = {"--ids",
                                            "sequential",
                                            "--max-record-bytes",
                                            "4096",
                                            "--max-completions",
                                            "4",
                                            "--max-depth",
                                            "8",
                                            "--max-path-length",
                                            "4",
                                            "--max-string-bytes",
                                            "256",
                                            "--max-document-bytes",
                                            "2048",
                                            NULL};

/* Starts an instance with its own state directory; extra options as "--name", "value"
 * pairs, NULL-terminated. */
static void instance_start_with(instance_t *in, const char *name, bool lowered_limits,
                                const char *const *extra)
{
    memset(in, 0, sizeof(*in));
    char state_dir[PATH_MAX];
    snprintf(state_dir, sizeof(state_dir), "%s/%s", dir, name);
    /* The mock cluster forgets a member that left only when its session times out:
     * a short session lets the next instance join soon.
     * One request in flight per connection: librdkafka 2.0's idempotent producer takes
     * the records of a Produce request that failed (Not Leader, a request timeout) as
     * delivered when a later request of the same partition succeeds before they are
     * sent again ("implicitly acked by subsequent batch success"), trusting the broker
     * to have refused that later request (OUT_OF_ORDER_SEQUENCE_NUMBER) had they not
     * been written. The mock cluster checks sequences only for transactional producers:
     * it writes the later request, and the records are lost, reported delivered with no
     * offset. The fault tests inject exactly such errors (a change record still being
     * retried after "Leaders move" met the Produce errors pushed two rounds later). */
    const char *argv[40] = {"--bootstrap-servers",
                            bootstrap,
                            "--state-dir",
                            state_dir,
                            "--threads",
                            "2",
                            "-X",
                            "fetch.wait.max.ms=10",
                            "-X",
                            "session.timeout.ms=6000",
                            "-X",
                            "max.in.flight.requests.per.connection=1"};
    int argc = 12;
    for (const char *const *o = state_options; lowered_limits && *o; o++)
        argv[argc++] = *o;
    if (getenv("TEST_KAFKA_DEBUG")) {
        argv[argc++] = "-X";
        argv[argc++] = getenv("TEST_KAFKA_DEBUG");
    }
    for (; extra && *extra && argc < 38; extra++)
        argv[argc++] = *extra;
    char errstr[512];
    cr_assert_eq(processor_config_load(&in->cfg, PROCESSOR_CMD_RUN, "run", argc,
                                       (char **)argv, errstr, sizeof(errstr)),
                 0, "%s", errstr);
    cr_assert_eq(processor_interceptor_setup(&in->cfg, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
    instance_run_t *run = calloc(1, sizeof(*run));
    run->cfg = in->cfg;
    snprintf(run->state_dir, sizeof(run->state_dir), "%s", state_dir);
    cr_assert_eq(pthread_create(&run->thread, NULL, instance_main, run), 0);
    run->next = running;
    running = in->run = run;
}

static void instance_start(instance_t *in, const char *name, const char *const *extra)
{
    instance_start_with(in, name, true, extra);
}

/* Joins the instance's thread, waiting at most wait_s seconds (0: as long as it takes).
 * @returns its exit code, or -1 when it is still running (then it stays listed). */
static int instance_join(instance_t *in, int wait_s)
{
    instance_run_t *run = in->run;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += wait_s;
    if (wait_s ? pthread_timedjoin_np(run->thread, NULL, &until)
               : pthread_join(run->thread, NULL))
        return -1;
    instance_run_t **at = &running;
    while (*at != run)
        at = &(*at)->next;
    *at = run->next;
    int rc = run->rc;
    free(run);
    in->run = NULL;
    return rc;
}

static void instance_stop(instance_t *in)
{
    in->run->stop = 1;
    cr_assert_eq(instance_join(in, 0), 0, "the processor stops cleanly");
    processor_interceptor_destroy(in->cfg.interceptor_loaded);
    processor_config_clear(&in->cfg);
}

/* Waits for an instance to stop by itself (its config is still the caller's to
 * clear). @returns its exit code. */
static int instance_exited(instance_t *in)
{
    int rc = instance_join(in, 30);
    cr_assert_neq(rc, -1, "the processor stops by itself");
    return rc;
}

/* Stops the instances a failed test left running; their configs were the test's. */
static void instances_stop_left(void)
{
    while (running) {
        instance_run_t *run = running;
        running = run->next;
        run->stop = 1;
        pthread_join(run->thread, NULL);
        processor_config_clear(&run->cfg);
        free(run);
    }
}

/* ---- the client side: a producer, and a reader of every output topic ---- */

typedef struct got_s {
    char topic[64];
    int32_t partition;
    int64_t offset;
    char *key;
    size_t key_len;
    char *value;
    size_t len;
    rd_kafka_headers_t *headers;
} got_t;

static rd_kafka_t *producer, *reader;
static got_t *got;
static size_t got_len, got_cap;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    cr_assert_eq(m->err, 0, "delivery: %s", rd_kafka_err2str(m->err));
    if (m->_private) {
        int64_t *where = m->_private;
        where[0] = m->partition;
        where[1] = m->offset;
    }
}

static void create_topic(const char *topic, int partitions)
{
    cr_assert_eq(rd_kafka_mock_topic_create(mock, topic, partitions, mock_brokers), 0);
}

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    processor_log_threshold = !getenv("TEST_LOG")                    ? PROCESSOR_LOG_WARN
                              : !strcmp(getenv("TEST_LOG"), "debug") ? PROCESSOR_LOG_DEBUG
                                                                     : PROCESSOR_LOG_INFO;
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(mock_rk, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_rk, mock_brokers);
    cr_assert_not_null(mock);
    snprintf(bootstrap, sizeof(bootstrap), "%s", rd_kafka_mock_cluster_bootstraps(mock));
    /* As `dev` does: without it a watermark query waits 40 ms half the time. */
    cr_assert_eq(processor_mock_nodelay(bootstrap), mock_brokers);
    const char *topics[] = {"flushout.flushes", "flushout.replies",   "flushout.changes",
                            "flushout.dlq",     "flushout.snapshots", "changes.a",
                            "changes.b",        "changes.tail",       "snapshots.none"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
        create_topic(topics[i], PARTITIONS);
    create_topic("custom.replies", 2);

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", NULL, 0);
    rd_kafka_conf_set(conf, "linger.ms", "0", NULL, 0);
    /* Clients may send records larger than the processor's outputs may be. */
    rd_kafka_conf_set(conf, "message.max.bytes", "2000000", NULL, 0);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(producer, "%s", errstr);

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "group.id", "test-reader", NULL, 0);
    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "10", NULL, 0);
    reader = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(reader, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(32);
    const char *outputs[] = {"flushout.replies", "flushout.changes", "flushout.dlq",
                             "changes.a", "changes.b"};
    for (size_t t = 0; t < sizeof(outputs) / sizeof(outputs[0]); t++)
        for (int p = 0; p < PARTITIONS; p++)
            rd_kafka_topic_partition_list_add(l, outputs[t], p)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
    for (int p = 0; p < 2; p++)
        rd_kafka_topic_partition_list_add(l, "custom.replies", p)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    cr_assert_eq(rd_kafka_assign(reader, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
}

static void teardown(void)
{
    instances_stop_left();
    for (size_t i = 0; i < got_len; i++) {
        free(got[i].key);
        free(got[i].value);
        if (got[i].headers)
            rd_kafka_headers_destroy(got[i].headers);
    }
    free(got);
    got = NULL;
    got_len = got_cap = 0;
    rd_kafka_destroy_flags(reader, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    rd_kafka_destroy(producer);
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_rk);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    strcpy(dir, "/tmp/flushout-test-kafka-XXXXXX");
}

TestSuite(kafka, .init = setup, .fini = teardown, .timeout = 180);

/* The fault tests: three brokers, so that one can go down and leaders can move. */
static void setup_three_brokers(void)
{
    mock_brokers = 3;
    setup();
}

TestSuite(kafka_faults, .init = setup_three_brokers, .fini = teardown, .timeout = 300);

/* Reads what has arrived on the output topics into got[]. */
static void pump(int ms)
{
    rd_kafka_message_t *m = rd_kafka_consumer_poll(reader, ms);
    for (; m; m = rd_kafka_consumer_poll(reader, 0)) {
        if (!m->err) {
            if (got_len == got_cap) {
                got_cap = got_cap ? got_cap * 2 : 256;
                got = realloc(got, got_cap * sizeof(*got));
            }
            got_t *g = &got[got_len++];
            memset(g, 0, sizeof(*g));
            snprintf(g->topic, sizeof(g->topic), "%s", rd_kafka_topic_name(m->rkt));
            g->partition = m->partition;
            g->offset = m->offset;
            if (m->key) {
                g->key = malloc(m->key_len + 1);
                memcpy(g->key, m->key, m->key_len);
                g->key[m->key_len] = '\0';
                g->key_len = m->key_len;
            }
            g->value = malloc(m->len + 1);
            memcpy(g->value, m->payload, m->len);
            g->len = m->len;
            rd_kafka_headers_t *h;
            if (!rd_kafka_message_headers(m, &h))
                g->headers = rd_kafka_headers_copy(h);
        }
        rd_kafka_message_destroy(m);
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static codec_value_t *decode(const got_t *g)
{
    codec_value_t *v = NULL;
    char err[256];
    cr_assert_eq(codec_msgpack_decode(g->value, g->len, &codec_limits_trusted, &v, err,
                                      sizeof(err)),
                 0, "%s", err);
    return v;
}

static int64_t int_field(const codec_value_t *map, const char *name)
{
    const codec_value_t *f = codec_map_get(map, name, strlen(name));
    return f && f->type == CODEC_VALUE_INT ? f->u.i : -1;
}

static const char *str_field(const codec_value_t *map, const char *name, char *buf,
                             size_t size)
{
    const codec_value_t *f = codec_map_get(map, name, strlen(name));
    if (!f || f->type != CODEC_VALUE_STR)
        return "";
    snprintf(buf, size, "%.*s", (int)f->u.str.len, f->u.str.ptr);
    return buf;
}

static const char *header_str(const got_t *g, const char *name, char *buf, size_t size)
{
    const void *v;
    size_t len;
    if (!g->headers || rd_kafka_header_get_last(g->headers, name, &v, &len))
        return NULL;
    snprintf(buf, size, "%.*s", (int)len, (const char *)v);
    return buf;
}

/* Waits for a record on topic whose value has "client" and "seq" as given (and, when
 * seen is non-NULL, that is not one of the first *seen such records). */
static const got_t *await_record(const char *topic, const char *client, int64_t seq)
{
    double deadline = now_ms() + WAIT_MS;
    size_t checked = 0;
    while (now_ms() < deadline) {
        for (; checked < got_len; checked++) {
            const got_t *g = &got[checked];
            if (strcmp(g->topic, topic))
                continue;
            codec_value_t *v = decode(g);
            char buf[128];
            bool match = !strcmp(str_field(v, "client", buf, sizeof(buf)), client) &&
                         int_field(v, "seq") == seq;
            codec_value_destroy(v);
            if (match)
                return g;
        }
        pump(50);
    }
    cr_assert_fail("no record on %s for client %s seq %lld", topic, client,
                   (long long)seq);
    return NULL;
}

/* Produces value (msgpack) with key[0..key_len) (NULL: none) to partition (-1: by key)
 * and headers; returns the record's partition and offset in where[2]. */
static void produce_key(const char *key, size_t key_len, int32_t partition,
                        const char *value, size_t len, rd_kafka_headers_t *headers,
                        int64_t *where)
{
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC("flushout.flushes"),
        RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
        RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
        RD_KAFKA_V_OPAQUE(where), RD_KAFKA_V_END);
    cr_assert_eq(err, 0, "%s", rd_kafka_err2str(err));
    cr_assert_eq(rd_kafka_flush(producer, WAIT_MS), 0);
}

static void produce_raw(const char *key, int32_t partition, const char *value, size_t len,
                        rd_kafka_headers_t *headers, int64_t *where)
{
    produce_key(key, key ? strlen(key) : 0, partition, value, len, headers, where);
}

/* JSON -> msgpack bytes (caller destroys the buffer). */
static void to_msgpack(const char *json, msgpack_sbuffer *sb)
{
    codec_value_t *v;
    char err[256];
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, err, sizeof(err)), 0,
                 "%s", err);
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);
}

static void send_json(const char *model, const char *json, int64_t *where)
{
    msgpack_sbuffer sb;
    to_msgpack(json, &sb);
    produce_raw(model, -1, sb.data, sb.size, NULL, where);
    msgpack_sbuffer_destroy(&sb);
}

/* A flush of one create under "items" with the proposed id, from the given count. */
static void send_create(const char *model, const char *client, int seq, int from,
                        const char *id)
{
    char json[512];
    snprintf(
        json, sizeof(json),
        "{\"type\":\"flush\",\"client\":\"%s\",\"seq\":%d,\"from\":%d,\"completions\":"
        "[{\"command\":{\"action\":\"create\",\"path\":[\"items\"],\"parentDefault\":"
        "{},\"props\":{\"by\":\"%s\",\"n\":%d}},\"createdId\":\"%s\"}]}",
        client, seq, from, client, seq, id);
    send_json(model, json, NULL);
}

static char *json_of(const codec_value_t *v)
{
    size_t len;
    return codec_json_encode(v, &len);
}

/* The model's snapshot document, asked for with a snapshot request. */
static char *snapshot_json(const char *model, const char *client, int seq, int64_t *count)
{
    char json[256];
    snprintf(json, sizeof(json), "{\"type\":\"snapshot\",\"client\":\"%s\",\"seq\":%d}",
             client, seq);
    send_json(model, json, NULL);
    codec_value_t *v = decode(await_record("flushout.replies", client, seq));
    const codec_value_t *snap = codec_map_get(v, "snapshot", 8);
    cr_assert_not_null(snap);
    if (count)
        *count = int_field(snap, "commandCount");
    char *doc = json_of(codec_map_get(snap, "document", 8));
    codec_value_destroy(v);
    return doc;
}

static int32_t partition_of(const char *model)
{
    return processor_key_partition("murmur2_random", model, strlen(model), PARTITIONS);
}

/* ---- tests ---- */

Test(kafka, flushes_are_answered_and_published_as_change_records)
{
    instance_t a;
    instance_start(&a, "a", NULL);
    int64_t where[2];
    send_json(
        "m1",
        "{\"type\":\"flush\",\"client\":\"alice\",\"seq\":1,\"from\":0,\"completions\":"
        "[{\"command\":{\"action\":\"create\",\"path\":[\"todos\"],\"parentDefault\":"
        "{},\"props\":{\"t\":\"milk\"}},\"createdId\":\"a\"}]}",
        where);
    codec_value_t *reply = decode(await_record("flushout.replies", "alice", 1));
    char buf[64];
    cr_assert_str_eq(str_field(reply, "type", buf, sizeof(buf)), "flushResult");
    cr_assert_eq(int_field(codec_map_get(reply, "applied", 7), "from"), 0);
    codec_value_destroy(reply);

    const got_t *change = await_record("flushout.changes", "alice", 1);
    cr_assert_str_eq(change->key, "m1");
    cr_assert_eq(change->partition, where[0], "co-partitioned with the flush");
    codec_value_t *c = decode(change);
    cr_assert_str_eq(str_field(c, "type", buf, sizeof(buf)), "applied");
    cr_assert_str_eq(str_field(c, "model", buf, sizeof(buf)), "m1");
    cr_assert_eq(int_field(c, "offset"), where[1], "the flush's own offset");
    const codec_value_t *applied = codec_map_get(c, "applied", 7);
    cr_assert_eq(int_field(applied, "from"), 0);
    cr_assert_eq(codec_map_get(applied, "completions", 11)->u.array.len, 1);
    codec_value_destroy(c);

    int64_t count;
    char *doc = snapshot_json("m1", "bob", 1, &count);
    cr_assert_eq(count, 1);
    cr_assert_str_eq(doc, "{\"todos\":{\"a\":{\"t\":\"milk\"}}}");
    free(doc);
    send_json("m1", "{\"type\":\"history\",\"client\":\"bob\",\"seq\":2,\"from\":0}",
              NULL);
    codec_value_t *h = decode(await_record("flushout.replies", "bob", 2));
    cr_assert_str_eq(str_field(h, "type", buf, sizeof(buf)), "history");
    cr_assert_eq(codec_map_get(h, "completions", 11)->u.array.len, 1);
    codec_value_destroy(h);
    instance_stop(&a);
}

/* Time travel through the processor: a snapshot request with "at" is answered with
 * the document at that version (codec/PROTOCOL.md), by the owner and by the next one,
 * which rebuilt its store from the change records. */
static void expect_versions(const char *model, int seq, const char *const *docs, int n)
{
    char json[256], buf[64];
    for (int at = 0; at <= n; at++) {
        snprintf(json, sizeof(json),
                 "{\"type\":\"snapshot\",\"client\":\"traveller\",\"seq\":%d,\"at\":%d}",
                 seq + at, at);
        send_json(model, json, NULL);
        codec_value_t *v =
            decode(await_record("flushout.replies", "traveller", seq + at));
        if (at == n) {
            const codec_value_t *e = codec_map_get(v, "error", 5);
            cr_assert_not_null(e, "at %d: beyond the count", at);
            cr_assert_str_eq(str_field(e, "code", buf, sizeof(buf)), "bad_range");
        } else {
            const codec_value_t *snap = codec_map_get(v, "snapshot", 8);
            cr_assert_not_null(snap, "at %d", at);
            cr_assert_eq(int_field(snap, "commandCount"), at);
            char *doc = json_of(codec_map_get(snap, "document", 8));
            cr_assert_str_eq(doc, docs[at], "at %d", at);
            free(doc);
        }
        codec_value_destroy(v);
    }
}

Test(kafka, snapshot_requests_travel_to_earlier_versions)
{
    const char *docs[] = {
        "{}",
        "{\"items\":{\"i1\":{\"by\":\"c\",\"n\":1}}}",
        "{\"items\":{\"i1\":{\"by\":\"c\",\"n\":1},\"i2\":{\"by\":\"c\",\"n\":2}}}",
        "{\"items\":{\"i1\":{\"by\":\"c\",\"n\":1},\"i2\":{\"by\":\"c\",\"n\":2},"
        "\"i3\":{\"by\":\"c\",\"n\":3}}}",
    };
    instance_t a;
    instance_start(&a, "a", NULL);
    for (int k = 1; k <= 3; k++) {
        char id[8];
        snprintf(id, sizeof(id), "i%d", k);
        send_create("tt", "c", k, k - 1, id);
    }
    codec_value_destroy(decode(await_record("flushout.replies", "c", 3)));
    expect_versions("tt", 10, docs, 4);
    instance_stop(&a);

    instance_t b;
    instance_start(&b, "b", NULL);
    expect_versions("tt", 20, docs, 4);
    instance_stop(&b);
}

Test(kafka, many_models_over_partitions_match_an_in_memory_master)
{
    instance_t a;
    instance_start(&a, "a", NULL);
    /* The reference: the same requests through the handler, in memory. */
    processor_handler_conf_t hc = {.master = {.ids = STATE_IDS_SEQUENTIAL},
                                   .history = 1000,
                                   .limits = codec_limits_default};
    processor_handler_t *ref = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);
    enum { MODELS = 12, ROUNDS = 4 };
    bool used[PARTITIONS] = {0};
    for (int round = 0; round < ROUNDS; round++) {
        for (int m = 0; m < MODELS; m++) {
            char model[16], json[512];
            snprintf(model, sizeof(model), "model-%d", m);
            used[partition_of(model)] = true;
            for (int c = 0; c < 2; c++) {
                int seq = round + 1;
                /* Both clients propose the same id from the same count: the second is
                 * renamed, with mappedPaths. */
                snprintf(json, sizeof(json),
                         "{\"type\":\"flush\",\"client\":\"c%d\",\"seq\":%d,\"from\":%d,"
                         "\"completions\":[{\"command\":{\"action\":\"create\",\"path\":["
                         "\"items\"],\"parentDefault\":{},\"props\":{\"r\":%d}},"
                         "\"createdId\":\"x%d\"},{\"command\":{\"action\":\"update\","
                         "\"path\":[\"items\",\"x%d\"],\"props\":{\"by\":\"c%d\"}}}]}",
                         c, seq, round * 4, round, round, round, c);
                send_json(model, json, NULL);
                msgpack_sbuffer sb;
                to_msgpack(json, &sb);
                processor_output_reset(&out);
                processor_handler_handle(ref, -1, -1, model, strlen(model), sb.data,
                                         sb.size, &out);
                cr_assert_eq(out.error, 0);
                msgpack_sbuffer_destroy(&sb);
            }
        }
    }
    for (int p = 0; p < PARTITIONS; p++)
        cr_assert(used[p], "the models cover every partition");
    for (int m = 0; m < MODELS; m++) {
        char model[16], client[16];
        snprintf(model, sizeof(model), "model-%d", m);
        snprintf(client, sizeof(client), "reader-%d", m);
        int64_t count;
        char *doc = snapshot_json(model, client, 1, &count);
        const state_master_t *master = processor_handler_model(ref, model, strlen(model));
        char *want = json_of(state_master_document(master));
        cr_assert_eq(count, (int64_t)state_master_command_count(master), "%s", model);
        cr_assert_str_eq(doc, want, "%s", model);
        free(doc);
        free(want);
    }
    processor_output_destroy(&out);
    processor_handler_destroy(ref);
    instance_stop(&a);
}

Test(kafka, spring_reply_headers_are_honoured)
{
    instance_t a;
    const char *opts[] = {"--reply-topics", "custom.*", NULL};
    instance_start(&a, "a", opts);
    msgpack_sbuffer sb;
    to_msgpack("{\"type\":\"snapshot\",\"client\":\"spring\",\"seq\":7}", &sb);
    rd_kafka_headers_t *h = rd_kafka_headers_new(3);
    rd_kafka_header_add(h, "kafka_replyTopic", -1, "custom.replies", -1);
    rd_kafka_header_add(h, "kafka_replyPartition", -1, "\0\0\0\1", 4);
    rd_kafka_header_add(h, "kafka_correlationId", -1, "corr-42", 7);
    produce_raw("m1", -1, sb.data, sb.size, h, NULL);
    msgpack_sbuffer_destroy(&sb);
    const got_t *g = await_record("custom.replies", "spring", 7);
    cr_assert_eq(g->partition, 1, "kafka_replyPartition is a 4-byte big-endian int");
    char buf[64];
    cr_assert_str_eq(header_str(g, "kafka_correlationId", buf, sizeof(buf)), "corr-42");
    instance_stop(&a);
}

/* Waits for the dead letter of the record produced with header trace=what. */
static const got_t *await_dead_letter(const char *what)
{
    double deadline = now_ms() + WAIT_MS;
    for (;;) {
        for (size_t j = 0; j < got_len; j++) {
            char buf[128];
            const char *trace = header_str(&got[j], "trace", buf, sizeof(buf));
            if (!strcmp(got[j].topic, "flushout.dlq") && trace && !strcmp(trace, what))
                return &got[j];
        }
        cr_assert_lt(now_ms(), deadline, "%s: no dead letter", what);
        pump(50);
    }
}

typedef struct bad_case_s {
    const char *what;
    const char *key;   /* NULL: no key */
    int32_t partition; /* -1: by key; -2: not the key's partition */
    const char *json;  /* the value as JSON, or NULL for raw */
    const char *raw;
    size_t raw_len;
    const char *code;
    const char *client; /* who gets an error reply; NULL: nobody can be identified */
} bad_case_t;

Test(kafka, bad_records_get_an_error_reply_and_a_dead_letter)
{
    instance_t a;
    instance_start(&a, "a", NULL);
    static char big[5000];
    int n = snprintf(big, sizeof(big),
                     "{\"type\":\"snapshot\",\"client\":\"bad-big\",\"seq\":1,"
                     "\"pad\":\"");
    memset(big + n, 'x', sizeof(big) - (size_t)n - 3);
    memcpy(big + sizeof(big) - 3, "\"}", 3);
    static char long_string[600], doc_flush[2][2600];
    n = snprintf(long_string, sizeof(long_string),
                 "{\"type\":\"snapshot\",\"client\":\"bad-string\",\"seq\":1,\"x\":\"");
    memset(long_string + n, 'y', 300);
    strcpy(long_string + n + 300, "\"}");
    /* Two flushes of ~1.5 KB of props each: the first fits under --max-document-bytes
     * 2048, the second would not. */
    for (int f = 0; f < 2; f++) {
        n = snprintf(doc_flush[f], sizeof(doc_flush[f]),
                     "{\"type\":\"flush\",\"client\":\"filler\",\"seq\":%d,\"from\":%d,"
                     "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":{",
                     f + 1, f);
        for (int k = 0; k < 7; k++)
            n += snprintf(doc_flush[f] + n, sizeof(doc_flush[f]) - (size_t)n,
                          "%s\"k%d\":\"%0200d\"", k ? "," : "", k, k);
        snprintf(doc_flush[f] + n, sizeof(doc_flush[f]) - (size_t)n,
                 "}},\"createdId\":\"f%d\"}]}", f);
    }
    const bad_case_t cases[] = {
        {"reserved byte", "m1", -1, NULL, "\xc1", 1, "reserved_byte", NULL},
        {"truncated", "m1", -1, NULL, "\x83\xa4type\xa5", 7, "truncated", NULL},
        /* {"client":"bad-cut","seq":1,"type":"fl (cut short): still answered. */
        {"truncated after the client", "m1", -1, NULL,
         "\x83\xa6"
         "client"
         "\xa7"
         "bad-cut"
         "\xa3"
         "seq"
         "\x01\xa4"
         "type"
         "\xa5"
         "fl",
         29, "truncated", "bad-cut"},
        {"trailing bytes", "m1", -1, NULL, "\x80\x80", 2, "trailing_bytes", NULL},
        {"unknown type", "m1", -1,
         "{\"type\":\"nope\",\"client\":\"bad-type\",\"seq\":1}", NULL, 0, "unknown_type",
         "bad-type"},
        {"no key", NULL, 0, "{\"type\":\"snapshot\",\"client\":\"bad-nokey\",\"seq\":1}",
         NULL, 0, "missing_key", "bad-nokey"},
        {"wrong partition", "m1", -2,
         "{\"type\":\"snapshot\",\"client\":\"bad-part\",\"seq\":1}", NULL, 0,
         "wrong_partition", "bad-part"},
        {"model mismatch", "m1", -1,
         "{\"type\":\"snapshot\",\"model\":\"m2\",\"client\":\"bad-model\",\"seq\":1}",
         NULL, 0, "model_mismatch", "bad-model"},
        {"unknown action", "m1", -1,
         "{\"type\":\"flush\",\"client\":\"bad-action\",\"seq\":1,\"from\":0,"
         "\"completions\":"
         "[{\"command\":{\"action\":\"explode\",\"path\":[]}}]}",
         NULL, 0, "unknown_action", "bad-action"},
        {"too large", "m1", -1, big, NULL, 0, "too_large", "bad-big"},
        {"no client", "m1", -1, "{\"type\":\"snapshot\",\"seq\":1}", NULL, 0,
         "missing_field", NULL},
        {"too many completions", "m1", -1,
         "{\"type\":\"flush\",\"client\":\"bad-many\",\"seq\":1,\"from\":0,"
         "\"completions\":[{\"command\":{\"action\":\"detete\",\"path\":[\"a\"]}},"
         "{\"command\":{\"action\":\"detete\",\"path\":[\"a\"]}},{\"command\":{"
         "\"action\":\"detete\",\"path\":[\"a\"]}},{\"command\":{\"action\":"
         "\"detete\",\"path\":[\"a\"]}},{\"command\":{\"action\":\"detete\","
         "\"path\":[\"a\"]}}]}",
         NULL, 0, "too_large", "bad-many"},
        {"too deep", "m1", -1,
         "{\"type\":\"flush\",\"client\":\"bad-deep\",\"seq\":1,\"from\":0,"
         "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":{\"a\":"
         "{\"a\":{\"a\":{\"a\":{\"a\":{\"a\":1}}}}}}}}]}",
         NULL, 0, "too_deep", "bad-deep"},
        {"path too long", "m1", -1,
         "{\"type\":\"flush\",\"client\":\"bad-path\",\"seq\":1,\"from\":0,"
         "\"completions\":[{\"command\":{\"action\":\"update\",\"path\":[\"a\","
         "\"b\",\"c\",\"d\",\"e\"],\"props\":{}}}]}",
         NULL, 0, "too_large", "bad-path"},
        {"string too long", "m1", -1, long_string, NULL, 0, "too_large", "bad-string"},
        {"document too large", "big", -1, doc_flush[1], NULL, 0, "too_large", "filler"},
    };
    send_json("big", doc_flush[0], NULL);
    codec_value_t *first = decode(await_record("flushout.replies", "filler", 1));
    char tbuf[32];
    cr_assert_str_eq(str_field(first, "type", tbuf, sizeof(tbuf)), "flushResult");
    codec_value_destroy(first);
    int32_t home = partition_of("m1");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const bad_case_t *bc = &cases[i];
        msgpack_sbuffer sb = {0};
        const char *value = bc->raw;
        size_t len = bc->raw_len;
        if (bc->json) {
            to_msgpack(bc->json, &sb);
            value = sb.data;
            len = sb.size;
        }
        int32_t partition = bc->partition == -2 ? (home + 1) % PARTITIONS : bc->partition;
        rd_kafka_headers_t *h = rd_kafka_headers_new(1);
        rd_kafka_header_add(h, "trace", -1, bc->what, -1);
        int64_t where[2];
        produce_raw(bc->key, partition, value, len, h, where);

        /* The dead letter: the original record and where it came from. */
        const got_t *dl = await_dead_letter(bc->what);
        char buf[256];
        cr_assert_str_eq(header_str(dl, "flushout_error_code", buf, sizeof(buf)),
                         bc->code, "%s", bc->what);
        cr_assert_str_eq(header_str(dl, "kafka_dlt-original-topic", buf, sizeof(buf)),
                         "flushout.flushes");
        const void *hv;
        size_t hlen;
        cr_assert_eq(rd_kafka_header_get_last(dl->headers, "kafka_dlt-original-offset",
                                              &hv, &hlen),
                     0);
        cr_assert_eq(hlen, 8);
        int64_t offset = 0;
        for (int b = 0; b < 8; b++)
            offset = (offset << 8) | ((const unsigned char *)hv)[b];
        cr_assert_eq(offset, where[1], "%s: the original offset", bc->what);
        cr_assert_eq(rd_kafka_header_get_last(dl->headers, "kafka_dlt-original-partition",
                                              &hv, &hlen),
                     0);
        cr_assert_eq(hlen, 4);
        cr_assert_eq(((const unsigned char *)hv)[3], (unsigned char)where[0]);
        cr_assert_not_null(
            header_str(dl, "kafka_dlt-exception-message", buf, sizeof(buf)));
        cr_assert_eq(dl->len, len, "%s: the original value", bc->what);
        cr_assert_eq(memcmp(dl->value, value, len), 0);
        if (bc->key)
            cr_assert_str_eq(dl->key, bc->key);
        else
            cr_assert_null(dl->key);

        if (bc->client) {
            int64_t seq = !strcmp(bc->client, "filler") ? 2 : 1;
            codec_value_t *r = decode(await_record("flushout.replies", bc->client, seq));
            cr_assert_str_eq(str_field(r, "type", buf, sizeof(buf)), "error");
            cr_assert_str_eq(
                str_field(codec_map_get(r, "error", 5), "code", buf, sizeof(buf)),
                bc->code, "%s", bc->what);
            codec_value_destroy(r);
        }
        if (bc->json)
            msgpack_sbuffer_destroy(&sb);
    }
    /* The partition keeps going: the next good flush is applied. */
    send_create("m1", "good", 1, 0, "ok");
    codec_value_t *r = decode(await_record("flushout.replies", "good", 1));
    char buf[64];
    cr_assert_str_eq(str_field(r, "type", buf, sizeof(buf)), "flushResult");
    codec_value_destroy(r);
    int64_t count;
    char *doc = snapshot_json("m1", "good", 2, &count);
    cr_assert_eq(count, 1, "no bad record changed the model");
    free(doc);
    instance_stop(&a);
}

/* The committed offset of the processor's group for the flushes partition. */
static int64_t committed_offset(int32_t partition)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "group.id", "flushout-processor", NULL, 0);
    char errstr[256];
    rd_kafka_t *probe = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(probe, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, "flushout.flushes", partition);
    cr_assert_eq(rd_kafka_committed(probe, l, 10000), 0);
    int64_t offset = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy_flags(probe, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return offset;
}

/* The records on topic whose value has "client" as given and "seq" (-1: any). */
static int count_records(const char *topic, const char *client, int64_t seq)
{
    int n = 0;
    for (size_t j = 0; j < got_len; j++) {
        if (strcmp(got[j].topic, topic))
            continue;
        codec_value_t *v = decode(&got[j]);
        char buf[128];
        n += !strcmp(str_field(v, "client", buf, sizeof(buf)), client) &&
             (seq < 0 || int_field(v, "seq") == seq);
        codec_value_destroy(v);
    }
    return n;
}

static void assert_error_reply(const char *client, int64_t seq, const char *code,
                               const char *what)
{
    codec_value_t *r = decode(await_record("flushout.replies", client, seq));
    char buf[64];
    cr_assert_str_eq(str_field(r, "type", buf, sizeof(buf)), "error", "%s", what);
    cr_assert_str_eq(str_field(codec_map_get(r, "error", 5), "code", buf, sizeof(buf)),
                     code, "%s", what);
    codec_value_destroy(r);
}

/* Spring's reply headers say where a reply goes, so a client could aim one at the
 * changelog (breaking the next owner's catch-up), at the snapshots topic, or at any
 * topic the processor may write. Only the replies topic and what --reply-topics allows
 * are accepted, never the processor's own topics even when the pattern matches them,
 * and only partitions the topic has: each refused request gets an error reply on the
 * replies topic and a dead letter, a refused flush is not applied, and the changes
 * topic holds change records only, so a new owner still catches up. */
Test(kafka, reply_headers_cannot_aim_replies_at_other_topics)
{
    instance_t a, b;
    const char *opts[] = {"--reply-topics", "custom.*,flushout.*", NULL};
    instance_start(&a, "a", opts);
    typedef struct reply_case_s {
        const char *what, *topic, *partition;
        size_t partition_len;
    } reply_case_t;
    const reply_case_t cases[] = {
        {"into the changelog", "flushout.changes", NULL, 0},
        {"into the snapshots", "flushout.snapshots", NULL, 0},
        {"into the flushes", "flushout.flushes", NULL, 0},
        {"into the dead letters", "flushout.dlq", NULL, 0},
        {"a topic not allowed", "other.topic", NULL, 0},
        {"not a topic name", "custom/../x", NULL, 0},
        {"a partition of 2 bytes", "custom.replies", "\0\1", 2},
        {"a negative partition", "custom.replies", "\xff\xff\xff\xfe", 4},
        {"a partition of the replies topic that does not exist", NULL, "\0\0\0\x09", 4},
        /* Allowed, but the topic has 2 partitions: processed, and answered on the
         * replies topic with an error instead of a record Kafka would refuse. */
        {"a partition that does not exist", "custom.replies", "\0\0\0\7", 4},
    };
    const size_t n = sizeof(cases) / sizeof(cases[0]);
    for (size_t i = 0; i < n; i++) {
        const reply_case_t *rc = &cases[i];
        char json[512];
        snprintf(json, sizeof(json),
                 "{\"type\":\"flush\",\"client\":\"hostile\",\"seq\":%zu,\"from\":%d,"
                 "\"completions\":[{\"command\":{\"action\":\"create\",\"path\":[],"
                 "\"props\":{\"n\":%zu}},\"createdId\":\"x%zu\"}]}",
                 i + 1,
                 i + 1 == n - 1 ? 0
                 : i + 1 == n   ? 1
                                : 0,
                 i, i);
        msgpack_sbuffer sb;
        to_msgpack(json, &sb);
        rd_kafka_headers_t *h = rd_kafka_headers_new(4);
        rd_kafka_header_add(h, "trace", -1, rc->what, -1);
        if (rc->topic)
            rd_kafka_header_add(h, "kafka_replyTopic", -1, rc->topic, -1);
        if (rc->partition)
            rd_kafka_header_add(h, "kafka_replyPartition", -1, rc->partition,
                                (ssize_t)rc->partition_len);
        rd_kafka_header_add(h, "kafka_correlationId", -1, "corr", 4);
        produce_raw("target", -1, sb.data, sb.size, h, NULL);
        msgpack_sbuffer_destroy(&sb);
        assert_error_reply("hostile", (int64_t)i + 1, "bad_reply_topic", rc->what);
        char buf[64];
        cr_assert_str_eq(header_str(await_dead_letter(rc->what), "flushout_error_code",
                                    buf, sizeof(buf)),
                         "bad_reply_topic", "%s", rc->what);
    }
    /* A record refused before its headers are looked at (here: in the wrong partition)
     * still gets its error on the replies topic, not where its headers say. */
    msgpack_sbuffer sb;
    to_msgpack("{\"type\":\"snapshot\",\"client\":\"hostile-part\",\"seq\":1}", &sb);
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    rd_kafka_header_add(h, "trace", -1, "wrong partition, into the changelog", -1);
    rd_kafka_header_add(h, "kafka_replyTopic", -1, "flushout.changes", -1);
    produce_raw("target", (partition_of("target") + 1) % PARTITIONS, sb.data, sb.size, h,
                NULL);
    msgpack_sbuffer_destroy(&sb);
    assert_error_reply("hostile-part", 1, "wrong_partition", "wrong partition");
    await_dead_letter("wrong partition, into the changelog");
    /* The last two were processed (their addresses need metadata to refuse), the others
     * were refused before being applied. */
    int64_t count;
    free(snapshot_json("target", "reader", 1, &count));
    cr_assert_eq(count, 2, "only the requests with a usable address were applied");
    for (size_t j = 0; j < got_len; j++) {
        if (strcmp(got[j].topic, "flushout.changes"))
            continue;
        codec_value_t *v = decode(&got[j]);
        char buf[32];
        cr_assert_str_eq(str_field(v, "type", buf, sizeof(buf)), "applied",
                         "only change records in the changelog");
        codec_value_destroy(v);
    }
    cr_assert_eq(count_records("custom.replies", "hostile", -1), 0);
    instance_stop(&a);
    instance_start(&b, "b", opts); /* a new owner catches up from the changelog */
    free(snapshot_json("target", "reader", 2, &count));
    cr_assert_eq(count, 2);
    instance_stop(&b);
}

/* A flush creating id at the root with 3 strings of each bytes (msgpack; caller
 * destroys the buffer). */
static void big_flush(msgpack_sbuffer *sb, int seq, int from, size_t each, const char *id)
{
    size_t cap = 3 * each + 512;
    char *json = malloc(cap);
    int len = snprintf(json, cap,
                       "{\"type\":\"flush\",\"client\":\"big\",\"seq\":%d,\"from\":%d,"
                       "\"completions\":[{\"command\":{\"action\":\"create\","
                       "\"path\":[],\"props\":{",
                       seq, from);
    for (int k = 0; k < 3; k++) {
        len += snprintf(json + len, cap - (size_t)len, "%s\"p%d\":\"", k ? "," : "", k);
        memset(json + len, 'a' + k, each);
        len += (int)each;
        json[len++] = '"';
    }
    snprintf(json + len, cap - (size_t)len, "}},\"createdId\":\"%s\"}]}", id);
    to_msgpack(json, sb);
    free(json);
}

/* librdkafka refuses records larger than the producer's message.max.bytes (1000000 by
 * default). With the default limits, a flush of about 1.01 MB used to be applied while
 * its change record and reply could not be produced. Now it is refused before being
 * applied (too_large, an error reply, and a dead letter cut to fit, saying so); a
 * flush that fits is applied; an answer too large for one record (a history of two
 * such flushes) is replaced by an error that says so (reply_too_large). */
Test(kafka, a_flush_too_large_for_one_kafka_record_is_refused_with_the_default_limits)
{
    instance_t a;
    instance_start_with(&a, "a", false, NULL);
    /* 1.01 MB, over --max-record-bytes (900000): refused, nothing applied. */
    msgpack_sbuffer sb;
    big_flush(&sb, 1, 0, 336700, "doc");
    cr_assert_gt(sb.size, 1010000);
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, "trace", -1, "big flush", -1);
    produce_raw("huge", -1, sb.data, sb.size, h, NULL);
    assert_error_reply("big", 1, "too_large", "a flush of 1.01 MB");
    const got_t *dl = await_dead_letter("big flush");
    char buf[64], want[64];
    cr_assert_str_eq(header_str(dl, "flushout_error_code", buf, sizeof(buf)),
                     "too_large");
    snprintf(want, sizeof(want), "value:%zu", sb.size);
    cr_assert_str_eq(header_str(dl, "flushout_truncated", buf, sizeof(buf)), want);
    cr_assert_lt(dl->len, 1000000, "the dead letter fits in one record");
    cr_assert_gt(dl->len, 900000, "with as much of the value as fits");
    cr_assert_eq(memcmp(dl->value, sb.data, dl->len), 0, "a prefix of the value");
    msgpack_sbuffer_destroy(&sb);
    int64_t count;
    char *doc = snapshot_json("huge", "reader", 1, &count);
    cr_assert_eq(count, 0, "nothing was applied");
    cr_assert_str_eq(doc, "{}");
    free(doc);

    /* 850 kB, under it: applied, with its change record (measured on a scratch copy,
     * the request being near the bound). Then deleted, and created again. */
    big_flush(&sb, 2, 0, 283000, "doc");
    produce_raw("huge", -1, sb.data, sb.size, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
    codec_value_t *r = decode(await_record("flushout.replies", "big", 2));
    cr_assert_str_eq(str_field(r, "type", buf, sizeof(buf)), "flushResult");
    codec_value_destroy(r);
    await_record("flushout.changes", "big", 2);
    send_json(
        "huge",
        "{\"type\":\"flush\",\"client\":\"big\",\"seq\":3,\"from\":1,\"completions\":"
        "[{\"command\":{\"action\":\"detete\",\"path\":[\"doc\"]}}]}",
        NULL);
    big_flush(&sb, 4, 2, 283000, "doc2");
    produce_raw("huge", -1, sb.data, sb.size, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
    await_record("flushout.changes", "big", 4);
    cr_assert_eq(count_records("flushout.changes", "big", -1), 3);

    /* The whole history is 1.7 MB: more than one record; an error says so. */
    send_json("huge", "{\"type\":\"history\",\"client\":\"reader\",\"seq\":2,\"from\":0}",
              NULL);
    assert_error_reply("reader", 2, "reply_too_large", "the whole history");
    free(snapshot_json("huge", "reader", 3, &count));
    cr_assert_eq(count, 3);
    instance_stop(&a);
}

static int free_port(void);

/* The value of a counter on the instance's /metrics (HTTP on 127.0.0.1:port), or -1. */
static int64_t metric_value(int port, const char *name)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int64_t value = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        const char *req = "GET /metrics HTTP/1.0\r\n\r\n";
        cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
        static char body[1 << 16];
        size_t len = 0;
        for (ssize_t n; len < sizeof(body) - 1 &&
                        (n = read(fd, body + len, sizeof(body) - 1 - len)) > 0;)
            len += (size_t)n;
        body[len] = '\0';
        char pattern[128];
        snprintf(pattern, sizeof(pattern), "\n%s ", name);
        const char *at = strstr(body, pattern);
        if (at)
            value = strtoll(at + strlen(pattern), NULL, 10);
    }
    close(fd);
    return value;
}

/* A record Kafka refuses for good is not delivered, and never counted as if it were:
 * the partition stops with its outbox kept and no offset committed past the flush, and
 * the partition's next owner serves the flush with nothing lost. The mock cluster
 * refuses the processor's produce requests with an error that is not retried. */
Test(kafka, a_refused_delivery_stops_the_partition_and_the_next_owner_serves_it)
{
    instance_t a, b;
    instance_start(&a, "a", NULL);
    send_create("victim", "c", 1, 0, "one");
    await_record("flushout.replies", "c", 1);
    await_record("flushout.changes", "c", 1);
    instance_stop(&a);
    int64_t where[2];
    send_json("victim",
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":2,\"from\":1,\"completions\":"
              "[{\"command\":{\"action\":\"create\",\"path\":[\"items\"],"
              "\"parentDefault\":{},\"props\":{\"n\":2}},\"createdId\":\"two\"}]}",
              where);
    /* The next two produce requests (API key 0), the processor's, fail for good. */
    rd_kafka_resp_err_t errors[2] = {RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                                     RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED};
    rd_kafka_mock_push_request_errors_array(mock, 0, 2, errors);
    char port[16];
    int http_port = free_port();
    snprintf(port, sizeof(port), "%d", http_port);
    const char *opts[] = {"--http-port", port, NULL};
    instance_start(&a, "a", opts);
    double deadline = now_ms() + WAIT_MS; /* the flush processed, its outputs refused */
    while (metric_value(http_port, "flushout_delivery_failures_total") < 1 &&
           now_ms() < deadline)
        usleep(100 * 1000);
    cr_assert_geq(metric_value(http_port, "flushout_delivery_failures_total"), 1,
                  "the refused delivery is counted");
    rd_kafka_mock_clear_request_errors(mock, 0);
    usleep(2500 * 1000); /* past an auto-commit */
    cr_assert_leq(committed_offset(where[0]), where[1],
                  "no offset is committed past a flush whose outputs were refused");
    instance_stop(&a);

    instance_start(&b, "b", NULL);
    int64_t count;
    char *doc = snapshot_json("victim", "reader", 1, &count);
    cr_assert_eq(count, 2, "the flush is reflected: %s", doc);
    free(doc);
    await_record("flushout.replies", "c", 2);
    pump(500);
    cr_assert_eq(count_records("flushout.changes", "c", 2), 1,
                 "its change record is in the changelog, once");
    instance_stop(&b);
}

/* --max-record-bytes and --max-document-bytes must fit the producer's
 * message.max.bytes: the defaults do, and a processor given limits that cannot fit
 * refuses to start instead of applying flushes whose outputs Kafka would refuse. */
Test(kafka, size_limits_that_do_not_fit_one_kafka_record_are_refused_at_startup)
{
    typedef struct limit_case_s {
        const char *argv[4];
        int rc;
    } limit_case_t;
    const limit_case_t cases[] = {
        {{NULL}, 0},
        {{"--max-record-bytes", "1048576", NULL}, 1},
        {{"--max-document-bytes", "67108864", NULL}, 1},
        {{"--max-record-bytes", "1048576", "-X", "message.max.bytes=2000000"}, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *argv[12] = {
            "--bootstrap-servers", bootstrap, "--state-dir", dir,
            "--threads",           "1",       "-X",          "session.timeout.ms=6000"};
        int argc = 8;
        for (int k = 0; k < 4 && cases[i].argv[k]; k++)
            argv[argc++] = cases[i].argv[k];
        processor_config_t cfg;
        char errstr[512];
        cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_RUN, "run", argc,
                                           (char **)argv, errstr, sizeof(errstr)),
                     0, "%s", errstr);
        if (cases[i].rc) { /* refused before anything starts */
            volatile sig_atomic_t stop = 1;
            cr_assert_eq(processor_run(&cfg, bootstrap, dir, &stop), 1, "case %zu", i);
        } else {
            cr_assert_eq(processor_check_output_limits(&cfg, errstr, sizeof(errstr)), 0,
                         "case %zu: %s", i, errstr);
        }
        processor_config_clear(&cfg);
    }
}

Test(kafka, a_new_instance_catches_up_from_the_changes_topic)
{
    instance_t a, b;
    instance_start(&a, "a", NULL);
    const char *models[] = {"alpha", "beta", "gamma"};
    for (int seq = 1; seq <= 3; seq++)
        for (int m = 0; m < 3; m++) {
            char id[16];
            snprintf(id, sizeof(id), "i%d", seq);
            send_create(models[m], "alice", seq, seq - 1, id);
        }
    for (int seq = 1; seq <= 3; seq++)
        await_record("flushout.replies", "alice", seq);
    char *before[3];
    for (int m = 0; m < 3; m++)
        before[m] = snapshot_json(models[m], "reader", 10 + m, NULL);
    instance_stop(&a);

    /* Another machine: an empty state directory. Its partitions come from the topic. */
    instance_start(&b, "b", NULL);
    for (int m = 0; m < 3; m++) {
        int64_t count;
        char *after = snapshot_json(models[m], "reader", 20 + m, &count);
        cr_assert_eq(count, 3);
        cr_assert_str_eq(after, before[m], "%s", models[m]);
        free(after);
        free(before[m]);
    }
    /* Client records came along: alice's retry is recognised, not applied again. */
    size_t seen = got_len;
    send_create("alpha", "alice", 3, 2, "i3");
    const got_t *g = NULL;
    double deadline = now_ms() + WAIT_MS;
    while (!g && now_ms() < deadline) {
        pump(50);
        for (size_t j = seen; j < got_len && !g; j++) {
            if (strcmp(got[j].topic, "flushout.replies"))
                continue;
            codec_value_t *v = decode(&got[j]);
            char buf[32];
            if (!strcmp(str_field(v, "client", buf, sizeof(buf)), "alice") &&
                int_field(v, "seq") == 3)
                g = &got[j];
            codec_value_destroy(v);
        }
    }
    cr_assert_not_null(g);
    codec_value_t *v = decode(g);
    const codec_value_t *dup = codec_map_get(v, "duplicate", 9);
    cr_assert(dup && dup->type == CODEC_VALUE_BOOL && dup->u.b, "a duplicate reply");
    codec_value_destroy(v);
    int64_t count;
    free(snapshot_json("alpha", "reader", 30, &count));
    cr_assert_eq(count, 3, "the retry changed nothing");
    instance_stop(&b);
}

/* Stamps creates with who and at which version, refuses a third item per client by
 * reading the document, and needs the record's timestamp. */
static const char HANDOFF_INTERCEPTOR[] =
    "local MAX = 2\n"
    "function intercept(document, command, context, meta)\n"
    "  if type(meta.timestamp) ~= 'number' then return {rejection = 'no time'} end\n"
    "  if command.action ~= 'create' or #command.path == 0 then return nil end\n"
    "  local mine = 0\n"
    "  for _, item in pairs(document.items or {}) do\n"
    "    if item.by == meta.client then mine = mine + 1 end\n"
    "  end\n"
    "  if mine >= MAX then return {rejection = meta.client .. ' has ' .. mine} end\n"
    "  local props = {}\n"
    "  for k, v in pairs(command.props) do props[k] = v end\n"
    "  props.version = meta.commandCount\n"
    "  props.seq = meta.seq\n"
    "  return {newProps = props}\n"
    "end\n";

/* The reply to client's flush seq as JSON without "applied.from" differences hidden:
 * the whole flushResult (caller frees). */
static char *reply_json(const char *client, int seq)
{
    const got_t *g = await_record("flushout.replies", client, seq);
    codec_value_t *v = decode(g);
    char *json = json_of(v);
    codec_value_destroy(v);
    return json;
}

/* Writes an interceptor script as name.lua in the test's folder; path gets its path. */
static void write_script(const char *name, const char *text, char *path, size_t size)
{
    snprintf(path, size, "%s/%s.lua", dir, name);
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp);
    cr_assert(fputs(text, fp) >= 0 && fclose(fp) == 0);
}

Test(kafka, an_interceptor_gives_the_same_outcomes_after_a_handoff)
{
    char script[PATH_MAX];
    write_script("handoff", HANDOFF_INTERCEPTOR, script, sizeof(script));
    /* Each newProps may add 4 KiB, which the document limit must leave room for. */
    const char *opts[] = {"--interceptor", script, "--max-document-bytes", "65536", NULL};
    /* The reference: the same flushes through the handler in memory, same script. */
    processor_interceptor_conf_t icf = {.path = script,
                                        .max_instructions = 1000000,
                                        .max_memory_bytes = 64u << 20,
                                        .limits = codec_limits_default};
    char errstr[512];
    processor_interceptor_t *ic =
        processor_interceptor_load(&icf, errstr, sizeof(errstr));
    cr_assert_not_null(ic, "%s", errstr);
    processor_handler_conf_t hc = {.master = {.ids = STATE_IDS_SEQUENTIAL,
                                              .interceptor = processor_interceptor_call,
                                              .interceptor_opaque = ic},
                                   .history = 1000,
                                   .limits = codec_limits_default};
    processor_handler_t *ref = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);

    instance_t a, b;
    instance_start(&a, "a", opts);
    /* Three clients, three creates each: the third of each is refused, the first two
     * stamped. a applies the first round, b (an empty state directory: it catches up
     * from the changes topic) the others. */
    const char *clients[] = {"ann", "bob", "cy"};
    /* newProps drop parentDefault (as in flushout): "items" is created first. */
    const char *setup = "{\"type\":\"flush\",\"client\":\"setup\",\"seq\":1,\"from\":0,"
                        "\"completions\":[{\"command\":{\"action\":\"create\"},"
                        "\"createdId\":\"items\"}]}";
    send_json("todo", setup, NULL);
    free(reply_json("setup", 1));
    msgpack_sbuffer setup_sb;
    to_msgpack(setup, &setup_sb);
    processor_handler_handle(ref, -1, 1, "todo", 4, setup_sb.data, setup_sb.size, &out);
    msgpack_sbuffer_destroy(&setup_sb);
    int applied = 1;
    for (int round = 1; round <= 3; round++) {
        if (round == 2) {
            instance_stop(&a);
            instance_start(&b, "b", opts);
        }
        for (int c = 0; c < 3; c++) {
            char json[512], id[16];
            snprintf(id, sizeof(id), "i%d", round);
            /* Colliding ids: the master renames the later ones (mappedPaths). */
            snprintf(json, sizeof(json),
                     "{\"type\":\"flush\",\"client\":\"%s\",\"seq\":%d,\"from\":%d,"
                     "\"completions\":[{\"command\":{\"action\":\"create\",\"path\":"
                     "[\"items\"],\"parentDefault\":{},\"props\":{\"by\":\"%s\"}},"
                     "\"createdId\":\"%s\"}]}",
                     clients[c], round, applied, clients[c], id);
            send_json("todo", json, NULL);
            char *got_reply = reply_json(clients[c], round);
            msgpack_sbuffer sb;
            to_msgpack(json, &sb);
            processor_output_reset(&out);
            processor_handler_handle(ref, -1, 1, "todo", 4, sb.data, sb.size, &out);
            msgpack_sbuffer_destroy(&sb);
            codec_value_t *want_v;
            cr_assert_eq(codec_msgpack_decode(out.reply.data, out.reply.size,
                                              &codec_limits_trusted, &want_v, errstr,
                                              sizeof(errstr)),
                         0, "%s", errstr);
            char *want = json_of(want_v);
            codec_value_destroy(want_v);
            cr_assert_str_eq(got_reply, want, "%s's flush %d", clients[c], round);
            if (round < 3)
                cr_assert(strstr(got_reply, "\"version\":"), "stamped: %s", got_reply);
            else
                cr_assert(strstr(got_reply, " has 2\""), "refused: %s", got_reply);
            applied += round < 3;
            free(got_reply);
            free(want);
        }
    }
    int64_t count;
    char *doc = snapshot_json("todo", "reader", 1, &count);
    const state_master_t *master = processor_handler_model(ref, "todo", 4);
    char *want = json_of(state_master_document(master));
    cr_assert_eq(count, 7);
    cr_assert_str_eq(doc, want);
    free(doc);
    free(want);
    processor_output_destroy(&out);
    processor_handler_destroy(ref);
    processor_interceptor_destroy(ic);
    instance_stop(&b);
}

/* Sorted "partition:value-bytes" lines of topic's records (caller frees). */
static char *topic_dump(const char *topic)
{
    size_t cap = 1 << 16, len = 0;
    char *dump = calloc(1, cap);
    for (int p = 0; p < PARTITIONS; p++) {
        for (size_t j = 0; j < got_len; j++) {
            if (strcmp(got[j].topic, topic) || got[j].partition != p)
                continue;
            while (len + got[j].len * 2 + 32 > cap)
                dump = realloc(dump, cap *= 2);
            len += (size_t)sprintf(dump + len, "%d:", p);
            for (size_t k = 0; k < got[j].len; k++)
                len +=
                    (size_t)sprintf(dump + len, "%02x", (unsigned char)got[j].value[k]);
            dump[len++] = '\n';
            dump[len] = '\0';
        }
    }
    return dump;
}

Test(kafka, two_instances_given_the_same_input_publish_identical_changes)
{
    /* Colliding proposed ids make the master choose ids and remap paths: the parts a
     * nondeterministic master would get wrong. */
    for (int seq = 1; seq <= 4; seq++)
        for (int m = 0; m < 6; m++) {
            char model[16];
            snprintf(model, sizeof(model), "det-%d", m);
            send_create(model, "c1", seq, 0, "same");
            send_create(model, "c2", seq, 0, "same");
        }
    instance_t a, b;
    const char *opts_a[] = {"--group-id", "ga", "--changes-topic", "changes.a", NULL};
    const char *opts_b[] = {"--group-id", "gb", "--changes-topic", "changes.b", NULL};
    instance_start(&a, "a", opts_a);
    instance_start(&b, "b", opts_b);
    double deadline = now_ms() + WAIT_MS;
    size_t changes_a = 0, changes_b = 0;
    while ((changes_a < 48 || changes_b < 48) && now_ms() < deadline) {
        pump(100);
        changes_a = changes_b = 0;
        for (size_t j = 0; j < got_len; j++) {
            changes_a += !strcmp(got[j].topic, "changes.a");
            changes_b += !strcmp(got[j].topic, "changes.b");
        }
    }
    cr_assert_eq(changes_a, 48);
    cr_assert_eq(changes_b, 48);
    char *dump_a = topic_dump("changes.a"), *dump_b = topic_dump("changes.b");
    cr_assert_str_eq(dump_a, dump_b, "byte for byte, partition by partition");
    free(dump_a);
    free(dump_b);
    /* And both answered every flush with the same bytes. */
    for (int seq = 1; seq <= 4; seq++)
        for (int c = 1; c <= 2; c++) {
            char client[8];
            snprintf(client, sizeof(client), "c%d", c);
            for (int m = 0; m < 6; m++) {
                char model[16], buf[16];
                snprintf(model, sizeof(model), "det-%d", m);
                const got_t *first = NULL;
                int copies = 0;
                deadline = now_ms() + WAIT_MS;
                while (copies < 2 && now_ms() < deadline) {
                    copies = 0;
                    first = NULL;
                    for (size_t j = 0; j < got_len; j++) {
                        if (strcmp(got[j].topic, "flushout.replies"))
                            continue;
                        codec_value_t *v = decode(&got[j]);
                        bool match =
                            !strcmp(str_field(v, "client", buf, sizeof(buf)), client) &&
                            !strcmp(str_field(v, "model", buf, sizeof(buf)), model) &&
                            int_field(v, "seq") == seq;
                        codec_value_destroy(v);
                        if (!match)
                            continue;
                        if (first)
                            cr_assert(
                                first->len == got[j].len &&
                                    !memcmp(first->value, got[j].value, got[j].len),
                                "%s %s seq %d: the two instances replied differently",
                                model, client, seq);
                        first = first ? first : &got[j];
                        copies++;
                    }
                    if (copies < 2)
                        pump(50);
                }
                cr_assert_eq(copies, 2, "%s %s seq %d: one reply from each instance",
                             model, client, seq);
            }
        }
    instance_stop(&a);
    instance_stop(&b);
}

/* Every file of the hostile-input corpus (tests/badinput, MANIFEST says what each must
 * produce) gets its dead letter and error reply, or its failed commands; the model
 * is unchanged afterwards, and the next good flush is applied. */
/* A MANIFEST key: "-" none, "''" empty, "hex:..." bytes, "C*N" byte C N times.
 * @returns the key (a static buffer) and *len, or NULL. */
static const char *manifest_key(const char *spec, size_t *len)
{
    static char key[80000];
    unsigned n;
    char c;
    *len = 0;
    if (!strcmp(spec, "-"))
        return NULL;
    if (!strcmp(spec, "''"))
        return key;
    if (!strncmp(spec, "hex:", 4)) {
        for (const char *h = spec + 4; h[0] && h[1] && *len < sizeof(key); h += 2) {
            unsigned b;
            cr_assert_eq(sscanf(h, "%2x", &b), 1, "%s", spec);
            key[(*len)++] = (char)b;
        }
        return key;
    }
    if (sscanf(spec, "%c*%u", &c, &n) == 2 && n <= sizeof(key)) {
        memset(key, c, n);
        *len = n;
        return key;
    }
    *len = strlen(spec);
    return spec;
}

/* Sends every record of tests/badinput to model "victim" and checks each outcome:
 * under the suite's lowered limits (MANIFEST's third column) or the processor's
 * defaults (its sixth). Under the lowered limits nothing may change the model; under
 * the defaults some cases are applied, and the model must then read back the same
 * after a restart (reload from the store) and on a new instance (catch-up from the
 * changes topic): bugs hid behind lowered limits before. */
static void run_hostile_corpus(bool defaults)
{
    instance_t a;
    const char *lowered[] = {"--max-depth", "32", "--max-record-bytes", "16384", NULL};
    const char *const *opts = defaults ? NULL : lowered;
    instance_start_with(&a, "a", !defaults, opts);
    send_json("victim",
              "{\"type\":\"flush\",\"client\":\"setup\",\"seq\":1,\"from\":0,"
              "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":{\"s\":"
              "\"str\",\"arr\":[{\"x\":1}],\"n\":null}},\"createdId\":\"o\"}]}",
              NULL);
    await_record("flushout.replies", "setup", 1);
    int64_t count_before, count_after;
    char *before = snapshot_json("victim", "setup", 2, &count_before);
    cr_assert_eq(count_before, 1);

    FILE *manifest = fopen(BADINPUT_DIR "/MANIFEST", "r");
    cr_assert_not_null(manifest);
    char line[512];
    int cases = 0, dead_letters = 0, applied = 0;
    while (fgets(line, sizeof(line), manifest)) {
        char file[128], key_spec[64], outcome[64], client[64], seq_text[32];
        char outcome_defaults[64];
        if (line[0] == '#' ||
            sscanf(line, "%127s %63s %63s %63s %31s %63s", file, key_spec, outcome,
                   client, seq_text, outcome_defaults) != 6)
            continue;
        if (defaults && strcmp(outcome_defaults, "="))
            strcpy(outcome, outcome_defaults);
        int64_t seq = !strcmp(seq_text, "-") ? -1 : atoll(seq_text);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", BADINPUT_DIR, file);
        FILE *fp = fopen(path, "rb");
        cr_assert_not_null(fp, "%s", path);
        static char value[1 << 16];
        size_t len = fread(value, 1, sizeof(value), fp);
        fclose(fp);
        size_t key_len;
        const char *record_key = manifest_key(key_spec, &key_len);
        rd_kafka_headers_t *h = rd_kafka_headers_new(1);
        rd_kafka_header_add(h, "trace", -1, file, -1);
        produce_key(record_key, key_len, partition_of("victim"), value, len, h, NULL);
        cases++;

        char buf[128];
        if (!strcmp(outcome, "command_error") || !strcmp(outcome, "ok")) {
            codec_value_t *r = decode(await_record("flushout.replies", client, seq));
            cr_assert_str_neq(str_field(r, "type", buf, sizeof(buf)), "error", "%s",
                              file);
            const codec_value_t *errors = codec_map_get(r, "errors", 6);
            const codec_value_t *reply_applied = codec_map_get(r, "applied", 7);
            const codec_value_t *done =
                reply_applied ? codec_map_get(reply_applied, "completions", 11) : NULL;
            if (!strcmp(outcome, "ok")) {
                cr_assert_null(errors, "%s: no command failed", file);
                applied += done && done->u.array.len > 0;
            } else {
                cr_assert(errors && errors->u.array.len > 0, "%s: the command failed",
                          file);
                cr_assert(done && done->u.array.len == 0, "%s: nothing applied", file);
            }
            codec_value_destroy(r);
            continue;
        }
        const got_t *dl = await_dead_letter(file);
        dead_letters++;
        cr_assert_str_eq(header_str(dl, "flushout_error_code", buf, sizeof(buf)), outcome,
                         "%s", file);
        cr_assert_eq(dl->key_len, key_len, "%s: the dead letter keeps the key", file);
        if (strcmp(client, "-")) {
            codec_value_t *r = decode(await_record("flushout.replies", client, seq));
            cr_assert_str_eq(str_field(r, "type", buf, sizeof(buf)), "error", "%s", file);
            cr_assert_str_eq(
                str_field(codec_map_get(r, "error", 5), "code", buf, sizeof(buf)),
                outcome, "%s", file);
            codec_value_destroy(r);
        }
    }
    fclose(manifest);
    cr_assert_geq(cases, 45, "the corpus has at least 45 records");
    cr_assert_eq(applied, defaults ? 4 : 0, "flushes applied");

    char *after = snapshot_json("victim", "setup", 3, &count_after);
    if (!defaults) {
        cr_assert_eq(count_after, count_before, "no command was applied");
        cr_assert_str_eq(after, before, "the document is unchanged");
    } else {
        cr_assert_eq(count_after, count_before + applied,
                     "the accepted ones were applied");
    }
    send_create("victim", "setup", 4, (int)count_after, "good");
    codec_value_t *r = decode(await_record("flushout.replies", "setup", 4));
    cr_assert_eq(codec_map_get(r, "errors", 6), NULL, "the next good flush is applied");
    codec_value_destroy(r);
    size_t dlq = 0;
    for (size_t j = 0; j < got_len; j++)
        dlq += !strcmp(got[j].topic, "flushout.dlq");
    cr_assert_eq(dlq, (size_t)dead_letters,
                 "one dead letter per refused record, no more");
    char *served = snapshot_json("victim", "setup", 5, &count_after);
    instance_stop(&a);

    /* Everything accepted reads back: after a restart (the model loaded from the
     * store), and on another machine (caught up from the changes topic). */
    int64_t count_again;
    instance_start_with(&a, "a", !defaults, opts);
    char *reloaded = snapshot_json("victim", "setup", 6, &count_again);
    cr_assert_eq(count_again, count_after);
    cr_assert_str_eq(reloaded, served, "the same model after a restart");
    instance_stop(&a);
    instance_start_with(&a, "fresh", !defaults, opts);
    char *caught_up = snapshot_json("victim", "setup", 7, &count_again);
    cr_assert_eq(count_again, count_after);
    cr_assert_str_eq(caught_up, served, "the same model caught up from the changes");
    instance_stop(&a);
    free(before);
    free(after);
    free(served);
    free(reloaded);
    free(caught_up);
}

Test(kafka, the_hostile_input_corpus_changes_nothing)
{
    run_hostile_corpus(false);
}

Test(kafka, the_hostile_input_corpus_under_the_default_limits)
{
    run_hostile_corpus(true);
}

/* Every stored model, history entry and client record of the stores under dir, one
 * line each with the value's bytes in hex (caller frees). */
static int dump_item(void *opaque, const state_store_item_t *item)
{
    char **dump = opaque;
    if (item->kind != STATE_ITEM_SNAPSHOT && item->kind != STATE_ITEM_HISTORY &&
        item->kind != STATE_ITEM_CLIENT)
        return 0;
    size_t len = strlen(*dump);
    *dump = realloc(*dump,
                    len + item->model_len + item->client_len + item->value_len * 2 + 64);
    char *p = *dump + len;
    p += sprintf(p, "%d %c %.*s %llu %.*s ", item->partition, item->kind,
                 (int)item->model_len, item->model, (unsigned long long)item->count,
                 (int)item->client_len, item->client ? item->client : "");
    for (size_t i = 0; i < item->value_len; i++)
        p += sprintf(p, "%02x", (unsigned char)item->value[i]);
    strcpy(p, "\n");
    return 0;
}

static char *dump_state(const char *state_dir)
{
    char *dump = calloc(1, 1);
    for (int p = 0; p < PARTITIONS; p++) {
        char path[PATH_MAX], errstr[256];
        if (snprintf(path, sizeof(path), "%s/partition-%d", state_dir, p) >=
                (int)sizeof(path) ||
            access(path, F_OK) != 0)
            continue;
        state_store_conf_t conf = {.dir = path, .history = 1000, .cache_bytes = 1 << 20};
        conf.partition = p;
        state_store_t *s = state_store_open(&conf, errstr, sizeof(errstr));
        cr_assert_not_null(s, "%s", errstr);
        cr_assert_eq(state_store_scan(s, dump_item, &dump, errstr, sizeof(errstr)), 0);
        state_store_close(s);
    }
    return dump;
}

/* dump_state() of the state directory name under dir. */
static char *dump_named(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return dump_state(path);
}

static int rebuild_with(const char *name, const char *from, const char *const *extra);

static void rebuild(const char *name, const char *from)
{
    cr_assert_eq(rebuild_with(name, from, NULL), 0, "rebuild --from %s", from);
}

static int rebuild_rc(const char *name, const char *from)
{
    return rebuild_with(name, from, NULL);
}

/* Runs rebuild --from from into the state directory name, with the instances' state
 * options and extra ones (NULL-terminated). @returns its exit code. */
static int rebuild_with(const char *name, const char *from, const char *const *extra)
{
    char state_dir[PATH_MAX];
    snprintf(state_dir, sizeof(state_dir), "%s/%s", dir, name);
    const char *argv[40] = {
        "--bootstrap-servers", bootstrap, "--state-dir", state_dir, "--from", from};
    int argc = 6;
    for (const char *const *o = state_options; *o; o++)
        argv[argc++] = *o;
    for (; extra && *extra && argc < 38; extra++)
        argv[argc++] = *extra;
    processor_config_t cfg;
    char errstr[256];
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_REBUILD, "rebuild", argc,
                                       (char **)argv, errstr, sizeof(errstr)),
                 0, "%s", errstr);
    cr_assert_eq(processor_interceptor_setup(&cfg, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
    int rc = processor_cmd_rebuild(&cfg);
    processor_interceptor_destroy(cfg.interceptor_loaded);
    processor_config_clear(&cfg);
    return rc;
}

/* The record's timestamp and the version stamped on creates, a third create per model
 * refused by reading the document: what a replay must reproduce exactly. */
static const char REPLAY_INTERCEPTOR[] =
    "function intercept(document, command, context, meta)\n"
    "  if command.action ~= 'create' then return nil end\n"
    "  local n = 0\n"
    "  for _ in pairs(document) do n = n + 1 end\n"
    "  if n >= 2 then return {rejection = 'full at ' .. meta.commandCount} end\n"
    "  return {newProps = {at = meta.timestamp, version = meta.commandCount}}\n"
    "end\n";

Test(kafka, rebuild_from_flushes_replays_the_interceptor_to_the_live_state)
{
    char script[PATH_MAX];
    write_script("replay", REPLAY_INTERCEPTOR, script, sizeof(script));
    const char *opts[] = {"--interceptor", script, "--max-document-bytes", "65536", NULL};
    instance_t a;
    instance_start(&a, "live", opts);
    for (int m = 0; m < 4; m++) {
        char model[16];
        snprintf(model, sizeof(model), "ri-%d", m);
        for (int seq = 1; seq <= 3; seq++) {
            char json[256];
            snprintf(json, sizeof(json),
                     "{\"type\":\"flush\",\"client\":\"c%d\",\"seq\":%d,\"from\":0,"
                     "\"completions\":[{\"command\":{\"action\":\"create\"},"
                     "\"createdId\":\"i%d\"}]}",
                     m, seq, seq);
            send_json(model, json, NULL);
        }
    }
    for (int m = 0; m < 4; m++) {
        char model[16], client[16];
        snprintf(model, sizeof(model), "ri-%d", m);
        snprintf(client, sizeof(client), "reader-%d", m);
        int64_t count;
        char *doc = snapshot_json(model, client, 1, &count);
        cr_assert_eq(count, 2, "%s: the third create was refused: %s", model, doc);
        cr_assert(strstr(doc, "\"at\":") && strstr(doc, "\"version\":1"), "%s", doc);
        free(doc);
    }
    instance_stop(&a);

    cr_assert_eq(rebuild_with("ri-flushes", "flushes", opts), 0);
    cr_assert_eq(rebuild_with("ri-changes", "changes", opts), 0);
    char *live = dump_named("live");
    char *flushes = dump_named("ri-flushes");
    char *changes = dump_named("ri-changes");
    cr_assert_str_eq(flushes, live, "the script replayed over the flushes topic");
    cr_assert_str_eq(changes, live, "the resolved commands of the changes topic");
    free(live);
    free(flushes);
    free(changes);
}

Test(kafka, rebuild_from_either_topic_gives_the_live_state_byte_for_byte)
{
    instance_t a;
    instance_start(&a, "live", NULL);
    for (int seq = 1; seq <= 6; seq++)
        for (int m = 0; m < 6; m++) {
            char model[16];
            snprintf(model, sizeof(model), "rb-%d", m);
            send_create(model, "c1", seq, 0, "same"); /* stale from: syncs, renames */
            send_create(model, "c2", seq, seq - 1, "same");
        }
    send_create("rb-0", "c1", 6, 0, "same"); /* a retry: answered, not applied */
    send_json("rb-1",
              "{\"type\":\"flush\",\"client\":\"c3\",\"seq\":1,\"from\":0,"
              "\"completions\":[{\"command\":{\"action\":\"nope\"}}]}",
              NULL);
    for (int m = 0; m < 6; m++) {
        char model[16], client[16];
        snprintf(model, sizeof(model), "rb-%d", m);
        snprintf(client, sizeof(client), "reader-%d", m);
        free(snapshot_json(model, client, 1, NULL)); /* everything before it is applied */
    }
    instance_stop(&a);

    rebuild("from-changes", "changes");
    rebuild("from-flushes", "flushes");
    char path[PATH_MAX];
    char *live = dump_named("live");
    char *changes = dump_named("from-changes");
    char *flushes = dump_named("from-flushes");
    cr_assert_gt(strlen(live), 1000, "the workload left state to compare");
    cr_assert_str_eq(changes, live, "rebuilt from the changes topic");
    cr_assert_str_eq(flushes, live, "rebuilt from the flushes topic");
    free(live);
    free(changes);
    free(flushes);

    /* A store is never written over. */
    snprintf(path, sizeof(path), "%s/from-flushes", dir);
    const char *argv[] = {
        "--bootstrap-servers", bootstrap, "--state-dir", path, "--from", "changes"};
    processor_config_t cfg;
    char errstr[256];
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_REBUILD, "rebuild", 6,
                                       (char **)argv, errstr, sizeof(errstr)),
                 0, "%s", errstr);
    cr_assert_eq(processor_cmd_rebuild(&cfg), 1);
    processor_config_clear(&cfg);
}

/* Produces a change record written under other settings to the changes topic's
 * partition: any catch-up that reads it refuses (processor/catch_up.h, rule 4). */
static void produce_foreign_change(int32_t partition)
{
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    rd_kafka_header_add(h, PROCESSOR_SETTINGS_HEADER, -1, "0123456789abcdef", -1);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC("flushout.changes"), RD_KAFKA_V_PARTITION(partition),
        RD_KAFKA_V_KEY("ck-foreign", 10), RD_KAFKA_V_VALUE("\x80", 1),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
    cr_assert_eq(err, 0, "%s", rd_kafka_err2str(err));
    cr_assert_eq(rd_kafka_flush(producer, WAIT_MS), 0);
}

/* How many entries of dir start with prefix, and whether any is RocksDB's temporary
 * copy (".tmp"). */
static int count_entries(const char *path, const char *prefix, bool *temporary)
{
    DIR *d = opendir(path);
    cr_assert_not_null(d, "%s", path);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
            continue;
        n++;
        *temporary |= strstr(e->d_name, ".tmp") != NULL;
    }
    closedir(d);
    return n;
}

/* Asks each of models ck-0.. for its snapshot (client reader-M, seq) and, with want
 * >= 0, checks its command count: a reply means everything before it is applied. */
static void expect_checkpoint_models(int models, int seq, int64_t want, const char *why)
{
    for (int m = 0; m < models; m++) {
        char model[32], client[32];
        snprintf(model, sizeof(model), "ck-%d", m);
        snprintf(client, sizeof(client), "reader-%d", m);
        int64_t count;
        free(snapshot_json(model, client, seq, &count));
        if (want >= 0)
            cr_assert_eq(count, want, "%s: %s", model, why);
    }
}

/* run --checkpoint-dir keeps one checkpoint per partition, and rebuild --from changes
 * starts from it: it replays only the change records after it (a record it would
 * refuse sits before, and a rebuild from the topic's start does refuse it), and gives
 * the live state byte for byte. */
Test(kafka, rebuild_from_a_checkpoint_replays_only_the_changes_after_it)
{
    char ckpt[PATH_MAX];
    snprintf(ckpt, sizeof(ckpt), "%s/checkpoints", dir);
    char port[16];
    int http_port = free_port();
    snprintf(port, sizeof(port), "%d", http_port);
    const char *with_checkpoints[] = {"--checkpoint-dir", ckpt, "--http-port", port,
                                      NULL};
    const int models = 6;
    instance_t a;
    instance_start(&a, "live", with_checkpoints);
    for (int seq = 1; seq <= 6; seq++) {
        if (seq == 4) { /* after ck-0's partition is served, before its checkpoint */
            free(snapshot_json("ck-0", "early", 1, NULL));
            produce_foreign_change(partition_of("ck-0"));
        }
        for (int m = 0; m < models; m++) {
            char model[16];
            snprintf(model, sizeof(model), "ck-%d", m);
            send_create(model, "c1", seq, seq - 1, "same");
            send_create(model, "c2", seq, 0, "same"); /* stale from: syncs, renames */
        }
    }
    expect_checkpoint_models(models, 1, -1, "");
    /* A partition's first step after its takeover's flush point made one. */
    char age[64];
    snprintf(age, sizeof(age), "flushout_checkpoint_age_seconds{partition=\"%d\"}",
             partition_of("ck-0"));
    cr_assert_geq(metric_value(http_port, "flushout_checkpoints_total"), 1);
    cr_assert_geq(metric_value(http_port, age), 0, "%s", age);
    cr_assert_eq(metric_value(http_port, "flushout_checkpoint_failures_total"), 0);
    instance_stop(&a); /* the revoke makes each partition's last checkpoint */

    bool temporary = false;
    for (int p = 0; p < PARTITIONS; p++) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "partition-%d.", p);
        int n = count_entries(ckpt, prefix, &temporary);
        cr_assert_eq(n, 1, "partition %d: one checkpoint kept, not %d", p, n);
    }
    cr_assert_not(temporary, "no temporary copy left");

    /* More flushes after the checkpoints, by an instance that makes none. */
    instance_t b;
    instance_start(&b, "live", NULL);
    for (int seq = 7; seq <= 9; seq++)
        for (int m = 0; m < models; m++) {
            char model[16];
            snprintf(model, sizeof(model), "ck-%d", m);
            send_create(model, "c1", seq, seq - 1, "more");
        }
    expect_checkpoint_models(models, 2, 15, "12 creates, then 3 more");
    instance_stop(&b);

    cr_assert_neq(rebuild_rc("from-start", "changes"), 0,
                  "from the topic's start, the foreign record is read and refused");
    const char *from_checkpoints[] = {"--checkpoint-dir", ckpt, NULL};
    cr_assert_eq(rebuild_with("from-checkpoints", "changes", from_checkpoints), 0);
    char *live = dump_named("live");
    char *rebuilt = dump_named("from-checkpoints");
    cr_assert_gt(strlen(live), 1000, "the workload left state to compare");
    cr_assert_str_eq(rebuilt, live, "a checkpoint and the changes after it");
    free(live);
    free(rebuilt);

    /* A checkpoint of other settings is refused, not replayed over. */
    const char *other[] = {"--checkpoint-dir", ckpt, "--history", "5", NULL};
    cr_assert_neq(rebuild_with("other-settings", "changes", other), 0);

    /* run, too: an instance with no stores starts each partition from its checkpoint
     * (from the topic's start, ck-0's partition would meet the foreign record and
     * stop), and serves the live state. */
    instance_t c;
    instance_start(&c, "fresh", from_checkpoints);
    expect_checkpoint_models(models, 3, 15, "served from its checkpoint and after");
    instance_stop(&c);
    live = dump_named("live");
    char *fresh = dump_named("fresh");
    cr_assert_str_eq(fresh, live, "taken over from a checkpoint: the live state");
    free(live);
    free(fresh);
}

/* ---- faults ---- */

/* Closed-loop clients: each of models x clients flushes "create item seq" in turn,
 * waits for the reply and resends the same flush (same seq) when it is late, as a
 * proxy would. The reference handler applies each distinct flush once, in the order
 * the processor saw them (per model, which is all that matters). */
typedef struct loop_s {
    processor_handler_t *ref;
    processor_output_t out;
    int models, rounds;
    int resent;
} loop_t;

static void loop_init(loop_t *l, int models)
{
    processor_handler_conf_t hc = {.master = {.ids = STATE_IDS_SEQUENTIAL},
                                   .history = 1000,
                                   .limits = codec_limits_default};
    l->ref = processor_handler_new(&hc);
    processor_output_init(&l->out);
    l->models = models;
    l->rounds = 0;
    l->resent = 0;
}

/* Waits for a reply on the replies topic to (client, seq) after index *from. */
static const got_t *find_reply(const char *client, int64_t seq, size_t *from, int wait_ms)
{
    double deadline = now_ms() + wait_ms;
    for (;;) {
        for (; *from < got_len; (*from)++) {
            const got_t *g = &got[*from];
            if (strcmp(g->topic, "flushout.replies"))
                continue;
            codec_value_t *v = decode(g);
            char buf[64];
            bool match = !strcmp(str_field(v, "client", buf, sizeof(buf)), client) &&
                         int_field(v, "seq") == seq;
            codec_value_destroy(v);
            if (match)
                return g;
        }
        if (now_ms() >= deadline)
            return NULL;
        pump(20);
    }
}

/* One round: every model's client sends its next flush; all are answered. */
static void loop_round(loop_t *l)
{
    int seq = ++l->rounds;
    char json[512];
    size_t mark = got_len;
    for (int m = 0; m < l->models; m++) {
        char model[16];
        snprintf(model, sizeof(model), "f-%d", m);
        snprintf(
            json, sizeof(json),
            "{\"type\":\"flush\",\"client\":\"w%d\",\"seq\":%d,\"from\":%d,"
            "\"completions\":[{\"command\":{\"action\":\"create\",\"path\":[\"items\"],"
            "\"parentDefault\":{},\"props\":{\"n\":%d}},\"createdId\":\"i%d\"}]}",
            m, seq, seq - 1, seq, seq);
        send_json(model, json, NULL);
        msgpack_sbuffer sb;
        to_msgpack(json, &sb);
        processor_output_reset(&l->out);
        processor_handler_handle(l->ref, -1, -1, model, strlen(model), sb.data, sb.size,
                                 &l->out);
        msgpack_sbuffer_destroy(&sb);
    }
    for (int m = 0; m < l->models; m++) {
        char client[16];
        snprintf(client, sizeof(client), "w%d", m);
        size_t from = mark;
        for (int attempt = 0; !find_reply(client, seq, &from, 8000); attempt++) {
            cr_assert_lt(attempt, 12, "%s seq %d: never answered", client, seq);
            char model[16];
            snprintf(model, sizeof(model), "f-%d", m);
            snprintf(
                json, sizeof(json),
                "{\"type\":\"flush\",\"client\":\"%s\",\"seq\":%d,\"from\":%d,"
                "\"completions\":[{\"command\":{\"action\":\"create\",\"path\":["
                "\"items\"],\"parentDefault\":{},\"props\":{\"n\":%d}},\"createdId\":"
                "\"i%d\"}]}",
                client, seq, seq - 1, seq, seq);
            send_json(model, json, NULL); /* the same flush again */
            l->resent++;
            from = mark;
        }
    }
}

/* Every model equals the reference, and the changes topic holds each command once. */
static void loop_check(loop_t *l)
{
    for (int m = 0; m < l->models; m++) {
        char model[16], client[40];
        snprintf(model, sizeof(model), "f-%d", m);
        snprintf(client, sizeof(client), "check-%d-%d", m, l->rounds);
        int64_t count;
        char *doc = snapshot_json(model, client, 1, &count);
        const state_master_t *master =
            processor_handler_model(l->ref, model, strlen(model));
        char *want = json_of(state_master_document(master));
        cr_assert_eq(count, l->rounds, "%s: every flush applied exactly once", model);
        cr_assert_str_eq(doc, want, "%s", model);
        free(doc);
        free(want);
        /* Change records: one per applied flush, from 0 to rounds-1 (duplicates of a
         * record, re-produced after a fault, must be identical). The rounds wait for the
         * replies only: a change record may still be on its way. */
        double deadline = now_ms() + WAIT_MS;
        for (int from = 0; from < l->rounds; from++) {
            size_t first = SIZE_MAX, j = 0; /* indexes: pump() may move got[] */
            for (;;) {
                for (; j < got_len; j++) {
                    if (strcmp(got[j].topic, "flushout.changes") ||
                        strcmp(got[j].key, model))
                        continue;
                    codec_value_t *v = decode(&got[j]);
                    bool match =
                        int_field(codec_map_get(v, "applied", 7), "from") == from;
                    codec_value_destroy(v);
                    if (!match)
                        continue;
                    if (first == SIZE_MAX)
                        first = j;
                    else
                        cr_assert(
                            got[first].len == got[j].len &&
                                !memcmp(got[first].value, got[j].value, got[first].len),
                            "%s: two different change records from %d", model, from);
                }
                if (first != SIZE_MAX || now_ms() >= deadline)
                    break;
                pump(50);
            }
            cr_assert_neq(first, SIZE_MAX, "%s: no change record from %d", model, from);
        }
    }
}

static void loop_destroy(loop_t *l)
{
    processor_output_destroy(&l->out);
    processor_handler_destroy(l->ref);
}

static void *broker_up_later(void *opaque)
{
    (void)opaque;
    usleep(3000 * 1000);
    rd_kafka_mock_broker_set_up(mock, 2);
    return NULL;
}

Test(kafka_faults, processing_survives_broker_faults_and_resumes)
{
    instance_t a;
    instance_start(&a, "a", NULL);
    loop_t l;
    loop_init(&l, 8);
    loop_round(&l); /* up and running */

    /* A broker down for 3 s and up again (the mock cluster elects no new leaders, so
     * its partitions wait for it), with flushes sent meanwhile. */
    cr_assert_eq(rd_kafka_mock_broker_set_down(mock, 2), 0);
    pthread_t revive;
    pthread_create(&revive, NULL, broker_up_later, NULL);
    for (int m = 0; m < 4; m++) { /* flushes sent into the outage */
        char model[16];
        snprintf(model, sizeof(model), "outage-%d", m);
        send_create(model, "w-extra", 1, 0, "x");
    }
    pthread_join(revive, NULL);
    size_t from = 0;
    for (int m = 0; m < 4; m++) {
        cr_assert_not_null(find_reply("w-extra", 1, &from, 30000),
                           "answered after the outage");
        from++;
    }
    loop_round(&l);
    loop_round(&l);

    /* Leaders move. */
    for (int p = 0; p < PARTITIONS; p++) {
        rd_kafka_mock_partition_set_leader(mock, "flushout.flushes", p, 1 + (p + 1) % 3);
        rd_kafka_mock_partition_set_leader(mock, "flushout.changes", p, 1 + (p + 2) % 3);
        rd_kafka_mock_partition_set_leader(mock, "flushout.replies", p, 1 + p % 3);
    }
    loop_round(&l);
    loop_round(&l);

    /* Request errors: Produce, Fetch, OffsetCommit, JoinGroup, Heartbeat. */
    const struct {
        int16_t api;
        rd_kafka_resp_err_t err;
    } faults[] = {
        {0, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION}, /* Produce */
        {0, RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT},
        {1, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION},      /* Fetch */
        {8, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE},     /* OffsetCommit */
        {11, RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS}, /* JoinGroup */
        {12, RD_KAFKA_RESP_ERR_NOT_COORDINATOR},              /* Heartbeat */
    };
    for (size_t i = 0; i < sizeof(faults) / sizeof(faults[0]); i++) {
        rd_kafka_mock_push_request_errors(mock, faults[i].api, 3, faults[i].err,
                                          faults[i].err, faults[i].err);
        loop_round(&l);
    }

    /* Slow brokers: 300 ms more per round trip. */
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_rtt(mock, b, 300);
    loop_round(&l);
    for (int b = 1; b <= 3; b++)
        rd_kafka_mock_broker_set_rtt(mock, b, 0);
    loop_round(&l);

    pump(500);
    loop_check(&l);
    cr_log_info("broker faults: %d rounds of %d flushes, %d resent", l.rounds, l.models,
                l.resent);
    loop_destroy(&l);
    instance_stop(&a);
}

/* A Produce request of change records fails (Not Leader) and so does its retry (a
 * request timeout), while the next change record of the partition, produced during the
 * retry's backoff, is sent right behind the retry and succeeds: every change record
 * still reaches the topic. Without the harness's max.in.flight.requests.per.connection=1
 * librdkafka takes the retried records as delivered and the mock cluster never wrote
 * them (see instance_start_with()). */
Test(kafka_faults, a_failed_produce_request_loses_no_change_record)
{
    instance_t a;
    const char *const extra[] = {"-X", "retry.backoff.ms=1000", NULL};
    instance_start(&a, "a", extra);
    loop_t l;
    loop_init(&l, 8);
    /* Broker 3 leads one partition of the changes topic (f-1's), and nothing else. */
    for (int p = 0; p < PARTITIONS; p++) {
        rd_kafka_mock_partition_set_leader(mock, "flushout.flushes", p, 1);
        rd_kafka_mock_partition_set_leader(mock, "flushout.replies", p, 1);
        rd_kafka_mock_partition_set_leader(mock, "flushout.changes", p,
                                           p == partition_of("f-1") ? 3 : 2);
    }
    loop_round(&l);
    loop_round(&l);
    for (int k = 0; k < 3; k++) {
        rd_kafka_mock_broker_push_request_error_rtts(
            mock, 3, 0 /* Produce */, 2, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION, 0,
            RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, 0);
        for (int i = 0; i < 3; i++)
            loop_round(&l);
    }
    loop_check(&l);
    loop_destroy(&l);
    instance_stop(&a);
}

Test(kafka_faults, a_lost_state_directory_is_restored_from_the_topics)
{
    instance_t a;
    instance_start(&a, "a", NULL);
    loop_t l;
    loop_init(&l, 6);
    for (int i = 0; i < 5; i++)
        loop_round(&l);
    instance_stop(&a);

    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s/a'", dir);
    cr_assert_eq(system(cmd), 0);
    instance_start(&a, "a", NULL); /* the same instance, its disk wiped */
    loop_round(&l);
    loop_check(&l);
    loop_destroy(&l);
    instance_stop(&a);
}

/* A store whose write fails (FLUSHOUT_FAILPOINT=store-write:P:N makes the N-th step
 * of partition P fail as a RocksDB write error would): that partition stops with an
 * error, sends nothing for the flush it could not store and commits no offset past it;
 * the other partitions go on. */
Test(kafka_faults, a_failing_store_stops_its_partition_and_nothing_else)
{
    const char *victim = "disk-0", *other = NULL;
    char others[PARTITIONS][16] = {{0}};
    for (int i = 0; i < 100; i++) { /* a model in each partition */
        char model[16];
        snprintf(model, sizeof(model), "disk-%d", i);
        int32_t p = partition_of(model);
        if (!others[p][0])
            snprintf(others[p], sizeof(others[p]), "%s", model);
    }
    for (int p = 0; p < PARTITIONS; p++)
        if (p != partition_of(victim) && others[p][0])
            other = others[p];
    cr_assert_not_null(other);
    char failpoint[64];
    snprintf(failpoint, sizeof(failpoint), "store-write:%d:2", partition_of(victim));
    setenv("FLUSHOUT_FAILPOINT", failpoint, 1);
    instance_t a;
    instance_start(&a, "a", NULL);
    send_create(victim, "c", 1, 0, "first");
    await_record("flushout.replies", "c", 1);

    send_create(victim, "c", 2, 1, "second"); /* its step cannot be stored */
    size_t from = got_len;
    send_create(other, "c2", 1, 0, "elsewhere");
    cr_assert_not_null(find_reply("c2", 1, &from, WAIT_MS),
                       "the other partition goes on");
    from = 0;
    cr_assert_null(find_reply("c", 2, &from, 3000),
                   "no reply for a flush that was not stored");
    send_create(victim, "c", 3, 1, "third"); /* the partition has stopped */
    from = 0;
    cr_assert_null(find_reply("c", 3, &from, 3000), "nor for anything after it");

    /* The committed offset stays at the flush that could not be stored. */
    pump(2500); /* past an auto-commit */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "group.id", "flushout-processor", NULL, 0);
    char errstr[256];
    rd_kafka_t *probe = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(probe, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, "flushout.flushes", partition_of(victim));
    cr_assert_eq(rd_kafka_committed(probe, l, 10000), 0);
    cr_assert_leq(l->elems[0].offset, 1,
                  "no offset moves past the unstored flush (offset 1)");
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy_flags(probe, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    instance_stop(&a);
    unsetenv("FLUSHOUT_FAILPOINT");
}

/* Three models given 12 flushes each (client "c", seq 1..12) by an instance that
 * publishes a snapshot record every 5 commands; their documents in before (the caller
 * frees them). */
static void three_models_with_snapshots(const char *const models[3], char *before[3])
{
    instance_t a;
    const char *opts_a[] = {"--snapshot-topic-every", "5", NULL};
    instance_start(&a, "a", opts_a);
    for (int seq = 1; seq <= 12; seq++) {
        for (int m = 0; m < 3; m++) {
            char id[16];
            snprintf(id, sizeof(id), "i%d", seq);
            send_create(models[m], "c", seq, seq - 1, id);
        }
        await_record("flushout.replies", "c", seq);
    }
    for (int m = 0; m < 3; m++)
        before[m] = snapshot_json(models[m], "reader", 100 + m, NULL);
    instance_stop(&a);
}

/* Copies the change records from command from_min on to the same partitions of
 * changes.tail; next_input (NULL, or one per partition) gets the input offset each
 * partition's copies reach. @returns how many were copied. */
static size_t copy_changes_tail(int64_t from_min, int64_t *next_input)
{
    pump(500);
    size_t copied = 0;
    for (int p = 0; next_input && p < PARTITIONS; p++)
        next_input[p] = -1;
    for (size_t j = 0; j < got_len; j++) {
        if (strcmp(got[j].topic, "flushout.changes"))
            continue;
        codec_value_t *v = decode(&got[j]);
        int64_t from = int_field(codec_map_get(v, "applied", 7), "from");
        int64_t offset = int_field(v, "offset");
        codec_value_destroy(v);
        if (from < from_min)
            continue;
        if (next_input && offset + 1 > next_input[got[j].partition])
            next_input[got[j].partition] = offset + 1;
        rd_kafka_resp_err_t err =
            rd_kafka_producev(producer, RD_KAFKA_V_TOPIC("changes.tail"),
                              RD_KAFKA_V_PARTITION(got[j].partition),
                              RD_KAFKA_V_KEY(got[j].key, got[j].key_len),
                              RD_KAFKA_V_VALUE(got[j].value, got[j].len),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        cr_assert_eq(err, 0);
        copied++;
    }
    cr_assert_eq(rd_kafka_flush(producer, WAIT_MS), 0);
    return copied;
}

/* The three models are served as they were (three_models_with_snapshots()). */
static void expect_three_models(const char *const models[3], char *const before[3])
{
    for (int m = 0; m < 3; m++) {
        int64_t count;
        char *after = snapshot_json(models[m], "reader", 200 + m, &count);
        cr_assert_eq(count, 12, "%s", models[m]);
        cr_assert_str_eq(after, before[m], "%s", models[m]);
        free(after);
    }
}

/* Retention took the beginning of the changes topic: a new instance restores each
 * model from its latest snapshot record and applies the change records after it; with
 * no snapshots either, it refuses the partition instead of serving a wrong state. */
Test(kafka, a_partition_restores_from_snapshots_when_changes_are_gone)
{
    const char *models[] = {"sn-0", "sn-1", "sn-2"};
    char *before[3];
    three_models_with_snapshots(models, before);

    /* The retained tail of the changes: from command 8 on (snapshots were taken at 5
     * and 10), copied to the same partitions of changes.tail. */
    size_t copied = copy_changes_tail(8, NULL);
    cr_assert_eq(copied, 3 * 4, "commands 8..11 of three models");

    instance_t b;
    const char *opts_b[] = {"--changes-topic", "changes.tail", NULL};
    instance_start(&b, "b", opts_b);
    expect_three_models(models, before);
    send_create("sn-0", "c", 12, 11, "i12"); /* a retry of the last flush: recognised */
    bool duplicate = false;
    for (double deadline = now_ms() + WAIT_MS; !duplicate && now_ms() < deadline;) {
        pump(100);
        for (size_t j = 0; j < got_len && !duplicate; j++) {
            if (strcmp(got[j].topic, "flushout.replies"))
                continue;
            codec_value_t *v = decode(&got[j]);
            char buf[32], mbuf[32];
            const codec_value_t *d = codec_map_get(v, "duplicate", 9);
            duplicate = !strcmp(str_field(v, "client", buf, sizeof(buf)), "c") &&
                        !strcmp(str_field(v, "model", mbuf, sizeof(mbuf)), "sn-0") &&
                        int_field(v, "seq") == 12 && d && d->type == CODEC_VALUE_BOOL &&
                        d->u.b;
            codec_value_destroy(v);
        }
    }
    cr_assert(duplicate,
              "client records come with the snapshot: the retry is recognised");
    instance_stop(&b);

    /* Neither reaches back: no snapshots, and changes from command 8 only. */
    instance_t c;
    const char *opts_c[] = {"--changes-topic", "changes.tail", "--snapshots-topic",
                            "snapshots.none", NULL};
    instance_start(&c, "c", opts_c);
    send_json("sn-1", "{\"type\":\"snapshot\",\"client\":\"late\",\"seq\":1}", NULL);
    size_t from = 0;
    cr_assert_null(find_reply("late", 1, &from, 8000),
                   "a partition that cannot be rebuilt "
                   "is not served");
    instance_stop(&c);
    for (int m = 0; m < 3; m++)
        free(before[m]);
}

/* Partitions move while they are being restored (each change record applied slowly,
 * FLUSHOUT_FAILPOINT=catch-up-slow:MS), and the restoring instance leaves: the
 * partitions end up with the remaining instance, every flush applied once. */
Test(kafka_faults, partitions_move_while_they_are_restored)
{
    instance_t a, b, c;
    instance_start(&a, "a", NULL);
    loop_t l;
    loop_init(&l, 8);
    for (int i = 0; i < 25; i++)
        loop_round(&l);
    instance_stop(&a);

    /* In-process instances share the failpoint: both restore slowly. */
    setenv("FLUSHOUT_FAILPOINT", "catch-up-slow:60", 1);
    instance_start(&b, "b", NULL); /* 200 change records to restore, 60 ms each */
    usleep(7000 * 1000);           /* b has its partitions (after the rebalance delay) */
    instance_start(&c, "c", NULL); /* a rebalance while b restores */
    usleep(3000 * 1000);
    instance_stop(&b); /* b leaves in the middle of restoring */
    unsetenv("FLUSHOUT_FAILPOINT");
    loop_round(&l);
    loop_check(&l);
    instance_stop(&c);
    loop_destroy(&l);
}

/* A change record in a partition its key does not map to was written under another
 * partition count: catching up from it would give a model to the wrong partition, so
 * the processor stops, naming the procedure, instead of serving anything. */
Test(kafka, a_change_record_of_another_layout_stops_the_processor)
{
    int32_t home = partition_of("alpha");
    int32_t elsewhere = (home + 1) % PARTITIONS;
    processor_record_t rec = {
        "flushout.changes", elsewhere, "alpha", 5, "x", 1, NULL, NULL};
    cr_assert_eq(processor_produce(producer, &rec, RD_KAFKA_MSG_F_COPY), 0);
    cr_assert_eq(rd_kafka_flush(producer, WAIT_MS), 0);

    instance_t a;
    instance_start(&a, "a", NULL);
    cr_assert_eq(instance_exited(&a), 1, "and says it failed");
    processor_config_clear(&a.cfg);
}

/* The records in the snapshots topic, all partitions. */
static int64_t snapshot_records(void)
{
    int64_t total = 0;
    for (int p = 0; p < PARTITIONS; p++) {
        int64_t lo, hi;
        cr_assert_eq(rd_kafka_query_watermark_offsets(producer, "flushout.snapshots", p,
                                                      &lo, &hi, WAIT_MS),
                     0);
        total += hi;
    }
    return total;
}

/* A swept snapshot record that Kafka refuses leaves its model marked, and the next pass
 * publishes it again: had the mark been cleared when the record was handed to the
 * producer, the quiet model would never get one. */
Test(kafka, a_swept_record_not_delivered_is_published_again)
{
    instance_t a;
    const char *opts[] = {"--snapshot-topic-interval-ms", "3000", NULL};
    instance_start(&a, "a", opts);
    send_create("quiet", "c", 1, 0, "i1");
    await_record("flushout.replies", "c", 1);
    /* Both outputs delivered before produce requests start failing: a change record
     * refused would stop the partition, and its sweep with it. */
    await_record("flushout.changes", "c", 1);
    /* Produce requests (API key 0) fail for now, with an error that is not retried. */
    rd_kafka_resp_err_t errors[64];
    for (size_t i = 0; i < 64; i++)
        errors[i] = RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
    rd_kafka_mock_push_request_errors_array(mock, 0, 64, errors);
    usleep(4500 * 1000); /* the first pass, 3 s after the partition was taken */
    cr_assert_eq(snapshot_records(), 0, "the first pass's record was refused");
    rd_kafka_mock_clear_request_errors(mock, 0);
    double deadline = now_ms() + 15000;
    while (snapshot_records() == 0 && now_ms() < deadline)
        usleep(100 * 1000);
    cr_assert_eq(snapshot_records(), 1, "the next pass published it");
    usleep(4000 * 1000);
    cr_assert_eq(snapshot_records(), 1, "and, once delivered, not again");
    instance_stop(&a);
}

/* The keys of every record in topic's partition, as "key-bytes-in-hex\n" lines
 * (caller frees). */
static char *partition_keys(const char *topic, int32_t partition)
{
    int64_t lo, hi;
    cr_assert_eq(
        rd_kafka_query_watermark_offsets(producer, topic, partition, &lo, &hi, WAIT_MS),
        0);
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "group.id", "test-keys", NULL, 0);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(c, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = lo;
    cr_assert_eq(rd_kafka_assign(c, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    size_t size = 1, len = 0;
    char *out = calloc(1, size);
    double deadline = now_ms() + WAIT_MS;
    for (int64_t next = lo; next < hi && now_ms() < deadline;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (!m->err) {
            out = realloc(out, size += 2 * m->key_len + 1);
            for (size_t i = 0; i < m->key_len; i++)
                len += (size_t)sprintf(out + len, "%02x", ((unsigned char *)m->key)[i]);
            out[len++] = '\n';
            out[len] = '\0';
            next = m->offset + 1;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_destroy_flags(c, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return out;
}

/* Model ids are bytes with a length: one with a NUL inside gets its own snapshot
 * record, not one of the id cut at the NUL (which a restore would take for another
 * model). */
Test(kafka, a_model_id_with_a_nul_byte_is_published_whole)
{
    instance_t a;
    const char *opts[] = {"--snapshot-topic-every", "1", NULL};
    instance_start_with(&a, "a", false, opts);
    static const char model[] = "nul\0id";
    size_t model_len = sizeof(model) - 1;
    int32_t partition =
        processor_key_partition("murmur2_random", model, model_len, PARTITIONS);
    msgpack_sbuffer sb;
    to_msgpack(
        "{\"type\":\"flush\",\"client\":\"nul-client\",\"seq\":1,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":{\"a\":1}},"
        "\"createdId\":\"x\"}]}",
        &sb);
    produce_key(model, model_len, partition, sb.data, sb.size, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
    codec_value_t *r = decode(await_record("flushout.replies", "nul-client", 1));
    cr_assert_null(codec_map_get(r, "errors", 6), "applied");
    codec_value_destroy(r);
    char *keys = NULL;
    double deadline = now_ms() + WAIT_MS;
    while (now_ms() < deadline) {
        free(keys);
        keys = partition_keys("flushout.snapshots", partition);
        if (*keys)
            break;
        pump(100);
    }
    cr_assert_str_eq(keys, "6e756c006964\n", "one snapshot record, of the whole id");
    free(keys);
    instance_stop(&a);
}

/* A flush of one command at path ("1" then "a"s: path_len elements, none for 0) whose
 * props nest `levels` maps, {"a":{"a":...{"a":1}}}. */
static void send_deep(const char *model, int seq, int from, const char *action,
                      int path_len, int levels)
{
    char json[4096];
    int off = snprintf(json, sizeof(json),
                       "{\"type\":\"flush\",\"client\":\"deep\",\"seq\":%d,\"from\":%d,"
                       "\"completions\":[{\"command\":{\"action\":\"%s\",\"path\":[",
                       seq, from, action);
    for (int i = 0; i < path_len; i++)
        off += snprintf(json + off, sizeof(json) - (size_t)off, "%s\"%s\"", i ? "," : "",
                        i ? "a" : "1");
    off += snprintf(json + off, sizeof(json) - (size_t)off, "],\"props\":");
    for (int i = 0; i < levels; i++)
        off += snprintf(json + off, sizeof(json) - (size_t)off, "{\"a\":");
    off += snprintf(json + off, sizeof(json) - (size_t)off, "1");
    for (int i = 0; i < levels; i++)
        off += snprintf(json + off, sizeof(json) - (size_t)off, "}");
    snprintf(json + off, sizeof(json) - (size_t)off, "}}]}");
    cr_assert_lt((size_t)off, sizeof(json) - 8);
    send_json(model, json, NULL);
}

/* A new instance `name` (options opts) serves model "deep" at count 4 as before. */
static void expect_deep_model(const char *name, const char *const *opts, int seq,
                              const char *before, const char *how)
{
    instance_t in;
    int64_t count;
    instance_start(&in, name, opts);
    char *after = snapshot_json("deep", "reader", seq, &count);
    cr_assert_eq(count, 4, "%s", how);
    cr_assert_str_eq(after, before, "%s", how);
    free(after);
    instance_stop(&in);
}

Test(kafka, a_document_as_deep_as_the_default_limits_allow_reads_back_everywhere)
{
    /* The default --max-depth and --max-path-length (the other tests lower them). */
    const char *deflt[] = {"--max-depth",
                           XSTR(CODEC_DEFAULT_MAX_DEPTH),
                           "--max-path-length",
                           XSTR(CODEC_DEFAULT_MAX_PATH_LENGTH),
                           "--snapshot-topic-every",
                           "1",
                           NULL};
    instance_t a;
    instance_start(&a, "a", deflt);
    /* Props 30 levels deep (the report's flush); a chain of "a"s long enough for the
     * longest path; at its end, props as deep as a request may hold them (the
     * request's own 4 levels above props: root, completions, completion, command). */
    int deepest = CODEC_DEFAULT_MAX_DEPTH - 4, path_len = CODEC_DEFAULT_MAX_PATH_LENGTH;
    send_deep("deep", 1, 0, "create", 0, 30);
    send_deep("deep", 2, 1, "update", 30, deepest);
    send_deep("deep", 3, 2, "create", path_len, deepest);
    send_deep("deep", 4, 3, "create", 0, 1);
    for (int seq = 1; seq <= 4; seq++) {
        codec_value_t *v = decode(await_record("flushout.replies", "deep", seq));
        cr_assert_null(codec_map_get(v, "error", 5), "flush %d is accepted", seq);
        codec_value_destroy(v);
    }
    int64_t count;
    char *before = snapshot_json("deep", "reader", 1, &count);
    cr_assert_eq(count, 4);
    instance_stop(&a);

    /* Reloaded from its own store (no cache). */
    instance_start(&a, "a", deflt);
    char *after = snapshot_json("deep", "reader", 2, &count);
    cr_assert_eq(count, 4, "reloaded");
    cr_assert_str_eq(after, before, "reloaded");
    free(after);
    instance_stop(&a);

    /* A new owner catching up from the change records alone. */
    const char *from_changes[] = {"--max-depth",
                                  XSTR(CODEC_DEFAULT_MAX_DEPTH),
                                  "--max-path-length",
                                  XSTR(CODEC_DEFAULT_MAX_PATH_LENGTH),
                                  "--snapshots-topic",
                                  "snapshots.none",
                                  NULL};
    expect_deep_model("b", from_changes, 3, before, "from the changes topic");

    /* A new owner restoring from the snapshot records alone. */
    create_topic("changes.none", PARTITIONS);
    const char *from_snapshots[] = {"--max-depth",
                                    XSTR(CODEC_DEFAULT_MAX_DEPTH),
                                    "--max-path-length",
                                    XSTR(CODEC_DEFAULT_MAX_PATH_LENGTH),
                                    "--changes-topic",
                                    "changes.none",
                                    NULL};
    expect_deep_model("c", from_snapshots, 4, before, "from the snapshots topic");
    free(before);
}

Test(kafka, an_unreadable_snapshot_record_stops_its_partition_instead_of_a_rollback)
{
    const char *opts_a[] = {"--snapshot-topic-every", "1", NULL};
    instance_t a;
    instance_start(&a, "a", opts_a);
    send_create("sk", "c", 1, 0, "i1");
    send_create("sk", "c", 2, 1, "i2");
    await_record("flushout.replies", "c", 2);
    instance_stop(&a);
    /* The model's newest snapshot record, as one this processor cannot read: skipping
     * it would serve the model as of the record before. */
    rd_kafka_resp_err_t err = rd_kafka_producev(
        producer, RD_KAFKA_V_TOPIC("flushout.snapshots"),
        RD_KAFKA_V_PARTITION(partition_of("sk")), RD_KAFKA_V_KEY("sk", 2),
        RD_KAFKA_V_VALUE("\x93\x01\x02\x03", 4), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_END);
    cr_assert_eq(err, 0);
    cr_assert_eq(rd_kafka_flush(producer, WAIT_MS), 0);

    /* A new owner restoring from the snapshots topic alone. */
    create_topic("changes.none", PARTITIONS);
    const char *opts_b[] = {"--changes-topic", "changes.none", NULL};
    instance_t b;
    instance_start(&b, "b", opts_b);
    send_json("sk", "{\"type\":\"snapshot\",\"client\":\"late\",\"seq\":1}", NULL);
    size_t from = 0;
    cr_assert_null(find_reply("late", 1, &from, 8000),
                   "the partition is not served rather than rolled back");
    instance_stop(&b);
    /* rebuild installs the snapshot records ahead of the changes: it fails too. */
    cr_assert_neq(rebuild_rc("rebuilt", "changes"), 0, "rebuild refuses, not skips");
}

/* ---- taking partitions over when Kafka fails (issue 13, findings 7, 8 and 9) ---- */

/* A free TCP port on 127.0.0.1 (bound once and released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, len), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* GET path from 127.0.0.1:port: @returns the status (-1: no connection), the body in
 * body (at most size - 1 bytes). */
static int http_get(int port, const char *path, char *body, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    body[0] = '\0';
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        close(fd);
        return -1;
    }
    char req[256];
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    static char buf[1 << 16];
    size_t got_bytes = 0;
    ssize_t r;
    while (got_bytes < sizeof(buf) - 1 &&
           (r = read(fd, buf + got_bytes, sizeof(buf) - 1 - got_bytes)) > 0)
        got_bytes += (size_t)r;
    close(fd);
    buf[got_bytes] = '\0';
    int status = -1;
    sscanf(buf, "HTTP/1.%*d %d", &status);
    const char *start = strstr(buf, "\r\n\r\n");
    snprintf(body, size, "%s", start ? start + 4 : "");
    return status;
}

/* The value of a sample (name with its labels) in a /metrics body, or -1. */
static double metric(const char *body, const char *sample)
{
    size_t len = strlen(sample);
    for (const char *l = body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (!strncmp(l, sample, len) && l[len] == ' ')
            return strtod(l + len + 1, NULL);
    return -1;
}

/* A failed committed-offset query (OffsetFetch refused) is tried again, never taken as
 * "no committed offset": a new store would start at the topic's beginning and answer
 * every flush again (duplicate replies). The errors are pushed while the partition
 * catches up (slowly: FLUSHOUT_FAILPOINT=catch-up-slow), so that they meet the
 * processor's own query, not the consumer's at assignment. */
Test(kafka, a_failed_committed_offset_query_is_tried_again)
{
    instance_t a;
    instance_start(&a, "a", NULL);
    for (int seq = 1; seq <= 3; seq++) {
        char id[16];
        snprintf(id, sizeof(id), "i%d", seq);
        send_create("committed", "c", seq, seq - 1, id);
        await_record("flushout.replies", "c", seq);
    }
    instance_stop(&a); /* commits the offsets */
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "rm -rf '%s/a'", dir);
    cr_assert_eq(system(path), 0); /* a new store: only Kafka knows where to start */

    size_t mark = got_len;
    setenv("FLUSHOUT_FAILPOINT", "catch-up-slow:1000", 1); /* 3 change records: 3 s */
    instance_start(&a, "a", NULL);
    snprintf(path, sizeof(path), "%s/a/partition-%d", dir, partition_of("committed"));
    for (double deadline = now_ms() + WAIT_MS; access(path, F_OK) && now_ms() < deadline;)
        usleep(20 * 1000);
    cr_assert_eq(access(path, F_OK), 0, "the partition is being taken over");
    usleep(500 * 1000);
    rd_kafka_mock_push_request_errors(mock, 9 /* OffsetFetch */, 3,
                                      RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
                                      RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED,
                                      RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED);
    unsetenv("FLUSHOUT_FAILPOINT");
    send_create("committed", "c", 4, 3, "i4");
    await_record("flushout.replies", "c", 4);
    pump(500);
    for (size_t j = mark; j < got_len; j++) {
        if (strcmp(got[j].topic, "flushout.replies"))
            continue;
        codec_value_t *v = decode(&got[j]);
        int64_t seq = int_field(v, "seq");
        codec_value_destroy(v);
        cr_assert_eq(seq, 4, "flush %lld answered again: the partition started over",
                     (long long)seq);
    }
    instance_stop(&a);
}

/* Watermark queries (ListOffsets) refused while partitions are taken over: the
 * takeover is tried again with backoff instead of failing the partitions for good;
 * past --takeover-timeout-ms /healthz says 503 naming them, /metrics counts them, and
 * once Kafka answers again the partitions are served and /healthz is 200. */
Test(kafka, a_takeover_failing_on_kafka_errors_is_retried_and_fails_healthz)
{
    rd_kafka_resp_err_t errors[400];
    for (size_t i = 0; i < 400; i++)
        errors[i] = RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED;
    pump(1000); /* the test's reader has its start offsets: the errors are the processor's
                 */
    rd_kafka_mock_push_request_errors_array(mock, 2 /* ListOffsets */, 400, errors);
    int port = free_port();
    char port_str[16];
    snprintf(port_str, sizeof(port_str), "%d", port);
    const char *opts[] = {"--http-port", port_str, "--takeover-timeout-ms", "2000", NULL};
    instance_t a;
    instance_start(&a, "a", opts);
    static char body[1 << 16];
    int status = 0;
    for (double deadline = now_ms() + WAIT_MS; status != 503 && now_ms() < deadline;) {
        usleep(200 * 1000);
        status = http_get(port, "/healthz", body, sizeof(body));
    }
    cr_assert_eq(status, 503, "/healthz fails while partitions cannot be taken over");
    cr_assert(strstr(body, "cannot be taken over") && strstr(body, "offsets of"), "%s",
              body);
    cr_assert_eq(http_get(port, "/metrics", body, sizeof(body)), 200);
    cr_assert_gt(metric(body, "flushout_partitions_retrying"), 0, "%s", body);
    cr_assert_gt(metric(body, "flushout_takeover_retries_total"), 0);
    cr_assert_eq(metric(body, "flushout_partitions_failed"), 0, "not failed for good");
    cr_assert_eq(http_get(port, "/readyz", body, sizeof(body)), 503);
    cr_assert(strstr(body, "taken over again"), "%s", body);

    rd_kafka_mock_clear_request_errors(mock, 2);
    for (int m = 0; m < 8; m++) { /* every partition serves again */
        char model[24], client[16];
        snprintf(model, sizeof(model), "back-%d", m);
        snprintf(client, sizeof(client), "c%d", m);
        send_create(model, client, 1, 0, "i1");
        await_record("flushout.replies", client, 1);
    }
    cr_assert_eq(http_get(port, "/healthz", body, sizeof(body)), 200, "%s", body);
    cr_assert_eq(http_get(port, "/metrics", body, sizeof(body)), 200);
    cr_assert_eq(metric(body, "flushout_partitions_retrying"), 0);
    instance_stop(&a);
}

/* The catch-up reader never jumps: where the broker says the offset is gone
 * (OFFSET_OUT_OF_RANGE: retention overtook the reader) librdkafka would reset to the
 * earliest offset and hand over records from before where the read started, or skip
 * the deleted ones; the reader reports a gap instead, and the caller restores. */
static int count_visit(const rd_kafka_message_t *m, void *ctx)
{
    int64_t *seen = ctx;
    if (seen[1] < 0)
        seen[1] = m->offset; /* the first offset handed over */
    seen[0]++;
    return 0;
}

Test(kafka, the_partition_reader_reports_a_gap_instead_of_resetting)
{
    /* The test's reader fetches no more: the injected error is this read's. */
    rd_kafka_topic_partition_list_t *mine;
    cr_assert_eq(rd_kafka_assignment(reader, &mine), 0);
    rd_kafka_pause_partitions(reader, mine);
    rd_kafka_topic_partition_list_destroy(mine);
    for (int i = 0; i < 10; i++) {
        processor_record_t rec = {"changes.a", 0, "k", 1, "v", 1, NULL, NULL};
        cr_assert_eq(processor_produce(producer, &rec, RD_KAFKA_MSG_F_COPY), 0);
    }
    cr_assert_eq(rd_kafka_flush(producer, WAIT_MS), 0);
    processor_config_t cfg;
    const char *argv[] = {
        "--bootstrap-servers", bootstrap, "--state-dir", dir, "--from", "changes"};
    char errstr[256];
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_REBUILD, "rebuild", 6,
                                       (char **)argv, errstr, sizeof(errstr)),
                 0, "%s", errstr);
    int64_t seen[2] = {0, -1};
    processor_partition_read_t rd = {"changes.a", 0, 5, 10, count_visit, NULL, seen};
    rd.contiguous = true;
    cr_assert_eq(processor_read_partition(&cfg, bootstrap, &rd), 0, "a read that works");
    cr_assert_eq(seen[0], 5);
    cr_assert_eq(seen[1], 5);

    /* The mock hands an injected error to the next Fetch of any client: one still in
     * flight from the paused reader or the first read's consumer may take it. A read
     * that then gets all its records in order proves that (its own Fetches came after
     * the error was queued), so the error is injected again, up to 5 times. */
    int rc = 0;
    for (int attempt = 0; attempt < 5 && rc != PROCESSOR_READ_GAP; attempt++) {
        seen[0] = 0;
        seen[1] = -1;
        rd.from = 5;
        rd_kafka_mock_push_request_errors(mock, 1 /* Fetch */, 1,
                                          RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE);
        rc = processor_read_partition(&cfg, bootstrap, &rd);
        cr_assert(seen[1] < 0 || seen[1] >= 5,
                  "records before the start were handed over "
                  "(offset %lld)",
                  (long long)seen[1]);
        if (rc != PROCESSOR_READ_GAP)
            cr_assert(rc == 0 && seen[0] == 5 && seen[1] == 5,
                      "without the error, the read is whole (rc %d, %lld records)", rc,
                      (long long)seen[0]);
    }
    cr_assert_eq(rc, PROCESSOR_READ_GAP, "the gap is reported (rc %d, %lld records)", rc,
                 (long long)seen[0]);
    processor_config_clear(&cfg);
}

/* Broker `leader` leads every partition of every topic and the group, except topic's
 * partition, which broker `other` leads: stopping `other` then strands only that one. */
static void lead_all_but_one(int32_t leader, const char *topic, int32_t partition,
                             int32_t other)
{
    const char *topics[] = {"flushout.flushes", "flushout.replies", "flushout.changes",
                            "flushout.dlq", "flushout.snapshots"};
    for (size_t t = 0; t < sizeof(topics) / sizeof(topics[0]); t++)
        for (int p = 0; p < PARTITIONS; p++)
            cr_assert_eq(rd_kafka_mock_partition_set_leader(mock, topics[t], p, leader),
                         0);
    cr_assert_eq(rd_kafka_mock_partition_set_leader(mock, topic, partition, other), 0);
    rd_kafka_mock_coordinator_set(mock, "group", "flushout-processor", leader);
}

/* A revoke waits for the revoked partitions' outputs only: a record stuck on its way
 * to a broker that is down (a snapshot record of another partition's model, say) must
 * not hold up the rebalance for the 30 s a revoke may wait. */
Test(kafka_faults, a_revoke_waits_only_for_the_revoked_partitions_outputs)
{
    lead_all_but_one(1, "flushout.snapshots", partition_of("stuck"), 3);
    const char *opts[] = {"--snapshot-topic-every", "1", NULL};
    instance_t a, b;
    instance_start(&a, "a", opts);
    send_create("stuck", "c", 1, 0, "i1");
    await_record("flushout.replies", "c", 1);
    usleep(1000 * 1000);                    /* every partition is taken over */
    rd_kafka_mock_broker_set_down(mock, 3); /* its next snapshot record is stuck */
    send_create("stuck", "c", 2, 1, "i2");
    await_record("flushout.replies", "c", 2);

    double started = now_ms();
    instance_start(&b, "b", opts); /* a rebalance: a revokes some partitions */
    usleep(8000 * 1000);
    char models[PARTITIONS][16] = {{0}};
    for (int i = 0, found = 0; found < PARTITIONS; i++) {
        char model[16];
        snprintf(model, sizeof(model), "rv-%d", i);
        if (!models[partition_of(model)][0]) {
            snprintf(models[partition_of(model)], sizeof(models[0]), "%s", model);
            found++;
        }
    }
    for (int p = 0; p < PARTITIONS; p++) {
        char client[16];
        snprintf(client, sizeof(client), "rv%d", p);
        send_create(models[p], client, 1, 0, "i1");
    }
    for (int p = 0; p < PARTITIONS; p++) {
        /* Not the stuck model's partition: a new owner cannot restore it while its
         * snapshots partition has no leader. */
        if (p == partition_of("stuck"))
            continue;
        char client[16];
        snprintf(client, sizeof(client), "rv%d", p);
        size_t from = 0;
        int left = (int)(started + 20000 - now_ms());
        cr_assert_not_null(find_reply(client, 1, &from, left > 0 ? left : 0),
                           "partition %d answers within 20 s of the rebalance", p);
    }
    rd_kafka_mock_broker_set_up(mock, 3);
    instance_stop(&b);
    instance_stop(&a);
}

/* A revoke waits a while for its partitions' records, then closes their stores; a
 * record still in flight is sent later from its step's outbox bytes, which the store
 * no longer holds (state/README.md, "One copy per output"). Here the broker leading the
 * reply's partition is down through the revoke at exit (revoke-wait:300 shortens the
 * wait), and comes back while the producer flushes: the reply then arrives whole, and
 * under ASan nothing has read freed bytes. */
Test(kafka_faults, a_reply_in_flight_when_its_store_closes_arrives_whole)
{
    /* Replies are keyed by client: "late"'s go to a partition led by broker 3. */
    lead_all_but_one(1, "flushout.replies", partition_of("late"), 3);
    setenv("FLUSHOUT_FAILPOINT", "revoke-wait:300", 1);
    instance_t a;
    instance_start(&a, "a", NULL);
    send_create("late-model", "late", 1, 0, "i1");
    await_record("flushout.replies", "late", 1);
    rd_kafka_mock_broker_set_down(mock, 3);
    send_create("late-model", "late", 2, 1, "i2");
    await_record("flushout.changes", "late", 2); /* applied; its reply is stuck */
    a.run->stop = 1;     /* leaving revokes everything, and waits 300 ms */
    usleep(3000 * 1000); /* the stores are closed; the producer still flushes */
    unsetenv("FLUSHOUT_FAILPOINT");
    rd_kafka_mock_broker_set_up(mock, 3);
    const got_t *g = await_record("flushout.replies", "late", 2);
    codec_value_t *reply = decode(g);
    char buf[64];
    cr_assert_str_eq(str_field(reply, "type", buf, sizeof(buf)), "flushResult");
    const codec_value_t *applied = codec_map_get(reply, "applied", 7);
    cr_assert(applied && applied->type == CODEC_VALUE_MAP);
    cr_assert_eq(int_field(applied, "from"), 1, "the reply of seq 2, whole");
    const codec_value_t *completions = codec_map_get(applied, "completions", 11);
    cr_assert(completions && completions->type == CODEC_VALUE_ARRAY &&
              completions->u.array.len == 1);
    codec_value_destroy(reply);
    instance_stop(&a);
}

/* Flushes of a 30 KB string to models cache-FIRST.., each answered. */
static void fill_models(int first, int count, int *seq)
{
    static char json[31000];
    char blob[30001];
    memset(blob, 'x', 30000);
    blob[30000] = '\0';
    int from_seq = *seq + 1;
    for (int i = first; i < first + count; i++) {
        char model[24];
        snprintf(model, sizeof(model), "cache-%d", i);
        snprintf(json, sizeof(json),
                 "{\"type\":\"flush\",\"client\":\"big\",\"seq\":%d,\"from\":0,"
                 "\"completions\":[{\"command\":{\"action\":\"create\",\"path\":"
                 "[\"items\"],\"parentDefault\":{},\"props\":{\"blob\":\"%s\"}}}]}",
                 ++*seq, blob);
        send_json(model, json, NULL);
    }
    for (int s = from_seq; s <= *seq; s++)
        await_record("flushout.replies", "big", s);
}

/* The partitions whose stores the instance has opened (partition-N directories). */
static int stores_of(const char *name)
{
    int n = 0;
    for (int p = 0; p < PARTITIONS; p++) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s/partition-%d", dir, name, p);
        n += access(path, F_OK) == 0;
    }
    return n;
}

/* --cache-mb bounds the caches of all an instance's stores together, also when its
 * partitions come in more than one assignment (each store's share was fixed when it
 * was opened, and no store got less than 8 MB). */
Test(kafka, the_caches_stay_within_cache_mb_after_incremental_assignments)
{
    int port = free_port();
    char port_str[16];
    snprintf(port_str, sizeof(port_str), "%d", port);
    const char *opts[] = {"--cache-mb",
                          "1",
                          "--max-string-bytes",
                          "65536",
                          "--max-document-bytes",
                          "10000000",
                          "--max-record-bytes",
                          "200000",
                          "-X", /* documents of 10 MB need records as large */
                          "message.max.bytes=11000000",
                          "--http-port",
                          port_str,
                          NULL};
    const char *opts_b[13];
    memcpy(opts_b, opts, sizeof(opts_b));
    opts_b[10] = NULL; /* the HTTP port is a's */
    instance_t a, b;
    instance_start(&b, "b", opts_b);
    int seq = 0;
    fill_models(0, 8, &seq); /* b holds every partition */
    instance_start(&a, "a", opts);
    for (double deadline = now_ms() + WAIT_MS; stores_of("a") < 2 && now_ms() < deadline;)
        usleep(100 * 1000);
    cr_assert_eq(stores_of("a"), 2, "a has half the partitions");
    fill_models(8, 48, &seq); /* a's two stores fill their caches */
    instance_stop(&b);        /* a gets the other two */
    for (double deadline = now_ms() + WAIT_MS; stores_of("a") < 4 && now_ms() < deadline;)
        usleep(100 * 1000);
    cr_assert_eq(stores_of("a"), 4, "a has every partition");
    fill_models(56, 48, &seq);
    usleep(1200 * 1000); /* the stores' figures are refreshed at most once a second */
    fill_models(104, 8, &seq);
    static char body[1 << 16];
    cr_assert_eq(http_get(port, "/metrics", body, sizeof(body)), 200);
    double bytes = metric(body, "flushout_cache_bytes");
    cr_assert_gt(bytes, 0, "%s", body);
    cr_assert_leq(bytes, 1 << 20, "the caches hold %.0f bytes, more than --cache-mb 1",
                  bytes);
    instance_stop(&a);
}

/* The settings recorded with a partition's store, or NULL. */
static char *store_settings(const char *name, int32_t partition)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s/partition-%d", dir, name, partition);
    state_store_conf_t sc = {.dir = path, .cache_bytes = 1 << 20};
    sc.partition = partition;
    char errstr[256];
    state_store_t *store = state_store_open(&sc, errstr, sizeof(errstr));
    cr_assert_not_null(store, "%s", errstr);
    char *settings = state_store_settings(store);
    state_store_close(store);
    return settings;
}

/* Settings that change what a flush produces are recorded with each store (a store
 * from before they were recorded takes the current ones); an instance started with
 * others refuses to run, naming them; rebuild records the settings it used. */
Test(kafka, settings_that_change_outcomes_are_recorded_and_a_mismatch_is_refused)
{
    int32_t p = partition_of("set-0");
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/a/partition-%d", dir, p);
    char errstr[256];
    cr_assert_eq(processor_make_dirs(path, errstr, sizeof(errstr)), 0, "%s", errstr);
    state_store_conf_t sc = {.dir = path, .cache_bytes = 1 << 20};
    sc.partition = p;
    state_store_t *old = state_store_open(&sc, errstr, sizeof(errstr));
    cr_assert_not_null(old, "%s", errstr);
    state_store_set_partition_count(old, PARTITIONS); /* as earlier versions did */
    cr_assert_eq(state_store_commit(old, -1, errstr, sizeof(errstr)), 0);
    state_store_close(old);
    cr_assert_null(store_settings("a", p));

    instance_t a;
    instance_start(&a, "a", NULL);
    send_create("set-0", "c", 1, 0, "i1");
    await_record("flushout.replies", "c", 1);
    instance_stop(&a);
    char *recorded = store_settings("a", p);
    cr_assert_not_null(recorded, "an old store takes the current settings");
    cr_assert(strstr(recorded, "ids=sequential;") && strstr(recorded, ";max-depth=8;") &&
                  strstr(recorded, ";max-record-bytes=4096;") &&
                  strstr(recorded, "initial-document={}"),
              "%s", recorded);

    const char *deeper[] = {"--max-depth", "9", NULL};
    instance_start(&a, "a", deeper);
    cr_assert_eq(instance_exited(&a), 1, "the processor refuses to start");
    char *now = processor_settings(&a.cfg, NULL);
    char differ[512];
    cr_assert_eq(processor_settings_diff(recorded, now, differ, sizeof(differ)), 1);
    cr_assert_str_eq(differ, "--max-depth 8 when the state was built, 9 now");
    free(now);
    processor_config_clear(&a.cfg);

    rebuild("rebuilt", "changes");
    char *rebuilt = store_settings("rebuilt", p);
    cr_assert_not_null(rebuilt);
    cr_assert_str_eq(rebuilt, recorded, "rebuild records the settings it used");
    free(rebuilt);
    free(recorded);
}

/* Writes a script that stamps creates with tag (NUL-terminated path in out). */
static void write_stamp_script(const char *name, const char *tag, char *out, size_t size)
{
    char text[512];
    snprintf(text, sizeof(text),
             "function intercept(document, command)\n"
             "  if command.action ~= 'create' then return nil end\n"
             "  local props = {}\n"
             "  for k, v in pairs(command.props or {}) do props[k] = v end\n"
             "  props.tag = '%s'\n"
             "  return {newProps = props}\n"
             "end\n",
             tag);
    write_script(name, text, out, size);
}

/* Deploying another script is allowed: the hash is recorded, not enforced, and change
 * records written under the old one still restore (they hold resolved commands). */
/* Client c's flush of one create at the document's root (newProps drop parentDefault,
 * as in flushout, so a create under a missing parent would fail). */
static void send_root_create(const char *model, int seq, int from, const char *id)
{
    char json[256];
    snprintf(json, sizeof(json),
             "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%d,\"from\":%d,"
             "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":{"
             "\"n\":%d}},\"createdId\":\"%s\"}]}",
             seq, from, seq, id);
    send_json(model, json, NULL);
}

Test(kafka, a_changed_interceptor_is_recorded_and_not_refused)
{
    char script_a[PATH_MAX], script_b[PATH_MAX];
    write_stamp_script("stamp-a", "A", script_a, sizeof(script_a));
    write_stamp_script("stamp-b", "B", script_b, sizeof(script_b));
    const char *with_a[] = {"--interceptor", script_a, "--max-document-bytes", "65536",
                            NULL};
    const char *with_b[] = {"--interceptor", script_b, "--max-document-bytes", "65536",
                            NULL};
    const char *without[] = {"--max-document-bytes", "65536", NULL};
    int32_t p = partition_of("tagged");

    instance_t a, b;
    instance_start(&a, "a", with_a);
    send_root_create("tagged", 1, 0, "i1");
    char *reply = reply_json("c", 1);
    cr_assert(strstr(reply, "\"tag\":\"A\""), "%s", reply);
    free(reply);
    instance_stop(&a);
    char *recorded_a = store_settings("a", p);
    cr_assert(strstr(recorded_a, ";interceptor=sha256:"), "%s", recorded_a);

    instance_start(&a, "a", with_b); /* not refused */
    send_root_create("tagged", 2, 1, "i2");
    reply = reply_json("c", 2);
    cr_assert(strstr(reply, "\"tag\":\"B\""), "%s", reply);
    free(reply);
    instance_stop(&a);
    char *recorded_b = store_settings("a", p);
    cr_assert_str_neq(recorded_a, recorded_b, "the new script's hash is recorded");
    char id_a[PROCESSOR_SETTINGS_ID_LEN + 1], id_b[PROCESSOR_SETTINGS_ID_LEN + 1];
    processor_settings_id(recorded_a, id_a);
    processor_settings_id(recorded_b, id_b);
    cr_assert_str_eq(id_a, id_b, "records stay compatible");
    char differ[512];
    cr_assert_eq(processor_settings_diff(recorded_a, recorded_b, differ, sizeof(differ)),
                 0, "%s", differ);

    /* A new owner without a script restores both flushes' outcomes from the changes
     * topic (written under A and B) and applies the next one as sent. */
    instance_start(&b, "b", without);
    send_root_create("tagged", 3, 2, "i3");
    reply = reply_json("c", 3);
    cr_assert_null(strstr(reply, "\"tag\""), "%s", reply);
    free(reply);
    int64_t count;
    char *doc = snapshot_json("tagged", "reader", 1, &count);
    cr_assert_eq(count, 3);
    cr_assert(strstr(doc, "\"tag\":\"A\"") && strstr(doc, "\"tag\":\"B\""), "%s", doc);
    free(doc);
    instance_stop(&b);
    char *recorded_none = store_settings("b", p);
    cr_assert_null(strstr(recorded_none, "interceptor="), "%s", recorded_none);
    free(recorded_a);
    free(recorded_b);
    free(recorded_none);
}

/* ---- settings travel with the change and snapshot records ---- */

/* The last value of header name in m (NUL-terminated copy, caller frees), or NULL. */
static char *message_header(const rd_kafka_message_t *m, const char *name)
{
    rd_kafka_headers_t *hdrs;
    const void *v;
    size_t len;
    if (rd_kafka_message_headers(m, &hdrs) ||
        rd_kafka_header_get_last(hdrs, name, &v, &len))
        return NULL;
    char *out = malloc(len + 1);
    memcpy(out, v, len);
    out[len] = '\0';
    return out;
}

typedef struct settings_seen_s {
    const char *id, *text; /* expected */
    int records;
} settings_seen_t;

static int snapshot_settings_visit(const rd_kafka_message_t *m, void *ctx)
{
    settings_seen_t *seen = ctx;
    char *id = message_header(m, PROCESSOR_SETTINGS_HEADER);
    char *text = message_header(m, PROCESSOR_SETTINGS_TEXT_HEADER);
    cr_assert_not_null(id, "snapshot record at offset %lld: no settings header",
                       (long long)m->offset);
    cr_assert_str_eq(id, seen->id);
    cr_assert_not_null(text, "snapshot record at offset %lld: no settings text",
                       (long long)m->offset);
    cr_assert_str_eq(text, seen->text);
    free(id);
    free(text);
    seen->records++;
    return 0;
}

/* Every change record carries the identity of the settings it was produced under, and
 * every snapshot record the identity and the settings themselves. */
Test(kafka, change_and_snapshot_records_carry_the_settings)
{
    const char *opts[] = {"--snapshot-topic-every", "1", NULL};
    instance_t a;
    instance_start(&a, "a", opts);
    char *settings = processor_settings(&a.cfg, NULL);
    char id[PROCESSOR_SETTINGS_ID_LEN + 1];
    processor_settings_id(settings, id);
    cr_assert_eq(strlen(id), 16);
    /* One at a time: two flushes of a model in one step publish one snapshot record. */
    send_create("hd", "c", 1, 0, "i1");
    size_t first = (size_t)(await_record("flushout.changes", "c", 1) - got);
    send_create("hd", "c", 2, 1, "i2");
    size_t second = (size_t)(await_record("flushout.changes", "c", 2) - got);
    const got_t *changes[2] = {&got[first], &got[second]}; /* got[] may have moved */
    for (int i = 0; i < 2; i++) {
        char buf[64];
        const char *h =
            header_str(changes[i], PROCESSOR_SETTINGS_HEADER, buf, sizeof(buf));
        cr_assert_not_null(h, "change record %d: no settings header", i + 1);
        cr_assert_str_eq(h, id, "change record %d", i + 1);
        cr_assert_null(
            header_str(changes[i], PROCESSOR_SETTINGS_TEXT_HEADER, buf, sizeof(buf)),
            "change records carry the identity only");
    }
    instance_stop(&a);

    settings_seen_t seen = {id, settings, 0};
    processor_partition_read_t rd = {"flushout.snapshots",
                                     partition_of("hd"),
                                     -1,
                                     -1,
                                     snapshot_settings_visit,
                                     NULL,
                                     &seen};
    processor_config_t cfg;
    const char *argv[] = {
        "--bootstrap-servers", bootstrap, "--state-dir", dir, "--from", "changes"};
    char errstr[256];
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_REBUILD, "rebuild", 6,
                                       (char **)argv, errstr, sizeof(errstr)),
                 0, "%s", errstr);
    cr_assert_eq(processor_read_partition(&cfg, bootstrap, &rd), 0);
    cr_assert_eq(seen.records, 2, "one snapshot record per command, not %d",
                 seen.records);
    processor_config_clear(&cfg);
    free(settings);
}

/* Waits for an instance to stop by itself. @returns its exit code. */
static int instance_refuses(instance_t *in)
{
    int rc = instance_exited(in);
    processor_config_clear(&in->cfg);
    return rc;
}

/* Two instances configured differently from the start, each with its own state
 * directory: the one taking the partitions over refuses the change and snapshot records
 * written under the other's settings instead of catching up and diverging; so does
 * rebuild. --accept-settings lets a deliberate change of the settings through. */
Test(kafka, records_written_under_other_settings_are_refused)
{
    const char *opts_a[] = {"--snapshot-topic-every", "2", NULL};
    instance_t a;
    instance_start(&a, "a", opts_a);
    char *settings_a = processor_settings(&a.cfg, NULL);
    char id_a[PROCESSOR_SETTINGS_ID_LEN + 1];
    processor_settings_id(settings_a, id_a);
    const char *models[] = {"os-0", "os-1", "os-2"};
    for (int seq = 1; seq <= 3; seq++) {
        for (int m = 0; m < 3; m++) {
            char id[16];
            snprintf(id, sizeof(id), "i%d", seq);
            send_create(models[m], "c", seq, seq - 1, id);
        }
        await_record("flushout.replies", "c", seq);
    }
    /* A reply above is any one model's: a flush a stopped before applying would be
     * consumed by c below (a partition with no snapshot record is restored, empty,
     * from changes.none) and its change record written there, out of d's reach. */
    for (int m = 0; m < 3; m++) {
        int64_t count;
        free(snapshot_json(models[m], "reader", 1 + m, &count));
        cr_assert_eq(count, 3, "%s: every flush applied before a stops", models[m]);
    }
    instance_stop(&a);

    /* Catching up from the change records. */
    const char *history[] = {"--history", "5", NULL};
    instance_t b;
    instance_start(&b, "b", history);
    cr_assert_eq(instance_refuses(&b), 1, "refused, not caught up");

    /* Restoring from the snapshot records alone. */
    create_topic("changes.none", PARTITIONS);
    const char *history_snapshots[] = {"--history", "5", "--changes-topic",
                                       "changes.none", NULL};
    instance_t c;
    instance_start(&c, "c", history_snapshots);
    cr_assert_eq(instance_refuses(&c), 1, "refused, not restored");

    /* Offline, from either. */
    cr_assert_neq(rebuild_with("rebuilt", "changes", history), 0, "rebuild refuses");
    const char *history_flushes[] = {"--history", "5", NULL};
    cr_assert_eq(rebuild_with("rebuilt-flushes", "flushes", history_flushes), 0,
                 "re-running the flushes under other settings is not refused");

    /* A deliberate change of the settings: the old ones accepted. */
    const char *accept[] = {"--history", "5", "--accept-settings", id_a, NULL};
    instance_t d;
    instance_start(&d, "d", accept);
    for (int m = 0; m < 3; m++) {
        int64_t count;
        free(snapshot_json(models[m], "reader", 10 + m, &count));
        cr_assert_eq(count, 3, "%s caught up (count %lld)", models[m], (long long)count);
    }
    instance_stop(&d);
    free(settings_a);
}

/* A step ends once its outputs pass a byte bound (they are one RocksDB value, held in
 * memory until delivered); the records it did not take go back to the front of the
 * queue. With the bound at 1 byte every record is a step of its own: all of a queued
 * batch must still be applied once each, in order. */
Test(kafka, steps_cut_short_by_their_output_bytes_lose_and_reorder_nothing)
{
    enum { FLUSHES = 40 };
    /* Queued before the processor starts, so that one fetch hands them over at once. */
    for (int seq = 1; seq <= FLUSHES; seq++) {
        char id[16];
        snprintf(id, sizeof(id), "i%d", seq);
        send_create("batched", "bulk", seq, seq - 1, id);
    }
    setenv("FLUSHOUT_FAILPOINT", "step-output-bytes:1", 1);
    instance_t a;
    instance_start(&a, "a", NULL);
    for (int seq = 1; seq <= FLUSHES; seq++) {
        codec_value_t *r = decode(await_record("flushout.replies", "bulk", seq));
        cr_assert_null(codec_map_get(r, "errors", 6), "flush %d applied", seq);
        cr_assert_null(codec_map_get(r, "duplicate", 9), "flush %d applied once", seq);
        codec_value_destroy(r);
    }
    int64_t count;
    free(snapshot_json("batched", "reader", 1, &count));
    cr_assert_eq(count, FLUSHES, "each flush applied once");
    /* The change records are in command order: applied.from 0, 1, 2, ... */
    int64_t next_from = 0;
    for (size_t j = 0; j < got_len; j++) {
        if (strcmp(got[j].topic, "flushout.changes") || got[j].key_len != 7 ||
            memcmp(got[j].key, "batched", 7))
            continue;
        codec_value_t *c = decode(&got[j]);
        cr_assert_eq(int_field(codec_map_get(c, "applied", 7), "from"), next_from);
        next_from++;
        codec_value_destroy(c);
    }
    cr_assert_eq(next_from, FLUSHES, "one change record per flush");
    unsetenv("FLUSHOUT_FAILPOINT");
    instance_stop(&a);
}

/* rebuild --from changes catches up as a new owner does (processor/catch_up.h): where
 * the change records start after a gap, it installs the snapshots ahead and reads the
 * changes again, giving the live models (client records included); it records the
 * input offset the change records reached; with no snapshots either it refuses. */
Test(kafka, rebuild_restores_from_snapshots_where_the_changes_do_not_reach_back)
{
    const char *models[] = {"rs-0", "rs-1", "rs-2"};
    char *before[3];
    three_models_with_snapshots(models, before);
    /* The change records from command 8 on (snapshots were taken at 5 and 10). */
    int64_t next_input[PARTITIONS];
    copy_changes_tail(8, next_input);

    const char *tail[] = {"--changes-topic", "changes.tail", NULL};
    cr_assert_eq(rebuild_with("rebuilt", "changes", tail), 0, "rebuilt");
    for (int m = 0; m < 3; m++) {
        int32_t p = partition_of(models[m]);
        char path[PATH_MAX], errstr[256];
        snprintf(path, sizeof(path), "%s/rebuilt/partition-%d", dir, p);
        state_store_conf_t conf = {.dir = path, .history = 1000, .cache_bytes = 1 << 20};
        conf.partition = p;
        state_store_t *s = state_store_open(&conf, errstr, sizeof(errstr));
        cr_assert_not_null(s, "%s", errstr);
        cr_assert_eq(state_store_next_offset(s), next_input[p],
                     "%s: the input offset the change records reached", models[m]);
        state_store_close(s);
    }
    instance_t b;
    instance_start(&b, "rebuilt", tail);
    expect_three_models(models, before);
    for (int m = 0; m < 3; m++)
        free(before[m]);
    size_t mark = got_len;
    send_create("rs-0", "c", 12, 11, "i12"); /* a retry of the last flush */
    const got_t *retry = find_reply("c", 12, &mark, WAIT_MS);
    cr_assert_not_null(retry, "the retry is answered");
    codec_value_t *r = decode(retry);
    const codec_value_t *d = codec_map_get(r, "duplicate", 9);
    cr_assert(d && d->type == CODEC_VALUE_BOOL && d->u.b,
              "client records come with the snapshots: the retry is recognised");
    codec_value_destroy(r);
    instance_stop(&b);

    const char *no_snapshots[] = {"--changes-topic", "changes.tail", "--snapshots-topic",
                                  "snapshots.none", NULL};
    cr_assert_neq(rebuild_with("refused", "changes", no_snapshots), 0,
                  "neither topic reaches back: refused");
}

/* rebuild tries a catch-up that fails on a transient Kafka error again (the watermark
 * queries refused here), as a takeover is, instead of failing the partition. */
Test(kafka, rebuild_tries_a_transient_kafka_error_again)
{
    instance_t a;
    instance_start(&a, "live", NULL);
    for (int seq = 1; seq <= 3; seq++) {
        send_create("again", "c", seq, seq - 1, "i");
        await_record("flushout.replies", "c", seq);
    }
    instance_stop(&a);
    pump(1000); /* the test's reader has its start offsets: the errors are rebuild's */
    rd_kafka_mock_push_request_errors(mock, 2 /* ListOffsets */, 4,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
                                      RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED);
    rebuild("rebuilt", "changes");
    char *live = dump_named("live"), *rebuilt = dump_named("rebuilt");
    cr_assert_str_eq(rebuilt, live, "rebuilt once Kafka answered");
    free(live);
    free(rebuilt);
}
