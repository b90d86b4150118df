/* processor/gateway_int.h - what the gateway's files share (GATEWAY.md says what the
 * gateway does; gateway.h is its interface).
 *
 * Threads: the service thread runs libwebsockets and owns everything below that is not
 * marked otherwise (connections, the requests waiting for replies, subscriptions, the
 * token cache, rate buckets). The Kafka threads (replies, changes) only append events
 * to the locked queue and wake the service thread with lws_cancel_service(). */
#ifndef FLUSHOUT_PROCESSOR_GATEWAY_INT_H
#define FLUSHOUT_PROCESSOR_GATEWAY_INT_H

#include <libwebsockets.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uthash.h>

#include "codec/error.h"
#include "codec/value.h"
#include "gateway.h"
#include "metrics.h"
#include "options.h"

/* Gateway error codes beyond the protocol's (codec_err_t), with their statuses. */
typedef enum gw_code_e {
    GW_BAD_REQUEST = CODEC_ERR__COUNT,
    GW_UNAUTHORIZED,
    GW_FORBIDDEN,
    GW_READ_ONLY,
    GW_NOT_FOUND,
    GW_METHOD_NOT_ALLOWED,
    GW_LENGTH_REQUIRED,
    GW_RATE_LIMITED,
    GW_TOO_MANY_REQUESTS,
    GW_TIMEOUT,
    GW_UNAVAILABLE,
} gw_code_t;

/* Who made a request, as its token says (or, without authentication, nobody). */
typedef struct gw_identity_s {
    char *user;            /* the token's sub; NULL without authentication */
    char *client_prefix;   /* "<len>:<sub>/": what client ids are bound with; "" */
    codec_value_t *claims; /* the token's other claims (a map), or NULL */
    char **models;         /* the models claim's patterns; NULL: every model */
    size_t n_models;
    bool read_only;  /* write: false */
    int64_t expires; /* exp in seconds since the epoch, 0 when none */
} gw_identity_t;

/* An event from a Kafka thread for the service thread. */
typedef enum gw_event_kind_e {
    GW_EVENT_REPLY,   /* a reply to one of our requests (corr, bytes) */
    GW_EVENT_FAILED,  /* a request Kafka did not take (corr, err) */
    GW_EVENT_CHANGED, /* a change record for a watched model (model, count) */
    GW_EVENT_READING  /* the changes partition count is read from now on */
} gw_event_kind_t;

typedef struct gw_event_s {
    gw_event_kind_t kind;
    uint64_t corr;
    char *bytes; /* REPLY: the reply's value; CHANGED: the model id */
    size_t len;
    uint64_t count; /* CHANGED: the command count after the change */
    rd_kafka_resp_err_t err;
    struct gw_event_s *next;
} gw_event_t;

/* How a reply is answered. */
typedef enum gw_answer_e {
    GW_ANSWER_WHOLE,    /* the reply as it is (flush, history) */
    GW_ANSWER_SNAPSHOT, /* GET /v1/models/{model}: the reply's "snapshot" */
} gw_answer_t;

/* A connection: an HTTP transaction, an event stream or a WebSocket, known by an id
 * that never repeats. */
typedef enum conn_kind_e { CONN_HTTP, CONN_SSE, CONN_WS } conn_kind_t;

typedef struct gw_frame_s {
    char *data; /* LWS_PRE bytes of headroom, then len bytes */
    size_t len;
    struct gw_frame_s *next;
} gw_frame_t;

typedef struct gw_conn_s {
    uint64_t id;
    struct lws *wsi;
    processor_gateway_t *gw;
    conn_kind_t kind;
    /* HTTP: the route of a POST waiting for its body, the body */
    char *flush_model;
    char *body;
    size_t body_len;
    bool body_too_large;
    /* HTTP: the answer */
    bool answered, headers_sent;
    bool close_after; /* the connection ends with this answer */
    unsigned status, retry_after;
    const char *content_type;
    char *out;
    size_t out_len, out_off;
    /* event streams and WebSockets */
    gw_frame_t *frames;
    size_t queued;
    bool closing;
    gw_identity_t ident;
    char **subs;
    size_t n_subs;
    uint32_t in_flight;
    const codec_value_t *naming; /* the WebSocket request being handled, or NULL */
    char peer[64];
    UT_hash_handle hh;
} gw_conn_t;

