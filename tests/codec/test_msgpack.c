/* tests/codec/test_msgpack.c - strict msgpack decoding and encoding. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "codec/msgpack.h"
#include "codec/utf8.h"

static char errstr[512];

static codec_err_t decode(const void *buf, size_t len, codec_value_t **out)
{
    return codec_msgpack_decode(buf, len, NULL, out, errstr, sizeof(errstr));
}

static void expect_error(const void *buf, size_t len, codec_err_t expected,
                         const char *in_message)
{
    codec_value_t *v = (codec_value_t *)0x1;
    codec_err_t err = decode(buf, len, &v);
    cr_assert_eq(err, expected, "expected %s, got %s (%s)", codec_err_name(expected),
                 codec_err_name(err), errstr);
    cr_assert_null(v);
    if (in_message)
        cr_assert(strstr(errstr, in_message), "message \"%s\" lacks \"%s\"", errstr,
                  in_message);
}

Test(codec_msgpack, round_trips_every_type)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    msgpack_pack_str_with_body(&pk, "nil", 3);
    msgpack_pack_nil(&pk);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_true(&pk);
    msgpack_pack_str_with_body(&pk, "neg", 3);
    msgpack_pack_int64(&pk, INT64_MIN);
    msgpack_pack_str_with_body(&pk, "big", 3);
    msgpack_pack_uint64(&pk, INT64_MAX);
    msgpack_pack_str_with_body(&pk, "f32", 3);
    msgpack_pack_float(&pk, 0.5f);
    msgpack_pack_str_with_body(&pk, "f64", 3);
    msgpack_pack_double(&pk, 0.1);
    msgpack_pack_str_with_body(&pk, "s", 1);
    msgpack_pack_str_with_body(&pk, "h\0\xc3\xa9", 4);
    msgpack_pack_str_with_body(&pk, "bin", 3);
    msgpack_pack_bin_with_body(&pk, "\xff\x00", 2);
    msgpack_pack_str_with_body(&pk, "arr", 3);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 0);
    msgpack_pack_array(&pk, 0);

    codec_value_t *v;
    cr_assert_eq(decode(sb.data, sb.size, &v), CODEC_OK, "%s", errstr);
    cr_assert_eq(v->u.map.count, 9);
    cr_assert_eq(codec_map_get(v, "nil", 3)->type, CODEC_VALUE_NIL);
    cr_assert_eq(codec_map_get(v, "neg", 3)->u.i, INT64_MIN);
    cr_assert_eq(codec_map_get(v, "big", 3)->u.i, INT64_MAX);
    cr_assert_eq(codec_map_get(v, "f32", 3)->u.f, 0.5);
    cr_assert_eq(codec_map_get(v, "f64", 3)->u.f, 0.1);
    cr_assert_eq(codec_map_get(v, "s", 1)->u.str.len, 4);
    cr_assert_eq(codec_map_get(v, "bin", 3)->type, CODEC_VALUE_BIN);

    msgpack_sbuffer again;
    msgpack_sbuffer_init(&again);
    msgpack_packer pk2;
    msgpack_packer_init(&pk2, &again, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk2, v);
    codec_value_t *w;
    cr_assert_eq(decode(again.data, again.size, &w), CODEC_OK, "%s", errstr);
    cr_assert(codec_value_equal(v, w));
    codec_value_destroy(v);
    codec_value_destroy(w);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&again);
}

Test(codec_msgpack, rejects_truncated_input)
{
    expect_error("\x81\xa1"
                 "a",
                 3, CODEC_ERR_TRUNCATED, "$.a");
    expect_error("\xcb\x00\x00", 3, CODEC_ERR_TRUNCATED, NULL);
    expect_error("\xa5"
                 "abc",
                 4, CODEC_ERR_TRUNCATED, NULL);
    expect_error("", 0, CODEC_ERR_TRUNCATED, NULL);
    expect_error("\xda\x00", 2, CODEC_ERR_TRUNCATED, NULL);
}

Test(codec_msgpack, rejects_trailing_bytes)
{
    expect_error("\x80\xc0", 2, CODEC_ERR_TRAILING_BYTES, "1 trailing byte");
}

Test(codec_msgpack, rejects_reserved_byte_and_ext_types)
{
    expect_error("\x91\xc1", 2, CODEC_ERR_RESERVED_BYTE, "$[0]");
    expect_error("\xd6\xff\x00\x00\x00\x00", 6, CODEC_ERR_UNSUPPORTED_EXT, NULL);
    expect_error("\xc7\x01\x05\x00", 4, CODEC_ERR_UNSUPPORTED_EXT, NULL);
}

Test(codec_msgpack, rejects_counts_larger_than_the_input_before_allocating)
{
    /* 2^32-1 elements claimed by a 5-byte header */
    expect_error("\xdd\xff\xff\xff\xff", 5, CODEC_ERR_TOO_LARGE, "array header");
    expect_error("\xdf\xff\xff\xff\xff\xc0", 6, CODEC_ERR_TOO_LARGE, "map header");
    expect_error("\xdb\xff\xff\xff\xff", 5, CODEC_ERR_TOO_LARGE, "limit");
}

