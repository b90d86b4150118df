/* processor/options.c - options from defaults, --config, FLUSHOUT_* and the command line,
 * through the table in options_table.c; and the --help generated from it. */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "commands.h"

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

/* A command's --help: its usage line and summary (commands.c), then its options. */
static void print_help(unsigned command, const char *command_name)
{
    const processor_command_t *c = processor_command_of(command);
    printf("Usage: flushout-processor %s %s\n\n", command_name,
           c ? c->args : "[options]");
    if (c)
        processor_print_wrapped(stdout, c->summary, 6, 0, 80);
    printf("\n");
    processor_options_usage(stdout, command);
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
            print_help(command, command_name);
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

    /* An --fsync store logs every commit and has no flush points to copy. */
    if (cfg->checkpoint_dir && cfg->fsync && command != PROCESSOR_CMD_REBUILD) {
        snprintf(errstr, errstr_size,
                 "--checkpoint-dir keeps copies of the changelog stores' flush points, "
                 "which --fsync stores do not have; use one or the other");
        return -1;
    }
    if (cfg->checkpoint_dir && command == PROCESSOR_CMD_REBUILD && cfg->from &&
        strcmp(cfg->from, "changes") != 0) {
        snprintf(errstr, errstr_size,
                 "--checkpoint-dir is where rebuild --from changes starts from; --from "
                 "%s replays the flushes from their start",
                 cfg->from);
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
