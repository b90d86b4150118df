/* tests/processor/test_handler.c - the handler: one record in, its reply, change
 * record and counters out (processor/handler.h), with models in memory or in a store;
 * bad records answered with addressed errors; refusals; and the bound on its outputs,
 * what one Kafka record can carry (processor_handler_conf_t.max_output_bytes).
 *
 * Replies are decoded and printed as JSON, then compared with the shapes in
 * codec/PROTOCOL.md, written out by hand. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/common/big_flush.h"
#include "codec/json.h"
#include "codec/msgpack.h"
#include "processor/handler.h"

/* A handler keeping models in memory, packing change records, with outputs bounded. */
static processor_handler_t *handler_new(uint64_t max_output_bytes)
{
    processor_handler_conf_t hc = {.master = {.ids = STATE_IDS_SEQUENTIAL},
                                   .history = 1000,
                                   .limits = codec_limits_default,
                                   .changes = true,
                                   .max_output_bytes = max_output_bytes};
    return processor_handler_new(&hc);
}

/* A flush creating "doc" at the root with props {"v": [n floats]}, as msgpack float32
 * (5 bytes each) or float64 (9). */
static void pack_float_flush(msgpack_sbuffer *sb, int seq, int from, size_t n, bool f32)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "type", 4);
    msgpack_pack_str_with_body(&pk, "flush", 5);
    msgpack_pack_str_with_body(&pk, "client", 6);
    msgpack_pack_str_with_body(&pk, "c", 1);
    msgpack_pack_str_with_body(&pk, "seq", 3);
    msgpack_pack_int(&pk, seq);
    msgpack_pack_str_with_body(&pk, "from", 4);
    msgpack_pack_int(&pk, from);
    msgpack_pack_str_with_body(&pk, "completions", 11);
    msgpack_pack_array(&pk, 1);
    /* An unknown field: the completion is then packed again from its values (not echoed
     * as sent), which widens float32. */
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "note", 4);
    msgpack_pack_true(&pk);
    msgpack_pack_str_with_body(&pk, "command", 7);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "action", 6);
    msgpack_pack_str_with_body(&pk, "create", 6);
    msgpack_pack_str_with_body(&pk, "path", 4);
    msgpack_pack_array(&pk, 0);
    msgpack_pack_str_with_body(&pk, "props", 5);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_array(&pk, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        if (f32)
            msgpack_pack_float(&pk, 0.5f + (float)i);
        else
            msgpack_pack_double(&pk, 0.5 + (double)i);
    }
    msgpack_pack_str_with_body(&pk, "createdId", 9);
    char id[16];
    int len = snprintf(id, sizeof(id), "doc%d", seq);
    msgpack_pack_str_with_body(&pk, id, (size_t)len);
}

/* Packs the request json as msgpack into sb (initialised here). */
static void pack_json(msgpack_sbuffer *sb, const char *json)
{
    codec_value_t *v;
    char err[256];
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, err, sizeof(err)), 0,
                 "%s", err);
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);
}

/* Handles the request json under key (NULL: none) at offset, into a reset out. */
static void handle_at(processor_handler_t *h, const char *key, int64_t offset,
                      const char *json, processor_output_t *out)
{
    msgpack_sbuffer sb;
    pack_json(&sb, json);
    processor_output_reset(out);
    processor_handler_handle(h, offset, -1, key, key ? strlen(key) : 0, sb.data, sb.size,
                             out);
    msgpack_sbuffer_destroy(&sb);
}

/* Handles the request json as model "m"'s record at offset 7. */
static void handle_json(processor_handler_t *h, const char *json, processor_output_t *out)
{
    handle_at(h, "m", 7, json, out);
}

static uint64_t count_of(const processor_handler_t *h)
{
    const state_master_t *m = processor_handler_model(h, "m", 1);
    return m ? state_master_command_count(m) : 0;
}

/* A change record carries the commands as applied: in a completion that is packed
 * again (it had an unknown field), msgpack float32 comes out as float64, nearly twice
 * as large, so a request well under the bound can have a change record over it. Such a
 * flush is refused before it is applied (the bound is measured on a scratch copy); one
 * whose change record fits is applied, and its record is within the bound. */
