/* tests/processor/test_handler.c - the handler's bound on its outputs: what one Kafka
 * record can carry (processor_handler_conf_t.max_output_bytes). */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

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

static void handle_json(processor_handler_t *h, const char *json, processor_output_t *out)
{
    codec_value_t *v;
    char err[256];
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, err, sizeof(err)), 0,
                 "%s", err);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);
    processor_output_reset(out);
    processor_handler_handle(h, 7, "m", 1, sb.data, sb.size, out);
    msgpack_sbuffer_destroy(&sb);
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
    processor_handler_handle(h, 7, "m", 1, sb.data, sb.size, &out);
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(out.error, CODEC_ERR_TOO_LARGE, "%s", out.message);
    cr_assert_eq(out.change.size, 0);
    cr_assert_eq(count_of(h), 0, "nothing applied");
    cr_assert_leq(out.reply.size + out.reply_key_len, 15000);

    pack_float_flush(&sb, 2, 0, 1400, true); /* ~7 kB in, ~12.6 kB out: fits */
    processor_output_reset(&out);
    processor_handler_handle(h, 8, "m", 1, sb.data, sb.size, &out);
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
