/* codec/value.c - the mutable document tree: JSON-like values with ordered maps. */
#include "value.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "hash.h"

/* Maps up to this many entries are scanned; past it they get a hash index. */
#define MAP_SCAN_MAX   8
#define SLOT_EMPTY     0u
#define SLOT_DELETED   1u
#define SLOT_FIRST_IDX 2u /* a slot holding entry i stores i + SLOT_FIRST_IDX */

static codec_value_t *value_new(codec_value_type_t type)
{
    codec_value_t *v = codec_xcalloc(1, sizeof(*v));
    v->type = type;
    return v;
}

codec_value_t *codec_value_nil(void)
{
    return value_new(CODEC_VALUE_NIL);
}

codec_value_t *codec_value_bool(bool b)
{
    codec_value_t *v = value_new(CODEC_VALUE_BOOL);
    v->u.b = b;
    return v;
}

codec_value_t *codec_value_int(int64_t i)
{
    codec_value_t *v = value_new(CODEC_VALUE_INT);
    v->u.i = i;
    return v;
}

codec_value_t *codec_value_float(double f)
{
    codec_value_t *v = value_new(CODEC_VALUE_FLOAT);
    v->u.f = f;
    return v;
}

/* Fills a string or binary value whose bytes follow it in the same allocation. */
static codec_value_t *bytes_fill(codec_value_t *v, codec_value_type_t type, const char *s,
                                 size_t len)
{
    v->type = type;
    v->u.str.ptr = (char *)(v + 1);
    if (len)
        memcpy(v->u.str.ptr, s, len);
    v->u.str.ptr[len] = '\0';
    v->u.str.len = (uint32_t)len;
    return v;
}

/* One allocation holds the value and its bytes. */
static codec_value_t *bytes_new(codec_value_type_t type, const char *s, size_t len)
{
    return bytes_fill(codec_xmalloc(sizeof(codec_value_t) + len + 1), type, s, len);
}

codec_value_t *codec_value_str(const char *s, size_t len)
{
    return bytes_new(CODEC_VALUE_STR, s, len);
}

codec_value_t *codec_value_bin(const char *s, size_t len)
{
    return bytes_new(CODEC_VALUE_BIN, s, len);
}

/* A container's first items, when the caller knows how many are coming. */
static void *reserve(uint32_t count, size_t size)
{
    return count ? codec_xmalloc(count * size) : NULL;
}

codec_value_t *codec_value_array(uint32_t capacity_hint)
{
    codec_value_t *v = value_new(CODEC_VALUE_ARRAY);
    v->u.array.items = reserve(capacity_hint, sizeof(*v->u.array.items));
    v->u.array.cap = capacity_hint;
    return v;
}

codec_value_t *codec_value_map(uint32_t capacity_hint)
{
    codec_value_t *v = value_new(CODEC_VALUE_MAP);
    v->u.map.entries = reserve(capacity_hint, sizeof(*v->u.map.entries));
    v->u.map.cap = capacity_hint;
    return v;
}

static void entry_free(codec_map_entry_t *e)
{
    if (e->key_len >= CODEC_KEY_INLINE)
        free(e->key_.ptr);
    codec_value_destroy(e->value);
    e->value = NULL;
}

static void entries_free(codec_value_t *map)
{
    for (uint32_t i = 0; i < map->u.map.used; i++)
        if (map->u.map.entries[i].value)
            entry_free(&map->u.map.entries[i]);
}

void codec_value_destroy(codec_value_t *v)
{
    if (!v)
        return;
    switch (v->type) {
    case CODEC_VALUE_ARRAY:
        for (uint32_t i = 0; i < v->u.array.len; i++)
            codec_value_destroy(v->u.array.items[i]);
        free(v->u.array.items);
        break;
    case CODEC_VALUE_MAP:
        entries_free(v);
        free(v->u.map.entries);
        free(v->u.map.index);
        break;
    default:
        break;
    }
    free(v);
}

