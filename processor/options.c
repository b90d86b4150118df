/* processor/options.c - the one table of options. */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "codec/error.h"
#include "commands.h"

#define STR(x)  #x
#define XSTR(x) STR(x)
#define OFF(f)  offsetof(processor_config_t, f)

const processor_option_t processor_options[] = {
    {"bootstrap-servers", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(bootstrap_servers),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_SEND | PROCESSOR_CMD_REBUILD |
         PROCESSOR_CMD_TOPICS | PROCESSOR_CMD_REPARTITION,
     1, "Kafka brokers to start from, host:port[,host:port...]."},
    {"state-dir", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(state_dir),
     PROCESSOR_CMD_APPLY | PROCESSOR_CMD_INSPECT | PROCESSOR_CMD_RUN |
         PROCESSOR_CMD_REBUILD | PROCESSOR_CMD_REPARTITION,
     1,
     "Directory of the RocksDB state store, created if missing (run keeps one store "
     "per input partition in partition-N below it; repartition rebuilds the old "
     "layout's models there, and it must not hold partition stores yet)."},
    {"group-id", PROCESSOR_OPT_STRING, "flushout-processor", NULL, 0, 0, OFF(group_id),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REPARTITION, 0,
     "Consumer group: instances with the same group id share the partitions "
     "(repartition: the group whose unprocessed flushes are carried over)."},
    {"group-instance-id", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(group_instance_id),
     PROCESSOR_CMD_RUN, 0,
     "Static membership (group.instance.id): a restart within session.timeout.ms "
     "keeps this instance's partitions without a rebalance. Unique per instance, "
     "stable across restarts (e.g. the pod name)."},
    {"flushes-topic", PROCESSOR_OPT_STRING, "flushout.flushes", NULL, 0, 0,
     OFF(flushes_topic), PROCESSOR_CMD_KAFKA, 0, "Requests, keyed by model id."},
    {"replies-topic", PROCESSOR_OPT_STRING, "flushout.replies", NULL, 0, 0,
     OFF(replies_topic), PROCESSOR_CMD_KAFKA & ~PROCESSOR_CMD_REPARTITION, 0,
     "Replies, keyed by client id (unless the request's kafka_replyTopic header names "
     "another topic that --reply-topics allows)."},
    {"reply-topics", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(reply_topics),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD, 0,
     "Topics besides --replies-topic that a request's kafka_replyTopic header (Spring "
     "Kafka's request/reply) may send its reply to: comma-separated names or shell "
     "patterns (fnmatch: *, ?, [...]), e.g. 'replies.*,billing.replies'. Never the "
     "flushes, changes, snapshots or dead-letter topics, whatever the pattern. A request "
     "naming another topic, or a partition the topic does not have, gets an error reply "
     "(bad_reply_topic) on --replies-topic and is dead-lettered. Default: none. Give "
     "rebuild the processor's value."},
    {"changes-topic", PROCESSOR_OPT_STRING, "flushout.changes", NULL, 0, 0,
     OFF(changes_topic),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD |
         PROCESSOR_CMD_TOPICS | PROCESSOR_CMD_REPARTITION,
     0,
     "Applied flushes, keyed by model, partition for partition with the flushes topic; "
     "also the changelog that a partition's new owner catches up from."},
    {"snapshots-topic", PROCESSOR_OPT_STRING, "flushout.snapshots", NULL, 0, 0,
     OFF(snapshots_topic),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_TOPICS |
         PROCESSOR_CMD_REPARTITION | PROCESSOR_CMD_REBUILD,
     0,
     "Models' snapshots, keyed by model, partition for partition with the flushes topic "
     "(compacted: the latest per model is what counts). A partition restores from it "
     "when the changes topic no longer reaches back far enough."},
    {"snapshot-topic-every", PROCESSOR_OPT_UINT, "1000", NULL, 0, UINT64_MAX,
     OFF(snapshot_topic_every), PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV, 0,
     "Publish a model's snapshot each time its command count passes a multiple of N "
     "(0: never; the changes topic must then be kept forever)."},
    {"snapshot-topic-interval-ms", PROCESSOR_OPT_UINT, "3600000", NULL, 0, UINT64_MAX,
     OFF(snapshot_topic_interval_ms), PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV, 0,
     "Also publish, this often, the snapshot record of every model changed since its "
     "last one (0: never). A restore then needs no change record older than about this "
     "interval, however quiet the model, so the changes topic's retention must exceed it "
     "plus the longest time the processors may be down."},
    {"dlq-topic", PROCESSOR_OPT_STRING, "flushout.dlq", NULL, 0, 0, OFF(dlq_topic),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_TOPICS | PROCESSOR_CMD_REBUILD,
     0,
     "Dead letters: records that could not be processed, with Spring Kafka's "
     "kafka_dlt-* headers saying why and where they came from."},
    {"threads", PROCESSOR_OPT_UINT, "0", NULL, 0, 1024, OFF(threads),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD |
         PROCESSOR_CMD_REPARTITION,
     0,
     "Worker threads sharing the partitions (assigned, or to rebuild); a partition is "
     "in one thread at a time; 0 = the number of cores."},
    {"partitioner", PROCESSOR_OPT_STRING, "murmur2_random",
     "murmur2_random|consistent_random|any", 0, 0, OFF(partitioner), PROCESSOR_CMD_KAFKA,
     0,
     "How producers map a model id to a partition. The processor refuses records whose "
     "key belongs to another partition (wrong_partition), because a model split over "
     "two partitions would have two masters. murmur2_random is the Java client's and "
     "kafkajs' default; librdkafka clients (kcat) need -X partitioner=murmur2_random. "
     "'any' turns the check off."},
    {"log-level", PROCESSOR_OPT_STRING, "info", "error|warn|info|debug", 0, 0,
     OFF(log_level), PROCESSOR_CMD_KAFKA, 0,
     "Least severe log lines written to stderr ('debug' also shows librdkafka's debug "
     "lines, with -X debug=...)."},
    {"from", PROCESSOR_OPT_STRING, NULL, "changes|flushes", 0, 0, OFF(from),
     PROCESSOR_CMD_REBUILD, 1,
     "Rebuild from the change records (fast: resolved commands) or by re-running every "
     "flush (slow; the same result, since processing is deterministic)."},
    {"partitions", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(partition_list),
     PROCESSOR_CMD_REBUILD, 0,
     "Only these partitions, comma-separated (default: all of the flushes topic)."},
    {"http-port", PROCESSOR_OPT_UINT, "0", NULL, 0, 65535, OFF(http_port),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV, 0,
     "Serve /metrics (Prometheus text format), /healthz and /readyz over HTTP on this "
     "port (0: no HTTP server), on --http-address."},
    {"http-address", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(http_address),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV, 0,
     "The address the HTTP server listens on: an IP address (127.0.0.1, ::1, the pod's "
     "address) or a host name (its first address). Default: every interface, IPv6 and "
     "IPv4."},
    {"takeover-timeout-ms", PROCESSOR_OPT_UINT, "300000", NULL, 1000, UINT64_MAX,
     OFF(takeover_timeout_ms), PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV, 0,
     "How long a partition may fail to be taken over because of transient Kafka errors "
     "(timeouts, leaders moving, brokers down: retried with backoff meanwhile) before "
     "/healthz fails, naming it, so that the instance is restarted."},
    {"extra-topics", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(extra_topics),
     PROCESSOR_CMD_DEV, 0,
     "More topics for the embedded cluster, NAME:PARTITIONS comma-separated (for "
     "example a new layout to try repartition on)."},
    {"to-flushes-topic", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(to_flushes_topic),
     PROCESSOR_CMD_REPARTITION, 1,
     "The new layout's flushes topic: its partition count is the new layout's, and the "
     "old group's unprocessed flushes are carried over to it."},
    {"to-changes-topic", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(to_changes_topic),
     PROCESSOR_CMD_REPARTITION, 1,
     "The new layout's changes topic (checked: as many partitions as --to-flushes-topic; "
     "nothing is written to it)."},
    {"to-snapshots-topic", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0,
     OFF(to_snapshots_topic), PROCESSOR_CMD_REPARTITION, 1,
     "The new layout's snapshots topic: every model's snapshot is written there, in the "
     "partition its key maps to under the new partition count."},
    {"partitions", PROCESSOR_OPT_UINT, "0", NULL, 0, 1000000, OFF(partitions),
     PROCESSOR_CMD_TOPICS, 0,
     "Partitions of the flushes, changes and snapshots topics (co-partitioned), and of "
     "the replies and dead-letter topics. Required for create; describe checks it when "
     "given. 0: not given."},
    {"replication-factor", PROCESSOR_OPT_UINT, "3", NULL, 1, 32, OFF(replication_factor),
     PROCESSOR_CMD_TOPICS, 0, "Replicas of every partition."},
    {"min-insync-replicas", PROCESSOR_OPT_UINT, "2", NULL, 1, 32,
     OFF(min_insync_replicas), PROCESSOR_CMD_TOPICS, 0,
     "min.insync.replicas of every topic: with acks=all (the processor's producer), a "
     "write is acknowledged once this many replicas have it. At most "
     "--replication-factor."},
    {"changes-retention-ms", PROCESSOR_OPT_UINT, "604800000", NULL, 0, INT64_MAX,
     OFF(changes_retention_ms), PROCESSOR_CMD_TOPICS, 0,
     "retention.ms of the changes topic, and of the flushes topic (flushes not yet "
     "processed must outlast an outage as long as the changes do). A partition whose "
     "changes no longer reach back restores from the snapshots topic, so this must "
     "exceed the processors' --snapshot-topic-interval-ms plus the longest time they "
     "may all be down. 0: keep forever (retention.ms=-1; needed when the processors "
     "run with --snapshot-topic-every 0 or --snapshot-topic-interval-ms 0)."},
    {"replies-retention-ms", PROCESSOR_OPT_UINT, "86400000", NULL, 0, INT64_MAX,
     OFF(replies_retention_ms), PROCESSOR_CMD_TOPICS, 0,
     "retention.ms of the replies topic. 0: keep forever."},
    {"dlq-retention-ms", PROCESSOR_OPT_UINT, "1209600000", NULL, 0, INT64_MAX,
     OFF(dlq_retention_ms), PROCESSOR_CMD_TOPICS, 0,
     "retention.ms of the dead-letter topic. 0: keep forever."},
    {"timeout-ms", PROCESSOR_OPT_UINT, "30000", NULL, 1, 3600000, OFF(timeout_ms),
     PROCESSOR_CMD_TOPICS, 0,
     "How long each request to the cluster (metadata, DescribeConfigs, CreateTopics) "
     "may take, the wait for topic creation included."},
    {"brokers", PROCESSOR_OPT_UINT, "3", NULL, 1, 16, OFF(brokers), PROCESSOR_CMD_DEV, 0,
     "Brokers of the embedded development cluster."},
    {"partitions", PROCESSOR_OPT_UINT, "8", NULL, 1, 1024, OFF(partitions),
     PROCESSOR_CMD_DEV, 0, "Partitions of each topic of the embedded cluster."},
    {"broker-only", PROCESSOR_OPT_BOOL, "false", NULL, 0, 1, OFF(broker_only),
     PROCESSOR_CMD_DEV, 0,
     "Run only the embedded cluster, no processor (for processors in other "
     "processes)."},
    {"ids", PROCESSOR_OPT_STRING, "hash", "hash|sequential", 0, 0, OFF(ids),
     PROCESSOR_CMD_APPLYING, 0,
     "How created IDs are chosen when a proposed ID collides: 'hash' (a deterministic "
     "53-bit number from model, command count and attempt) or 'sequential' (flushout's "
     "sequentialIds: command count + 1 + attempt)."},
    {"history", PROCESSOR_OPT_UINT, "1000", NULL, 0, UINT64_MAX, OFF(history),
     PROCESSOR_CMD_APPLYING, 0,
     "Commands of history kept per model for partial syncs. A flush whose 'from' is "
     "older gets a full snapshot; 0 keeps none."},
    {"snapshot-every", PROCESSOR_OPT_UINT, "1000", NULL, 1, UINT64_MAX,
     OFF(snapshot_every), PROCESSOR_CMD_APPLYING, 0,
     "Rewrite a model's stored snapshot once the history since the last one outgrows "
     "it, or after N commands once that history is an eighth of it."},
    {"cache-mb", PROCESSOR_OPT_UINT, "256", NULL, 1, 1u << 20, OFF(cache_mb),
     PROCESSOR_CMD_APPLYING | PROCESSOR_CMD_INSPECT, 0,
     "Memory for decoded models (documents and recent history), least recently used "
     "evicted first; an evicted model reloads from the store."},
    {"clients-per-model", PROCESSOR_OPT_UINT, "1000", NULL, 1, UINT64_MAX,
     OFF(clients_per_model), PROCESSOR_CMD_APPLYING, 0,
     "Client records (for recognising retried flushes) kept per model, at least; when "
     "a new client takes a model an eighth over, the clients whose last flush is "
     "oldest are forgotten down to N, and a forgotten client's next flush is applied "
     "as new."},
    {"fsync", PROCESSOR_OPT_BOOL, "false", NULL, 0, 1, OFF(fsync), PROCESSOR_CMD_APPLYING,
     0,
     "Sync every write to disk: survives power loss, not just a killed process (the WAL "
     "is always on)."},
    {"model", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(model), PROCESSOR_CMD_INSPECT,
     0, "Print this model's snapshot as JSON."},
    {"model", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(model), PROCESSOR_CMD_SEND, 0,
     "The model of requests that do not name one in \"model\" (the record key)."},
    {"client", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(client), PROCESSOR_CMD_SEND, 0,
     "The client id of requests that do not name one in \"client\" (replies are keyed "
     "by it)."},
    {"seq", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(seq), PROCESSOR_CMD_SEND, 0,
     "The first request's seq, then one more per request; default: the time in "
     "milliseconds, which keeps increasing from one send to the next."},
    {"timeout-ms", PROCESSOR_OPT_UINT, "10000", NULL, 1, 3600000, OFF(timeout_ms),
     PROCESSOR_CMD_SEND, 0, "How long to wait for each reply."},
    {"history-of", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(history_of),
     PROCESSOR_CMD_INSPECT, 0, "Print this model's stored history as JSON lines."},
    {"initial-document", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(initial_document),
     PROCESSOR_CMD_APPLYING, 0,
     "JSON file with the document new models start from "
     "(default: {})."},
    {"max-depth", PROCESSOR_OPT_UINT, XSTR(CODEC_DEFAULT_MAX_DEPTH), NULL, 1,
     CODEC_MAX_MAX_DEPTH, OFF(max_depth), PROCESSOR_CMD_APPLYING, 0,
     "Deepest nesting of maps and arrays accepted in a request."},
    {"max-string-bytes", PROCESSOR_OPT_UINT, "1048576", NULL, 1, UINT32_MAX,
     OFF(max_string_bytes), PROCESSOR_CMD_APPLYING, 0,
     "Longest string, key or binary value accepted in a request."},
    {"max-completions", PROCESSOR_OPT_UINT, XSTR(CODEC_DEFAULT_MAX_COMPLETIONS), NULL, 1,
     UINT32_MAX, OFF(max_completions), PROCESSOR_CMD_APPLYING, 0,
     "Most commands accepted in one flush."},
    {"max-path-length", PROCESSOR_OPT_UINT, XSTR(CODEC_DEFAULT_MAX_PATH_LENGTH), NULL, 1,
     CODEC_MAX_MAX_PATH_LENGTH, OFF(max_path_length), PROCESSOR_CMD_APPLYING, 0,
     "Most elements accepted in one command path."},
    {"max-id-bytes", PROCESSOR_OPT_UINT, XSTR(CODEC_DEFAULT_MAX_ID_BYTES), NULL, 1,
     CODEC_MAX_ID_BYTES, OFF(max_id_bytes), PROCESSOR_CMD_APPLYING, 0,
     "Longest model id (the record key) or client id accepted, in bytes; ids must also "
     "be valid UTF-8 and a model id not empty."},
    {"max-document-bytes", PROCESSOR_OPT_UINT, "900000", NULL, 1024, UINT64_MAX,
     OFF(max_document_bytes), PROCESSOR_CMD_APPLYING, 0,
     "Largest a model's document may grow (as msgpack): a flush of creates or updates "
     "that could take it beyond is refused (too_large); deletes always pass. run and "
     "dev refuse to start unless a document this large fits in one Kafka record "
     "(message.max.bytes, less 19 KB for the reply around it): snapshot replies and "
     "snapshot records carry the whole document."},
    {"max-record-bytes", PROCESSOR_OPT_UINT, "900000", NULL, 64, UINT32_MAX,
     OFF(max_record_bytes),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD |
         PROCESSOR_CMD_REPARTITION,
     0,
     "Largest request record value accepted (larger ones are dead-lettered). run and dev "
     "refuse to start unless it is at least 19 KB below the producer's message.max.bytes "
     "(1000000 unless -X sets it): the change record and the reply of a request carry "
     "it whole, with an envelope."},
    {"accept-settings", PROCESSOR_OPT_STRING, NULL, NULL, 0, 0, OFF(accept_settings),
     PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD |
         PROCESSOR_CMD_REPARTITION,
     0,
     "Change and snapshot records written under other settings stop the processor "
     "(instances configured differently would diverge); these settings identities "
     "(the 16 hex digits the refusal names), comma-separated, are accepted anyway: "
     "for a deliberate change of the settings, as long as the topics hold records "
     "written under the old ones."},
};
const size_t processor_options_count =
    sizeof(processor_options) / sizeof(processor_options[0]);

