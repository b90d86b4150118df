/* processor/commands.c - the one table of commands. */
#include "commands.h"

#include <stdbool.h>
#include <string.h>

#include "cmd_apply.h"
#include "cmd_dev.h"
#include "cmd_inspect.h"
#include "cmd_rebuild.h"
#include "cmd_repartition.h"
#include "cmd_send.h"
#include "cmd_topics.h"
#include "gateway.h"
#include "run.h"

/* The commands in the table's signature (send has it already). */
#define MAIN_WITH_CFG(name, fn)                                   \
    static int name(processor_config_t *cfg, FILE *in, FILE *out) \
    {                                                             \
        (void)in;                                                 \
        (void)out;                                                \
        return fn(cfg);                                           \
    }
#define MAIN_WITH_OUT(name, fn)                                   \
    static int name(processor_config_t *cfg, FILE *in, FILE *out) \
    {                                                             \
        (void)in;                                                 \
        return fn(cfg, out);                                      \
    }

static int apply_main(processor_config_t *cfg, FILE *in, FILE *out)
{
    return processor_cmd_apply(cfg, in, out);
}
MAIN_WITH_CFG(run_main, processor_cmd_run)
MAIN_WITH_CFG(dev_main, processor_cmd_dev)
MAIN_WITH_CFG(rebuild_main, processor_cmd_rebuild)
MAIN_WITH_CFG(repartition_main, processor_cmd_repartition)
MAIN_WITH_CFG(gateway_main, processor_cmd_gateway)
MAIN_WITH_OUT(topics_main, processor_cmd_topics)
MAIN_WITH_OUT(inspect_main, processor_cmd_inspect)

