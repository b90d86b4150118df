/* tests/processor/test_topics.c - `flushout-processor topics`: the topic specs built
 * from the options, their validation, librdkafka accepting the CreateTopics objects,
 * the comparison with what a cluster has, and describe/create on the mock cluster. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "processor/cmd_topics.h"
#include "processor/kafka.h"
#include "processor/options.h"

static processor_config_t cfg;
static bool cfg_loaded;

static void teardown(void)
{
    if (cfg_loaded)
        processor_config_clear(&cfg);
    cfg_loaded = false;
}

TestSuite(processor_topics, .fini = teardown);

/* Loads the topics command's options from a NULL-terminated argument list. */
static void load_args(const char *first, ...)
{
    char *argv[64];
    int argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *))
        argv[argc++] = (char *)a;
    va_end(ap);
    char errstr[512];
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_TOPICS, "topics", argc, argv,
                                       errstr, sizeof(errstr)),
                 0, "%s", errstr);
    cfg_loaded = true;
}
#define load(...) load_args(__VA_ARGS__, NULL)

static void build_specs(processor_topic_spec_t specs[PROCESSOR_TOPIC_COUNT])
{
    char errstr[512];
    cr_assert_eq(processor_topic_specs(&cfg, true, specs, errstr, sizeof(errstr)), 0,
                 "%s", errstr);
}

/* The value spec gives config name, or NULL when it sets no such config. */
static const char *config(const processor_topic_spec_t *spec, const char *name)
{
    for (size_t i = 0; i < spec->config_count; i++)
        if (!strcmp(spec->configs[i].name, name))
            return spec->configs[i].value;
    return NULL;
}

static void assert_spec(const processor_topic_spec_t *s, const char *role,
                        const char *name, int partitions, int replication,
                        bool copartitioned, const char *cleanup_policy,
                        const char *retention_ms, const char *min_insync)
{
    cr_assert_str_eq(s->role, role);
    cr_assert_str_eq(s->name, name);
    cr_assert_eq(s->partitions, partitions, "%s", role);
    cr_assert_eq(s->replication_factor, replication, "%s", role);
    cr_assert_eq(s->copartitioned, copartitioned, "%s", role);
    cr_assert_eq(s->config_count, retention_ms ? 3u : 2u, "%s", role);
    cr_assert_str_eq(config(s, "cleanup.policy"), cleanup_policy, "%s", role);
    if (retention_ms)
        cr_assert_str_eq(config(s, "retention.ms"), retention_ms, "%s", role);
    else
        cr_assert_null(config(s, "retention.ms"), "%s", role);
    cr_assert_str_eq(config(s, "min.insync.replicas"), min_insync, "%s", role);
}

Test(processor_topics, specs_follow_the_defaults_for_every_topic)
{
    load("create", "--bootstrap-servers", "kafka:9092", "--partitions", "6");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    build_specs(s);
    /* Flushes are kept as long as the changes (the default 7 days). */
    assert_spec(&s[0], "flushes", "flushout.flushes", 6, 3, true, "delete", "604800000",
                "2");
    assert_spec(&s[1], "replies", "flushout.replies", 6, 3, false, "delete", "86400000",
                "2");
    assert_spec(&s[2], "changes", "flushout.changes", 6, 3, true, "delete", "604800000",
                "2");
    assert_spec(&s[3], "snapshots", "flushout.snapshots", 6, 3, true, "compact", NULL,
                "2");
    assert_spec(&s[4], "dlq", "flushout.dlq", 6, 3, false, "delete", "1209600000", "2");
}

Test(processor_topics, specs_use_the_given_names_replication_and_retentions)
{
    load("create", "--bootstrap-servers", "kafka:9092", "--partitions", "12",
         "--replication-factor", "5", "--min-insync-replicas", "3", "--flushes-topic",
         "f", "--replies-topic", "r", "--changes-topic", "c", "--snapshots-topic", "s",
         "--dlq-topic", "d", "--changes-retention-ms", "1000", "--replies-retention-ms",
         "2000", "--dlq-retention-ms", "3000");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    build_specs(s);
    assert_spec(&s[0], "flushes", "f", 12, 5, true, "delete", "1000", "3");
    assert_spec(&s[1], "replies", "r", 12, 5, false, "delete", "2000", "3");
    assert_spec(&s[2], "changes", "c", 12, 5, true, "delete", "1000", "3");
    assert_spec(&s[3], "snapshots", "s", 12, 5, true, "compact", NULL, "3");
    assert_spec(&s[4], "dlq", "d", 12, 5, false, "delete", "3000", "3");
}

