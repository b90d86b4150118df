/* tests/codec/test_reply.c - protocol v1 replies: each kind's exact shape, field order
 * and bytes, error codes and messages, and the packed lists replies splice in.
 *
 * Replies are decoded again and printed as JSON, then compared with the shapes
 * codec/PROTOCOL.md gives, written out by hand; two are checked byte for byte. */
#include <criterion/criterion.h>
#include <string.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "codec/reply.h"

static msgpack_sbuffer out;
static msgpack_packer pk;
static codec_flush_result_t r;

static const codec_str_t model = {"m", 1}, client = {"c", 1};
static const uint64_t seq = 7;
static const codec_reply_to_t to = {&model, &client, &seq};

static void setup(void)
{
    msgpack_sbuffer_init(&out);
    msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
    codec_flush_result_init(&r);
}

static void teardown(void)
{
    codec_flush_result_destroy(&r);
    msgpack_sbuffer_destroy(&out);
}

TestSuite(codec_reply, .init = setup, .fini = teardown);

static codec_value_t *json_value(const char *json)
{
    codec_value_t *v;
    char err[256];
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, err, sizeof(err)),
                 CODEC_OK, "%s: %s", json, err);
    return v;
}

/* Appends the item json, packed as msgpack, to list. */
static void add_item(codec_packed_t *list, const char *json)
{
    codec_value_t *v = json_value(json);
    codec_msgpack_pack_value(&list->pk, v);
    codec_value_destroy(v);
    codec_packed_end_item(list);
}

/* Asserts that bytes are one well-formed msgpack value (strict decoding: valid UTF-8,
 * no duplicate keys, nothing after it) that prints as want. */
static void expect_json(const char *bytes, size_t len, const char *want)
{
    codec_value_t *v;
    char err[256];
    cr_assert_eq(
        codec_msgpack_decode(bytes, len, &codec_limits_trusted, &v, err, sizeof(err)),
        CODEC_OK, "%s", err);
    char *json = codec_json_encode(v, NULL);
    cr_assert_str_eq(json, want);
    free(json);
    codec_value_destroy(v);
}

/* Asserts that the reply packed so far prints as want, and starts the next one. */
static void expect_reply(const char *want)
{
    expect_json(out.data, out.size, want);
    msgpack_sbuffer_clear(&out);
}

Test(codec_reply, an_error_reply_is_these_bytes)
{
    codec_reply_pack_error(&pk, &to, CODEC_ERR_STALE_SEQ, "old");
    /* clang-format off */
    const unsigned char want[] = {
        0x85,                                                         /* map of 5 */
        0xa4, 't', 'y', 'p', 'e', 0xa5, 'e', 'r', 'r', 'o', 'r',      /* type: error */
        0xa5, 'm', 'o', 'd', 'e', 'l', 0xa1, 'm',                     /* model: m */
        0xa6, 'c', 'l', 'i', 'e', 'n', 't', 0xa1, 'c',                /* client: c */
        0xa3, 's', 'e', 'q', 0x07,                                    /* seq: 7 */
        0xa5, 'e', 'r', 'r', 'o', 'r', 0x82,                          /* error: map of 2 */
        0xa4, 'c', 'o', 'd', 'e',                                     /* code: */
        0xa9, 's', 't', 'a', 'l', 'e', '_', 's', 'e', 'q',            /* stale_seq */
        0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e', 0xa3, 'o', 'l', 'd', /* message: old */
    };
    /* clang-format on */
    cr_assert_eq(out.size, sizeof(want));
    cr_assert_arr_eq(out.data, want, sizeof(want));
}

