/* state/path_mapper.h - Flushout's PathMapper: paths renamed by ID collisions.
 *
 * When a created ID collides on the master, the command's path plus the proposed ID
 * is mapped to the path plus the ID actually used; later commands of the same flush
 * whose paths start with a mapped path are rewritten. Keys are paths joined with ','
 * exactly as JavaScript's Array.prototype.toString joins them (so ["a,b"] and
 * ["a","b"] share a key, as they do in flushout), and a lookup caches its result
 * under the full path, which shows in the mappedPaths sent to clients. */
#ifndef FLUSHOUT_STATE_PATH_MAPPER_H
#define FLUSHOUT_STATE_PATH_MAPPER_H

#include "codec/value.h"

typedef struct state_path_mapper_s {
    codec_value_t *mappings; /* map: joined path -> array of strings */
} state_path_mapper_t;

void state_path_mapper_init(state_path_mapper_t *pm);
void state_path_mapper_clear(state_path_mapper_t *pm);

/** Longest-prefix lookup of path (an array of strings).
 *  @returns the mapped path (caller owns it) or NULL when no prefix is mapped. */
codec_value_t *state_path_mapper_get(state_path_mapper_t *pm, const codec_value_t *path);

/** Maps path to mapped_path. Takes ownership of mapped_path; path is only read. */
void state_path_mapper_put(state_path_mapper_t *pm, const codec_value_t *path,
                           codec_value_t *mapped_path);

#endif
