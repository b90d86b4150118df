/* tests/codec/test_value.c - the document tree: ordered maps, copy, equality, size. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "codec/value.h"

#include <xxhash.h>

static codec_value_t *map;

static void setup(void)
{
    map = codec_value_map(0);
}

static void teardown(void)
{
    codec_value_destroy(map);
}

TestSuite(codec_value, .init = setup, .fini = teardown);

static void set_int(codec_value_t *m, const char *key, int64_t i)
{
    codec_map_set(m, key, strlen(key), codec_value_int(i));
}

static void expect_keys(const codec_value_t *m, const char *const *keys, size_t n)
{
    uint32_t pos = 0;
    size_t i = 0;
    const codec_map_entry_t *e;
    while ((e = codec_map_next(m, &pos))) {
        cr_assert_lt(i, n, "more keys than expected");
        cr_assert_str_eq(codec_map_entry_key(e), keys[i]);
        i++;
    }
    cr_assert_eq(i, n, "expected %zu keys, iterated %zu", n, i);
    cr_assert_eq(m->u.map.count, n);
}

Test(codec_value, map_keeps_insertion_order_across_replace_and_delete)
{
    set_int(map, "b", 1);
    set_int(map, "a", 2);
    set_int(map, "10", 3);
    set_int(map, "b", 4); /* replace keeps the position */
    codec_value_destroy(codec_map_take(map, "a", 1));
    set_int(map, "a", 5); /* re-added goes last */
    const char *keys[] = {"b", "10", "a"};
    expect_keys(map, keys, 3);
    cr_assert_eq(codec_map_get(map, "b", 1)->u.i, 4);
    cr_assert_eq(codec_map_get(map, "a", 1)->u.i, 5);
}

Test(codec_value, map_add_refuses_existing_key)
{
    cr_assert_eq(codec_map_add(map, "k", 1, codec_value_int(1)), 0);
    codec_value_t *v = codec_value_int(2);
    cr_assert_eq(codec_map_add(map, "k", 1, v), -1);
    codec_value_destroy(v);
    cr_assert_eq(codec_map_get(map, "k", 1)->u.i, 1);
}

Test(codec_value, keys_with_nul_bytes_are_distinct)
{
    codec_map_set(map, "a\0b", 3, codec_value_int(1));
    codec_map_set(map, "a\0c", 3, codec_value_int(2));
    codec_map_set(map, "a", 1, codec_value_int(3));
    cr_assert_eq(map->u.map.count, 3);
    cr_assert_eq(codec_map_get(map, "a\0c", 3)->u.i, 2);
    cr_assert_null(codec_map_get(map, "a\0d", 3));
}

/* Large maps switch to a hash index; lookups, deletes and order must stay right
 * through index rebuilds and compactions. */
Test(codec_value, large_map_with_churn_matches_a_reference)
{
    enum { N = 20000 };
    static int64_t expected[N]; /* -1 = absent */
    char key[32];
    for (int i = 0; i < N; i++)
        expected[i] = -1;
    unsigned seed = 12345;
    for (int step = 0; step < 200000; step++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % N);
        int len = snprintf(key, sizeof(key), "key-%d", k);
        if ((seed >> 4) % 3 == 0) {
            codec_value_t *v = codec_map_take(map, key, (size_t)len);
            cr_assert_eq(v != NULL, expected[k] >= 0, "take %s", key);
            codec_value_destroy(v);
            expected[k] = -1;
        } else {
            codec_map_set(map, key, (size_t)len, codec_value_int(step));
            expected[k] = step;
        }
    }
    uint32_t live = 0;
    for (int k = 0; k < N; k++) {
        int len = snprintf(key, sizeof(key), "key-%d", k);
        codec_value_t *v = codec_map_get(map, key, (size_t)len);
        if (expected[k] < 0) {
            cr_assert_null(v, "%s should be absent", key);
        } else {
            cr_assert_not_null(v, "%s should be present", key);
            cr_assert_eq(v->u.i, expected[k]);
            live++;
        }
    }
    cr_assert_eq(map->u.map.count, live);
    uint32_t pos = 0, iterated = 0;
    while (codec_map_next(map, &pos))
        iterated++;
    cr_assert_eq(iterated, live);
}

Test(codec_value, lookups_in_a_large_map_do_not_scan)
{ /* 100,000 keys, each found again; past a handful of keys the map must carry a
   * hash index, or these loops would be quadratic (5 * 10^9 key comparisons). */
    char key[32];
    for (int i = 0; i < 100000; i++) {
        int len = snprintf(key, sizeof(key), "%d", i);
        codec_map_set(map, key, (size_t)len, codec_value_int(i));
    }
    for (int i = 0; i < 100000; i++) {
        int len = snprintf(key, sizeof(key), "%d", i);
        cr_assert_eq(codec_map_get(map, key, (size_t)len)->u.i, i);
    }
    cr_assert_not_null(map->u.map.index);
}