Test(processor_handler,
     a_flush_whose_change_record_would_not_fit_is_refused_before_applying)
{
    processor_handler_t *h = handler_new(15000);
    processor_output_t out;
    processor_output_init(&out);
    msgpack_sbuffer sb;
    pack_float_flush(&sb, 1, 0, 2000, true); /* ~10 kB in, ~18 kB of change record */
    cr_assert_lt(sb.size, 11000);
    processor_output_reset(&out);
    processor_handler_handle(h, 7, -1, "m", 1, sb.data, sb.size, &out);
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(out.error, CODEC_ERR_TOO_LARGE, "%s", out.message);
    cr_assert_eq(out.change.size, 0);
    cr_assert_eq(count_of(h), 0, "nothing applied");
    cr_assert_leq(out.reply.size + out.reply_key_len, 15000);

    pack_float_flush(&sb, 2, 0, 1400, true); /* ~7 kB in, ~12.6 kB out: fits */
    processor_output_reset(&out);
    processor_handler_handle(h, 8, -1, "m", 1, sb.data, sb.size, &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    cr_assert_gt(out.change.size, sb.size + 5000, "float32 came out as float64");
    cr_assert_leq(out.change.size + 1, 15000);
    cr_assert_eq(count_of(h), 1);
    msgpack_sbuffer_destroy(&sb);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}

/* An answer that one record cannot carry is replaced by a reply_too_large error that
 * fits; what the request did stands: a flush stays applied with its change record. */
Test(processor_handler, an_answer_too_large_for_one_record_becomes_reply_too_large)
{
    processor_handler_t *h = handler_new(4000);
    processor_output_t out;
    processor_output_init(&out);
    char json[4096], pad[2001];
    memset(pad, 'p', 2000);
    pad[2000] = '\0';
    snprintf(
        json, sizeof(json),
        "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,\"completions\":["
        "{\"command\":{\"action\":\"create\",\"path\":[],\"props\":{\"pad\":\"%s\"}},"
        "\"createdId\":\"a\"}]}",
        pad);
    handle_json(h, json, &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);

    /* A snapshot for a client whose id is 1000 bytes: 2 kB of document + the id twice. */
    char client[1001];
    memset(client, 'c', 1000);
    client[1000] = '\0';
    snprintf(json, sizeof(json), "{\"type\":\"snapshot\",\"client\":\"%s\",\"seq\":1}",
             client);
    handle_json(h, json, &out);
    cr_assert_eq(out.error, CODEC_ERR_REPLY_TOO_LARGE, "%s", out.message);
    cr_assert_not_null(out.reply_key, "answered");
    cr_assert_leq(out.reply.size + out.reply_key_len, 4000);

    /* A flush from 0 while the model is at 1: its sync carries the first command's 2 kB
     * twice over (history and document); the flush is applied all the same. */
    snprintf(json, sizeof(json),
             "{\"type\":\"flush\",\"client\":\"d\",\"seq\":1,\"from\":0,\"completions\":["
             "{\"command\":{\"action\":\"update\",\"path\":[\"a\"],\"props\":{\"pad\":"
             "\"%.1500s\"}}}]}",
             pad);
    handle_json(h, json, &out);
    cr_assert_eq(out.error, CODEC_ERR_REPLY_TOO_LARGE, "%s", out.message);
    cr_assert_gt(out.change.size, 0, "applied, with its change record");
    cr_assert_eq(count_of(h), 2);
    cr_assert_leq(out.reply.size + out.reply_key_len, 4000);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}

/* A handler keeping models in memory, as the options' defaults would configure it
 * (sequential ids so that created ids are predictable). */
static processor_handler_conf_t conf_default(void)
{
    return (processor_handler_conf_t){.master = {.ids = STATE_IDS_SEQUENTIAL},
                                      .history = 1000,
                                      .limits = codec_limits_default,
                                      .changes = true};
}

/* The reply in out, decoded strictly (it must be well-formed msgpack). */
static codec_value_t *reply_value(const processor_output_t *out)
{
    codec_value_t *v;
    char err[256];
    cr_assert_eq(codec_msgpack_decode(out->reply.data, out->reply.size,
                                      &codec_limits_trusted, &v, err, sizeof(err)),
                 CODEC_OK, "%s", err);
    return v;
}

static void expect_reply(const processor_output_t *out, const char *want)
{
    codec_value_t *v = reply_value(out);
    char *json = codec_json_encode(v, NULL);
    cr_assert_str_eq(json, want);
    free(json);
    codec_value_destroy(v);
}

/* Asserts that out is an error reply with code, addressed as the JSON fields in
 * address (e.g. "\"model\":\"m\","), whose message is out->message. */
static void expect_error(const processor_output_t *out, codec_err_t code,
                         const char *code_name, const char *address)
{
    cr_assert_eq(out->error, code, "%s: %s", codec_err_name(out->error), out->message);
    cr_assert_neq(out->message[0], '\0', "the message is kept");
    cr_assert_eq(out->change.size, 0, "no change record");
    cr_assert_eq(out->commands_applied, 0);
    codec_value_t *v = codec_value_str(out->message, strlen(out->message));
    char *message = codec_json_encode(v, NULL); /* quoted and escaped */
    codec_value_destroy(v);
    char want[1024];
    snprintf(want, sizeof(want),
             "{\"type\":\"error\",%s\"error\":{\"code\":\"%s\",\"message\":%s}}", address,
             code_name, message);
    free(message);
    expect_reply(out, want);
}

static uint64_t count_of_model(const processor_handler_t *h, const char *model)
{
    const state_master_t *m = processor_handler_model(h, model, strlen(model));
    cr_assert_not_null(m, "model %s", model);
    return state_master_command_count(m);
}

#define CREATE_A                                                            \
    "{\"command\":{\"action\":\"create\",\"path\":[],\"props\":{\"n\":1}}," \
    "\"createdId\":\"a\"}"
#define UPDATE_A(n) \
    "{\"command\":{\"action\":\"update\",\"path\":[\"a\"],\"props\":{\"n\":" n "}}}"

/* An applied flush: its reply (the completions as sent), the client as the reply's
 * key, the count of commands applied, a change record, and snapshot_due when the
 * count passes a multiple of snapshot_every. */
Test(processor_handler, an_applied_flush_is_answered_counted_and_recorded)
{
    processor_handler_conf_t hc = conf_default();
    hc.snapshot_every = 2;
    processor_handler_t *h = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);

    handle_at(h, "m", 7,
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,"
              "\"completions\":[" CREATE_A "]}",
              &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    cr_assert_str_eq(out.message, "");
    expect_reply(&out,
                 "{\"type\":\"flushResult\",\"model\":\"m\",\"client\":\"c\","
                 "\"seq\":1,\"applied\":{\"from\":0,\"completions\":[" CREATE_A "]}}");
    cr_assert_eq(out.reply_key_len, 1);
    cr_assert(!memcmp(out.reply_key, "c", 1));
    cr_assert_eq(out.commands_applied, 1);
    cr_assert_gt(out.change.size, 0);
    cr_assert_not(out.snapshot_due, "count 0 -> 1 passes no multiple of 2");

    handle_at(h, "m", 8,
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":2,\"from\":1,"
              "\"completions\":[" UPDATE_A("2") "," UPDATE_A("3") "]}",
              &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    cr_assert_eq(out.commands_applied, 2);
    cr_assert(out.snapshot_due, "count 1 -> 3 passes 2");
    cr_assert_eq(count_of_model(h, "m"), 3);

    /* Without conf.changes, no change record. */
    hc.changes = false;
    processor_handler_t *quiet = processor_handler_new(&hc);
    handle_at(quiet, "m", 7,
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,"
              "\"completions\":[" CREATE_A "]}",
              &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    cr_assert_eq(out.commands_applied, 1);
    cr_assert_eq(out.change.size, 0);
    processor_handler_destroy(quiet);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}

/* A snapshot or history request reads: nothing applied, no change record. */
Test(processor_handler, snapshot_and_history_requests_read_what_was_applied)
{
    processor_handler_conf_t hc = conf_default();
    hc.history = 2;
    processor_handler_t *h = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);
    const char *ids[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        char json[256];
        snprintf(json, sizeof(json),
                 "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%d,\"from\":%d,"
                 "\"completions\":[{\"command\":{\"action\":\"create\",\"path\":[]},"
                 "\"createdId\":\"%s\"}]}",
                 i + 1, i, ids[i]);
        handle_at(h, "m", i, json, &out);
        cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    }

    handle_at(h, "m", 3, "{\"type\":\"snapshot\",\"client\":\"d\",\"seq\":5}", &out);
    expect_reply(&out,
                 "{\"type\":\"snapshot\",\"model\":\"m\",\"client\":\"d\",\"seq\":5,"
                 "\"snapshot\":{\"commandCount\":3,\"document\":{\"a\":{},\"b\":{},"
                 "\"c\":{}}}}");
    cr_assert_eq(out.error, CODEC_OK);
    cr_assert_eq(out.change.size, 0);
    cr_assert_eq(out.commands_applied, 0);
    cr_assert_not(out.snapshot_due);

    /* The last two commands are kept; "to" defaults to the count. */
    handle_at(h, "m", 4, "{\"type\":\"history\",\"client\":\"d\",\"seq\":6,\"from\":1}",
              &out);
    expect_reply(&out, "{\"type\":\"history\",\"model\":\"m\",\"client\":\"d\",\"seq\":6,"
                       "\"from\":1,\"completions\":[{\"command\":{\"action\":\"create\","
                       "\"path\":[]},\"createdId\":\"b\"},{\"command\":{\"action\":"
                       "\"create\",\"path\":[]},\"createdId\":\"c\"}]}");
    handle_at(h, "m", 5,
              "{\"type\":\"history\",\"client\":\"d\",\"seq\":7,\"from\":3,\"to\":3}",
              &out);
    expect_reply(&out, "{\"type\":\"history\",\"model\":\"m\",\"client\":\"d\",\"seq\":7,"
                       "\"from\":3,\"completions\":[]}");
    handle_at(h, "m", 6,
              "{\"type\":\"history\",\"client\":\"d\",\"seq\":8,\"from\":0,\"to\":1}",
              &out);
    expect_error(&out, CODEC_ERR_HISTORY_UNAVAILABLE, "history_unavailable",
                 "\"model\":\"m\",\"client\":\"d\",\"seq\":8,");
    handle_at(h, "m", 7,
              "{\"type\":\"history\",\"client\":\"d\",\"seq\":9,\"from\":2,\"to\":4}",
              &out);
    expect_error(&out, CODEC_ERR_BAD_RANGE, "bad_range",
                 "\"model\":\"m\",\"client\":\"d\",\"seq\":9,");
    handle_at(h, "m", 8,
              "{\"type\":\"history\",\"client\":\"d\",\"seq\":10,\"from\":2,\"to\":1}",
              &out);
    expect_error(&out, CODEC_ERR_BAD_RANGE, "bad_range",
                 "\"model\":\"m\",\"client\":\"d\",\"seq\":10,");
    cr_assert_eq(count_of_model(h, "m"), 3);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}

/* Bad input never fails the call: it gets an error reply addressed with whatever of
 * model, client and seq could be read, and changes nothing. */
Test(processor_handler, a_bad_record_gets_an_addressed_error_and_changes_nothing)
{
    processor_handler_conf_t hc = conf_default();
    processor_handler_t *h = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);

    handle_at(h, "m", 0,
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,"
              "\"completions\":\"x\"}",
              &out);
    expect_error(&out, CODEC_ERR_WRONG_TYPE, "wrong_type",
                 "\"model\":\"m\",\"client\":\"c\",\"seq\":1,");
    cr_assert_eq(out.reply_key_len, 1);
    cr_assert(!memcmp(out.reply_key, "c", 1));
    cr_assert_null(processor_handler_model(h, "m", 1), "not even created");

    /* Not msgpack at all: the key still names the model; no client, no reply key. */
    processor_output_reset(&out);
    processor_handler_handle(h, 1, -1, "m", 1, "\xc1", 1, &out);
    expect_error(&out, CODEC_ERR_RESERVED_BYTE, "reserved_byte", "\"model\":\"m\",");
    cr_assert_null(out.reply_key);
    cr_assert_eq(out.reply_key_len, 0);

    handle_at(h, "m", 2,
              "{\"type\":\"snapshot\",\"model\":\"n\",\"client\":\"c\",\"seq\":2}", &out);
    expect_error(&out, CODEC_ERR_MODEL_MISMATCH, "model_mismatch",
                 "\"model\":\"m\",\"client\":\"c\",\"seq\":2,");

    /* Without a key the value must name the model. */
    handle_at(h, NULL, 3, "{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":3}", &out);
    expect_error(&out, CODEC_ERR_MISSING_FIELD, "missing_field",
                 "\"client\":\"c\",\"seq\":3,");

    /* A client id beyond --max-id-bytes is not echoed, so there is no reply key (the
     * error goes to the dead letters only). */
    char json[1200], client[1026];
    memset(client, 'c', 1025);
    client[1025] = '\0';
    snprintf(json, sizeof(json), "{\"type\":\"snapshot\",\"client\":\"%s\",\"seq\":4}",
             client);
    handle_at(h, "m", 4, json, &out);
    expect_error(&out, CODEC_ERR_TOO_LARGE, "too_large", "\"model\":\"m\",\"seq\":4,");
    cr_assert_null(out.reply_key);

    cr_assert_null(processor_handler_model(h, "m", 1), "nothing was ever applied to m");
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}

Test(processor_handler, without_a_key_the_value_names_the_model)
{
    processor_handler_conf_t hc = conf_default();
    processor_handler_t *h = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);
    handle_at(h, NULL, 0,
              "{\"type\":\"flush\",\"model\":\"x\",\"client\":\"c\",\"seq\":1,"
              "\"from\":0,\"completions\":[" CREATE_A "]}",
              &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    cr_assert_eq(count_of_model(h, "x"), 1);
    cr_assert_null(processor_handler_model(h, "m", 1));
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}

/* A refusal for a reason outside the value (here: the key's partition) is addressed
 * from a shallow scan, so even a value that cannot be decoded gets its answer. */
Test(processor_handler, a_refused_record_is_answered_without_decoding_it)
{
    processor_handler_conf_t hc = conf_default();
    processor_handler_t *h = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);
    msgpack_sbuffer sb;
    pack_json(&sb, "{\"client\":\"c\",\"seq\":4,\"type\":\"flush\",\"from\":0,"
                   "\"completions\":[" CREATE_A "]}");
    /* Cut short inside the completions: not a request any more. */
    size_t cut = sb.size - 5;
    codec_value_t *ignored;
    char err[256];
    cr_assert_neq(codec_msgpack_decode(sb.data, cut, NULL, &ignored, err, sizeof(err)),
                  CODEC_OK);
    processor_output_reset(&out);
    processor_handler_refuse(h, "m", 1, sb.data, cut, CODEC_ERR_WRONG_PARTITION,
                             "the key belongs to partition 3", &out);
    expect_reply(&out, "{\"type\":\"error\",\"model\":\"m\",\"client\":\"c\",\"seq\":4,"
                       "\"error\":{\"code\":\"wrong_partition\",\"message\":"
                       "\"the key belongs to partition 3\"}}");
    cr_assert_eq(out.error, CODEC_ERR_WRONG_PARTITION);
    cr_assert_str_eq(out.message, "the key belongs to partition 3");
    cr_assert_eq(out.reply_key_len, 1);
    cr_assert(!memcmp(out.reply_key, "c", 1));
    cr_assert_eq(out.change.size, 0);
    cr_assert_null(processor_handler_model(h, "m", 1), "not applied");

    /* The whole record, refused all the same. */
    processor_output_reset(&out);
    processor_handler_refuse(h, "m", 1, sb.data, sb.size, CODEC_ERR_BAD_REPLY_TOPIC, "no",
                             &out);
    cr_assert_eq(out.error, CODEC_ERR_BAD_REPLY_TOPIC);
    cr_assert_null(processor_handler_model(h, "m", 1), "not applied");
    msgpack_sbuffer_destroy(&sb);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}

