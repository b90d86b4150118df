/* tests/fuzz/reply_check.h - checks shared by the fuzz targets. */
#ifndef FLUSHOUT_TESTS_FUZZ_REPLY_CHECK_H
#define FLUSHOUT_TESTS_FUZZ_REPLY_CHECK_H

#include "processor/handler.h"

/** Aborts unless the reply decodes and is a map with a string "type". */
void fuzz_check_reply(const processor_output_t *out);

#endif