Test(codec_msgpack, rejects_strings_over_the_limit)
{
    codec_limits_t limits = codec_limits_default;
    limits.max_string_bytes = 3;
    codec_value_t *v;
    cr_assert_eq(codec_msgpack_decode("\xa4"
                                      "abcd",
                                      5, &limits, &v, errstr, sizeof(errstr)),
                 CODEC_ERR_TOO_LARGE);
    cr_assert_eq(codec_msgpack_decode("\xa3"
                                      "abc",
                                      4, &limits, &v, errstr, sizeof(errstr)),
                 CODEC_OK);
    codec_value_destroy(v);
}

Test(codec_msgpack, rejects_duplicate_and_non_string_and_proto_keys)
{
    expect_error("\x82\xa1"
                 "a\x01\xa1"
                 "a\x02",
                 7, CODEC_ERR_DUPLICATE_KEY, "$.a");
    expect_error("\x81\x01\x02", 3, CODEC_ERR_WRONG_TYPE, "map key is not a string");
    expect_error("\x81\xa9__proto__\xc0", 12, CODEC_ERR_FORBIDDEN_KEY, "__proto__");
}

Test(codec_msgpack, rejects_invalid_utf8_in_strings_and_keys)
{
    expect_error("\xa2\xc3\x28", 3, CODEC_ERR_INVALID_UTF8, NULL);
    expect_error("\x81\xa1\xff\xc0", 4, CODEC_ERR_INVALID_UTF8, NULL);
    expect_error("\xa3\xed\xa0\x80", 4, CODEC_ERR_INVALID_UTF8, NULL); /* surrogate */
    expect_error("\xa2\xc0\x80", 3, CODEC_ERR_INVALID_UTF8, NULL);     /* overlong NUL */
    /* binary may hold anything */
    codec_value_t *v;
    cr_assert_eq(decode("\xc4\x02\xc3\x28", 4, &v), CODEC_OK);
    codec_value_destroy(v);
}

