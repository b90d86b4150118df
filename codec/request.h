/* codec/request.h - protocol v1 requests: validation of decoded trees into typed
 * requests. The wire format is written down in codec/PROTOCOL.md. */
#ifndef FLUSHOUT_CODEC_REQUEST_H
#define FLUSHOUT_CODEC_REQUEST_H

#include <msgpack.h>

#include "error.h"
#include "value.h"

typedef enum codec_action_e {
    CODEC_ACTION_CREATE,
    CODEC_ACTION_UPDATE,
    CODEC_ACTION_DELETE,
} codec_action_t;

/** @returns the wire name: "create", "update" or "detete" (flushout's spelling). */
const char *codec_action_name(codec_action_t action);

typedef struct codec_str_s {
    const char *ptr;
    size_t len;
} codec_str_t;

/* Subtrees are borrowed from the tree the request was decoded from. */
typedef struct codec_command_s {
    codec_action_t action;
    const codec_value_t *path;           /* array of strings, NULL when absent */
    const codec_value_t *props;          /* map, NULL when absent */
    const codec_value_t *parent_default; /* map, NULL when absent */
} codec_command_t;

typedef struct codec_completion_s {
    codec_command_t command;
    const codec_value_t *created_id; /* string, NULL when absent */
    /* The completion's own msgpack bytes in the record, when they hold exactly the
     * fields above (nothing unknown, no nils, "detete" spelled so): echoing them is
     * the same as packing the fields again, and much cheaper. NULL otherwise. */
    const char *raw;
    uint32_t raw_len;
} codec_completion_t;

typedef enum codec_request_type_e {
    CODEC_REQUEST_FLUSH,
    CODEC_REQUEST_SNAPSHOT,
    CODEC_REQUEST_HISTORY,
} codec_request_type_t;

typedef struct codec_request_s {
    codec_request_type_t type;
    codec_str_t model; /* the record key, or the "model" field without one */
    codec_str_t client;
    uint64_t seq;
    uint64_t from; /* flush, history */
    uint64_t to;   /* history, when has_to */
    bool has_to;
    uint64_t at; /* snapshot, when has_at: the version asked for (time travel) */
    bool has_at;
    codec_completion_t *completions; /* flush */
    uint32_t n_completions;
    const codec_value_t *context; /* flush: map, NULL when absent */
    int64_t timestamp; /* flush: ms since the epoch, the optional "timestamp" field
                        * (the handler puts a Kafka record's own timestamp here); -1
                        * when absent. Interceptors see it as meta.timestamp. */
    int64_t offset;    /* set by the handler: the record's offset, -1 when none */

    bool has_model, has_client, has_seq; /* what could be identified, even on error */
    codec_value_t *root;                 /* owns everything borrowed above */
    msgpack_zone *zone;                  /* where root and completions live, or NULL */
} codec_request_t;

/** Decodes a msgpack request. key (may be NULL) is the record key = model id.
 *  With a zone, the request's tree is built there (no malloc per value): the caller
 *  clears the zone after codec_request_clear(). zone may be NULL (a heap tree).
 *  On failure the request still holds the identifying fields that were valid
 *  (has_model, has_client, has_seq) for the error reply.
 *  Always call codec_request_clear() afterwards.
 *  @returns CODEC_OK, or an error code and errstr naming the field. */
codec_err_t codec_request_decode(const char *buf, size_t len, const char *key,
                                 size_t key_len, const codec_limits_t *limits,
                                 msgpack_zone *zone, codec_request_t *req, char *errstr,
                                 size_t errstr_size);

/** Checks a model or client id (what names it in errstr, e.g. "the record key"):
 *  valid UTF-8 and at most limits->max_id_bytes; a model id (model) is not empty.
 *  Ids become store keys, record keys and reply fields, so every layer must carry
 *  them. @returns CODEC_OK, CODEC_ERR_TOO_LARGE, CODEC_ERR_INVALID_UTF8 or
 *  CODEC_ERR_OUT_OF_RANGE (empty), with errstr. */
codec_err_t codec_id_check(const char *what, const char *id, size_t len, bool model,
                           const codec_limits_t *limits, char *errstr,
                           size_t errstr_size);

/** Fills only the identifying fields (model, client, seq) of req from a request that
 *  could not be decoded, by a shallow scan (codec_msgpack_identify()); key, when
 *  given, is the model. Strings point into buf. */
void codec_request_identify(const char *buf, size_t len, const char *key, size_t key_len,
                            codec_request_t *req);

/** Validates a decoded heap tree as a request, taking ownership of root. */
codec_err_t codec_request_from_value(codec_value_t *root, const char *key, size_t key_len,
                                     const codec_limits_t *limits, codec_request_t *req,
                                     char *errstr, size_t errstr_size);

/** Decodes one completion as stored in history (the bytes of an applied completion),
 *  building its tree in zone. @returns CODEC_OK, or an error code and errstr. */
codec_err_t codec_completion_decode(const char *buf, size_t len, msgpack_zone *zone,
                                    codec_completion_t *c, char *errstr,
                                    size_t errstr_size);

/** The same for a completion already decoded as v from buf[0..len) (an item of a
 *  decoded change record): c points into v, which must outlive it. */
codec_err_t codec_completion_from_value(const codec_value_t *v, const char *buf,
                                        size_t len, codec_completion_t *c, char *errstr,
                                        size_t errstr_size);

/** Frees what the request owns and zeroes it. */
void codec_request_clear(codec_request_t *req);

/** Packs a completion as {"command":{...},"createdId"?}. Absent fields are omitted. */
void codec_completion_pack(msgpack_packer *pk, const codec_completion_t *c);

/** Packs an array of strings (a path). NULL packs []. */
void codec_path_pack(msgpack_packer *pk, const codec_value_t *path);

/** Joins a path's elements with ',' as JavaScript's Array.prototype.toString does.
 *  Writes into a malloc'ed buffer (*out, caller frees), @returns its length. */
size_t codec_path_join(const codec_value_t *path, uint32_t n_elems, char **out);

#endif
