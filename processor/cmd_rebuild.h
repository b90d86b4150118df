/* processor/cmd_rebuild.h - `flushout-processor rebuild`: rebuilds a state directory
 * offline from the changes topic or the flushes topic. */
#ifndef FLUSHOUT_PROCESSOR_CMD_REBUILD_H
#define FLUSHOUT_PROCESSOR_CMD_REBUILD_H

#include "options.h"

/** Rebuilds cfg->state_dir/partition-N for each partition (cfg->partition_list, or all
 *  of the flushes topic) from cfg->from. Refuses a partition whose store exists.
 *  @returns the process exit code. */
int processor_cmd_rebuild(const processor_config_t *cfg);

/** Rebuilds every partition of cfg->flushes_topic into cfg->state_dir from the
 *  snapshots topic (each model's latest snapshot record installed) and then the changes
 *  topic (the records after each snapshot applied): what `repartition` starts from, and
 *  what survives the changes topic's retention. @returns 0, or 1 (logged). */
int processor_rebuild_with_snapshots(const processor_config_t *cfg);

#endif
