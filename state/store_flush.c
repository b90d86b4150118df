/* state/store_flush.c - recording an applied flush: its history (joining the model's
 * last history key while it has room), the client's record, the "changed" mark, and
 * the snapshot rewrite and history trim when due. */
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "codec/msgpack.h"
#include "store_int.h"

void store_scratch_done(msgpack_sbuffer *sb)
{
    if (sb->alloc > SCRATCH_KEEP_BYTES) {
        msgpack_sbuffer_destroy(sb);
        msgpack_sbuffer_init(sb);
    }
    msgpack_sbuffer_clear(sb);
}

void store_history_key_add(state_store_t *s, state_model_t *m, uint64_t count)
{
    if (m->history_keys_len == m->history_keys_cap) {
        size_t cap = m->history_keys_cap ? m->history_keys_cap * 2 : 4;
        m->history_keys = codec_xrealloc(m->history_keys, cap * sizeof(*m->history_keys));
        if (s)
            store_charge(s, m, (cap - m->history_keys_cap) * sizeof(*m->history_keys));
        m->history_keys_cap = cap;
    }
    m->history_keys[m->history_keys_len++] = count;
}

/* ---- held history ----
 *
 * A changelog store does not write a flush's completions with its step while later
 * flushes of the model may still join the same history key: they are held here, and
 * the key is written once, with everything held for it, when it closes (into that
 * step, store_batch_write()), at the next flush point (store_flush(), store.c), or when
 * the model leaves the cache. So a model's history reaches the memtable once per key
 * (up to HISTORY_KEY_COMMANDS commands) instead of once per step. Only a model flushed
 * in one of the last HELD_STEPS steps holds: a model flushed now and then would hold
 * its key until it left the cache, saving no write. A restoring store (a catch-up,
 * `rebuild`) does not hold: it commits every 1,000 records, which folds a model's
 * records already, and it may stop between commits. Until then only this
 * process reads it (the history ring, time travel through store_history_held_visit()),
 * and a crash loses the memtable since the last flush point either way: what is stored
 * at each flush point is what writing every step would have stored
 * (tests/state/test_store.c compares the two; tests/bench/BENCHMARKS.md, the
 * fourteenth round, has what it saves). */

/* The array32 head before the held completions, kept up to date (held_head()), so
 * that a visit reads them as an array; written with msgpack-c's own head instead. */
#define HELD_HEAD_BYTES 5

/* A model flushed in none of the last this many steps writes its history with the step
 * (a store with 100,000 models held keys until eviction: 1.15x the CPU per flush). */
#define HELD_STEPS 8

static void held_charge(state_store_t *s, state_model_t *m, size_t bytes)
{
    store_charge(s, m, bytes);
    s->held_history_bytes += bytes;
}

static void held_uncharge(state_store_t *s, state_model_t *m, size_t bytes)
{
    m->mem_bytes -= bytes;
    s->cache_used -= bytes;
    s->held_history_bytes -= bytes;
}

static size_t held_bytes(const held_history_t *h)
{
    return h->cap + STORE_ALLOC_OVERHEAD;
}

static void held_write(held_history_t *h, const char *bytes, size_t len)
{
    if (h->len + len > h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        while (cap < h->len + len)
            cap *= 2;
        h->bytes = codec_xrealloc(h->bytes, cap);
        h->cap = cap;
    }
    memcpy(h->bytes + h->len, bytes, len);
    h->len += len;
}

/* Frees m's held keys [0, n), unwritten or written, and closes the gap. */
static void held_forget(state_store_t *s, state_model_t *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        held_uncharge(s, m, held_bytes(&m->held[i]));
        free(m->held[i].bytes);
    }
    m->held_len -= n;
    if (n && m->held_len) /* (memmove may not be given NULL, even for nothing) */
        memmove(m->held, m->held + n, m->held_len * sizeof(*m->held));
}

