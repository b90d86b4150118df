/* processor/handler.h - handles one request record against the models it holds.
 *
 * Bytes in (record key = model id, msgpack value), reply bytes out. This is the
 * processing step shared by `apply`, the benchmarks and the Kafka processor.
 * Models live in memory here; the RocksDB store takes over in state/store.c. */
#ifndef FLUSHOUT_PROCESSOR_HANDLER_H
#define FLUSHOUT_PROCESSOR_HANDLER_H

#include <msgpack.h>

#include "codec/error.h"
#include "state/master.h"

typedef struct processor_handler_conf_s {
    state_master_conf_t master;
    uint64_t history;                      /* commands of history kept per model */
    const codec_value_t *initial_document; /* new models start from a copy; NULL = {} */
    codec_limits_t limits;
} processor_handler_conf_t;

typedef struct processor_handler_s processor_handler_t;

/** conf is copied; conf->initial_document is copied too. */
processor_handler_t *processor_handler_new(const processor_handler_conf_t *conf);
void processor_handler_destroy(processor_handler_t *h);

/* What one record produced. */
typedef struct processor_output_s {
    msgpack_sbuffer reply; /* the reply value (msgpack) */
    char *reply_key;       /* the client id, NULL when the request named none */
    size_t reply_key_len;
    codec_err_t error; /* CODEC_OK, or why the record was rejected */
} processor_output_t;

void processor_output_init(processor_output_t *out);
/** Empties out for the next record, keeping its buffers. */
void processor_output_reset(processor_output_t *out);
void processor_output_destroy(processor_output_t *out);

/** Handles one record. Never fails: bad input gets an error reply in out.
 *  key may be NULL (then the value must carry "model").
 *  @locality one thread per handler. */
void processor_handler_handle(processor_handler_t *h, const char *key, size_t key_len,
                              const char *value, size_t value_len,
                              processor_output_t *out);

/** The model's master, or NULL if the handler has not seen the model. */
const state_master_t *processor_handler_model(const processor_handler_t *h,
                                              const char *model, size_t model_len);

#endif
