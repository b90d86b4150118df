/* codec/msgpack.c - strict msgpack decoding into value trees, and encoding. */
#include "msgpack.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "utf8.h"

void codec_path_format(const codec_path_elem_t *elems, size_t n, char *buf, size_t size)
{
    size_t off = 0;
    off += (size_t)snprintf(buf, size, "$");
    for (size_t i = 0; i < n && off < size; i++) {
        if (elems[i].key)
            off += (size_t)snprintf(buf + off, size - off, ".%.*s",
                                    (int)(elems[i].key_len > 40 ? 40 : elems[i].key_len),
                                    elems[i].key);
        else
            off += (size_t)snprintf(buf + off, size - off, "[%u]", elems[i].index);
    }
}

codec_err_t codec_walk_fail(const codec_walk_t *w, codec_err_t err, const char *what)
{
    char where[256];
    codec_path_format(w->path, w->depth, where, sizeof(where));
    return codec_errf(err, w->errstr, w->errstr_size, "%s: %s", where, what);
}

/* ---- decoding ---- */

typedef struct frame_s {
    codec_value_t *container;
    uint32_t remaining; /* items (or map entries) still to read */
} frame_t;

typedef struct decoder_s {
    msgpack_zone *zone;   /* NULL: build a heap tree */
    codec_spans_t *spans; /* NULL, or where the spans of spans->field's items go */
    size_t span_frame;    /* frames[] index of that array, 0 = none (yet) */
    const unsigned char *p, *end;
    frame_t *frames;
    codec_walk_t walk; /* walk.path[i] is the item being read inside frames[i] */
    size_t stack_cap;  /* room in frames[] and walk.path[] */
    bool stack_on_heap;
} decoder_t;

static codec_err_t fail(decoder_t *d, codec_err_t err, const char *what)
{
    return codec_walk_fail(&d->walk, err, what);
}

static bool have(const decoder_t *d, size_t n)
{
    return (size_t)(d->end - d->p) >= n;
}

static uint64_t read_be(decoder_t *d, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = (v << 8) | d->p[i];
    d->p += n;
    return v;
}

/* Reads a length of n bytes (1, 2 or 4) after the type byte. */
static codec_err_t read_len(decoder_t *d, size_t n, uint32_t *len)
{
    if (!have(d, n))
        return fail(d, CODEC_ERR_TRUNCATED, "input ends inside a length");
    *len = (uint32_t)read_be(d, n);
    return CODEC_OK;
}

/* Out of read_bytes(), which runs for every string: its message buffer made every call
 * reserve and check a larger stack frame. */
static __attribute__((noinline, cold)) codec_err_t
bytes_too_large(decoder_t *d, uint32_t len, bool is_str)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "%s of %u bytes exceeds the limit of %u bytes",
             is_str ? "string" : "binary", len, d->walk.limits->max_string_bytes);
    return fail(d, CODEC_ERR_TOO_LARGE, msg);
}

/* Reads string or binary bytes of len, checked against the input and the limit. */
static codec_err_t read_bytes(decoder_t *d, uint32_t len, bool is_str, const char **s)
{
    if (len > d->walk.limits->max_string_bytes)
        return bytes_too_large(d, len, is_str);
    if (!have(d, len))
        return fail(d, CODEC_ERR_TRUNCATED, "input ends inside a string");
    *s = (const char *)d->p;
    d->p += len;
    if (is_str) {
        /* Most strings are short ASCII: check those inline before the full walk. */
        size_t i = codec_utf8_ascii_prefix(*s, len);
        if (i < len && !codec_utf8_valid(*s + i, len - i))
            return fail(d, CODEC_ERR_INVALID_UTF8, "string is not valid UTF-8");
    }
    return CODEC_OK;
}

/* Reads a map key: it must be a string. */
static codec_err_t read_key(decoder_t *d, const char **key, uint32_t *len)
{
    if (!have(d, 1))
        return fail(d, CODEC_ERR_TRUNCATED, "input ends before a map key");
    unsigned char b = *d->p++;
    codec_err_t err;
    if (b >= 0xa0 && b <= 0xbf)
        *len = b & 0x1f;
    else if (b == 0xd9 || b == 0xda || b == 0xdb) {
        if ((err = read_len(d, (size_t)1 << (b - 0xd9), len)))
            return err;
    } else
        return fail(d, CODEC_ERR_WRONG_TYPE, "map key is not a string");
    if ((err = read_bytes(d, *len, true, key)))
        return err;
    if (*len == 9 && memcmp(*key, "__proto__", 9) == 0)
        return fail(d, CODEC_ERR_FORBIDDEN_KEY,
                    "map key __proto__ is not allowed (JavaScript peers cannot hold it)");
    return CODEC_OK;
}

