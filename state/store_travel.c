/* state/store_travel.c - time travel: a model as it was at an earlier version.
 *
 * The stored snapshot is rewritten now and then, and going forward from it reaches
 * only the versions after it. So each rewrite also keeps a copy under its count (a
 * past snapshot), and the history is trimmed no further than the newest past snapshot
 * at or below the kept window: every version from count - --history on is that
 * snapshot, or a later one, plus history replayed forward. Past snapshots that no
 * kept history starts from any more are deleted with the trim. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "codec/print.h"
#include "store_int.h"

static void past_add(state_store_t *s, state_model_t *m, uint64_t count)
{
    if (m->past_len == m->past_cap) {
        size_t cap = m->past_cap ? m->past_cap * 2 : 4;
        m->past = codec_xrealloc(m->past, cap * sizeof(*m->past));
        if (s)
            store_charge(s, m, (cap - m->past_cap) * sizeof(*m->past));
        m->past_cap = cap;
    }
    m->past[m->past_len++] = count;
}

static void past_key(store_key_t *k, state_store_t *s, const state_model_t *m)
{
    store_key_start(k, s, STATE_ITEM_PAST);
    store_key_add_id(k, m->id, m->id_len);
}

int store_past_load(state_store_t *s, state_model_t *m, char *errstr, size_t errstr_size)
{
    store_key_t prefix;
    past_key(&prefix, s, m);
    /* Bounded to this model's keys: the key after its last one is the next model's
     * past snapshot, as large as its document (RocksDB 7.8 has no keys-only
     * iteration). */
    store_model_scan_t scan;
    store_model_scan_open(&scan, s, prefix.p, prefix.len);
    rocksdb_iterator_t *it = scan.it;
    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen;
        const char *key = rocksdb_iter_key(it, &klen);
        if (klen != prefix.len + 8 || memcmp(key, prefix.p, prefix.len) != 0)
            break;
        past_add(NULL, m, store_be64(key + prefix.len));
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    store_model_scan_close(&scan);
    store_key_free(&prefix);
    return err ? store_fail_rocks(err, "reading past snapshots", errstr, errstr_size) : 0;
}

void store_past_put(state_store_t *s, state_model_t *m, uint64_t count,
                    const char *snapshot, size_t snapshot_len)
{
    store_key_t k;
    past_key(&k, s, m);
    store_key_add_u64(&k, count);
    store_batch_write(s, k.p, k.len, snapshot, snapshot_len);
    store_key_free(&k);
    if (!m->past_len || m->past[m->past_len - 1] < count)
        past_add(s, m, count);
}

uint64_t store_past_trim(state_store_t *s, state_model_t *m, uint64_t keep_from)
{
    size_t below = 0; /* the past snapshots at or below keep_from */
    while (below < m->past_len && m->past[below] <= keep_from)
        below++;
    if (!below) /* the initial document, when the history starts there */
        return m->history_start == 0 ? 0 : keep_from;
    uint64_t base = m->past[below - 1];
    /* Point deletes, not a range: a memtable full of range deletes makes creating
     * iterators (loading a model) slow, and the history trims add enough of them. */
    for (size_t i = 0; i + 1 < below; i++) {
        store_key_t k;
        past_key(&k, s, m);
        store_key_add_u64(&k, m->past[i]);
        store_batch_write(s, k.p, k.len, NULL, 0);
        store_key_free(&k);
    }
    m->past_len -= below - 1;
    memmove(m->past, m->past + below - 1, m->past_len * sizeof(*m->past));
    return base;
}

/* ---- rebuilding a version ---- */

/* What the step in progress writes under a prefix: the last value of one key, or
 * every history entry of a model. */
typedef struct pending_s {
    const char *key; /* the key sought (exact), or NULL: collect history entries */
    size_t key_len, prefix_len;
    const char *value; /* the key's last value */
    size_t value_len;
    bool found;
    struct {
        uint64_t count;
        const char *value;
        size_t len;
    } * entries;
    size_t len, cap;
} pending_t;

