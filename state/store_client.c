/* state/store_client.c - client records: what a client's last applied flush was, to
 * recognise a retry, and their expiry by count. The records of all cached models live
 * in one store-wide table; the step's expired records are remembered until its
 * commit. */
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "codec/print.h"
#include "codec/msgpack.h"
#include "store_int.h"

/* The step is written (or failed): RocksDB has the deletes now. */
void store_expired_forget(state_store_t *s)
{
    expired_t *e, *tmp;
    HASH_ITER(hh, s->expired, e, tmp)
    {
        HASH_DEL(s->expired, e);
        free(e);
    }
}

static bool is_expired(state_store_t *s, const char *key, size_t key_len)
{
    expired_t *e = NULL;
    if (s->expired)
        HASH_FIND(hh, s->expired, key, key_len, e);
    return e != NULL;
}

void store_client_free(client_t *c)
{
    free(c->key);
    free(c->mapped_paths);
    free(c);
}

/* Writes the store-wide key of a model's client (m->key_len + 2 + id_len bytes). */
static void client_key_put(const state_model_t *m, const char *id, size_t id_len,
                           char *key)
{
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = (char)(m->id_len >> 8);
    key[m->key_len + 1] = (char)m->id_len;
    memcpy(key + m->key_len + 2, id, id_len);
}

/* The store-wide key of a model's client, in a malloc'ed buffer (*key_len set). */
static char *client_key(const state_model_t *m, const char *id, size_t id_len,
                        size_t *key_len)
{
    *key_len = m->key_len + 2 + id_len;
    char *key = codec_xmalloc(*key_len);
    client_key_put(m, id, id_len, key);
    return key;
}

static client_t *client_find(state_store_t *s, const state_model_t *m, const char *id,
                             size_t id_len)
{
    /* Looked up twice per flush: the key is built on the stack when it fits. */
    char stack_key[128];
    size_t key_len = m->key_len + 2 + id_len;
    char *key = key_len <= sizeof(stack_key) ? stack_key : codec_xmalloc(key_len);
    client_key_put(m, id, id_len, key);
    client_t *c = NULL;
    HASH_FIND(hh, s->clients, key, key_len, c);
    if (key != stack_key)
        free(key);
    return c;
}

client_t *store_client_load(state_store_t *s, state_model_t *m, const char *id,
                            size_t id_len)
{
    client_t *c = client_find(s, m, id, id_len);
    if (c)
        return c;
    c = codec_xcalloc(1, sizeof(*c));
    c->key = client_key(m, id, id_len, &c->key_len);
    c->id = c->key + m->key_len + 2;
    c->id_len = id_len;
    if (is_expired(s, c->key, c->key_len))
        goto add; /* a new client again, whether or not the step is written yet */

    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_CLIENT);
    store_key_add_id(&k, m->id, m->id_len);
    store_key_add(&k, id, id_len);
    char *err = NULL;
    size_t len = 0;
    char *v = store_key_get(s, &k, &len, &err);
    codec_value_t *rec = NULL;
    char derr[128];
    c->stored = v != NULL;
    const codec_value_t *seq = NULL;
    if (!err && v &&
        codec_msgpack_decode(v, len, &codec_limits_trusted, &rec, derr, sizeof(derr)) ==
            0 &&
        rec->type == CODEC_VALUE_MAP)
        seq = codec_map_get(rec, "seq", 3);
    if (err || (v && (!seq || seq->type != CODEC_VALUE_INT))) {
        /* Taken as "no record", the client's retry would be applied twice. The store
         * refuses the step instead: its partition stops, nothing of it answered. */
        store_set_failed(s,
                         "the client record " MODEL_FMT " of model " MODEL_FMT
                         " cannot be read: %s",
                         MODEL_ARG(id, id_len), MODEL_ARG(m->id, m->id_len),
                         err ? err : "not a client record");
    } else if (seq) {
        const codec_value_t *mp = codec_map_get(rec, "mappedPaths", 11);
        const codec_value_t *at = codec_map_get(rec, "at", 2);
        c->known = true;
        c->seq = (uint64_t)seq->u.i;
        c->at = at && at->type == CODEC_VALUE_INT ? (uint64_t)at->u.i : 0;
        if (mp) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, codec_sbuffer_write);
            codec_msgpack_pack_value(&pk, mp);
            c->mapped_paths = sb.data; /* ownership moves: freed with free() */
            c->mapped_paths_len = sb.size;
        }
    }
    codec_value_destroy(rec);
    rocksdb_free(err);
    free(v);
