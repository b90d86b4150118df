/* processor/handler.c - handles one request record against its model: the store's,
 * or the handler's own in memory. */
#include "handler.h"

#include <stdio.h>
#include <string.h>
#include "codec/hash.h"
/* Seeded: model and client ids come from clients (hash flooding). */
#define HASH_FUNCTION CODEC_UTHASH_FUNCTION
#include <uthash.h>

#include "codec/alloc.h"
#include "codec/msgpack.h"
#include "codec/reply.h"
#include "codec/request.h"
#include "interceptor.h"
#include "state/history_mem.h"

typedef struct model_s {
    char *id;
    size_t id_len;
    state_master_t *master;
    state_history_mem_t *history;
    UT_hash_handle hh;
} model_t;

struct processor_handler_s {
    processor_handler_conf_t conf;
    codec_value_t *initial_document;
    model_t *models;
    state_apply_t apply; /* reused by every flush, keeping its buffers */
    msgpack_zone *zone;  /* each request's decoded tree; cleared after each record */
};

processor_handler_t *processor_handler_new(const processor_handler_conf_t *conf)
{
    processor_handler_t *h = codec_xcalloc(1, sizeof(*h));
    h->conf = *conf;
    h->initial_document = conf->initial_document
                              ? codec_value_copy(conf->initial_document)
                              : codec_value_map(0);
    h->conf.initial_document = NULL;
    state_apply_init(&h->apply);
    h->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (!h->zone) {
        fprintf(stderr, "flushout: out of memory creating a zone\n");
        abort();
    }
    return h;
}

void processor_handler_destroy(processor_handler_t *h)
{
    if (!h)
        return;
    model_t *m, *tmp;
    HASH_ITER(hh, h->models, m, tmp)
    {
        HASH_DEL(h->models, m);
        state_master_destroy(m->master);
        state_history_mem_destroy(m->history);
        free(m->id);
        free(m);
    }
    codec_value_destroy(h->initial_document);
    state_apply_destroy(&h->apply);
    msgpack_zone_free(h->zone);
    free(h);
}

static model_t *model_find(const processor_handler_t *h, const char *id, size_t len)
{
    model_t *m = NULL;
    HASH_FIND(hh, h->models, id, len, m);
    return m;
}

static model_t *model_get(processor_handler_t *h, const codec_str_t *id)
{
    model_t *m = model_find(h, id->ptr, id->len);
    if (m)
        return m;
    m = codec_xcalloc(1, sizeof(*m));
    m->id = codec_xmemdup(id->ptr, id->len);
    m->id_len = id->len;
    m->master = state_master_new(id->ptr, id->len, 0,
                                 codec_value_copy(h->initial_document), &h->conf.master);
    m->history = state_history_mem_new(h->conf.history, 0);
    HASH_ADD_KEYPTR(hh, h->models, m->id, m->id_len, m);
    return m;
}

const state_master_t *processor_handler_model(const processor_handler_t *h,
                                              const char *model, size_t model_len)
{
    model_t *m = model_find(h, model, model_len);
    return m ? m->master : NULL;
}

void processor_output_init(processor_output_t *out)
{
    memset(out, 0, sizeof(*out));
    msgpack_sbuffer_init(&out->reply);
    msgpack_sbuffer_init(&out->change);
}

void processor_output_reset(processor_output_t *out)
{
    msgpack_sbuffer_clear(&out->reply);
    msgpack_sbuffer_clear(&out->change);
    out->reply_key = NULL;
    out->reply_key_len = 0;
    out->error = CODEC_OK;
    out->message[0] = '\0';
    out->snapshot_due = false;
    out->store_intact = false;
    out->commands_applied = 0;
}

void processor_output_destroy(processor_output_t *out)
{
    processor_output_reset(out);
    free(out->reply_key_buf);
    msgpack_sbuffer_destroy(&out->reply);
    msgpack_sbuffer_destroy(&out->change);
}

