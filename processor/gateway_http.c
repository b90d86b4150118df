/* processor/gateway_http.c - the gateway's one libwebsockets protocol: HTTP requests,
 * Server-Sent Events and WebSocket connections (GATEWAY.md), on the service thread.
 *
 * Each connection (an HTTP transaction, an event stream, a WebSocket) is a gw_conn_t
 * known by an id that never repeats: a reply that arrives after its connection left
 * finds no id and is dropped, so nothing ever points at a closed connection. */
#define _GNU_SOURCE /* POLLRDHUP */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utlist.h>

#include "codec/alloc.h"
#include "codec/json.h"
#include "codec/request.h"
#include "gateway_int.h"
#include "kafka.h"
#include "log.h"

#define MODELS_PREFIX    "/v1/models/"
#define WS_PATH          "/v1/ws"
#define TOKEN_MAX        8192
#define KEEPALIVE_US     (15 * LWS_US_PER_SEC)
#define CHUNK_BYTES      16384
#define QUEUED_MAX_BYTES (64u << 20) /* a subscriber that reads nothing is let go */

typedef struct pss_s {
    gw_conn_t *conn;
} pss_t;

static gw_conn_t *conn_new(processor_gateway_t *gw, struct lws *wsi, conn_kind_t kind)
{
    gw_conn_t *c = codec_xcalloc(1, sizeof(*c));
    c->id = ++gw->next_conn_id;
    c->wsi = wsi;
    c->gw = gw;
    c->kind = kind;
    lws_get_peer_simple(wsi, c->peer, sizeof(c->peer));
    HASH_ADD(hh, gw->conns, id, sizeof(c->id), c);
    gw->n_conns++;
    return c;
}

static void conn_free(gw_conn_t *c)
{
    if (!c)
        return;
    processor_gateway_t *gw = c->gw;
    while (c->n_subs)
        gw_unsubscribe(c, c->subs[c->n_subs - 1]);
    free(c->subs);
    HASH_DEL(gw->conns, c);
    gw->n_conns--;
    for (gw_frame_t *f = c->frames, *next; f; f = next) {
        next = f->next;
        free(f->data);
        free(f);
    }
    gw_identity_clear(&c->ident);
    free(c->flush_model);
    free(c->body);
    free(c->out);
    free(c);
}

/* Queues bytes for an event stream or WebSocket. */
void gw_conn_queue(gw_conn_t *c, const char *bytes, size_t len)
{
    if (c->closing)
        return;
    if (c->queued + len > QUEUED_MAX_BYTES) {
        LOG_WARN("gateway: %s reads too slowly (%zu bytes waiting): closing it", c->peer,
                 c->queued);
        c->closing = true;
        lws_callback_on_writable(c->wsi);
        return;
    }
    gw_frame_t *f = codec_xcalloc(1, sizeof(*f));
    f->data = codec_xmalloc(LWS_PRE + len);
    memcpy(f->data + LWS_PRE, bytes, len);
    f->len = len;
    LL_APPEND(c->frames, f);
    c->queued += len;
    lws_callback_on_writable(c->wsi);
}

static void answer_text(gw_conn_t *c, unsigned status, char *body, size_t len,
                        const char *content_type);

/* Answers an HTTP request (taking json), or queues it as a WebSocket frame. */
static void conn_answer(gw_conn_t *c, unsigned status, char *json, size_t len,
                        unsigned retry_after)
{
    if (c->kind == CONN_HTTP && c->answered) {
        free(json);
        return;
    }
    c->gw->answers[status < 600 ? status : 599]++;
    if (c->kind != CONN_HTTP) {
        gw_conn_queue(c, json, len);
        free(json);
        return;
    }
    c->retry_after = retry_after;
    answer_text(c, status, json, len, "application/json");
}

/* Answers a probe, a scrape or a file (not counted among the answers to clients), or
 * (conn_answer()) an answer to a client. */
static void answer_text(gw_conn_t *c, unsigned status, char *body, size_t len,
                        const char *content_type)
{
    c->answered = true;
    c->status = status;
    c->out = body;
    c->out_len = len;
    c->content_type = content_type;
    lws_callback_on_writable(c->wsi);
}

