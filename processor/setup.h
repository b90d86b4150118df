/* processor/setup.h - the options turned into the libraries' configurations.
 *
 * Every command that applies flushes (apply, run, dev, rebuild, repartition) builds its
 * limits, master and store configuration, settings string and initial document here,
 * from the same options in the same way: two instances given the same options then
 * compute the same thing, and the engine does not depend on a command for it. */
#ifndef FLUSHOUT_PROCESSOR_SETUP_H
#define FLUSHOUT_PROCESSOR_SETUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/error.h"
#include "handler.h"
#include "options.h"
#include "state/store.h"

/** mkdir -p. @returns 0, or -1 and errstr. */
int processor_make_dirs(const char *path, char *errstr, size_t errstr_size);

/* The state directory holds one store per input partition, in PROCESSOR_PARTITION_DIR
 * followed by the partition number (state-dir/partition-3): run, rebuild and
 * repartition write that layout, and run checks it at startup. */
#define PROCESSOR_PARTITION_DIR "partition-"

/** Writes state_dir/partition-N to out (cut at out_size bytes, as snprintf does). */
void processor_partition_dir(char *out, size_t out_size, const char *state_dir,
                             int32_t partition);
/** Whether name (a directory entry of the state directory) is a partition store's
 *  directory, partition-N with N >= 0; then *partition = N. */
bool processor_partition_dir_parse(const char *name, int32_t *partition);

/* Records applied to a store per write while restoring or rebuilding a partition:
 * large enough that the write batches pay off, small enough that an interrupted
 * restore redoes little. */
#define PROCESSOR_RESTORE_COMMIT_EVERY 1000

/* Settings every command that applies flushes builds from the options. */
codec_limits_t processor_limits(const processor_config_t *cfg);
/* With cfg->interceptor_loaded, its master calls the interceptor. */
state_master_conf_t processor_master_conf(const processor_config_t *cfg);
/** Loads --interceptor (if set) into cfg->interceptor_loaded and logs its SHA-256.
 *  The caller destroys it (processor_interceptor_destroy()) after the command.
 *  @returns 0, or -1 and errstr (the file and line of what is wrong). */
int processor_interceptor_setup(processor_config_t *cfg, char *errstr,
                                size_t errstr_size);
/* The handler of a partition's flushes as the processor applies them (change records
 * packed, outputs bounded by message.max.bytes): `run` and `rebuild --from flushes`
 * must decide alike to build the same state. */
processor_handler_conf_t processor_partition_handler_conf(const processor_config_t *cfg,
                                                          state_store_t *store,
                                                          codec_limits_t limits);
/* The store of partition (0 for `apply`'s single store) in dir. */
state_store_conf_t processor_store_conf(const processor_config_t *cfg, const char *dir,
                                        int32_t partition, size_t cache_bytes,
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
/* The interceptor's SHA-256 ends the settings string when one is loaded. It is
 * recorded but not enforced: records and stores stay compatible across scripts
 * (change records hold commands as resolved), and a store that recorded another
 * script takes the new one, with a warning (processor/INTERCEPTORS.md). */
#define INTERCEPTOR_SETTING "interceptor="

/** Writes the identity of settings (xxh64 of the string, as 16 lowercase hex digits
 *  and a NUL) to id. */
void processor_settings_id(const char *settings, char id[PROCESSOR_SETTINGS_ID_LEN + 1]);
/** Writes to out the settings that differ between recorded and now, as
 *  "--name recorded, now value; ..." (at most out_size bytes). @returns how many differ.
 */
int processor_settings_diff(const char *recorded, const char *now, char *out,
                            size_t out_size);

/* A store of other settings than the processor's would answer differently. */
#define PROCESSOR_SETTINGS_HINT                                                        \
    "instances that process the same partitions must have the same settings, or they " \
    "would answer the same records differently: run with the settings the state was "  \
    "built with, or remove the partition directories to rebuild them from the topics " \
    "under the new settings (every instance of the group must then use them)"

/** Whether the store in dir was built for partition_count partitions of flushes_topic
 *  and under settings (what it has not recorded yet is not checked; the interceptor's
 *  hash never is); *count_recorded says whether it recorded a count, and *recorded
 *  gets its recorded settings (caller frees; NULL for none, or on a mismatch). Either
 *  may be NULL. @returns 0, or -1 and errstr. */
int processor_state_check(state_store_t *store, const char *dir,
                          const char *flushes_topic, int32_t partition_count,
                          const char *settings, bool *count_recorded, char **recorded,
                          char *errstr, size_t errstr_size);

/** The JSON object in path (--initial-document), or NULL and errstr. Caller destroys
 *  it. */
codec_value_t *processor_read_document(const char *path, const codec_limits_t *limits,
                                       char *errstr, size_t errstr_size);

#endif
