/* tests/codec/test_request.c - protocol v1 request validation and packing. */
#include <criterion/criterion.h>
#include <string.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "codec/request.h"

static char errstr[512];
static codec_request_t req;
static msgpack_zone *use_zone; /* decode() decodes into it when set */

static msgpack_sbuffer record;

static void teardown(void)
{
    codec_request_clear(&req);
    msgpack_sbuffer_destroy(&record);
}

TestSuite(codec_request, .fini = teardown);

/* Parses JSON, packs it as msgpack and decodes that as a request keyed by key. */
static codec_err_t decode(const char *json, const char *key)
{
    codec_value_t *v;
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr)),
                 CODEC_OK, "%s", errstr);
    codec_request_clear(&req);
    /* The request may point into the record's bytes: keep them until the next one. */
    msgpack_sbuffer_clear(&record);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &record, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);
    return codec_request_decode(record.data, record.size, key, key ? strlen(key) : 0,
                                NULL, use_zone, &req, errstr, sizeof(errstr));
}

static void expect(const char *json, const char *key, codec_err_t expected,
                   const char *in_message)
{
    codec_err_t err = decode(json, key);
    cr_assert_eq(err, expected, "%s: expected %s, got %s (%s)", json,
                 codec_err_name(expected), codec_err_name(err), errstr);
    if (in_message)
        cr_assert(strstr(errstr, in_message), "message \"%s\" lacks \"%s\"", errstr,
                  in_message);
}

Test(codec_request, decodes_a_flush)
{
    expect(
        "{\"type\":\"flush\",\"client\":\"c1\",\"seq\":7,\"from\":3,"
        "\"context\":{\"user\":\"u\"},\"completions\":["
        "{\"command\":{\"action\":\"create\",\"path\":[\"a\"],\"props\":{\"x\":1},"
        "\"parentDefault\":{}},\"createdId\":\"5\"},"
        "{\"command\":{\"action\":\"delete\",\"path\":[\"a\",\"5\"]},\"createdId\":null},"
        "{\"command\":{\"action\":\"update\",\"path\":null,\"props\":null}}]}",
        "model-1", CODEC_OK, NULL);
    cr_assert_eq(req.type, CODEC_REQUEST_FLUSH);
    cr_assert_eq(req.model.len, 7);
    cr_assert_eq(memcmp(req.model.ptr, "model-1", 7), 0);
    cr_assert_eq(req.seq, 7);
    cr_assert_eq(req.from, 3);
    cr_assert_not_null(req.context);
    cr_assert_eq(req.n_completions, 3);
    cr_assert_eq(req.completions[0].command.action, CODEC_ACTION_CREATE);
    cr_assert_not_null(req.completions[0].command.parent_default);
    cr_assert_str_eq(req.completions[0].created_id->u.str.ptr, "5");
    /* "delete" is accepted as an alias of flushout's "detete"; nil means absent */
    cr_assert_eq(req.completions[1].command.action, CODEC_ACTION_DELETE);
    cr_assert_null(req.completions[1].created_id);
    cr_assert_null(req.completions[2].command.path);
    cr_assert_null(req.completions[2].command.props);
}

Test(codec_request, decodes_snapshot_and_history)
{
    expect("{\"type\":\"snapshot\",\"model\":\"m\",\"client\":\"c\",\"seq\":1}", NULL,
           CODEC_OK, NULL);
    cr_assert_eq(req.type, CODEC_REQUEST_SNAPSHOT);
    cr_assert_eq(req.model.len, 1);
    expect("{\"type\":\"history\",\"client\":\"c\",\"seq\":2,\"from\":1,\"to\":4}", "m",
           CODEC_OK, NULL);
    cr_assert(req.has_to);
    cr_assert_eq(req.to, 4);
    expect("{\"type\":\"history\",\"client\":\"c\",\"seq\":2,\"from\":1,\"to\":null}",
           "m", CODEC_OK, NULL);
    cr_assert_not(req.has_to);
}