static void pending_visit(void *opaque, const char *key, size_t key_len,
                          const char *value, size_t value_len, uint32_t appended_to)
{
    pending_t *p = opaque;
    if (p->key) {
        if (key_len == p->key_len && !memcmp(key, p->key, key_len)) {
            p->found = value != NULL;
            p->value = value;
            p->value_len = value_len;
        }
        return;
    }
    if (key_len != p->prefix_len + 8 || !value)
        return;
    if (p->len == p->cap)
        p->entries = codec_xrealloc(p->entries, (p->cap = p->cap ? p->cap * 2 : 8) *
                                                    sizeof(*p->entries));
    /* An append's completions follow what its key held before it. */
    p->entries[p->len].count = store_be64(key + p->prefix_len) + appended_to;
    p->entries[p->len].value = value;
    p->entries[p->len].len = value_len;
    p->len++;
}

/* The document of the snapshot under k (the step's write, else RocksDB's), which
 * must be at count. Frees k. */
static int read_base(state_store_t *s, const state_model_t *m, store_key_t *k,
                     uint64_t count, codec_value_t **doc, char *errstr,
                     size_t errstr_size)
{
    pending_t p = {.key = k->p, .key_len = k->len};
    store_batch_pending(s, k->p, k->len, pending_visit, &p);
    char *stored = NULL, *err = NULL;
    const char *value = p.value;
    size_t len = p.value_len;
    if (p.found) {
        store_key_free(k);
    } else {
        value = stored = store_key_get(s, k, &len, &err);
        if (err)
            return store_fail_rocks(err, "reading a past snapshot", errstr, errstr_size);
    }
    uint64_t at = 0;
    *doc = NULL;
    if (value && !store_snapshot_decode(value, len, &at, doc) && at != count) {
        codec_value_destroy(*doc);
        *doc = NULL;
    }
    free(stored);
    if (*doc)
        return 0;
    snprintf(errstr, errstr_size,
             "the snapshot of model " MODEL_FMT " at version %llu is %s",
             MODEL_ARG(m->id, m->id_len), (unsigned long long)count,
             value ? "corrupt" : "missing");
    return -1;
}

/* Replays the completions of one stored history entry (from key_count on) onto
 * master, up to version at. @returns 0, or -1 and errstr. */
static int replay_entry(state_store_t *s, const state_model_t *m, state_master_t *master,
                        uint64_t at, uint64_t key_count, const char *stored,
                        size_t stored_len, char *errstr, size_t errstr_size)
{
    store_items_t items;
    store_items_init(&items, stored, stored_len);
    const char *value;
    size_t len;
    int got;
    for (uint64_t count = key_count; (got = store_items_next(&items, &value, &len));
         count++) {
        uint64_t now = state_master_command_count(master);
        if (got > 0 && count < now)
            continue; /* before the snapshot */
        if (got > 0 && count >= at)
            return 0;
        codec_completion_t c;
        char derr[256];
        int rc = got < 0 || count != now ||
                 codec_completion_decode(value, len, s->zone, &c, derr, sizeof(derr)) ||
                 state_master_replay(master, &c, derr, sizeof(derr));
        msgpack_zone_clear(s->zone);
        if (rc) {
            snprintf(errstr, errstr_size,
                     "the history of model " MODEL_FMT " does not replay at command %llu",
                     MODEL_ARG(m->id, m->id_len), (unsigned long long)count);
            return -1;
        }
    }
    return 0;
}

/* Replays the stored history from master's count to at: what RocksDB holds, then what
 * the step in progress writes, then the key the store holds to write
 * (store_history_held_visit()): history is only appended, and only its newest key is
 * held. */