void store_history_held_free(state_store_t *s, state_model_t *m)
{
    for (size_t i = 0; i < m->held_len; i++) {
        s->held_history_bytes -= held_bytes(&m->held[i]);
        free(m->held[i].bytes);
    }
    free(m->held);
    m->held = NULL;
    m->held_len = m->held_cap = 0;
}

/* The array32 head of h's completions, in its reserved room: the held bytes are an
 * array whenever a visit reads them. */
static void held_head(held_history_t *h)
{
    unsigned char *p = (unsigned char *)h->bytes;
    for (int i = 0; i < 4; i++)
        p[1 + i] = (unsigned char)(h->items >> (8 * (3 - i)));
}

/* Holds a flush's completions for history key `key`, which held appended_to
 * completions before them (STORE_NOT_APPENDED: they start it). */
static void held_add(state_store_t *s, state_model_t *m, uint64_t key,
                     uint32_t appended_to, const codec_packed_t *applied)
{
    held_history_t *h = m->held_len ? &m->held[m->held_len - 1] : NULL;
    size_t charged = h && h->key == key ? held_bytes(h) : 0;
    if (!h || h->key != key) {
        if (m->held_len == m->held_cap) {
            size_t cap = m->held_cap ? 2 * m->held_cap : 2;
            m->held = codec_xrealloc(m->held, cap * sizeof(*m->held));
            m->held_cap = cap;
        }
        h = &m->held[m->held_len++];
        *h = (held_history_t){.key = key, .appended_to = appended_to};
        held_write(h, "\xdd\0\0\0\0", HELD_HEAD_BYTES);
    }
    held_write(h, applied->buf.data, codec_packed_bytes(applied));
    h->items += applied->count;
    held_head(h);
    held_charge(s, m, held_bytes(h) - charged);
}

/* m's history key that starts at command `key`. */
static void history_key(state_store_t *s, const state_model_t *m, uint64_t key,
                        store_key_t *k)
{
    store_key_start(k, s, STATE_ITEM_HISTORY);
    store_key_add_id(k, m->id, m->id_len);
    store_key_add_u64(k, key);
}

void store_history_held_visit(state_store_t *s, const state_model_t *m,
                              void (*visit)(void *opaque, const char *key, size_t key_len,
                                            const char *value, size_t value_len,
                                            uint32_t appended_to),
                              void *opaque)
{
    for (size_t i = 0; i < m->held_len; i++) {
        const held_history_t *h = &m->held[i];
        store_key_t k;
        history_key(s, m, h->key, &k);
        visit(opaque, k.p, k.len, h->bytes, h->len,
              h->appended_to == STORE_NOT_APPENDED ? 0 : h->appended_to);
        store_key_free(&k);
    }
}

/* h as an array with the head msgpack-c writes for its count (in the room of the
 * array32 head, which it overwrites): the stored bytes are those of a store that
 * wrote every step. For h's write, the last use of it. */
static const char *held_array(held_history_t *h, size_t *len)
{
    char head[HELD_HEAD_BYTES];
    msgpack_sbuffer hb = {.data = head, .size = 0, .alloc = sizeof(head)};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &hb, codec_sbuffer_write);
    msgpack_pack_array(&pk, h->items);
    char *at = h->bytes + HELD_HEAD_BYTES - hb.size;
    memcpy(at, head, hb.size);
    *len = h->len - (HELD_HEAD_BYTES - hb.size);
    return at;
}

/* Writes m's held keys [0, n) and forgets them: into batch, or (NULL) into the step.
 * One put per key that starts here, else one merge (the merge operator joins it to
 * what the key holds). */