Test(codec_request, a_snapshot_request_may_name_a_version)
{
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1}", "m", CODEC_OK, NULL);
    cr_assert_not(req.has_at);
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1,\"at\":0}", "m", CODEC_OK,
           NULL);
    cr_assert(req.has_at);
    cr_assert_eq(req.at, 0);
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1,\"at\":9007199254740991}",
           "m", CODEC_OK, NULL);
    cr_assert_eq(req.at, 9007199254740991ull);
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1,\"at\":null}", "m",
           CODEC_OK, NULL);
    cr_assert_not(req.has_at, "nil is absent, as everywhere");
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1,\"at\":-1}", "m",
           CODEC_ERR_OUT_OF_RANGE, "at:");
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1,\"at\":9007199254740992}",
           "m", CODEC_ERR_OUT_OF_RANGE, "at:");
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1,\"at\":\"3\"}", "m",
           CODEC_ERR_WRONG_TYPE, "at:");
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1,\"at\":1.5}", "m",
           CODEC_ERR_WRONG_TYPE, "at:");
    /* Elsewhere it is an unknown field: ignored, whatever it holds. */
    expect("{\"type\":\"history\",\"client\":\"c\",\"seq\":2,\"from\":1,\"at\":\"x\"}",
           "m", CODEC_OK, NULL);
    cr_assert_not(req.has_at);
    expect("{\"type\":\"flush\",\"client\":\"c\",\"seq\":2,\"from\":0,\"at\":-4,"
           "\"completions\":[]}",
           "m", CODEC_OK, NULL);
    cr_assert_not(req.has_at);
}

Test(codec_request, rejects_bad_envelopes_naming_the_field)
{
    expect("[1]", "m", CODEC_ERR_WRONG_TYPE, "request");
    expect("{\"client\":\"c\",\"seq\":1}", "m", CODEC_ERR_MISSING_FIELD, "type");
    expect("{\"type\":\"push\",\"client\":\"c\",\"seq\":1}", "m", CODEC_ERR_UNKNOWN_TYPE,
           "push");
    expect("{\"type\":\"snapshot\",\"seq\":1}", "m", CODEC_ERR_MISSING_FIELD, "client");
    expect("{\"type\":\"snapshot\",\"client\":5,\"seq\":1}", "m", CODEC_ERR_WRONG_TYPE,
           "client");
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":-1}", "m",
           CODEC_ERR_OUT_OF_RANGE, "seq");
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":9007199254740992}", "m",
           CODEC_ERR_OUT_OF_RANGE, "seq");
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1.5}", "m",
           CODEC_ERR_WRONG_TYPE, "seq");
    expect("{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1}", NULL,
           CODEC_ERR_MISSING_FIELD, "model");
    expect("{\"type\":\"snapshot\",\"model\":\"x\",\"client\":\"c\",\"seq\":1}", "m",
           CODEC_ERR_MODEL_MISMATCH, "record key");
    expect("{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"completions\":[]}", "m",
           CODEC_ERR_MISSING_FIELD, "from");
    expect("{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0}", "m",
           CODEC_ERR_MISSING_FIELD, "completions");
    expect(
        "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,\"completions\":{}}",
        "m", CODEC_ERR_WRONG_TYPE, "completions");
    expect("{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,\"completions\":[],"
           "\"context\":[]}",
           "m", CODEC_ERR_WRONG_TYPE, "context");
}

Test(codec_request, keeps_identification_of_a_rejected_request)
{
    expect("{\"type\":\"flush\",\"client\":\"c9\",\"seq\":4,\"from\":\"x\","
           "\"completions\":[]}",
           "m", CODEC_ERR_WRONG_TYPE, "from");
    cr_assert(req.has_model && req.has_client && req.has_seq);
    cr_assert_eq(req.seq, 4);
    cr_assert_eq(memcmp(req.client.ptr, "c9", 2), 0);
}