static int replay_history(state_store_t *s, const state_model_t *m,
                          state_master_t *master, uint64_t at, char *errstr,
                          size_t errstr_size)
{
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_HISTORY);
    store_key_add_id(&k, m->id, m->id_len);
    size_t prefix_len = k.len;
    /* From the key holding the snapshot's count. */
    uint64_t from = state_master_command_count(master);
    for (size_t i = m->history_keys_len; i-- > 0;)
        if (m->history_keys[i] <= from) {
            from = m->history_keys[i];
            break;
        }
    store_key_add_u64(&k, from);
    store_model_scan_t scan;
    store_model_scan_open(&scan, s, k.p, prefix_len);
    rocksdb_iterator_t *it = scan.it;
    int rc = 0;
    for (rocksdb_iter_seek(it, k.p, k.len);
         !rc && rocksdb_iter_valid(it) && state_master_command_count(master) < at;
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *key = rocksdb_iter_key(it, &klen);
        if (klen != prefix_len + 8 || memcmp(key, k.p, prefix_len) != 0)
            break;
        const char *value = rocksdb_iter_value(it, &vlen);
        rc = replay_entry(s, m, master, at, store_be64(key + prefix_len), value, vlen,
                          errstr, errstr_size);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    store_model_scan_close(&scan);
    if (err && !rc)
        rc = store_fail_rocks(err, "reading history", errstr, errstr_size);
    else
        rocksdb_free(err);
    pending_t p = {.prefix_len = prefix_len};
    if (!rc && state_master_command_count(master) < at) {
        store_batch_pending(s, k.p, prefix_len, pending_visit, &p);
        store_history_held_visit(s, m, pending_visit, &p); /* the newest key */
    }
    for (size_t i = 0; i < p.len && !rc && state_master_command_count(master) < at; i++)
        rc = replay_entry(s, m, master, at, p.entries[i].count, p.entries[i].value,
                          p.entries[i].len, errstr, errstr_size);
    free(p.entries);
    store_key_free(&k);
    if (!rc && state_master_command_count(master) != at) {
        snprintf(errstr, errstr_size,
                 "the history of model " MODEL_FMT " ends at %llu, before version %llu",
                 MODEL_ARG(m->id, m->id_len),
                 (unsigned long long)state_master_command_count(master),
                 (unsigned long long)at);
        rc = -1;
    }
    return rc;
}

state_travel_t state_model_travel(state_store_t *s, state_model_t *m, uint64_t at,
                                  state_master_t **master, uint64_t *oldest, char *errstr,
                                  size_t errstr_size)
{
    uint64_t count = state_master_command_count(m->master);
    *master = NULL;
    if (at > count) {
        snprintf(errstr, errstr_size, "version %llu is beyond the model's %llu commands",
                 (unsigned long long)at, (unsigned long long)count);
        return STATE_TRAVEL_FAILED;
    }
    /* Where a version can be rebuilt from: a past snapshot, the stored snapshot, or
     * the initial document when the history starts at 0; each with the history
     * after it kept. */
    bool from_initial = m->history_start == 0;
    bool from_snapshot = m->snapshot_bytes > 0 && m->snapshot_count >= m->history_start;
    uint64_t first = from_snapshot ? m->snapshot_count : count;
    for (size_t i = 0; i < m->past_len; i++)
        if (m->past[i] >= m->history_start && m->past[i] < first)
            first = m->past[i];
    *oldest = from_initial ? 0 : first;
    if (at < *oldest)
        return STATE_TRAVEL_UNAVAILABLE;
    if (at == count) {
        *master = state_master_new(m->id, m->id_len, count,
                                   codec_value_copy(state_master_document(m->master)),
                                   &s->conf.master);
        return STATE_TRAVEL_OK;
    }
    /* The newest base at or below at. */
    bool found = false;
    uint64_t base = 0;
    store_key_t k;
    for (size_t i = m->past_len; i-- > 0 && !found;)
        if (m->past[i] <= at && m->past[i] >= m->history_start) {
            base = m->past[i];
            found = true;
            store_key_start(&k, s, STATE_ITEM_PAST);
            store_key_add_id(&k, m->id, m->id_len);
            store_key_add_u64(&k, base);
        }
    if (from_snapshot && m->snapshot_count <= at &&
        (!found || base < m->snapshot_count)) {
        if (found)
            store_key_free(&k);
        base = m->snapshot_count;
        found = true;
        store_key_start(&k, s, STATE_ITEM_SNAPSHOT);
        store_key_add(&k, m->id, m->id_len);
    }
    codec_value_t *doc = NULL;
    if (!found)
        doc = codec_value_copy(s->initial_document);
    else if (read_base(s, m, &k, base, &doc, errstr, errstr_size))
        return STATE_TRAVEL_FAILED;
    *master = state_master_new(m->id, m->id_len, base, doc, &s->conf.master);
    if (replay_history(s, m, *master, at, errstr, errstr_size)) {
        state_master_destroy(*master);
        *master = NULL;
        return STATE_TRAVEL_FAILED;
    }
    return STATE_TRAVEL_OK;
}
