/* state/store_cache.c - the cache of decoded models: loading a model from its snapshot
 * and history, the LRU bounded by bytes (each model charged what it really holds in
 * malloc chunks), and eviction after commits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "codec/print.h"
#include "codec/msgpack.h"
#include "codec/request.h"
#include "store_int.h"

void store_model_free(state_store_t *s, state_model_t *m)
{
    while (m->clients) {
        client_t *c = m->clients;
        m->clients = c->next;
        HASH_DEL(s->clients, c);
        store_client_free(c);
    }
    state_master_destroy(m->master);
    state_history_mem_destroy(m->history);
    store_history_held_free(s, m);
    free(m->history_keys);
    free(m->past);
    free(m->key);
    free(m);
}

/* ---- the LRU ---- */

static void lru_unlink(state_store_t *s, state_model_t *m)
{
    if (m->lru_prev)
        m->lru_prev->lru_next = m->lru_next;
    else
        s->lru_head = m->lru_next;
    if (m->lru_next)
        m->lru_next->lru_prev = m->lru_prev;
    else
        s->lru_tail = m->lru_prev;
    m->lru_prev = m->lru_next = NULL;
}

static void lru_push_front(state_store_t *s, state_model_t *m)
{
    m->lru_next = s->lru_head;
    if (s->lru_head)
        s->lru_head->lru_prev = m;
    s->lru_head = m;
    if (!s->lru_tail)
        s->lru_tail = m;
}

void store_charge(state_store_t *s, state_model_t *m, size_t bytes)
{
    m->mem_bytes += bytes;
    s->cache_used += bytes;
}

/* Per model the fixed parts: the model, its master, its hash handle and the cache
 * key. */
#define MODEL_FIXED (sizeof(state_model_t) + 320 + 4 * STORE_ALLOC_OVERHEAD)

/* Charges m what one of its parts measures now instead of what it was charged before
 * (*charged), either way. */
static void recharge(state_store_t *s, state_model_t *m, size_t *charged,
                     size_t now_bytes)
{
    if (now_bytes >= *charged) {
        store_charge(s, m, now_bytes - *charged);
    } else {
        size_t freed = *charged - now_bytes;
        m->mem_bytes -= freed;
        s->cache_used -= freed;
    }
    *charged = now_bytes;
}

/* An O(document) walk, done where the document is packed whole anyway (loading,
 * snapshot rewrites). In between, each flush charges an estimate that only grows:
 * updates and deletes are charged as if they added to the document. Without the
 * walk at rewrites, a model of a few KB edited a thousand times was charged hundreds
 * of KB, so 1,000 busy models overflowed the default --cache-mb and were reloaded
 * over and over (a third of the CPU per flush in tests/bench/ab.sh). */
void store_measure_document(state_store_t *s, state_model_t *m)
{
    recharge(s, m, &m->document_charged,
             codec_value_mem_size(state_master_document(m->master)));
}

void store_recharge_history(state_store_t *s, state_model_t *m)
{
    recharge(s, m, &m->history_charged, state_history_mem_size(m->history));
}

/* What only the cache holds of m, into batch: its dirty client records and held
 * history (a reload reads RocksDB). */
static void cached_writes(state_store_t *s, state_model_t *m, rocksdb_writebatch_t *batch)
{
    store_clients_write(s, m, batch);
    store_history_write(s, m, batch);
}

void store_model_drop(state_store_t *s, state_model_t *m)
{
    if (m->clients_dirty || m->held_len) {
        rocksdb_writebatch_t *now = rocksdb_writebatch_create();
        cached_writes(s, m, now);
        store_write_now(s, now);
        rocksdb_writebatch_destroy(now);
    }
    lru_unlink(s, m);
    HASH_DEL(s->models, m);
    s->cache_used -= m->mem_bytes;
    store_model_free(s, m);
}

