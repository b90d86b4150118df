/* processor/main.c - flushout-processor: the command line. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "log.h"
#include "interceptor.h"
#include "options.h"
#include "setup.h"
#include "state/store.h"

/* FLUSHOUT_VERSION comes from CMakeLists.txt's project(VERSION), the one place it is
 * written. */

static void usage(FILE *fp)
{
    fprintf(fp,
            "flushout-processor %s - the Flushout master as a Kafka stream processor\n\n"
            "Usage: flushout-processor COMMAND [options]\n\n"
            "Commands:\n",
            FLUSHOUT_VERSION);
    processor_commands_usage(fp);
    fprintf(fp, "\nRun 'flushout-processor COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(name, "--version")) {
        printf("flushout-processor %s\n", FLUSHOUT_VERSION);
        return 0;
    }
    const processor_command_t *command = processor_command_find(name);
    if (!command) {
        fprintf(stderr, "flushout-processor: unknown command \"%s\"\n\n", name);
        usage(stderr);
        return 2;
    }

    state_store_thread_start(); /* the main thread's stores: apply, inspect, rebuild */
    processor_config_t cfg;
    char errstr[512];
    int rc = processor_config_load(&cfg, command->flag, name, argc - 2, argv + 2, errstr,
                                   sizeof(errstr));
    if (rc == 0 && cfg.log_level)
        processor_log_threshold = !strcmp(cfg.log_level, "error")  ? PROCESSOR_LOG_ERROR
                                  : !strcmp(cfg.log_level, "warn") ? PROCESSOR_LOG_WARN
                                  : !strcmp(cfg.log_level, "info") ? PROCESSOR_LOG_INFO
                                                                   : PROCESSOR_LOG_DEBUG;
    if (rc == 0 && processor_interceptor_setup(&cfg, errstr, sizeof(errstr))) {
        fprintf(stderr, "flushout-processor %s: %s\n", name, errstr);
        rc = 2;
    } else if (rc == 0) {
        rc = command->main(&cfg, stdin, stdout);
    } else if (rc == 1)
        rc = 0;
    else {
        fprintf(stderr, "flushout-processor %s: %s\n", name, errstr);
        rc = 2;
    }
    processor_interceptor_destroy(cfg.interceptor_loaded);
    processor_config_clear(&cfg);
    return rc;
}
