/* processor/options_table.c - the rows of the one table of options (options.h): each
 * option's name, type, default, bounds, the commands that take it, and its help. */
#include <stddef.h>
#include <stdint.h>

#include "codec/error.h"
#include "options.h"
#include "processor/interceptor.h"

#define STR(x)  #x
#define XSTR(x) STR(x)
#define OFF(f)  offsetof(processor_config_t, f)

const processor_option_t processor_options[] = {
    {
        .name = "bootstrap-servers",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(bootstrap_servers),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_SEND | PROCESSOR_CMD_REBUILD |
                    PROCESSOR_CMD_TOPICS | PROCESSOR_CMD_REPARTITION |
                    PROCESSOR_CMD_GATEWAY,
        .required = 1,
        .help = "Kafka brokers to start from, host:port[,host:port...].",
    },
    {
        .name = "state-dir",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(state_dir),
        .commands = PROCESSOR_CMD_APPLY | PROCESSOR_CMD_INSPECT | PROCESSOR_CMD_RUN |
                    PROCESSOR_CMD_REBUILD | PROCESSOR_CMD_REPARTITION,
        .required = 1,
        .help = "Directory of the RocksDB state store, created if missing (run keeps one "
                "store per input partition in partition-N below it; repartition rebuilds "
                "the old layout's models there, and it must not hold partition stores "
                "yet).",
    },
    {
        .name = "group-id",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "flushout-processor",
        .offset = OFF(group_id),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REPARTITION,
        .help = "Consumer group: instances with the same group id share the partitions "
                "(repartition: the group whose unprocessed flushes are carried over).",
    },
    {
        .name = "group-instance-id",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(group_instance_id),
        .commands = PROCESSOR_CMD_RUN,
        .help = "Static membership (group.instance.id): a restart within "
                "session.timeout.ms keeps this instance's partitions without a "
                "rebalance. Unique per instance, stable across restarts (e.g. the pod "
                "name).",
    },
    {
        .name = "flushes-topic",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "flushout.flushes",
        .offset = OFF(flushes_topic),
        .commands = PROCESSOR_CMD_KAFKA,
        .help = "Requests, keyed by model id.",
    },
    {
        .name = "replies-topic",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "flushout.replies",
        .offset = OFF(replies_topic),
        .commands = PROCESSOR_CMD_KAFKA & ~PROCESSOR_CMD_REPARTITION,
        .help = "Replies, keyed by client id (unless the request's kafka_replyTopic "
                "header names another topic that --reply-topics allows).",
    },
    {
        .name = "reply-topics",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(reply_topics),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD,
        .help = "Topics besides --replies-topic that a request's kafka_replyTopic header "
                "(Spring Kafka's request/reply) may send its reply to: comma-separated "
                "names or shell patterns (fnmatch: *, ?, [...]), e.g. "
                "'replies.*,billing.replies'. Never the flushes, changes, snapshots or "
                "dead-letter topics, whatever the pattern. A request naming another "
                "topic, or a partition the topic does not have, gets an error reply "
                "(bad_reply_topic) on --replies-topic and is dead-lettered. Default: "
                "none. Give rebuild the processor's value.",
    },
    {
        .name = "changes-topic",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "flushout.changes",
        .offset = OFF(changes_topic),
        .commands = PROCESSOR_CMD_GATEWAY | PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV |
                    PROCESSOR_CMD_REBUILD | PROCESSOR_CMD_TOPICS |
                    PROCESSOR_CMD_REPARTITION,
        .help = "Applied flushes, keyed by model, partition for partition with the "
                "flushes topic; also the changelog that a partition's new owner catches "
                "up from.",
    },
    {
        .name = "snapshots-topic",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "flushout.snapshots",
        .offset = OFF(snapshots_topic),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_TOPICS |
                    PROCESSOR_CMD_REPARTITION | PROCESSOR_CMD_REBUILD,
        .help = "Models' snapshots, keyed by model, partition for partition with the "
                "flushes topic (compacted: the latest per model is what counts). A "
                "partition restores from it when the changes topic no longer reaches "
                "back far enough.",
    },
    {
        .name = "snapshot-topic-every",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "1000",
        .min = 0,
        .max = UINT64_MAX,
        .offset = OFF(snapshot_topic_every),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV,
        .help = "Publish a model's snapshot each time its command count passes a "
                "multiple of N; a document over 64 KB only with a rewrite of its "
                "stored snapshot, which history since the last one pays for (0: "
                "never; the changes topic must then be kept forever).",
    },
    {
        .name = "snapshot-topic-interval-ms",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "3600000",
        .min = 0,
        .max = UINT64_MAX,
        .offset = OFF(snapshot_topic_interval_ms),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV,
        .help = "Also publish, this often, the snapshot record of every model changed "
                "since its last one (0: never). A restore then needs no change record "
                "older than about this interval, however quiet the model, so the changes "
                "topic's retention must exceed it plus the longest time the processors "
                "may be down.",
    },
    {
        .name = "dlq-topic",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "flushout.dlq",
        .offset = OFF(dlq_topic),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_TOPICS |
                    PROCESSOR_CMD_REBUILD,
        .help = "Dead letters: records that could not be processed, with Spring Kafka's "
                "kafka_dlt-* headers saying why and where they came from.",
    },
    {
        .name = "threads",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "0",
        .min = 0,
        .max = 1024,
        .offset = OFF(threads),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD |
                    PROCESSOR_CMD_REPARTITION,
        .help = "Worker threads sharing the partitions (assigned, or to rebuild); a "
                "partition is in one thread at a time; 0 = the number of cores (rebuild: "
                "twice that).",
    },
    {
        .name = "partitioner",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "murmur2_random",
        .choices = "murmur2_random|consistent_random|any",
        .offset = OFF(partitioner),
        .commands = PROCESSOR_CMD_KAFKA,
        .help = "How producers map a model id to a partition. The processor refuses "
                "records whose key belongs to another partition (wrong_partition), "
                "because a model split over two partitions would have two masters. "
                "murmur2_random is the Java client's and kafkajs' default; librdkafka "
                "clients (kcat) need -X partitioner=murmur2_random. 'any' turns the "
                "check off.",
    },
    {
        .name = "log-level",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "info",
        .choices = "error|warn|info|debug",
        .offset = OFF(log_level),
        .commands = PROCESSOR_CMD_KAFKA,
        .help = "Least severe log lines written to stderr ('debug' also shows "
                "librdkafka's debug lines, with -X debug=...).",
    },
    {
        .name = "from",
        .type = PROCESSOR_OPT_STRING,
        .choices = "changes|flushes",
        .offset = OFF(from),
        .commands = PROCESSOR_CMD_REBUILD,
        .required = 1,
        .help = "Rebuild from the change records (fast: resolved commands) or by "
                "re-running every flush (slow; the same result, since processing is "
                "deterministic).",
    },
    {
        .name = "partitions",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(partition_list),
        .commands = PROCESSOR_CMD_REBUILD,
        .help = "Only these partitions, comma-separated (default: all of the flushes "
                "topic).",
    },
    {
        .name = "http-port",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "0",
        .min = 0,
        .max = 65535,
        .offset = OFF(http_port),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV,
        .help = "Serve /metrics (Prometheus text format), /healthz and /readyz over HTTP "
                "on this port (0: no HTTP server), on --http-address.",
    },
    {
        .name = "http-address",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(http_address),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_GATEWAY,
        .help = "The address the HTTP server listens on: an IP address (127.0.0.1, ::1, "
                "the pod's address) or a host name (its first address). Default: every "
                "interface, IPv6 and IPv4.",
    },
    {
        .name = "http-port",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "8080",
        .min = 1,
        .max = 65535,
        .offset = OFF(gateway_port),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "Serve the API (HTTP, Server-Sent Events, WebSocket) on this port, on "
                "--http-address.",
    },
    {
        .name = "gateway-port",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "8080",
        .min = 0,
        .max = 65535,
        .offset = OFF(gateway_port),
        .commands = PROCESSOR_CMD_DEV,
        .help = "Run a gateway (--no-auth) on this port too (0: none), so that browsers "
                "reach the models over HTTP and WebSocket.",
    },
    {
        .name = "jwt-key-file",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(jwt_key_file),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "Check each request's JWT with this key: the shared secret (HS256) or a "
                "PEM public key (RS256, ES256). Required unless --no-auth.",
    },
    {
        .name = "jwt-alg",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "HS256",
        .choices = "HS256|RS256|ES256",
        .offset = OFF(jwt_alg),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "The only algorithm tokens may be signed with (so that a public key is "
                "never taken for an HMAC secret).",
    },
    {
        .name = "no-auth",
        .type = PROCESSOR_OPT_BOOL,
        .default_value = "false",
        .offset = OFF(no_auth),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "Development only: accept every request without a token, and pass "
                "clients' context and client ids through unchanged.",
    },
    {
        .name = "timeout-ms",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "5000",
        .min = 1,
        .max = 3600000,
        .offset = OFF(timeout_ms),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "How long a request waits for the processor's reply before it is "
                "answered 503 timeout (a flush may still be applied: retry with the "
                "same seq).",
    },
    {
        .name = "rate-limit",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "50",
        .min = 0,
        .max = 1000000,
        .offset = OFF(rate_limit),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "Requests per second per user (token bucket; 0: no limit). Without "
                "authentication, per client address.",
    },
    {
        .name = "rate-burst",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "100",
        .min = 1,
        .max = 1000000,
        .offset = OFF(rate_burst),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "The token bucket's size: requests a user may make at once.",
    },
    {
        .name = "max-connections",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "1024",
        .min = 1,
        .max = 1000000,
        .offset = OFF(max_connections),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "Open connections served at once; more are closed.",
    },
    {
        .name = "max-in-flight",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "32",
        .min = 1,
        .max = 100000,
        .offset = OFF(max_in_flight),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "Requests one WebSocket connection may have waiting for the processor "
                "(more: 429 too_many_requests).",
    },
    {
        .name = "static-dir",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(static_dir),
        .commands = PROCESSOR_CMD_GATEWAY | PROCESSOR_CMD_DEV,
        .help = "Serve the files of this directory at / (outside /v1/, /healthz and "
                "/metrics; / is index.html): a web app and its API on one origin, such "
                "as the demo in deploy/demo.",
    },
    {
        .name = "gateway-group",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "flushout-gateway",
        .offset = OFF(gateway_group),
        .commands = PROCESSOR_CMD_GATEWAY,
        .help = "The consumer group the gateways share the replies topic's partitions "
                "in (each reads only the replies to its own requests).",
    },
    {
        .name = "checkpoint-dir",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(checkpoint_dir),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD,
        .help = "Backups of the state (run, dev): after each flush point of a "
                "partition's store (every 30 s, a full memtable, a revoke), keep a "
                "RocksDB checkpoint of it in partition-N.<ms> here, hard-linked when on "
                "the same file system (copy it elsewhere to survive the disk). rebuild "
                "--from changes, and run for a partition it has no store for, start "
                "from the partition's latest one there and replay only the change "
                "records after it. Not with --fsync.",
    },
    {
        .name = "standby-interval-ms",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "0",
        .min = 0,
        .max = 86400000,
        .offset = OFF(standby_interval_ms),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV,
        .help =
            "Warm standbys: every this many ms, catch up the stores of the partitions "
            "this instance does not own from the changes topic, so that taking one "
            "over (a rebalance, an instance lost) replays only what came since; 0 = "
            "off. Costs the disk of every partition's state and the CPU of applying "
            "every change record on each instance.",
    },
    {
        .name = "takeover-timeout-ms",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "300000",
        .min = 1000,
        .max = UINT64_MAX,
        .offset = OFF(takeover_timeout_ms),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV,
        .help = "How long a partition may fail to be taken over because of transient "
                "Kafka errors (timeouts, leaders moving, brokers down: retried with "
                "backoff meanwhile) before /healthz fails, naming it, so that the "
                "instance is restarted.",
    },
    {
        .name = "extra-topics",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(extra_topics),
        .commands = PROCESSOR_CMD_DEV,
        .help = "More topics for the embedded cluster, NAME:PARTITIONS comma-separated "
                "(for example a new layout to try repartition on).",
    },
    {
        .name = "to-flushes-topic",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(to_flushes_topic),
        .commands = PROCESSOR_CMD_REPARTITION,
        .required = 1,
        .help = "The new layout's flushes topic: its partition count is the new "
                "layout's, and the old group's unprocessed flushes are carried over to "
                "it.",
    },
    {
        .name = "to-changes-topic",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(to_changes_topic),
        .commands = PROCESSOR_CMD_REPARTITION,
        .required = 1,
        .help = "The new layout's changes topic (checked: as many partitions as "
                "--to-flushes-topic; nothing is written to it).",
    },
    {
        .name = "to-snapshots-topic",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(to_snapshots_topic),
        .commands = PROCESSOR_CMD_REPARTITION,
        .required = 1,
        .help = "The new layout's snapshots topic: every model's snapshot is written "
                "there, in the partition its key maps to under the new partition count.",
    },
    {
        .name = "partitions",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "0",
        .min = 0,
        .max = 1000000,
        .offset = OFF(partitions),
        .commands = PROCESSOR_CMD_TOPICS,
        .help = "Partitions of the flushes, changes and snapshots topics "
                "(co-partitioned), and of the replies and dead-letter topics. Required "
                "for create; describe checks it when given. 0: not given.",
    },
    {
        .name = "replication-factor",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "3",
        .min = 1,
        .max = 32,
        .offset = OFF(replication_factor),
        .commands = PROCESSOR_CMD_TOPICS,
        .help = "Replicas of every partition.",
    },
    {
        .name = "min-insync-replicas",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "2",
        .min = 1,
        .max = 32,
        .offset = OFF(min_insync_replicas),
        .commands = PROCESSOR_CMD_TOPICS,
        .help = "min.insync.replicas of every topic: with acks=all (the processor's "
                "producer), a write is acknowledged once this many replicas have it. At "
                "most --replication-factor.",
    },
    {
        .name = "changes-retention-ms",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "604800000",
        .min = 0,
        .max = INT64_MAX,
        .offset = OFF(changes_retention_ms),
        .commands = PROCESSOR_CMD_TOPICS,
        .help = "retention.ms of the changes topic, and of the flushes topic (flushes "
                "not yet processed must outlast an outage as long as the changes do). A "
                "partition whose changes no longer reach back restores from the "
                "snapshots topic, so this must exceed the processors' "
                "--snapshot-topic-interval-ms plus the longest time they may all be "
                "down. 0: keep forever (retention.ms=-1; needed when the processors run "
                "with --snapshot-topic-every 0 or --snapshot-topic-interval-ms 0).",
    },
    {
        .name = "replies-retention-ms",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "86400000",
        .min = 0,
        .max = INT64_MAX,
        .offset = OFF(replies_retention_ms),
        .commands = PROCESSOR_CMD_TOPICS,
        .help = "retention.ms of the replies topic. 0: keep forever.",
    },
    {
        .name = "dlq-retention-ms",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "1209600000",
        .min = 0,
        .max = INT64_MAX,
        .offset = OFF(dlq_retention_ms),
        .commands = PROCESSOR_CMD_TOPICS,
        .help = "retention.ms of the dead-letter topic. 0: keep forever.",
    },
    {
        .name = "timeout-ms",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "30000",
        .min = 1,
        .max = 3600000,
        .offset = OFF(timeout_ms),
        .commands = PROCESSOR_CMD_TOPICS,
        .help = "How long each request to the cluster (metadata, DescribeConfigs, "
                "CreateTopics) may take, the wait for topic creation included.",
    },
    {
        .name = "brokers",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "3",
        .min = 1,
        .max = 16,
        .offset = OFF(brokers),
        .commands = PROCESSOR_CMD_DEV,
        .help = "Brokers of the embedded development cluster.",
    },
    {
        .name = "partitions",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "8",
        .min = 1,
        .max = 1024,
        .offset = OFF(partitions),
        .commands = PROCESSOR_CMD_DEV,
        .help = "Partitions of each topic of the embedded cluster.",
    },
    {
        .name = "broker-only",
        .type = PROCESSOR_OPT_BOOL,
        .default_value = "false",
        .min = 0,
        .max = 1,
        .offset = OFF(broker_only),
        .commands = PROCESSOR_CMD_DEV,
        .help = "Run only the embedded cluster, no processor (for processors in other "
                "processes).",
    },
    {
        .name = "ids",
        .type = PROCESSOR_OPT_STRING,
        .default_value = "hash",
        .choices = "hash|sequential",
        .offset = OFF(ids),
        .commands = PROCESSOR_CMD_APPLYING,
        .help = "How created IDs are chosen when a proposed ID collides: 'hash' (a "
                "deterministic 53-bit number from model, command count and attempt) or "
                "'sequential' (flushout's sequentialIds: command count + 1 + attempt).",
    },
    {
        .name = "history",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "1000",
        .min = 0,
        .max = UINT64_MAX,
        .offset = OFF(history),
        .commands = PROCESSOR_CMD_APPLYING,
        .help = "Commands of history kept per model for partial syncs. A flush whose "
                "'from' is older gets a full snapshot; 0 keeps none.",
    },
    {
        .name = "snapshot-every",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "1000",
        .min = 1,
        .max = UINT64_MAX,
        .offset = OFF(snapshot_every),
        .commands = PROCESSOR_CMD_APPLYING,
        .help = "Rewrite a model's stored snapshot once the history since the last one "
                "outgrows it, or after N commands once that history is an eighth of it.",
    },
    {
        .name = "cache-mb",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "256",
        .min = 1,
        .max = 1u << 20,
        .offset = OFF(cache_mb),
        .commands = PROCESSOR_CMD_APPLYING | PROCESSOR_CMD_INSPECT,
        .help = "Memory for decoded models (documents and recent history), least "
                "recently used evicted first; an evicted model reloads from the store.",
    },
    {
        .name = "clients-per-model",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "1000",
        .min = 1,
        .max = UINT64_MAX,
        .offset = OFF(clients_per_model),
        .commands = PROCESSOR_CMD_APPLYING,
        .help = "Client records (for recognising retried flushes) kept per model, at "
                "least; when a new client takes a model an eighth over, the clients "
                "whose last flush is oldest are forgotten down to N, and a forgotten "
                "client's next flush is applied as new.",
    },
    {
        .name = "fsync",
        .type = PROCESSOR_OPT_BOOL,
        .default_value = "false",
        .min = 0,
        .max = 1,
        .offset = OFF(fsync),
        .commands = PROCESSOR_CMD_APPLYING,
        .help = "Write every commit to RocksDB's write-ahead log and sync it: the "
                "store survives power loss on its own. Without it, run skips the log "
                "and recovers what a crash loses from the changes topic.",
    },
    {
        .name = "model",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(model),
        .commands = PROCESSOR_CMD_INSPECT,
        .help = "Print this model's snapshot as JSON.",
    },
    {
        .name = "model",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(model),
        .commands = PROCESSOR_CMD_SEND,
        .help = "The model of requests that do not name one in \"model\" (the record "
                "key).",
    },
    {
        .name = "client",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(client),
        .commands = PROCESSOR_CMD_SEND,
        .help = "The client id of requests that do not name one in \"client\" (replies "
                "are keyed by it).",
    },
    {
        .name = "seq",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(seq),
        .commands = PROCESSOR_CMD_SEND,
        .help = "The first request's seq, then one more per request; default: the time "
                "in milliseconds, which keeps increasing from one send to the next.",
    },
    {
        .name = "timeout-ms",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "10000",
        .min = 1,
        .max = 3600000,
        .offset = OFF(timeout_ms),
        .commands = PROCESSOR_CMD_SEND,
        .help = "How long to wait for each reply.",
    },
    {
        .name = "history-of",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(history_of),
        .commands = PROCESSOR_CMD_INSPECT,
        .help = "Print this model's stored history as JSON lines.",
    },
    {
        .name = "initial-document",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(initial_document),
        .commands = PROCESSOR_CMD_APPLYING,
        .help = "JSON file with the document new models start from (default: {}).",
    },
    {
        .name = "interceptor",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(interceptor),
        .commands = PROCESSOR_CMD_APPLY | PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV |
                    PROCESSOR_CMD_REBUILD,
        .help = "A Lua 5.4 script defining intercept(document, command, context, meta), "
                "called for each command before it is applied, as flushout's "
                "Interceptor: return nil, {newProps = {...}} or {rejection = \"...\"} "
                "(processor/INTERCEPTORS.md). A script that does not load stops "
                "startup.",
    },
    {
        .name = "interceptor-max-instructions",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "1000000",
        .min = 1000,
        .max = 1000000000,
        .offset = OFF(interceptor_max_instructions),
        .commands = PROCESSOR_CMD_APPLY | PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV |
                    PROCESSOR_CMD_REBUILD,
        .help = "Lua instructions (and pattern-matching steps) one intercept call may "
                "take; beyond them the command is rejected.",
    },
    {
        .name = "interceptor-max-memory-mb",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "64",
        .min = PROCESSOR_INTERCEPTOR_MIN_MEMORY_MB,
        .max = 65536,
        .offset = OFF(interceptor_max_memory_mb),
        .commands = PROCESSOR_CMD_APPLY | PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV |
                    PROCESSOR_CMD_REBUILD,
        .help = "Memory of each Lua state (one per worker thread); one intercept call "
                "may allocate a quarter of it, beyond which the command is rejected.",
    },
    {
        .name = "max-depth",
        .type = PROCESSOR_OPT_UINT,
        .default_value = XSTR(CODEC_DEFAULT_MAX_DEPTH),
        .min = 1,
        .max = CODEC_MAX_MAX_DEPTH,
        .offset = OFF(max_depth),
        .commands = PROCESSOR_CMD_CHECKING,
        .help = "Deepest nesting of maps and arrays accepted in a request.",
    },
    {
        .name = "max-string-bytes",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "1048576",
        .min = 1,
        .max = UINT32_MAX,
        .offset = OFF(max_string_bytes),
        .commands = PROCESSOR_CMD_CHECKING,
        .help = "Longest string, key or binary value accepted in a request.",
    },
    {
        .name = "max-completions",
        .type = PROCESSOR_OPT_UINT,
        .default_value = XSTR(CODEC_DEFAULT_MAX_COMPLETIONS),
        .min = 1,
        .max = UINT32_MAX,
        .offset = OFF(max_completions),
        .commands = PROCESSOR_CMD_CHECKING,
        .help = "Most commands accepted in one flush.",
    },
    {
        .name = "max-path-length",
        .type = PROCESSOR_OPT_UINT,
        .default_value = XSTR(CODEC_DEFAULT_MAX_PATH_LENGTH),
        .min = 1,
        .max = CODEC_MAX_MAX_PATH_LENGTH,
        .offset = OFF(max_path_length),
        .commands = PROCESSOR_CMD_CHECKING,
        .help = "Most elements accepted in one command path.",
    },
    {
        .name = "max-id-bytes",
        .type = PROCESSOR_OPT_UINT,
        .default_value = XSTR(CODEC_DEFAULT_MAX_ID_BYTES),
        .min = 1,
        .max = CODEC_MAX_ID_BYTES,
        .offset = OFF(max_id_bytes),
        .commands = PROCESSOR_CMD_CHECKING,
        .help = "Longest model id (the record key) or client id accepted, in bytes; ids "
                "must also be valid UTF-8 and a model id not empty.",
    },
    {
        .name = "max-document-bytes",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "900000",
        .min = 1024,
        .max = UINT64_MAX,
        .offset = OFF(max_document_bytes),
        .commands = PROCESSOR_CMD_APPLYING,
        .help = "Largest a model's document may grow (as msgpack): a flush of creates or "
                "updates that could take it beyond is refused (too_large); deletes "
                "always pass. run and dev refuse to start unless a document this large "
                "fits in one Kafka record (message.max.bytes, less 19 KB for the reply "
                "around it): snapshot replies and snapshot records carry the whole "
                "document.",
    },
    {
        .name = "max-record-bytes",
        .type = PROCESSOR_OPT_UINT,
        .default_value = "900000",
        .min = 64,
        .max = UINT32_MAX,
        .offset = OFF(max_record_bytes),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD |
                    PROCESSOR_CMD_REPARTITION | PROCESSOR_CMD_GATEWAY,
        .help = "Largest request record value accepted (larger ones are dead-lettered). "
                "run and dev refuse to start unless it is at least 19 KB below the "
                "producer's message.max.bytes (1000000 unless -X sets it): the change "
                "record and the reply of a request carry it whole, with an envelope.",
    },
    {
        .name = "accept-settings",
        .type = PROCESSOR_OPT_STRING,
        .offset = OFF(accept_settings),
        .commands = PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_REBUILD |
                    PROCESSOR_CMD_REPARTITION,
        .help = "Change and snapshot records written under other settings stop the "
                "processor (instances configured differently would diverge); these "
                "settings identities (the 16 hex digits the refusal names), "
                "comma-separated, are accepted anyway: for a deliberate change of the "
                "settings, as long as the topics hold records written under the old "
                "ones.",
    },
};
const size_t processor_options_count =
    sizeof(processor_options) / sizeof(processor_options[0]);