/* A seq of 2^53 - 1, the largest any peer can hold, as a msgpack uint64. */
Test(codec_reply, a_large_seq_is_a_uint64_and_no_model_no_client_are_left_out)
{
    const uint64_t big = 9007199254740991ull;
    codec_reply_to_t only_seq = {NULL, NULL, &big};
    codec_reply_pack_error(&pk, &only_seq, CODEC_ERR_TRUNCATED, "");
    /* clang-format off */
    const unsigned char want[] = {
        0x83,                                                         /* map of 3 */
        0xa4, 't', 'y', 'p', 'e', 0xa5, 'e', 'r', 'r', 'o', 'r',      /* type: error */
        0xa3, 's', 'e', 'q',                                          /* seq: */
        0xcf, 0x00, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,         /* uint64 2^53-1 */
        0xa5, 'e', 'r', 'r', 'o', 'r', 0x82,                          /* error: map of 2 */
        0xa4, 'c', 'o', 'd', 'e',                                     /* code: */
        0xa9, 't', 'r', 'u', 'n', 'c', 'a', 't', 'e', 'd',            /* truncated */
        0xa7, 'm', 'e', 's', 's', 'a', 'g', 'e', 0xa0,                /* message: "" */
    };
    /* clang-format on */
    cr_assert_eq(out.size, sizeof(want));
    cr_assert_arr_eq(out.data, want, sizeof(want));
}

Test(codec_reply, an_error_reply_names_whatever_of_model_client_and_seq_is_known)
{
    const codec_reply_to_t nobody = {NULL, NULL, NULL};
    codec_reply_pack_error(&pk, &nobody, CODEC_ERR_INVALID_JSON, "line 1");
    expect_reply("{\"type\":\"error\",\"error\":{\"code\":\"invalid_json\",\"message\":"
                 "\"line 1\"}}");
    const codec_reply_to_t model_only = {&model, NULL, NULL};
    codec_reply_pack_error(&pk, &model_only, CODEC_ERR_MISSING_FIELD, "no client");
    expect_reply("{\"type\":\"error\",\"model\":\"m\",\"error\":{\"code\":"
                 "\"missing_field\",\"message\":\"no client\"}}");
    const uint64_t zero = 0;
    const codec_reply_to_t client_seq = {NULL, &client, &zero};
    codec_reply_pack_error(&pk, &client_seq, CODEC_ERR_MISSING_KEY, "no key");
    expect_reply("{\"type\":\"error\",\"client\":\"c\",\"seq\":0,\"error\":{\"code\":"
                 "\"missing_key\",\"message\":\"no key\"}}");
}

/* The names are codec/PROTOCOL.md's table, in the enum's order. */
Test(codec_reply, every_error_code_goes_out_under_its_documented_name)
{
    static const char *const names[] = {
        "truncated",      "trailing_bytes",      "reserved_byte",   "unsupported_ext",
        "invalid_utf8",   "invalid_json",        "too_deep",        "too_large",
        "duplicate_key",  "forbidden_key",       "not_finite",      "out_of_range",
        "wrong_type",     "missing_field",       "unknown_type",    "unknown_action",
        "model_mismatch", "history_unavailable", "bad_range",       "stale_seq",
        "store_failed",   "missing_key",         "wrong_partition", "bad_reply_topic",
        "reply_too_large"};
    cr_assert_eq(sizeof(names) / sizeof(names[0]), CODEC_ERR__COUNT - 1,
                 "a code without a documented name");
    for (int code = CODEC_ERR_TRUNCATED; code < CODEC_ERR__COUNT; code++) {
        codec_reply_pack_error(&pk, &to, (codec_err_t)code, "x");
        char want[256];
        snprintf(want, sizeof(want),
                 "{\"type\":\"error\",\"model\":\"m\",\"client\":\"c\",\"seq\":7,"
                 "\"error\":{\"code\":\"%s\",\"message\":\"x\"}}",
                 names[code - 1]);
        expect_reply(want);
    }
}

/* Messages quote input that may have been cut inside a character: the reply is still
 * valid UTF-8 (expect_reply decodes strictly), each bad byte a '?'. */