#define FLUSH(completions)                                                       \
    "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,\"completions\":" \
    "[" completions "]}"

Test(codec_request, rejects_bad_completions_naming_the_field)
{
    expect(FLUSH("1"), "m", CODEC_ERR_WRONG_TYPE, "completions[0]");
    expect(FLUSH("{}"), "m", CODEC_ERR_MISSING_FIELD, "completions[0].command");
    expect(FLUSH("{\"command\":{}}"), "m", CODEC_ERR_MISSING_FIELD,
           "completions[0].command.action");
    expect(
        FLUSH(
            "{\"command\":{\"action\":\"create\"}},{\"command\":{\"action\":\"move\"}}"),
        "m", CODEC_ERR_UNKNOWN_ACTION, "completions[1].command.action");
    expect(FLUSH("{\"command\":{\"action\":\"create\",\"path\":\"a\"}}"), "m",
           CODEC_ERR_WRONG_TYPE, "completions[0].command.path");
    expect(FLUSH("{\"command\":{\"action\":\"create\",\"path\":[\"a\",1]}}"), "m",
           CODEC_ERR_WRONG_TYPE, "completions[0].command.path[1]");
    expect(FLUSH("{\"command\":{\"action\":\"create\",\"path\":[\"__proto__\"]}}"), "m",
           CODEC_ERR_FORBIDDEN_KEY, "path[0]");
    expect(FLUSH("{\"command\":{\"action\":\"create\"},\"createdId\":\"__proto__\"}"),
           "m", CODEC_ERR_FORBIDDEN_KEY, "createdId");
    expect(FLUSH("{\"command\":{\"action\":\"create\"},\"createdId\":5}"), "m",
           CODEC_ERR_WRONG_TYPE, "createdId");
    expect(FLUSH("{\"command\":{\"action\":\"update\",\"props\":[1]}}"), "m",
           CODEC_ERR_WRONG_TYPE, "completions[0].command.props");
    expect(FLUSH("{\"command\":{\"action\":\"create\",\"parentDefault\":\"x\"}}"), "m",
           CODEC_ERR_WRONG_TYPE, "parentDefault");
}

Test(codec_request, enforces_path_and_completion_limits)
{
    codec_limits_t limits = codec_limits_default;
    limits.max_path_length = 2;
    limits.max_completions = 1;
    const char *json =
        FLUSH("{\"command\":{\"action\":\"create\",\"path\":[\"a\",\"b\",\"c\"]}}");
    codec_value_t *v;
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr)),
                 0);
    codec_request_clear(&req);
    cr_assert_eq(
        codec_request_from_value(v, "m", 1, &limits, &req, errstr, sizeof(errstr)),
        CODEC_ERR_TOO_LARGE);
    cr_assert(strstr(errstr, "path length limit"), "%s", errstr);

    json = FLUSH(
        "{\"command\":{\"action\":\"create\"}},{\"command\":{\"action\":\"create\"}}");
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr)),
                 0);
    codec_request_clear(&req);
    cr_assert_eq(
        codec_request_from_value(v, "m", 1, &limits, &req, errstr, sizeof(errstr)),
        CODEC_ERR_TOO_LARGE);
    cr_assert(strstr(errstr, "limit of 1 per flush"), "%s", errstr);
}