/* An error answer, naming the model, client and seq of the WebSocket request being
 * handled (c->naming) when it has them, so that a client with several requests in
 * flight knows which one failed. */
static void conn_error(gw_conn_t *c, int code, const char *message, const char *model,
                       unsigned retry_after)
{
    const codec_value_t *m = !model && c->naming && c->naming->type == CODEC_VALUE_MAP
                                 ? codec_map_get(c->naming, "model", 5)
                                 : NULL;
    char model_buf[CODEC_MAX_ID_BYTES + 1], ignored[64];
    if (m && m->type == CODEC_VALUE_STR && m->u.str.len < sizeof(model_buf)) {
        memcpy(model_buf, m->u.str.ptr, m->u.str.len);
        model_buf[m->u.str.len] = '\0';
        if (!codec_id_check("the model id", model_buf, m->u.str.len, true, &c->gw->limits,
                            ignored, sizeof(ignored)))
            model = model_buf; /* never echo an id that is not one */
    }
    size_t len = 0;
    char *json = gw_error_naming(c->gw, code, message, model, c->naming, &len);
    conn_answer(c, gw_status(code), json, len, retry_after);
}

void gw_conn_answer(processor_gateway_t *gw, uint64_t conn_id, unsigned status,
                    char *json, size_t len)
{
    gw_conn_t *c = NULL;
    HASH_FIND(hh, gw->conns, &conn_id, sizeof(conn_id), c);
    if (!c) {
        free(json);
        return;
    }
    if (c->kind == CONN_WS && c->in_flight)
        c->in_flight--;
    conn_answer(c, status, json, len, 0);
}

/* Requests */

