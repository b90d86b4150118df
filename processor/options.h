/* processor/options.h - the one table of options behind the CLI, the config file and
 * FLUSHOUT_* environment variables.
 *
 * Precedence, lowest first: the table's default, --config FILE (key=value lines),
 * the environment (FLUSHOUT_STATE_DIR for state-dir), the command line. */
#ifndef FLUSHOUT_PROCESSOR_OPTIONS_H
#define FLUSHOUT_PROCESSOR_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Commands an option applies to. */
#define PROCESSOR_CMD_APPLY       0x1
#define PROCESSOR_CMD_INSPECT     0x2
#define PROCESSOR_CMD_RUN         0x4
#define PROCESSOR_CMD_DEV         0x8
#define PROCESSOR_CMD_SEND        0x10
#define PROCESSOR_CMD_REBUILD     0x20
#define PROCESSOR_CMD_TOPICS      0x40
#define PROCESSOR_CMD_REPARTITION 0x80
#define PROCESSOR_CMD_GATEWAY     0x100
/* Commands that talk to Kafka: they take -X librdkafka properties. */
#define PROCESSOR_CMD_KAFKA                                                     \
    (PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | PROCESSOR_CMD_SEND |               \
     PROCESSOR_CMD_REBUILD | PROCESSOR_CMD_TOPICS | PROCESSOR_CMD_REPARTITION | \
     PROCESSOR_CMD_GATEWAY)
/* Commands that check requests before they reach a processor: the request limits. */
#define PROCESSOR_CMD_CHECKING (PROCESSOR_CMD_APPLYING | PROCESSOR_CMD_GATEWAY)
/* Commands that apply flushes: they take the state and limit options. */
#define PROCESSOR_CMD_APPLYING                                     \
    (PROCESSOR_CMD_APPLY | PROCESSOR_CMD_RUN | PROCESSOR_CMD_DEV | \
     PROCESSOR_CMD_REBUILD | PROCESSOR_CMD_REPARTITION)

typedef struct processor_config_s {
    char *state_dir;
    char *initial_document;
    char *ids; /* "hash" or "sequential" */
    uint64_t history;
    uint64_t snapshot_every;
    uint64_t cache_mb;
    uint64_t clients_per_model;
    uint64_t fsync;
    char *model;      /* inspect */
    char *history_of; /* inspect */
    uint64_t max_depth;
    uint64_t max_string_bytes;
    uint64_t max_completions;
    uint64_t max_path_length;
    uint64_t max_id_bytes;
    uint64_t max_record_bytes;
    uint64_t max_document_bytes;
    /* Kafka */
    char *bootstrap_servers;
    char *group_id;
    char *group_instance_id;
    char *flushes_topic;
    char *replies_topic;
    char *reply_topics; /* topics a kafka_replyTopic header may name: names, patterns */
    char *changes_topic;
    char *dlq_topic;
    char *snapshots_topic;
    uint64_t snapshot_topic_every;
    uint64_t snapshot_topic_interval_ms;
    char *partitioner;
    char *accept_settings; /* run, dev, rebuild, repartition: "id,id", NULL for none */
    uint64_t threads;
    uint64_t brokers;     /* dev */
    uint64_t partitions;  /* dev */
    uint64_t broker_only; /* dev */
    char *client;         /* send */
    char *seq;            /* send: decimal, or unset for the time in ms */
    uint64_t timeout_ms;  /* send */
    char *request;        /* send: the positional argument */
    char *from;           /* rebuild: changes|flushes */
    char *partition_list; /* rebuild: "0,2,5", NULL for all */
    char *log_level;
    uint64_t http_port;           /* run, dev: 0 = no HTTP server */
    char *http_address;           /* run, dev: NULL = every interface */
    uint64_t takeover_timeout_ms; /* run, dev: /healthz fails beyond it */
    uint64_t standby_interval_ms; /* run, dev: 0 = no warm standbys */
    char *checkpoint_dir;         /* run, dev: keep; rebuild: start from (checkpoint.h) */
    char *extra_topics;           /* dev: "name:partitions,..." */
    char *action;                 /* topics: create|describe (the positional argument) */
    uint64_t replication_factor;  /* topics */
    uint64_t min_insync_replicas; /* topics */
    uint64_t changes_retention_ms; /* topics */
    uint64_t replies_retention_ms; /* topics */
    uint64_t dlq_retention_ms;     /* topics */
    char *to_flushes_topic;        /* repartition: the new layout's topics */
    char *to_changes_topic;
    char *to_snapshots_topic;
    uint64_t low_latency; /* not an option: the mock cluster's settings (dev, send) */
    char *interceptor;    /* apply, run, dev, rebuild: a Lua script */
    uint64_t interceptor_max_instructions;
    uint64_t interceptor_max_memory_mb;
    /* gateway (and dev's embedded one) */
    uint64_t gateway_port; /* dev: 0 = none */
    char *jwt_key_file;
    char *jwt_alg;
    uint64_t no_auth;
    uint64_t rate_limit; /* requests per second per user, 0 = off */
    uint64_t rate_burst;
    uint64_t max_connections;
    uint64_t max_in_flight;
    char *gateway_group;
    char *static_dir; /* gateway, dev: files served at / (the demo app) */
    /* not an option: --interceptor loaded (processor_interceptor_setup()) */
    struct processor_interceptor_s *interceptor_loaded;
    /* -X name=value librdkafka properties, in order: name, value, name, value... */
    char **kafka_props;
    size_t kafka_prop_count;
} processor_config_t;

typedef enum processor_opt_type_e {
    PROCESSOR_OPT_STRING,
    PROCESSOR_OPT_UINT,
    PROCESSOR_OPT_BOOL, /* --name alone means true; values true/false/1/0 */
} processor_opt_type_t;

typedef struct processor_option_s {
    const char *name;
    processor_opt_type_t type;
    const char *default_value; /* NULL: unset */
    const char *choices;       /* STRING: "a|b" limits the values, NULL: any */
    uint64_t min, max;         /* UINT bounds */
    size_t offset;             /* into processor_config_t */
    unsigned commands;         /* PROCESSOR_CMD_* mask */
    int required;              /* must be set (STRING) */
    const char *help;
} processor_option_t;

extern const processor_option_t processor_options[];
extern const size_t processor_options_count;

/** Fills cfg for command from defaults, --config, FLUSHOUT_* and argv (the words
 *  after the command name).
 *  @returns 0, 1 when --help was asked for (help printed to stdout), or -1 and errstr. */
int processor_config_load(processor_config_t *cfg, unsigned command,
                          const char *command_name, int argc, char **argv, char *errstr,
                          size_t errstr_size);
void processor_config_clear(processor_config_t *cfg);

/** Prints the options of command, generated from the table. */
void processor_options_usage(FILE *fp, unsigned command);

#endif
