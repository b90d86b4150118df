/* tests/fuzz/reply_check.h - checks shared by the fuzz targets. */
#ifndef FLUSHOUT_TESTS_FUZZ_REPLY_CHECK_H
#define FLUSHOUT_TESTS_FUZZ_REPLY_CHECK_H

#include "processor/handler.h"

/** Aborts unless the reply decodes and is a map with a string "type". */
void fuzz_check_reply(const processor_output_t *out);

/* Both targets' initial document: nesting and sequential-looking IDs, so that paths
 * from the seed corpus find nodes and created IDs collide with existing keys. */
#define FUZZ_INITIAL_DOCUMENT                                                  \
    "{\"items\":{\"1\":{\"name\":\"a\",\"done\":false},\"2\":{\"items\":{}}}," \
    "\"meta\":{\"title\":\"t\"}}"

#endif