static codec_value_t *scalar(decoder_t *d, codec_value_type_t type)
{
    if (d->zone)
        return codec_zone_value(d->zone, type, 0);
    codec_value_t *v = codec_value_nil(); /* scalars own nothing: retyping is safe */
    v->type = type;
    return v;
}

static codec_value_t *bytes(decoder_t *d, codec_value_type_t type, const char *s,
                            uint32_t len)
{
    if (d->zone)
        return codec_zone_bytes(d->zone, type, s, len);
    return type == CODEC_VALUE_STR ? codec_value_str(s, len) : codec_value_bin(s, len);
}

static codec_value_t *container(decoder_t *d, codec_value_type_t type, uint32_t count)
{
    if (d->zone)
        return codec_zone_value(d->zone, type, count);
    return type == CODEC_VALUE_MAP ? codec_value_map(count) : codec_value_array(count);
}

/* Reads a float (0xca, 0xcb) or a sized integer (0xcc-0xd3) after its type byte b. */
static codec_err_t read_number(decoder_t *d, unsigned char b, codec_value_t **out)
{
    switch (b) {
    case 0xca: {
        if (!have(d, 4))
            return fail(d, CODEC_ERR_TRUNCATED, "input ends inside a float");
        uint32_t bits = (uint32_t)read_be(d, 4);
        float f;
        memcpy(&f, &bits, sizeof(f));
        if (!isfinite(f))
            return fail(d, CODEC_ERR_NOT_FINITE, "NaN and infinities are not allowed");
        *out = scalar(d, CODEC_VALUE_FLOAT);
        (*out)->u.f = f;
        return CODEC_OK;
    }
    case 0xcb: {
        if (!have(d, 8))
            return fail(d, CODEC_ERR_TRUNCATED, "input ends inside a float");
        uint64_t bits = read_be(d, 8);
        double f;
        memcpy(&f, &bits, sizeof(f));
        if (!isfinite(f))
            return fail(d, CODEC_ERR_NOT_FINITE, "NaN and infinities are not allowed");
        *out = scalar(d, CODEC_VALUE_FLOAT);
        (*out)->u.f = f;
        return CODEC_OK;
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf: {
        size_t n = (size_t)1 << (b - 0xcc);
        if (!have(d, n))
            return fail(d, CODEC_ERR_TRUNCATED, "input ends inside an integer");
        uint64_t u = read_be(d, n);
        if (u > (uint64_t)INT64_MAX)
            return fail(d, CODEC_ERR_OUT_OF_RANGE, "integer above 2^63-1");
        *out = scalar(d, CODEC_VALUE_INT);
        (*out)->u.i = (int64_t)u;
        return CODEC_OK;
    }
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
        size_t n = (size_t)1 << (b - 0xd0);
        if (!have(d, n))
            return fail(d, CODEC_ERR_TRUNCATED, "input ends inside an integer");
        uint64_t u = read_be(d, n);
        int64_t i;
        if (n == 1)
            i = (int8_t)u;
        else if (n == 2)
            i = (int16_t)u;
        else if (n == 4)
            i = (int32_t)u;
        else
            memcpy(&i, &u, sizeof(i));
        *out = scalar(d, CODEC_VALUE_INT);
        (*out)->u.i = i;
        return CODEC_OK;
    }
    }
    return fail(d, CODEC_ERR_RESERVED_BYTE, "unknown type byte");
}

/* Reads one value header. Scalars come back complete; containers come back empty with
 * *count set to the number of items (entries for maps) still to read. */
