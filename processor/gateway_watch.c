/* processor/gateway_watch.c - subscriptions: which connections watch which models,
 * their confirmation once the model's changes partition is read, and the change
 * notifications (Server-Sent Events or WebSocket frames). Service thread only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "codec/json.h"
#include "gateway_int.h"

/* A subscriber's message, made once for all its subscribers: the JSON a WebSocket
 * gets, and the event-stream form ("event: <type>" and "data: <json>"). */
typedef struct event_s {
    char *json, *sse;
    size_t len, sse_len;
} event_t;

/* {"type": type, "model": model, "commandCount": *count (when given)} */
static void event_make(event_t *e, const char *type, const char *model,
                       const uint64_t *count)
{
    codec_value_t *v = codec_value_map(3);
    codec_map_set(v, "type", 4, codec_value_str(type, strlen(type)));
    codec_map_set(v, "model", 5, codec_value_str(model, strlen(model)));
    if (count)
        codec_map_set(v, "commandCount", 12, codec_value_int((int64_t)*count));
    e->json = codec_json_encode(v, &e->len);
    codec_value_destroy(v);
    size_t cap = e->len + strlen(type) + 32;
    e->sse = codec_xmalloc(cap);
    e->sse_len = (size_t)snprintf(e->sse, cap, "event: %s\ndata: %s\n\n", type, e->json);
}

static void event_queue(gw_conn_t *c, const event_t *e)
{
    if (c->kind == CONN_SSE)
        gw_conn_queue(c, e->sse, e->sse_len);
    else
        gw_conn_queue(c, e->json, e->len);
}

static void event_free(event_t *e)
{
    free(e->json);
    free(e->sse);
}

static void ack_subscribed(gw_conn_t *c, const char *model)
{
    event_t e;
    event_make(&e, "subscribed", model, NULL);
    event_queue(c, &e);
    event_free(&e);
}

static bool partition_read(processor_gateway_t *gw, int32_t p)
{
    return p < 0 ? gw->reading_any : gw->reading[p];
}

void gw_subscribe(gw_conn_t *c, const char *model)
{
    processor_gateway_t *gw = c->gw;
    for (size_t i = 0; i < c->n_subs; i++)
        if (!strcmp(c->subs[i], model)) {
            ack_subscribed(c, model);
            return;
        }
    gw_watch_t *w = NULL;
    HASH_FIND_STR(gw->watches, model, w);
    if (!w) {
        w = codec_xcalloc(1, sizeof(*w));
        w->model = codec_xmemdup(model, strlen(model));
        w->partition = gw_model_partition(gw, model, strlen(model));
        HASH_ADD_KEYPTR(hh, gw->watches, w->model, strlen(w->model), w);
        w->ready = partition_read(gw, w->partition);
        gw_kafka_watch(gw, model, w->partition, true);
    }
    if (w->n_conns == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 4;
        w->conns = codec_xrealloc(w->conns, w->cap * sizeof(uint64_t));
    }
    w->conns[w->n_conns++] = c->id;
    c->subs = codec_xrealloc(c->subs, (c->n_subs + 1) * sizeof(char *));
    c->subs[c->n_subs++] = codec_xmemdup(model, strlen(model));
    if (w->ready)
        ack_subscribed(c, model);
}

void gw_unsubscribe(gw_conn_t *c, const char *name)
{
    processor_gateway_t *gw = c->gw;
    char *model = codec_xmemdup(name, strlen(name)); /* name may be c->subs[i] */
    for (size_t i = 0; i < c->n_subs; i++) {
        if (strcmp(c->subs[i], model))
            continue;
        free(c->subs[i]);
        c->subs[i] = c->subs[--c->n_subs];
        break;
    }
    gw_watch_t *w = NULL;
    HASH_FIND_STR(gw->watches, model, w);
    free(model);
    if (!w)
        return;
    for (size_t i = 0; i < w->n_conns; i++)
        if (w->conns[i] == c->id) {
            w->conns[i] = w->conns[--w->n_conns];
            break;
        }
    if (w->n_conns)
        return;
    HASH_DEL(gw->watches, w);
    /* The partition may stop being read: watches made from now on wait for the
     * changes thread to say it reads it again. */
    if (!gw_kafka_watch(gw, w->model, w->partition, false)) {
        if (w->partition >= 0)
            gw->reading[w->partition] = false;
        else
            gw->reading_any = false;
    }
    free(w->model);
    free(w->conns);
    free(w);
}

void gw_partition_reading(processor_gateway_t *gw, int32_t p)
{
    gw->reading[p] = true;
    gw->reading_any = true;
    for (gw_watch_t *w = gw->watches; w; w = w->hh.next) {
        if (w->ready || (w->partition >= 0 && w->partition != p))
            continue;
        w->ready = true;
        for (size_t i = 0; i < w->n_conns; i++) {
            gw_conn_t *c = NULL;
            HASH_FIND(hh, gw->conns, &w->conns[i], sizeof(uint64_t), c);
            if (c)
                ack_subscribed(c, w->model);
        }
    }
}

void gw_notify_changed(processor_gateway_t *gw, const char *model, uint64_t count)
{
    gw_watch_t *w = NULL;
    HASH_FIND_STR(gw->watches, model, w);
    if (!w)
        return;
    event_t e;
    event_make(&e, "changed", model, &count);
    for (size_t i = 0; i < w->n_conns; i++) {
        gw_conn_t *c = NULL;
        HASH_FIND(hh, gw->conns, &w->conns[i], sizeof(uint64_t), c);
        if (c)
            event_queue(c, &e);
    }
    event_free(&e);
}
