/* state/history_mem.c - one model's command history in memory, last N commands.
 *
 * A ring of encoded completions: entry for command c sits at (c - base + head) % cap. */
#include "history_mem.h"

#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"

typedef struct entry_s {
    char *bytes;
    size_t len;
} entry_t;

struct state_history_mem_s {
    uint64_t retain;
    uint64_t base; /* command count of the oldest kept entry */
    uint64_t end;  /* command count after the newest entry */
    entry_t *ring;
    uint64_t cap, head;
};

state_history_mem_t *state_history_mem_new(uint64_t retain, uint64_t count)
{
    state_history_mem_t *h = codec_xcalloc(1, sizeof(*h));
    h->retain = retain;
    h->base = h->end = count;
    return h;
}

void state_history_mem_destroy(state_history_mem_t *h)
{
    if (!h)
        return;
    for (uint64_t c = h->base; c < h->end; c++)
        free(h->ring[(c - h->base + h->head) % h->cap].bytes);
    free(h->ring);
    free(h);
}

static entry_t *slot(state_history_mem_t *h, uint64_t count)
{
    return &h->ring[(count - h->base + h->head) % h->cap];
}

static void push(state_history_mem_t *h, const char *bytes, size_t len)
{
    if (h->end - h->base == h->retain) { /* full: drop the oldest */
        free(slot(h, h->base)->bytes);
        h->head = (h->head + 1) % h->cap;
        h->base++;
    } else if (h->end - h->base == h->cap) { /* grow, unrolling the ring */
        uint64_t cap = h->cap ? h->cap * 2 : 16;
        if (cap > h->retain)
            cap = h->retain;
        entry_t *ring = codec_xmalloc(cap * sizeof(*ring));
        for (uint64_t c = h->base; c < h->end; c++)
            ring[c - h->base] = *slot(h, c);
        free(h->ring);
        h->ring = ring;
        h->cap = cap;
        h->head = 0;
    }
    entry_t *e = &h->ring[(h->end - h->base + h->head) % h->cap];
    e->bytes = codec_xmemdup(bytes, len);
    e->len = len;
    h->end++;
}

int state_history_mem_append(state_history_mem_t *h, uint64_t from,
                             const codec_packed_t *list)
{
    if (from != h->end)
        return -1;
    for (uint32_t i = 0; i < list->count; i++) {
        size_t len;
        const char *bytes = codec_packed_item(list, i, &len);
        if (h->retain == 0) {
            h->base = h->end = h->end + 1;
            continue;
        }
        push(h, bytes, len);
    }
    return 0;
}

static int range(void *opaque, uint64_t from, uint64_t to, codec_packed_t *out)
{
    state_history_mem_t *h = opaque;
    if (from > to || from < h->base || to > h->end)
        return -1;
    for (uint64_t c = from; c < to; c++) {
        entry_t *e = slot(h, c);
        codec_packed_add_raw(out, e->bytes, e->len);
    }
    return 0;
}

state_history_t state_history_mem_provider(state_history_mem_t *h)
{
    return (state_history_t){range, h};
}