const processor_command_t processor_commands[] = {
    {
        .name = "run",
        .flag = PROCESSOR_CMD_RUN,
        .main = run_main,
        .args = "[options]",
        .brief = "The stream processor: consume the flushes topic in a "
                 "consumer group, apply each model's flushes in order, produce "
                 "replies, change records and dead letters.",
        .summary = "The stream processor: consumes the flushes topic in "
                   "consumer group --group-id, applies each model's flushes in "
                   "order, and produces replies, change records and dead "
                   "letters. Stops cleanly on SIGTERM or SIGINT.",
    },
    {
        .name = "dev",
        .flag = PROCESSOR_CMD_DEV,
        .main = dev_main,
        .args = "[options]",
        .brief = "Start an embedded Kafka-protocol broker (in memory, for "
                 "development and tests only) with the topics created, and run "
                 "the processor on it. Prints bootstrap.servers=... first.",
        .summary = "Starts an embedded Kafka-protocol broker (librdkafka's "
                   "mock cluster) with the topics created, prints "
                   "bootstrap.servers=HOST:PORT,... as its first line, and "
                   "runs the processor on it until SIGTERM or SIGINT. The "
                   "broker keeps everything in memory and loses it at exit: it "
                   "is for development and tests only.",
    },
    {
        .name = "gateway",
        .flag = PROCESSOR_CMD_GATEWAY,
        .main = gateway_main,
        .args = "[options]",
        .brief = "Serve the models over HTTP, Server-Sent Events and WebSocket, "
                 "authenticated with JWTs (processor/GATEWAY.md).",
        .summary = "Serves the models to browsers and app backends over HTTP, "
                   "Server-Sent Events and WebSocket: each request becomes a record "
                   "on the flushes topic, its reply is read from this gateway's "
                   "share of the replies topic, and subscribers hear of every "
                   "change from the changes topic. Stateless: run as many as "
                   "needed. Stops on SIGTERM or SIGINT.",
    },
    {
        .name = "send",
        .flag = PROCESSOR_CMD_SEND,
        .main = processor_cmd_send,
        .args = "[options] REQUEST_JSON|-",
        .brief = "Send a request (JSON) to a model and print the reply.",
        .summary = "Sends a request given as JSON (or, with -, each NDJSON "
                   "line of stdin) and prints the matching reply as JSON. "
                   "Exits 1 if a reply does not come within --timeout-ms.",
    },
    {
        .name = "rebuild",
        .flag = PROCESSOR_CMD_REBUILD,
        .main = rebuild_main,
        .args = "[options]",
        .brief = "Rebuild a state directory offline from the changes topic or "
                 "the flushes topic.",
        .summary = "Rebuilds a state directory offline from the topics: each "
                   "partition's store (partition-N, which must not exist yet) "
                   "from the changes topic or from the flushes topic, from its "
                   "beginning to its current end. Use the same state and limit "
                   "options as the processor that wrote the topics.",
    },
    {
        .name = "topics",
        .flag = PROCESSOR_CMD_TOPICS,
        .main = topics_main,
        .args = "create|describe [options]",
        .brief = "Create or check the topics (create|describe) through the "
                 "Admin API.",
        .summary = "Creates (create) or checks (describe) the flushes, "
                   "replies, changes, snapshots and dead-letter topics through "
                   "Kafka's Admin API: partition counts (flushes, changes and "
                   "snapshots co-partitioned), replication, "
                   "min.insync.replicas, compaction of the snapshots topic and "
                   "retention of the others. create creates the missing topics "
                   "and leaves existing ones alone. Exits 1 when a topic is "
                   "missing (describe), differs, or cannot be created.",
    },
    {
        .name = "repartition",
        .flag = PROCESSOR_CMD_REPARTITION,
        .main = repartition_main,
        .args = "[options]",
        .brief = "Move every model to topics with another partition count.",
        .summary = "Moves every model to a new partition count: rebuilds the "
                   "old layout's models from its snapshots and changes topics "
                   "into --state-dir, writes each model's snapshot to "
                   "--to-snapshots-topic in the partition its key maps to "
                   "there, and carries the flushes the old consumer group has "
                   "not processed over to --to-flushes-topic. Stop the old "
                   "processors first; start processors on the new topics "
                   "(empty state directories) after it exits 0. The procedure "
                   "is in deploy/README.md.",
    },
    {
        .name = "apply",
        .flag = PROCESSOR_CMD_APPLY,
        .main = apply_main,
        .args = "[options]",
        .brief = "Read NDJSON requests from stdin, write one NDJSON reply per "
                 "request to stdout (offline; no Kafka), keeping state in the "
                 "RocksDB store in --state-dir.",
        .summary = "Reads NDJSON requests from stdin and writes one NDJSON "
                   "reply per request to stdout, keeping state in the RocksDB "
                   "store in --state-dir. Offline: no Kafka.",
    },
    {
        .name = "inspect",
        .flag = PROCESSOR_CMD_INSPECT,
        .main = inspect_main,
        .args = "[options]",
        .brief = "List what a state store holds, or print one model's snapshot "
                 "(--model M) or history (--history-of M) as JSON.",
        .summary = "Lists what a state store holds as JSON lines, or prints "
                   "one model's snapshot (--model) or history (--history-of).",
    },
};
const size_t processor_commands_count =
    sizeof(processor_commands) / sizeof(processor_commands[0]);

const processor_command_t *processor_command_find(const char *name)
{
    for (size_t i = 0; i < processor_commands_count; i++)
        if (!strcmp(processor_commands[i].name, name))
            return &processor_commands[i];
    return NULL;
}

const processor_command_t *processor_command_of(unsigned flag)
{
    for (size_t i = 0; i < processor_commands_count; i++)
        if (processor_commands[i].flag == flag)
            return &processor_commands[i];
    return NULL;
}

void processor_print_wrapped(FILE *fp, const char *text, int indent, int col, int width)
{
    bool line_start = true; /* no word on this line yet */
    if (col >= indent) {
        fputc('\n', fp);
        col = 0;
    }
    while (*text) {
        size_t word = strcspn(text, " ");
        if (!line_start && col + 1 + (int)word > width) {
            fputc('\n', fp);
            col = 0;
            line_start = true;
        }
        if (line_start)
            col += fprintf(fp, "%*s", indent - col, "");
        else
            col += fprintf(fp, " ");
        line_start = false;
        col += fprintf(fp, "%.*s", (int)word, text);
        text += word;
        while (*text == ' ')
            text++;
    }
    fputc('\n', fp);
}

void processor_commands_usage(FILE *fp)
{
    for (size_t i = 0; i < processor_commands_count; i++) {
        const processor_command_t *c = &processor_commands[i];
        /* 78 columns: the list reads as it did when it was written by hand. */
        processor_print_wrapped(fp, c->brief, 11, fprintf(fp, "  %s", c->name), 78);
    }
}
