/* tests/codec/test_json.c - JSON decoding and encoding through jansson. */
#include <criterion/criterion.h>
#include <string.h>

#include "codec/json.h"

static char errstr[512];

static codec_value_t *decode_ok(const char *json)
{
    codec_value_t *v = NULL;
    codec_err_t err =
        codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr));
    cr_assert_eq(err, CODEC_OK, "%s: %s", json, errstr);
    return v;
}

static void expect_error(const char *json, codec_err_t expected)
{
    codec_value_t *v = NULL;
    codec_err_t err =
        codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr));
    cr_assert_eq(err, expected, "%s: expected %s, got %s (%s)", json,
                 codec_err_name(expected), codec_err_name(err), errstr);
    cr_assert_null(v);
}

Test(codec_json, integers_stay_integers_and_floats_round_trip)
{
    codec_value_t *v = decode_ok("{\"i\":1,\"f\":1.0,\"g\":0.1,\"big\":9007199254740993,"
                                 "\"neg\":-5,\"e\":1e300}");
    cr_assert_eq(codec_map_get(v, "i", 1)->type, CODEC_VALUE_INT);
    cr_assert_eq(codec_map_get(v, "f", 1)->type, CODEC_VALUE_FLOAT);
    cr_assert_eq(codec_map_get(v, "big", 3)->u.i, 9007199254740993LL);
    char *out = codec_json_encode(v, NULL);
    codec_value_t *w = decode_ok(out);
    cr_assert_eq(codec_map_get(w, "f", 1)->type, CODEC_VALUE_FLOAT);
    cr_assert_eq(codec_map_get(w, "g", 1)->u.f, 0.1);
    cr_assert_eq(codec_map_get(w, "e", 1)->u.f, 1e300);
    cr_assert(codec_value_equal(v, w));
    free(out);
    codec_value_destroy(v);
    codec_value_destroy(w);
}

Test(codec_json, encodes_compactly_in_insertion_order)
{
    codec_value_t *v =
        decode_ok("{\"b\":[true,null,\"\\u0000x\"],\"a\":{}, \"2\":\"\\u00e9\"}");
    char *out = codec_json_encode(v, NULL);
    cr_assert_str_eq(out, "{\"b\":[true,null,\"\\u0000x\"],\"a\":{},\"2\":\"\xc3\xa9\"}");
    free(out);
    codec_value_destroy(v);
}

Test(codec_json, binary_is_written_as_a_node_buffer)
{
    codec_value_t *v = codec_value_bin("\x01\xff", 2);
    char *out = codec_json_encode(v, NULL);
    cr_assert_str_eq(out, "{\"type\":\"Buffer\",\"data\":[1,255]}");
    free(out);
    codec_value_destroy(v);
}

Test(codec_json, rejections_have_codes)
{
    expect_error("{\"a\":1,\"a\":2}", CODEC_ERR_DUPLICATE_KEY);
    expect_error("{\"a\":", CODEC_ERR_TRUNCATED);
    expect_error("{} x", CODEC_ERR_TRAILING_BYTES);
    expect_error("{\"a\":99999999999999999999}", CODEC_ERR_OUT_OF_RANGE);
    expect_error("{\"__proto__\":{}}", CODEC_ERR_FORBIDDEN_KEY);
    expect_error("nope", CODEC_ERR_INVALID_JSON);
    expect_error("\"\xff\"", CODEC_ERR_INVALID_UTF8);
}

Test(codec_json, enforces_the_depth_limit)
{
    char deep[2 * (CODEC_DEFAULT_MAX_DEPTH + 1) + 1];
    size_t n = CODEC_DEFAULT_MAX_DEPTH + 1;
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = '\0';
    expect_error(deep, CODEC_ERR_TOO_DEEP);
    deep[2 * n - 1] = '\0';
    codec_value_t *v = decode_ok(deep + 1);
    codec_value_destroy(v);
}
