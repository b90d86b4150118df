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
    s->ops[s->ops_len] =
        (pending_op_t){s->op_bytes_len, (uint32_t)key_len,
                       value ? (uint32_t)value_len : UINT32_MAX, s->ops_len};
    s->ops_len++;
    op_bytes_add(s, key, key_len);
    if (value)
        op_bytes_add(s, value, value_len);
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
                                       const char *value, size_t value_len),
                         void *opaque)
{
    for (size_t i = 0; i < s->ops_len; i++) {
        const pending_op_t *op = &s->ops[i];
        const char *key = s->op_bytes + op->at;
        if (op->key_len < prefix_len || memcmp(key, prefix, prefix_len) != 0)
            continue;
        bool deleted = op->value_len == UINT32_MAX;
        visit(opaque, key, op->key_len, deleted ? NULL : key + op->key_len,
              deleted ? 0 : op->value_len);
    }
}

/* Moves the pending point writes into the RocksDB batch, sorted by key. */
static void batch_flush_sorted(state_store_t *s)
{
    if (!s->ops_len)
        return;
    qsort_r(s->ops, s->ops_len, sizeof(*s->ops), by_key, s->op_bytes);
    for (size_t i = 0; i < s->ops_len; i++) {
        const pending_op_t *op = &s->ops[i];
        const char *key = s->op_bytes + op->at;
        /* Writes to one key sort together in the order they were made: only the last
         * one counts (a put or a delete overrides whatever came before it), so the
         * others never reach the memtable (a client's record is rewritten by each of
         * its flushes in a step, a snapshot by each rewrite). */
        const pending_op_t *next = i + 1 < s->ops_len ? &s->ops[i + 1] : NULL;
        if (next && next->key_len == op->key_len &&
            !memcmp(s->op_bytes + next->at, key, op->key_len))
            continue;
        if (op->value_len == UINT32_MAX)
            rocksdb_writebatch_delete(s->batch, key, op->key_len);
        else
            rocksdb_writebatch_put(s->batch, key, op->key_len, key + op->key_len,
                                   op->value_len);
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