Test(processor_topics, zero_retention_keeps_forever)
{
    load("create", "--bootstrap-servers", "kafka:9092", "--partitions", "1",
         "--changes-retention-ms", "0", "--replies-retention-ms", "0",
         "--dlq-retention-ms", "0");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    build_specs(s);
    cr_assert_str_eq(config(&s[0], "retention.ms"), "-1");
    cr_assert_str_eq(config(&s[1], "retention.ms"), "-1");
    cr_assert_str_eq(config(&s[2], "retention.ms"), "-1");
    cr_assert_str_eq(config(&s[4], "retention.ms"), "-1");
}

Test(processor_topics, create_requires_partitions_and_describe_does_not)
{
    load("describe", "--bootstrap-servers", "kafka:9092");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    char errstr[512] = "";
    cr_assert_eq(processor_topic_specs(&cfg, true, s, errstr, sizeof(errstr)), -1);
    cr_assert_str_eq(errstr, "--partitions is required to create topics");
    cr_assert_eq(processor_topic_specs(&cfg, false, s, errstr, sizeof(errstr)), 0);
    cr_assert_eq(s[0].partitions, 0, "0: not compared");
}

Test(processor_topics, min_insync_above_replication_is_refused)
{
    load("create", "--bootstrap-servers", "kafka:9092", "--partitions", "4",
         "--replication-factor", "2", "--min-insync-replicas", "3");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    char errstr[512] = "";
    cr_assert_eq(processor_topic_specs(&cfg, true, s, errstr, sizeof(errstr)), -1);
    cr_assert_str_eq(errstr,
                     "--min-insync-replicas 3 is more than --replication-factor 2: "
                     "no write with acks=all could ever succeed");
}

Test(processor_topics, min_insync_equal_to_replication_is_allowed)
{
    load("create", "--bootstrap-servers", "kafka:9092", "--partitions", "4",
         "--replication-factor", "1", "--min-insync-replicas", "1");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    build_specs(s);
    cr_assert_str_eq(config(&s[0], "min.insync.replicas"), "1");
}

Test(processor_topics, two_topic_options_naming_one_topic_are_refused)
{
    load("describe", "--bootstrap-servers", "kafka:9092", "--dlq-topic",
         "flushout.changes");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    char errstr[512] = "";
    cr_assert_eq(processor_topic_specs(&cfg, false, s, errstr, sizeof(errstr)), -1);
    cr_assert_str_eq(errstr, "--changes-topic and --dlq-topic both name "
                             "\"flushout.changes\": each needs its own topic");
}

Test(processor_topics, replies_on_the_flushes_topic_are_refused)
{
    load("describe", "--bootstrap-servers", "kafka:9092", "--replies-topic",
         "flushout.flushes");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    char errstr[512] = "";
    cr_assert_eq(processor_topic_specs(&cfg, false, s, errstr, sizeof(errstr)), -1);
    cr_assert_str_eq(errstr, "--flushes-topic and --replies-topic both name "
                             "\"flushout.flushes\": each needs its own topic");
}

Test(processor_topics, an_empty_topic_name_is_refused)
{
    load("describe", "--bootstrap-servers", "kafka:9092", "--snapshots-topic=");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    char errstr[512] = "";
    cr_assert_eq(processor_topic_specs(&cfg, false, s, errstr, sizeof(errstr)), -1);
    cr_assert_str_eq(errstr, "--snapshots-topic is empty");
}

Test(processor_topics, the_command_needs_an_action)
{
    load("--bootstrap-servers", "127.0.0.1:1", "--partitions", "4");
    cr_assert_null(cfg.action);
    cr_assert_eq(processor_cmd_topics(&cfg, stdout), 1);
}

Test(processor_topics, librdkafka_refuses_a_partition_count_it_cannot_send)
{
    load("create", "--bootstrap-servers", "kafka:9092", "--partitions", "200000");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    build_specs(s);
    char errstr[512] = "";
    cr_assert_null(processor_topic_new(&s[0], errstr, sizeof(errstr)));
    cr_assert(strstr(errstr, "num_partitions out of expected range"), "%s", errstr);
}

/* Runs the command with the loaded options; its report in *report (caller frees). */
static int run_topics(char **report)
{
    size_t size;
    FILE *out = open_memstream(report, &size);
    int rc = processor_cmd_topics(&cfg, out);
    fclose(out);
    return rc;
}

/* A fake Kafka broker speaking just enough of the protocol for the Admin API
 * (ApiVersions v3, Metadata v1, DescribeConfigs v0, CreateTopics v0-1), because the
 * mock cluster implements neither Admin request and no real cluster runs here. It
 * answers from a list of topics and records the CreateTopics request it receives, so
 * the tests see what librdkafka put on the wire. */
#define FAKE_TOPICS_MAX  8
#define FAKE_CONFIGS_MAX 4
#define FAKE_CLIENTS_MAX 16

typedef struct fake_topic_s {
    char name[64];
    int partitions, replicas;
    int config_count;
    char config_names[FAKE_CONFIGS_MAX][32], config_values[FAKE_CONFIGS_MAX][32];
    int assignments; /* CreateTopics: replica assignments sent */
} fake_topic_t;