static void held_put(state_store_t *s, state_model_t *m, size_t n,
                     rocksdb_writebatch_t *batch)
{
    for (size_t i = 0; i < n; i++) {
        held_history_t *h = &m->held[i];
        size_t len;
        const char *array = held_array(h, &len);
        bool starts = h->appended_to == STORE_NOT_APPENDED;
        store_key_t k;
        history_key(s, m, h->key, &k);
        if (!batch && starts)
            store_batch_write(s, k.p, k.len, array, len);
        else if (!batch)
            store_batch_append(s, k.p, k.len, array, len, h->appended_to);
        else if (starts)
            rocksdb_writebatch_put(batch, k.p, k.len, array, len);
        else
            rocksdb_writebatch_merge(batch, k.p, k.len, array, len);
        store_key_free(&k);
    }
    held_forget(s, m, n);
}

/* How many of m's held keys no flush will join any more: all but an open last key. */
static size_t held_closed(const state_model_t *m)
{
    size_t n = m->held_len;
    if (n && m->history_tail_open &&
        m->held[n - 1].key == m->history_keys[m->history_keys_len - 1])
        n--;
    return n;
}

static int by_history_key(const void *a, const void *b)
{
    const state_model_t *x = *(state_model_t *const *)a, *y = *(state_model_t *const *)b;
    if (x->id_len != y->id_len)
        return x->id_len < y->id_len ? -1 : 1;
    return memcmp(x->id, y->id, x->id_len);
}

void store_history_write(state_store_t *s, state_model_t *m, rocksdb_writebatch_t *batch)
{
    if (s->failed[0]) /* its memtable is dropped: nothing more reaches RocksDB */
        return;
    if (m) {
        held_put(s, m, m->held_len, batch);
        return;
    }
    /* In key order (<p> h <len:u16> <model> <count>): each memtable insert then
     * follows the last one. */
    size_t n = 0;
    state_model_t *each, *tmp;
    HASH_ITER(hh, s->models, each, tmp)
    n += each->held_len != 0;
    if (!n)
        return;
    state_model_t **models = codec_xmalloc(n * sizeof(*models));
    n = 0;
    HASH_ITER(hh, s->models, each, tmp)
    if (each->held_len)
        models[n++] = each;
    qsort(models, n, sizeof(*models), by_history_key);
    for (size_t i = 0; i < n; i++)
        held_put(s, models[i], models[i]->held_len, batch);
    free(models);
}

/* The next flush starts a key. */
static void history_tail_close(state_model_t *m)
{
    m->history_tail_open = false;
    m->history_tail_bytes = 0;
    m->history_tail_items = 0;
}

/* Whether a flush may still join the key: the rule store_record_flush() applies. */
static bool history_key_has_room(uint64_t items, size_t bytes)
{
    return items < HISTORY_KEY_COMMANDS && bytes < HISTORY_KEY_BYTES;
}

void store_history_tail_load(state_model_t *m, const char *value, size_t len)
{
    history_tail_close(m);
    store_items_t items;
    store_items_init(&items, value, len);
    if (!items.at || !history_key_has_room(items.left, len - items.at))
        return; /* a single completion (stored before), or full */
    m->history_tail_items = items.left;
    m->history_tail_bytes = len - items.at;
    m->history_tail_open = true;
}

static void put_snapshot(state_store_t *s, state_model_t *m)
{
    msgpack_sbuffer *sb = &s->scratch;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, codec_sbuffer_write);
    codec_snapshot_pack(&pk, state_master_command_count(m->master),
                        state_master_document(m->master));

    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_SNAPSHOT);
    store_key_add(&k, m->id, m->id_len);
    store_batch_write(s, k.p, k.len, sb->data, sb->size);
    store_key_free(&k);
    /* A copy kept as a past snapshot, for time travel once this one is replaced. */
    store_past_put(s, m, state_master_command_count(m->master), sb->data, sb->size);
    m->snapshot_count = state_master_command_count(m->master);
    m->snapshot_bytes = m->base_bytes = sb->size;
    m->history_bytes_since = 0;
    store_scratch_done(sb);
    store_measure_document(s, m);
}

/* Deletes stored history older than both the snapshot and the kept window, and than
 * the past snapshot that versions in the window are rebuilt from (time travel). */
