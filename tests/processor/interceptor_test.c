/* tests/processor/interceptor_test.c - what the interceptor tests share
 * (interceptor_test.h). */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "interceptor_test.h"

processor_interceptor_conf_t conf_for(const char *path, uint64_t max_instructions)
{
    return (processor_interceptor_conf_t){.path = path,
                                          .max_instructions = max_instructions,
                                          .max_memory_bytes = 64u << 20,
                                          .limits = codec_limits_default};
}

processor_interceptor_t *load_conf(const processor_interceptor_conf_t *conf)
{
    char err[1024] = "";
    processor_interceptor_t *ic = processor_interceptor_load(conf, err, sizeof(err));
    cr_assert_not_null(ic, "%s", err);
    return ic;
}

processor_interceptor_t *load_file(const char *dir, const char *name,
                                   uint64_t max_instructions)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    processor_interceptor_conf_t conf = conf_for(path, max_instructions);
    return load_conf(&conf);
}

/* Writes body to a new file /tmp/ic_XXXXXX.lua; path gets its name. */
static void write_script(const char *body, char *path, size_t size)
{
    snprintf(path, size, "/tmp/ic_XXXXXX.lua");
    int fd = mkstemps(path, 4);
    cr_assert_geq(fd, 0);
    size_t len = strlen(body);
    cr_assert_eq(write(fd, body, len), (ssize_t)len);
    close(fd);
}

/* Loads the script body with conf's settings (conf->path is replaced); the file is
 * removed once loaded (the interceptor keeps the source). NULL and err on failure. */
processor_interceptor_t *try_load(const char *body, processor_interceptor_conf_t conf,
                                  char *err, size_t err_size, char *path,
                                  size_t path_size)
{
    write_script(body, path, path_size);
    conf.path = path;
    processor_interceptor_t *ic = processor_interceptor_load(&conf, err, err_size);
    unlink(path);
    return ic;
}

processor_interceptor_t *load_inline(const char *body, uint64_t max_instructions)
{
    char err[1024] = "", path[64];
    processor_interceptor_t *ic = try_load(body, conf_for(NULL, max_instructions), err,
                                           sizeof(err), path, sizeof(path));
    cr_assert_not_null(ic, "%s", err);
    return ic;
}

codec_value_t *json_value(const char *json)
{
    codec_value_t *v;
    char err[256];
    cr_assert_eq(codec_json_decode(json, strlen(json), &codec_limits_trusted, &v, err,
                                   sizeof(err)),
                 CODEC_OK, "%s: %s", json, err);
    return v;
}

static void pack_json(msgpack_sbuffer *sb, const char *json)
{
    codec_value_t *v = json_value(json);
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);
}

/* Calls ic as outcome_into() says; out gets the interception (the caller frees its
 * new_props and message). */
static void call_flush(processor_interceptor_t *ic, const char *doc, const char *flush,
                       uint64_t count, state_interception_t *out)
{
    msgpack_sbuffer sb;
    pack_json(&sb, flush);
    codec_request_t req;
    char err[256];
    codec_err_t rc = codec_request_decode(sb.data, sb.size, "m", 1, &codec_limits_default,
                                          NULL, &req, err, sizeof(err));
    cr_assert_eq(rc, CODEC_OK, "%s", err);
    req.offset = -1; /* not from Kafka */
    codec_value_t *document = json_value(doc);
    state_intercept_meta_t meta = {.flush = &req, .command_count = count};
    *out = (state_interception_t){.kind = STATE_INTERCEPT_ACCEPT};
    processor_interceptor_call(ic, document, &req.completions[0].command, &meta, out);
    codec_value_destroy(document);
    codec_request_clear(&req);
    msgpack_sbuffer_destroy(&sb);
}

void outcome_into(processor_interceptor_t *ic, const char *doc, const char *flush,
                  uint64_t count, char *buf, size_t size)
{
    state_interception_t out;
    call_flush(ic, doc, flush, count, &out);
    if (out.kind == STATE_INTERCEPT_ACCEPT) {
        snprintf(buf, size, "accept");
    } else if (out.kind == STATE_INTERCEPT_REPLACE_PROPS) {
        char *json = codec_json_encode(out.new_props, NULL);
        snprintf(buf, size, "props %s", json);
        free(json);
    } else {
        cr_assert_not_null(out.message);
        snprintf(buf, size, "reject %s", out.message);
    }
    codec_value_destroy(out.new_props);
    free(out.message);
}