static struct {
    pthread_t thread;
    pthread_mutex_t lock;
    int listener, port;
    atomic_bool stop;
    bool describe_configs;  /* advertise DescribeConfigs */
    int16_t describe_error; /* per-resource error answered to DescribeConfigs */
    int16_t create_error;   /* per-topic error answered to CreateTopics */
    const char *create_message;
    fake_topic_t topics[FAKE_TOPICS_MAX]; /* what the cluster has */
    int topic_count;
    int create_requests; /* the last one: */
    fake_topic_t created[FAKE_TOPICS_MAX];
    int created_count;
    int32_t create_timeout_ms;
    int validate_only;
    char problem[256]; /* the first request the fake could not parse or answer */
} fake;

/* Notes what went wrong in the fake's thread, where Criterion cannot assert. */
static void fake_problem(const char *what)
{
    if (!fake.problem[0])
        snprintf(fake.problem, sizeof(fake.problem), "%s", what);
}

typedef struct wbuf_s {
    uint8_t b[1 << 16];
    size_t n;
} wbuf_t;

static void w8(wbuf_t *w, int v)
{
    if (w->n < sizeof(w->b))
        w->b[w->n++] = (uint8_t)v;
    else
        fake_problem("response too large");
}
static void w16(wbuf_t *w, int v)
{
    w8(w, (v >> 8) & 0xff);
    w8(w, v & 0xff);
}
static void w32(wbuf_t *w, int32_t v)
{
    uint32_t u = (uint32_t)v;
    w16(w, (int)(u >> 16));
    w16(w, (int)(u & 0xffff));
}
static void wstr(wbuf_t *w, const char *s)
{
    if (!s) {
        w16(w, -1);
        return;
    }
    w16(w, (int)strlen(s));
    for (; *s; s++)
        w8(w, *s);
}

typedef struct rbuf_s {
    const uint8_t *p;
    size_t left;
} rbuf_t;

static int32_t rnum(rbuf_t *r, size_t bytes)
{
    if (r->left < bytes) {
        fake_problem("short request");
        return 0;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < bytes; i++)
        v = v << 8 | *r->p++;
    r->left -= bytes;
    if (bytes == 1)
        return (int8_t)v;
    if (bytes == 2)
        return (int16_t)v;
    return (int32_t)v;
}
static void rstr(rbuf_t *r, char *out, size_t size)
{
    int len = rnum(r, 2);
    out[0] = '\0';
    if (len < 0)
        return;
    if (r->left < (size_t)len) {
        fake_problem("short string");
        return;
    }
    snprintf(out, size, "%.*s", len, (const char *)r->p);
    r->p += len;
    r->left -= (size_t)len;
}

static fake_topic_t *fake_find(const char *name)
{
    for (int i = 0; i < fake.topic_count; i++)
        if (!strcmp(fake.topics[i].name, name))
            return &fake.topics[i];
    return NULL;
}

static void fake_metadata_topic(wbuf_t *w, const char *name)
{
    const fake_topic_t *t = fake_find(name);
    w16(w, t ? 0 : 3 /* UNKNOWN_TOPIC_OR_PARTITION */);
    wstr(w, name);
    w8(w, 0); /* is_internal */
    w32(w, t ? t->partitions : 0);
    for (int p = 0; t && p < t->partitions; p++) {
        w16(w, 0);
        w32(w, p);
        w32(w, 1);                             /* leader */
        for (int list = 0; list < 2; list++) { /* replicas, isr */
            w32(w, t->replicas);
            for (int b = 0; b < t->replicas; b++)
                w32(w, 1 + b);
        }
    }
}

