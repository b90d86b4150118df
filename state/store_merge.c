/* state/store_merge.c - appending to history keys: joining msgpack arrays of
 * completions, for RocksDB's merge operator on history keys and for the step's batch,
 * which folds a key's appends of one step into one write.
 *
 * A flush that joins its model's last history key (store_flush.c) is written as a
 * RocksDB merge of its own completions, not as the key's whole value again: the bytes
 * of a flush are written once, whatever the key already holds, and the model keeps
 * only a count and a size of its last key. Reads (loading, time travel, inspect,
 * repartition) get the joined array from RocksDB, which merges the operands at
 * flushes, compactions and reads. */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"

/* The msgpack array head for items, at out (room for 5 bytes); its length. */
static size_t array_head(char *out, uint64_t items)
{
    if (items <= 15) {
        out[0] = (char)(0x90 | items);
        return 1;
    }
    if (items <= 0xffff) {
        out[0] = (char)0xdc;
        out[1] = (char)(items >> 8);
        out[2] = (char)items;
        return 3;
    }
    out[0] = (char)0xdd;
    for (int i = 0; i < 4; i++)
        out[1 + i] = (char)(items >> (24 - 8 * i));
    return 5;
}

/* Adds one part's items and bytes to the counts; false if it is not an array. */
static bool measure(const char *part, size_t len, uint64_t *items, size_t *bytes)
{
    store_items_t it;
    store_items_init(&it, part, len);
    *items += it.left;
    *bytes += len - it.at;
    return it.at != 0; /* a single completion (an old layout) takes no appends */
}

static size_t copy_items(char *out, const char *part, size_t len)
{
    store_items_t it;
    store_items_init(&it, part, len);
    memcpy(out, part + it.at, len - it.at);
    return len - it.at;
}

char *store_arrays_join(const char *first, size_t first_len, const char *const *parts,
                        const size_t *lens, size_t n, char *buf, size_t buf_cap,
                        size_t *out_len)
{
    uint64_t items = 0;
    size_t bytes = 0;
    if (first && !measure(first, first_len, &items, &bytes))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!measure(parts[i], lens[i], &items, &bytes))
            return NULL;
    if (items > UINT32_MAX)
        return NULL;
    size_t need = 5 + bytes;
    char *out = need <= buf_cap ? buf : malloc(need);
    if (!out)
        return NULL;
    size_t len = array_head(out, items);
    if (first)
        len += copy_items(out + len, first, first_len);
    for (size_t i = 0; i < n; i++)
        len += copy_items(out + len, parts[i], lens[i]);
    *out_len = len;
    return out;
}

/* RocksDB's side: the results are malloc'ed and freed by delete_value. */
static char *full_merge(void *state, const char *key, size_t key_len,
                        const char *existing, size_t existing_len,
                        const char *const *operands, const size_t *operand_lens,
                        int n_operands, unsigned char *success, size_t *out_len)
{
    (void)state, (void)key, (void)key_len;
    char *out = store_arrays_join(existing, existing_len, operands, operand_lens,
                                  (size_t)n_operands, NULL, 0, out_len);
    *success = out != NULL; /* RocksDB reports a failed merge as corruption */
    if (!out) { /* RocksDB's C wrapper copies the result before it looks at success */
        *out_len = 0;
        out = malloc(1);
    }
    return out;
}

static char *partial_merge(void *state, const char *key, size_t key_len,
                           const char *const *operands, const size_t *operand_lens,
                           int n_operands, unsigned char *success, size_t *out_len)
{
    return full_merge(state, key, key_len, NULL, 0, operands, operand_lens, n_operands,
                      success, out_len);
}

static void delete_value(void *state, const char *value, size_t value_len)
{
    (void)state, (void)value_len;
    free((void *)value);
}

static void no_state(void *state)
{
    (void)state; /* RocksDB calls a destructor whether or not there is state */
}

static const char *merge_name(void *state)
{
    (void)state;
    return "flushout.history_append";
}

rocksdb_mergeoperator_t *state_store_merge_operator_new(void)
{
    return rocksdb_mergeoperator_create(NULL, no_state, full_merge, partial_merge,
                                        delete_value, merge_name);
}
