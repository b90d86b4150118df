/* tests/processor/test_options.c - the options: defaults, the three sources and their
 * precedence, each kind of value and its bounds, -X librdkafka properties, positional
 * arguments, --help and the generated usage.
 *
 * The expected defaults are the documented ones (README.md's option tables), the
 * bounds those of the limits they guard (codec/error.h, ports, the store's id length),
 * written out here rather than read from the table under test. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "processor/options.h"

static processor_config_t cfg;
static char errstr[512];
static char config_path[] = "/tmp/flushout-test-options-XXXXXX";

/* Every test starts from an environment without FLUSHOUT_* variables, so that the
 * caller's cannot leak in (each test runs in its own process). */
static void setup(void)
{
    extern char **environ;
    for (;;) {
        char **e = environ;
        while (*e && strncmp(*e, "FLUSHOUT_", 9))
            e++;
        if (!*e)
            break;
        char name[256];
        size_t n = strcspn(*e, "=");
        cr_assert_lt(n, sizeof(name));
        memcpy(name, *e, n);
        name[n] = '\0';
        unsetenv(name);
    }
}

static void teardown(void)
{
    processor_config_clear(&cfg);
    if (strcmp(config_path + strlen(config_path) - 6, "XXXXXX"))
        unlink(config_path);
}

TestSuite(processor_options, .init = setup, .fini = teardown);

/* Loads cfg for command from the NULL-terminated argv. @returns what
 * processor_config_load() returns; errstr holds its message. */
static int load_argv(unsigned command, const char *name, char **argv)
{
    int argc = 0;
    while (argv[argc])
        argc++;
    processor_config_clear(&cfg);
    errstr[0] = '\0';
    return processor_config_load(&cfg, command, name, argc, argv, errstr, sizeof(errstr));
}