void new_props_packed(processor_interceptor_t *ic, const char *doc, const char *flush,
                      msgpack_sbuffer *sb)
{
    state_interception_t out;
    call_flush(ic, doc, flush, 0, &out);
    cr_assert_eq(out.kind, STATE_INTERCEPT_REPLACE_PROPS, "%s", out.message);
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, out.new_props);
    codec_value_destroy(out.new_props);
}

static char outcome_buf[1 << 16];

const char *outcome_on(processor_interceptor_t *ic, const char *doc, const char *command)
{
    char flush[8192];
    snprintf(flush, sizeof(flush),
             "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,"
             "\"completions\":[{\"command\":%s}]}",
             command);
    outcome_into(ic, doc ? doc : "{}", flush, 0, outcome_buf, sizeof(outcome_buf));
    return outcome_buf;
}

const char *outcome(processor_interceptor_t *ic, const char *command)
{
    return outcome_on(ic, NULL, command);
}

const char *outcome_of_case(processor_interceptor_t *ic, const char *name)
{
    char command[256];
    snprintf(command, sizeof(command),
             "{\"action\":\"update\",\"path\":[],\"props\":{\"case\":\"%s\"}}", name);
    return outcome(ic, command);
}

void expect_prefix(const char *got, const char *prefix)
{
    cr_assert(!strncmp(got, prefix, strlen(prefix)), "got \"%.300s\", want \"%s...\"",
              got, prefix);
}

void expect_contains(const char *got, const char *part)
{
    cr_assert_not_null(strstr(got, part), "got \"%.300s\", want \"...%s...\"", got, part);
}

/* ---- a model behind a handler, whose master calls the interceptor ---- */

void model_open(model_t *m, processor_interceptor_t *ic, const char *initial)
{
    codec_value_t *doc = initial ? json_value(initial) : NULL;
    processor_handler_conf_t hc = {.master = {.ids = STATE_IDS_SEQUENTIAL,
                                              .interceptor = processor_interceptor_call,
                                              .interceptor_opaque = ic},
                                   .history = 1000,
                                   .initial_document = doc,
                                   .limits = codec_limits_default};
    m->h = processor_handler_new(&hc);
    codec_value_destroy(doc);
    processor_output_init(&m->out);
    m->seq = 0;
    m->kafka_timestamp = -1;
}

void model_close(model_t *m)
{
    processor_output_destroy(&m->out);
    processor_handler_destroy(m->h);
}

uint64_t model_count(const model_t *m)
{
    const state_master_t *master = processor_handler_model(m->h, "m", 1);
    return master ? state_master_command_count(master) : 0;
}

const char *model_flush(model_t *m, const char *extra, const char *completions)
{
    char json[16384];
    snprintf(json, sizeof(json),
             "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%llu,\"from\":%llu,%s"
             "\"completions\":[%s]}",
             (unsigned long long)++m->seq, (unsigned long long)model_count(m), extra,
             completions);
    msgpack_sbuffer sb;
    pack_json(&sb, json);
    processor_output_reset(&m->out);
    processor_handler_handle(m->h, 7, m->kafka_timestamp, "m", 1, sb.data, sb.size,
                             &m->out);
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(m->out.error, CODEC_OK, "%s", m->out.message);
    codec_value_t *v;
    char err[256];
    cr_assert_eq(codec_msgpack_decode(m->out.reply.data, m->out.reply.size,
                                      &codec_limits_trusted, &v, err, sizeof(err)),
                 CODEC_OK, "%s", err);
    char *reply = codec_json_encode(v, NULL);
    snprintf(m->reply, sizeof(m->reply), "%s", reply);
    free(reply);
    codec_value_destroy(v);
    return m->reply;
}

const char *model_document(model_t *m)
{
    const state_master_t *master = processor_handler_model(m->h, "m", 1);
    cr_assert_not_null(master);
    char *json = codec_json_encode(state_master_document(master), NULL);
    snprintf(m->document, sizeof(m->document), "%s", json);
    free(json);
    return m->document;
}