/* Answers one request (without its size) in w. */
static void fake_answer(rbuf_t *r, wbuf_t *w)
{
    int api_key = rnum(r, 2), version = rnum(r, 2);
    w32(w, rnum(r, 4));  /* correlation id */
    if (api_key == 18) { /* ApiVersions; the header of its response is always v0 */
        const int16_t apis[][3] = {{18, 0, 3}, {3, 1, 1}, {19, 0, 1}, {32, 0, 0}};
        int n = fake.describe_configs ? 4 : 3;
        w16(w, 0);
        if (version >= 3)
            w8(w, n + 1); /* compact array */
        else
            w32(w, n);
        for (int i = 0; i < n; i++) {
            w16(w, apis[i][0]);
            w16(w, apis[i][1]);
            w16(w, apis[i][2]);
            if (version >= 3)
                w8(w, 0); /* tagged fields */
        }
        if (version >= 1)
            w32(w, 0); /* throttle_time_ms */
        if (version >= 3)
            w8(w, 0);
        return;
    }
    char s[256];
    rstr(r, s, sizeof(s)); /* client id */
    if (api_key == 3) {    /* Metadata v1 */
        int n = rnum(r, 4);
        w32(w, 1);
        w32(w, 1);
        wstr(w, "127.0.0.1");
        w32(w, fake.port);
        wstr(w, NULL); /* rack */
        w32(w, 1);     /* controller id */
        if (n < 0) {
            w32(w, fake.topic_count);
            for (int i = 0; i < fake.topic_count; i++)
                fake_metadata_topic(w, fake.topics[i].name);
        } else {
            w32(w, n);
            for (int i = 0; i < n; i++) {
                rstr(r, s, sizeof(s));
                fake_metadata_topic(w, s);
            }
        }
    } else if (api_key == 32) { /* DescribeConfigs v0 */
        int n = rnum(r, 4);
        w32(w, 0); /* throttle_time_ms */
        w32(w, n);
        for (int i = 0; i < n; i++) {
            int type = rnum(r, 1);
            rstr(r, s, sizeof(s));
            int names = rnum(r, 4);
            for (char skip[64]; names > 0; names--)
                rstr(r, skip, sizeof(skip));
            const fake_topic_t *t = type == 2 ? fake_find(s) : NULL;
            w16(w, fake.describe_error);
            wstr(w, fake.describe_error ? "denied by the fake" : NULL);
            w8(w, type);
            wstr(w, s);
            int entries = t && !fake.describe_error ? t->config_count : 0;
            w32(w, entries);
            for (int c = 0; c < entries; c++) {
                wstr(w, t->config_names[c]);
                wstr(w, t->config_values[c]);
                w8(w, 0); /* read_only */
                w8(w, 0); /* is_default */
                w8(w, 0); /* is_sensitive */
            }
        }
    } else if (api_key == 19) { /* CreateTopics v0-1 */
        int n = rnum(r, 4);
        if (n > FAKE_TOPICS_MAX) {
            fake_problem("too many topics to create");
            return;
        }
        fake.create_requests++;
        fake.created_count = n;
        for (int i = 0; i < n; i++) {
            fake_topic_t *t = &fake.created[i];
            memset(t, 0, sizeof(*t));
            rstr(r, t->name, sizeof(t->name));
            t->partitions = rnum(r, 4);
            t->replicas = rnum(r, 2);
            t->assignments = rnum(r, 4);
            t->config_count = rnum(r, 4);
            if (t->assignments > 0 || t->config_count > FAKE_CONFIGS_MAX) {
                fake_problem("replica assignments or too many configs");
                return;
            }
            for (int c = 0; c < t->config_count; c++) {
                rstr(r, t->config_names[c], sizeof(t->config_names[c]));
                rstr(r, t->config_values[c], sizeof(t->config_values[c]));
            }
        }
        fake.create_timeout_ms = rnum(r, 4);
        fake.validate_only = version >= 1 ? rnum(r, 1) : 0;
        w32(w, n);
        for (int i = 0; i < n; i++) {
            wstr(w, fake.created[i].name);
            w16(w, fake.create_error);
            if (version >= 1)
                wstr(w, fake.create_error ? fake.create_message : NULL);
            if (!fake.create_error && !fake.validate_only &&
                fake.topic_count < FAKE_TOPICS_MAX)
                fake.topics[fake.topic_count++] = fake.created[i];
        }
    } else {
        fake_problem("a request the fake does not know");
    }
}

static bool read_full(int fd, void *buf, size_t len)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = read(fd, (char *)buf + done, len - done);
        if (n <= 0)
            return false;
        done += (size_t)n;
    }
    return true;
}

static void *fake_serve(void *arg)
{
    (void)arg;
    struct pollfd fds[FAKE_CLIENTS_MAX + 1] = {{.fd = fake.listener, .events = POLLIN}};
    nfds_t count = 1;
    static uint8_t request[1 << 16];
    static wbuf_t response;
    while (!atomic_load(&fake.stop)) {
        if (poll(fds, count, 50) <= 0)
            continue;
        if ((fds[0].revents & POLLIN) && count < FAKE_CLIENTS_MAX + 1) {
            int fd = accept(fake.listener, NULL, NULL);
            if (fd >= 0)
                fds[count++] = (struct pollfd){.fd = fd, .events = POLLIN};
        }
        for (nfds_t i = 1; i < count; i++) {
            if (!fds[i].revents)
                continue;
            uint8_t size_bytes[4];
            uint32_t size = 0;
            bool ok = read_full(fds[i].fd, size_bytes, 4);
            for (int b = 0; ok && b < 4; b++)
                size = size << 8 | size_bytes[b];
            ok = ok && size <= sizeof(request) && read_full(fds[i].fd, request, size);
            if (ok) {
                pthread_mutex_lock(&fake.lock);
                response.n = 4;
                fake_answer(&(rbuf_t){request, size}, &response);
                pthread_mutex_unlock(&fake.lock);
                uint32_t len = (uint32_t)response.n - 4;
                for (int b = 0; b < 4; b++)
                    response.b[b] = (uint8_t)(len >> (24 - 8 * b));
                ok = write(fds[i].fd, response.b, response.n) == (ssize_t)response.n;
            }
            if (!ok) {
                close(fds[i].fd);
                fds[i--] = fds[--count];
            }
        }
    }
    for (nfds_t i = 1; i < count; i++)
        close(fds[i].fd);
    return NULL;
}