static void trim_history(state_store_t *s, state_model_t *m)
{
    uint64_t count = state_master_command_count(m->master);
    uint64_t window = count > s->conf.history ? count - s->conf.history : 0;
    uint64_t keep_from = window < m->snapshot_count ? window : m->snapshot_count;
    keep_from = store_past_trim(s, m, keep_from);
    if (keep_from <= m->history_start)
        return;
    /* A key holds whole flushes: keep the one that holds keep_from (the newest at or
     * before it, stored or written in this step: the cut is the same however the
     * flushes were grouped into steps). */
    size_t below = 0; /* the keys at or before keep_from */
    while (below < m->history_keys_len && m->history_keys[below] <= keep_from)
        below++;
    if (!below || m->history_keys[below - 1] <= m->history_start)
        return;
    uint64_t cut = m->history_keys[below - 1];
    m->history_keys_len -= below - 1;
    memmove(m->history_keys, m->history_keys + below - 1,
            m->history_keys_len * sizeof(*m->history_keys));
    store_key_t from, to;
    store_key_start(&from, s, STATE_ITEM_HISTORY);
    store_key_add_id(&from, m->id, m->id_len);
    store_key_start(&to, s, STATE_ITEM_HISTORY);
    store_key_add_id(&to, m->id, m->id_len);
    store_key_add_u64(&from, m->history_start);
    store_key_add_u64(&to, cut);
    /* Applied after the step's point writes (no barrier): the range is older than
     * the model's count, so no later write of the step falls in it, and the earlier
     * ones in it are meant to go. */
    store_batch_trim(s, from.p, from.len, to.p, to.len);
    store_key_free(&from);
    store_key_free(&to);
    m->history_start = cut; /* the held key, the newest, is never below it */
}