add:
    HASH_ADD_KEYPTR(hh, s->clients, c->key, c->key_len, c);
    c->next = m->clients;
    m->clients = c;
    store_charge(
        s, m, sizeof(*c) + c->key_len + c->mapped_paths_len + 3 * STORE_ALLOC_OVERHEAD);
    return c;
}

void store_client_put(state_store_t *s, const state_model_t *m, const client_t *c,
                      rocksdb_writebatch_t *batch)
{
    msgpack_sbuffer *sb = &s->scratch;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, codec_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "seq", 3);
    msgpack_pack_uint64(&pk, c->seq);
    msgpack_pack_str_with_body(&pk, "at", 2);
    msgpack_pack_uint64(&pk, c->at);
    msgpack_pack_str_with_body(&pk, "mappedPaths", 11);
    codec_msgpack_pack_raw(&pk, c->mapped_paths, c->mapped_paths_len);
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_CLIENT);
    store_key_add_id(&k, m->id, m->id_len);
    store_key_add(&k, c->id, c->id_len);
    if (batch)
        rocksdb_writebatch_put(batch, k.p, k.len, sb->data, sb->size);
    else
        store_batch_write(s, k.p, k.len, sb->data, sb->size);
    store_key_free(&k);
    store_scratch_done(sb);
}

static void model_clients_write(state_store_t *s, state_model_t *m,
                                rocksdb_writebatch_t *batch)
{
    for (client_t *c = m->clients; c; c = c->next)
        if (c->dirty) {
            store_client_put(s, m, c, batch);
            c->dirty = false;
        }
    m->clients_dirty = false;
}

void store_clients_write(state_store_t *s, state_model_t *m, rocksdb_writebatch_t *batch)
{
    if (s->failed[0]) /* its memtable is dropped: nothing more reaches RocksDB */
        return;
    if (!batch) {
        if (!m || !m->clients_dirty)
            return;
        rocksdb_writebatch_t *now = rocksdb_writebatch_create();
        model_clients_write(s, m, now);
        store_write_now(s, now);
        rocksdb_writebatch_destroy(now);
        return;
    }
    if (m) {
        if (m->clients_dirty)
            model_clients_write(s, m, batch);
        return;
    }
    state_model_t *each, *tmp;
    HASH_ITER(hh, s->models, each, tmp)
    if (each->clients_dirty)
        model_clients_write(s, each, batch);
}

state_seq_t state_model_check_seq(state_store_t *s, state_model_t *m, const char *client,
                                  size_t client_len, uint64_t seq, state_retry_t *retry)
{
    client_t *c = store_client_load(s, m, client, client_len);
    if (retry)
        *retry = (state_retry_t){c->mapped_paths, c->mapped_paths_len, c->at};
    if (!c->known || seq > c->seq)
        return STATE_SEQ_NEW;
    return seq == c->seq ? STATE_SEQ_DUPLICATE : STATE_SEQ_STALE;
}

static int by_age(const void *a, const void *b)
{
    const aged_t *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    /* Equal ages (a flush that applied nothing leaves the count as it was) go by id,
     * so that every instance forgets the same clients. */
    int c = memcmp(x->id, y->id, x->id_len < y->id_len ? x->id_len : y->id_len);
    return c ? c : (x->id_len > y->id_len) - (x->id_len < y->id_len);
}

/* The model's client records as the step leaves them: RocksDB's, with the cache's
 * newer state of this step (records written, records expired). @returns how many;
 * with ages, each one's id and age too (caller frees). Reads the ages only when
 * asked: counting needs the keys alone. */
