/* processor/cmd_topics.c - `flushout-processor topics create|describe`: creates or
 * checks the processor's topics through librdkafka's Admin API.
 *
 * What each topic must look like comes from one pure function,
 * processor_topic_specs(), so that create and describe cannot disagree and the specs
 * are tested without a broker. Existing topics are never altered: create says how
 * one differs and exits 1, and the operator decides (kafka-configs, or new topics and
 * `repartition`). */
#include "cmd_topics.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "kafka.h"
#include "log.h"

/* Kafka's retention.ms for "keep forever" is -1; the options say 0. */
static void retention_value(uint64_t ms, char *buf, size_t size)
{
    if (ms == 0)
        snprintf(buf, size, "-1");
    else
        snprintf(buf, size, "%" PRIu64, ms);
}

static void add_config(processor_topic_spec_t *spec, const char *name, const char *value)
{
    spec->configs[spec->config_count].name = name;
    snprintf(spec->configs[spec->config_count].value,
             sizeof(spec->configs[spec->config_count].value), "%s", value);
    spec->config_count++;
}

int processor_topic_specs(const processor_config_t *cfg, bool require_partitions,
                          processor_topic_spec_t specs[PROCESSOR_TOPIC_COUNT],
                          char *errstr, size_t errstr_size)
{
    /* cleanup.policy is always set, so that a cluster whose log.cleanup.policy
     * default is compact cannot compact away requests or the change records that
     * catching up needs. message.timestamp.type keeps the broker's default: the
     * processor decides nothing on record timestamps (dead letters copy the original
     * timestamp and its type, as Spring does). */
    const struct {
        const char *role, *option, *name;
        bool copartitioned;
        const char *cleanup_policy;
        const uint64_t *retention_ms; /* NULL: no retention.ms (compacted) */
    } topics[PROCESSOR_TOPIC_COUNT] = {
        /* Flushes not yet processed must still be there when a processor comes back
         * from an outage, and `rebuild --from flushes` reads from the start: they are
         * kept as long as the changes, which bound how far back catching up reaches
         * anyway. One option for both keeps them from drifting apart. */
        {"flushes", "--flushes-topic", cfg->flushes_topic, true, "delete",
         &cfg->changes_retention_ms},
        {"replies", "--replies-topic", cfg->replies_topic, false, "delete",
         &cfg->replies_retention_ms},
        {"changes", "--changes-topic", cfg->changes_topic, true, "delete",
         &cfg->changes_retention_ms},
        /* The latest snapshot per model is what counts: compaction keeps it as long
         * as the model exists, where deletion by time would lose the only copy of an
         * idle model's state. */
        {"snapshots", "--snapshots-topic", cfg->snapshots_topic, true, "compact", NULL},
        {"dlq", "--dlq-topic", cfg->dlq_topic, false, "delete", &cfg->dlq_retention_ms},
    };

    if (require_partitions && cfg->partitions == 0) {
        snprintf(errstr, errstr_size, "--partitions is required to create topics");
        return -1;
    }
    if (cfg->partitions > INT32_MAX || cfg->replication_factor > INT16_MAX) {
        snprintf(errstr, errstr_size, "--partitions or --replication-factor too large");
        return -1;
    }
    if (cfg->min_insync_replicas > cfg->replication_factor) {
        snprintf(errstr, errstr_size,
                 "--min-insync-replicas %" PRIu64 " is more than --replication-factor "
                 "%" PRIu64 ": no write with acks=all could ever succeed",
                 cfg->min_insync_replicas, cfg->replication_factor);
        return -1;
    }
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        if (!topics[i].name || !*topics[i].name) {
            snprintf(errstr, errstr_size, "%s is empty", topics[i].option);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            if (!strcmp(topics[i].name, topics[j].name)) {
                snprintf(errstr, errstr_size,
                         "%s and %s both name \"%s\": each needs its own topic",
                         topics[j].option, topics[i].option, topics[i].name);
                return -1;
            }
        }
    }

    char min_insync[24];
    snprintf(min_insync, sizeof(min_insync), "%" PRIu64, cfg->min_insync_replicas);
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        processor_topic_spec_t *s = &specs[i];
        memset(s, 0, sizeof(*s));
        s->role = topics[i].role;
        s->name = topics[i].name;
        s->partitions = (int)cfg->partitions;
        s->replication_factor = (int)cfg->replication_factor;
        s->copartitioned = topics[i].copartitioned;
        add_config(s, "cleanup.policy", topics[i].cleanup_policy);
        if (topics[i].retention_ms) {
            char ms[24];
            retention_value(*topics[i].retention_ms, ms, sizeof(ms));
            add_config(s, "retention.ms", ms);
        }
        /* The processor produces with acks=all: a write counts once this many
         * replicas have it. */
        add_config(s, "min.insync.replicas", min_insync);
    }
    return 0;
}