/* The configuration and its initial document are copied: the caller's may go. */
Test(processor_handler, new_models_start_from_a_copy_of_the_initial_document)
{
    codec_value_t *doc;
    char err[256];
    const char *json = "{\"root\":{\"list\":[1,\"two\"]}}";
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &doc, err, sizeof(err)), 0);
    processor_handler_conf_t hc = conf_default();
    hc.initial_document = doc;
    processor_handler_t *h = processor_handler_new(&hc);
    codec_value_destroy(doc);
    hc.history = 0; /* changing the caller's conf changes nothing either */

    processor_output_t out;
    processor_output_init(&out);
    handle_at(h, "new", 0, "{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1}", &out);
    expect_reply(&out,
                 "{\"type\":\"snapshot\",\"model\":\"new\",\"client\":\"c\","
                 "\"seq\":1,\"snapshot\":{\"commandCount\":0,\"document\":{\"root\":"
                 "{\"list\":[1,\"two\"]}}}}");
    handle_at(h, "new", 1,
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,"
              "\"completions\":[" CREATE_A "]}",
              &out);
    handle_at(h, "new", 2, "{\"type\":\"history\",\"client\":\"c\",\"seq\":2,\"from\":0}",
              &out);
    cr_assert_eq(out.error, CODEC_OK, "history kept: %s", out.message);
    /* A second model starts from the initial document too, not from the first's. */
    handle_at(h, "other", 3, "{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":1}", &out);
    expect_reply(&out,
                 "{\"type\":\"snapshot\",\"model\":\"other\",\"client\":\"c\","
                 "\"seq\":1,\"snapshot\":{\"commandCount\":0,\"document\":{\"root\":"
                 "{\"list\":[1,\"two\"]}}}}");
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}