/* Over its share, and (with a pool) the stores together over the pool's budget. */
static bool over_budget(const state_store_t *s)
{
    if (s->cache_used <= s->conf.cache_bytes)
        return false;
    if (!s->conf.cache_pool)
        return true;
    size_t total = atomic_load(s->conf.cache_pool) - s->pool_reported + s->cache_used;
    return total > s->conf.cache_pool_bytes;
}

/* Evicts least recently used models until the cache fits; called after a commit, when
 * every model is clean (its state is in RocksDB). */
void store_evict(state_store_t *s)
{
    rocksdb_writebatch_t *dirty = NULL; /* the evicted models' client records and held
                                         * history, at once */
    while (s->lru_tail && over_budget(s)) {
        if (s->lru_tail->clients_dirty || s->lru_tail->held_len) {
            if (!dirty)
                dirty = rocksdb_writebatch_create();
            cached_writes(s, s->lru_tail, dirty);
        }
        store_model_drop(s, s->lru_tail);
    }
    if (dirty) {
        store_write_now(s, dirty);
        rocksdb_writebatch_destroy(dirty);
    }
    store_pool_report(s, s->cache_used);
}

void store_pool_report(state_store_t *s, size_t used)
{
    if (!s->conf.cache_pool || used == s->pool_reported)
        return;
    /* Unsigned arithmetic wraps: adding the difference also subtracts. */
    atomic_fetch_add(s->conf.cache_pool, used - s->pool_reported);
    s->pool_reported = used;
}

/* ---- loading ---- */

/* Reads the snapshot into *count and *doc (NULL when there is none). */
static int load_snapshot(state_store_t *s, state_model_t *m, uint64_t *count,
                         codec_value_t **doc, char *errstr, size_t errstr_size)
{
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_SNAPSHOT);
    store_key_add(&k, m->id, m->id_len);
    char *err = NULL;
    size_t len = 0;
    char *v = store_key_get(s, &k, &len, &err);
    *doc = NULL;
    *count = 0;
    if (err)
        return store_fail_rocks(err, "reading a snapshot", errstr, errstr_size);
    if (!v)
        return 0;
    int rc = 0;
    if (store_snapshot_decode(v, len, count, doc)) {
        snprintf(errstr, errstr_size, "the snapshot of model " MODEL_FMT " is corrupt",
                 MODEL_ARG(m->id, m->id_len));
        rc = -1;
    } else {
        m->snapshot_bytes = len;
    }
    free(v);
    return rc;
}

int store_snapshot_decode(const char *value, size_t len, uint64_t *count,
                          codec_value_t **doc)
{
    codec_value_t *snap = NULL;
    char derr[256];
    int rc = 0;
    const codec_value_t *c, *d;
    if (codec_msgpack_decode(value, len, &codec_limits_trusted, &snap, derr,
                             sizeof(derr)) ||
        snap->type != CODEC_VALUE_MAP || !(c = codec_map_get(snap, "commandCount", 12)) ||
        c->type != CODEC_VALUE_INT || !(d = codec_map_get(snap, "document", 8)) ||
        d->type != CODEC_VALUE_MAP) {
        rc = -1;
    } else {
        *count = (uint64_t)c->u.i;
        *doc = codec_map_take(snap, "document", 8);
    }
    codec_value_destroy(snap);
    return rc;
}

void store_items_init(store_items_t *it, const char *value, size_t len)
{
    const unsigned char *b = (const unsigned char *)value;
    *it = (store_items_t){value, len, 0, 1};
    if (len >= 1 && (b[0] & 0xf0) == 0x90)
        it->left = b[0] & 0x0f, it->at = 1;
    else if (len >= 3 && b[0] == 0xdc)
        it->left = (uint32_t)store_be_n(value + 1, 2), it->at = 3;
    else if (len >= 5 && b[0] == 0xdd)
        it->left = (uint32_t)store_be_n(value + 1, 4), it->at = 5;
}