/* Starts the fake broker with the five default topics as `topics create
 * --partitions 4` would make them, configs included. */
static void start_fake(void)
{
    memset(&fake, 0, sizeof(fake));
    pthread_mutex_init(&fake.lock, NULL);
    fake.describe_configs = true;
    const char *names[] = {"flushout.flushes", "flushout.replies", "flushout.changes",
                           "flushout.snapshots", "flushout.dlq"};
    const char *retention[] = {"604800000", "86400000", "604800000", NULL, "1209600000"};
    for (int i = 0; i < 5; i++) {
        fake_topic_t *t = &fake.topics[fake.topic_count++];
        snprintf(t->name, sizeof(t->name), "%s", names[i]);
        t->partitions = 4;
        t->replicas = 3;
        int c = 0;
        snprintf(t->config_names[c], 32, "cleanup.policy");
        snprintf(t->config_values[c++], 32, "%s", retention[i] ? "delete" : "compact");
        if (retention[i]) {
            snprintf(t->config_names[c], 32, "retention.ms");
            snprintf(t->config_values[c++], 32, "%s", retention[i]);
        }
        snprintf(t->config_names[c], 32, "min.insync.replicas");
        snprintf(t->config_values[c++], 32, "2");
        snprintf(t->config_names[c], 32, "segment.bytes"); /* one not compared */
        snprintf(t->config_values[c++], 32, "1073741824");
        t->config_count = c;
    }
    fake.listener = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fake.listener, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    cr_assert_eq(bind(fake.listener, (struct sockaddr *)&addr, sizeof(addr)), 0);
    cr_assert_eq(listen(fake.listener, 16), 0);
    cr_assert_eq(getsockname(fake.listener, (struct sockaddr *)&addr, &len), 0);
    fake.port = ntohs(addr.sin_port);
    cr_assert_eq(pthread_create(&fake.thread, NULL, fake_serve, NULL), 0);
}

/* Every request the fake got was one it knows, well formed. */
static void assert_fake_understood(void)
{
    pthread_mutex_lock(&fake.lock);
    cr_assert_str_empty(fake.problem, "fake broker: %s", fake.problem);
    pthread_mutex_unlock(&fake.lock);
}

static void stop_fake(void)
{
    atomic_store(&fake.stop, true);
    pthread_join(fake.thread, NULL);
    close(fake.listener);
    pthread_mutex_destroy(&fake.lock);
    teardown();
}

static const char *fake_bootstrap(void)
{
    static char bootstrap[32];
    snprintf(bootstrap, sizeof(bootstrap), "127.0.0.1:%d", fake.port);
    return bootstrap;
}

/* The value the last CreateTopics request gave config name of topic t. */
static const char *created_config(const fake_topic_t *t, const char *name)
{
    for (int c = 0; c < t->config_count; c++)
        if (!strcmp(t->config_names[c], name))
            return t->config_values[c];
    return NULL;
}

Test(processor_topics, librdkafka_sends_the_specs_as_they_are, .fini = stop_fake)
{
    start_fake();
    fake.topic_count = 0;
    load("create", "--bootstrap-servers", fake_bootstrap(), "--partitions", "6",
         "--replication-factor", "3", "--min-insync-replicas", "2");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    build_specs(s);
    rd_kafka_NewTopic_t *nt[PROCESSOR_TOPIC_COUNT];
    char errstr[512];
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        nt[i] = processor_topic_new(&s[i], errstr, sizeof(errstr));
        cr_assert_not_null(nt[i], "%s: %s", s[i].role, errstr);
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", fake_bootstrap(), NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *o =
        rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    cr_assert_eq(rd_kafka_AdminOptions_set_validate_only(o, 1, errstr, sizeof(errstr)),
                 0);
    rd_kafka_CreateTopics(rk, nt, PROCESSOR_TOPIC_COUNT, o, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 15000);
    cr_assert_not_null(ev);
    cr_assert_eq(rd_kafka_event_error(ev), 0, "%s", rd_kafka_event_error_string(ev));
    rd_kafka_event_destroy(ev);
    rd_kafka_NewTopic_destroy_array(nt, PROCESSOR_TOPIC_COUNT);
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);

    pthread_mutex_lock(&fake.lock);
    cr_assert_eq(fake.create_requests, 1);
    cr_assert_eq(fake.validate_only, 1);
    cr_assert_eq(fake.created_count, PROCESSOR_TOPIC_COUNT);
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        const fake_topic_t *t = &fake.created[i];
        cr_assert_str_eq(t->name, s[i].name);
        cr_assert_eq(t->partitions, 6, "%s", t->name);
        cr_assert_eq(t->replicas, 3, "%s", t->name);
        cr_assert_eq(t->config_count, (int)s[i].config_count, "%s", t->name);
        for (size_t c = 0; c < s[i].config_count; c++)
            cr_assert_str_eq(created_config(t, s[i].configs[c].name),
                             s[i].configs[c].value, "%s %s", t->name,
                             s[i].configs[c].name);
    }
    cr_assert_str_eq(created_config(&fake.created[3], "cleanup.policy"), "compact");
    pthread_mutex_unlock(&fake.lock);
    assert_fake_understood();
}

