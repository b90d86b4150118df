/* processor/gateway_request.c - requests in (checked with the processor's own limits,
 * bound to the user, produced), replies out (given back to the client as it asked),
 * and the error codes' HTTP statuses. Service thread only. */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utlist.h>

#include "codec/alloc.h"
#include "codec/json.h"
#include "codec/msgpack.h"
#include "codec/request.h"
#include "gateway_int.h"
#include "log.h"
#include "metrics.h"

static const struct {
    int code;
    const char *name;
    unsigned status;
} gw_codes[] = {
    {GW_BAD_REQUEST, "bad_request", 400},
    {GW_UNAUTHORIZED, "unauthorized", 401},
    {GW_FORBIDDEN, "forbidden", 403},
    {GW_READ_ONLY, "read_only", 403},
    {GW_NOT_FOUND, "not_found", 404},
    {GW_METHOD_NOT_ALLOWED, "method_not_allowed", 405},
    {GW_LENGTH_REQUIRED, "length_required", 411},
    {GW_RATE_LIMITED, "rate_limited", 429},
    {GW_TOO_MANY_REQUESTS, "too_many_requests", 429},
    {GW_TIMEOUT, "timeout", 503},
    {GW_UNAVAILABLE, "unavailable", 503},
};

const char *gw_code_name(int code)
{
    if (code >= 0 && code < CODEC_ERR__COUNT)
        return codec_err_name((codec_err_t)code);
    for (size_t i = 0; i < sizeof(gw_codes) / sizeof(gw_codes[0]); i++)
        if (gw_codes[i].code == code)
            return gw_codes[i].name;
    return "unknown";
}

unsigned gw_status(int code)
{
    switch (code) {
    case CODEC_OK:
        return 200;
    case CODEC_ERR_TOO_LARGE:
    case CODEC_ERR_REPLY_TOO_LARGE:
        return 413;
    case CODEC_ERR_STALE_SEQ:
        return 409;
    case CODEC_ERR_HISTORY_UNAVAILABLE:
        return 410;
    /* The gateway's own doing (a partitioner or reply topic the processor does not
     * take) or the processor's: not the client's. */
    case CODEC_ERR_STORE_FAILED:
    case CODEC_ERR_WRONG_PARTITION:
    case CODEC_ERR_BAD_REPLY_TOPIC:
    case CODEC_ERR_MISSING_KEY:
        return 500;
    default:
        break;
    }
    for (size_t i = 0; i < sizeof(gw_codes) / sizeof(gw_codes[0]); i++)
        if (gw_codes[i].code == code)
            return gw_codes[i].status;
    return 400;
}

static int code_by_name(const char *name, size_t len)
{
    for (int c = 1; c < CODEC_ERR__COUNT; c++) {
        const char *n = codec_err_name((codec_err_t)c);
        if (strlen(n) == len && !memcmp(n, name, len))
            return c;
    }
    for (size_t i = 0; i < sizeof(gw_codes) / sizeof(gw_codes[0]); i++)
        if (strlen(gw_codes[i].name) == len && !memcmp(gw_codes[i].name, name, len))
            return gw_codes[i].code;
    return GW_BAD_REQUEST;
}

static void set_str(codec_value_t *map, const char *key, const char *s)
{
    codec_map_set(map, key, strlen(key), codec_value_str(s, strlen(s)));
}

char *gw_error_json(int code, const char *message, const char *model, const char *client,
                    const uint64_t *seq, size_t *len)
{
    codec_value_t *v = codec_value_map(5), *e = codec_value_map(2);
    set_str(v, "type", "error");
    if (model)
        set_str(v, "model", model);
    if (client)
        set_str(v, "client", client);
    if (seq)
        codec_map_set(v, "seq", 3, codec_value_int((int64_t)*seq));
    set_str(e, "code", gw_code_name(code));
    set_str(e, "message", message);
    codec_map_set(v, "error", 5, e);
    char *json = codec_json_encode(v, len);
    codec_value_destroy(v);
    return json;
}

/* The string field key of map, NUL-terminated in a copy, or NULL. */
static char *str_field(const codec_value_t *map, const char *key)
{
    const codec_value_t *f = codec_map_get(map, key, strlen(key));
    return f && f->type == CODEC_VALUE_STR ? codec_xmemdup(f->u.str.ptr, f->u.str.len)
                                           : NULL;
}

/* Puts the gateway's identity fields in the request: the client id bound to the user,
 * a client and seq for reads sent without them, and the context the token vouches
 * for. @returns the client id as the client sent it (malloc'ed), or NULL. */
