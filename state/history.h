/* state/history.h - where the master gets command history for partial syncs.
 *
 * Flushout's HistoryProvider: history(from, to) returns the applied completions of
 * commands [from, to), or nothing when they are not kept, in which case the master
 * answers with a full snapshot. Implementations: state/history_mem.c (in memory);
 * the RocksDB store provides another. */
#ifndef FLUSHOUT_STATE_HISTORY_H
#define FLUSHOUT_STATE_HISTORY_H

#include <stdint.h>

#include "codec/reply.h"

typedef struct state_history_s {
    /** Appends the encoded completions of commands [from, to) to out, one item each.
     *  @returns 0, or -1 without touching out when [from, to) is not all kept. */
    int (*range)(void *opaque, uint64_t from, uint64_t to, codec_packed_t *out);
    void *opaque;
} state_history_t;

#endif