Test(processor_topics, create_creates_the_missing_topics, .fini = stop_fake)
{
    start_fake();
    fake.topic_count = 3; /* changes exists, snapshots and dlq do not */
    load("create", "--bootstrap-servers", fake_bootstrap(), "--partitions", "4",
         "--timeout-ms", "8000");
    char *report;
    cr_assert_eq(run_topics(&report), 0, "%s", report);
    cr_assert_str_eq(report, "flushout.flushes (flushes): exists\n"
                             "flushout.replies (replies): exists\n"
                             "flushout.changes (changes): exists\n"
                             "flushout.snapshots (snapshots): created\n"
                             "flushout.dlq (dlq): created\n");
    free(report);
    pthread_mutex_lock(&fake.lock);
    cr_assert_eq(fake.created_count, 2);
    cr_assert_str_eq(fake.created[0].name, "flushout.snapshots");
    cr_assert_str_eq(fake.created[1].name, "flushout.dlq");
    cr_assert_eq(fake.validate_only, 0);
    cr_assert_eq(fake.create_timeout_ms, 6000, "the broker gets 3/4 of --timeout-ms");
    pthread_mutex_unlock(&fake.lock);

    /* Now all five exist as asked: describe finds every config as expected. */
    processor_config_clear(&cfg);
    load("describe", "--bootstrap-servers", fake_bootstrap(), "--partitions", "4");
    cr_assert_eq(run_topics(&report), 0, "%s", report);
    cr_assert(strstr(report, "flushout.dlq (dlq): 4 partitions, replication factor 3, "
                             "cleanup.policy=delete, retention.ms=1209600000, "
                             "min.insync.replicas=2: ok\n"),
              "%s", report);
    cr_assert(strstr(report,
                     "flushout.snapshots (snapshots): 4 partitions, replication "
                     "factor 3, cleanup.policy=compact, min.insync.replicas=2: ok\n"),
              "%s", report);
    cr_assert_null(strstr(report, "configs not checked"), "%s", report);
    free(report);
    assert_fake_understood();
}

Test(processor_topics, create_reports_the_brokers_error_per_topic, .fini = stop_fake)
{
    start_fake();
    fake.topic_count = 4;
    fake.create_error = 38; /* INVALID_REPLICATION_FACTOR */
    fake.create_message = "Replication factor: 3 larger than available brokers: 1.";
    load("create", "--bootstrap-servers", fake_bootstrap(), "--partitions", "4",
         "--timeout-ms", "8000");
    char *report;
    cr_assert_eq(run_topics(&report), 1, "%s", report);
    cr_assert(strstr(report, "flushout.dlq (dlq): not created: Replication factor: 3 "
                             "larger than available brokers: 1.\n"),
              "%s", report);
    free(report);
    assert_fake_understood();
}

Test(processor_topics, describe_compares_the_configs_the_cluster_reports,
     .fini = stop_fake)
{
    start_fake();
    snprintf(fake.topics[2].config_values[1], 32, "1000"); /* changes' retention.ms */
    snprintf(fake.topics[3].config_values[0], 32, "compact,delete");
    fake.topics[4].config_count = 1; /* dlq: only cleanup.policy reported */
    load("describe", "--bootstrap-servers", fake_bootstrap(), "--timeout-ms", "8000");
    char *report;
    cr_assert_eq(run_topics(&report), 1, "%s", report);
    cr_assert_str_eq(
        report,
        "flushout.flushes (flushes): 4 partitions, replication factor 3, "
        "cleanup.policy=delete, retention.ms=604800000, min.insync.replicas=2: ok\n"
        "flushout.replies (replies): 4 partitions, replication factor 3, "
        "cleanup.policy=delete, retention.ms=86400000, min.insync.replicas=2: ok\n"
        "flushout.changes (changes): 4 partitions, replication factor 3, "
        "cleanup.policy=delete, retention.ms=1000, min.insync.replicas=2: differs: "
        "retention.ms=1000, expected 604800000\n"
        "flushout.snapshots (snapshots): 4 partitions, replication factor 3, "
        "cleanup.policy=compact,delete, min.insync.replicas=2: differs: "
        "cleanup.policy=compact,delete, expected compact\n"
        "flushout.dlq (dlq): 4 partitions, replication factor 3, cleanup.policy=delete, "
        "retention.ms=(not reported), min.insync.replicas=(not reported): differs: "
        "retention.ms not reported, expected 1209600000; min.insync.replicas not "
        "reported, expected 2\n");
    free(report);
    assert_fake_understood();
}

