/* processor/handler.c - handles one request record against the models it holds. */
#include "handler.h"

#include <stdio.h>
#include <string.h>
#include <uthash.h>

#include "codec/alloc.h"
#include "codec/reply.h"
#include "codec/request.h"
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
}

void processor_output_reset(processor_output_t *out)
{
    msgpack_sbuffer_clear(&out->reply);
    free(out->reply_key);
    out->reply_key = NULL;
    out->reply_key_len = 0;
    out->error = CODEC_OK;
}

void processor_output_destroy(processor_output_t *out)
{
    processor_output_reset(out);
    msgpack_sbuffer_destroy(&out->reply);
}

static void handle_history(model_t *m, uint64_t retain, const codec_request_t *req,
                           msgpack_packer *pk, const codec_reply_to_t *to,
                           processor_output_t *out)
{
    uint64_t count = state_master_command_count(m->master);
    uint64_t end = req->has_to ? req->to : count;
    char msg[160];
    if (req->from > end || end > count) {
        snprintf(msg, sizeof(msg),
                 "history from %llu to %llu is not a range of the model's %llu commands",
                 (unsigned long long)req->from, (unsigned long long)end,
                 (unsigned long long)count);
        out->error = CODEC_ERR_BAD_RANGE;
        codec_reply_pack_error(pk, to, out->error, msg);
        return;
    }
    codec_packed_t list;
    codec_packed_init(&list);
    state_history_t provider = state_history_mem_provider(m->history);
    if (provider.range(provider.opaque, req->from, end, &list) != 0) {
        snprintf(msg, sizeof(msg),
                 "history from %llu is no longer kept (kept: the last %llu commands)",
                 (unsigned long long)req->from, (unsigned long long)retain);
        out->error = CODEC_ERR_HISTORY_UNAVAILABLE;
        codec_reply_pack_error(pk, to, out->error, msg);
    } else {
        codec_reply_pack_history(pk, to, req->from, &list);
    }
    codec_packed_destroy(&list);
}

void processor_handler_handle(processor_handler_t *h, const char *key, size_t key_len,
                              const char *value, size_t value_len,
                              processor_output_t *out)
{
    msgpack_packer pk;
    codec_request_t req;
    char errstr[512];

    msgpack_packer_init(&pk, &out->reply, msgpack_sbuffer_write);
    out->error = codec_request_decode(value, value_len, key, key_len, &h->conf.limits,
                                      h->zone, &req, errstr, sizeof(errstr));
    codec_reply_to_t to = {
        .model = req.has_model ? &req.model : NULL,
        .client = req.has_client ? &req.client : NULL,
        .seq = req.has_seq ? &req.seq : NULL,
    };
    if (req.has_client) {
        out->reply_key = codec_xmemdup(req.client.ptr, req.client.len);
        out->reply_key_len = req.client.len;
    }
    if (out->error) {
        codec_reply_pack_error(&pk, &to, out->error, errstr);
        goto done;
    }

    model_t *m = model_get(h, &req.model);
    switch (req.type) {
    case CODEC_REQUEST_FLUSH: {
        state_apply_t *a = &h->apply;
        state_history_t provider = state_history_mem_provider(m->history);
        state_apply_reset(a);
        state_master_apply(m->master, &req, &provider, a);
        state_history_mem_append(m->history, a->result.applied_from, &a->result.applied);
        codec_reply_pack_flush(&pk, &to, &a->result);
        break;
    }
    case CODEC_REQUEST_SNAPSHOT:
        codec_reply_pack_snapshot(&pk, &to, state_master_command_count(m->master),
                                  state_master_document(m->master));
        break;
    case CODEC_REQUEST_HISTORY:
        handle_history(m, h->conf.history, &req, &pk, &to, out);
        break;
    }
done:
    codec_request_clear(&req);
    msgpack_zone_clear(h->zone);
}