Test(codec_reply, a_message_that_is_not_utf8_is_mended_byte_by_byte)
{
    codec_reply_pack_error(&pk, &to, CODEC_ERR_TOO_LARGE, "key \"ab\xc3");
    expect_reply(
        "{\"type\":\"error\",\"model\":\"m\",\"client\":\"c\",\"seq\":7,\"error\":"
        "{\"code\":\"too_large\",\"message\":\"key \\\"ab?\"}}");
    codec_reply_pack_error(&pk, &to, CODEC_ERR_INVALID_UTF8,
                           "\xff\xfe \xe2\x82\xac \xed\xa0\x80");
    /* The euro sign stays; the lone surrogate (3 bytes) is three '?'. */
    expect_reply(
        "{\"type\":\"error\",\"model\":\"m\",\"client\":\"c\",\"seq\":7,\"error\":"
        "{\"code\":\"invalid_utf8\",\"message\":\"?? \xe2\x82\xac ???\"}}");
}

Test(codec_reply, a_snapshot_reply_carries_count_and_document)
{
    codec_value_t *doc = json_value("{\"a\":{\"b\":[1,2.5,\"x\",true,null]},\"z\":{}}");
    codec_reply_pack_snapshot(&pk, &to, 5, doc);
    expect_reply("{\"type\":\"snapshot\",\"model\":\"m\",\"client\":\"c\",\"seq\":7,"
                 "\"snapshot\":{\"commandCount\":5,\"document\":{\"a\":{\"b\":[1,2.5,"
                 "\"x\",true,null]},\"z\":{}}}}");
    codec_value_destroy(doc);

    /* The same snapshot as stored: the object alone. */
    doc = json_value("{}");
    codec_snapshot_pack(&pk, 0, doc);
    expect_reply("{\"commandCount\":0,\"document\":{}}");
    codec_value_destroy(doc);
}

Test(codec_reply, a_history_reply_carries_from_and_the_completions)
{
    codec_packed_t list;
    codec_packed_init(&list);
    codec_reply_pack_history(&pk, &to, 4, &list);
    expect_reply("{\"type\":\"history\",\"model\":\"m\",\"client\":\"c\",\"seq\":7,"
                 "\"from\":4,\"completions\":[]}");
    add_item(&list,
             "{\"command\":{\"action\":\"create\",\"path\":[]},\"createdId\":\"1\"}");
    add_item(&list, "{\"command\":{\"action\":\"detete\",\"path\":[\"1\"]}}");
    codec_reply_pack_history(&pk, &to, 4, &list);
    expect_reply("{\"type\":\"history\",\"model\":\"m\",\"client\":\"c\",\"seq\":7,"
                 "\"from\":4,\"completions\":[{\"command\":{\"action\":\"create\","
                 "\"path\":[]},\"createdId\":\"1\"},{\"command\":{\"action\":\"detete\","
                 "\"path\":[\"1\"]}}]}");
    codec_packed_destroy(&list);
}

#define HEAD "{\"type\":\"flushResult\",\"model\":\"m\",\"client\":\"c\",\"seq\":7,"
#define C1   "{\"command\":{\"action\":\"create\",\"path\":[]},\"createdId\":\"a\"}"
#define C2   "{\"command\":{\"action\":\"update\",\"path\":[\"a\"],\"props\":{\"n\":1}}}"
#define H1   "{\"command\":{\"action\":\"create\",\"path\":[]},\"createdId\":\"h\"}"

Test(codec_reply, a_flush_result_without_sync_or_errors_is_just_what_was_applied)
{
    r.applied_from = 0;
    codec_reply_pack_flush(&pk, &to, &r);
    expect_reply(HEAD "\"applied\":{\"from\":0,\"completions\":[]}}");
    r.applied_from = 3;
    add_item(&r.applied, C1);
    add_item(&r.applied, C2);
    codec_reply_pack_flush(&pk, &to, &r);
    expect_reply(HEAD "\"applied\":{\"from\":3,\"completions\":[" C1 "," C2 "]}}");
}

