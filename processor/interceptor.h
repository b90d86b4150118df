/* processor/interceptor.h - users' interceptors: Lua 5.4 scripts with flushout's
 * Interceptor semantics, sandboxed, deterministic and bounded.
 *
 * The script defines intercept(document, command, context, meta); the master calls
 * it for each command after path remapping and before applying it (state/master.h).
 * It returns nil (apply as sent), {newProps = {...}} or {rejection = "message"}.
 * What scripts see and may do is in processor/INTERCEPTORS.md.
 *
 * Threads: one Lua state per thread that calls, created on its first call and kept
 * until processor_interceptor_destroy(); no lock on the hot path. The script runs
 * fresh for every command (a new global table, its top level run again), so nothing
 * a call leaves behind can reach the next: outcomes cannot depend on which thread,
 * instance or replay ran before. */
#ifndef FLUSHOUT_PROCESSOR_INTERCEPTOR_H
#define FLUSHOUT_PROCESSOR_INTERCEPTOR_H

#include <stdint.h>

#include "codec/error.h"
#include "state/master.h"

/* How much larger than the props it replaces a newProps may be, packed: keeps every
 * size bound the handler computes from the request (document and change record). */
#define PROCESSOR_INTERCEPTOR_GROWTH_BYTES 4096

/* The sandbox's own memory (libraries, the loaded script) is under this; the rest of
 * --interceptor-max-memory-mb is for calls. */
#define PROCESSOR_INTERCEPTOR_MIN_MEMORY_MB 4

typedef struct processor_interceptor_conf_s {
    const char *path;          /* the script */
    uint64_t max_instructions; /* per command: Lua VM instructions, plus what the
                                * pattern functions are charged */
    uint64_t max_memory_bytes; /* per Lua state; a call may allocate a quarter */
    codec_limits_t limits;     /* what newProps must fit (depth, strings) */
} processor_interceptor_conf_t;

typedef struct processor_interceptor_s processor_interceptor_t;

/** Loads and checks the script (syntax, that it defines intercept) in a first Lua
 *  state. @returns the interceptor, or NULL and errstr (file and line). */
processor_interceptor_t *
processor_interceptor_load(const processor_interceptor_conf_t *conf, char *errstr,
                           size_t errstr_size);
/** Closes every thread's Lua state: call once no thread calls any more. */
void processor_interceptor_destroy(processor_interceptor_t *ic);

/** The script's SHA-256, 64 hex digits. */
const char *processor_interceptor_sha256(const processor_interceptor_t *ic);

/** Creates the calling thread's Lua state now (a worker at its start), so that the
 *  first command does not wait for it. Optional: a call creates it otherwise. */
void processor_interceptor_thread_start(processor_interceptor_t *ic);

/** The state_interceptor_fn: opaque is the processor_interceptor_t. A script that
 *  errors, runs out of its budget or returns what cannot be applied rejects the
 *  command (fail closed) with a message that says so, and is logged. */
void processor_interceptor_call(void *opaque, const codec_value_t *document,
                                const codec_command_t *command,
                                const state_intercept_meta_t *meta,
                                state_interception_t *out);

typedef struct processor_interceptor_stats_s {
    uint64_t calls;
    uint64_t new_props;  /* calls that returned newProps */
    uint64_t rejections; /* calls that returned a rejection */
    uint64_t errors;     /* script errors and malformed results */
    uint64_t over_instructions;
    uint64_t over_memory;
} processor_interceptor_stats_t;

void processor_interceptor_stats(const processor_interceptor_t *ic,
                                 processor_interceptor_stats_t *stats);

#endif