rd_kafka_NewTopic_t *processor_topic_new(const processor_topic_spec_t *spec, char *errstr,
                                         size_t errstr_size)
{
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(
        spec->name, spec->partitions, spec->replication_factor, errstr, errstr_size);
    if (!nt)
        return NULL;
    for (size_t i = 0; i < spec->config_count; i++) {
        rd_kafka_resp_err_t err = rd_kafka_NewTopic_set_config(nt, spec->configs[i].name,
                                                               spec->configs[i].value);
        if (err) {
            snprintf(errstr, errstr_size, "%s=%s: %s", spec->configs[i].name,
                     spec->configs[i].value, rd_kafka_err2str(err));
            rd_kafka_NewTopic_destroy(nt);
            return NULL;
        }
    }
    return nt;
}

/* An Admin API client and the queue its results arrive on. */
typedef struct admin_s {
    rd_kafka_t *rk;
    rd_kafka_queue_t *results;
    const char *bootstrap_servers;
    int timeout_ms;
    int32_t broker_id; /* a broker the metadata named, -1 before it */
    /* The broker's reason when it does not implement the Admin API (librdkafka's
     * mock cluster, which dev hosts): "" while none is known. */
    char unsupported[512];
    char last_error[512]; /* the client's latest error event: why brokers are down */
} admin_t;

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    admin_t *a = opaque;
    /* "1/1 brokers are down" says less than the connection error before it. */
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && a->last_error[0])
        return;
    snprintf(a->last_error, sizeof(a->last_error), "%s", reason);
}

/* librdkafka's own lines repeat what the report and the error messages say. */
static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    LOG_DEBUG("kafka %s: %s", fac, buf);
}

static int admin_open(admin_t *a, const processor_config_t *cfg)
{
    memset(a, 0, sizeof(*a));
    a->broker_id = -1;
    a->bootstrap_servers = cfg->bootstrap_servers;
    a->timeout_ms = (int)cfg->timeout_ms;
    char errstr[512];
    /* A consumer handle never auto-creates a topic that metadata asks about. */
    processor_kafka_callbacks_t callbacks = {
        .log = on_log, .error = on_error, .opaque = a};
    a->rk = processor_kafka_new(cfg, cfg->bootstrap_servers, PROCESSOR_KAFKA_ADMIN,
                                &callbacks, errstr, sizeof(errstr));
    if (!a->rk) {
        LOG_ERROR("topics: %s", errstr);
        return -1;
    }
    a->results = rd_kafka_queue_new(a->rk);
    return 0;
}

static void admin_close(admin_t *a)
{
    if (a->results)
        rd_kafka_queue_destroy(a->results);
    if (a->rk)
        rd_kafka_destroy_flags(a->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
}

/* Request options with a->timeout_ms for the whole request; the broker's own wait
 * (topic creation) gets three quarters of it, so its answer still arrives in time.
 *
 * Where it goes: librdkafka sends Admin requests to the controller, but any broker
 * describes topic configs (the Java AdminClient asks the least loaded one), so
 * DescribeConfigs goes to a broker the metadata named. CreateTopics must reach the
 * controller (ZooKeeper-mode brokers refuse it elsewhere), unless that broker has
 * shown it lacks the Admin API: then there is no controller to wait for (the mock
 * cluster names broker 0, which does not exist, and every request to it would only
 * time out), and asking that broker gets librdkafka's precise refusal at once. */
static rd_kafka_AdminOptions_t *admin_options(admin_t *a, rd_kafka_admin_op_t op)
{
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(a->rk, op);
    char errstr[256];
    rd_kafka_AdminOptions_set_request_timeout(o, a->timeout_ms, errstr, sizeof(errstr));
    if (op == RD_KAFKA_ADMIN_OP_CREATETOPICS)
        rd_kafka_AdminOptions_set_operation_timeout(o, a->timeout_ms - a->timeout_ms / 4,
                                                    errstr, sizeof(errstr));
    bool to_broker = op == RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS || a->unsupported[0];
    if (to_broker && a->broker_id >= 0)
        rd_kafka_AdminOptions_set_broker(o, a->broker_id, errstr, sizeof(errstr));
    return o;
}

/* The result event of the request just sent, or NULL (logged). librdkafka ends
 * every request by its request timeout; the margin is for a stalled client. */
static rd_kafka_event_t *admin_wait(admin_t *a, const char *what)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(a->results, a->timeout_ms + 5000);
    if (!ev)
        LOG_ERROR("topics: %s: no answer within %d ms", what, a->timeout_ms + 5000);
    return ev;
}

