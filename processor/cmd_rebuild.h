/* processor/cmd_rebuild.h - `flushout-processor rebuild`: rebuilds a state directory
 * offline from the changes topic or the flushes topic. */
#ifndef FLUSHOUT_PROCESSOR_CMD_REBUILD_H
#define FLUSHOUT_PROCESSOR_CMD_REBUILD_H

#include "options.h"

/** Rebuilds cfg->state_dir/partition-N for each partition (cfg->partition_list, or all
 *  of the flushes topic) from cfg->from. Refuses a partition whose store exists.
 *  @returns the process exit code. */
int processor_cmd_rebuild(const processor_config_t *cfg);

/** Rebuilds every partition of cfg->flushes_topic into cfg->state_dir as `rebuild
 *  --from changes` does: each partition caught up as a new owner catches up
 *  (catch_up.h): the change records from the start of the changes topic; where they
 *  do not reach back (retention, a gap), the snapshots ahead installed from the
 *  snapshots topic and the changes read again; then the snapshots ahead of what the
 *  changes gave (models in the snapshots topic alone). What `repartition` starts from,
 *  and what survives the changes topic's retention. @returns 0, or 1 (logged). */
int processor_rebuild_with_snapshots(const processor_config_t *cfg);

#endif