Test(processor_handler, reset_empties_an_output_and_commit_without_a_store_is_a_no_op)
{
    processor_handler_conf_t hc = conf_default();
    hc.snapshot_every = 1;
    processor_handler_t *h = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);
    handle_at(h, "m", 0,
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,"
              "\"completions\":[" CREATE_A "]}",
              &out);
    cr_assert(out.snapshot_due && out.change.size && out.reply_key);
    processor_output_reset(&out);
    cr_assert_eq(out.reply.size, 0);
    cr_assert_gt(out.reply.alloc, 0, "the buffer is kept");
    cr_assert_eq(out.change.size, 0);
    cr_assert_null(out.reply_key);
    cr_assert_eq(out.reply_key_len, 0);
    cr_assert_eq(out.commands_applied, 0);
    cr_assert_not(out.snapshot_due);

    handle_at(h, "m", 1, "{\"type\":\"snapshot\"}", &out);
    cr_assert_neq(out.error, CODEC_OK);
    processor_output_reset(&out);
    cr_assert_eq(out.error, CODEC_OK);
    cr_assert_str_eq(out.message, "");

    char errstr[64] = "untouched";
    cr_assert_eq(processor_handler_commit(h, 2, errstr, sizeof(errstr)), 0);
    cr_assert_str_eq(errstr, "untouched");
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}

