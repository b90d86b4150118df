/* state/store_batch.c - the step's writes: point writes kept in a buffer and handed to
 * RocksDB sorted by key at commit, range deletes, and history trims. */
#define _GNU_SOURCE /* qsort_r */
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "store_int.h"

static void op_bytes_add(state_store_t *s, const void *bytes, size_t len)
{
    if (!len)
        return;
    if (s->op_bytes_len + len > s->op_bytes_cap) {
        s->op_bytes_cap = (s->op_bytes_len + len) * 2;
        s->op_bytes = codec_xrealloc(s->op_bytes, s->op_bytes_cap);
    }
    memcpy(s->op_bytes + s->op_bytes_len, bytes, len);
    s->op_bytes_len += len;
}

/* Values of STORE_BLOB_MIN_BYTES and more (large documents' snapshots and past
 * snapshots) go to RocksDB's blob files at flush, so compactions move a reference, not
 * the document: with 10 MB documents, compacting them was most of the process's CPU.
 * Blob garbage collection relocates the live ones out of old blob files, which bounds
 * the space rewritten snapshots leave behind. Turned on at the first such value, not
 * at open: with small documents only, blob files cost 3-5% of the CPU per flush in
 * tests/bench/ab.sh and bring nothing. */
static void use_blob_files(state_store_t *s)
{
    static const char *const keys[] = {"enable_blob_files",
                                       "enable_blob_garbage_collection"};
    static const char *const values[] = {"true", "true"};
    char *err = NULL;
    rocksdb_set_options(s->db, 2, keys, values, &err);
    rocksdb_free(err); /* then large values stay inline, as before */
    s->blob_files = true;
}

/* value NULL: a delete. */
void store_batch_write(state_store_t *s, const char *key, size_t key_len,
                       const char *value, size_t value_len)
{
    if (value && value_len >= STORE_BLOB_MIN_BYTES && !s->blob_files)
        use_blob_files(s);
    if (s->ops_len == s->ops_cap)
        s->ops = codec_xrealloc(s->ops, (s->ops_cap = s->ops_cap ? s->ops_cap * 2 : 256) *
                                            sizeof(*s->ops));
    s->ops[s->ops_len] = (pending_op_t){s->op_bytes_len, (uint32_t)key_len,
                                        value ? (uint32_t)value_len : UINT32_MAX,
                                        STORE_NOT_APPENDED, s->ops_len};
    s->ops_len++;
    op_bytes_add(s, key, key_len);
    if (value)
        op_bytes_add(s, value, value_len);
}

void store_batch_append(state_store_t *s, const char *key, size_t key_len,
                        const char *array, size_t array_len, uint32_t appended_to)
{
    store_batch_write(s, key, key_len, array, array_len);
    s->ops[s->ops_len - 1].appended_to = appended_to;
}

static int by_key(const void *a, const void *b, void *op_bytes)
{
    const pending_op_t *x = a, *y = b;
    const char *sort_base = op_bytes;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(sort_base + x->at, sort_base + y->at, n);
    if (c)
        return c;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    return x->order < y->order ? -1 : 1;
}

void store_batch_pending(const state_store_t *s, const char *prefix, size_t prefix_len,
                         void (*visit)(void *opaque, const char *key, size_t key_len,
                                       const char *value, size_t value_len,
                                       uint32_t appended_to),
                         void *opaque)
{
    for (size_t i = 0; i < s->ops_len; i++) {
        const pending_op_t *op = &s->ops[i];
        const char *key = s->op_bytes + op->at;
        if (op->key_len < prefix_len || memcmp(key, prefix, prefix_len) != 0)
            continue;
        bool deleted = op->value_len == UINT32_MAX;
        visit(opaque, key, op->key_len, deleted ? NULL : key + op->key_len,
              deleted ? 0 : op->value_len,
              op->appended_to == STORE_NOT_APPENDED ? 0 : op->appended_to);
    }
}

/* Hands RocksDB one pending write as it was made: a delete, a put or an append. */
static void write_op(state_store_t *s, const pending_op_t *op)
{
    const char *key = s->op_bytes + op->at;
    if (op->value_len == UINT32_MAX)
        rocksdb_writebatch_delete(s->batch, key, op->key_len);
    else if (op->appended_to == STORE_NOT_APPENDED)
        rocksdb_writebatch_put(s->batch, key, op->key_len, key + op->key_len,
                               op->value_len);
    else
        rocksdb_writebatch_merge(s->batch, key, op->key_len, key + op->key_len,
                                 op->value_len);
}

/* Hands RocksDB the writes ops[from, to) to one key, in the order they were made, as
 * one write: the last put or delete overrides whatever came before it (a client's
 * record is rewritten by each of its flushes in a step, a snapshot by each rewrite),
 * and the appends after it join it (a model's flushes in a step that share a history
 * key), so the others never reach the memtable. */
