/* processor/commands.h - the one table of commands behind main's dispatch and --help.
 *
 * A command is named once, here: main finds it by name, runs it and lists it in
 * `flushout-processor --help`; processor_config_load() prints its usage line and summary
 * for `COMMAND --help`. Options name the commands they apply to by PROCESSOR_CMD_* flag
 * (options.h). */
#ifndef FLUSHOUT_PROCESSOR_COMMANDS_H
#define FLUSHOUT_PROCESSOR_COMMANDS_H

#include <stddef.h>
#include <stdio.h>

#include "options.h"

typedef struct processor_command_s {
    const char *name;
    unsigned flag; /* PROCESSOR_CMD_*: the options it takes */
    /** Runs the command with cfg loaded for it. @returns the process exit code. */
    int (*main)(processor_config_t *cfg, FILE *in, FILE *out);
    const char *args;    /* what follows the name in its usage line */
    const char *brief;   /* the line in the command list (`--help`) */
    const char *summary; /* what it does, atop its own --help */
} processor_command_t;

/* In the order `--help` lists them. */
extern const processor_command_t processor_commands[];
extern const size_t processor_commands_count;

/** The command called name, or NULL. */
const processor_command_t *processor_command_find(const char *name);
/** The command whose flag is flag (one PROCESSOR_CMD_* bit), or NULL. */
const processor_command_t *processor_command_of(unsigned flag);

/** Prints the command list: each name and its brief, word-wrapped. */
void processor_commands_usage(FILE *fp);

/** Prints text word-wrapped to width columns, each line indented by indent; the first
 *  line goes on at column col (what the caller printed before it) when col < indent. */
void processor_print_wrapped(FILE *fp, const char *text, int indent, int col, int width);

#endif
