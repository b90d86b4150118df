/* state/master.h - applies flushes to a model with flushout@1.1.1's Master semantics.
 *
 * One state_master_t per model: its command count and document. Applying a flush
 * mutates the document and fills a codec_flush_result_t that codec/reply.c packs
 * into the flushResult reply. The deliberate differences from flushout (places where
 * JavaScript throws or corrupts the document) are listed in codec/PROTOCOL.md. */
#ifndef FLUSHOUT_STATE_MASTER_H
#define FLUSHOUT_STATE_MASTER_H

#include "codec/reply.h"
#include "codec/request.h"
#include "codec/value.h"
#include "history.h"
#include "path_mapper.h"

/* How created IDs are chosen when the proposed one collides or is absent. Never
 * random: replaying the same input must rebuild the same state. */
typedef enum state_ids_e {
    STATE_IDS_HASH,       /* a 53-bit hash of model, command count and attempt */
    STATE_IDS_SEQUENTIAL, /* flushout's sequentialIds: String(count + 1 + attempt) */
} state_ids_t;

typedef enum state_intercept_e {
    STATE_INTERCEPT_ACCEPT,        /* apply the command as it is */
    STATE_INTERCEPT_REPLACE_PROPS, /* apply it with new_props instead */
    STATE_INTERCEPT_REJECT,        /* fail it with message */
} state_intercept_t;

typedef struct state_interception_s {
    state_intercept_t kind;
    codec_value_t *new_props; /* REPLACE_PROPS: a map; the master takes ownership */
    char *message; /* REJECT: the error message sent to the client (valid UTF-8, heap,
                    * the master frees it); NULL gives a generic one */
} state_interception_t;

/* What an interceptor knows of the command beyond the document: the flush it is part
 * of (model, client, seq, context, timestamp, offset) and the model's command count
 * before the command. */
typedef struct state_intercept_meta_s {
    const codec_request_t *flush;
    uint64_t command_count;
} state_intercept_meta_t;

/** Flushout's Interceptor: sees each command (after path remapping) before it is
 *  applied, with the document as it is at that moment and the flush's context
 *  (meta->flush->context, NULL when absent). It must not modify the document, and
 *  must give the same outcome for the same arguments (replays and other instances
 *  depend on it). Starts with kind = ACCEPT.
 *  @locality the thread applying the flush. */
typedef void(state_interceptor_fn)(void *opaque, const codec_value_t *document,
                                   const codec_command_t *command,
                                   const state_intercept_meta_t *meta,
                                   state_interception_t *out);

typedef struct state_master_conf_s {
    state_ids_t ids;
    state_interceptor_fn *interceptor; /* NULL for none */
    void *interceptor_opaque;
} state_master_conf_t;

typedef struct state_master_s state_master_t;

/** A model at command_count with document (a map, ownership taken). The model id
 *  seeds hashed IDs. conf is copied. */
state_master_t *state_master_new(const char *model, size_t model_len,
                                 uint64_t command_count, codec_value_t *document,
                                 const state_master_conf_t *conf);
void state_master_destroy(state_master_t *m);

uint64_t state_master_command_count(const state_master_t *m);
/** The document; lives until the next apply or destroy. */
const codec_value_t *state_master_document(const state_master_t *m);

/* The outcome of one apply: the reply's content and the path mappings it refers to. */
typedef struct state_apply_s {
    codec_flush_result_t result;
    state_path_mapper_t mapper;
} state_apply_t;

void state_apply_init(state_apply_t *a);
/** Empties a for the next apply, keeping its buffers (cheaper than init/destroy). */
void state_apply_reset(state_apply_t *a);
void state_apply_destroy(state_apply_t *a);

/** Applies a flush request's completions in order, as Master.apply does: failed
 *  commands are dropped from applied and reported in errors; a sync is due when the
 *  flush's from is behind (partial when history covers from..count exactly, else a
 *  full snapshot) or when anything was changed (remapped, intercepted or failed).
 *  history may be NULL (no history: every out-of-date flush gets a full sync).
 *  a must be freshly initialised or reset; a->result.applied then holds the completions
 * to append to the history. */
void state_master_apply(state_master_t *m, const codec_request_t *flush,
                        const state_history_t *history, state_apply_t *a);

/** Applies one completion exactly as it was applied before (from history, when
 *  loading a model): its path is already remapped and its createdId is the one used.
 *  @returns 0, or -1 and errstr when it does not apply the same way (corrupt state). */
int state_master_replay(state_master_t *m, const codec_completion_t *c, char *errstr,
                        size_t errstr_size);

#endif