bool store_record_flush(state_store_t *s, state_model_t *m, const char *client,
                        size_t client_len, uint64_t seq, uint64_t applied_from,
                        const codec_packed_t *applied, const char *mapped_paths,
                        size_t mapped_paths_len, uint64_t *replaced)
{
    /* The history: the flush's completions join the model's last key while it has
     * room (HISTORY_KEY_COMMANDS), appended by RocksDB's merge operator, else start a
     * key at its first command. */
    size_t applied_bytes = codec_packed_bytes(applied); /* without an array head */
    m->history_bytes_since += applied_bytes;
    /* The document grew by about the decoded size of what was applied (an estimate:
     * measured again at the next snapshot rewrite). */
    store_charge(s, m, 2 * applied_bytes);
    m->document_charged += 2 * applied_bytes;
    store_key_t k;
    if (applied->count) {
        bool joins = m->history_tail_open && m->history_keys_len &&
                     m->history_keys[m->history_keys_len - 1] + m->history_tail_items ==
                         applied_from;
        if (!joins) {
            history_tail_close(m);
            store_history_key_add(s, m, applied_from);
        }
        uint64_t key = m->history_keys[m->history_keys_len - 1];
        uint32_t appended_to =
            joins ? (uint32_t)m->history_tail_items : STORE_NOT_APPENDED;
        /* Held while the model is flushed every few steps: one that is not would hold
         * its key until it leaves the cache, for nothing but the memory. Never while
         * restoring: a catch-up may stop between its commits, and the flush point that
         * ends it would write a held key without the step's part before it. */
        bool hold = !s->logged && !s->restoring && m->flushed_in_step &&
                    s->step + 1 - m->flushed_in_step <= HELD_STEPS;
        m->flushed_in_step = s->step + 1;
        if (hold) {
            held_add(s, m, key, appended_to, applied);
        } else {
            held_put(s, m, m->held_len, NULL); /* what was held comes first */
            msgpack_sbuffer *hb = &s->scratch;
            msgpack_packer hp;
            msgpack_packer_init(&hp, hb, codec_sbuffer_write);
            codec_packed_pack_array(&hp, applied);
            history_key(s, m, key, &k);
            if (joins)
                store_batch_append(s, k.p, k.len, hb->data, hb->size, appended_to);
            else
                store_batch_write(s, k.p, k.len, hb->data, hb->size);
            store_key_free(&k);
            store_scratch_done(hb);
        }
        m->history_tail_items += applied->count;
        m->history_tail_bytes += applied_bytes;
        m->history_tail_open = true;
        if (!history_key_has_room(m->history_tail_items, m->history_tail_bytes))
            history_tail_close(m);
        if (hold)
            held_put(s, m, held_closed(m), NULL);
    }
    state_history_mem_append(m->history, applied_from, applied);
    store_recharge_history(s, m);

    /* The client's record: its seq and the mappedPaths a retry must see again. */
    client_t *c = store_client_load(s, m, client, client_len);
    if (!c->stored) { /* a new record */
        if (!m->clients_counted) {
            m->client_records = store_clients_scan(s, m, NULL);
            m->clients_counted = true;
        }
        m->client_records++;
        c->stored = true;
    }
    c->at = state_master_command_count(m->master);
    /* Mostly the same size as the last one (often the empty map): no malloc then. */
    if (c->mapped_paths_len != mapped_paths_len || !c->mapped_paths)
        c->mapped_paths = codec_xrealloc(c->mapped_paths, mapped_paths_len);
    memmove(c->mapped_paths, mapped_paths, mapped_paths_len);
    c->mapped_paths_len = mapped_paths_len;
    c->seq = seq;
    c->known = true;
    if (s->logged) {
        store_client_put(s, m, c, NULL);
    } else {
        /* A changelog store writes it at the next flush point (or when the model
         * leaves the cache): until then only this process reads it, from the cache,
         * and a crash loses the memtable anyway. One memtable entry a model a step
         * fewer (a tenth of the CPU per flush). */
        c->dirty = true;
        m->clients_dirty = true;
        s->clients_uncommitted = true;
    }

    /* Marked changed (once per load, not per flush): the next sweep publishes its
     * snapshot record (state_store_changed_models()). */
    if (!m->changed_marked) {
        store_key_start(&k, s, STATE_ITEM_CHANGED);
        store_key_add(&k, m->id, m->id_len);
        store_batch_write(s, k.p, k.len, "", 0);
        store_key_free(&k);
        m->changed_marked = true;
    }

    /* Rewriting the snapshot costs the document's size, so it waits until the history
     * since the last one has outgrown it: every flush then pays at most its own size
     * again, however large the document. After snapshot_every commands it comes
     * earlier, once that history is an eighth of the snapshot, so that loading a model
     * replays little without rewriting a large document often. */
    uint64_t since = state_master_command_count(m->master) - m->snapshot_count;
    uint64_t outgrown = m->snapshot_bytes > SNAPSHOT_MIN_REWRITE_BYTES
                            ? m->snapshot_bytes
                            : SNAPSHOT_MIN_REWRITE_BYTES;
    bool rewrite = since > 0 && (m->history_bytes_since >= outgrown ||
                                 (since >= s->conf.snapshot_every &&
                                  m->history_bytes_since * 8 >= m->snapshot_bytes));
    if (rewrite) {
        *replaced = m->snapshot_count;
        put_snapshot(s, m);
        trim_history(s, m);
    }
    if (m->client_records > s->conf.clients_per_model + s->conf.clients_per_model / 8)
        store_clients_expire(s, m);
    return rewrite;
}

bool state_model_flushed(state_store_t *s, state_model_t *m, const char *client,
                         size_t client_len, uint64_t seq, const state_apply_t *a,
                         uint64_t *replaced)
{
    msgpack_sbuffer *sb = &s->mapped;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, codec_sbuffer_write);
    codec_msgpack_pack_value(&pk, a->mapper.mappings);
    bool rewrote =
        store_record_flush(s, m, client, client_len, seq, a->result.applied_from,
                           &a->result.applied, sb->data, sb->size, replaced);
    store_scratch_done(sb);
    return rewrote;
}
