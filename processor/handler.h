/* processor/handler.h - one request record in, its reply and change record out.
 *
 * Bytes in (record key = model id, msgpack value), reply bytes out. This is the
 * processing step shared by `apply`, `rebuild`, the Kafka processor, the benchmarks
 * and the fuzzers. With conf.store (every command), models live in the RocksDB store,
 * loaded through its cache of decoded models (state/store.h), and a retried flush is
 * recognised by its client's seq; without one (the master benchmark, the request
 * fuzzer, the tests' references), the handler keeps them in memory, without client
 * records. */
#ifndef FLUSHOUT_PROCESSOR_HANDLER_H
#define FLUSHOUT_PROCESSOR_HANDLER_H

#include <msgpack.h>

#include "codec/error.h"
#include "state/master.h"
#include "state/store.h"

typedef struct processor_handler_conf_s {
    state_store_t *store; /* where models live; NULL keeps them in memory, without
                           * client records (bench_master, fuzz_request) */
    state_master_conf_t master;
    uint64_t history;                      /* commands of history kept per model */
    const codec_value_t *initial_document; /* new models start from a copy; NULL = {} */
    codec_limits_t limits;
    uint64_t max_document_bytes; /* with a store: a flush that could grow a document
                                  * beyond this (as msgpack) is refused; 0 = none */
    bool changes; /* pack a change record for each applied flush (the Kafka processor) */
    uint64_t max_output_bytes; /* the most a reply or change record (key and value) may
                                * take, one Kafka record: a flush whose change record
                                * could be larger is refused (too_large) before it is
                                * applied, a larger answer is replaced by an error
                                * (reply_too_large); 0 = no bound */
    uint64_t snapshot_every;   /* set out->snapshot_due when a model's count passes a
                                * multiple of this (0: never) */
} processor_handler_conf_t;

typedef struct processor_handler_s processor_handler_t;

/** conf is copied; conf->initial_document is copied too; conf->store stays the
 *  caller's. */
processor_handler_t *processor_handler_new(const processor_handler_conf_t *conf);
void processor_handler_destroy(processor_handler_t *h);

/* What one record produced. */
typedef struct processor_output_s {
    msgpack_sbuffer reply; /* the reply value (msgpack) */
    char *reply_key;       /* the client id, NULL when the request named none */
    size_t reply_key_len;
    char *reply_key_buf; /* where reply_key points, kept from record to record */
    size_t reply_key_cap;
    codec_err_t error;      /* CODEC_OK, or why the record was rejected */
    bool store_intact;      /* with CODEC_ERR_STORE_FAILED: only a read for this request
                             * failed (a time-travel rebuild), nothing the partition's
                             * processing depends on, so it goes on */
    char message[512];      /* with error: the message sent to the client */
    msgpack_sbuffer change; /* with conf.changes: the change record of an applied
                             * flush (state/store.h), else empty */
    bool snapshot_due;      /* the model's snapshot record is due (conf.snapshot_every) */
    uint64_t commands_applied; /* by an applied flush (0 for anything else) */
} processor_output_t;

void processor_output_init(processor_output_t *out);
/** Empties out for the next record, keeping its buffers. */
void processor_output_reset(processor_output_t *out);
void processor_output_destroy(processor_output_t *out);

/** Handles one record at offset (-1: not from Kafka) with its Kafka timestamp in ms
 *  (-1: none; then a flush's own "timestamp" field, if any, is what interceptors see
 *  as meta.timestamp). Never fails: bad
 *  input gets an error reply in out. key may be NULL (then the value must carry
 *  "model"). With a store, changes are durable only after processor_handler_commit().
 *  @locality one thread per handler. */
void processor_handler_handle(processor_handler_t *h, int64_t offset, int64_t timestamp,
                              const char *key, size_t key_len, const char *value,
                              size_t value_len, processor_output_t *out);

/** Refuses a record for a reason found outside its value (err, message): out gets an
 *  error reply addressed to whatever client and seq a shallow scan of the value finds
 *  (the value is not decoded: it may be too large to). */
void processor_handler_refuse(processor_handler_t *h, const char *key, size_t key_len,
                              const char *value, size_t value_len, codec_err_t err,
                              const char *message, processor_output_t *out);

/** Ends a processing step: with a store, writes every change since the
 *  last commit atomically with the partition's next input offset (-1: none).
 *  @returns 0, or -1 and errstr (the store then refuses further steps). */
int processor_handler_commit(processor_handler_t *h, int64_t next_offset, char *errstr,
                             size_t errstr_size);

/** Without a store: the model's master, or NULL if the handler has not seen the
 *  model. With a store: NULL (its models are the store's, state_store_model()). */
const state_master_t *processor_handler_model(const processor_handler_t *h,
                                              const char *model, size_t model_len);

#endif
