/* codec/error.h - error codes of the codec and the protocol, and input limits.
 *
 * Every rejection carries one of these codes (sent to clients as its name, e.g.
 * "duplicate_key") and a message naming the offending field. */
#ifndef FLUSHOUT_CODEC_ERROR_H
#define FLUSHOUT_CODEC_ERROR_H

#include <stddef.h>
#include <stdint.h>

typedef enum codec_err_e {
    CODEC_OK = 0,
    CODEC_ERR_TRUNCATED,           /* input ends inside a value */
    CODEC_ERR_TRAILING_BYTES,      /* bytes after the top-level value */
    CODEC_ERR_RESERVED_BYTE,       /* msgpack 0xc1 */
    CODEC_ERR_UNSUPPORTED_EXT,     /* msgpack ext types, timestamps included */
    CODEC_ERR_INVALID_UTF8,        /* a string or key that is not UTF-8 */
    CODEC_ERR_INVALID_JSON,        /* JSON syntax */
    CODEC_ERR_TOO_DEEP,            /* nesting beyond limits.max_depth */
    CODEC_ERR_TOO_LARGE,           /* a count or length beyond the input or a limit */
    CODEC_ERR_DUPLICATE_KEY,       /* a map key twice */
    CODEC_ERR_FORBIDDEN_KEY,       /* "__proto__", which JavaScript peers cannot hold */
    CODEC_ERR_NOT_FINITE,          /* NaN or an infinity */
    CODEC_ERR_OUT_OF_RANGE,        /* an integer outside what the field allows */
    CODEC_ERR_WRONG_TYPE,          /* a field of the wrong type */
    CODEC_ERR_MISSING_FIELD,       /* a required field is absent */
    CODEC_ERR_UNKNOWN_TYPE,        /* request type */
    CODEC_ERR_UNKNOWN_ACTION,      /* command action */
    CODEC_ERR_MODEL_MISMATCH,      /* "model" differs from the record key */
    CODEC_ERR_HISTORY_UNAVAILABLE, /* a history request beyond what is kept */
    CODEC_ERR_BAD_RANGE,           /* a history request with from > to or to > count */
    CODEC_ERR_STALE_SEQ,           /* a flush older than the client's last applied one */
    CODEC_ERR_STORE_FAILED,        /* the state store could not be read or written */
    CODEC_ERR_MISSING_KEY,         /* a Kafka record without a key (the model id) */
    CODEC_ERR_WRONG_PARTITION,     /* a record key that belongs to another partition */
    CODEC_ERR_BAD_REPLY_TOPIC, /* reply headers naming a topic or partition not allowed */
    CODEC_ERR_REPLY_TOO_LARGE, /* an answer larger than one Kafka record may be */
    CODEC_ERR__COUNT
} codec_err_t;

/** @returns the wire name of an error code, e.g. "truncated". */
const char *codec_err_name(codec_err_t err);

/* Limits on decoded input. Each is a processor option; 0 is never "unlimited". */
typedef struct codec_limits_s {
    uint32_t max_depth;        /* container nesting of a whole record */
    uint32_t max_string_bytes; /* one string, key or binary */
    uint32_t max_completions;  /* commands in one flush */
    uint32_t max_path_length;  /* elements of one command path */
    uint32_t max_id_bytes;     /* a model id (the record key) or a client id */
} codec_limits_t;

#define CODEC_DEFAULT_MAX_DEPTH        64
#define CODEC_DEFAULT_MAX_STRING_BYTES (1u << 20)
#define CODEC_DEFAULT_MAX_COMPLETIONS  10000
#define CODEC_DEFAULT_MAX_PATH_LENGTH  32
#define CODEC_DEFAULT_MAX_ID_BYTES     1024
/* Model ids are stored length-prefixed with 16 bits (state/store.c). */
#define CODEC_MAX_ID_BYTES 65535

/* The most --max-depth and --max-path-length accept (processor/options.c). */
#define CODEC_MAX_MAX_DEPTH       1000
#define CODEC_MAX_MAX_PATH_LENGTH 1000
/* Nesting that stored and published forms add to a request's: a document holds props
 * (at most max_depth deep) below a path of up to max_path_length levels, and records
 * wrap documents and completions in a few levels more (a snapshot record: record,
 * document; a change record: record, applied, completions, completion, command). */
#define CODEC_ENVELOPE_DEPTH 8
/* Deepest nesting of anything this program stores or publishes, whatever the limits
 * it was configured with: trusted data is read with this depth. */
#define CODEC_TRUSTED_MAX_DEPTH \
    (CODEC_MAX_MAX_DEPTH + CODEC_MAX_MAX_PATH_LENGTH + CODEC_ENVELOPE_DEPTH)

/** The default limits. */
extern const codec_limits_t codec_limits_default;

/** Limits for bytes this program wrote itself (replies, stored snapshots, history
 *  and records): documents may nest deeper than requests (path length + props
 *  depth), and nothing else needs bounding. Deep enough for what any accepted
 *  configuration can store (CODEC_TRUSTED_MAX_DEPTH). */
extern const codec_limits_t codec_limits_trusted;

/** @returns the deepest nesting that requests accepted under limits can give any
 *  stored or published form (documents, history, change and snapshot records). */
uint32_t codec_limits_stored_depth(const codec_limits_t *limits);

/** Writes a formatted message to errstr (always NUL-terminated) and returns err. */
codec_err_t codec_errf(codec_err_t err, char *errstr, size_t errstr_size, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));

#endif