Test(codec_msgpack, rejects_non_finite_floats_and_huge_unsigned)
{
    expect_error("\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", 9, CODEC_ERR_NOT_FINITE, NULL);
    expect_error("\xca\x7f\x80\x00\x00", 5, CODEC_ERR_NOT_FINITE, NULL);
    expect_error("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, CODEC_ERR_OUT_OF_RANGE, NULL);
}

static void nested_arrays(size_t depth, char **buf, size_t *len)
{
    *buf = malloc(depth + 1);
    memset(*buf, 0x91, depth);
    (*buf)[depth] = (char)0xc0;
    *len = depth + 1;
}

Test(codec_msgpack, enforces_the_depth_limit_without_recursion)
{
    char *buf;
    size_t len;
    codec_value_t *v;
    nested_arrays(CODEC_DEFAULT_MAX_DEPTH, &buf, &len);
    cr_assert_eq(decode(buf, len, &v), CODEC_OK, "%s", errstr);
    codec_value_destroy(v);
    free(buf);

    nested_arrays(CODEC_DEFAULT_MAX_DEPTH + 1, &buf, &len);
    expect_error(buf, len, CODEC_ERR_TOO_DEEP, "depth limit");
    free(buf);

    nested_arrays(10000, &buf, &len);
    expect_error(buf, len, CODEC_ERR_TOO_DEEP, NULL);
    free(buf);
}

/* Trusted data nests up to CODEC_TRUSTED_MAX_DEPTH: the decoder's stacks start small
 * and grow on the way down, in heap and zone trees alike. */
Test(codec_msgpack, trusted_limits_read_values_nested_to_the_trusted_depth)
{
    char *buf;
    size_t len;
    codec_value_t *v;
    nested_arrays(CODEC_TRUSTED_MAX_DEPTH, &buf, &len);
    cr_assert_eq(
        codec_msgpack_decode(buf, len, &codec_limits_trusted, &v, errstr, sizeof(errstr)),
        CODEC_OK, "%s", errstr);
    size_t depth = 0;
    for (const codec_value_t *at = v; at->type == CODEC_VALUE_ARRAY;
         at = at->u.array.items[0])
        depth++;
    cr_assert_eq(depth, CODEC_TRUSTED_MAX_DEPTH);
    codec_value_destroy(v);

    msgpack_zone *zone = msgpack_zone_new(4096);
    cr_assert_eq(codec_msgpack_decode_zone(zone, NULL, buf, len, &codec_limits_trusted,
                                           &v, errstr, sizeof(errstr)),
                 CODEC_OK, "%s", errstr);
    depth = 0;
    for (const codec_value_t *at = v; at->type == CODEC_VALUE_ARRAY;
         at = at->u.array.items[0])
        depth++;
    cr_assert_eq(depth, CODEC_TRUSTED_MAX_DEPTH);
    msgpack_zone_free(zone);
    free(buf);

    nested_arrays(CODEC_TRUSTED_MAX_DEPTH + 1, &buf, &len);
    cr_assert_eq(
        codec_msgpack_decode(buf, len, &codec_limits_trusted, &v, errstr, sizeof(errstr)),
        CODEC_ERR_TOO_DEEP);
    cr_assert(strstr(errstr, "depth limit"), "%s", errstr);
    free(buf);

    /* An error below the first growth names where it is, with path entries written
     * after the stacks moved: 69 levels of arrays, then [nil, nil, 0xc1]. */
    char deep[73];
    memset(deep, 0x91, 69);
    memcpy(deep + 69, "\x93\xc0\xc0\xc1", 4);
    cr_assert_eq(codec_msgpack_decode(deep, sizeof(deep), &codec_limits_trusted, &v,
                                      errstr, sizeof(errstr)),
                 CODEC_ERR_RESERVED_BYTE);
    char want[512] = "$";
    for (int i = 0; i < 69; i++)
        strcat(want, "[0]");
    strcat(want, "[2]: ");
    cr_assert(!strncmp(errstr, want, strlen(want)), "got %s, want %s...", errstr, want);
}

Test(codec_msgpack, error_names_the_position)
{
    /* {"a":[1,{"b":0xc1}]} */
    const char in[] = "\x81\xa1"
                      "a\x92\x01\x81\xa1"
                      "b\xc1";
    expect_error(in, sizeof(in) - 1, CODEC_ERR_RESERVED_BYTE, "$.a[1].b");
}

Test(codec_msgpack, utf8_sanitize_replaces_only_bad_bytes)
{
    char s[] = "ok\xc3\xa9\xc3";
    codec_utf8_sanitize(s, 5);
    cr_assert_str_eq(s, "ok\xc3\xa9?");
}

/* {"client":"c1","deep":[[[...10,000 levels...]]],"seq":7} */
Test(codec_msgpack, identify_finds_the_sender_past_what_cannot_be_decoded)
{
    size_t depth = 10000, len = 0;
    char *buf = malloc(depth + 64);
    memcpy(buf,
           "\x83\xa6"
           "client"
           "\xa2"
           "c1"
           "\xa4"
           "deep",
           15);
    len = 15;
    memset(buf + len, 0x91, depth); /* [[[...1]]] */
    len += depth;
    buf[len++] = 0x01;
    memcpy(buf + len,
           "\xa3"
           "seq"
           "\x07",
           5);
    len += 5;
    codec_identity_t id;
    codec_msgpack_identify(buf, len, &id);
    cr_assert_eq(id.client_len, 2);
    cr_assert_eq(memcmp(id.client, "c1", 2), 0);
    cr_assert(id.has_seq);
    cr_assert_eq(id.seq, 7);
    cr_assert_null(id.model);

    codec_msgpack_identify(buf, 40, &id); /* cut short inside "deep": the client stands */
    cr_assert_not_null(id.client);
    cr_assert(!id.has_seq);
    free(buf);
}

Test(codec_msgpack, identify_stops_at_lies_and_wrong_types)
{
    codec_identity_t id;
    /* {"x": array32 claiming 2^32-1 elements, "client":"c"} */
    const char lie[] = "\x82\xa1x\xdd\xff\xff\xff\xff\xa6"
                       "client"
                       "\xa1"
                       "c";
    codec_msgpack_identify(lie, sizeof(lie) - 1, &id);
    cr_assert_null(id.client, "nothing after a count larger than the input");

    /* {"client":5,"seq":2^53,"model":"\xff"} */
    const char wrong[] = "\x83\xa6"
                         "client"
                         "\x05\xa3"
                         "seq"
                         "\xcf\x00\x20\x00\x00\x00\x00"
                         "\x00\x00\xa5"
                         "model"
                         "\xa1\xff";
    codec_msgpack_identify(wrong, sizeof(wrong) - 1, &id);
    cr_assert_null(id.client);
    cr_assert(!id.has_seq, "seq beyond 2^53-1");
    cr_assert_null(id.model, "not UTF-8");

    codec_msgpack_identify("\x92\xa6"
                           "client\xa1"
                           "c",
                           10, &id);
    cr_assert_null(id.client, "not a map");
    codec_msgpack_identify("", 0, &id);
    cr_assert_null(id.client);
}

Test(codec_msgpack, skip_and_find_locate_values_however_deep)
{
    /* {"a": 1, "deep": [[[...[7]...]]] (3000 levels), "list": [true, "x"]} */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "a", 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_str_with_body(&pk, "deep", 4);
    size_t deep_at = sb.size;
    for (int i = 0; i < 3000; i++)
        msgpack_pack_array(&pk, 1);
    msgpack_pack_int(&pk, 7);
    size_t deep_end = sb.size;
    msgpack_pack_str_with_body(&pk, "list", 4);
    size_t list_at = sb.size;
    msgpack_pack_array(&pk, 2);
    msgpack_pack_true(&pk);
    msgpack_pack_str_with_body(&pk, "x", 1);

    size_t off = 0;
    cr_assert(codec_msgpack_map_find(sb.data, sb.size, &off, "deep", 4));
    cr_assert_eq(off, deep_at);
    cr_assert(codec_msgpack_skip(sb.data, sb.size, &off));
    cr_assert_eq(off, deep_end);
    off = 0;
    cr_assert(codec_msgpack_map_find(sb.data, sb.size, &off, "list", 4));
    cr_assert_eq(off, list_at);
    uint32_t n;
    cr_assert(codec_msgpack_array_open(sb.data, sb.size, &off, &n));
    cr_assert_eq(n, 2);
    cr_assert(codec_msgpack_skip(sb.data, sb.size, &off));
    cr_assert(codec_msgpack_skip(sb.data, sb.size, &off));
    cr_assert_eq(off, sb.size);

    off = 0;
    cr_assert_not(codec_msgpack_map_find(sb.data, sb.size, &off, "absent", 6));
    off = 0;
    cr_assert_not(codec_msgpack_array_open(sb.data, sb.size, &off, &n), "a map");
    off = deep_at;
    cr_assert_not(codec_msgpack_skip(sb.data, deep_end - 1, &off), "cut short");
    off = sb.size;
    cr_assert_not(codec_msgpack_skip(sb.data, sb.size, &off), "nothing left");
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_msgpack, scalars_are_read_where_they_lie)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_str_with_body(&pk, "flushResult", 11);
    size_t long_at = sb.size;
    char text[300];
    memset(text, 'x', sizeof(text));
    msgpack_pack_str_with_body(&pk, text, sizeof(text)); /* str 16 */
    size_t ints_at = sb.size;
    msgpack_pack_uint64(&pk, 7);
    msgpack_pack_uint64(&pk, 1ull << 40);
    size_t others_at = sb.size;
    msgpack_pack_int64(&pk, -1);
    msgpack_pack_bin_with_body(&pk, "ab", 2);
    msgpack_pack_array(&pk, 0);

    size_t off = 0, n;
    const char *s;
    cr_assert(codec_msgpack_read_str(sb.data, sb.size, &off, &s, &n));
    cr_assert(n == 11 && !memcmp(s, "flushResult", 11));
    cr_assert_eq(off, long_at);
    cr_assert(codec_msgpack_read_str(sb.data, sb.size, &off, &s, &n));
    cr_assert(n == sizeof(text) && s[0] == 'x' && s[n - 1] == 'x');
    uint64_t v;
    cr_assert_not(codec_msgpack_read_uint(sb.data, sb.size, &(size_t){long_at}, &v),
                  "a string is no integer");
    off = ints_at;
    cr_assert(codec_msgpack_read_uint(sb.data, sb.size, &off, &v) && v == 7);
    cr_assert(codec_msgpack_read_uint(sb.data, sb.size, &off, &v) && v == 1ull << 40);
    cr_assert_eq(off, others_at);
    cr_assert_not(codec_msgpack_read_uint(sb.data, sb.size, &off, &v), "negative");
    cr_assert_eq(off, others_at, "a failed read leaves the offset");
    cr_assert(codec_msgpack_skip(sb.data, sb.size, &off));
    cr_assert_not(codec_msgpack_read_str(sb.data, sb.size, &off, &s, &n), "bin");
    cr_assert(codec_msgpack_skip(sb.data, sb.size, &off));
    cr_assert_not(codec_msgpack_read_str(sb.data, sb.size, &off, &s, &n), "an array");
    cr_assert_not(codec_msgpack_read_uint(sb.data, sb.size, &off, &v), "an array");
    off = long_at;
    cr_assert_not(codec_msgpack_read_str(sb.data, long_at + 100, &off, &s, &n),
                  "cut short");
    cr_assert_eq(off, long_at);
    msgpack_sbuffer_destroy(&sb);
}