/* A request waiting for its reply, by correlation id, in a list ordered by deadline. */
typedef struct gw_pending_s {
    uint64_t corr;
    uint64_t conn_id; /* the connection that waits (it may be gone) */
    gw_answer_t answer;
    char *client; /* the client id as the client sent it; NULL: drop "client" */
    char *model;
    uint64_t seq;
    double sent_at, deadline; /* monotonic seconds */
    UT_hash_handle hh;
    struct gw_pending_s *prev, *next;
} gw_pending_t;

/* Subscribers of one model (connection ids), and the model's changes partition. */
typedef struct gw_watch_s {
    char *model;
    uint64_t *conns;
    size_t n_conns, cap;
    int32_t partition; /* -1: --partitioner any, every partition */
    bool ready;        /* its partition is read: subscribers are told so */
    UT_hash_handle hh;
} gw_watch_t;

typedef struct gw_bucket_s {
    char *who;
    double tokens, at;
    UT_hash_handle hh;
} gw_bucket_t;

typedef struct gw_token_s {
    char *token;
    gw_identity_t ident;
    UT_hash_handle hh;
} gw_token_t;

struct processor_gateway_s {
    const processor_config_t *cfg;
    codec_limits_t limits;
    struct lws_context *lws;
    lws_sorted_usec_list_t tick; /* checks deadlines */
    bool stopping;
    /* auth */
    char *jwt_key;
    size_t jwt_key_len;
    gw_token_t *tokens;
    size_t n_tokens;
    gw_bucket_t *buckets;
    /* connections, by id */
    gw_conn_t *conns;
    size_t n_conns;
    uint64_t next_conn_id;
    /* requests */
    gw_pending_t *pending; /* by corr */
    gw_pending_t *pending_head, *pending_tail;
    uint64_t next_corr, corr_base, next_seq;
    /* watches: by model (service thread); the set of watched models the changes
     * thread filters with is watched_models, under lock */
    gw_watch_t *watches;
    bool *reading; /* changes partitions the changes thread reads now */
    bool reading_any;
    /* Kafka */
    rd_kafka_t *producer, *replies, *changes;
    int32_t changes_partitions;
    pthread_t replies_thread, changes_thread;
    bool threads_started;
    pthread_mutex_t lock; /* guards what follows */
    gw_event_t *events_head, *events_tail;
    bool joined;               /* the group assigned us (possibly nothing) once */
    int32_t *reply_partitions; /* ours, from the group's assignment */
    size_t n_reply_partitions;
    uint32_t *watching; /* watched models per changes partition [changes_partitions] */
    bool wanted_dirty;  /* the changes thread must re-assign */
    struct gw_name_s *watched_models;
    volatile int kafka_stop;
    /* numbers for /metrics and the log at exit (service thread) */
    uint64_t requests, answered, timeouts;
    uint64_t answers[600];            /* answers (HTTP and WebSocket) by status */
    processor_histogram_t round_trip; /* request produced -> reply read */
};

typedef struct gw_name_s {
    char *name;
    UT_hash_handle hh;
} gw_name_t;

/* gateway_auth.c */
int gw_auth_setup(processor_gateway_t *gw, char *errstr, size_t errstr_size);
void gw_auth_destroy(processor_gateway_t *gw);
/** The identity of a request carrying token (NULL: none), or NULL and *code / why. The
 *  identity lives until the next call (the token cache may evict it). */
const gw_identity_t *gw_auth_check(processor_gateway_t *gw, const char *token, int *code,
                                   char *why, size_t why_size);
/** Whether ident may reach model (its models claim). */
bool gw_auth_model_allowed(const gw_identity_t *ident, const char *model);
/** Takes one token from who's bucket. @returns 0, or the seconds until one is there. */
unsigned gw_rate_take(processor_gateway_t *gw, const char *who);
void gw_identity_copy(gw_identity_t *dst, const gw_identity_t *src);
void gw_identity_clear(gw_identity_t *ident);

/* gateway_kafka.c */
int gw_kafka_start(processor_gateway_t *gw, const char *bootstrap, char *errstr,
                   size_t errstr_size);
/** Stops the Kafka threads (nothing wakes the service thread any more). */
void gw_kafka_stop_threads(processor_gateway_t *gw);
/** Stops them and frees the clients (after the service thread's connections). */
void gw_kafka_destroy(processor_gateway_t *gw);
/** Produces a request (value: msgpack) for model, addressed back to us under corr,
 *  for connection conn_id. @returns 0, or GW_UNAVAILABLE (no reply partition yet, or
 *  Kafka refused it). */
