/* state/history_mem.c - one model's command history in memory, last N commands.
 *
 * The encoded completions sit back to back in one ring of bytes, and a second ring
 * holds where each starts, so appending is a copy (no malloc per command) and a
 * range for a partial sync is read sequentially. Positions are absolute byte
 * offsets since the history began; offset o lives at bytes[o % byte_cap]. */
#include "history_mem.h"

#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"

struct state_history_mem_s {
    uint64_t retain;
    uint64_t base; /* command count of the oldest kept entry */
    uint64_t end;  /* command count after the newest entry */

    uint64_t
        *starts; /* ring: where entry `count` starts, at (count - base + head) % cap */
    uint64_t cap, head;

    char *bytes; /* ring of the entries' bytes */
    uint64_t byte_cap;
    uint64_t byte_end; /* absolute offset after the newest entry */
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
    free(h->starts);
    free(h->bytes);
    free(h);
}

static uint64_t *start_of(state_history_mem_t *h, uint64_t count)
{
    return &h->starts[(count - h->base + h->head) % h->cap];
}

/* Absolute offset where the oldest kept entry starts. */
static uint64_t byte_begin(state_history_mem_t *h)
{
    return h->end > h->base ? *start_of(h, h->base) : h->byte_end;
}

/* Copies len ring bytes from absolute offset `from` out to dst. */
static void ring_read(const state_history_mem_t *h, uint64_t from, size_t len, char *dst)
{
    size_t at = (size_t)(from % h->byte_cap);
    size_t first = len < h->byte_cap - at ? len : (size_t)(h->byte_cap - at);
    memcpy(dst, h->bytes + at, first);
    memcpy(dst + first, h->bytes, len - first);
}

static void ring_write(state_history_mem_t *h, uint64_t at_abs, const char *src,
                       size_t len)
{
    size_t at = (size_t)(at_abs % h->byte_cap);
    size_t first = len < h->byte_cap - at ? len : (size_t)(h->byte_cap - at);
    memcpy(h->bytes + at, src, first);
    memcpy(h->bytes, src + first, len - first);
}

static void grow_bytes(state_history_mem_t *h, uint64_t need)
{
    uint64_t begin = byte_begin(h), used = h->byte_end - begin;
    /* Small to start (most models are small), doubling after. */
    uint64_t cap = h->byte_cap ? h->byte_cap * 2 : 128;
    while (cap < used + need)
        cap *= 2;
    /* Straight from the old ring into the new one: both are indexed by absolute
     * offset, so the kept bytes land where the new capacity puts them. */
    char *bytes = codec_xmalloc(cap);
    if (used) {
        size_t to = (size_t)(begin % cap);
        size_t first = used < cap - to ? (size_t)used : (size_t)(cap - to);
        ring_read(h, begin, first, bytes + to);
        ring_read(h, begin + first, (size_t)used - first, bytes);
    }
    free(h->bytes);
    h->bytes = bytes;
    h->byte_cap = cap;
}

static void push(state_history_mem_t *h, const char *bytes, size_t len)
{
    if (h->end - h->base == h->retain) { /* full: drop the oldest */
        h->head = (h->head + 1) % h->cap;
        h->base++;
    } else if (h->end - h->base == h->cap) { /* grow the starts ring, unrolling it */
        uint64_t cap = h->cap ? h->cap * 2 : 4;
        if (cap > h->retain)
            cap = h->retain;
        uint64_t *starts = codec_xmalloc(cap * sizeof(*starts));
        for (uint64_t c = h->base; c < h->end; c++)
            starts[c - h->base] = *start_of(h, c);
        free(h->starts);
        h->starts = starts;
        h->cap = cap;
        h->head = 0;
    }
    if (h->byte_end - byte_begin(h) + len > h->byte_cap)
        grow_bytes(h, len);
    h->end++;
    *start_of(h, h->end - 1) = h->byte_end;
    ring_write(h, h->byte_end, bytes, len);
    h->byte_end += len;
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
    if (from == to)
        return 0;
    uint64_t begin = *start_of(h, from);
    uint64_t stop = to < h->end
                        ? *start_of(h, to)
                        : h->byte_end; /* The whole range at once (two pieces where the
                                        * ring wraps), then where each item ends. */
    size_t base = out->buf.size, len = (size_t)(stop - begin);
    size_t at = (size_t)(begin % h->byte_cap);
    size_t first = len < h->byte_cap - at ? len : (size_t)(h->byte_cap - at);
    codec_packed_write(out, h->bytes + at, first);
    codec_packed_write(out, h->bytes, len - first);
    for (uint64_t c = from; c < to; c++) {
        uint64_t item_end = c + 1 < h->end ? *start_of(h, c + 1) : h->byte_end;
        codec_packed_mark_item(out, base + (size_t)(item_end - begin));
    }
    return 0;
}

size_t state_history_mem_size(const state_history_mem_t *h)
{
    return sizeof(*h) + (size_t)h->cap * sizeof(*h->starts) + (size_t)h->byte_cap;
}

state_history_t state_history_mem_provider(state_history_mem_t *h)
{
    return (state_history_t){range, h};
}
