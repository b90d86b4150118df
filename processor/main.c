/* processor/main.c - flushout-processor: the command line. */
#include <stdio.h>
#include <string.h>

#include "cmd_apply.h"
#include "cmd_dev.h"
#include "cmd_inspect.h"
#include "cmd_rebuild.h"
#include "cmd_repartition.h"
#include "cmd_send.h"
#include "cmd_topics.h"
#include "log.h"
#include "run.h"
#include "options.h"

#define VERSION "0.1.0"

static void usage(FILE *fp)
{
    fprintf(fp,
            "flushout-processor %s - the Flushout master as a Kafka stream processor\n\n"
            "Usage: flushout-processor COMMAND [options]\n\n"
            "Commands:\n"
            "  run      The stream processor: consume the flushes topic in a consumer\n"
            "           group, apply each model's flushes in order, produce replies,\n"
            "           change records and dead letters.\n"
            "  dev      Start an embedded Kafka-protocol broker (in memory, for\n"
            "           development and tests only) with the topics created, and run\n"
            "           the processor on it. Prints bootstrap.servers=... first.\n"
            "  send     Send a request (JSON) to a model and print the reply.\n"
            "  rebuild  Rebuild a state directory offline from the changes topic or the\n"
            "           flushes topic.\n"
            "  topics   Create or check the topics (create|describe) through the Admin\n"
            "           API.\n"
            "  repartition\n"
            "           Move every model to topics with another partition count.\n"
            "  apply    Read NDJSON requests from stdin, write one NDJSON reply per\n"
            "           request to stdout (offline; no Kafka), keeping state in the\n"
            "           RocksDB store in --state-dir.\n"
            "  inspect  List what a state store holds, or print one model's snapshot\n"
            "           (--model M) or history (--history-of M) as JSON.\n\n"
            "Run 'flushout-processor COMMAND --help' for a command's options.\n",
            VERSION);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *command = argv[1];
    if (!strcmp(command, "--help") || !strcmp(command, "-h") ||
        !strcmp(command, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(command, "--version")) {
        printf("flushout-processor %s\n", VERSION);
        return 0;
    }
    unsigned which = !strcmp(command, "apply")         ? PROCESSOR_CMD_APPLY
                     : !strcmp(command, "inspect")     ? PROCESSOR_CMD_INSPECT
                     : !strcmp(command, "run")         ? PROCESSOR_CMD_RUN
                     : !strcmp(command, "dev")         ? PROCESSOR_CMD_DEV
                     : !strcmp(command, "send")        ? PROCESSOR_CMD_SEND
                     : !strcmp(command, "rebuild")     ? PROCESSOR_CMD_REBUILD
                     : !strcmp(command, "topics")      ? PROCESSOR_CMD_TOPICS
                     : !strcmp(command, "repartition") ? PROCESSOR_CMD_REPARTITION
                                                       : 0;
    if (!which) {
        fprintf(stderr, "flushout-processor: unknown command \"%s\"\n\n", command);
        usage(stderr);
        return 2;
    }

    processor_config_t cfg;
    char errstr[512];
    int rc = processor_config_load(&cfg, which, command, argc - 2, argv + 2, errstr,
                                   sizeof(errstr));
    if (rc == 0 && cfg.log_level)
        processor_log_threshold = !strcmp(cfg.log_level, "error")  ? PROCESSOR_LOG_ERROR
                                  : !strcmp(cfg.log_level, "warn") ? PROCESSOR_LOG_WARN
                                  : !strcmp(cfg.log_level, "info") ? PROCESSOR_LOG_INFO
                                                                   : PROCESSOR_LOG_DEBUG;
    if (rc == 0) {
        switch (which) {
        case PROCESSOR_CMD_APPLY:
            rc = processor_cmd_apply(&cfg, stdin, stdout);
            break;
        case PROCESSOR_CMD_INSPECT:
            rc = processor_cmd_inspect(&cfg, stdout);
            break;
        case PROCESSOR_CMD_RUN:
            rc = processor_cmd_run(&cfg);
            break;
        case PROCESSOR_CMD_DEV:
            rc = processor_cmd_dev(&cfg);
            break;
        case PROCESSOR_CMD_REBUILD:
            rc = processor_cmd_rebuild(&cfg);
            break;
        case PROCESSOR_CMD_TOPICS:
            rc = processor_cmd_topics(&cfg, stdout);
            break;
        case PROCESSOR_CMD_REPARTITION:
            rc = processor_cmd_repartition(&cfg);
            break;
        default:
            rc = processor_cmd_send(&cfg, stdin, stdout);
            break;
        }
    } else if (rc == 1)
        rc = 0;
    else {
        fprintf(stderr, "flushout-processor %s: %s\n", command, errstr);
        rc = 2;
    }
    processor_config_clear(&cfg);
    return rc;
}