static char *bind_request(processor_gateway_t *gw, codec_value_t *v, bool flush,
                          const gw_identity_t *ident)
{
    char *given = str_field(v, "client");
    const char *client = given;
    if (!given && !flush && !codec_map_get(v, "client", 6))
        client = "~gateway";
    if (client) {
        size_t plen = strlen(ident->client_prefix), clen = strlen(client);
        char *bound = codec_xmalloc(plen + clen + 1);
        memcpy(bound, ident->client_prefix, plen);
        memcpy(bound + plen, client, clen + 1);
        codec_map_set(v, "client", 6, codec_value_str(bound, plen + clen));
        free(bound);
    }
    if (!flush && !codec_map_get(v, "seq", 3))
        codec_map_set(v, "seq", 3, codec_value_int((int64_t)++gw->next_seq));
    if (ident->user) {
        codec_value_t *context = codec_value_map(2);
        set_str(context, "user", ident->user);
        codec_map_set(context, "claims", 6,
                      ident->claims ? codec_value_copy(ident->claims)
                                    : codec_value_map(0));
        codec_map_set(v, "context", 7, context);
    }
    return given;
}

/* Gives the request back the client id the client sent (none: none), so that an error
 * names the client as the client knows it. */
static void unbind_client(codec_value_t *v, const char *given_client)
{
    if (given_client)
        codec_map_set(v, "client", 6,
                      codec_value_str(given_client, strlen(given_client)));
    else
        codec_value_destroy(codec_map_take(v, "client", 6));
}

char *gw_error_naming(const processor_gateway_t *gw, int code, const char *message,
                      const char *model, const codec_value_t *request, size_t *len)
{
    bool map = request && request->type == CODEC_VALUE_MAP;
    char *client = map ? str_field(request, "client") : NULL;
    char ignored[64];
    if (client && codec_id_check("the client id", client, strlen(client), false,
                                 &gw->limits, ignored, sizeof(ignored))) {
        free(client); /* never echo an id that is not one */
        client = NULL;
    }
    const codec_value_t *s = map ? codec_map_get(request, "seq", 3) : NULL;
    bool has_seq = s && s->type == CODEC_VALUE_INT && s->u.i >= 0;
    uint64_t seq = has_seq ? (uint64_t)s->u.i : 0;
    char *json = gw_error_json(code, message, model, client, has_seq ? &seq : NULL, len);
    free(client);
    return json;
}

/* The error answer for a request that never reached Kafka, naming what identifies it.
 * @returns code. */
static int refuse(const processor_gateway_t *gw, const codec_value_t *v,
                  const char *model, int code, const char *message, char **err,
                  size_t *err_len)
{
    *err = gw_error_naming(gw, code, message, model, v, err_len);
    return code;
}

/* Checks the request as the processor will (the same limits), packed as it will be
 * produced. @returns 0, or the code and why. */
static int check_packed(processor_gateway_t *gw, const msgpack_sbuffer *buf,
                        const char *model, char *why, size_t why_size)
{
    if (buf->size > gw->cfg->max_record_bytes) {
        snprintf(why, why_size,
                 "the request is %zu bytes as msgpack, more than "
                 "--max-record-bytes (%llu)",
                 buf->size, (unsigned long long)gw->cfg->max_record_bytes);
        return CODEC_ERR_TOO_LARGE;
    }
    codec_request_t req;
    memset(&req, 0, sizeof(req));
    codec_err_t e = codec_request_decode(buf->data, buf->size, model, strlen(model),
                                         &gw->limits, NULL, &req, why, why_size);
    codec_request_clear(&req);
    return (int)e;
}