/* Reads every spec's topic from the cluster's metadata into obs. One request for all
 * topics: asking about a topic by name lets a broker with auto.create.topics.enable
 * create it with its defaults (the mock cluster does), which describe must never do.
 * @returns 0, or -1 (logged, naming the topic or the bootstrap servers). */
static int read_metadata(admin_t *a, const processor_topic_spec_t *specs,
                         processor_topic_state_t *obs)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(a->rk, 1, NULL, &md, a->timeout_ms);
    if (err) {
        rd_kafka_poll(a->rk, 0); /* serves on_error: the cause, when there is one */
        LOG_ERROR("topics: cannot read the metadata of %s and the other topics from "
                  "%s: %s%s%s%s",
                  specs[0].name, a->bootstrap_servers, rd_kafka_err2str(err),
                  a->last_error[0] ? " (" : "", a->last_error,
                  a->last_error[0] ? ")" : "");
        return -1;
    }
    if (md->orig_broker_id >= 0 || md->broker_cnt)
        a->broker_id = md->orig_broker_id >= 0 ? md->orig_broker_id : md->brokers[0].id;
    int rc = 0;
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        const rd_kafka_metadata_topic_t *t = NULL;
        for (int k = 0; k < md->topic_cnt && !t; k++)
            if (!strcmp(md->topics[k].topic, specs[i].name))
                t = &md->topics[k];
        processor_topic_state_t *o = &obs[i];
        if (!t || t->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            continue; /* o->exists stays false */
        if (t->err) {
            LOG_ERROR("topics: metadata of %s from %s: %s", specs[i].name,
                      a->bootstrap_servers, rd_kafka_err2str(t->err));
            rc = -1;
            continue;
        }
        o->exists = true;
        o->partitions = t->partition_cnt;
        o->replicas_min = t->partition_cnt ? t->partitions[0].replica_cnt : 0;
        o->replicas_max = o->replicas_min;
        for (int p = 1; p < t->partition_cnt; p++) {
            int n = t->partitions[p].replica_cnt;
            o->replicas_min = n < o->replicas_min ? n : o->replicas_min;
            o->replicas_max = n > o->replicas_max ? n : o->replicas_max;
        }
    }
    rd_kafka_metadata_destroy(md);
    return rc;
}

/* Sends DescribeConfigs for resources (destroyed here) and waits for its result.
 * @returns the result event (the caller destroys it), or NULL (logged); when the
 *          broker lacks the API, NULL with a->unsupported set (not logged). */