static void batch_write_key(state_store_t *s, size_t from, size_t to)
{
    const pending_op_t *ops = s->ops;
    const char *key = s->op_bytes + ops[from].at;
    size_t key_len = ops[from].key_len;
    size_t base = to; /* the last put or delete, if any */
    for (size_t i = to; i-- > from;)
        if (ops[i].appended_to == STORE_NOT_APPENDED) {
            base = i;
            break;
        }
    if (base == to - 1 || (base == to && to - from == 1)) { /* one write stands */
        write_op(s, &ops[to - 1]);
        return;
    }
    /* Appends after a put (which they join), a delete (which they replace: an append
     * to nothing is what it appends) or nothing (one append of them all). */
    size_t first = base < to ? base : from;
    bool after_delete = base < to && ops[base].value_len == UINT32_MAX;
    if (after_delete)
        first++;
    size_t n = to - first;
    const char *stack_parts[32];
    size_t stack_lens[32];
    const char **parts = n <= 32 ? stack_parts : codec_xmalloc(n * sizeof(*parts));
    size_t *lens = n <= 32 ? stack_lens : codec_xmalloc(n * sizeof(*lens));
    for (size_t i = 0; i < n; i++) {
        parts[i] = s->op_bytes + ops[first + i].at + key_len;
        lens[i] = ops[first + i].value_len;
    }
    char buf[4096];
    size_t len;
    char *joined = store_arrays_join(NULL, 0, parts, lens, n, buf, sizeof(buf), &len);
    if (!joined) { /* a put that is no array: each as it was made, for RocksDB to fail */
        for (size_t i = base < to ? base : from; i < to; i++)
            write_op(s, &ops[i]);
    } else if (base < to)
        rocksdb_writebatch_put(s->batch, key, key_len, joined, len);
    else
        rocksdb_writebatch_merge(s->batch, key, key_len, joined, len);
    if (joined && joined != buf)
        free(joined);
    if (parts != stack_parts)
        free(parts);
    if (lens != stack_lens)
        free(lens);
}

/* Moves the pending point writes into the RocksDB batch, sorted by key. */
static void batch_flush_sorted(state_store_t *s)
{
    if (!s->ops_len)
        return;
    qsort_r(s->ops, s->ops_len, sizeof(*s->ops), by_key, s->op_bytes);
    for (size_t i = 0; i < s->ops_len;) {
        const pending_op_t *op = &s->ops[i];
        size_t j = i + 1;
        while (j < s->ops_len && s->ops[j].key_len == op->key_len &&
               !memcmp(s->op_bytes + s->ops[j].at, s->op_bytes + op->at, op->key_len))
            j++;
        batch_write_key(s, i, j);
        i = j;
    }
    s->ops_len = 0;
    s->op_bytes_len = 0;
}

/* A range delete that may cover keys written before it in this step: those go first. */
void store_batch_delete_range(state_store_t *s, const char *from, size_t from_len,
                              const char *to, size_t to_len)
{
    batch_flush_sorted(s);
    rocksdb_writebatch_delete_range(s->batch, from, from_len, to, to_len);
}

void store_batch_trim(state_store_t *s, const char *from, size_t from_len, const char *to,
                      size_t to_len)
{
    /* Each trim is [from_len][from][to_len][to]. */
    size_t need = 2 * sizeof(size_t) + from_len + to_len;
    if (s->trims_len + need > s->trims_cap)
        s->trims = codec_xrealloc(s->trims, s->trims_cap = (s->trims_len + need) * 2);
    memcpy(s->trims + s->trims_len, &from_len, sizeof(size_t));
    memcpy(s->trims + s->trims_len + sizeof(size_t), from, from_len);
    memcpy(s->trims + s->trims_len + sizeof(size_t) + from_len, &to_len, sizeof(size_t));
    memcpy(s->trims + s->trims_len + 2 * sizeof(size_t) + from_len, to, to_len);
    s->trims_len += need;
}

/* The step's batch: point writes sorted, the outbox key (the last), then the history
 * trims. */
rocksdb_writebatch_t *store_batch_finish(state_store_t *s)
{
    batch_flush_sorted(s);
    store_outbox_write_step(s);
    for (size_t at = 0; at < s->trims_len;) {
        size_t from_len, to_len;
        memcpy(&from_len, s->trims + at, sizeof(size_t));
        const char *from = s->trims + at + sizeof(size_t);
        memcpy(&to_len, from + from_len, sizeof(size_t));
        const char *to = from + from_len + sizeof(size_t);
        rocksdb_writebatch_delete_range(s->batch, from, from_len, to, to_len);
        at = (size_t)(to + to_len - s->trims);
    }
    s->trims_len = 0;
    return s->batch;
}