/* argv as a NULL-terminated compound literal; a leading NULL lets it be empty. */
#define LOAD(command, name, ...) \
    load_argv(command, name, (char *[]){NULL, ##__VA_ARGS__, NULL} + 1)

/* Loads what must load. */
#define LOAD_OK(command, name, ...) \
    cr_assert_eq(LOAD(command, name, ##__VA_ARGS__), 0, "refused: %s", errstr)

/* Loads what must be refused, with a message containing want. */
#define LOAD_FAILS(want, command, name, ...)                                          \
    do {                                                                              \
        cr_assert_eq(LOAD(command, name, ##__VA_ARGS__), -1, "accepted, wanted: %s",  \
                     want);                                                           \
        cr_assert(strstr(errstr, want), "message \"%s\" lacks \"%s\"", errstr, want); \
    } while (0)

/* Writes text to a new config file, replacing the test's last one; @returns its path
 * (removed by teardown). */
static const char *config_file(const char *text)
{
    if (strcmp(config_path + strlen(config_path) - 6, "XXXXXX")) {
        unlink(config_path);
        strcpy(config_path + strlen(config_path) - 6, "XXXXXX");
    }
    int fd = mkstemp(config_path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return config_path;
}

static void assert_props(const char *const *want, size_t n)
{
    cr_assert_eq(cfg.kafka_prop_count, n, "%zu strings", cfg.kafka_prop_count);
    for (size_t i = 0; i < n; i++)
        cr_assert_str_eq(cfg.kafka_props[i], want[i], "property string %zu", i);
}

Test(processor_options, apply_gets_the_documented_defaults_and_nothing_of_kafka)
{
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d");
    cr_assert_str_eq(cfg.state_dir, "d");
    cr_assert_str_eq(cfg.ids, "hash");
    cr_assert_eq(cfg.history, 1000);
    cr_assert_eq(cfg.snapshot_every, 1000);
    cr_assert_eq(cfg.cache_mb, 256);
    cr_assert_eq(cfg.clients_per_model, 1000);
    cr_assert_eq(cfg.fsync, 0);
    cr_assert_eq(cfg.max_depth, 64);
    cr_assert_eq(cfg.max_string_bytes, 1048576);
    cr_assert_eq(cfg.max_completions, 10000);
    cr_assert_eq(cfg.max_path_length, 32);
    cr_assert_eq(cfg.max_id_bytes, 1024);
    cr_assert_eq(cfg.max_document_bytes, 900000);
    cr_assert_null(cfg.initial_document);
    /* Options of other commands stay unset. */
    cr_assert_null(cfg.bootstrap_servers);
    cr_assert_null(cfg.group_id);
    cr_assert_null(cfg.flushes_topic);
    cr_assert_null(cfg.log_level);
    cr_assert_eq(cfg.max_record_bytes, 0);
    cr_assert_eq(cfg.kafka_prop_count, 0);
}

Test(processor_options, run_gets_the_documented_kafka_defaults)
{
    LOAD_OK(PROCESSOR_CMD_RUN, "run", "--bootstrap-servers", "b:9092", "--state-dir",
            "d");
    cr_assert_str_eq(cfg.bootstrap_servers, "b:9092");
    cr_assert_str_eq(cfg.group_id, "flushout-processor");
    cr_assert_null(cfg.group_instance_id);
    cr_assert_str_eq(cfg.flushes_topic, "flushout.flushes");
    cr_assert_str_eq(cfg.replies_topic, "flushout.replies");
    cr_assert_str_eq(cfg.changes_topic, "flushout.changes");
    cr_assert_str_eq(cfg.dlq_topic, "flushout.dlq");
    cr_assert_str_eq(cfg.snapshots_topic, "flushout.snapshots");
    cr_assert_null(cfg.reply_topics);
    cr_assert_null(cfg.accept_settings);
    cr_assert_eq(cfg.snapshot_topic_every, 1000);
    cr_assert_eq(cfg.snapshot_topic_interval_ms, 3600000);
    cr_assert_str_eq(cfg.partitioner, "murmur2_random");
    cr_assert_str_eq(cfg.log_level, "info");
    cr_assert_eq(cfg.threads, 0);
    cr_assert_eq(cfg.http_port, 0);
    cr_assert_null(cfg.http_address);
    cr_assert_eq(cfg.takeover_timeout_ms, 300000);
    cr_assert_eq(cfg.max_record_bytes, 900000);
    /* run applies flushes: the state options are there too. */
    cr_assert_str_eq(cfg.ids, "hash");
    cr_assert_eq(cfg.history, 1000);
}

Test(processor_options, topics_gets_the_documented_defaults)
{
    LOAD_OK(PROCESSOR_CMD_TOPICS, "topics", "describe", "--bootstrap-servers", "b");
    cr_assert_str_eq(cfg.action, "describe");
    cr_assert_eq(cfg.replication_factor, 3);
    cr_assert_eq(cfg.min_insync_replicas, 2);
    cr_assert_eq(cfg.changes_retention_ms, 604800000);
    cr_assert_eq(cfg.replies_retention_ms, 86400000);
    cr_assert_eq(cfg.dlq_retention_ms, 1209600000);
    cr_assert_eq(cfg.timeout_ms, 30000);
    cr_assert_eq(cfg.partitions, 0, "not given");
    /* topics applies no flush. */
    cr_assert_null(cfg.state_dir);
    cr_assert_null(cfg.ids);
}

/* partitions and timeout-ms are options of several commands, each its own. */
Test(processor_options, one_name_is_a_different_option_per_command)
{
    LOAD_OK(PROCESSOR_CMD_DEV, "dev");
    cr_assert_eq(cfg.partitions, 8);
    cr_assert_eq(cfg.brokers, 3);
    cr_assert_eq(cfg.broker_only, 0);
    LOAD_FAILS("partitions must be an integer in 1..1024", PROCESSOR_CMD_DEV, "dev",
               "--partitions", "1025");
    LOAD_OK(PROCESSOR_CMD_TOPICS, "topics", "create", "--bootstrap-servers", "b",
            "--partitions", "1025");
    cr_assert_eq(cfg.partitions, 1025);
    LOAD_OK(PROCESSOR_CMD_REBUILD, "rebuild", "--bootstrap-servers", "b", "--state-dir",
            "d", "--from", "changes", "--partitions", "0,2,5");
    cr_assert_str_eq(cfg.partition_list, "0,2,5");

    LOAD_OK(PROCESSOR_CMD_SEND, "send", "--bootstrap-servers", "b", "{}");
    cr_assert_eq(cfg.timeout_ms, 10000);
    LOAD_OK(PROCESSOR_CMD_TOPICS, "topics", "create", "--bootstrap-servers", "b");
    cr_assert_eq(cfg.timeout_ms, 30000);
}

Test(processor_options, required_options_are_named_when_missing)
{
    LOAD_FAILS("--state-dir is required", PROCESSOR_CMD_APPLY, "apply", "--history", "3");
    LOAD_FAILS("--bootstrap-servers is required", PROCESSOR_CMD_RUN, "run", "--state-dir",
               "d");
    LOAD_FAILS("--from is required", PROCESSOR_CMD_REBUILD, "rebuild",
               "--bootstrap-servers", "b", "--state-dir", "d");
    LOAD_FAILS("--to-flushes-topic is required", PROCESSOR_CMD_REPARTITION, "repartition",
               "--bootstrap-servers", "b", "--state-dir", "d", "--to-changes-topic", "c",
               "--to-snapshots-topic", "s");
    /* dev runs its own cluster: nothing required. */
    LOAD_OK(PROCESSOR_CMD_DEV, "dev");
    /* The environment can give a required option. */
    setenv("FLUSHOUT_STATE_DIR", "from-env", 1);
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply");
    cr_assert_str_eq(cfg.state_dir, "from-env");
}

Test(processor_options, a_value_follows_the_name_or_an_equals_sign)
{
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir=a=b", "--history", "5",
            "--cache-mb=7", "--ids", "sequential");
    cr_assert_str_eq(cfg.state_dir, "a=b", "only the first = separates");
    cr_assert_eq(cfg.history, 5);
    cr_assert_eq(cfg.cache_mb, 7);
    cr_assert_str_eq(cfg.ids, "sequential");
    /* The last of two wins (a string replaced is freed: ASan checks). */
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "a", "--state-dir", "b",
            "--history", "1", "--history", "2");
    cr_assert_str_eq(cfg.state_dir, "b");
    cr_assert_eq(cfg.history, 2);
    /* An empty string is a value. */
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "");
    cr_assert_str_eq(cfg.state_dir, "");
}

Test(processor_options, integers_are_held_to_their_bounds)
{
    LOAD_OK(PROCESSOR_CMD_RUN, "run", "--bootstrap-servers", "b", "--state-dir", "d",
            "--threads", "1024", "--http-port", "65535", "--max-depth", "1000",
            "--takeover-timeout-ms", "1000", "--max-record-bytes", "64",
            "--max-document-bytes", "1024", "--history", "0", "--snapshot-every", "1",
            "--history", "18446744073709551615");
    cr_assert_eq(cfg.threads, 1024);
    cr_assert_eq(cfg.http_port, 65535);
    cr_assert_eq(cfg.max_depth, 1000);
    cr_assert_eq(cfg.takeover_timeout_ms, 1000);
    cr_assert_eq(cfg.max_record_bytes, 64);
    cr_assert_eq(cfg.max_document_bytes, 1024);
    cr_assert_eq(cfg.snapshot_every, 1);
    cr_assert_eq(cfg.history, UINT64_MAX);

    LOAD_FAILS("command line: threads must be an integer in 0..1024, not \"1025\"",
               PROCESSOR_CMD_RUN, "run", "--bootstrap-servers", "b", "--state-dir", "d",
               "--threads", "1025");
    LOAD_FAILS("http-port must be an integer in 0..65535", PROCESSOR_CMD_DEV, "dev",
               "--http-port", "65536");
    LOAD_FAILS("max-depth must be an integer in 1..1000", PROCESSOR_CMD_APPLY, "apply",
               "--state-dir", "d", "--max-depth", "1001");
    LOAD_FAILS("max-depth must be an integer in 1..1000, not \"0\"", PROCESSOR_CMD_APPLY,
               "apply", "--state-dir", "d", "--max-depth", "0");
    LOAD_FAILS("snapshot-every must be an integer in 1..", PROCESSOR_CMD_APPLY, "apply",
               "--state-dir", "d", "--snapshot-every", "0");
    LOAD_FAILS("takeover-timeout-ms must be an integer in 1000..", PROCESSOR_CMD_DEV,
               "dev", "--takeover-timeout-ms", "999");
    LOAD_FAILS("max-document-bytes must be an integer in 1024..", PROCESSOR_CMD_APPLY,
               "apply", "--state-dir", "d", "--max-document-bytes", "1023");
    LOAD_FAILS("max-record-bytes must be an integer in 64..4294967295", PROCESSOR_CMD_DEV,
               "dev", "--max-record-bytes", "4294967296");
    LOAD_FAILS("max-id-bytes must be an integer in 1..65535", PROCESSOR_CMD_APPLY,
               "apply", "--state-dir", "d", "--max-id-bytes", "65536");
    LOAD_FAILS("min-insync-replicas must be an integer in 1..32", PROCESSOR_CMD_TOPICS,
               "topics", "create", "--bootstrap-servers", "b", "--min-insync-replicas",
               "33");
    /* One past UINT64_MAX overflows. */
    LOAD_FAILS("history must be an integer in 0..18446744073709551615, not "
               "\"18446744073709551616\"",
               PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d", "--history",
               "18446744073709551616");
}

Test(processor_options, an_integer_is_only_decimal_digits)
{
    const char *bad[] = {"", "abc", "12abc", "-1", "1.5", "0x10", "5 "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[64];
        snprintf(want, sizeof(want), "history must be an integer in 0..%llu, not \"%s\"",
                 (unsigned long long)UINT64_MAX, bad[i]);
        LOAD_FAILS(want, PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d", "--history",
                   (char *)bad[i]);
    }
    LOAD_FAILS("not \"-1\"", PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d",
               "--history=-1");
}

Test(processor_options, a_flag_alone_is_true_and_takes_only_true_or_false)
{
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d", "--fsync");
    cr_assert_eq(cfg.fsync, 1);
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d", "--fsync=true");
    cr_assert_eq(cfg.fsync, 1);
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d", "--fsync=1");
    cr_assert_eq(cfg.fsync, 1);
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d", "--fsync", "--fsync=false");
    cr_assert_eq(cfg.fsync, 0);
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d", "--fsync=0");
    cr_assert_eq(cfg.fsync, 0);
    LOAD_OK(PROCESSOR_CMD_DEV, "dev", "--broker-only");
    cr_assert_eq(cfg.broker_only, 1);
    LOAD_FAILS("fsync must be true or false, not \"yes\"", PROCESSOR_CMD_APPLY, "apply",
               "--state-dir", "d", "--fsync=yes");
    /* Without '=' the next word is not the flag's value but an argument of its own. */
    LOAD_FAILS("unexpected argument \"false\"", PROCESSOR_CMD_APPLY, "apply",
               "--state-dir", "d", "--fsync", "false");
    setenv("FLUSHOUT_FSYNC", "true", 1);
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d");
    cr_assert_eq(cfg.fsync, 1);
    setenv("FLUSHOUT_FSYNC", "on", 1);
    LOAD_FAILS("FLUSHOUT_FSYNC: fsync must be true or false, not \"on\"",
               PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d");
}

Test(processor_options, a_string_with_choices_takes_one_of_them_exactly)
{
    const char *levels[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; i < 4; i++) {
        LOAD_OK(PROCESSOR_CMD_RUN, "run", "--bootstrap-servers", "b", "--state-dir", "d",
                "--log-level", (char *)levels[i]);
        cr_assert_str_eq(cfg.log_level, levels[i]);
    }
    LOAD_OK(PROCESSOR_CMD_DEV, "dev", "--partitioner", "any", "--ids", "sequential");
    cr_assert_str_eq(cfg.partitioner, "any");
    cr_assert_str_eq(cfg.ids, "sequential");
    LOAD_OK(PROCESSOR_CMD_REBUILD, "rebuild", "--bootstrap-servers", "b", "--state-dir",
            "d", "--from", "flushes");
    cr_assert_str_eq(cfg.from, "flushes");

    LOAD_FAILS("log-level must be one of error|warn|info|debug, not \"verbose\"",
               PROCESSOR_CMD_DEV, "dev", "--log-level", "verbose");
    /* Neither a prefix nor an extension of a choice, nor two of them. */
    LOAD_FAILS("ids must be one of hash|sequential, not \"has\"", PROCESSOR_CMD_APPLY,
               "apply", "--state-dir", "d", "--ids", "has");
    LOAD_FAILS("not \"hashes\"", PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d",
               "--ids", "hashes");
    LOAD_FAILS("not \"hash|sequential\"", PROCESSOR_CMD_APPLY, "apply", "--state-dir",
               "d", "--ids", "hash|sequential");
    LOAD_FAILS("not \"\"", PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d", "--ids", "");
    LOAD_FAILS("from must be one of changes|flushes", PROCESSOR_CMD_REBUILD, "rebuild",
               "--bootstrap-servers", "b", "--state-dir", "d", "--from", "both");
}

Test(processor_options, unknown_options_and_words_are_refused_by_name)
{
    LOAD_FAILS("unknown option --nope for apply (see --help)", PROCESSOR_CMD_APPLY,
               "apply", "--state-dir", "d", "--nope", "1");
    /* An option of another command is unknown to this one. */
    LOAD_FAILS("unknown option --bootstrap-servers for apply", PROCESSOR_CMD_APPLY,
               "apply", "--state-dir", "d", "--bootstrap-servers", "b");
    LOAD_FAILS("unknown option --history for inspect", PROCESSOR_CMD_INSPECT, "inspect",
               "--state-dir", "d", "--history", "1");
    LOAD_FAILS("unknown option --group-instance-id for dev", PROCESSOR_CMD_DEV, "dev",
               "--group-instance-id=x");
    LOAD_FAILS("unexpected argument \"extra\" (see --help)", PROCESSOR_CMD_APPLY, "apply",
               "--state-dir", "d", "extra");
    LOAD_FAILS("--history needs a value", PROCESSOR_CMD_APPLY, "apply", "--state-dir",
               "d", "--history");
    /* -X is for the commands that talk to Kafka. */
    LOAD_FAILS("unexpected argument \"-X\"", PROCESSOR_CMD_APPLY, "apply", "--state-dir",
               "d", "-X", "a=b");
}

Test(processor_options, the_command_line_beats_the_environment_which_beats_the_file)
{
    const char *file = config_file("history=1\n"
                                   "ids=sequential\n"
                                   "cache-mb=3\n"
                                   "clients-per-model=9\n");
    setenv("FLUSHOUT_HISTORY", "2", 1);
    setenv("FLUSHOUT_CACHE_MB", "4", 1);
    /* --config is read first wherever it stands: the command line still wins. */
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d", "--cache-mb", "5",
            "--config", (char *)file);
    cr_assert_eq(cfg.history, 2, "the environment over the file");
    cr_assert_str_eq(cfg.ids, "sequential", "the file over the default");
    cr_assert_eq(cfg.cache_mb, 5, "the command line over the environment");
    cr_assert_eq(cfg.clients_per_model, 9);
    cr_assert_eq(cfg.snapshot_every, 1000, "the default where nothing is said");
}

Test(processor_options, a_config_file_has_comments_blank_lines_and_spaces_around_lines)
{
    const char *file = config_file("# history=99\n"
                                   "\n"
                                   "   \t\n"
                                   "  state-dir=/var/lib/x  \n"
                                   "\thistory=12\r\n"
                                   "fsync=true");
    char arg[64];
    snprintf(arg, sizeof(arg), "--config=%s", file);
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", arg);
    cr_assert_str_eq(cfg.state_dir, "/var/lib/x", "trimmed");
    cr_assert_eq(cfg.history, 12);
    cr_assert_eq(cfg.fsync, 1, "the last line needs no newline");
}

Test(processor_options, a_config_file_error_names_the_file_and_line)
{
    const char *file = config_file("state-dir=d\nhistory=many\n");
    LOAD_FAILS(":2: history must be an integer", PROCESSOR_CMD_APPLY, "apply", "--config",
               (char *)file);
    cr_assert(!strncmp(errstr, file, strlen(file)), "names the file: %s", errstr);

    /* A flag still needs "=true" in a file. */
    file = config_file("state-dir=d\n\nfsync\n");
    LOAD_FAILS(":3: expected key=value with a known key", PROCESSOR_CMD_APPLY, "apply",
               "--config", (char *)file);

    /* A key of another command is unknown here, and "--" is not part of a key. */
    file = config_file("state-dir=d\ngroup-id=g\n");
    LOAD_FAILS(":2: expected key=value with a known key", PROCESSOR_CMD_APPLY, "apply",
               "--config", (char *)file);
    file = config_file("--state-dir=d\n");
    LOAD_FAILS(":1: expected key=value with a known key", PROCESSOR_CMD_APPLY, "apply",
               "--config", (char *)file);

    LOAD_FAILS("--config /nonexistent/flushout.conf: No such file or directory",
               PROCESSOR_CMD_APPLY, "apply", "--config", "/nonexistent/flushout.conf");
}

Test(processor_options, environment_names_are_upper_case_with_underscores)
{
    setenv("FLUSHOUT_STATE_DIR", "e", 1);
    setenv("FLUSHOUT_MAX_STRING_BYTES", "77", 1);
    setenv("FLUSHOUT_INITIAL_DOCUMENT", "doc.json", 1);
    /* Not an option of apply: ignored, not refused (one environment serves every
     * command). */
    setenv("FLUSHOUT_BOOTSTRAP_SERVERS", "b", 1);
    setenv("FLUSHOUT_GROUP_ID", "g", 1);
    /* Lower case is not looked at. */
    setenv("flushout_history", "5", 1);
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--cache-mb", "1");
    cr_assert_str_eq(cfg.state_dir, "e");
    cr_assert_eq(cfg.max_string_bytes, 77);
    cr_assert_str_eq(cfg.initial_document, "doc.json");
    cr_assert_null(cfg.bootstrap_servers);
    cr_assert_null(cfg.group_id);
    cr_assert_eq(cfg.history, 1000);

    setenv("FLUSHOUT_MAX_DEPTH", "0", 1);
    LOAD_FAILS("FLUSHOUT_MAX_DEPTH: max-depth must be an integer in 1..1000",
               PROCESSOR_CMD_APPLY, "apply");
}

Test(processor_options, dash_x_passes_librdkafka_properties_through_in_order)
{
    LOAD_OK(PROCESSOR_CMD_RUN, "run", "--bootstrap-servers", "b", "--state-dir", "d",
            "-X", "security.protocol=ssl", "-Xsasl.mechanism=PLAIN", "-X", "a=b=c", "-X",
            "empty=", "-X", "security.protocol=plaintext");
    const char *want[] = {"security.protocol",
                          "ssl",
                          "sasl.mechanism",
                          "PLAIN",
                          "a",
                          "b=c",
                          "empty",
                          "",
                          "security.protocol",
                          "plaintext"};
    assert_props(want, 10);
    /* Nothing is checked here: librdkafka and the processor's own list judge names
     * and values when the clients are made. */
    cr_assert_str_eq(cfg.bootstrap_servers, "b");

    LOAD_FAILS("-X: expected a librdkafka property name=value", PROCESSOR_CMD_RUN, "run",
               "--bootstrap-servers", "b", "--state-dir", "d", "-X", "novalue");
    LOAD_FAILS("-X: expected a librdkafka property name=value", PROCESSOR_CMD_RUN, "run",
               "--bootstrap-servers", "b", "--state-dir", "d", "-X=v");
    LOAD_FAILS("-X: expected a librdkafka property name=value", PROCESSOR_CMD_SEND,
               "send", "--bootstrap-servers", "b", "{}", "-X");
}

Test(processor_options, kafka_properties_come_from_the_file_then_environment_then_x)
{
    const char *file = config_file("kafka.client.id=from-file\n"
                                   "bootstrap-servers=b\n"
                                   "state-dir=d\n");
    setenv("FLUSHOUT_KAFKA_SOCKET_TIMEOUT_MS", "123", 1);
    LOAD_OK(PROCESSOR_CMD_RUN, "run", "-X", "client.id=from-x", "--config", (char *)file);
    /* Applied in this order, so the command line's wins. */
    const char *want[] = {"client.id", "from-file", "socket.timeout.ms",
                          "123",       "client.id", "from-x"};
    assert_props(want, 6);
    cr_assert_str_eq(cfg.bootstrap_servers, "b");
}

Test(processor_options, commands_without_kafka_take_no_kafka_properties)
{
    setenv("FLUSHOUT_KAFKA_CLIENT_ID", "ignored", 1);
    LOAD_OK(PROCESSOR_CMD_APPLY, "apply", "--state-dir", "d");
    cr_assert_eq(cfg.kafka_prop_count, 0);
    const char *file = config_file("state-dir=d\nkafka.client.id=x\n");
    LOAD_FAILS(":2: expected key=value with a known key", PROCESSOR_CMD_INSPECT,
               "inspect", "--config", (char *)file);
}

Test(processor_options, send_takes_one_request_and_topics_one_action)
{
    LOAD_OK(PROCESSOR_CMD_SEND, "send", "--bootstrap-servers", "b", "--client", "c",
            "{\"type\":\"snapshot\"}", "--model", "m");
    cr_assert_str_eq(cfg.request, "{\"type\":\"snapshot\"}");
    cr_assert_str_eq(cfg.client, "c");
    cr_assert_str_eq(cfg.model, "m");
    LOAD_OK(PROCESSOR_CMD_SEND, "send", "--bootstrap-servers", "b", "-");
    cr_assert_str_eq(cfg.request, "-", "stdin");
    LOAD_FAILS("unexpected argument \"two\"", PROCESSOR_CMD_SEND, "send",
               "--bootstrap-servers", "b", "one", "two");

    LOAD_OK(PROCESSOR_CMD_TOPICS, "topics", "--bootstrap-servers", "b", "create");
    cr_assert_str_eq(cfg.action, "create");
    LOAD_FAILS("expected create or describe, not \"drop\"", PROCESSOR_CMD_TOPICS,
               "topics", "drop", "--bootstrap-servers", "b");
    LOAD_FAILS("unexpected argument \"describe\"", PROCESSOR_CMD_TOPICS, "topics",
               "create", "describe", "--bootstrap-servers", "b");
    /* Other commands take no word at all. */
    LOAD_FAILS("unexpected argument \"create\"", PROCESSOR_CMD_DEV, "dev", "create");
}

/* The usage printed for command, as one string (caller frees). */
static char *usage_of(unsigned command)
{
    char *text = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&text, &size);
    processor_options_usage(fp, command);
    fclose(fp);
    return text;
}

/* The line of usage that names an option (indented by 2, its help by 6) and starts
 * with prefix, or NULL. */
static const char *option_line(const char *text, const char *prefix)
{
    for (const char *l = text; *l;) {
        if (!strncmp(l, "  ", 2) && !strncmp(l + 2, prefix, strlen(prefix)))
            return l;
        size_t len = strcspn(l, "\n");
        l += len + (l[len] == '\n');
    }
    return NULL;
}

/* Whether an option called name (names may repeat, one per command) is command's. */
static bool command_has(unsigned command, const char *name)
{
    for (size_t i = 0; i < processor_options_count; i++)
        if ((processor_options[i].commands & command) &&
            !strcmp(processor_options[i].name, name))
            return true;
    return false;
}

Test(processor_options, usage_lists_each_option_of_the_command_with_its_form)
{
    char *apply = usage_of(PROCESSOR_CMD_APPLY);
    cr_assert_not_null(option_line(apply, "--config FILE\n"), "%s", apply);
    cr_assert_not_null(option_line(apply, "--state-dir VALUE (required)\n"));
    cr_assert_not_null(option_line(apply, "--ids hash|sequential\n"));
    cr_assert_not_null(option_line(apply, "--history N\n"));
    cr_assert_not_null(option_line(apply, "--fsync[=true|false]\n"));
    cr_assert_null(option_line(apply, "-X"), "apply talks to no Kafka");
    cr_assert_null(option_line(apply, "--bootstrap-servers"));
    /* The default follows the help of its option, before the next option. */
    const char *history = option_line(apply, "--history N\n");
    const char *next = option_line(strchr(history, '\n') + 1, "--");
    const char *deflt = strstr(history, "\n      Default: 1000.\n");
    cr_assert(deflt && (!next || deflt < next), "history's default");
    /* Help is wrapped to 80 columns, indented by 6. */
    for (const char *l = apply; *l;) {
        size_t len = strcspn(l, "\n");
        if (!strncmp(l, "      ", 6))
            cr_assert_leq(len, 80, "%.*s", (int)len, l);
        l += len + (l[len] == '\n');
    }
    free(apply);

    /* Every option the table gives a command is in its usage, and only those. */
    unsigned commands[] = {PROCESSOR_CMD_APPLY,  PROCESSOR_CMD_INSPECT,
                           PROCESSOR_CMD_RUN,    PROCESSOR_CMD_DEV,
                           PROCESSOR_CMD_SEND,   PROCESSOR_CMD_REBUILD,
                           PROCESSOR_CMD_TOPICS, PROCESSOR_CMD_REPARTITION};
    for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
        char *text = usage_of(commands[c]);
        for (size_t i = 0; i < processor_options_count; i++) {
            const char *name = processor_options[i].name;
            char spaced[80], flag[80];
            snprintf(spaced, sizeof(spaced), "--%s ", name);
            snprintf(flag, sizeof(flag), "--%s[", name);
            bool listed = option_line(text, spaced) || option_line(text, flag);
            cr_assert_eq(listed, command_has(commands[c], name), "--%s for command %#x",
                         name, commands[c]);
        }
        free(text);
    }

    char *run = usage_of(PROCESSOR_CMD_RUN);
    cr_assert_not_null(option_line(run, "-X NAME=VALUE\n"));
    cr_assert_not_null(option_line(run, "--bootstrap-servers VALUE (required)\n"));
    cr_assert_not_null(option_line(run, "--log-level error|warn|info|debug\n"));
    free(run);
}

/* Loads with stdout sent to a file; @returns what the load returned, and the output
 * in *text (caller frees). */
static int load_capturing(unsigned command, const char *name, char **argv, char **text)
{
    char path[] = "/tmp/flushout-test-help-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    dup2(fd, STDOUT_FILENO);
    int rc = load_argv(command, name, argv);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    *text = calloc(1, (size_t)size + 1);
    cr_assert_eq(pread(fd, *text, (size_t)size, 0), size);
    close(fd);
    unlink(path);
    return rc;
}

Test(processor_options, help_prints_the_usage_and_returns_1)
{
    char *text;
    cr_assert_eq(
        load_capturing(PROCESSOR_CMD_APPLY, "apply", (char *[]){"--help", NULL}, &text),
        1);
    const char *usage = "Usage: flushout-processor apply [options]\n";
    cr_assert(!strncmp(text, usage, strlen(usage)), "%s", text);
    char *options = usage_of(PROCESSOR_CMD_APPLY);
    cr_assert(strstr(text, options), "the usage follows the summary");
    free(options);
    free(text);
    /* -h too, without the required options; send's usage names its argument. */
    cr_assert_eq(
        load_capturing(PROCESSOR_CMD_SEND, "send", (char *[]){"-h", NULL}, &text), 1);
    usage = "Usage: flushout-processor send [options] REQUEST_JSON|-\n";
    cr_assert(!strncmp(text, usage, strlen(usage)), "%s", text);
    free(text);
    cr_assert_eq(load_capturing(PROCESSOR_CMD_TOPICS, "topics",
                                (char *[]){"--bootstrap-servers", "b", "--help", NULL},
                                &text),
                 1);
    usage = "Usage: flushout-processor topics create|describe [options]\n";
    cr_assert(!strncmp(text, usage, strlen(usage)), "%s", text);
    free(text);
}

Test(processor_options, clear_frees_everything_and_leaves_the_config_empty)
{
    LOAD_OK(PROCESSOR_CMD_SEND, "send", "--bootstrap-servers", "b", "--client", "c",
            "--model", "m", "-X", "a=1", "{}");
    processor_config_clear(&cfg);
    processor_config_t zero;
    memset(&zero, 0, sizeof(zero));
    cr_assert(!memcmp(&cfg, &zero, sizeof(cfg)), "cleared");
    /* Clearing twice is harmless, and the config can be loaded again. */
    processor_config_clear(&cfg);
    LOAD_OK(PROCESSOR_CMD_TOPICS, "topics", "describe", "--bootstrap-servers", "b2");
    cr_assert_str_eq(cfg.bootstrap_servers, "b2");
    cr_assert_null(cfg.client);
}

/* Checkpoints are copies of a changelog store's flush points: refused with --fsync
 * (no flush points) in run, and with rebuild --from flushes (which starts nowhere
 * else than the flushes' start); rebuild --from changes takes them. */
Test(processor_options, checkpoints_only_where_they_mean_something)
{
    LOAD_FAILS("--fsync", PROCESSOR_CMD_RUN, "run", "--bootstrap-servers", "b",
               "--state-dir", "d", "--checkpoint-dir", "c", "--fsync");
    LOAD_OK(PROCESSOR_CMD_RUN, "run", "--bootstrap-servers", "b", "--state-dir", "d",
            "--checkpoint-dir", "c");
    cr_assert_str_eq(cfg.checkpoint_dir, "c");
    LOAD_FAILS("--from flushes", PROCESSOR_CMD_REBUILD, "rebuild", "--bootstrap-servers",
               "b", "--state-dir", "d", "--from", "flushes", "--checkpoint-dir", "c");
    LOAD_OK(PROCESSOR_CMD_REBUILD, "rebuild", "--bootstrap-servers", "b", "--state-dir",
            "d", "--from", "changes", "--checkpoint-dir", "c");
    LOAD_FAILS("unknown option --checkpoint-dir", PROCESSOR_CMD_APPLY, "apply",
               "--state-dir", "d", "--checkpoint-dir", "c");
}