Test(processor_topics, describe_fails_when_the_cluster_refuses_to_describe_configs,
     .fini = stop_fake)
{
    start_fake();
    fake.describe_error = 29; /* TOPIC_AUTHORIZATION_FAILED */
    load("describe", "--bootstrap-servers", fake_bootstrap(), "--timeout-ms", "8000");
    char *report;
    cr_assert_eq(run_topics(&report), 1, "an error other than unsupported fails");
    cr_assert_str_eq(report, "");
    free(report);
    assert_fake_understood();
}

/* A client hosting a 3-broker mock cluster. */
static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mock;

static void start_mock(int partitions)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    cr_assert_not_null(mock_rk, "%s", errstr);
    mock = rd_kafka_mock_cluster_new(mock_rk, 3);
    cr_assert_not_null(mock);
    cr_assert_eq(processor_mock_nodelay(rd_kafka_mock_cluster_bootstraps(mock)), 3);
    const char *topics[] = {"flushout.flushes", "flushout.replies", "flushout.changes",
                            "flushout.snapshots", "flushout.dlq"};
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(rd_kafka_mock_topic_create(mock, topics[i], partitions, 3), 0);
}

static void stop_mock(void)
{
    if (mock)
        rd_kafka_mock_cluster_destroy(mock);
    if (mock_rk)
        rd_kafka_destroy(mock_rk);
    mock = NULL;
    mock_rk = NULL;
    teardown();
}

Test(processor_topics, compare_names_each_difference)
{
    load("describe", "--bootstrap-servers", "kafka:9092", "--partitions", "4");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    build_specs(s);
    const processor_topic_spec_t *changes = &s[2];
    char buf[1024];

    processor_topic_state_t same = {.exists = true,
                                    .partitions = 4,
                                    .replicas_min = 3,
                                    .replicas_max = 3,
                                    .configs_read = true,
                                    .configs = {"delete", "604800000", "2"}};
    cr_assert_eq(processor_topic_compare(changes, &same, buf, sizeof(buf)), 0);
    cr_assert_str_eq(buf, "");

    processor_topic_state_t other = {.exists = true,
                                     .partitions = 8,
                                     .replicas_min = 2,
                                     .replicas_max = 3,
                                     .configs_read = true,
                                     .configs = {"compact,delete", "1000", NULL}};
    cr_assert_eq(processor_topic_compare(changes, &other, buf, sizeof(buf)), 5);
    cr_assert_str_eq(buf,
                     "8 partitions, expected 4; replication factor 2 to 3, expected 3; "
                     "cleanup.policy=compact,delete, expected delete; "
                     "retention.ms=1000, expected 604800000; "
                     "min.insync.replicas not reported, expected 2");

    /* Configs not read (the mock cluster): only partitions and replication count. */
    other.configs_read = false;
    other.replicas_min = other.replicas_max = 1;
    cr_assert_eq(processor_topic_compare(changes, &other, buf, sizeof(buf)), 2);
    cr_assert_str_eq(buf, "8 partitions, expected 4; replication factor 1, expected 3");
}

Test(processor_topics, compare_without_partitions_leaves_the_count_alone)
{
    load("describe", "--bootstrap-servers", "kafka:9092");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    char errstr[512];
    cr_assert_eq(processor_topic_specs(&cfg, false, s, errstr, sizeof(errstr)), 0);
    processor_topic_state_t snapshots = {.exists = true,
                                         .partitions = 17,
                                         .replicas_min = 3,
                                         .replicas_max = 3,
                                         .configs_read = true,
                                         .configs = {"compact", "2"}};
    char buf[256];
    cr_assert_eq(processor_topic_compare(&s[3], &snapshots, buf, sizeof(buf)), 0, "%s",
                 buf);
}

Test(processor_topics, describe_on_the_mock_checks_partitions_and_replication,
     .fini = stop_mock)
{
    start_mock(4);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mock);
    char *report;

    load("describe", "--bootstrap-servers", bootstrap, "--partitions", "4");
    cr_assert_eq(run_topics(&report), 0, "%s", report);
    cr_assert(strstr(report, "configs not checked: DescribeConfigs"), "%s", report);
    const char *roles[] = {"flushes", "replies", "changes", "snapshots", "dlq"};
    for (int i = 0; i < 5; i++) {
        char line[128];
        snprintf(line, sizeof(line),
                 "flushout.%s (%s): 4 partitions, replication factor 3: ok\n", roles[i],
                 roles[i]);
        cr_assert(strstr(report, line), "no \"%s\" in:\n%s", line, report);
    }
    free(report);
    processor_config_clear(&cfg);

    load("describe", "--bootstrap-servers", bootstrap, "--partitions", "8",
         "--replication-factor", "2", "--min-insync-replicas", "1");
    cr_assert_eq(run_topics(&report), 1, "%s", report);
    cr_assert(strstr(report,
                     "flushout.changes (changes): 4 partitions, replication factor "
                     "3: differs: 4 partitions, expected 8; replication factor 3, "
                     "expected 2\n"),
              "%s", report);
    free(report);
}

