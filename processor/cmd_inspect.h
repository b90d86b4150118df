/* processor/cmd_inspect.h - `flushout-processor inspect`: what a state store holds. */
#ifndef FLUSHOUT_PROCESSOR_CMD_INSPECT_H
#define FLUSHOUT_PROCESSOR_CMD_INSPECT_H

#include <stdio.h>

#include "options.h"

/** Lists the store in cfg->state_dir as JSON lines to out, or prints one model's
 *  snapshot (cfg->model) or history (cfg->history_of). @returns the exit code. */
int processor_cmd_inspect(const processor_config_t *cfg, FILE *out);

#endif