size_t store_clients_scan(state_store_t *s, state_model_t *m, aged_t **ages)
{
    aged_t *all = NULL;
    size_t n = 0, cap = 0;
    store_key_t prefix;
    store_key_start(&prefix, s, STATE_ITEM_CLIENT);
    store_key_add_id(&prefix, m->id, m->id_len);
    store_model_scan_t scan;
    store_model_scan_open(&scan, s, prefix.p, prefix.len);
    rocksdb_iterator_t *it = scan.it;
    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < prefix.len || memcmp(k, prefix.p, prefix.len) != 0)
            break;
        const char *id = k + prefix.len;
        size_t id_len = klen - prefix.len, key_len;
        client_t *c = client_find(s, m, id, id_len);
        if (c)
            c->seen = true;
        if (!c || !c->known) {
            char *key = client_key(m, id, id_len, &key_len);
            bool gone = is_expired(s, key, key_len);
            free(key);
            if (gone)
                continue;
        }
        uint64_t at = 0;
        if (c && c->known) {
            at = c->at;
        } else if (ages) {
            const char *v = rocksdb_iter_value(it, &vlen);
            codec_value_t *rec = NULL;
            char derr[64];
            if (codec_msgpack_decode(v, vlen, &codec_limits_trusted, &rec, derr,
                                     sizeof(derr)) == 0 &&
                rec->type == CODEC_VALUE_MAP) {
                const codec_value_t *a = codec_map_get(rec, "at", 2);
                at = a && a->type == CODEC_VALUE_INT ? (uint64_t)a->u.i : 0;
            }
            codec_value_destroy(rec);
        }
        if (ages) {
            if (n == cap)
                all = codec_xrealloc(all, (cap = cap ? cap * 2 : 16) * sizeof(*all));
            all[n] = (aged_t){codec_xmemdup(id, id_len), id_len, at};
        }
        n++;
    }
    store_model_scan_close(&scan);
    store_key_free(&prefix);
    /* Records of this step are not in RocksDB yet: the cache has them. */
    for (client_t *c = m->clients; c; c = c->next) {
        if (c->known && !c->seen) {
            if (ages) {
                if (n == cap)
                    all = codec_xrealloc(all, (cap = cap ? cap * 2 : 16) * sizeof(*all));
                all[n] = (aged_t){codec_xmemdup(c->id, c->id_len), c->id_len, c->at};
            }
            n++;
        }
        c->seen = false;
    }
    if (ages)
        *ages = all;
    return n;
}

/* Keeps the model's client records to the newest clients_per_model (by the command
 * count of their last flush, then by id), deleting the rest. It runs when a new
 * client takes the model an eighth over the limit, so its scan is paid for by that
 * many new clients; and it depends on the stored records alone, so every instance,
 * whatever its cache did, forgets the same clients at the same flush. */
void store_clients_expire(state_store_t *s, state_model_t *m)
{
    aged_t *all = NULL;
    size_t n = store_clients_scan(s, m, &all);
    uint64_t keep = s->conf.clients_per_model;
    if (n > keep) {
        qsort(all, n, sizeof(*all), by_age);
        for (size_t i = 0; i < n - keep; i++) {
            store_key_t k;
            store_key_start(&k, s, STATE_ITEM_CLIENT);
            store_key_add_id(&k, m->id, m->id_len);
            store_key_add(&k, all[i].id, all[i].id_len);
            store_batch_write(s, k.p, k.len, NULL, 0);
            store_key_free(&k);
            size_t key_len;
            char *key = client_key(m, all[i].id, all[i].id_len, &key_len);
            if (!is_expired(s, key, key_len)) {
                expired_t *e = codec_xmalloc(sizeof(*e) + key_len);
                memset(&e->hh, 0, sizeof(e->hh));
                e->key_len = key_len;
                memcpy(e->key, key, key_len);
                HASH_ADD_KEYPTR(hh, s->expired, e->key, e->key_len, e);
            }
            free(key);
            client_t *c = client_find(s, m, all[i].id, all[i].id_len);
            if (c) {
                client_t **link = &m->clients;
                while (*link != c)
                    link = &(*link)->next;
                *link = c->next;
                HASH_DEL(s->clients, c);
                store_client_free(c);
            }
        }
    }
    m->client_records = n > keep ? keep : n;
    for (size_t i = 0; i < n; i++)
        free(all[i].id);
    free(all);
}
