/* processor/cmd_repartition.c - `flushout-processor repartition` (being written). */
#include "cmd_repartition.h"

#include "log.h"

int processor_cmd_repartition(const processor_config_t *cfg)
{
    (void)cfg;
    LOG_ERROR("repartition: not implemented yet");
    return 1;
}