/* A model wherever it lives: in the handler's own table, or in the store. */
typedef struct target_s {
    state_master_t *master;
    state_history_t history;
    state_model_t *stored;            /* with a store */
    state_history_mem_t *mem_history; /* without one: where applied commands go */
} target_t;

/* Answers with an error reply, remembering why. */
static void reject(processor_output_t *out, msgpack_packer *pk,
                   const codec_reply_to_t *to, codec_err_t err, const char *message)
{
    out->error = err;
    snprintf(out->message, sizeof(out->message), "%s", message);
    codec_reply_pack_error(pk, to, err, message);
}

static void handle_history(const target_t *t, uint64_t retain, const codec_request_t *req,
                           msgpack_packer *pk, const codec_reply_to_t *to,
                           processor_output_t *out)
{
    uint64_t count = state_master_command_count(t->master);
    uint64_t end = req->has_to ? req->to : count;
    char msg[160];
    if (req->from > end || end > count) {
        snprintf(msg, sizeof(msg),
                 "history from %llu to %llu is not a range of the model's %llu commands",
                 (unsigned long long)req->from, (unsigned long long)end,
                 (unsigned long long)count);
        reject(out, pk, to, CODEC_ERR_BAD_RANGE, msg);
        return;
    }
    codec_packed_t list;
    codec_packed_init(&list);
    if (t->history.range(t->history.opaque, req->from, end, &list) != 0) {
        snprintf(msg, sizeof(msg),
                 "history from %llu is no longer kept (kept: the last %llu commands)",
                 (unsigned long long)req->from, (unsigned long long)retain);
        reject(out, pk, to, CODEC_ERR_HISTORY_UNAVAILABLE, msg);
    } else {
        codec_reply_pack_history(pk, to, req->from, &list);
    }
    codec_packed_destroy(&list);
}

/* Replays the in-memory history from the initial document to at, for a handler
 * without a store: it keeps no snapshots, so only a model whose whole history is still
 * in memory travels. @returns the master at that version, or NULL. */
static state_master_t *travel_in_memory(processor_handler_t *h, const target_t *t,
                                        const codec_request_t *req)
{
    codec_packed_t list;
    codec_packed_init(&list);
    state_master_t *past = NULL;
    if (t->history.range(t->history.opaque, 0, req->at, &list) == 0) {
        past = state_master_new(req->model.ptr, req->model.len, 0,
                                codec_value_copy(h->initial_document), &h->conf.master);
        for (uint32_t i = 0; i < list.count && past; i++) {
            size_t len;
            const char *item = codec_packed_item(&list, i, &len);
            codec_completion_t c;
            char err[256];
            if (codec_completion_decode(item, len, h->zone, &c, err, sizeof(err)) ||
                state_master_replay(past, &c, err, sizeof(err))) {
                state_master_destroy(past);
                past = NULL;
            }
        }
    }
    codec_packed_destroy(&list);
    return past;
}

/* A snapshot request: the document now, or with "at" as it was at that version (time
 * travel), rebuilt from the stored snapshots and history (state_model_travel()). */
