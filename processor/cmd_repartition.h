/* processor/cmd_repartition.h - `flushout-processor repartition`. */
#ifndef FLUSHOUT_PROCESSOR_CMD_REPARTITION_H
#define FLUSHOUT_PROCESSOR_CMD_REPARTITION_H

#include "options.h"

/** Moves every model of the old layout's topics to the new layout's.
 *  @returns 0, or 1 (logged). */
int processor_cmd_repartition(const processor_config_t *cfg);

#endif