Test(codec_request, packs_completions_with_flushouts_spelling)
{
    expect(FLUSH("{\"command\":{\"action\":\"delete\",\"path\":[\"a\"]}}"), "m", CODEC_OK,
           NULL);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    codec_completion_pack(&pk, &req.completions[0]);
    codec_value_t *v;
    cr_assert_eq(codec_msgpack_decode(sb.data, sb.size, NULL, &v, errstr, sizeof(errstr)),
                 0);
    char *json = codec_json_encode(v, NULL);
    cr_assert_str_eq(json, "{\"command\":{\"action\":\"detete\",\"path\":[\"a\"]}}");
    free(json);
    codec_value_destroy(v);
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_request, joins_paths_like_javascript)
{
    codec_value_t *path = codec_value_array(0);
    codec_array_push(path, codec_value_str("a,b", 3));
    codec_array_push(path, codec_value_str("", 0));
    codec_array_push(path, codec_value_str("c", 1));
    char *joined;
    cr_assert_eq(codec_path_join(path, 3, &joined), 6);
    cr_assert_str_eq(joined, "a,b,,c");
    free(joined);
    cr_assert_eq(codec_path_join(path, 0, &joined), 0);
    cr_assert_str_eq(joined, "");
    free(joined);
    codec_value_destroy(path);
}

Test(codec_request, decodes_into_a_zone_like_onto_the_heap)
{
    const char *json =
        FLUSH("{\"command\":{\"action\":\"create\",\"path\":[\"a\"],\"props\":{"
              "\"k0\":0,\"k1\":1,\"k2\":2,\"k3\":3,\"k4\":4,\"k5\":5,\"k6\":6,"
              "\"k7\":7,\"k8\":8,\"a-key-longer-than-sixteen-bytes\":[1.5]}},"
              "\"createdId\":\"x\"}");
    codec_value_t *v;
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr)),
                 0);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);

    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    codec_request_t in_zone;
    cr_assert_eq(codec_request_decode(sb.data, sb.size, "m", 1, NULL, zone, &in_zone,
                                      errstr, sizeof(errstr)),
                 CODEC_OK, "%s", errstr);
    cr_assert_eq(codec_request_decode(sb.data, sb.size, "m", 1, NULL, NULL, &req, errstr,
                                      sizeof(errstr)),
                 CODEC_OK, "%s", errstr);
    cr_assert(codec_value_equal(in_zone.root, req.root));
    const codec_value_t *props = in_zone.completions[0].command.props;
    cr_assert_eq(codec_map_get(props, "k8", 2)->u.i, 8);
    cr_assert_not_null(codec_map_get(props, "a-key-longer-than-sixteen-bytes", 31));
    /* a heap copy of a zone tree outlives the zone */
    codec_value_t *copy = codec_value_copy(props);
    codec_request_clear(&in_zone);
    msgpack_zone_free(zone);
    codec_map_set(copy, "k9", 2, codec_value_int(9));
    cr_assert_eq(codec_map_get(copy, "k0", 2)->u.i, 0);
    cr_assert_eq(codec_map_get(copy, "k9", 2)->u.i, 9);
    codec_value_destroy(copy);
    msgpack_sbuffer_destroy(&sb);
}

Test(codec_request, echoes_canonical_completions_from_their_bytes)
{
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    use_zone = zone;
    expect(
        FLUSH("{\"command\":{\"action\":\"create\",\"props\":{\"a\":1}},\"createdId\":"
              "\"x\"},"
              "{\"command\":{\"action\":\"delete\",\"path\":[\"x\"]}},"
              "{\"command\":{\"action\":\"update\",\"path\":[\"x\"],\"extra\":1}},"
              "{\"command\":{\"action\":\"update\",\"path\":[\"x\"]},\"createdId\":null},"
              "{\"command\":{\"action\":\"detete\",\"path\":[\"x\"]}}"),
        "m", CODEC_OK, NULL);
    cr_assert_not_null(req.completions[0].raw, "canonical");
    cr_assert_null(req.completions[1].raw, "\"delete\" must be echoed as \"detete\"");
    cr_assert_null(req.completions[2].raw, "unknown fields are not echoed");
    cr_assert_null(req.completions[3].raw, "nil fields are not echoed");
    cr_assert_not_null(req.completions[4].raw, "canonical");
    /* the echo of a canonical completion packs to the same value as its fields */
    for (int i = 0; i < 5; i++) {
        msgpack_sbuffer a, b;
        msgpack_sbuffer_init(&a);
        msgpack_sbuffer_init(&b);
        msgpack_packer pa, pb;
        msgpack_packer_init(&pa, &a, msgpack_sbuffer_write);
        msgpack_packer_init(&pb, &b, msgpack_sbuffer_write);
        codec_completion_pack(&pa, &req.completions[i]);
        codec_completion_t fields = req.completions[i];
        fields.raw = NULL;
        codec_completion_pack(&pb, &fields);
        codec_value_t *va, *vb;
        cr_assert_eq(
            codec_msgpack_decode(a.data, a.size, NULL, &va, errstr, sizeof(errstr)), 0);
        cr_assert_eq(
            codec_msgpack_decode(b.data, b.size, NULL, &vb, errstr, sizeof(errstr)), 0);
        cr_assert(codec_value_equal(va, vb), "completion %d", i);
        codec_value_destroy(va);
        codec_value_destroy(vb);
        msgpack_sbuffer_destroy(&a);
        msgpack_sbuffer_destroy(&b);
    }
    codec_request_clear(&req);
    msgpack_zone_free(zone);
    use_zone = NULL;
}