const char *codec_value_type_name(codec_value_type_t type)
{
    switch (type) {
    case CODEC_VALUE_NIL:
        return "nil";
    case CODEC_VALUE_BOOL:
        return "boolean";
    case CODEC_VALUE_INT:
        return "integer";
    case CODEC_VALUE_FLOAT:
        return "float";
    case CODEC_VALUE_STR:
        return "string";
    case CODEC_VALUE_BIN:
        return "binary";
    case CODEC_VALUE_ARRAY:
        return "array";
    case CODEC_VALUE_MAP:
        return "map";
    }
    return "unknown";
}

void codec_array_push(codec_value_t *array, codec_value_t *item)
{
    if (array->u.array.len == array->u.array.cap) {
        uint32_t cap = array->u.array.cap ? array->u.array.cap * 2 : 4;
        array->u.array.items =
            codec_xrealloc(array->u.array.items, cap * sizeof(*array->u.array.items));
        array->u.array.cap = cap;
    }
    array->u.array.items[array->u.array.len++] = item;
}

/* ---- maps ---- */

/* Seeded per process (codec/hash.h): keys crafted to share a probe chain cannot be
 * computed in advance. Only the index uses it; maps iterate in insertion order. */
static uint32_t key_hash(const char *key, size_t len)
{
    return codec_hash(key, len);
}

static void index_insert(codec_value_t *map, uint32_t hash, uint32_t idx)
{
    uint32_t mask = map->u.map.index_mask;
    uint32_t s = hash & mask;
    while (map->u.map.index[s] >= SLOT_FIRST_IDX)
        s = (s + 1) & mask;
    map->u.map.index[s] = idx + SLOT_FIRST_IDX;
}

/* Rebuilds the index for the current entries, sized to at least twice `used` so a
 * probe always meets an empty slot. */
static void index_rebuild(codec_value_t *map, uint32_t min_entries)
{
    uint32_t size = 16;
    while (size < min_entries * 2)
        size *= 2;
    free(map->u.map.index);
    map->u.map.index = codec_xcalloc(size, sizeof(uint32_t));
    map->u.map.index_mask = size - 1;
    for (uint32_t i = 0; i < map->u.map.used; i++) {
        codec_map_entry_t *e = &map->u.map.entries[i];
        if (e->value) {
            e->hash = key_hash(codec_map_entry_key(e), e->key_len);
            index_insert(map, e->hash, i);
        }
    }
}

/* @returns the entry index of key, or -1. With slot_out, also the index slot. */
static int64_t map_find(const codec_value_t *map, const char *key, size_t len,
                        uint32_t hash, uint32_t *slot_out)
{
    const codec_map_entry_t *entries = map->u.map.entries;
    if (!map->u.map.index) {
        for (uint32_t i = 0; i < map->u.map.used; i++)
            if (entries[i].value && entries[i].key_len == len &&
                (len == 0 || codec_map_entry_key(&entries[i])[0] == key[0]) &&
                memcmp(codec_map_entry_key(&entries[i]), key, len) == 0)
                return i;
        return -1;
    }
    uint32_t mask = map->u.map.index_mask;
    for (uint32_t s = hash & mask;; s = (s + 1) & mask) {
        uint32_t slot = map->u.map.index[s];
        if (slot == SLOT_EMPTY)
            return -1;
        if (slot == SLOT_DELETED)
            continue;
        const codec_map_entry_t *e = &entries[slot - SLOT_FIRST_IDX];
        if (e->hash == hash && e->key_len == len &&
            memcmp(codec_map_entry_key(e), key, len) == 0) {
            if (slot_out)
                *slot_out = s;
            return slot - SLOT_FIRST_IDX;
        }
    }
}

/* Squeezes out deleted entries, keeping order. */
static void map_compact(codec_value_t *map)
{
    uint32_t w = 0;
    for (uint32_t r = 0; r < map->u.map.used; r++)
        if (map->u.map.entries[r].value)
            map->u.map.entries[w++] = map->u.map.entries[r];
    map->u.map.used = w;
}