static codec_value_t *sample(void)
{
    codec_value_t *doc = codec_value_map(0);
    codec_value_t *arr = codec_value_array(0);
    codec_array_push(arr, codec_value_str("x", 1));
    codec_array_push(arr, codec_value_float(1.5));
    codec_array_push(arr, codec_value_nil());
    codec_map_set(doc, "arr", 3, arr);
    codec_value_t *inner = codec_value_map(0);
    codec_map_set(inner, "flag", 4, codec_value_bool(true));
    codec_map_set(inner, "bin", 3, codec_value_bin("\0\1", 2));
    codec_map_set(doc, "inner", 5, inner);
    codec_map_set(doc, "n", 1, codec_value_int(-7));
    return doc;
}

Test(codec_value, copy_is_deep_and_equal)
{
    codec_value_t *a = sample();
    codec_value_t *b = codec_value_copy(a);
    cr_assert(codec_value_equal(a, b));
    codec_map_set(codec_map_get(b, "inner", 5), "flag", 4, codec_value_bool(false));
    cr_assert_not(codec_value_equal(a, b));
    cr_assert(codec_map_get(codec_map_get(a, "inner", 5), "flag", 4)->u.b);
    codec_value_destroy(a);
    codec_value_destroy(b);
}

Test(codec_value, equality_ignores_key_order_and_number_representation)
{
    codec_value_t *a = codec_value_map(0), *b = codec_value_map(0);
    codec_map_set(a, "x", 1, codec_value_int(1));
    codec_map_set(a, "y", 1, codec_value_str("s", 1));
    codec_map_set(b, "y", 1, codec_value_str("s", 1));
    codec_map_set(b, "x", 1, codec_value_float(1.0));
    cr_assert(codec_value_equal(a, b));
    codec_map_set(b, "x", 1, codec_value_float(1.25));
    cr_assert_not(codec_value_equal(a, b));
    codec_value_destroy(a);
    codec_value_destroy(b);
}

Test(codec_value, mem_size_grows_with_content)
{
    codec_value_t *doc = sample();
    size_t before = codec_value_mem_size(doc);
    cr_assert_gt(before, 6 * sizeof(codec_value_t));
    char big[1000] = {0};
    codec_map_set(doc, "big", 3, codec_value_str(big, sizeof(big)));
    cr_assert_geq(codec_value_mem_size(doc), before + sizeof(big));
    codec_value_destroy(doc);
}

/* Keys whose unseeded XXH3 hashes all end in 13 zero bits: in an index of up to 8192
 * slots an unseeded hash puts them all at slot 0, and each insert walks past all the
 * keys before it (hash flooding: 30,000 such keys in one flush took seconds). */
#define FLOOD_KEYS 1000
static char flood[FLOOD_KEYS][16];

static void flood_keys(void)
{
    int found = 0;
    for (uint32_t i = 0; found < FLOOD_KEYS; i++) {
        char key[16];
        int len = snprintf(key, sizeof(key), "k%u", i);
        if ((XXH3_64bits(key, (size_t)len) & 0x1fff) == 0)
            memcpy(flood[found++], key, (size_t)len + 1);
    }
}

Test(codec_value, keys_crafted_to_collide_do_not_lengthen_probes)
{
    flood_keys();
    for (int i = 0; i < FLOOD_KEYS; i++)
        set_int(map, flood[i], i);
    cr_assert_leq(map->u.map.index_mask + 1, 8192, "an index the keys collide in");
    cr_assert_leq(codec_map_longest_probe(map), 64, "longest probe %u",
                  codec_map_longest_probe(map));
    for (int i = 0; i < FLOOD_KEYS; i++)
        cr_assert_not_null(codec_map_get(map, flood[i], strlen(flood[i])));

    /* Decoded requests build their maps in a zone; copies reuse the hashes. */
    msgpack_zone *zone = msgpack_zone_new(8192);
    codec_value_t *zmap = codec_zone_value(zone, CODEC_VALUE_MAP, FLOOD_KEYS);
    for (int i = 0; i < FLOOD_KEYS; i++)
        cr_assert_eq(codec_zone_map_add(zone, zmap, flood[i], strlen(flood[i]),
                                        codec_zone_value(zone, CODEC_VALUE_NIL, 0)),
                     0);
    cr_assert_leq(codec_map_longest_probe(zmap), 64, "zone map: longest probe %u",
                  codec_map_longest_probe(zmap));
    codec_value_t *copy = codec_value_copy(zmap);
    cr_assert_leq(codec_map_longest_probe(copy), 64, "copy: longest probe %u",
                  codec_map_longest_probe(copy));

    /* Whatever the hash, order is insertion order. */
    uint32_t pos = 0;
    const codec_map_entry_t *e;
    for (int i = 0; (e = codec_map_next(copy, &pos)); i++)
        cr_assert_str_eq(codec_map_entry_key(e), flood[i]);
    codec_value_destroy(copy);
    msgpack_zone_free(zone);
}