static const processor_option_t *find(unsigned command, const char *name, size_t len)
{
    for (size_t i = 0; i < processor_options_count; i++) {
        const processor_option_t *o = &processor_options[i];
        if ((o->commands & command) && strlen(o->name) == len &&
            !memcmp(o->name, name, len))
            return o;
    }
    return NULL;
}

static int set(processor_config_t *cfg, const processor_option_t *o, const char *value,
               const char *origin, char *errstr, size_t errstr_size)
{
    char *field = (char *)cfg + o->offset;
    if (o->type == PROCESSOR_OPT_STRING) {
        if (o->choices) {
            size_t vlen = strlen(value);
            const char *c = o->choices;
            int ok = 0;
            while (*c && !ok) {
                size_t n = strcspn(c, "|");
                ok = n == vlen && !memcmp(c, value, n);
                c += n + (c[n] == '|');
            }
            if (!ok) {
                snprintf(errstr, errstr_size, "%s: %s must be one of %s, not \"%s\"",
                         origin, o->name, o->choices, value);
                return -1;
            }
        }
        free(*(char **)field);
        *(char **)field = codec_xmemdup(value, strlen(value));
        return 0;
    }
    if (o->type == PROCESSOR_OPT_BOOL) {
        if (!strcmp(value, "true") || !strcmp(value, "1"))
            *(uint64_t *)field = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "0"))
            *(uint64_t *)field = 0;
        else {
            snprintf(errstr, errstr_size, "%s: %s must be true or false, not \"%s\"",
                     origin, o->name, value);
            return -1;
        }
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (errno || end == value || *end || value[0] == '-' || v < o->min || v > o->max) {
        snprintf(errstr, errstr_size,
                 "%s: %s must be an integer in %llu..%llu, not \"%s\"", origin, o->name,
                 (unsigned long long)o->min, (unsigned long long)o->max, value);
        return -1;
    }
    *(uint64_t *)field = v;
    return 0;
}