static void map_append(codec_value_t *map, const char *key, size_t len, uint32_t hash,
                       codec_value_t *value)
{
    bool reindex = false;
    if (map->u.map.used == map->u.map.cap) {
        if (map->u.map.count <= map->u.map.used / 2 && map->u.map.used > 0) {
            map_compact(map);
            reindex = map->u.map.index != NULL;
        } else {
            uint32_t cap = map->u.map.cap ? map->u.map.cap * 2 : 4;
            map->u.map.entries =
                codec_xrealloc(map->u.map.entries, cap * sizeof(*map->u.map.entries));
            map->u.map.cap = cap;
        }
    }
    uint32_t idx = map->u.map.used++;
    codec_map_entry_t *e = &map->u.map.entries[idx];
    if (len < CODEC_KEY_INLINE) {
        memcpy(e->key_.bytes, key, len);
        e->key_.bytes[len] = '\0';
    } else {
        e->key_.ptr = codec_xmemdup(key, len);
    }
    e->key_len = (uint32_t)len;
    e->hash = hash;
    e->value = value;
    map->u.map.count++;

    if (map->u.map.index) {
        if (reindex || map->u.map.used * 2 > map->u.map.index_mask + 1)
            index_rebuild(map, map->u.map.used * 2);
        else
            index_insert(map, hash, idx);
    } else if (map->u.map.used > MAP_SCAN_MAX) {
        index_rebuild(map, map->u.map.used * 2);
    }
}

codec_value_t *codec_map_get(const codec_value_t *map, const char *key, size_t key_len)
{
    uint32_t hash = map->u.map.index ? key_hash(key, key_len) : 0;
    int64_t i = map_find(map, key, key_len, hash, NULL);
    return i < 0 ? NULL : map->u.map.entries[i].value;
}

void codec_map_set(codec_value_t *map, const char *key, size_t key_len,
                   codec_value_t *value)
{
    uint32_t hash = map->u.map.index ? key_hash(key, key_len) : 0;
    int64_t i = map_find(map, key, key_len, hash, NULL);
    if (i >= 0) {
        codec_value_destroy(map->u.map.entries[i].value);
        map->u.map.entries[i].value = value;
        return;
    }
    map_append(map, key, key_len, hash, value);
}

int codec_map_add(codec_value_t *map, const char *key, size_t key_len,
                  codec_value_t *value)
{
    uint32_t hash = map->u.map.index ? key_hash(key, key_len) : 0;
    if (map_find(map, key, key_len, hash, NULL) >= 0)
        return -1;
    map_append(map, key, key_len, hash, value);
    return 0;
}

codec_value_t *codec_map_take(codec_value_t *map, const char *key, size_t key_len)
{
    uint32_t hash = map->u.map.index ? key_hash(key, key_len) : 0;
    uint32_t slot = 0;
    int64_t i = map_find(map, key, key_len, hash, &slot);
    if (i < 0)
        return NULL;
    codec_map_entry_t *e = &map->u.map.entries[i];
    codec_value_t *value = e->value;
    if (e->key_len >= CODEC_KEY_INLINE)
        free(e->key_.ptr);
    e->value = NULL;
    map->u.map.count--;
    if (map->u.map.index)
        map->u.map.index[slot] = SLOT_DELETED;
    if (map->u.map.count == 0) {
        map->u.map.used = 0;
        if (map->u.map.index)
            memset(map->u.map.index, 0,
                   (map->u.map.index_mask + 1) * sizeof(*map->u.map.index));
    } else if ((uint32_t)i + 1 == map->u.map.used && !map->u.map.index) {
        /* A hole at the end need not wait for compaction, unless an index slot is
         * left marked deleted for it: the index is rebuilt (its deleted marks
         * dropped) only as `used` grows, so reusing the entry would let create and
         * delete pairs fill it with marks until a lookup of a missing key never
         * meets an empty slot and loops for ever. */
        map->u.map.used--;
    }
    return value;
}

void codec_map_clear(codec_value_t *map)
{
    entries_free(map);
    map->u.map.used = 0;
    map->u.map.count = 0;
    if (map->u.map.index)
        memset(map->u.map.index, 0,
               (map->u.map.index_mask + 1) * sizeof(*map->u.map.index));
}

