/* codec/hash.h - the hash of every hash table keyed by client-controlled bytes.
 *
 * Seeded once per process with random bytes, so that a client cannot compute keys
 * that collide (hash flooding: a flush of keys crafted to share one probe chain or
 * bucket turns each insert into a walk of all of them). Nothing observable may depend
 * on it: tables are iterated in insertion order, never in hash order. */
#ifndef FLUSHOUT_CODEC_HASH_H
#define FLUSHOUT_CODEC_HASH_H

#include <stddef.h>
#include <stdint.h>

/** @returns the seeded hash of key[0..len): the same within a process, different
 *  (unpredictably) from one process to the next. */
uint32_t codec_hash(const void *key, size_t len);

/* uthash's hash: define HASH_FUNCTION as this before including <uthash.h> (its
 * default, Jenkins' hash, is unseeded). */
#define CODEC_UTHASH_FUNCTION(keyptr, keylen, hashv) \
    ((hashv) = codec_hash((keyptr), (size_t)(keylen)))

#endif