static void handle_snapshot(processor_handler_t *h, const target_t *t,
                            const codec_request_t *req, msgpack_packer *pk,
                            const codec_reply_to_t *to, processor_output_t *out)
{
    uint64_t count = state_master_command_count(t->master);
    if (!req->has_at || req->at == count) {
        codec_reply_pack_snapshot(pk, to, count, state_master_document(t->master));
        return;
    }
    char msg[200];
    if (req->at > count) {
        snprintf(msg, sizeof(msg), "version %llu is beyond the model's %llu commands",
                 (unsigned long long)req->at, (unsigned long long)count);
        reject(out, pk, to, CODEC_ERR_BAD_RANGE, msg);
        return;
    }
    state_master_t *past = NULL;
    uint64_t oldest = count;
    state_travel_t travel = STATE_TRAVEL_UNAVAILABLE;
    if (t->stored) {
        char errstr[sizeof(out->message)];
        travel = state_model_travel(h->conf.store, t->stored, req->at, &past, &oldest,
                                    errstr, sizeof(errstr));
        if (travel == STATE_TRAVEL_FAILED) {
            reject(out, pk, to, CODEC_ERR_STORE_FAILED, errstr);
            out->store_intact = true;
            return;
        }
    } else if ((past = travel_in_memory(h, t, req))) {
        travel = STATE_TRAVEL_OK;
    }
    if (travel == STATE_TRAVEL_UNAVAILABLE) {
        snprintf(msg, sizeof(msg),
                 "version %llu is older than the history kept: the oldest version "
                 "available is %llu",
                 (unsigned long long)req->at, (unsigned long long)oldest);
        out->error = CODEC_ERR_HISTORY_UNAVAILABLE;
        snprintf(out->message, sizeof(out->message), "%s", msg);
        codec_reply_pack_error_oldest(pk, to, CODEC_ERR_HISTORY_UNAVAILABLE, msg,
                                      &oldest);
        return;
    }
    codec_reply_pack_snapshot(pk, to, req->at, state_master_document(past));
    state_master_destroy(past);
}

/* What an interceptor may add to a flush's commands: each newProps may be this much
 * larger than the props it replaces (processor/interceptor.h). */
static size_t interceptor_growth(const processor_handler_t *h, const codec_request_t *req)
{
    return h->conf.master.interceptor
               ? (size_t)req->n_completions * PROCESSOR_INTERCEPTOR_GROWTH_BYTES
               : 0;
}

/* Whether applying req could take the model's document beyond max_document_bytes. The
 * growth is at most the request's size, and only creates and updates grow it (a flush
 * of deletes is always let through, so a full document can shrink). The exact size
 * costs a walk of the document, so it is computed only when the cheap bound says the
 * document may be near the limit. */
static bool exceeds_document_limit(const processor_handler_t *h, const target_t *t,
                                   const codec_request_t *req, size_t request_bytes,
                                   size_t *size)
{
    uint64_t max = h->conf.max_document_bytes;
    if (!max || !t->stored)
        return false;
    bool grows = false;
    for (uint32_t i = 0; i < req->n_completions && !grows; i++)
        grows = req->completions[i].command.action != CODEC_ACTION_DELETE;
    if (!grows)
        return false;
    request_bytes += interceptor_growth(h, req);
    *size = state_model_document_bound(t->stored);
    if (*size + request_bytes <= max)
        return false;
    *size = codec_msgpack_packed_size(state_master_document(t->master));
    return *size + request_bytes > max;
}

/* The size of req's change record, key included, if it were applied to t now: applied
 * to a scratch copy of the model, which is deterministic (created IDs follow from the
 * model id and command count), so the real apply gives the very same record. */
static size_t change_record_size(const processor_handler_t *h, const target_t *t,
                                 const codec_request_t *req, int64_t offset)
{
    state_master_t *scratch = state_master_new(
        req->model.ptr, req->model.len, state_master_command_count(t->master),
        codec_value_copy(state_master_document(t->master)), &h->conf.master);
    state_apply_t a;
    state_apply_init(&a);
    state_master_apply(scratch, req, NULL, &a);
    size_t size = req->model.len;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &size, codec_msgpack_count_bytes);
    state_change_pack(&pk, req->model.ptr, req->model.len, req->client.ptr,
                      req->client.len, req->seq, &a, offset);
    state_apply_destroy(&a);
    state_master_destroy(scratch);
    return size;
}

/* Whether the change record of req could be larger than one Kafka record may be. A
 * bound from the request settles almost every flush: the commands as applied are the
 * request's (floats widened to 64 bits: under twice its size), each path element may
 * become a created ID (up to 21 bytes), a createdId may be added, and mappedPaths holds
 * at most two entries of a path and an ID per command. Only a flush near the limit is
 * measured exactly, on a scratch copy of the model. */