int gw_request_send(processor_gateway_t *gw, gw_send_t *send, char **err, size_t *err_len)
{
    codec_value_t *v = send->request;
    char why[512];
    char *model = NULL, *given_client = NULL;
    int code = 0;
    if (!v || v->type != CODEC_VALUE_MAP) {
        code = refuse(gw, NULL, send->model, CODEC_ERR_WRONG_TYPE,
                      "the request must be a JSON object", err, err_len);
        goto done;
    }
    model = send->model ? codec_xmemdup(send->model, strlen(send->model))
                        : str_field(v, "model");
    if (!model) {
        code = refuse(gw, v, NULL,
                      codec_map_get(v, "model", 5) ? CODEC_ERR_WRONG_TYPE
                                                   : CODEC_ERR_MISSING_FIELD,
                      "model: a string naming the model is required", err, err_len);
        goto done;
    }
    if ((code = codec_id_check("the model id", model, strlen(model), true, &gw->limits,
                               why, sizeof(why)))) {
        code = refuse(gw, v, NULL, code, why, err, err_len);
        goto done;
    }
    if (!gw_auth_model_allowed(send->ident, model)) {
        code = refuse(gw, v, model, GW_FORBIDDEN, "the token does not reach this model",
                      err, err_len);
        goto done;
    }
    const codec_value_t *type = codec_map_get(v, "type", 4);
    bool flush = type && type->type == CODEC_VALUE_STR && type->u.str.len == 5 &&
                 !memcmp(type->u.str.ptr, "flush", 5);
    if (flush && send->ident->read_only) {
        code = refuse(gw, v, model, GW_READ_ONLY, "the token is read-only (write: false)",
                      err, err_len);
        goto done;
    }
    given_client = bind_request(gw, v, flush, send->ident);
    msgpack_sbuffer buf;
    msgpack_sbuffer_init(&buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &buf, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    if ((code = check_packed(gw, &buf, model, why, sizeof(why)))) {
        unbind_client(v, given_client);
        code = refuse(gw, v, model, code, why, err, err_len);
        msgpack_sbuffer_destroy(&buf);
        goto done;
    }
    uint64_t corr = ++gw->next_corr;
    code = gw_kafka_produce(gw, model, strlen(model), buf.data, buf.size, corr,
                            send->conn_id);
    msgpack_sbuffer_destroy(&buf);
    if (code) {
        unbind_client(v, given_client);
        code = refuse(gw, v, model, code,
                      "Kafka cannot take the request now (or this gateway has no reply "
                      "partition yet): retry",
                      err, err_len);
        goto done;
    }
    gw_pending_t *p = codec_xcalloc(1, sizeof(*p));
    const codec_value_t *seq = codec_map_get(v, "seq", 3);
    p->corr = corr;
    p->conn_id = send->conn_id;
    p->answer = send->answer;
    p->client = given_client;
    given_client = NULL;
    p->model = model;
    model = NULL;
    p->seq = seq && seq->type == CODEC_VALUE_INT ? (uint64_t)seq->u.i : 0;
    p->sent_at = processor_monotonic_s();
    p->deadline = p->sent_at + (double)gw->cfg->timeout_ms / 1000.0;
    HASH_ADD(hh, gw->pending, corr, sizeof(p->corr), p);
    DL_APPEND2(gw->pending_head, p, prev, next);
    gw->requests++;
done:
    free(model);
    free(given_client);
    codec_value_destroy(v);
    send->request = NULL;
    return code;
}

void gw_pending_free(processor_gateway_t *gw, gw_pending_t *p)
{
    HASH_DEL(gw->pending, p);
    DL_DELETE2(gw->pending_head, p, prev, next);
    free(p->client);
    free(p->model);
    free(p);
}

char *gw_reply_answer(processor_gateway_t *gw, const gw_pending_t *p, const char *bytes,
                      size_t len, unsigned *status, size_t *out_len)
{
    (void)gw;
    codec_value_t *v = NULL;
    char why[256];
    if (codec_msgpack_decode(bytes, len, &codec_limits_trusted, &v, why, sizeof(why)) ||
        v->type != CODEC_VALUE_MAP) {
        codec_value_destroy(v);
        LOG_WARN("gateway: an unreadable reply for model %s: %s", p->model, why);
        *status = 500;
        return gw_error_json(CODEC_ERR_STORE_FAILED,
                             "the processor's reply is unreadable", p->model, p->client,
                             &p->seq, out_len);
    }
    if (p->client)
        set_str(v, "client", p->client);
    else
        codec_value_destroy(codec_map_take(v, "client", 6));
    const codec_value_t *type = codec_map_get(v, "type", 4);
    const codec_value_t *error = codec_map_get(v, "error", 5);
    const codec_value_t *code = error ? codec_map_get(error, "code", 4) : NULL;
    *status = 200;
    if (type && type->type == CODEC_VALUE_STR && type->u.str.len == 5 &&
        !memcmp(type->u.str.ptr, "error", 5))
        *status = code && code->type == CODEC_VALUE_STR
                      ? gw_status(code_by_name(code->u.str.ptr, code->u.str.len))
                      : 500;
    const codec_value_t *body = v;
    if (*status == 200 && p->answer == GW_ANSWER_SNAPSHOT) {
        const codec_value_t *snapshot = codec_map_get(v, "snapshot", 8);
        if (snapshot)
            body = snapshot;
    }
    char *json = codec_json_encode(body, out_len);
    codec_value_destroy(v);
    return json;
}
