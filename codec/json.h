/* codec/json.h - JSON decoding into value trees and encoding, through jansson.
 *
 * Integers stay integers (int64) and floats stay floats, so values round-trip.
 * JSON has no binary: binary values are written as Node's Buffer.toJSON() shape,
 * {"type":"Buffer","data":[bytes...]}, and read back as that map. */
#ifndef FLUSHOUT_CODEC_JSON_H
#define FLUSHOUT_CODEC_JSON_H

#include "error.h"
#include "value.h"

/** Decodes one JSON value filling buf[0..len), with the same checks as msgpack
 *  decoding where JSON can express them (duplicate and "__proto__" keys, depth,
 *  string length; jansson itself checks UTF-8 and integer overflow).
 *  @returns CODEC_OK and *out (caller owns it), or an error code and errstr. */
codec_err_t codec_json_decode(const char *buf, size_t len, const codec_limits_t *limits,
                              codec_value_t **out, char *errstr, size_t errstr_size);

/** Encodes a value as compact JSON. @returns a malloc'ed NUL-terminated string
 *  (caller frees), its length in *len when len is not NULL. */
char *codec_json_encode(const codec_value_t *v, size_t *len);

#endif