/* With a store: models live there, not in the handler's table. */
static char store_dir[] = "/tmp/flushout-test-handler-XXXXXX";

static void store_dir_remove(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", store_dir);
    cr_assert_eq(system(cmd), 0);
}

static state_store_t *store_open(void)
{
    if (!strcmp(store_dir + strlen(store_dir) - 6, "XXXXXX"))
        cr_assert_not_null(mkdtemp(store_dir));
    state_store_conf_t sc = {.dir = store_dir,
                             .history = 1000,
                             .snapshot_every = 1000,
                             .cache_bytes = 64 << 20,
                             .clients_per_model = 1000,
                             .master = {.ids = STATE_IDS_SEQUENTIAL}};
    char errstr[256];
    state_store_t *store = state_store_open(&sc, errstr, sizeof(errstr));
    cr_assert_not_null(store, "%s", errstr);
    return store;
}

static processor_handler_t *handler_on(state_store_t *store)
{
    processor_handler_conf_t hc = conf_default();
    hc.store = store; /* stays ours */
    return processor_handler_new(&hc);
}

#define FLUSH_1                                                                  \
    "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,\"completions\":" \
    "[" CREATE_A "]}"
#define SNAPSHOT "{\"type\":\"snapshot\",\"client\":\"c\",\"seq\":9}"