/* flushout's spelling of delete is "detete"; a command without a path has []. */
Test(codec_reply, refused_commands_are_listed_in_errors_after_the_rest)
{
    add_item(&r.applied, C1);
    codec_value_t *path = json_value("[\"a\",\"b\"]");
    codec_flush_result_add_error(&r, CODEC_ACTION_DELETE, path, "no such path");
    codec_value_destroy(path);
    codec_flush_result_add_error(&r, CODEC_ACTION_CREATE, NULL, "bad");
    codec_reply_pack_flush(&pk, &to, &r);
    expect_reply(HEAD "\"applied\":{\"from\":0,\"completions\":[" C1 "]},\"errors\":["
                      "{\"action\":\"detete\",\"path\":[\"a\",\"b\"],\"errorMessage\":"
                      "\"no such path\"},"
                      "{\"action\":\"create\",\"path\":[],\"errorMessage\":\"bad\"}]}");
}

/* A partial sync's diff is the history the client missed followed by what this flush
 * applied; mappedPaths is always there. */
Test(codec_reply, a_partial_sync_is_the_missed_history_then_the_applied_commands)
{
    r.applied_from = 4;
    add_item(&r.applied, C2);
    r.sync = CODEC_SYNC_PARTIAL;
    r.diff_from = 3;
    add_item(&r.diff_history, H1);
    codec_reply_pack_flush(&pk, &to, &r);
    expect_reply(HEAD "\"applied\":{\"from\":4,\"completions\":[" C2 "]},"
                      "\"sync\":{\"isPartial\":true,\"diff\":{\"from\":3,\"completions\":"
                      "[" H1 "," C2 "]},\"mappedPaths\":{}}}");

    codec_value_t *mapped = json_value("{\"a\":[\"b\"],\"a,x\":[\"b\",\"x\"]}");
    r.mapped_paths = mapped;
    add_item(&r.errors,
             "{\"action\":\"update\",\"path\":[\"q\"],\"errorMessage\":\"e\"}");
    codec_reply_pack_flush(&pk, &to, &r);
    expect_reply(HEAD "\"applied\":{\"from\":4,\"completions\":[" C2 "]},"
                      "\"sync\":{\"isPartial\":true,\"diff\":{\"from\":3,\"completions\":"
                      "[" H1 "," C2 "]},\"mappedPaths\":{\"a\":[\"b\"],\"a,x\":[\"b\","
                      "\"x\"]}},\"errors\":[{\"action\":\"update\",\"path\":[\"q\"],"
                      "\"errorMessage\":\"e\"}]}");
    codec_value_destroy(mapped);
}

Test(codec_reply, a_full_sync_is_the_latest_snapshot)
{
    r.applied_from = 0;
    r.sync = CODEC_SYNC_FULL;
    r.latest_count = 9;
    codec_value_t *doc = json_value("{\"a\":{\"n\":1}}");
    r.latest_document = doc;
    codec_reply_pack_flush(&pk, &to, &r);
    expect_reply(HEAD
                 "\"applied\":{\"from\":0,\"completions\":[]},\"sync\":{\"isPartial\":"
                 "false,\"latest\":{\"commandCount\":9,\"document\":{\"a\":{\"n\":1}}},"
                 "\"mappedPaths\":{}}}");
    codec_value_destroy(doc);
}

/* A retry answered again: "duplicate" comes first, and the original reply's
 * mappedPaths, kept as bytes, go out as they were (over any decoded ones). */
Test(codec_reply, a_duplicate_carries_the_original_mapped_paths_as_stored)
{
    codec_value_t *original = json_value("{\"1\":[\"3\"]}");
    msgpack_sbuffer raw;
    msgpack_sbuffer_init(&raw);
    msgpack_packer rpk;
    msgpack_packer_init(&rpk, &raw, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&rpk, original);
    codec_value_t *other = json_value("{\"x\":[\"y\"]}");

    r.duplicate = true;
    r.applied_from = 2;
    r.sync = CODEC_SYNC_PARTIAL;
    r.diff_from = 0;
    add_item(&r.diff_history, H1);
    r.mapped_paths = other;
    r.mapped_paths_raw = raw.data;
    r.mapped_paths_raw_len = raw.size;
    codec_reply_pack_flush(&pk, &to, &r);
    expect_reply(HEAD "\"duplicate\":true,\"applied\":{\"from\":2,\"completions\":[]},"
                      "\"sync\":{\"isPartial\":true,\"diff\":{\"from\":0,\"completions\":"
                      "[" H1 "]},\"mappedPaths\":{\"1\":[\"3\"]}}}");
    codec_value_destroy(other);
    codec_value_destroy(original);
    msgpack_sbuffer_destroy(&raw);
}