uint32_t codec_map_longest_probe(const codec_value_t *map)
{
    if (!map->u.map.index)
        return map->u.map.used;
    uint32_t mask = map->u.map.index_mask, longest = 0;
    for (uint32_t s = 0; s <= mask; s++) {
        uint32_t slot = map->u.map.index[s];
        if (slot < SLOT_FIRST_IDX)
            continue;
        uint32_t home = map->u.map.entries[slot - SLOT_FIRST_IDX].hash & mask;
        uint32_t probes = ((s - home) & mask) + 1;
        if (probes > longest)
            longest = probes;
    }
    return longest;
}

const codec_map_entry_t *codec_map_next(const codec_value_t *map, uint32_t *pos)
{
    while (*pos < map->u.map.used) {
        const codec_map_entry_t *e = &map->u.map.entries[(*pos)++];
        if (e->value)
            return e;
    }
    return NULL;
}

/* ---- whole trees ---- */

codec_value_t *codec_value_copy(const codec_value_t *v)
{
    switch (v->type) {
    case CODEC_VALUE_NIL:
        return codec_value_nil();
    case CODEC_VALUE_BOOL:
        return codec_value_bool(v->u.b);
    case CODEC_VALUE_INT:
        return codec_value_int(v->u.i);
    case CODEC_VALUE_FLOAT:
        return codec_value_float(v->u.f);
    case CODEC_VALUE_STR:
    case CODEC_VALUE_BIN:
        return bytes_new(v->type, v->u.str.ptr, v->u.str.len);
    case CODEC_VALUE_ARRAY: {
        codec_value_t *c = codec_value_array(v->u.array.len);
        for (uint32_t i = 0; i < v->u.array.len; i++)
            c->u.array.items[i] = codec_value_copy(v->u.array.items[i]);
        c->u.array.len = v->u.array.len;
        return c;
    }
    case CODEC_VALUE_MAP: {
        codec_value_t *c = codec_value_map(v->u.map.count);
        uint32_t pos = 0;
        const codec_map_entry_t *e;
        while ((e = codec_map_next(v, &pos)))
            map_append(c, codec_map_entry_key(e), e->key_len,
                       v->u.map.index ? e->hash : 0, codec_value_copy(e->value));
        return c;
    }
    }
    return codec_value_nil();
}

static bool is_number(const codec_value_t *v)
{
    return v->type == CODEC_VALUE_INT || v->type == CODEC_VALUE_FLOAT;
}

bool codec_value_equal(const codec_value_t *a, const codec_value_t *b)
{
    if (a->type != b->type) {
        /* JSON has one number type: 1 and 1.0 are the same document value. */
        if (is_number(a) && is_number(b)) {
            const codec_value_t *i = a->type == CODEC_VALUE_INT ? a : b;
            const codec_value_t *f = a->type == CODEC_VALUE_FLOAT ? a : b;
            return (double)i->u.i == f->u.f && (int64_t)f->u.f == i->u.i;
        }
        return false;
    }
    switch (a->type) {
    case CODEC_VALUE_NIL:
        return true;
    case CODEC_VALUE_BOOL:
        return a->u.b == b->u.b;
    case CODEC_VALUE_INT:
        return a->u.i == b->u.i;
    case CODEC_VALUE_FLOAT:
        return a->u.f == b->u.f;
    case CODEC_VALUE_STR:
    case CODEC_VALUE_BIN:
        return a->u.str.len == b->u.str.len &&
               memcmp(a->u.str.ptr, b->u.str.ptr, a->u.str.len) == 0;
    case CODEC_VALUE_ARRAY:
        if (a->u.array.len != b->u.array.len)
            return false;
        for (uint32_t i = 0; i < a->u.array.len; i++)
            if (!codec_value_equal(a->u.array.items[i], b->u.array.items[i]))
                return false;
        return true;
    case CODEC_VALUE_MAP: {
        if (a->u.map.count != b->u.map.count)
            return false;
        uint32_t pos = 0;
        const codec_map_entry_t *e;
        while ((e = codec_map_next(a, &pos))) {
            const codec_value_t *other =
                codec_map_get(b, codec_map_entry_key(e), e->key_len);
            if (!other || !codec_value_equal(e->value, other))
                return false;
        }
        return true;
    }
    }
    return false;
}

/* What malloc really takes for a request of n bytes (glibc: an 8-byte header, 16-byte
 * granules, 32 bytes at least), so the estimate matches resident memory. */