static rd_kafka_event_t *describe_configs(admin_t *a,
                                          rd_kafka_ConfigResource_t **resources,
                                          size_t count, const char *what)
{
    rd_kafka_AdminOptions_t *options =
        admin_options(a, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_DescribeConfigs(a->rk, resources, count, options, a->results);
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_ConfigResource_destroy_array(resources, count);
    rd_kafka_event_t *ev = admin_wait(a, what);
    if (!ev)
        return NULL;
    rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
    if (err == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE ||
        err == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION) {
        snprintf(a->unsupported, sizeof(a->unsupported), "%s",
                 rd_kafka_event_error_string(ev));
    } else if (err || !rd_kafka_event_DescribeConfigs_result(ev)) {
        LOG_ERROR("topics: %s: %s", what,
                  err ? rd_kafka_event_error_string(ev) : "no result");
    } else {
        return ev;
    }
    rd_kafka_event_destroy(ev);
    return NULL;
}

/* Reads the configs the specs name, for the topics that exist, into obs.
 * @returns 0 (also when the cluster cannot describe configs at all: a->unsupported
 *          says why), or -1 on any other error (logged, naming the topic). */
static int read_configs(admin_t *a, const processor_topic_spec_t *specs,
                        processor_topic_state_t *obs)
{
    rd_kafka_ConfigResource_t *resources[PROCESSOR_TOPIC_COUNT];
    char what[256] = "describing the configs of";
    size_t count = 0;
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        if (!obs[i].exists)
            continue;
        resources[count++] =
            rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, specs[i].name);
        size_t len = strlen(what);
        snprintf(what + len, sizeof(what) - len, "%s %s", count > 1 ? "," : "",
                 specs[i].name);
    }
    if (!count)
        return 0;
    rd_kafka_event_t *ev = describe_configs(a, resources, count, what);
    if (!ev)
        return a->unsupported[0] ? 0 : -1;
    size_t n;
    const rd_kafka_ConfigResource_t **res = rd_kafka_DescribeConfigs_result_resources(
        rd_kafka_event_DescribeConfigs_result(ev), &n);
    int rc = 0;
    for (size_t r = 0; r < n; r++) {
        const char *name = rd_kafka_ConfigResource_name(res[r]);
        int i = 0;
        while (i < PROCESSOR_TOPIC_COUNT && strcmp(specs[i].name, name))
            i++;
        if (i == PROCESSOR_TOPIC_COUNT)
            continue;
        if (rd_kafka_ConfigResource_error(res[r])) {
            LOG_ERROR("topics: describing the configs of %s: %s", name,
                      rd_kafka_ConfigResource_error_string(res[r]));
            rc = -1;
            continue;
        }
        size_t entry_count;
        const rd_kafka_ConfigEntry_t **entries =
            rd_kafka_ConfigResource_configs(res[r], &entry_count);
        for (size_t c = 0; c < specs[i].config_count; c++) {
            for (size_t e = 0; e < entry_count && !obs[i].configs[c]; e++) {
                const char *value = rd_kafka_ConfigEntry_value(entries[e]);
                if (value && !strcmp(rd_kafka_ConfigEntry_name(entries[e]),
                                     specs[i].configs[c].name))
                    obs[i].configs[c] = codec_xmemdup(value, strlen(value));
            }
        }
        obs[i].configs_read = true;
    }
    rd_kafka_event_destroy(ev);
    return rc;
}

/* With no topic to describe, whether the broker implements the Admin API at all:
 * describing its own configs answers that (a->unsupported). Any other outcome, an
 * authorization error included, is left to CreateTopics to report. */
static void probe_admin_api(admin_t *a)
{
    if (a->broker_id < 0)
        return;
    char id[16];
    snprintf(id, sizeof(id), "%" PRId32, a->broker_id);
    rd_kafka_ConfigResource_t *broker =
        rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_BROKER, id);
    rd_kafka_AdminOptions_t *options =
        admin_options(a, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_DescribeConfigs(a->rk, &broker, 1, options, a->results);
    rd_kafka_AdminOptions_destroy(options);
    rd_kafka_ConfigResource_destroy(broker);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(a->results, a->timeout_ms + 5000);
    rd_kafka_resp_err_t err = ev ? rd_kafka_event_error(ev) : RD_KAFKA_RESP_ERR_NO_ERROR;
    if (err == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE ||
        err == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION)
        snprintf(a->unsupported, sizeof(a->unsupported), "%s",
                 rd_kafka_event_error_string(ev));
    if (ev)
        rd_kafka_event_destroy(ev);
}

/* Appends "; "-separated text to buf. */
static void note(char *buf, size_t size, int *count, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void note(char *buf, size_t size, int *count, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len && len + 2 < size) {
        strcpy(buf + len, "; ");
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, size - len, fmt, ap);
    va_end(ap);
    (*count)++;
}

