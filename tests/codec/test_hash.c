/* tests/codec/test_hash.c - the seeded hash of hash tables keyed by client bytes. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "codec/hash.h"
#define HASH_FUNCTION CODEC_UTHASH_FUNCTION
#include <uthash.h>
#include <xxhash.h>

typedef struct item_s {
    char key[16];
    UT_hash_handle hh;
} item_t;

/* uthash's default hash (Jenkins', unseeded) of key. */
static unsigned jenkins(const char *key, size_t len)
{
    unsigned hashv;
    HASH_JEN(key, len, hashv);
    return hashv;
}

Test(codec_hash, uthash_buckets_stay_short_for_keys_crafted_against_its_default)
{
    /* Ids whose default hashes end in 12 zero bits: with the default, every one of
     * them is in bucket 0 of any table up to 4096 buckets, and each lookup walks
     * them all (model and client ids come from clients). */
    enum { KEYS = 500 };
    static item_t items[KEYS];
    int found = 0;
    for (unsigned i = 0; found < KEYS; i++) {
        int len = snprintf(items[found].key, sizeof(items[found].key), "m%u", i);
        if ((jenkins(items[found].key, (size_t)len) & 0xfff) == 0)
            found++;
    }
    item_t *table = NULL;
    for (int i = 0; i < KEYS; i++)
        HASH_ADD_STR(table, key, &items[i]);
    cr_assert_leq(table->hh.tbl->num_buckets, 4096, "a table the keys collide in");
    unsigned longest = 0;
    for (unsigned b = 0; b < table->hh.tbl->num_buckets; b++)
        if (table->hh.tbl->buckets[b].count > longest)
            longest = table->hh.tbl->buckets[b].count;
    cr_assert_leq(longest, 40, "longest bucket %u of %u", longest,
                  table->hh.tbl->num_buckets);
    for (int i = 0; i < KEYS; i++) {
        item_t *it;
        HASH_FIND_STR(table, items[i].key, it);
        cr_assert_eq(it, &items[i]);
    }
    /* Iteration is insertion order, whatever the hash. */
    int i = 0;
    for (item_t *it = table; it; it = it->hh.next)
        cr_assert_eq(it, &items[i++]);
    HASH_CLEAR(hh, table);
}

Test(codec_hash, is_seeded)
{
    /* Unseeded, it would be XXH3's fixed value; seeded, it differs for some of these
     * keys (for all of them by chance: 2^-256). */
    int same = 0;
    for (int i = 0; i < 8; i++) {
        char key[16];
        int len = snprintf(key, sizeof(key), "key%d", i);
        same += codec_hash(key, (size_t)len) == (uint32_t)XXH3_64bits(key, (size_t)len);
    }
    cr_assert_lt(same, 8);
}