/* Adds a librdkafka property "name=value" (-X, kafka.NAME in --config,
 * FLUSHOUT_KAFKA_NAME in the environment). */
static int add_kafka_prop(processor_config_t *cfg, const char *text, size_t name_len,
                          const char *value, const char *origin, char *errstr,
                          size_t errstr_size)
{
    if (!name_len) {
        snprintf(errstr, errstr_size, "%s: expected a librdkafka property name=value",
                 origin);
        return -1;
    }
    cfg->kafka_props =
        codec_xrealloc(cfg->kafka_props, (cfg->kafka_prop_count + 2) * sizeof(char *));
    cfg->kafka_props[cfg->kafka_prop_count++] = codec_xmemdup(text, name_len);
    cfg->kafka_props[cfg->kafka_prop_count++] = codec_xmemdup(value, strlen(value));
    return 0;
}

static int load_file(processor_config_t *cfg, unsigned command, const char *path,
                     char *errstr, size_t errstr_size)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        snprintf(errstr, errstr_size, "--config %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (rc == 0 && getline(&line, &cap, fp) != -1) {
        char origin[512];
        lineno++;
        char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        size_t len = strlen(s);
        while (len && isspace((unsigned char)s[len - 1]))
            s[--len] = '\0';
        if (!*s || *s == '#')
            continue;
        snprintf(origin, sizeof(origin), "%s:%d", path, lineno);
        char *eq = strchr(s, '=');
        const processor_option_t *o = eq ? find(command, s, (size_t)(eq - s)) : NULL;
        if (eq && !o && (command & PROCESSOR_CMD_KAFKA) && !strncmp(s, "kafka.", 6)) {
            rc = add_kafka_prop(cfg, s + 6, (size_t)(eq - s - 6), eq + 1, origin, errstr,
                                errstr_size);
        } else if (!o) {
            snprintf(errstr, errstr_size, "%s: expected key=value with a known key",
                     origin);
            rc = -1;
        } else {
            rc = set(cfg, o, eq + 1, origin, errstr, errstr_size);
        }
    }
    free(line);
    fclose(fp);
    return rc;
}