/* Ids become store keys, record keys and reply fields: too long, empty or not UTF-8
 * is refused with a code that says so, wherever the id comes from. */
Test(codec_request, checks_model_and_client_ids)
{
    static char long_id[70001];
    memset(long_id, 'x', sizeof(long_id) - 1);
    const char *snap = "{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1}";
    codec_value_t *v;

    cr_assert_eq(codec_json_decode(snap, strlen(snap), NULL, &v, errstr, sizeof(errstr)),
                 0);
    codec_request_clear(&req);
    cr_assert_eq(
        codec_request_from_value(v, long_id, 70000, NULL, &req, errstr, sizeof(errstr)),
        CODEC_ERR_TOO_LARGE);
    cr_assert(strstr(errstr, "the record key: an id of 70000 bytes"), "%s", errstr);

    cr_assert_eq(codec_json_decode(snap, strlen(snap), NULL, &v, errstr, sizeof(errstr)),
                 0);
    codec_request_clear(&req);
    cr_assert_eq(
        codec_request_from_value(v, "v\xff", 2, NULL, &req, errstr, sizeof(errstr)),
        CODEC_ERR_INVALID_UTF8);

    /* The most the defaults allow is served. */
    cr_assert_eq(codec_json_decode(snap, strlen(snap), NULL, &v, errstr, sizeof(errstr)),
                 0);
    codec_request_clear(&req);
    cr_assert_eq(codec_request_from_value(v, long_id, CODEC_DEFAULT_MAX_ID_BYTES, NULL,
                                          &req, errstr, sizeof(errstr)),
                 CODEC_OK, "%s", errstr);

    const char *empty_model =
        "{\"type\":\"snapshot\",\"model\":\"\",\"client\":\"c\",\"seq\":1}";
    cr_assert_eq(codec_json_decode(empty_model, strlen(empty_model), NULL, &v, errstr,
                                   sizeof(errstr)),
                 0);
    codec_request_clear(&req);
    cr_assert_eq(codec_request_from_value(v, NULL, 0, NULL, &req, errstr, sizeof(errstr)),
                 CODEC_ERR_OUT_OF_RANGE);

    char long_client[1200];
    snprintf(long_client, sizeof(long_client),
             "{\"type\":\"snapshot\",\"client\":\"%.1025s\",\"seq\":1}", long_id);
    cr_assert_eq(codec_json_decode(long_client, strlen(long_client), NULL, &v, errstr,
                                   sizeof(errstr)),
                 0);
    codec_request_clear(&req);
    cr_assert_eq(codec_request_from_value(v, "m", 1, NULL, &req, errstr, sizeof(errstr)),
                 CODEC_ERR_TOO_LARGE);
    cr_assert(strstr(errstr, "client: an id of 1025 bytes"), "%s", errstr);
}
