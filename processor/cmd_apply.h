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
/* The Kafka headers that carry the settings on every change and snapshot record, so
 * that a partition's next owner (or `rebuild`) refuses records written under others:
 * the identity, on both (16 hex digits: processor_settings_id()), and the whole string,
 * on snapshot records only (rarer; a refusal can then name the differing settings). */
#define PROCESSOR_SETTINGS_HEADER      "flushout_settings"
#define PROCESSOR_SETTINGS_TEXT_HEADER "flushout_settings_text"
#define PROCESSOR_SETTINGS_ID_LEN      16

/** Writes the identity of settings (xxh64 of the string, as 16 lowercase hex digits
 *  and a NUL) to id. */
void processor_settings_id(const char *settings, char id[PROCESSOR_SETTINGS_ID_LEN + 1]);
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