void processor_options_usage(FILE *fp, unsigned command)
{
    fprintf(fp, "Options (also FLUSHOUT_<NAME> in the environment, or name=value lines "
                "in --config FILE):\n");
    fprintf(fp, "  --config FILE\n      Read options from FILE.\n");
    if (command & PROCESSOR_CMD_KAFKA) {
        fprintf(fp, "  -X NAME=VALUE\n");
        processor_print_wrapped(
            fp,
            "Set a librdkafka property on every Kafka client (security.protocol, "
            "sasl.*, ssl.*, ...), as kcat does; kafka.NAME=VALUE in --config, "
            "FLUSHOUT_KAFKA_NAME (dots as underscores) in the environment. "
            "Properties the processor must own are refused.",
            6, 0, 80);
    }
    for (size_t i = 0; i < processor_options_count; i++) {
        const processor_option_t *o = &processor_options[i];
        if (!(o->commands & command))
            continue;
        const char *arg = o->choices                      ? o->choices
                          : o->type == PROCESSOR_OPT_UINT ? " N"
                          : o->type == PROCESSOR_OPT_BOOL ? "[=true|false]"
                                                          : " VALUE";
        fprintf(fp, "  --%s%s%s%s\n", o->name, o->choices ? " " : "", arg,
                o->required ? " (required)" : "");
        processor_print_wrapped(fp, o->help, 6, 0, 80);
        if (o->default_value)
            fprintf(fp, "      Default: %s.\n", o->default_value);
    }
}

