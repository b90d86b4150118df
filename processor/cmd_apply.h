/* processor/cmd_apply.h - `flushout-processor apply`: NDJSON requests in, replies out. */
#ifndef FLUSHOUT_PROCESSOR_CMD_APPLY_H
#define FLUSHOUT_PROCESSOR_CMD_APPLY_H

#include <stdio.h>

#include "codec/value.h"
#include "options.h"

/** Writes v as one line of JSON. */
void processor_print_json(FILE *out, const codec_value_t *v);

/** Reads NDJSON requests from in, writes one NDJSON reply per request to out.
 *  @returns the process exit code. */
int processor_cmd_apply(const processor_config_t *cfg, FILE *in, FILE *out);

#endif