int store_items_next(store_items_t *it, const char **item, size_t *item_len)
{
    if (!it->left)
        return 0;
    it->left--;
    size_t start = it->at;
    if (start == 0) { /* a single completion: the whole value */
        it->at = it->len;
    } else {
        /* Found by skipping, not unpacking: msgpack-c's unpacker stops at 32 levels,
         * and documents nest deeper. */
        size_t off = start;
        if (!codec_msgpack_skip(it->value, it->len, &off))
            return -1;
        it->at = off;
    }
    *item = it->value + start;
    *item_len = it->at - start;
    return 1;
}

/* Feeds one stored history entry (key_count on) to the model: entries before the
 * snapshot only fill the in-memory history, later ones are replayed onto the
 * document. */
static int load_entry(state_store_t *s, state_model_t *m, uint64_t key_count,
                      const char *stored, size_t stored_len, codec_packed_t *one,
                      char *errstr, size_t errstr_size)
{
    store_items_t items;
    store_items_init(&items, stored, stored_len);
    const char *value;
    size_t vlen;
    int got;
    for (uint64_t count = key_count; (got = store_items_next(&items, &value, &vlen));
         count++) {
        if (got < 0) {
            snprintf(errstr, errstr_size,
                     "the history of model " MODEL_FMT " is corrupt at command %llu",
                     MODEL_ARG(m->id, m->id_len), (unsigned long long)count);
            return -1;
        }
        if (!m->history) {
            m->history_start = count;
            m->history = state_history_mem_new(s->conf.history, count);
        }
        if (count >= m->snapshot_count) {
            /* Counted as store_record_flush() counted it when it was applied. */
            m->history_bytes_since += vlen;
            /* Replay: the stored completion is the command as it was applied. */
            codec_completion_t c;
            char derr[256];
            int rc =
                count != state_master_command_count(m->master) ||
                codec_completion_decode(value, vlen, s->zone, &c, derr, sizeof(derr)) ||
                state_master_replay(m->master, &c, derr, sizeof(derr));
            msgpack_zone_clear(s->zone);
            if (rc) {
                snprintf(errstr, errstr_size,
                         "the history of model " MODEL_FMT
                         " does not replay at command %llu",
                         MODEL_ARG(m->id, m->id_len), (unsigned long long)count);
                return -1;
            }
        }
        codec_packed_reset(one);
        codec_packed_add_raw(one, value, vlen);
        if (state_history_mem_append(m->history, count, one) != 0) {
            snprintf(errstr, errstr_size,
                     "the history of model " MODEL_FMT " has a gap at %llu",
                     MODEL_ARG(m->id, m->id_len), (unsigned long long)count);
            return -1;
        }
    }
    return 0;
}

/* Feeds the stored history to the model (load_entry()), with it. */
static int load_history(state_store_t *s, state_model_t *m, char *errstr,
                        size_t errstr_size)
{
    store_key_t prefix;
    store_key_start(&prefix, s, STATE_ITEM_HISTORY);
    store_key_add_id(&prefix, m->id, m->id_len);
    store_model_scan_t scan;
    store_model_scan_open(&scan, s, prefix.p, prefix.len);
    rocksdb_iterator_t *it = scan.it;
    int rc = 0;
    codec_packed_t one;
    codec_packed_init(&one);

    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it) && !rc;
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *key = rocksdb_iter_key(it, &klen);
        if (klen != prefix.len + 8 || memcmp(key, prefix.p, prefix.len) != 0)
            break;
        uint64_t key_count = store_be64(key + prefix.len);
        store_history_key_add(NULL, m, key_count);
        const char *stored = rocksdb_iter_value(it, &vlen);
        rc = load_entry(s, m, key_count, stored, vlen, &one, errstr, errstr_size);
        store_history_tail_load(m, stored, vlen); /* the last one's counts stay */
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    store_model_scan_close(&scan);
    if (err && !rc)
        rc = store_fail_rocks(err, "reading history", errstr, errstr_size);
    else
        rocksdb_free(err);
    codec_packed_destroy(&one);
    store_key_free(&prefix);
    if (!rc && !m->history) { /* no history stored */
        m->history_start = m->snapshot_count;
        m->history = state_history_mem_new(s->conf.history, m->snapshot_count);
    }
    if (!rc && state_master_command_count(m->master) < m->snapshot_count) {
        snprintf(errstr, errstr_size, "model " MODEL_FMT " ends before its snapshot",
                 MODEL_ARG(m->id, m->id_len));
        rc = -1;
    }
    return rc;
}

