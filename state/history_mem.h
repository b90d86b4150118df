/* state/history_mem.h - one model's command history in memory, last N commands. */
#ifndef FLUSHOUT_STATE_HISTORY_MEM_H
#define FLUSHOUT_STATE_HISTORY_MEM_H

#include "history.h"

typedef struct state_history_mem_s state_history_mem_t;

/** A history that keeps the last `retain` commands, starting empty at command count
 *  `count` (the model's count when it was loaded). */
state_history_mem_t *state_history_mem_new(uint64_t retain, uint64_t count);
void state_history_mem_destroy(state_history_mem_t *h);

/** Appends the applied completions of commands [from, from + list->count).
 *  @returns 0, or -1 when from is not where the history ends. */
int state_history_mem_append(state_history_mem_t *h, uint64_t from,
                             const codec_packed_t *list);

/** Bytes of memory h holds (for cache accounting). */
size_t state_history_mem_size(const state_history_mem_t *h);

/** The provider interface over h. */
state_history_t state_history_mem_provider(state_history_mem_t *h);

#endif
