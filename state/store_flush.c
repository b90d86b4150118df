/* state/store_flush.c - recording an applied flush: its history (joining the model's
 * last history key while it has room), the client's record, the "changed" mark, and
 * the snapshot rewrite and history trim when due. */
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
    m->history_start = cut;
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
        msgpack_sbuffer *hb = &s->scratch;
        msgpack_packer hp;
        msgpack_packer_init(&hp, hb, codec_sbuffer_write);
        codec_packed_pack_array(&hp, applied);
        bool joins = m->history_tail_open && m->history_keys_len &&
                     m->history_keys[m->history_keys_len - 1] + m->history_tail_items ==
                         applied_from;
        if (!joins) {
            history_tail_close(m);
            store_history_key_add(s, m, applied_from);
        }
        store_key_start(&k, s, STATE_ITEM_HISTORY);
        store_key_add_id(&k, m->id, m->id_len);
        store_key_add_u64(&k, m->history_keys[m->history_keys_len - 1]);
        if (joins)
            store_batch_append(s, k.p, k.len, hb->data, hb->size,
                               (uint32_t)m->history_tail_items);
        else
            store_batch_write(s, k.p, k.len, hb->data, hb->size);
        store_key_free(&k);
        m->history_tail_items += applied->count;
        m->history_tail_bytes += applied_bytes;
        m->history_tail_open = true;
        store_scratch_done(hb);
        if (!history_key_has_room(m->history_tail_items, m->history_tail_bytes))
            history_tail_close(m);
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