static bool change_exceeds_limit(const processor_handler_t *h, const target_t *t,
                                 const codec_request_t *req, size_t request_bytes,
                                 int64_t offset, size_t *size)
{
    uint64_t max = h->conf.max_output_bytes;
    if (!max || !h->conf.changes)
        return false;
    size_t elements = 0;
    for (uint32_t i = 0; i < req->n_completions; i++)
        if (req->completions[i].command.path)
            elements += req->completions[i].command.path->u.array.len;
    /* An interceptor's newProps appear once in the change record, in its applied
     * commands. */
    *size = 6 * request_bytes + 128 * elements + 160 * (size_t)req->n_completions +
            2 * req->model.len + req->client.len + 256 + interceptor_growth(h, req);
    if (*size <= max)
        return false;
    *size = change_record_size(h, t, req, offset);
    return *size > max;
}

/* Applies a flush; with a store, checks the client's seq first so that a retried flush
 * is answered again instead of applied twice. */
static void handle_flush(processor_handler_t *h, const target_t *t,
                         const codec_request_t *req, size_t request_bytes, int64_t offset,
                         msgpack_packer *pk, const codec_reply_to_t *to,
                         processor_output_t *out)
{
    state_apply_t *a = &h->apply;
    state_apply_reset(a);
    if (t->stored) {
        state_retry_t retry;
        switch (state_model_check_seq(h->conf.store, t->stored, req->client.ptr,
                                      req->client.len, req->seq, &retry)) {
        case STATE_SEQ_STALE: {
            char msg[128];
            snprintf(msg, sizeof(msg), "seq %llu is older than this client's last flush",
                     (unsigned long long)req->seq);
            reject(out, pk, to, CODEC_ERR_STALE_SEQ, msg);
            return;
        }
        case STATE_SEQ_DUPLICATE:
            /* Nothing is applied. The retry gets the history from its own `from` to
             * right after the original flush, and the original remaps: the proxy ends
             * exactly where the lost reply would have brought it. When that history
             * is no longer kept, the latest snapshot instead (further on, and as
             * consistent). */
            a->result.duplicate = true;
            a->result.applied_from = state_master_command_count(t->master);
            a->result.mapped_paths_raw = retry.mapped_paths;
            a->result.mapped_paths_raw_len = retry.mapped_paths_len;
            a->result.sync = CODEC_SYNC_PARTIAL;
            a->result.diff_from = req->from;
            if (req->from > retry.at ||
                t->history.range(t->history.opaque, req->from, retry.at,
                                 &a->result.diff_history) != 0) {
                codec_packed_reset(&a->result.diff_history);
                a->result.sync = CODEC_SYNC_FULL;
                a->result.latest_count = state_master_command_count(t->master);
                a->result.latest_document = state_master_document(t->master);
            }
            codec_reply_pack_flush(pk, to, &a->result);
            return;
        case STATE_SEQ_NEW:
            break;
        }
    }
    size_t size;
    if (exceeds_document_limit(h, t, req, request_bytes, &size)) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the document (%zu bytes) could grow beyond --max-document-bytes %llu "
                 "with this flush of %zu bytes",
                 size, (unsigned long long)h->conf.max_document_bytes, request_bytes);
        reject(out, pk, to, CODEC_ERR_TOO_LARGE, msg);
        return;
    }
    if (change_exceeds_limit(h, t, req, request_bytes, offset, &size)) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the change record of this flush would be %zu bytes, more than one "
                 "Kafka record may carry here (%llu bytes, see message.max.bytes)",
                 size, (unsigned long long)h->conf.max_output_bytes);
        reject(out, pk, to, CODEC_ERR_TOO_LARGE, msg);
        return;
    }
    state_master_apply(t->master, req, &t->history, a);
    uint64_t replaced = 0;
    bool rewrote = false;
    if (t->stored)
        rewrote = state_model_flushed(h->conf.store, t->stored, req->client.ptr,
                                      req->client.len, req->seq, a, &replaced);
    else
        state_history_mem_append(t->mem_history, a->result.applied_from,
                                 &a->result.applied);
    codec_reply_pack_flush(pk, to, &a->result);
    out->commands_applied =
        state_master_command_count(t->master) - a->result.applied_from;
    /* A count-based snapshot record is due when the count passes a multiple of
     * snapshot_every; for a large document, only with a rewrite of its stored
     * snapshot, counting from the one it replaced (STATE_RECORD_SIZE_FLOOR). Both are
     * decided from what is stored, so the records are the same on every load. */
    uint64_t every = h->conf.snapshot_every;
    uint64_t count = state_master_command_count(t->master);
    uint64_t record_from = a->result.applied_from;
    if (t->stored && state_model_document_bound(t->stored) > STATE_RECORD_SIZE_FLOOR)
        record_from = rewrote ? replaced : count;
    if (every && record_from / every != count / every)
        out->snapshot_due = true;
    if (h->conf.changes) {
        msgpack_packer cpk;
        msgpack_packer_init(&cpk, &out->change, codec_sbuffer_write);
        state_change_pack(&cpk, req->model.ptr, req->model.len, req->client.ptr,
                          req->client.len, req->seq, a, offset);
    }
}

