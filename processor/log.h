/* processor/log.h - one line per event on stderr: UTC time, level, message.
 *
 * Errors about a record name its partition and offset (and model, when known), so
 * that an operator can find the record with kcat. */
#ifndef FLUSHOUT_PROCESSOR_LOG_H
#define FLUSHOUT_PROCESSOR_LOG_H

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

#define LOG_ERROR(...) processor_log(PROCESSOR_LOG_ERROR, __VA_ARGS__)
#define LOG_WARN(...)  processor_log(PROCESSOR_LOG_WARN, __VA_ARGS__)
#define LOG_INFO(...)  processor_log(PROCESSOR_LOG_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) processor_log(PROCESSOR_LOG_DEBUG, __VA_ARGS__)

#endif