static size_t chunk(size_t n)
{
    size_t c = (n + 8 + 15) & ~(size_t)15;
    return c < 32 ? 32 : c;
}

size_t codec_value_mem_size(const codec_value_t *v)
{
    size_t size;
    switch (v->type) {
    case CODEC_VALUE_STR:
    case CODEC_VALUE_BIN:
        size = chunk(sizeof(*v) + v->u.str.len + 1);
        break;
    case CODEC_VALUE_ARRAY:
        size = chunk(sizeof(*v));
        if (v->u.array.cap)
            size += chunk((size_t)v->u.array.cap * sizeof(*v->u.array.items));
        for (uint32_t i = 0; i < v->u.array.len; i++)
            size += codec_value_mem_size(v->u.array.items[i]);
        break;
    case CODEC_VALUE_MAP: {
        size = chunk(sizeof(*v));
        if (v->u.map.cap)
            size += chunk((size_t)v->u.map.cap * sizeof(*v->u.map.entries));
        if (v->u.map.index)
            size += chunk(((size_t)v->u.map.index_mask + 1) * sizeof(uint32_t));
        uint32_t pos = 0;
        const codec_map_entry_t *e;
        while ((e = codec_map_next(v, &pos)))
            size += (e->key_len >= CODEC_KEY_INLINE ? chunk((size_t)e->key_len + 1) : 0) +
                    codec_value_mem_size(e->value);
        break;
    }
    default:
        size = chunk(sizeof(*v));
        break;
    }
    return size;
}

/* ---- trees in a zone ---- */

static void *zone_alloc(msgpack_zone *zone, size_t size)
{
    void *p = msgpack_zone_malloc(zone, size ? size : 1);
    if (!p) {
        fprintf(stderr, "flushout: out of memory allocating %zu bytes\n", size);
        abort();
    }
    return p;
}

codec_value_t *codec_zone_value(msgpack_zone *zone, codec_value_type_t type,
                                uint32_t count)
{
    codec_value_t *v = zone_alloc(zone, sizeof(*v));
    memset(v, 0, sizeof(*v));
    v->type = type;
    if (type == CODEC_VALUE_ARRAY && count) {
        v->u.array.items = zone_alloc(zone, count * sizeof(*v->u.array.items));
        v->u.array.cap = count;
    } else if (type == CODEC_VALUE_MAP && count) {
        v->u.map.entries = zone_alloc(zone, count * sizeof(*v->u.map.entries));
        v->u.map.cap = count;
        if (count > MAP_SCAN_MAX) {
            uint32_t size = 16;
            while (size < count * 2)
                size *= 2;
            v->u.map.index = zone_alloc(zone, size * sizeof(uint32_t));
            memset(v->u.map.index, 0, size * sizeof(uint32_t));
            v->u.map.index_mask = size - 1;
        }
    }
    return v;
}

codec_value_t *codec_zone_bytes(msgpack_zone *zone, codec_value_type_t type,
                                const char *s, size_t len)
{
    return bytes_fill(zone_alloc(zone, sizeof(codec_value_t) + len + 1), type, s, len);
}

int codec_zone_map_add(msgpack_zone *zone, codec_value_t *map, const char *key,
                       size_t key_len, codec_value_t *value)
{
    uint32_t hash = map->u.map.index ? key_hash(key, key_len) : 0;
    if (map_find(map, key, key_len, hash, NULL) >= 0)
        return -1;
    uint32_t idx = map->u.map.used++;
    codec_map_entry_t *e = &map->u.map.entries[idx];
    if (key_len < CODEC_KEY_INLINE) {
        memcpy(e->key_.bytes, key, key_len);
        e->key_.bytes[key_len] = '\0';
    } else {
        e->key_.ptr = zone_alloc(zone, key_len + 1);
        memcpy(e->key_.ptr, key, key_len);
        e->key_.ptr[key_len] = '\0';
    }
    e->key_len = (uint32_t)key_len;
    e->hash = hash;
    e->value = value;
    map->u.map.count++;
    if (map->u.map.index)
        index_insert(map, hash, idx);
    return 0;
}