/* The reply's address: whatever of model, client and seq the request named. An id
 * that fails codec_id_check() is left out: it may be the reason for the refusal, and
 * echoing it could make the reply itself undeliverable (too large) or not msgpack
 * (invalid UTF-8). Without a client id there is no reply, only the dead letter. */
static codec_reply_to_t reply_to(const processor_handler_t *h, const codec_request_t *req,
                                 processor_output_t *out)
{
    char ignored[128];
    bool model_ok =
        req->has_model && !codec_id_check("model", req->model.ptr, req->model.len, false,
                                          &h->conf.limits, ignored, sizeof(ignored));
    bool client_ok = req->has_client &&
                     !codec_id_check("client", req->client.ptr, req->client.len, false,
                                     &h->conf.limits, ignored, sizeof(ignored));
    if (client_ok) {
        if (!out->reply_key_buf || req->client.len > out->reply_key_cap) {
            out->reply_key_cap = req->client.len > 64 ? req->client.len : 64;
            out->reply_key_buf = codec_xrealloc(out->reply_key_buf, out->reply_key_cap);
        }
        out->reply_key = out->reply_key_buf;
        if (req->client.len)
            memcpy(out->reply_key, req->client.ptr, req->client.len);
        out->reply_key_len = req->client.len;
    }
    return (codec_reply_to_t){
        .model = model_ok ? &req->model : NULL,
        .client = client_ok ? &req->client : NULL,
        .seq = req->has_seq ? &req->seq : NULL,
    };
}

static bool reply_fits(const processor_handler_t *h, const processor_output_t *out)
{
    uint64_t max = h->conf.max_output_bytes;
    return !max || out->reply.size + out->reply_key_len <= max;
}

/* An answer that one Kafka record cannot carry (max_output_bytes) is replaced by an
 * error reply saying so (reply_too_large): a snapshot of a document near the limit for
 * a client with a long id, a long history range, a flush's sync. What the request did
 * stands (an applied flush stays applied; its change record was bounded before). When
 * even an error reply is too large (client and model ids near the limit), or the
 * answer was an error already, no reply is sent. */
