/* tests/processor/interceptor_test.h - what the interceptor tests share
 * (test_interceptor.c, test_interceptor_safety.c, test_interceptor_examples.c):
 * loading scripts, calling an interceptor directly, and a model behind a handler.
 *
 * Two ways in: outcome() calls the interceptor directly on the first command of a
 * flush (the values it returns, exactly), and model_t runs flushes through a handler
 * whose master calls it (what clients get back, and the documents). Longer scripts
 * are in tests/processor/interceptors/ (INTERCEPTORS_DIR), the examples in
 * deploy/interceptors/ (EXAMPLES_DIR), short ones inline. */
#ifndef FLUSHOUT_TESTS_INTERCEPTOR_TEST_H
#define FLUSHOUT_TESTS_INTERCEPTOR_TEST_H

#include <msgpack.h>
#include <stdint.h>

#include "processor/handler.h"
#include "processor/interceptor.h"

#define DEFAULT_INSTRUCTIONS 1000000
/* Small enough to keep the hostile cases fast, large enough for every honest case. */
#define FEW_INSTRUCTIONS 100000

/* The default settings (64 MB, codec_limits_default) with this budget. */
processor_interceptor_conf_t conf_for(const char *path, uint64_t max_instructions);
/* Loads or fails the test. */
processor_interceptor_t *load_conf(const processor_interceptor_conf_t *conf);
processor_interceptor_t *load_file(const char *dir, const char *name,
                                   uint64_t max_instructions);
/* Loads the script body from a temporary file /tmp/ic_XXXXXX.lua (its name in path,
 * the file removed once loaded) with conf's settings. NULL and err on failure. */
processor_interceptor_t *try_load(const char *body, processor_interceptor_conf_t conf,
                                  char *err, size_t err_size, char *path,
                                  size_t path_size);
processor_interceptor_t *load_inline(const char *body, uint64_t max_instructions);

codec_value_t *json_value(const char *json);

/* Calls ic on the first command of the flush request (JSON, model "m") with the
 * document doc (JSON) at command count; writes "accept", "props <JSON>" or
 * "reject <message>" into buf. Thread-safe. */
void outcome_into(processor_interceptor_t *ic, const char *doc, const char *flush,
                  uint64_t count, char *buf, size_t size);
/* The newProps ic returns for the flush's first command (it must return some) on
 * document doc (JSON), packed as msgpack into sb (initialised here). */
void new_props_packed(processor_interceptor_t *ic, const char *doc, const char *flush,
                      msgpack_sbuffer *sb);
/* The outcome of the command (JSON) in a flush without context, on document doc
 * (JSON; NULL: {}). The string lives until the next call. */
const char *outcome_on(processor_interceptor_t *ic, const char *doc, const char *command);
const char *outcome(processor_interceptor_t *ic, const char *command);
/* The outcome of an update with props {"case": name} (hostile.lua, sandbox.lua). */
const char *outcome_of_case(processor_interceptor_t *ic, const char *name);

void expect_prefix(const char *got, const char *prefix);
void expect_contains(const char *got, const char *part);

/* A model "m" behind a handler without store, whose master calls the interceptor. */
typedef struct model_s {
    processor_handler_t *h;
    processor_output_t out;
    uint64_t seq;
    int64_t kafka_timestamp; /* the records' timestamp as Kafka gives it; -1: none */
    char reply[1 << 16];
    char document[1 << 16];
} model_t;

/* initial: the document new models start from (JSON), NULL for {}. */
void model_open(model_t *m, processor_interceptor_t *ic, const char *initial);
void model_close(model_t *m);
uint64_t model_count(const model_t *m);
/* Sends a flush from client c, up to date, with extra fields (e.g. USER("alice"))
 * and the completions (JSON, without brackets); returns the reply as JSON (lives
 * until the next flush). */
const char *model_flush(model_t *m, const char *extra, const char *completions);
/* The document as JSON (lives until the next call). */
const char *model_document(model_t *m);

#define UPDATE_X "{\"action\":\"update\",\"path\":[],\"props\":{\"x\":1}}"
#define CREATE_TODO(id, props)                                                       \
    "{\"command\":{\"action\":\"create\",\"path\":[\"todos\"],\"props\":" props "}," \
    "\"createdId\":\"" id "\"}"
#define UPDATE_TODO(id, props)                                             \
    "{\"command\":{\"action\":\"update\",\"path\":[\"todos\",\"" id "\"]," \
    "\"props\":" props "}}"
#define USER(name) "\"context\":{\"user\":\"" name "\"},"

#endif