/* Changes reach the store only with processor_handler_commit(), which also stores the
 * partition's next input offset. */
Test(processor_handler, with_a_store_a_flush_is_durable_once_committed,
     .fini = store_dir_remove)
{
    state_store_t *store = store_open();
    processor_handler_t *h = handler_on(store);
    processor_output_t out;
    processor_output_init(&out);
    handle_at(h, "m", 0, FLUSH_1, &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    cr_assert_eq(out.commands_applied, 1);
    cr_assert_null(processor_handler_model(h, "m", 1), "the model is in the store");
    processor_handler_destroy(h);
    state_store_close(store); /* uncommitted: lost */

    store = store_open();
    h = handler_on(store);
    handle_at(h, "m", 1, SNAPSHOT, &out);
    expect_reply(&out,
                 "{\"type\":\"snapshot\",\"model\":\"m\",\"client\":\"c\",\"seq\":9,"
                 "\"snapshot\":{\"commandCount\":0,\"document\":{}}}");
    handle_at(h, "m", 0, FLUSH_1, &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    cr_assert_eq(out.commands_applied, 1, "applied: the first time was lost");
    char errstr[256];
    cr_assert_eq(processor_handler_commit(h, 1, errstr, sizeof(errstr)), 0, "%s", errstr);
    processor_handler_destroy(h);
    state_store_close(store);

    store = store_open();
    cr_assert_eq(state_store_next_offset(store), 1);
    h = handler_on(store);
    handle_at(h, "m", 1, SNAPSHOT, &out);
    expect_reply(&out,
                 "{\"type\":\"snapshot\",\"model\":\"m\",\"client\":\"c\",\"seq\":9,"
                 "\"snapshot\":{\"commandCount\":1,\"document\":{\"a\":{\"n\":1}}}}");
    processor_output_destroy(&out);
    processor_handler_destroy(h);
    state_store_close(store);
}

/* With a store the client's seq is checked (codec/PROTOCOL.md, "Retried flushes"): a
 * retry is answered again without applying or recording anything, an older seq is
 * stale_seq. */
Test(processor_handler, with_a_store_a_retry_is_answered_again_and_an_older_seq_refused,
     .fini = store_dir_remove)
{
    state_store_t *store = store_open();
    processor_handler_t *h = handler_on(store);
    processor_output_t out;
    processor_output_init(&out);
    handle_at(h, "m", 0,
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":5,\"from\":0,"
              "\"completions\":[" CREATE_A "]}",
              &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);

    handle_at(h, "m", 1,
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":5,\"from\":0,"
              "\"completions\":[" CREATE_A "]}",
              &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    expect_reply(&out, "{\"type\":\"flushResult\",\"model\":\"m\",\"client\":\"c\","
                       "\"seq\":5,\"duplicate\":true,\"applied\":{\"from\":1,"
                       "\"completions\":[]},\"sync\":{\"isPartial\":true,\"diff\":{"
                       "\"from\":0,\"completions\":[" CREATE_A "]},\"mappedPaths\":{}}}");
    cr_assert_eq(out.commands_applied, 0);
    cr_assert_eq(out.change.size, 0, "a retry publishes no second change record");

    handle_at(h, "m", 2,
              "{\"type\":\"flush\",\"client\":\"c\",\"seq\":4,\"from\":1,"
              "\"completions\":[" UPDATE_A("2") "]}",
              &out);
    expect_error(&out, CODEC_ERR_STALE_SEQ, "stale_seq",
                 "\"model\":\"m\",\"client\":\"c\",\"seq\":4,");
    /* Another client's seq is its own. */
    handle_at(h, "m", 3,
              "{\"type\":\"flush\",\"client\":\"d\",\"seq\":1,\"from\":1,"
              "\"completions\":[" UPDATE_A("2") "]}",
              &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    cr_assert_eq(out.commands_applied, 1);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
    state_store_close(store);
}

/* A change record holds what the flush did: applied to a store at its model, it gives
 * the model the handler has, and carries the input offset it came from. */
Test(processor_handler, change_records_rebuild_the_model_elsewhere,
     .fini = store_dir_remove)
{
    processor_handler_conf_t hc = conf_default();
    processor_handler_t *h = processor_handler_new(&hc);
    state_store_t *store = store_open();
    processor_output_t out;
    processor_output_init(&out);
    const char *flushes[] = {
        FLUSH_1,
        "{\"type\":\"flush\",\"client\":\"d\",\"seq\":1,\"from\":1,\"completions\":["
        "{\"command\":{\"action\":\"create\",\"path\":[\"a\"],\"props\":{\"x\":true}},"
        "\"createdId\":\"k\"}," UPDATE_A("2") "]}",
        /* From 0: "a" is taken, so the second proposal of "a" is remapped. */
        "{\"type\":\"flush\",\"client\":\"e\",\"seq\":1,\"from\":0,\"completions\":"
        "[" CREATE_A "]}"};
    for (int i = 0; i < 3; i++) {
        handle_at(h, "m", 40 + i, flushes[i], &out);
        cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
        int64_t offset = -2;
        char errstr[256];
        cr_assert_eq(state_store_apply_change(store, "m", 1, out.change.data,
                                              out.change.size, &offset, errstr,
                                              sizeof(errstr)),
                     STATE_CHANGE_APPLIED, "%s", errstr);
        cr_assert_eq(offset, 40 + i);
    }
    char errstr[256];
    state_model_t *copy = state_store_model(store, "m", 1, errstr, sizeof(errstr));
    cr_assert_not_null(copy, "%s", errstr);
    const state_master_t *want = processor_handler_model(h, "m", 1);
    cr_assert_eq(state_master_command_count(state_model_master(copy)), 4);
    cr_assert_eq(state_master_command_count(want), 4);
    cr_assert(codec_value_equal(state_master_document(state_model_master(copy)),
                                state_master_document(want)));
    processor_output_destroy(&out);
    state_store_close(store);
    processor_handler_destroy(h);
}

/* A count-based snapshot record of a document over STATE_RECORD_SIZE_FLOOR comes with
 * the rewrites of its stored snapshot only: a large document is not republished for
 * every snapshot_every small commands. A small one's is due at every multiple. */
Test(processor_handler, a_large_documents_snapshot_record_comes_with_its_rewrites,
     .fini = store_dir_remove)
{
    state_store_t *store = store_open();
    processor_handler_conf_t hc = conf_default();
    hc.store = store;
    hc.snapshot_every = 1;
    processor_handler_t *h = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);
    char json[256];
    for (int i = 0; i < 3; i++) {
        snprintf(json, sizeof(json),
                 "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%d,\"from\":%d,"
                 "\"completions\":[" UPDATE_A("%d") "]}",
                 i + 1, i, i);
        handle_at(h, "small", i, i ? json : FLUSH_1, &out);
        cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
        cr_assert(out.snapshot_due, "a small document's, at every multiple of 1");
    }

    char *big = test_big_create_flush("a", 100000);
    handle_at(h, "m", 10, big, &out);
    free(big);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
    cr_assert(out.snapshot_due, "its first snapshot (history over 4 KB) is a rewrite");
    /* The next rewrite, by the store's rule: after --snapshot-every (1000) commands,
     * once the history since is an eighth of the 100 KB snapshot (1000 updates of
     * about 40 bytes are 40 KB); not before, as the history stays below 100 KB. */
    int due = 0, due_at = 0;
    for (int seq = 2; seq <= 1100; seq++) {
        snprintf(json, sizeof(json),
                 "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%d,\"from\":%d,"
                 "\"completions\":[" UPDATE_A("%d") "]}",
                 seq, seq - 1, seq);
        handle_at(h, "m", 10 + seq, json, &out);
        cr_assert_eq(out.error, CODEC_OK, "%s", out.message);
        if (out.snapshot_due) {
            due++;
            due_at = seq;
        }
        char errstr[256];
        if (seq % 100 == 0)
            cr_assert_eq(processor_handler_commit(h, 11 + seq, errstr, sizeof(errstr)), 0,
                         "%s", errstr);
    }
    cr_assert_eq(due, 1, "%d records due", due);
    cr_assert_eq(due_at, 1001, "due at count %d", due_at);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
    state_store_close(store);
}

/* With a store, a flush that could take the document beyond max_document_bytes (as
 * msgpack) is refused before it is applied; deletes always pass, so a full document
 * can shrink. Without a store there is no such bound. */
Test(processor_handler, with_a_store_a_document_stops_growing_at_its_limit,
     .fini = store_dir_remove)
{
    state_store_t *store = store_open();
    processor_handler_conf_t hc = conf_default();
    hc.store = store;
    hc.max_document_bytes = 1024;
    processor_handler_t *h = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);
    char pad[601], json[1024];
    memset(pad, 'p', 600);
    pad[600] = '\0';
    const char *create =
        "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%d,\"from\":%d,"
        "\"completions\":[{\"command\":{\"action\":\"create\",\"path\":[],"
        "\"props\":{\"pad\":\"%s\"}},\"createdId\":\"%s\"}]}";
    snprintf(json, sizeof(json), create, 1, 0, pad, "a");
    handle_at(h, "m", 0, json, &out);
    cr_assert_eq(out.error, CODEC_OK, "%s", out.message);

    snprintf(json, sizeof(json), create, 2, 1, pad, "b");
    handle_at(h, "m", 1, json, &out);
    expect_error(&out, CODEC_ERR_TOO_LARGE, "too_large",
                 "\"model\":\"m\",\"client\":\"c\",\"seq\":2,");
    cr_assert(strstr(out.message, "--max-document-bytes 1024"), "%s", out.message);

    handle_at(
        h, "m", 2,
        "{\"type\":\"flush\",\"client\":\"c\",\"seq\":3,\"from\":1,\"completions\":["
        "{\"command\":{\"action\":\"detete\",\"path\":[\"a\"]}}]}",
        &out);
    cr_assert_eq(out.error, CODEC_OK, "a delete passes: %s", out.message);
    snprintf(json, sizeof(json), create, 4, 2, pad, "b");
    handle_at(h, "m", 3, json, &out);
    cr_assert_eq(out.error, CODEC_OK, "there is room again: %s", out.message);
    handle_at(h, "m", 4, SNAPSHOT, &out);
    codec_value_t *v = reply_value(&out);
    const codec_value_t *snapshot = codec_map_get(v, "snapshot", 8);
    const codec_value_t *count = codec_map_get(snapshot, "commandCount", 12);
    cr_assert_eq(count->u.i, 3, "the refused flush was not applied");
    codec_value_destroy(v);
    processor_handler_destroy(h);
    state_store_close(store);

    hc.store = NULL;
    h = processor_handler_new(&hc);
    for (int i = 0; i < 3; i++) {
        snprintf(json, sizeof(json), create, i + 1, i, pad, i ? "b" : "a");
        handle_at(h, "m", i, json, &out);
        cr_assert_eq(out.error, CODEC_OK, "in memory, no bound: %s", out.message);
    }
    processor_output_destroy(&out);
    processor_handler_destroy(h);
}