/* Items packed one by one, more than the first allocation of offsets holds. */
Test(codec_reply, a_packed_list_gives_back_each_item_and_packs_as_an_array)
{
    codec_packed_t list;
    codec_packed_init(&list);
    msgpack_sbuffer one;
    msgpack_sbuffer_init(&one);
    msgpack_packer opk;
    msgpack_packer_init(&opk, &one, msgpack_sbuffer_write);
    for (int i = 0; i < 100; i++) {
        msgpack_pack_int(&list.pk, i * 1000); /* 1, 3 and 5 bytes long */
        codec_packed_end_item(&list);
    }
    cr_assert_eq(list.count, 100);
    for (uint32_t i = 0; i < 100; i++) {
        msgpack_sbuffer_clear(&one);
        msgpack_pack_int(&opk, (int)i * 1000);
        size_t len;
        const char *item = codec_packed_item(&list, i, &len);
        cr_assert_eq(len, one.size, "item %u", i);
        cr_assert_arr_eq(item, one.data, len, "item %u", i);
    }
    /* As an array: a header for 100 (array16) and the items' bytes. */
    codec_packed_pack_array(&pk, &list);
    cr_assert_eq(out.size, 3 + list.buf.size);
    cr_assert_eq((unsigned char)out.data[0], 0xdc);
    cr_assert_eq((unsigned char)out.data[1], 0);
    cr_assert_eq((unsigned char)out.data[2], 100);
    cr_assert_arr_eq(out.data + 3, list.buf.data, list.buf.size);
    msgpack_sbuffer_clear(&out);

    /* Reset empties it for reuse. */
    codec_packed_reset(&list);
    cr_assert_eq(list.count, 0);
    codec_packed_pack_array(&pk, &list);
    expect_reply("[]");
    add_item(&list, "\"x\"");
    codec_packed_pack_array(&pk, &list);
    expect_reply("[\"x\"]");
    msgpack_sbuffer_destroy(&one);
    codec_packed_destroy(&list);
}

/* Already-encoded items: added whole, or written several at once and their ends
 * marked after. */
Test(codec_reply, raw_items_keep_their_bytes_and_boundaries)
{
    codec_packed_t list;
    codec_packed_init(&list);
    const char a[] = {(char)0xa1, 'a'};               /* "a" */
    const char bc[] = {0x01, (char)0x92, 0x02, 0x03}; /* 1, [2,3] */
    codec_packed_add_raw(&list, a, sizeof(a));
    codec_packed_write(&list, bc, sizeof(bc));
    codec_packed_mark_item(&list, sizeof(a) + 1);
    codec_packed_mark_item(&list, sizeof(a) + sizeof(bc));
    cr_assert_eq(list.count, 3);
    size_t len;
    const char *item = codec_packed_item(&list, 0, &len);
    cr_assert_eq(len, 2);
    cr_assert_arr_eq(item, a, 2);
    item = codec_packed_item(&list, 1, &len);
    cr_assert_eq(len, 1);
    cr_assert_eq(item[0], 0x01);
    item = codec_packed_item(&list, 2, &len);
    cr_assert_eq(len, 3);
    cr_assert_arr_eq(item, bc + 1, 3);
    codec_packed_pack_array(&pk, &list);
    expect_reply("[\"a\",1,[2,3]]");
    codec_packed_destroy(&list);
}