int gw_kafka_produce(processor_gateway_t *gw, const char *model, size_t model_len,
                     const char *value, size_t value_len, uint64_t corr,
                     uint64_t conn_id);
/** The changes (and flushes) partition of model under --partitioner; -1 under
 *  --partitioner any (anywhere). */
int32_t gw_model_partition(const processor_gateway_t *gw, const char *model, size_t len);
/** Marks model (in changes partition partition, -1 under --partitioner any) watched or
 *  not; the changes thread reads the partitions of watched models.
 *  @returns whether its partition still has a watched model. */
bool gw_kafka_watch(processor_gateway_t *gw, const char *model, int32_t partition,
                    bool watched);
bool gw_kafka_ready(processor_gateway_t *gw);
/** Pops every queued event, oldest first (caller frees each with gw_event_free). */
gw_event_t *gw_events_take(processor_gateway_t *gw);
void gw_event_free(gw_event_t *e);

/* gateway_request.c: requests in, replies out */
/** The HTTP status of an error code. */
unsigned gw_status(int code);
const char *gw_code_name(int code);
/** An error object as JSON (malloc'ed): {"type":"error",...,"error":{code,message}}. */
char *gw_error_json(int code, const char *message, const char *model, const char *client,
                    const uint64_t *seq, size_t *len);
/** The same, naming the client and seq that request (a decoded request, or NULL) has
 *  when they are valid, so that a client with several requests in flight can tell
 *  which one failed; model is the caller's (a model id found invalid is not echoed). */
char *gw_error_naming(const processor_gateway_t *gw, int code, const char *message,
                      const char *model, const codec_value_t *request, size_t *len);
/* A request to send: the value as JSON in, who sends it, and how it is answered. */
typedef struct gw_send_s {
    codec_value_t *request; /* a map, taken over */
    const char *model;      /* NULL: the request's "model" (WebSocket) */
    const gw_identity_t *ident;
    uint64_t conn_id;
    gw_answer_t answer;
} gw_send_t;
/** Checks, binds and produces a request; on failure writes the error JSON to *err
 *  (malloc'ed) and returns the code. @returns 0 when it waits for its reply. */
int gw_request_send(processor_gateway_t *gw, gw_send_t *send, char **err,
                    size_t *err_len);
/** Turns a reply into the client's answer (the client id given back, or the snapshot
 *  alone). @returns the JSON (malloc'ed) and *status. */
char *gw_reply_answer(processor_gateway_t *gw, const gw_pending_t *p, const char *bytes,
                      size_t len, unsigned *status, size_t *out_len);
void gw_pending_free(processor_gateway_t *gw, gw_pending_t *p);

/* gateway_http.c: the libwebsockets protocol */
extern const struct lws_protocols gw_protocols[];
/** Hands a finished answer to connection conn_id (dropped when it is gone). */
void gw_conn_answer(processor_gateway_t *gw, uint64_t conn_id, unsigned status,
                    char *json, size_t len);
/** Queues bytes for an event stream or WebSocket (gateway_http.c). */
void gw_conn_queue(gw_conn_t *c, const char *bytes, size_t len);

/* gateway_watch.c: subscriptions */
void gw_subscribe(gw_conn_t *c, const char *model);
void gw_unsubscribe(gw_conn_t *c, const char *model);
/** Sends a change notification to the subscribers of model. */
void gw_notify_changed(processor_gateway_t *gw, const char *model, uint64_t count);
/** The changes thread reads partition p from now on: subscriptions there are ready. */
void gw_partition_reading(processor_gateway_t *gw, int32_t p);
/** Closes the event streams whose clients went away. libwebsockets does not read an
 *  HTTP/1.1 connection while its answer is in progress, so a client's FIN would
 *  otherwise be seen only at the next keep-alive write, holding the connection's slot
 *  and subscription until then (gateway_http.c). */
void gw_streams_sweep(processor_gateway_t *gw);
/** Writes the gateway's metrics in Prometheus' text format (gateway.c). */
void gw_metrics_write(processor_gateway_t *gw, FILE *fp);
/** Handles what the Kafka threads queued (gateway.c). */
void gw_on_events(processor_gateway_t *gw);
/** Answers every request whose deadline passed with 503 timeout. */
void gw_expire(processor_gateway_t *gw, double now);

#endif