state_model_t *state_store_model(state_store_t *s, const char *model, size_t model_len,
                                 char *errstr, size_t errstr_size)
{
    if (model_len > STORE_MAX_ID_BYTES) {
        snprintf(errstr, errstr_size, "model id of %zu bytes exceeds %d", model_len,
                 STORE_MAX_ID_BYTES);
        return NULL;
    }
    size_t key_len = 4 + model_len;
    char stack_key[256];
    char *key = key_len <= sizeof(stack_key) ? stack_key : codec_xmalloc(key_len);
    uint32_t partition = (uint32_t)s->conf.partition;
    key[0] = (char)(partition >> 24);
    key[1] = (char)(partition >> 16);
    key[2] = (char)(partition >> 8);
    key[3] = (char)partition;
    memcpy(key + 4, model, model_len);

    state_model_t *m = NULL;
    HASH_FIND(hh, s->models, key, key_len, m);
    if (m) {
        if (key != stack_key)
            free(key);
        lru_unlink(s, m);
        lru_push_front(s, m);
        s->cache_hits++;
        return m;
    }
    s->cache_misses++;

    m = codec_xcalloc(1, sizeof(*m));
    m->key = codec_xmemdup(key, key_len);
    if (key != stack_key)
        free(key);
    m->key_len = key_len;
    m->id = m->key + 4;
    m->id_len = model_len;

    uint64_t count;
    codec_value_t *doc;
    if (load_snapshot(s, m, &count, &doc, errstr, errstr_size)) {
        store_model_free(s, m);
        return NULL;
    }
    m->snapshot_count = count;
    m->base_bytes = doc ? m->snapshot_bytes : s->initial_bytes;
    /* A past snapshot is written only in the batch that writes the model's snapshot (a
     * rewrite, an installed snapshot record), and a snapshot is never deleted on its
     * own: a model without one has none, so most small models skip that seek. */
    bool may_have_past = doc != NULL;
    m->master = state_master_new(model, model_len, count,
                                 doc ? doc : codec_value_copy(s->initial_document),
                                 &s->conf.master);
    int rc = load_history(s, m, errstr, errstr_size);
    if (!rc && may_have_past)
        rc = store_past_load(s, m, errstr, errstr_size);
    if (rc) {
        store_model_free(s, m);
        return NULL;
    }
    store_charge(s, m,
                 MODEL_FIXED + m->key_len +
                     m->history_keys_cap * sizeof(*m->history_keys) +
                     m->past_cap * sizeof(*m->past));
    store_measure_document(s, m);
    store_recharge_history(s, m);
    HASH_ADD_KEYPTR(hh, s->models, m->key, m->key_len, m);
    lru_push_front(s, m);
    return m;
}

size_t state_model_document_bound(const state_model_t *m)
{
    return m->base_bytes + m->history_bytes_since;
}

state_master_t *state_model_master(state_model_t *m)
{
    return m->master;
}

state_history_t state_model_history(state_model_t *m)
{
    return state_history_mem_provider(m->history);
}

state_model_t *store_model_cached(state_store_t *s, const char *model, size_t model_len)
{
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_CHANGED);
    store_key_add(&k, model, model_len);
    /* The cache is keyed by partition + id: the key without its kind byte. */
    memmove(k.p + 4, k.p + 5, model_len);
    state_model_t *m = NULL;
    HASH_FIND(hh, s->models, k.p, 4 + model_len, m);
    store_key_free(&k);
    return m;
}
