/* state/store_key.c - the store's keys: building them, parsing them, and the scan over
 * every record that `inspect` uses. The layout is in state/README.md. */
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "store_int.h"

void store_key_init(store_key_t *k, uint32_t partition, char kind)
{
    k->p = k->buf;
    k->cap = sizeof(k->buf);
    k->buf[0] = (char)(partition >> 24);
    k->buf[1] = (char)(partition >> 16);
    k->buf[2] = (char)(partition >> 8);
    k->buf[3] = (char)partition;
    k->buf[4] = kind;
    k->len = 5;
}

void store_key_start(store_key_t *k, const state_store_t *s, char kind)
{
    store_key_init(k, (uint32_t)s->conf.partition, kind);
}

void store_key_add(store_key_t *k, const void *bytes, size_t len)
{
    if (k->len + len > k->cap) {
        size_t cap = (k->len + len) * 2;
        char *p = codec_xmalloc(cap);
        memcpy(p, k->p, k->len);
        if (k->p != k->buf)
            free(k->p);
        k->p = p;
        k->cap = cap;
    }
    memcpy(k->p + k->len, bytes, len);
    k->len += len;
}

void store_key_add_u64(store_key_t *k, uint64_t v)
{
    unsigned char b[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
    store_key_add(k, b, 8);
}

void store_key_add_id(store_key_t *k, const char *id, size_t len)
{
    unsigned char b[2] = {(unsigned char)(len >> 8), (unsigned char)len};
    store_key_add(k, b, 2);
    store_key_add(k, id, len);
}

void store_key_free(store_key_t *k)
{
    if (k->p != k->buf)
        free(k->p);
}

char *store_key_get(state_store_t *s, store_key_t *k, size_t *len, char **err)
{
    char *v = rocksdb_get(s->db, s->read_options, k->p, k->len, len, err);
    store_key_free(k);
    return v;
}

void store_model_scan_open(store_model_scan_t *sc, state_store_t *s, const char *prefix,
                           size_t prefix_len)
{
    /* The least key above every key with the prefix: the prefix with its last byte
     * below 0xff incremented and the bytes after it dropped. One such byte exists:
     * the kind byte, fifth of every prefix, is a letter. */
    size_t n = prefix_len;
    while ((unsigned char)prefix[n - 1] == 0xff)
        n--;
    store_key_init(&sc->upper, 0, 0);
    sc->upper.len = 0;
    store_key_add(&sc->upper, prefix, n);
    sc->upper.p[n - 1] = (char)((unsigned char)sc->upper.p[n - 1] + 1);
    sc->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_prefix_same_as_start(sc->ro, 1);
    rocksdb_readoptions_set_iterate_upper_bound(sc->ro, sc->upper.p, sc->upper.len);
    sc->it = rocksdb_create_iterator(s->db, sc->ro);
}

void store_model_scan_close(store_model_scan_t *sc)
{
    rocksdb_iter_destroy(sc->it);
    rocksdb_readoptions_destroy(sc->ro);
    store_key_free(&sc->upper);
}

/* `<p> kind <len:u16> <model>` of the kinds whose keys go on after the model id. */
static size_t model_prefix_len(const char *key, size_t len)
{
    if (len < 7 || (key[4] != STATE_ITEM_HISTORY && key[4] != STATE_ITEM_PAST &&
                    key[4] != STATE_ITEM_CLIENT))
        return 0;
    size_t prefix_len = 7 + (size_t)store_be_n(key + 5, 2);
    return prefix_len <= len ? prefix_len : 0;
}

static unsigned char model_prefix_in_domain(void *state, const char *key, size_t len)
{
    (void)state;
    return model_prefix_len(key, len) != 0;
}

static char *model_prefix(void *state, const char *key, size_t len, size_t *prefix_len)
{
    (void)state;
    *prefix_len = model_prefix_len(key, len);
    return (char *)key; /* RocksDB takes a slice of the key, freeing nothing */
}

static void model_prefix_destroy(void *state)
{
    (void)state; /* RocksDB calls it whether or not there is a state */
}

static unsigned char model_prefix_in_range(void *state, const char *key, size_t len)
{
    (void)state, (void)key, (void)len;
    return 0; /* unused by RocksDB */
}

/* Recorded in each table file: a file written under another extractor (or none) is
 * read without its prefix filter. */
static const char *model_prefix_name(void *state)
{
    (void)state;
    return "flushout.model_prefix.1";
}

rocksdb_slicetransform_t *store_key_model_prefix_new(void)
{
    return rocksdb_slicetransform_create(NULL, model_prefix_destroy, model_prefix,
                                         model_prefix_in_domain, model_prefix_in_range,
                                         model_prefix_name);
}

uint64_t store_be_n(const char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}

uint64_t store_be64(const char *p)
{
    return store_be_n(p, 8);
}

/* ---- parsing, and the scan for inspect ---- */

bool store_key_parse(const char *k, size_t len, state_store_item_t *item)
{
    if (len < 5)
        return false;
    uint32_t p = ((uint32_t)(unsigned char)k[0] << 24) |
                 ((uint32_t)(unsigned char)k[1] << 16) |
                 ((uint32_t)(unsigned char)k[2] << 8) | (uint32_t)(unsigned char)k[3];
    if (p == STORE_META_PARTITION)
        return false;
    memset(item, 0, sizeof(*item));
    item->partition = (int32_t)p;
    item->kind = k[4];
    const char *rest = k + 5;
    size_t rest_len = len - 5;
    switch (item->kind) {
    case STATE_ITEM_OFFSET:
    case STATE_ITEM_CHANGES:
    case STATE_ITEM_PARTITIONS:
    case STATE_ITEM_SETTINGS:
        return rest_len == 0;
    case STATE_ITEM_OUTBOX:
        if (rest_len != 8)
            return false;
        item->count = store_be64(rest);
        return true;
    case STATE_ITEM_SNAPSHOT:
    case STATE_ITEM_CHANGED:
        item->model = rest;
        item->model_len = rest_len;
        return true;
    case STATE_ITEM_HISTORY:
    case STATE_ITEM_PAST:
    case STATE_ITEM_CLIENT: {
        size_t prefix_len = model_prefix_len(k, len);
        if (!prefix_len)
            return false;
        size_t mlen = prefix_len - 7;
        item->model = rest + 2;
        item->model_len = mlen;
        if (item->kind == STATE_ITEM_CLIENT) {
            item->client = rest + 2 + mlen;
            item->client_len = rest_len - 2 - mlen;
            return true;
        }
        if (rest_len != 2 + mlen + 8)
            return false;
        item->count = store_be64(rest + 2 + mlen);
        return true;
    }
    }
    return false;
}

int state_store_scan(state_store_t *s,
                     int (*visit)(void *opaque, const state_store_item_t *item),
                     void *opaque, char *errstr, size_t errstr_size)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        state_store_item_t item;
        if (!store_key_parse(k, klen, &item))
            continue;
        item.value = rocksdb_iter_value(it, &item.value_len);
        if ((item.kind == STATE_ITEM_OFFSET || item.kind == STATE_ITEM_CHANGES ||
             item.kind == STATE_ITEM_PARTITIONS) &&
            item.value_len == 8)
            item.count = store_be64(item.value);
        if (visit(opaque, &item))
            break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    return err ? store_fail_rocks(err, "scanning the store", errstr, errstr_size) : 0;
}
