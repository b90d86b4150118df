/* processor/cmd_apply.h - `flushout-processor apply`: NDJSON requests in, replies out. */
#ifndef FLUSHOUT_PROCESSOR_CMD_APPLY_H
#define FLUSHOUT_PROCESSOR_CMD_APPLY_H

#include <stdio.h>

#include "codec/error.h"
#include "options.h"
#include "state/store.h"

/** mkdir -p. @returns 0, or -1 and errstr. */
int processor_make_dirs(const char *path, char *errstr, size_t errstr_size);

/* Settings every command that applies flushes builds from the options. */
codec_limits_t processor_limits(const processor_config_t *cfg);
state_master_conf_t processor_master_conf(const processor_config_t *cfg);
state_store_conf_t processor_store_conf(const processor_config_t *cfg, const char *dir,
                                        size_t cache_bytes,
                                        const codec_value_t *initial_document);
/** The options that change what a flush produces (the ids, the history, the limits,
 *  the partitioner, the initial document's hash, ...) as a canonical
 *  "name=value;name=value" string, recorded with each partition's state so that
 *  instances configured differently do not silently diverge. Caller frees. */
char *processor_settings(const processor_config_t *cfg,
                         const codec_value_t *initial_document);
/** Writes to out the settings that differ between recorded and now, as
 *  "--name recorded, now value; ..." (at most out_size bytes). @returns how many differ.
 */
int processor_settings_diff(const char *recorded, const char *now, char *out,
                            size_t out_size);

/** The JSON object in path (--initial-document), or NULL and errstr. */
codec_value_t *processor_read_document(const char *path, const codec_limits_t *limits,
                                       char *errstr, size_t errstr_size);

/** Writes v as one line of JSON. */
void processor_print_json(FILE *out, const codec_value_t *v);

/** Reads NDJSON requests from in, writes one NDJSON reply per request to out.
 *  @returns the process exit code. */
int processor_cmd_apply(const processor_config_t *cfg, FILE *in, FILE *out);

#endif