Test(processor_topics, describe_names_a_missing_topic_and_never_creates_it,
     .fini = stop_mock)
{
    start_mock(4);
    load("describe", "--bootstrap-servers", rd_kafka_mock_cluster_bootstraps(mock),
         "--dlq-topic", "not.there");
    for (int round = 0; round < 2; round++) {
        char *report;
        cr_assert_eq(run_topics(&report), 1, "%s", report);
        cr_assert(strstr(report, "not.there (dlq): missing\n"), "round %d:\n%s", round,
                  report);
        free(report);
    }
}

Test(processor_topics, describe_refuses_topics_that_are_not_copartitioned,
     .fini = stop_mock)
{
    start_mock(4);
    cr_assert_eq(rd_kafka_mock_topic_create(mock, "changes.2", 2, 3), 0);
    load("describe", "--bootstrap-servers", rd_kafka_mock_cluster_bootstraps(mock),
         "--changes-topic", "changes.2");
    char *report;
    cr_assert_eq(run_topics(&report), 1, "%s", report);
    cr_assert(strstr(report,
                     "co-partitioning: the processor needs equal partition counts, "
                     "but flushout.flushes has 4 changes.2 has 2 "
                     "flushout.snapshots has 4\n"),
              "%s", report);
    free(report);
}

Test(processor_topics, create_on_the_mock_names_the_unsupported_request,
     .fini = stop_mock)
{
    start_mock(4);
    load("create", "--bootstrap-servers", rd_kafka_mock_cluster_bootstraps(mock),
         "--partitions", "4", "--dlq-topic", "new.dlq");
    char *report;
    time_t start = time(NULL);
    cr_assert_eq(run_topics(&report), 1, "%s", report);
    cr_assert_leq(time(NULL) - start, 5, "no waiting for the mock's missing controller");
    cr_assert(strstr(report, "flushout.flushes (flushes): exists\n"), "%s", report);
    cr_assert(strstr(report, "new.dlq (dlq): not created: CreateTopics request: Topic "
                             "Admin API (KIP-4) not supported by broker"),
              "%s", report);
    free(report);
}

Test(processor_topics, create_of_existing_matching_topics_succeeds, .fini = stop_mock)
{
    start_mock(4);
    load("create", "--bootstrap-servers", rd_kafka_mock_cluster_bootstraps(mock),
         "--partitions", "4");
    char *report;
    cr_assert_eq(run_topics(&report), 0, "%s", report);
    cr_assert(strstr(report, "flushout.snapshots (snapshots): exists\n"), "%s", report);
    free(report);
    processor_config_clear(&cfg);

    load("create", "--bootstrap-servers", rd_kafka_mock_cluster_bootstraps(mock),
         "--partitions", "6");
    cr_assert_eq(run_topics(&report), 1, "%s", report);
    cr_assert(strstr(report, "flushout.snapshots (snapshots): differs: 4 partitions, "
                             "expected 6\n"),
              "%s", report);
    free(report);
}

Test(processor_topics, an_unreachable_cluster_fails_within_the_timeout)
{
    load("describe", "--bootstrap-servers", "127.0.0.1:1", "--timeout-ms", "2000");
    char *report;
    time_t start = time(NULL);
    cr_assert_eq(run_topics(&report), 1, "%s", report);
    cr_assert_leq(time(NULL) - start, 6);
    cr_assert_str_eq(report, "", "nothing to report, only the error");
    free(report);
}

Test(processor_topics, replies_and_dead_letters_may_have_any_partition_count)
{
    /* A new layout's `topics create --partitions 24` keeps the existing replies and
     * dead-letter topics (12 partitions here): not a difference. */
    load("create", "--bootstrap-servers", "kafka:9092", "--partitions", "24");
    processor_topic_spec_t s[PROCESSOR_TOPIC_COUNT];
    char errstr[512], buf[256];
    cr_assert_eq(processor_topic_specs(&cfg, true, s, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        processor_topic_state_t twelve = {
            .exists = true, .partitions = 12, .replicas_min = 3, .replicas_max = 3};
        int differences = processor_topic_compare(&s[i], &twelve, buf, sizeof(buf));
        if (s[i].copartitioned)
            cr_assert_eq(differences, 1, "%s: %s", s[i].name, buf);
        else
            cr_assert_eq(differences, 0, "%s: %s", s[i].name, buf);
    }
}