int processor_config_load(processor_config_t *cfg, unsigned command,
                          const char *command_name, int argc, char **argv, char *errstr,
                          size_t errstr_size)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < processor_options_count; i++)
        if ((processor_options[i].commands & command) &&
            processor_options[i].default_value)
            set(cfg, &processor_options[i], processor_options[i].default_value, "default",
                errstr, errstr_size);

    /* --config first, wherever it is, so the command line still overrides it. */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            const processor_command_t *c = processor_command_of(command);
            printf("Usage: flushout-processor %s %s\n\n", command_name,
                   c ? c->args : "[options]");
            if (c)
                processor_print_wrapped(stdout, c->summary, 6, 0, 80);
            printf("\n");
            processor_options_usage(stdout, command);
            return 1;
        }
        const char *file = NULL;
        if (!strncmp(argv[i], "--config=", 9))
            file = argv[i] + 9;
        else if (!strcmp(argv[i], "--config") && i + 1 < argc)
            file = argv[++i];
        if (file && load_file(cfg, command, file, errstr, errstr_size))
            return -1;
    }

    for (size_t i = 0; i < processor_options_count; i++) {
        const processor_option_t *o = &processor_options[i];
        char env[96] = "FLUSHOUT_";
        size_t n = strlen(env);
        for (const char *c = o->name; *c && n < sizeof(env) - 1; c++)
            env[n++] = *c == '-' ? '_' : (char)toupper((unsigned char)*c);
        env[n] = '\0';
        const char *v = getenv(env);
        if ((o->commands & command) && v && set(cfg, o, v, env, errstr, errstr_size))
            return -1;
    }

    if (command & PROCESSOR_CMD_KAFKA) {
        extern char **environ;
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "FLUSHOUT_KAFKA_", 15))
                continue;
            const char *eq = strchr(*e, '=');
            if (!eq)
                continue;
            char name[256];
            size_t n = 0;
            for (const char *c = *e + 15; c < eq && n < sizeof(name) - 1; c++)
                name[n++] = *c == '_' ? '.' : (char)tolower((unsigned char)*c);
            name[n] = '\0';
            if (add_kafka_prop(cfg, name, n, eq + 1, "environment", errstr, errstr_size))
                return -1;
        }
    }

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if ((command & PROCESSOR_CMD_KAFKA) && !strncmp(arg, "-X", 2)) {
            const char *prop = arg[2] ? arg + 2 : i + 1 < argc ? argv[++i] : "";
            const char *eq = strchr(prop, '=');
            if (add_kafka_prop(cfg, prop, eq ? (size_t)(eq - prop) : 0, eq ? eq + 1 : "",
                               "-X", errstr, errstr_size))
                return -1;
            continue;
        }
        if (command == PROCESSOR_CMD_SEND && strncmp(arg, "--", 2) && !cfg->request) {
            cfg->request = codec_xmemdup(arg, strlen(arg));
            continue;
        }
        if (command == PROCESSOR_CMD_TOPICS && strncmp(arg, "--", 2) && !cfg->action) {
            if (strcmp(arg, "create") && strcmp(arg, "describe")) {
                snprintf(errstr, errstr_size, "expected create or describe, not \"%s\"",
                         arg);
                return -1;
            }
            cfg->action = codec_xmemdup(arg, strlen(arg));
            continue;
        }
        if (strncmp(arg, "--", 2)) {
            snprintf(errstr, errstr_size, "unexpected argument \"%s\" (see --help)", arg);
            return -1;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 6 && !memcmp(name, "config", 6)) {
            i += !eq;
            continue;
        }
        const processor_option_t *o = find(command, name, len);
        if (!o) {
            snprintf(errstr, errstr_size, "unknown option --%.*s for %s (see --help)",
                     (int)len, name, command_name);
            return -1;
        }
        const char *value = eq                              ? eq + 1
                            : o->type == PROCESSOR_OPT_BOOL ? "true"
                            : i + 1 < argc                  ? argv[++i]
                                                            : NULL;
        if (!value) {
            snprintf(errstr, errstr_size, "--%s needs a value", o->name);
            return -1;
        }
        if (set(cfg, o, value, "command line", errstr, errstr_size))
            return -1;
    }

    for (size_t i = 0; i < processor_options_count; i++) {
        const processor_option_t *o = &processor_options[i];
        if ((o->commands & command) && o->required && o->type == PROCESSOR_OPT_STRING &&
            !*(char **)((char *)cfg + o->offset)) {
            snprintf(errstr, errstr_size, "--%s is required (see --help)", o->name);
            return -1;
        }
    }
    return 0;
}

void processor_config_clear(processor_config_t *cfg)
{
    for (size_t i = 0; i < cfg->kafka_prop_count; i++)
        free(cfg->kafka_props[i]);
    free(cfg->kafka_props);
    free(cfg->request);
    free(cfg->action);
    for (size_t i = 0; i < processor_options_count; i++) {
        if (processor_options[i].type != PROCESSOR_OPT_STRING)
            continue;
        char **field = (char **)((char *)cfg + processor_options[i].offset);
        free(*field);
        *field = NULL; /* options of different commands may share a field */
    }
    memset(cfg, 0, sizeof(*cfg));
}
