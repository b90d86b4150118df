/* processor/cmd_apply.h - `flushout-processor apply`: NDJSON requests in, replies out. */
#ifndef FLUSHOUT_PROCESSOR_CMD_APPLY_H
#define FLUSHOUT_PROCESSOR_CMD_APPLY_H

#include <stdio.h>

#include "options.h"

/** mkdir -p. @returns 0, or -1 and errstr. */
int processor_make_dirs(const char *path, char *errstr, size_t errstr_size);

/** Reads NDJSON requests from in, writes one NDJSON reply per request to out.
 *  @returns the process exit code. */
int processor_cmd_apply(const processor_config_t *cfg, FILE *in, FILE *out);

#endif
