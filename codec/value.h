/* codec/value.h - the mutable document tree: JSON-like values with ordered maps.
 *
 * Maps keep insertion order (as JavaScript objects do for string keys) and look keys
 * up in O(1): small maps are scanned, larger ones get a hash index (CPython's compact
 * dict layout: an entries array in insertion order plus an index of slots, hashed
 * with a per-process seed, codec/hash.h, against crafted collisions). Documents
 * hold many tiny maps, which is why this is not uthash: its handle costs 56 bytes per
 * entry and every table starts with 32 buckets. */
#ifndef FLUSHOUT_CODEC_VALUE_H
#define FLUSHOUT_CODEC_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack/zone.h>

/* Largest count, seq or command count accepted: JavaScript's Number.MAX_SAFE_INTEGER
 * (2^53 - 1), so every peer can represent every number we send. */
#define CODEC_MAX_SAFE_INTEGER 9007199254740991ull

typedef enum codec_value_type_e {
    CODEC_VALUE_NIL = 0,
    CODEC_VALUE_BOOL,
    CODEC_VALUE_INT,
    CODEC_VALUE_FLOAT,
    CODEC_VALUE_STR,
    CODEC_VALUE_BIN,
    CODEC_VALUE_ARRAY,
    CODEC_VALUE_MAP,
} codec_value_type_t;

typedef struct codec_value_s codec_value_t;

/* Keys shorter than this live inside the entry: most keys are short, and a separate
 * allocation would cost more than the 16 bytes. */
#define CODEC_KEY_INLINE 16

typedef struct codec_map_entry_s {
    union {
        char *ptr;                    /* key_len >= CODEC_KEY_INLINE */
        char bytes[CODEC_KEY_INLINE]; /* key_len < CODEC_KEY_INLINE */
    } key_;                           /* use codec_map_entry_key() */
    uint32_t key_len;
    uint32_t hash;
    codec_value_t *value; /* NULL marks a deleted entry awaiting compaction */
} codec_map_entry_t;

/** The entry's key: NUL-terminated, but may contain NULs (key_len is authoritative). */
static inline const char *codec_map_entry_key(const codec_map_entry_t *e)
{
    return e->key_len < CODEC_KEY_INLINE ? e->key_.bytes : e->key_.ptr;
}

struct codec_value_s {
    codec_value_type_t type;
    union {
        bool b;
        int64_t i;
        double f;
        struct {
            char *ptr; /* NUL-terminated copy, in the same allocation as the value */
            uint32_t len;
        } str; /* CODEC_VALUE_STR and CODEC_VALUE_BIN */
        struct {
            codec_value_t **items;
            uint32_t len, cap;
        } array;
        struct {
            codec_map_entry_t *entries; /* insertion order, with holes */
            uint32_t *index;            /* NULL while the map is small */
            uint32_t used;              /* entries[0..used) incl. holes */
            uint32_t count;             /* live entries */
            uint32_t cap;
            uint32_t index_mask; /* index size - 1 */
        } map;
    } u;
};

/* Constructors. Strings are copied. */
codec_value_t *codec_value_nil(void);
codec_value_t *codec_value_bool(bool b);
codec_value_t *codec_value_int(int64_t i);
codec_value_t *codec_value_float(double f);
codec_value_t *codec_value_str(const char *s, size_t len);
codec_value_t *codec_value_bin(const char *s, size_t len);
codec_value_t *codec_value_array(uint32_t capacity_hint);
codec_value_t *codec_value_map(uint32_t capacity_hint);

/** Frees a value and everything below it. NULL-safe. */
void codec_value_destroy(codec_value_t *v);
codec_value_t *codec_value_copy(const codec_value_t *v);
/** Deep equality; map key order is ignored (as it is for JSON documents). */
bool codec_value_equal(const codec_value_t *a, const codec_value_t *b);
/** Bytes of memory held by the value and everything below it, counting each
 *  allocation as glibc's malloc sizes it (for cache and document size accounting). */
size_t codec_value_mem_size(const codec_value_t *v);
const char *codec_value_type_name(codec_value_type_t type);

/** Appends to an array, taking ownership of item. */
void codec_array_push(codec_value_t *array, codec_value_t *item);

/** @returns the value under key or NULL. The pointer lives until the key is
 *  replaced or deleted. */
codec_value_t *codec_map_get(const codec_value_t *map, const char *key, size_t key_len);
/** Removes every entry, keeping the map's allocations for reuse. */
void codec_map_clear(codec_value_t *map);
/** Sets key to value, taking ownership of value. An existing key keeps its position
 *  and its old value is freed. */
void codec_map_set(codec_value_t *map, const char *key, size_t key_len,
                   codec_value_t *value);
/** Adds a key that must not exist yet, taking ownership of value on success.
 *  @returns 0, or -1 (value not taken) when the key exists. */
int codec_map_add(codec_value_t *map, const char *key, size_t key_len,
                  codec_value_t *value);
/** Removes key and returns its value (caller owns it), or NULL if absent. */
codec_value_t *codec_map_take(codec_value_t *map, const char *key, size_t key_len);
/** @returns the most index slots a lookup of one of map's keys visits (the entries
 *  scanned when the map has no index). Bounded whatever the keys (the index hash is
 *  seeded per process, and at most half full): for tests and diagnostics. */
uint32_t codec_map_longest_probe(const codec_value_t *map);
/** Iterates live entries in insertion order: start with *pos = 0.
 *  @returns the next entry or NULL at the end. */
const codec_map_entry_t *codec_map_next(const codec_value_t *map, uint32_t *pos);

/* Trees in a zone (msgpack-c's bump allocator): the decoders build short-lived input,
 * such as a request, this way, with no malloc or free per value once the zone's chunk
 * is warm. Such trees are read-only and are freed all at once by msgpack_zone_clear(),
 * never by codec_value_destroy(); codec_value_copy() makes a heap tree of one. */

/** A scalar or empty container of type; containers get room for exactly count items
 *  (entries for maps). Strings are copied into the zone. */
codec_value_t *codec_zone_value(msgpack_zone *zone, codec_value_type_t type,
                                uint32_t count);
codec_value_t *codec_zone_bytes(msgpack_zone *zone, codec_value_type_t type,
                                const char *s, size_t len);
/** Adds a key to a zone map that has room for it.
 *  @returns 0, or -1 (nothing added) when the key exists. */
int codec_zone_map_add(msgpack_zone *zone, codec_value_t *map, const char *key,
                       size_t key_len, codec_value_t *value);

#endif