static void fit_reply(const processor_handler_t *h, processor_output_t *out,
                      const codec_reply_to_t *to, const char *hint)
{
    uint64_t max = h->conf.max_output_bytes;
    size_t size = out->reply.size + out->reply_key_len;
    if (reply_fits(h, out))
        return;
    msgpack_sbuffer_clear(&out->reply);
    if (!out->error) {
        char msg[400];
        snprintf(msg, sizeof(msg),
                 "the reply of %zu bytes is more than one Kafka record may carry here "
                 "(%llu bytes, see message.max.bytes): %s",
                 size, (unsigned long long)max, hint);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &out->reply, codec_sbuffer_write);
        reject(out, &pk, to, CODEC_ERR_REPLY_TOO_LARGE, msg);
        if (reply_fits(h, out))
            return;
        msgpack_sbuffer_clear(&out->reply);
    }
    size_t used = strlen(out->message);
    snprintf(out->message + used, sizeof(out->message) - used,
             " (no reply: the client and model ids alone are too long for one)");
    out->reply_key = NULL;
    out->reply_key_len = 0;
}

void processor_handler_refuse(processor_handler_t *h, const char *key, size_t key_len,
                              const char *value, size_t value_len, codec_err_t err,
                              const char *message, processor_output_t *out)
{
    codec_request_t req;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &out->reply, codec_sbuffer_write);
    /* Only a shallow scan: the record may be too large to decode. */
    codec_request_identify(value, value_len, key, key_len, &req);
    codec_reply_to_t to = reply_to(h, &req, out);
    reject(out, &pk, &to, err, message);
    fit_reply(h, out, &to, "");
}

void processor_handler_handle(processor_handler_t *h, int64_t offset, int64_t timestamp,
                              const char *key, size_t key_len, const char *value,
                              size_t value_len, processor_output_t *out)
{
    msgpack_packer pk;
    codec_request_t req;
    char errstr[512];

    char hint[160] = "";
    msgpack_packer_init(&pk, &out->reply, codec_sbuffer_write);
    codec_err_t err =
        codec_request_decode(value, value_len, key, key_len, &h->conf.limits, h->zone,
                             &req, errstr, sizeof(errstr));
    codec_reply_to_t to = reply_to(h, &req, out);
    if (err) {
        reject(out, &pk, &to, err, errstr);
        goto done;
    }
    req.offset = offset;
    if (timestamp >= 0)
        req.timestamp = timestamp;

    target_t t = {0};
    if (h->conf.store) {
        t.stored = state_store_model(h->conf.store, req.model.ptr, req.model.len, errstr,
                                     sizeof(errstr));
        if (!t.stored) {
            reject(out, &pk, &to, CODEC_ERR_STORE_FAILED, errstr);
            goto done;
        }
        t.master = state_model_master(t.stored);
        t.history = state_model_history(t.stored);
    } else {
        model_t *m = model_get(h, &req.model);
        t.master = m->master;
        t.history = state_history_mem_provider(m->history);
        t.mem_history = m->history;
    }

    uint64_t count = state_master_command_count(t.master);
    switch (req.type) {
    case CODEC_REQUEST_FLUSH:
        handle_flush(h, &t, &req, value_len, offset, &pk, &to, out);
        if (!reply_fits(h, out)) /* formatted only when needed: this runs per flush */
            snprintf(hint, sizeof(hint),
                     "the flush was processed (the model is at command %llu, from %llu); "
                     "catch up with a snapshot request",
                     (unsigned long long)state_master_command_count(t.master),
                     (unsigned long long)count);
        break;
    case CODEC_REQUEST_SNAPSHOT:
        handle_snapshot(h, &t, &req, &pk, &to, out);
        snprintf(hint, sizeof(hint),
                 "the document and the ids around it are too large to send");
        break;
    case CODEC_REQUEST_HISTORY:
        handle_history(&t, h->conf.history, &req, &pk, &to, out);
        snprintf(hint, sizeof(hint), "ask for a shorter range");
        break;
    }
done:
    fit_reply(h, out, &to, hint);
    codec_request_clear(&req);
    msgpack_zone_clear(h->zone);
}

int processor_handler_commit(processor_handler_t *h, int64_t next_offset, char *errstr,
                             size_t errstr_size)
{
    if (!h->conf.store)
        return 0;
    return state_store_commit(h->conf.store, next_offset, errstr, errstr_size);
}