/* The bearer token of the request: the Authorization header, else ?access_token=. */
static char *request_token(struct lws *wsi)
{
    char *buf = codec_xmalloc(TOKEN_MAX);
    int n = lws_hdr_copy(wsi, buf, TOKEN_MAX, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (n > 7 && !strncasecmp(buf, "Bearer ", 7)) {
        memmove(buf, buf + 7, (size_t)n - 6);
        return buf;
    }
    const char *arg = lws_get_urlarg_by_name(wsi, "access_token=", buf, TOKEN_MAX);
    if (arg) {
        memmove(buf, arg, strlen(arg) + 1);
        return buf;
    }
    free(buf);
    return NULL;
}

/* The identity of the request's token, or NULL once the error is answered. */
static const gw_identity_t *authenticate(gw_conn_t *c, const char *model)
{
    char *token = request_token(c->wsi);
    int code = 0;
    char why[256];
    const gw_identity_t *ident = gw_auth_check(c->gw, token, &code, why, sizeof(why));
    free(token);
    if (!ident)
        conn_error(c, code, why, model, 0);
    return ident;
}

/* Authenticates (a WebSocket: its token at the upgrade, still unexpired) and
 * rate-limits one request. @returns its identity, or NULL once the error is
 * answered. */
static const gw_identity_t *admit(gw_conn_t *c, const char *model)
{
    processor_gateway_t *gw = c->gw;
    char why[256];
    const gw_identity_t *ident = c->kind == CONN_WS ? &c->ident : authenticate(c, model);
    if (c->kind == CONN_WS && ident->expires && (int64_t)time(NULL) >= ident->expires) {
        conn_error(c, GW_UNAUTHORIZED, "the token expired", model, 0);
        c->closing = true;
        return NULL;
    }
    if (!ident)
        return NULL;
    unsigned wait = gw_rate_take(gw, ident->user ? ident->user : c->peer);
    if (wait) {
        snprintf(why, sizeof(why),
                 "over the rate limit of %llu requests per second: retry in %u s",
                 (unsigned long long)gw->cfg->rate_limit, wait);
        conn_error(c, GW_RATE_LIMITED, why, model, wait);
        return NULL;
    }
    return ident;
}

static void send_request(gw_conn_t *c, codec_value_t *request, const char *model,
                         const gw_identity_t *ident, gw_answer_t answer)
{
    gw_send_t send = {.request = request,
                      .model = model,
                      .ident = ident,
                      .conn_id = c->id,
                      .answer = answer};
    char *err = NULL;
    size_t err_len = 0;
    int code = gw_request_send(c->gw, &send, &err, &err_len);
    if (code)
        conn_answer(c, gw_status(code), err, err_len, 0);
    else if (c->kind == CONN_WS)
        c->in_flight++;
}

/* A query parameter as a count (0..2^53-1). @returns 1 found, 0 absent, -1 bad. */
static int query_uint(struct lws *wsi, const char *name, uint64_t *out)
{
    char buf[64];
    const char *v = lws_get_urlarg_by_name(wsi, name, buf, sizeof(buf));
    if (!v)
        return 0;
    char *end = NULL;
    unsigned long long n = strtoull(v, &end, 10);
    if (!*v || *end || *v == '-' || n > CODEC_MAX_SAFE_INTEGER)
        return -1;
    *out = n;
    return 1;
}

/* GET /v1/models/{model}[?at=N] and /history?from=N[&to=M]. */
static void get_model(gw_conn_t *c, const char *model, bool history,
                      const gw_identity_t *ident)
{
    codec_value_t *v = codec_value_map(4);
    uint64_t n = 0;
    int got;
    if (history) {
        codec_map_set(v, "type", 4, codec_value_str("history", 7));
        if ((got = query_uint(c->wsi, "from=", &n)) < 0 ||
            (got > 0 && (codec_map_set(v, "from", 4, codec_value_int((int64_t)n)), 0)) ||
            (got = query_uint(c->wsi, "to=", &n)) < 0 ||
            (got > 0 && (codec_map_set(v, "to", 2, codec_value_int((int64_t)n)), 0))) {
            codec_value_destroy(v);
            conn_error(c, GW_BAD_REQUEST, "from and to must be counts (0..2^53-1)", model,
                       0);
            return;
        }
        if (!codec_map_get(v, "from", 4))
            codec_map_set(v, "from", 4, codec_value_int(0));
        send_request(c, v, model, ident, GW_ANSWER_WHOLE);
        return;
    }
    codec_map_set(v, "type", 4, codec_value_str("snapshot", 8));
    if ((got = query_uint(c->wsi, "at=", &n)) < 0) {
        codec_value_destroy(v);
        conn_error(c, GW_BAD_REQUEST, "at must be a version (0..2^53-1)", model, 0);
        return;
    }
    if (got)
        codec_map_set(v, "at", 2, codec_value_int((int64_t)n));
    send_request(c, v, model, ident, GW_ANSWER_SNAPSHOT);
}

static void start_events(gw_conn_t *c, const char *model, const gw_identity_t *ident)
{
    if (!gw_auth_model_allowed(ident, model)) {
        conn_error(c, GW_FORBIDDEN, "the token does not reach this model", model, 0);
        return;
    }
    uint8_t buf[LWS_PRE + 512], *start = &buf[LWS_PRE], *p = start,
                                *end = &buf[sizeof(buf) - 1];
    if (lws_add_http_common_headers(c->wsi, HTTP_STATUS_OK, "text/event-stream",
                                    LWS_ILLEGAL_HTTP_CONTENT_LEN, &p, end) ||
        lws_add_http_header_by_name(c->wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(c->wsi, start, &p, end)) {
        c->closing = true;
        return;
    }
    /* (lws_http_mark_sse() is for HTTP/2 streams: on HTTP/1.1 a response in progress
     * has no idle timeout, and the keep-alive comments keep proxies from closing it.) */
    c->kind = CONN_SSE;
    c->answered = c->headers_sent = true;
    gw_identity_copy(&c->ident, ident);
    lws_set_timer_usecs(c->wsi, KEEPALIVE_US);
    gw_subscribe(c, model);
}

/* Splits /v1/models/{model}[/flush|/history|/events]. libwebsockets has
 * percent-decoded the path already, so the id is everything between the prefix and a
 * trailing action: ids may contain "/", except ones that end in an action's name
 * (those are reached over the WebSocket, which takes any id). */
static char *route_model(const char *path, const char **action)
{
    static const char *const actions[] = {"/flush", "/history", "/events"};
    size_t plen = strlen(MODELS_PREFIX);
    if (strncmp(path, MODELS_PREFIX, plen))
        return NULL;
    const char *m = path + plen;
    size_t len = strlen(m);
    *action = "";
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        size_t alen = strlen(actions[i]);
        if (len > alen && !strcmp(m + len - alen, actions[i])) {
            *action = actions[i] + 1;
            len -= alen;
            break;
        }
    }
    return len ? codec_xmemdup(m, len) : NULL;
}

#define STATIC_FILE_MAX (16u << 20)

static const char *content_type_of(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (!strcmp(dot, types[i].ext))
            return types[i].type;
    return "application/octet-stream";
}

/* GET of a file under --static-dir ("/" is index.html). No path with a ".." segment,
 * no file that is not regular, nothing larger than STATIC_FILE_MAX. */
static void serve_file(gw_conn_t *c, const char *path)
{
    const char *rel = !strcmp(path, "/") ? "/index.html" : path;
    char full[4096];
    struct stat st;
    FILE *fp = NULL;
    int n = snprintf(full, sizeof(full), "%s%s", c->gw->cfg->static_dir, rel);
    if (strstr(rel, "/..") || n <= 0 || (size_t)n >= sizeof(full) || stat(full, &st) ||
        !S_ISREG(st.st_mode) || (size_t)st.st_size > STATIC_FILE_MAX ||
        !(fp = fopen(full, "rb"))) {
        conn_error(c, GW_NOT_FOUND, "no such file", NULL, 0);
        return;
    }
    char *body = codec_xmalloc((size_t)st.st_size + 1);
    size_t len = fread(body, 1, (size_t)st.st_size, fp);
    fclose(fp);
    answer_text(c, 200, body, len, content_type_of(rel));
}

static void on_body_done(gw_conn_t *c);

static int on_http(gw_conn_t *c, const char *path)
{
    processor_gateway_t *gw = c->gw;
    bool get = lws_hdr_total_length(c->wsi, WSI_TOKEN_GET_URI) > 0;
    bool post = lws_hdr_total_length(c->wsi, WSI_TOKEN_POST_URI) > 0;
    if (!strcmp(path, "/healthz")) {
        bool ready = gw_kafka_ready(gw);
        const char *text = ready ? "ok\n" : "no reply partition yet\n";
        answer_text(c, ready ? 200 : 503, codec_xmemdup(text, strlen(text)), strlen(text),
                    "text/plain; charset=utf-8");
        return 0;
    }
    if (!strcmp(path, "/metrics") && get) {
        char *body = NULL;
        size_t len = 0;
        FILE *fp = open_memstream(&body, &len);
        if (!fp)
            return -1;
        gw_metrics_write(gw, fp);
        fclose(fp);
        answer_text(c, 200, body, len, "text/plain; version=0.0.4; charset=utf-8");
        return 0;
    }
    if (gw->cfg->static_dir && strncmp(path, "/v1/", 4) && get) {
        serve_file(c, path);
        return 0;
    }
    const char *action = NULL;
    char *model = route_model(path, &action);
    if (!model) {
        conn_error(c, GW_NOT_FOUND,
                   "no such path: try /v1/models/{model}[/flush|/history|/events]", NULL,
                   0);
        return 0;
    }
    bool flush = !strcmp(action, "flush");
    if ((flush && !post) || (!flush && !get)) {
        conn_error(c, GW_METHOD_NOT_ALLOWED,
                   flush ? "a flush is a POST" : "only GET here", model, 0);
        free(model);
        return 0;
    }
    const gw_identity_t *ident = admit(c, model);
    if (!ident) {
        free(model);
        return 0;
    }
    if (flush) {
        /* Checked again when the body is in (the cache may drop this identity). A POST
         * with neither Content-Length nor Transfer-Encoding has no body (RFC 9112):
         * libwebsockets would wait for one. */
        c->flush_model = model;
        if (lws_hdr_total_length(c->wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH))
            return 0;
        if (lws_hdr_total_length(c->wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING)) {
            /* libwebsockets 4.1 does not read chunked request bodies; the unread body
             * would be taken for the next request's headers, so the connection ends
             * with this answer. */
            c->close_after = true;
            conn_error(c, GW_LENGTH_REQUIRED,
                       "send the body with a Content-Length (chunked request bodies are "
                       "not read)",
                       c->flush_model, 0);
        } else {
            on_body_done(c);
        }
        return 0;
    }
    if (!strcmp(action, "events"))
        start_events(c, model, ident);
    else
        get_model(c, model, !strcmp(action, "history"), ident);
    free(model);
    return 0;
}

static void on_body_done(gw_conn_t *c)
{
    processor_gateway_t *gw = c->gw;
    if (!c->flush_model || c->answered)
        return;
    if (c->body_too_large) {
        conn_error(c, CODEC_ERR_TOO_LARGE,
                   "the request body is larger than the "
                   "gateway takes (twice --max-record-bytes)",
                   c->flush_model, 0);
        return;
    }
    char why[256];
    const gw_identity_t *ident = authenticate(c, c->flush_model);
    if (!ident)
        return;
    codec_value_t *v = NULL;
    codec_err_t e = codec_json_decode(c->body ? c->body : "", c->body_len, &gw->limits,
                                      &v, why, sizeof(why));
    if (e) {
        conn_error(c, e, why, c->flush_model, 0);
        return;
    }
    if (v->type == CODEC_VALUE_MAP)
        codec_map_set(v, "type", 4, codec_value_str("flush", 5));
    send_request(c, v, c->flush_model, ident, GW_ANSWER_WHOLE);
}

static void ws_request(gw_conn_t *c, codec_value_t *v);

/* A WebSocket message: a request, or a subscription. A message the limits refuse is
 * decoded again without them (it is at most twice --max-record-bytes) only to name
 * its model, client and seq in the error. */
static void on_ws_message(gw_conn_t *c)
{
    processor_gateway_t *gw = c->gw;
    char why[256], ignored[64];
    codec_value_t *v = NULL, *naming = NULL;
    codec_err_t e =
        codec_json_decode(c->body, c->body_len, &gw->limits, &v, why, sizeof(why));
    if (e && !codec_json_decode(c->body, c->body_len, &codec_limits_trusted, &naming,
                                ignored, sizeof(ignored)))
        c->naming = naming;
    c->body_len = 0;
    if (e) {
        conn_error(c, e, why, NULL, 0);
        c->naming = NULL;
        codec_value_destroy(naming);
        return;
    }
    c->naming = v;
    ws_request(c, v);
    c->naming = NULL;
}

/* Handles one decoded WebSocket message (taking v). */
static void ws_request(gw_conn_t *c, codec_value_t *v)
{
    processor_gateway_t *gw = c->gw;
    char why[256];
    const codec_value_t *type =
        v->type == CODEC_VALUE_MAP ? codec_map_get(v, "type", 4) : NULL;
    const codec_value_t *model =
        v->type == CODEC_VALUE_MAP ? codec_map_get(v, "model", 5) : NULL;
    bool sub = type && type->type == CODEC_VALUE_STR &&
               ((type->u.str.len == 9 && !memcmp(type->u.str.ptr, "subscribe", 9)) ||
                (type->u.str.len == 11 && !memcmp(type->u.str.ptr, "unsubscribe", 11)));
    if (sub) {
        char *name = model && model->type == CODEC_VALUE_STR
                         ? codec_xmemdup(model->u.str.ptr, model->u.str.len)
                         : NULL;
        if (!name || codec_id_check("the model id", name, strlen(name), true, &gw->limits,
                                    why, sizeof(why)))
            conn_error(c, GW_BAD_REQUEST, "subscribe needs a model id", NULL, 0);
        else if (!gw_auth_model_allowed(&c->ident, name))
            conn_error(c, GW_FORBIDDEN, "the token does not reach this model", name, 0);
        else if (type->u.str.len == 9)
            gw_subscribe(c, name);
        else
            gw_unsubscribe(c, name);
        free(name);
        codec_value_destroy(v);
        return;
    }
    if (c->in_flight >= gw->cfg->max_in_flight) {
        snprintf(why, sizeof(why),
                 "%u requests of this connection wait for replies "
                 "(--max-in-flight)",
                 c->in_flight);
        conn_error(c, GW_TOO_MANY_REQUESTS, why, NULL, 1);
        codec_value_destroy(v);
        return;
    }
    const gw_identity_t *ident = admit(c, NULL);
    if (!ident) {
        codec_value_destroy(v);
        return;
    }
    c->naming = NULL; /* v is the request's now */
    send_request(c, v, NULL, ident, GW_ANSWER_WHOLE);
}

static int ws_established(gw_conn_t *c)
{
    const gw_identity_t *ident = authenticate(c, NULL);
    if (!ident) {
        c->closing = true;
        return 0;
    }
    gw_identity_copy(&c->ident, ident);
    return 0;
}

/* Writes what an HTTP answer still needs: headers, then the body in chunks.
 * @returns non-zero to close the connection. */
static int http_write(gw_conn_t *c, pss_t *pss)
{
    if (!c->answered)
        return 0;
    if (!c->headers_sent) {
        uint8_t buf[LWS_PRE + 1024], *start = &buf[LWS_PRE], *p = start,
                                     *end = &buf[sizeof(buf) - 1];
        char retry[16];
        int n = snprintf(retry, sizeof(retry), "%u", c->retry_after);
        if (lws_add_http_common_headers(c->wsi, c->status, c->content_type,
                                        (lws_filepos_t)c->out_len, &p, end) ||
            lws_add_http_header_by_name(c->wsi, (const unsigned char *)"cache-control:",
                                        (const unsigned char *)"no-store", 8, &p, end) ||
            (c->retry_after &&
             lws_add_http_header_by_name(c->wsi, (const unsigned char *)"retry-after:",
                                         (const unsigned char *)retry, n, &p, end)) ||
            (c->close_after &&
             lws_add_http_header_by_name(c->wsi, (const unsigned char *)"connection:",
                                         (const unsigned char *)"close", 5, &p, end)) ||
            lws_finalize_write_http_header(c->wsi, start, &p, end))
            return -1;
        c->headers_sent = true;
        if (c->out_len) {
            lws_callback_on_writable(c->wsi);
            return 0;
        }
    }
    if (c->out_off < c->out_len) {
        size_t n = c->out_len - c->out_off;
        if (n > CHUNK_BYTES)
            n = CHUNK_BYTES;
        uint8_t buf[LWS_PRE + CHUNK_BYTES];
        memcpy(buf + LWS_PRE, c->out + c->out_off, n);
        c->out_off += n;
        bool last = c->out_off == c->out_len;
        if (lws_write(c->wsi, buf + LWS_PRE, n,
                      last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
            return -1;
        if (!last) {
            lws_callback_on_writable(c->wsi);
            return 0;
        }
    }
    /* Done: the connection may carry the next request (keep-alive). */
    struct lws *wsi = c->wsi;
    bool close = c->close_after;
    pss->conn = NULL;
    conn_free(c);
    return close || lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* Writes the next queued frame of an event stream or WebSocket.
 * @returns non-zero to close the connection. */
static int frames_write(gw_conn_t *c)
{
    gw_frame_t *f = c->frames;
    if (f) {
        LL_DELETE(c->frames, f);
        c->queued -= f->len;
        int n = lws_write(c->wsi, (unsigned char *)f->data + LWS_PRE, f->len,
                          c->kind == CONN_WS ? LWS_WRITE_TEXT : LWS_WRITE_HTTP);
        bool ok = n == (int)f->len;
        free(f->data);
        free(f);
        if (!ok)
            return -1;
        if (c->frames) {
            lws_callback_on_writable(c->wsi);
            return 0;
        }
    }
    if (c->closing) {
        if (c->kind == CONN_WS)
            lws_close_reason(c->wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION, NULL, 0);
        return -1;
    }
    return 0;
}

/* Appends what arrived of a request body or WebSocket message. A body may be twice
 * --max-record-bytes and more (JSON is larger than the msgpack it becomes: the packed
 * size is checked against the limit itself); beyond, it is not kept.
 * @returns false when it would be larger. */
static bool body_append(gw_conn_t *c, const char *in, size_t len)
{
    size_t cap = (size_t)c->gw->cfg->max_record_bytes * 2 + 65536;
    if (c->body_len + len > cap)
        return false;
    c->body = codec_xrealloc(c->body, c->body_len + len + 1);
    memcpy(c->body + c->body_len, in, len);
    c->body_len += len;
    return true;
}

/* Takes a WebSocket message's fragments. @returns non-zero to close. */
static int ws_receive(gw_conn_t *c, const char *in, size_t len)
{
    if (!body_append(c, in, len)) {
        c->body_len = 0;
        conn_error(c, CODEC_ERR_TOO_LARGE,
                   "the message is larger than the gateway takes "
                   "(twice --max-record-bytes)",
                   NULL, 0);
        c->closing = true;
        return 0;
    }
    if (lws_is_final_fragment(c->wsi) && !lws_remaining_packet_payload(c->wsi))
        on_ws_message(c);
    return 0;
}

static int on_http_body(gw_conn_t *c, const char *in, size_t len)
{
    if (!c->body_too_large && !body_append(c, in, len))
        c->body_too_large = true;
    return 0;
}

void gw_streams_sweep(processor_gateway_t *gw)
{
    size_t n = 0;
    for (gw_conn_t *c = gw->conns; c; c = c->hh.next)
        n += c->kind == CONN_SSE;
    if (!n)
        return;
    struct pollfd *fds = codec_xcalloc(n, sizeof(*fds));
    gw_conn_t **conns = codec_xcalloc(n, sizeof(*conns));
    size_t i = 0;
    for (gw_conn_t *c = gw->conns; c; c = c->hh.next) {
        if (c->kind != CONN_SSE)
            continue;
        fds[i].fd = lws_get_socket_fd(c->wsi);
        fds[i].events = POLLRDHUP;
        conns[i++] = c;
    }
    if (poll(fds, n, 0) > 0)
        for (i = 0; i < n; i++)
            if (fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR))
                lws_set_timeout(conns[i]->wsi, PENDING_TIMEOUT_USER_OK,
                                LWS_TO_KILL_ASYNC);
    free(fds);
    free(conns);
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                    void *in, size_t len)
{
    processor_gateway_t *gw = lws_context_user(lws_get_context(wsi));
    pss_t *pss = user;
    gw_conn_t *c = pss ? pss->conn : NULL;
    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        gw_on_events(gw);
        return 0;
    case LWS_CALLBACK_HTTP:
        if (!c) {
            if (gw->n_conns >= gw->cfg->max_connections)
                return -1;
            c = pss->conn = conn_new(gw, wsi, CONN_HTTP);
        }
        return on_http(c, in ? (const char *)in : "/");
    case LWS_CALLBACK_HTTP_BODY:
        return c ? on_http_body(c, in, len) : 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (c)
            on_body_done(c);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!c)
            return 0;
        return c->kind == CONN_SSE ? frames_write(c) : http_write(c, pss);
    case LWS_CALLBACK_TIMER:
        if (c && c->kind == CONN_SSE) {
            gw_conn_queue(c, ": keep-alive\n\n", 14);
            lws_set_timer_usecs(wsi, KEEPALIVE_US);
        }
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char path[64];
        if (lws_hdr_copy(wsi, path, sizeof(path), WSI_TOKEN_GET_URI) < 0 ||
            strcmp(path, WS_PATH) || gw->n_conns >= gw->cfg->max_connections)
            return 1;
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        c = pss->conn = conn_new(gw, wsi, CONN_WS);
        return ws_established(c);
    case LWS_CALLBACK_RECEIVE:
        return c && !c->closing ? ws_receive(c, in, len) : 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return c ? frames_write(c) : 0;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (c) {
            pss->conn = NULL;
            conn_free(c);
        }
        return 0;
    default:
        break;
    }
    return 0;
}

const struct lws_protocols gw_protocols[] = {
    {"flushout", callback, sizeof(pss_t), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};
