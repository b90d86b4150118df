/* codec/json.c - JSON decoding into value trees and encoding, through jansson. */
#include "json.h"

#include <jansson.h>
#include <string.h>

#include "alloc.h"
#include "msgpack.h"

typedef codec_walk_t converter_t;

static codec_err_t fail(converter_t *c, codec_err_t err, const char *what)
{
    return codec_walk_fail(c, err, what);
}

static codec_err_t check_len(converter_t *c, size_t len)
{
    if (len > c->limits->max_string_bytes)
        return fail(c, CODEC_ERR_TOO_LARGE, "string exceeds the string length limit");
    return CODEC_OK;
}

/* Recursion is bounded by limits->max_depth, checked before descending. */
static codec_err_t from_json(converter_t *c, const json_t *j, codec_value_t **out)
{
    codec_err_t err;
    switch (json_typeof(j)) {
    case JSON_NULL:
        *out = codec_value_nil();
        return CODEC_OK;
    case JSON_TRUE:
    case JSON_FALSE:
        *out = codec_value_bool(json_is_true(j));
        return CODEC_OK;
    case JSON_INTEGER:
        *out = codec_value_int(json_integer_value(j));
        return CODEC_OK;
    case JSON_REAL:
        *out = codec_value_float(json_real_value(j));
        return CODEC_OK;
    case JSON_STRING:
        if ((err = check_len(c, json_string_length(j))))
            return err;
        *out = codec_value_str(json_string_value(j), json_string_length(j));
        return CODEC_OK;
    case JSON_ARRAY:
    case JSON_OBJECT:
        break;
    }

    if (c->depth >= c->limits->max_depth)
        return fail(c, CODEC_ERR_TOO_DEEP, "nesting exceeds the depth limit");
    codec_path_elem_t *pe = &c->path[c->depth++];
    *pe = (codec_path_elem_t){0};
    codec_value_t *v = NULL;

    if (json_is_array(j)) {
        v = codec_value_array((uint32_t)json_array_size(j));
        size_t i;
        json_t *item;
        json_array_foreach(j, i, item)
        {
            codec_value_t *child;
            pe->index = (uint32_t)i;
            if ((err = from_json(c, item, &child)))
                goto fail;
            codec_array_push(v, child);
        }
    } else {
        v = codec_value_map((uint32_t)json_object_size(j));
        const char *key;
        size_t key_len;
        json_t *item;
        json_object_keylen_foreach((json_t *)j, key, key_len, item)
        {
            codec_value_t *child;
            pe->key = key;
            pe->key_len = key_len;
            if ((err = check_len(c, key_len)))
                goto fail;
            if (key_len == 9 && memcmp(key, "__proto__", 9) == 0) {
                err = fail(c, CODEC_ERR_FORBIDDEN_KEY,
                           "map key __proto__ is not allowed (JavaScript peers cannot "
                           "hold it)");
                goto fail;
            }
            if ((err = from_json(c, item, &child)))
                goto fail;
            codec_map_add(v, key, key_len, child); /* jansson rejected duplicates */
        }
    }
    c->depth--;
    *out = v;
    return CODEC_OK;

fail:
    codec_value_destroy(v);
    return err;
}

codec_err_t codec_json_decode(const char *buf, size_t len, const codec_limits_t *limits,
                              codec_value_t **out, char *errstr, size_t errstr_size)
{
    json_error_t jerr;
    *out = NULL;
    json_t *j = json_loadb(
        buf, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (!j) {
        codec_err_t err;
        switch (json_error_code(&jerr)) {
        case json_error_duplicate_key:
            err = CODEC_ERR_DUPLICATE_KEY;
            break;
        case json_error_stack_overflow:
            err = CODEC_ERR_TOO_DEEP;
            break;
        case json_error_invalid_utf8:
            err = CODEC_ERR_INVALID_UTF8;
            break;
        case json_error_numeric_overflow:
            err = CODEC_ERR_OUT_OF_RANGE;
            break;
        case json_error_premature_end_of_input:
            err = CODEC_ERR_TRUNCATED;
            break;
        case json_error_end_of_input_expected:
            err = CODEC_ERR_TRAILING_BYTES;
            break;
        default:
            err = CODEC_ERR_INVALID_JSON;
            break;
        }
        return codec_errf(err, errstr, errstr_size, "JSON at byte %d: %s", jerr.position,
                          jerr.text);
    }

    limits = limits ? limits : &codec_limits_default;
    converter_t c = {
        .limits = limits,
        .path = codec_xmalloc((limits->max_depth + 1) * sizeof(codec_path_elem_t)),
        .errstr = errstr,
        .errstr_size = errstr_size,
    };
    codec_err_t err = from_json(&c, j, out);
    free(c.path);
    json_decref(j);
    return err;
}

static json_t *to_json(const codec_value_t *v)
{
    switch (v->type) {
    case CODEC_VALUE_NIL:
        return json_null();
    case CODEC_VALUE_BOOL:
        return json_boolean(v->u.b);
    case CODEC_VALUE_INT:
        return json_integer(v->u.i);
    case CODEC_VALUE_FLOAT:
        return json_real(v->u.f);
    case CODEC_VALUE_STR:
        return json_stringn_nocheck(v->u.str.ptr, v->u.str.len);
    case CODEC_VALUE_BIN: {
        json_t *data = json_array();
        for (uint32_t i = 0; i < v->u.str.len; i++)
            json_array_append_new(data, json_integer((unsigned char)v->u.str.ptr[i]));
        return json_pack("{s:s, s:o}", "type", "Buffer", "data", data);
    }
    case CODEC_VALUE_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < v->u.array.len; i++)
            json_array_append_new(a, to_json(v->u.array.items[i]));
        return a;
    }
    case CODEC_VALUE_MAP: {
        json_t *o = json_object();
        uint32_t pos = 0;
        const codec_map_entry_t *e;
        while ((e = codec_map_next(v, &pos)))
            json_object_setn_new_nocheck(o, codec_map_entry_key(e), e->key_len,
                                         to_json(e->value));
        return o;
    }
    }
    return json_null();
}

char *codec_json_encode(const codec_value_t *v, size_t *len)
{
    json_t *j = to_json(v);
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (!s)
        s = codec_xmemdup("null", 4);
    if (len)
        *len = strlen(s);
    return s;
}