static codec_err_t read_value(decoder_t *d, codec_value_t **out, uint32_t *count)
{
    *count = 0;
    if (!have(d, 1))
        return fail(d, CODEC_ERR_TRUNCATED, "input ends before a value");
    unsigned char b = *d->p++;
    codec_err_t err;
    uint32_t len = 0;
    const char *s;

    if (b <= 0x7f || b >= 0xe0) { /* positive and negative fixint */
        *out = scalar(d, CODEC_VALUE_INT);
        (*out)->u.i = b <= 0x7f ? (int64_t)b : (int64_t)(int8_t)b;
        return CODEC_OK;
    }
    if (b >= 0xa0 && b <= 0xbf) {
        if ((err = read_bytes(d, b & 0x1f, true, &s)))
            return err;
        *out = bytes(d, CODEC_VALUE_STR, s, b & 0x1f);
        return CODEC_OK;
    }
    if ((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf) {
        if (b <= 0x8f)
            len = b & 0x0f;
        else if ((err = read_len(d, b == 0xde ? 2 : 4, &len)))
            return err;
        /* Each entry needs at least two bytes: check before reserving anything. */
        if ((uint64_t)len * 2 > (uint64_t)(d->end - d->p))
            return fail(d, CODEC_ERR_TOO_LARGE,
                        "map header claims more entries than the input holds");
        *out = container(d, CODEC_VALUE_MAP, len);
        *count = len;
        return CODEC_OK;
    }
    if ((b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd) {
        if (b <= 0x9f)
            len = b & 0x0f;
        else if ((err = read_len(d, b == 0xdc ? 2 : 4, &len)))
            return err;
        if ((uint64_t)len > (uint64_t)(d->end - d->p))
            return fail(d, CODEC_ERR_TOO_LARGE,
                        "array header claims more items than the input holds");
        *out = container(d, CODEC_VALUE_ARRAY, len);
        *count = len;
        return CODEC_OK;
    }

    switch (b) {
    case 0xc0:
        *out = scalar(d, CODEC_VALUE_NIL);
        return CODEC_OK;
    case 0xc1:
        return fail(d, CODEC_ERR_RESERVED_BYTE, "reserved type byte 0xc1");
    case 0xc2:
    case 0xc3:
        *out = scalar(d, CODEC_VALUE_BOOL);
        (*out)->u.b = b == 0xc3;
        return CODEC_OK;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        if ((err = read_len(d, (size_t)1 << (b - 0xc4), &len)) ||
            (err = read_bytes(d, len, false, &s)))
            return err;
        *out = bytes(d, CODEC_VALUE_BIN, s, len);
        return CODEC_OK;
    case 0xc7:
    case 0xc8:
    case 0xc9:
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return fail(d, CODEC_ERR_UNSUPPORTED_EXT, "msgpack ext types are not supported");
    case 0xca:
    case 0xcb:
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3:
        return read_number(d, b, out);
    case 0xd9:
    case 0xda:
    case 0xdb:
        if ((err = read_len(d, (size_t)1 << (b - 0xd9), &len)) ||
            (err = read_bytes(d, len, true, &s)))
            return err;
        *out = bytes(d, CODEC_VALUE_STR, s, len);
        return CODEC_OK;
    }
    return fail(d, CODEC_ERR_RESERVED_BYTE, "unknown type byte");
}

/* The top-level field's array of count items starts: its item offsets go to spans. */
static void spans_start(decoder_t *d, uint32_t count)
{
    size_t size = ((size_t)count + 1) * sizeof(uint32_t);
    d->spans->offsets = d->zone ? msgpack_zone_malloc(d->zone, size) : NULL;
    if (!d->spans->offsets)
        return; /* heap decoding does not record spans */
    d->spans->count = count;
    d->span_frame = d->walk.depth;
}

/* Reads the next item (map entry or array item) of the frame f, whose path element is
 * pe, and adds it to f's container. */
static codec_err_t read_item(decoder_t *d, frame_t *f, codec_path_elem_t *pe,
                             const char *buf, codec_value_t **item, uint32_t *count)
{
    codec_err_t err;
    if (f->container->type == CODEC_VALUE_MAP) {
        const char *key = NULL;
        uint32_t key_len = 0;
        pe->key = NULL;
        if ((err = read_key(d, &key, &key_len)))
            return err;
        pe->key = key;
        pe->key_len = key_len;
        if ((err = read_value(d, item, count)))
            return err;
        int added = d->zone
                        ? codec_zone_map_add(d->zone, f->container, key, key_len, *item)
                        : codec_map_add(f->container, key, key_len, *item);
        if (added != 0) {
            if (!d->zone)
                codec_value_destroy(*item);
            return fail(d, CODEC_ERR_DUPLICATE_KEY, "duplicate map key");
        }
        return CODEC_OK;
    }
    if (d->span_frame && d->walk.depth - 1 == d->span_frame)
        d->spans->offsets[pe->index] = (uint32_t)(d->p - (const unsigned char *)buf);
    if ((err = read_value(d, item, count)))
        return err;
    codec_array_push(f->container, *item);
    return CODEC_OK;
}

/* Doubles the room in the frame and path stacks (the caller checked the depth limit,
 * so it stays within max_depth + 1). */
static void stack_grow(decoder_t *d)
{
    size_t cap = d->stack_cap * 2;
    if (cap > (size_t)d->walk.limits->max_depth + 1)
        cap = (size_t)d->walk.limits->max_depth + 1;
    if (d->stack_on_heap) {
        d->frames = codec_xrealloc(d->frames, cap * sizeof(*d->frames));
        d->walk.path = codec_xrealloc(d->walk.path, cap * sizeof(*d->walk.path));
    } else {
        frame_t *frames = codec_xmalloc(cap * sizeof(*frames));
        codec_path_elem_t *path = codec_xmalloc(cap * sizeof(*path));
        memcpy(frames, d->frames, d->stack_cap * sizeof(*frames));
        memcpy(path, d->walk.path, d->stack_cap * sizeof(*path));
        d->frames = frames;
        d->walk.path = path;
        d->stack_on_heap = true;
    }
    d->stack_cap = cap;
}

static codec_err_t decode(msgpack_zone *zone, codec_spans_t *spans, const char *buf,
                          size_t len, const codec_limits_t *limits, codec_value_t **out,
                          char *errstr, size_t errstr_size)
{
    decoder_t d = {
        .zone = zone,
        .spans = spans,
        .p = (const unsigned char *)buf,
        .end = (const unsigned char *)buf + len,
        .walk = {.limits = limits ? limits : &codec_limits_default,
                 .errstr = errstr,
                 .errstr_size = errstr_size},
    };
    codec_value_t *root = NULL;
    codec_err_t err = CODEC_OK;
    uint32_t count;

    /* The stacks start on the C stack, deep enough for the usual limits, and move to
     * the heap only for a value that nests deeper: trusted data (stored history,
     * change records) is read with a depth limit of thousands, and allocating that
     * much for every record was a fifth of a restore's CPU. */
    frame_t frames_buf[CODEC_DEFAULT_MAX_DEPTH + 1];
    codec_path_elem_t path_buf[CODEC_DEFAULT_MAX_DEPTH + 1];

    *out = NULL;
    d.frames = frames_buf;
    d.walk.path = path_buf;
    d.stack_cap = CODEC_DEFAULT_MAX_DEPTH + 1;

    if ((err = read_value(&d, &root, &count)))
        goto done;
    if (count) {
        if (d.walk.limits->max_depth < 1) {
            err = fail(&d, CODEC_ERR_TOO_DEEP, "nesting exceeds the depth limit");
            goto done;
        }
        d.frames[0] = (frame_t){root, count};
        d.walk.path[0] = (codec_path_elem_t){0};
        d.walk.depth = 1;
    }

    while (d.walk.depth > 0) {
        frame_t *f = &d.frames[d.walk.depth - 1];
        codec_path_elem_t *pe = &d.walk.path[d.walk.depth - 1];
        if (f->remaining == 0) {
            if (d.span_frame && d.walk.depth - 1 == d.span_frame) {
                d.spans->offsets[d.spans->count] =
                    (uint32_t)(d.p - (const unsigned char *)buf);
                d.span_frame = 0;
            }
            d.walk.depth--;
            if (d.walk.depth > 0) {
                codec_path_elem_t *parent = &d.walk.path[d.walk.depth - 1];
                parent->index++;
            }
            continue;
        }
        codec_value_t *item = NULL;
        if ((err = read_item(&d, f, pe, buf, &item, &count)))
            goto done;
        f->remaining--;
        if (count) {
            if (d.walk.depth >= d.walk.limits->max_depth) {
                err = fail(&d, CODEC_ERR_TOO_DEEP, "nesting exceeds the depth limit");
                goto done;
            }
            if (d.spans && d.walk.depth == 1 && item->type == CODEC_VALUE_ARRAY &&
                pe->key && pe->key_len == d.spans->field_len &&
                !memcmp(pe->key, d.spans->field, pe->key_len))
                spans_start(&d, count);
            if (d.walk.depth == d.stack_cap)
                stack_grow(&d);
            d.frames[d.walk.depth] = (frame_t){item, count};
            d.walk.path[d.walk.depth] = (codec_path_elem_t){0};
            d.walk.depth++;
        } else {
            pe->index++;
        }
    }

    if (d.p != d.end) {
        char msg[64];
        snprintf(msg, sizeof(msg), "%zu trailing bytes after the value",
                 (size_t)(d.end - d.p));
        d.walk.depth = 0;
        err = fail(&d, CODEC_ERR_TRAILING_BYTES, msg);
    }

done:
    if (d.stack_on_heap) {
        free(d.frames);
        free(d.walk.path);
    }
    if (!err)
        *out = root;
    else if (!zone)
        codec_value_destroy(root);
    return err;
}

codec_err_t codec_msgpack_decode(const char *buf, size_t len,
                                 const codec_limits_t *limits, codec_value_t **out,
                                 char *errstr, size_t errstr_size)
{
    return decode(NULL, NULL, buf, len, limits, out, errstr, errstr_size);
}

codec_err_t codec_msgpack_decode_zone(msgpack_zone *zone, codec_spans_t *spans,
                                      const char *buf, size_t len,
                                      const codec_limits_t *limits, codec_value_t **out,
                                      char *errstr, size_t errstr_size)
{
    if (spans)
        spans->count = 0, spans->offsets = NULL;
    return decode(zone, spans, buf, len, limits, out, errstr, errstr_size);
}

/* ---- encoding ---- */

void codec_msgpack_pack_str(msgpack_packer *pk, const char *s, size_t len)
{
    msgpack_pack_str_with_body(pk, s, len);
}

void codec_msgpack_pack_raw(msgpack_packer *pk, const char *bytes, size_t len)
{
    if (len)
        pk->callback(pk->data, bytes, len);
}

void codec_msgpack_pack_value(msgpack_packer *pk, const codec_value_t *v)
{
    switch (v->type) {
    case CODEC_VALUE_NIL:
        msgpack_pack_nil(pk);
        break;
    case CODEC_VALUE_BOOL:
        if (v->u.b)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
        break;
    case CODEC_VALUE_INT:
        msgpack_pack_int64(pk, v->u.i);
        break;
    case CODEC_VALUE_FLOAT:
        msgpack_pack_double(pk, v->u.f);
        break;
    case CODEC_VALUE_STR:
        msgpack_pack_str_with_body(pk, v->u.str.ptr, v->u.str.len);
        break;
    case CODEC_VALUE_BIN:
        msgpack_pack_bin_with_body(pk, v->u.str.ptr, v->u.str.len);
        break;
    case CODEC_VALUE_ARRAY:
        msgpack_pack_array(pk, v->u.array.len);
        for (uint32_t i = 0; i < v->u.array.len; i++)
            codec_msgpack_pack_value(pk, v->u.array.items[i]);
        break;
    case CODEC_VALUE_MAP: {
        msgpack_pack_map(pk, v->u.map.count);
        uint32_t pos = 0;
        const codec_map_entry_t *e;
        while ((e = codec_map_next(v, &pos))) {
            msgpack_pack_str_with_body(pk, codec_map_entry_key(e), e->key_len);
            codec_msgpack_pack_value(pk, e->value);
        }
        break;
    }
    }
}

int codec_msgpack_count_bytes(void *data, const char *buf, size_t len)
{
    (void)buf;
    *(size_t *)data += len;
    return 0;
}

size_t codec_msgpack_packed_size(const codec_value_t *v)
{
    size_t size = 0;
    if (v) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &size, codec_msgpack_count_bytes);
        codec_msgpack_pack_value(&pk, v);
    }
    return size;
}

int codec_sbuffer_write(void *data, const char *buf, size_t len)
{
    msgpack_sbuffer *sb = data;
    if (len > 16 || sb->alloc - sb->size < len)
        return msgpack_sbuffer_write(data, buf, len);
    char *to = sb->data + sb->size;
    for (size_t i = 0; i < len; i++)
        to[i] = buf[i];
    sb->size += len;
    return 0;
}
