/* processor/cmd_rebuild.h - `flushout-processor rebuild`: rebuilds a state directory
 * offline from the changes topic or the flushes topic. */
#ifndef FLUSHOUT_PROCESSOR_CMD_REBUILD_H
#define FLUSHOUT_PROCESSOR_CMD_REBUILD_H

#include "options.h"

/** Rebuilds cfg->state_dir/partition-N for each partition (cfg->partition_list, or all
 *  of the flushes topic) from cfg->from. Refuses a partition whose store exists.
 *  @returns the process exit code. */
int processor_cmd_rebuild(const processor_config_t *cfg);

#endif
