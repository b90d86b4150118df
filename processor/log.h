/* processor/log.h - one line per event on stderr: UTC time, level, message.
 *
 * Errors about a record name its partition and offset (and model, when known), so
 * that an operator can find the record with kcat. */
#ifndef FLUSHOUT_PROCESSOR_LOG_H
#define FLUSHOUT_PROCESSOR_LOG_H

#include <stddef.h>

#include "codec/print.h" /* MODEL_FMT, MODEL_ARG for the ids in messages */

typedef enum processor_log_level_e {
    PROCESSOR_LOG_ERROR,
    PROCESSOR_LOG_WARN,
    PROCESSOR_LOG_INFO,
    PROCESSOR_LOG_DEBUG,
} processor_log_level_t;

/** Lines above this level are not written (default INFO). */
extern processor_log_level_t processor_log_threshold;

/** @locality any thread: each line is written with one call. */
void processor_log(processor_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Copies in[0..len) to out (NUL-terminated, at most size - 1 bytes, cut at a whole
 *  character) with C0/C1 controls, DEL, bidirectional overrides and bytes that are not
 *  valid UTF-8 written as \xNN, and a backslash as \\. processor_log() applies it to
 *  every line. @returns the length written. */
size_t processor_log_escape(char *out, size_t size, const char *in, size_t len);

#define LOG_ERROR(...) processor_log(PROCESSOR_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...)  processor_log(PROCESSOR_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...)  processor_log(PROCESSOR_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) processor_log(PROCESSOR_LOG_DEBUG, __VA_ARGS__)

#endif
