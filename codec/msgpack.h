/* codec/msgpack.h - strict msgpack decoding into value trees, and encoding.
 *
 * Decoding walks the bytes iteratively with an explicit stack instead of using
 * msgpack-c's unpacker, which recurses up to a fixed 32 levels, reserves memory from
 * header counts before checking them against the input, and accepts duplicate keys.
 * Encoding uses msgpack-c's packer. */
#ifndef FLUSHOUT_CODEC_MSGPACK_H
#define FLUSHOUT_CODEC_MSGPACK_H

#include <msgpack.h>

#include "error.h"
#include "value.h"

/** msgpack_sbuffer_write() for packers (msgpack_packer_init(&pk, sb,
 *  codec_sbuffer_write)): the same bytes, but the packer's many small pieces (a type
 *  byte, a short string) are copied inline instead of through a call to memcpy; the
 *  packers of every flush's reply, change record and outbox record called it about 60
 *  times a flush. */
int codec_sbuffer_write(void *data, const char *buf, size_t len);

/** Decodes exactly one msgpack value filling buf[0..len).
 *  Rejects truncated input, trailing bytes, reserved and ext types, non-string or
 *  duplicate or "__proto__" map keys, invalid UTF-8, non-finite floats, integers above
 *  INT64_MAX, and anything beyond limits (depth, string length, counts larger than the
 *  bytes that remain, checked before allocating).
 *  @returns CODEC_OK and *out (caller owns it), or an error code and errstr naming
 *  the position (e.g. "$.completions[2].command: ..."). */
codec_err_t codec_msgpack_decode(const char *buf, size_t len,
                                 const codec_limits_t *limits, codec_value_t **out,
                                 char *errstr, size_t errstr_size);

/* Where the items of one array field of the top-level map sit in the input, noted
 * while decoding so that they can be echoed without packing them again. */
typedef struct codec_spans_s {
    const char *field; /* set by the caller, e.g. "completions" */
    size_t field_len;
    uint32_t count;    /* items found; 0 when the field is absent or not an array */
    uint32_t *offsets; /* item i is bytes [offsets[i], offsets[i + 1]); in the zone */
} codec_spans_t;

/** Like codec_msgpack_decode(), but builds the tree in zone (see codec/value.h):
 *  no per-value malloc, freed with the zone. Used for requests. spans may be NULL. */
codec_err_t codec_msgpack_decode_zone(msgpack_zone *zone, codec_spans_t *spans,
                                      const char *buf, size_t len,
                                      const codec_limits_t *limits, codec_value_t **out,
                                      char *errstr, size_t errstr_size);

/** Packs a value tree. */
void codec_msgpack_pack_value(msgpack_packer *pk, const codec_value_t *v);
/** The bytes codec_msgpack_pack_value() would write for v (0 for NULL), counted
 *  without a buffer. */
size_t codec_msgpack_packed_size(const codec_value_t *v);
/** A msgpack_packer callback that only adds len to the size_t at data. */
int codec_msgpack_count_bytes(void *data, const char *buf, size_t len);

/** Packs a string. */
void codec_msgpack_pack_str(msgpack_packer *pk, const char *s, size_t len);

/** Appends already-encoded msgpack bytes to the packer's output. */
void codec_msgpack_pack_raw(msgpack_packer *pk, const char *bytes, size_t len);

/* A position inside a decoded tree, for error messages. */
typedef struct codec_path_elem_s {
    const char *key; /* NULL for an array index */
    size_t key_len;
    uint32_t index;
} codec_path_elem_t;

/** Writes "$.a[2].b" for elems[0..n) into buf. */
void codec_path_format(const codec_path_elem_t *elems, size_t n, char *buf, size_t size);
/* A decoder's walk through a tree: its limits, where it is, and where its error goes
 * (the msgpack decoder and the JSON converter). */
typedef struct codec_walk_s {
    const codec_limits_t *limits;
    codec_path_elem_t *path; /* path[0..depth) */
    size_t depth;
    char *errstr;
    size_t errstr_size;
} codec_walk_t;

/** Writes "<path>: <what>" to w's errstr, the path as codec_path_format() writes it.
 *  @returns err. */
codec_err_t codec_walk_fail(const codec_walk_t *w, codec_err_t err, const char *what);

/* What a top-level map says about itself without being decoded: found by a shallow,
 * allocation-free scan, so that even a request too deep, too large or cut short can
 * be answered to its sender. Strings point into the scanned bytes. */
typedef struct codec_identity_s {
    const char *model, *client; /* NULL when absent, not a UTF-8 string, or not reached */
    size_t model_len, client_len;
    bool has_seq;
    uint64_t seq;
} codec_identity_t;

/** Scans buf for the top-level map's "model", "client" and "seq" (a string, a
 *  string, an unsigned integer up to 2^53-1), stopping at the first malformed or
 *  missing byte. Linear in len; no recursion, no allocation. */
void codec_msgpack_identify(const char *buf, size_t len, codec_identity_t *id);

/* Shallow reading of trusted bytes: positions found without decoding, so that parts of
 * a record this program wrote can be copied byte for byte. They check the framing
 * only; decode the whole first (codec_msgpack_decode()) to validate it. */

/** Moves *off past the value that starts there, however deeply nested (a count, no
 *  recursion, no allocation). @returns false on malformed or truncated input. */
bool codec_msgpack_skip(const char *buf, size_t len, size_t *off);

/** Reads the array header at *off: sets *count and moves *off to its first item.
 *  @returns false when no array starts there. */
bool codec_msgpack_array_open(const char *buf, size_t len, size_t *off, uint32_t *count);

/** Reads the map header at *off: sets *count (of keys) and moves *off to its first
 *  key. @returns false when no map starts there. */
bool codec_msgpack_map_open(const char *buf, size_t len, size_t *off, uint32_t *count);

/** In the map that starts at *off, finds the string key: moves *off to its value.
 *  @returns false when no map starts there or the key is absent. */
bool codec_msgpack_map_find(const char *buf, size_t len, size_t *off, const char *key,
                            size_t key_len);

/** Reads the string at *off (not bin) into *str (pointing into buf) and moves *off
 *  past it. @returns false when no string starts there. */
bool codec_msgpack_read_str(const char *buf, size_t len, size_t *off, const char **str,
                            size_t *str_len);

/** Reads the unsigned integer at *off (a positive fixint or uint 8-64) and moves *off
 *  past it. @returns false when none starts there. */
bool codec_msgpack_read_uint(const char *buf, size_t len, size_t *off, uint64_t *value);

#endif