int processor_topic_compare(const processor_topic_spec_t *spec,
                            const processor_topic_state_t *state, char *buf, size_t size)
{
    int count = 0;
    buf[0] = '\0';
    /* Replies and dead letters may have any count (the processor does not care):
     * a new layout's `topics create` keeps the old ones without complaint. */
    if (spec->partitions && spec->copartitioned && state->partitions != spec->partitions)
        note(buf, size, &count, "%d partitions, expected %d", state->partitions,
             spec->partitions);
    if (state->replicas_min != spec->replication_factor ||
        state->replicas_max != spec->replication_factor) {
        if (state->replicas_min == state->replicas_max)
            note(buf, size, &count, "replication factor %d, expected %d",
                 state->replicas_min, spec->replication_factor);
        else
            note(buf, size, &count, "replication factor %d to %d, expected %d",
                 state->replicas_min, state->replicas_max, spec->replication_factor);
    }
    for (size_t c = 0; state->configs_read && c < spec->config_count; c++) {
        if (!state->configs[c])
            note(buf, size, &count, "%s not reported, expected %s", spec->configs[c].name,
                 spec->configs[c].value);
        else if (strcmp(state->configs[c], spec->configs[c].value))
            note(buf, size, &count, "%s=%s, expected %s", spec->configs[c].name,
                 state->configs[c], spec->configs[c].value);
    }
    return count;
}

/* "4 partitions, replication factor 3, cleanup.policy=delete, ..." */
static void summary(const processor_topic_spec_t *s, const processor_topic_state_t *o,
                    char *buf, size_t size)
{
    int n = snprintf(buf, size, "%d partitions, replication factor %d", o->partitions,
                     o->replicas_min);
    if (o->replicas_max != o->replicas_min && n > 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, " to %d", o->replicas_max);
    for (size_t c = 0; o->configs_read && c < s->config_count; c++)
        if (n > 0 && (size_t)n < size)
            n += snprintf(buf + n, size - (size_t)n, ", %s=%s", s->configs[c].name,
                          o->configs[c] ? o->configs[c] : "(not reported)");
}

/* Flushes, changes and snapshots must have equal partition counts, whatever
 * --partitions says: partition N of each belongs to the same models.
 * @returns 0, or 1 with a line on out. */
static int check_copartitioning(const processor_topic_spec_t *specs,
                                const processor_topic_state_t *obs, FILE *out)
{
    const char *names[PROCESSOR_TOPIC_COUNT];
    int counts[PROCESSOR_TOPIC_COUNT];
    size_t n = 0;
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        if (!specs[i].copartitioned)
            continue;
        names[n] = specs[i].name;
        counts[n++] = obs[i].exists ? obs[i].partitions : -1;
    }
    char why[1024];
    if (!processor_copartition_check(names, counts, n, why, sizeof(why)))
        return 0;
    fprintf(out, "%s\n", why);
    return 1;
}

/* Creates the topics that obs says are missing; one line per topic on out.
 * @returns the number not created (each logged with the broker's error). */
static int create_missing(admin_t *a, const processor_topic_spec_t *specs,
                          const processor_topic_state_t *obs, FILE *out)
{
    rd_kafka_NewTopic_t *new_topics[PROCESSOR_TOPIC_COUNT];
    bool asked[PROCESSOR_TOPIC_COUNT] = {false};
    size_t count = 0;
    int failed = 0;
    char errstr[512];
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        if (obs[i].exists)
            continue;
        rd_kafka_NewTopic_t *nt = processor_topic_new(&specs[i], errstr, sizeof(errstr));
        if (nt) {
            new_topics[count++] = nt;
            asked[i] = true;
            continue;
        }
        LOG_ERROR("topics: creating %s: %s", specs[i].name, errstr);
        fprintf(out, "%s (%s): not created: %s\n", specs[i].name, specs[i].role, errstr);
        failed++;
    }
    if (!count)
        return failed;
    bool any_exists = false;
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++)
        any_exists |= obs[i].exists;
    if (!any_exists) /* read_configs() had nothing to ask */
        probe_admin_api(a);
    LOG_INFO("topics: creating %zu missing topic%s at %s", count, count == 1 ? "" : "s",
             a->bootstrap_servers);
    rd_kafka_AdminOptions_t *options = admin_options(a, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_CreateTopics(a->rk, new_topics, count, options, a->results);
    rd_kafka_AdminOptions_destroy(options);

    rd_kafka_event_t *ev = admin_wait(a, "creating the topics");
    const rd_kafka_CreateTopics_result_t *result =
        ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
    char request_error[600] = "";
    if (!ev || !result || rd_kafka_event_error(ev))
        snprintf(request_error, sizeof(request_error), "CreateTopics request: %s",
                 !ev                        ? "no answer"
                 : rd_kafka_event_error(ev) ? rd_kafka_event_error_string(ev)
                                            : "no result");
    size_t result_count = 0;
    const rd_kafka_topic_result_t **results =
        request_error[0] ? NULL
                         : rd_kafka_CreateTopics_result_topics(result, &result_count);
    /* Each topic asked for, in order, with its own result or the request's error. */
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        if (!asked[i])
            continue;
        const char *error =
            request_error[0] ? request_error : "not in the broker's answer";
        for (size_t r = 0; r < result_count; r++) {
            if (strcmp(rd_kafka_topic_result_name(results[r]), specs[i].name))
                continue;
            error = NULL;
            if (rd_kafka_topic_result_error(results[r]))
                error = rd_kafka_topic_result_error_string(results[r])
                            ? rd_kafka_topic_result_error_string(results[r])
                            : rd_kafka_err2str(rd_kafka_topic_result_error(results[r]));
        }
        if (error) {
            LOG_ERROR("topics: creating %s: %s", specs[i].name, error);
            fprintf(out, "%s (%s): not created: %s\n", specs[i].name, specs[i].role,
                    error);
            failed++;
        } else {
            fprintf(out, "%s (%s): created\n", specs[i].name, specs[i].role);
        }
    }
    if (ev)
        rd_kafka_event_destroy(ev);
    rd_kafka_NewTopic_destroy_array(new_topics, count);
    return failed;
}

int processor_cmd_topics(const processor_config_t *cfg, FILE *out)
{
    if (!cfg->action) {
        LOG_ERROR("topics: expected create or describe (see --help)");
        return 1;
    }
    bool create = !strcmp(cfg->action, "create");
    processor_topic_spec_t specs[PROCESSOR_TOPIC_COUNT];
    char errstr[1024];
    if (processor_topic_specs(cfg, create, specs, errstr, sizeof(errstr))) {
        LOG_ERROR("topics: %s", errstr);
        return 1;
    }
    admin_t a;
    if (admin_open(&a, cfg)) {
        admin_close(&a);
        return 1;
    }

    int rc = 0;
    processor_topic_state_t obs[PROCESSOR_TOPIC_COUNT];
    memset(obs, 0, sizeof(obs));
    if (read_metadata(&a, specs, obs)) {
        rc = 1;
        goto done;
    }

    /* A real cluster always answers DescribeConfigs; librdkafka's mock cluster (dev)
     * does not implement it. Unsupported is reported ("configs not checked") but
     * fails nothing by itself, so describe still checks partitions and replication
     * there; any other error (authorization, a timeout) fails. */
    if (read_configs(&a, specs, obs)) {
        rc = 1;
        goto done;
    }
    if (a.unsupported[0])
        fprintf(out, "configs not checked: %s\n", a.unsupported);

    int bad = 0;
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++) {
        if (!obs[i].exists) {
            if (!create) {
                fprintf(out, "%s (%s): missing\n", specs[i].name, specs[i].role);
                bad++;
            }
            continue;
        }
        char diff[1024], now[512];
        processor_topic_compare(&specs[i], &obs[i], diff, sizeof(diff));
        summary(&specs[i], &obs[i], now, sizeof(now));
        if (create)
            fprintf(out, "%s (%s): %s%s\n", specs[i].name, specs[i].role,
                    diff[0] ? "differs: " : "exists", diff);
        else
            fprintf(out, "%s (%s): %s: %s%s\n", specs[i].name, specs[i].role, now,
                    diff[0] ? "differs: " : "ok", diff);
        bad += diff[0] != '\0';
    }
    if (create)
        bad += create_missing(&a, specs, obs, out);
    else if (check_copartitioning(specs, obs, out)) {
        LOG_ERROR("topics: %s, %s and %s differ in partition count", specs[0].name,
                  specs[2].name, specs[3].name);
        rc = 1;
    }
    if (bad) {
        LOG_ERROR("topics: %d of %d topics %s", bad, PROCESSOR_TOPIC_COUNT,
                  create ? "differ or could not be created" : "missing or different");
        rc = 1;
    }

done:
    for (int i = 0; i < PROCESSOR_TOPIC_COUNT; i++)
        for (int c = 0; c < PROCESSOR_TOPIC_CONFIGS_MAX; c++)
            free(obs[i].configs[c]);
    admin_close(&a);
    return rc;
}
