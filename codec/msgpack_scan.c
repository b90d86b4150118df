/* codec/msgpack_scan.c - shallow reading of msgpack bytes: values located, skipped
 * and read where they lie, without decoding them into trees or allocating (a
 * request's identity for its error reply, parts of this program's own records copied
 * byte for byte, the load generator's reply checks). Declared in msgpack.h. */
#include <string.h>

#include "msgpack.h"
#include "utf8.h"

typedef struct scan_s {
    const unsigned char *p, *end;
} scan_t;

static bool scan_take(scan_t *sc, size_t n, const unsigned char **at)
{
    if ((size_t)(sc->end - sc->p) < n)
        return false;
    *at = sc->p;
    sc->p += n;
    return true;
}

static bool scan_uint(scan_t *sc, int bytes, uint64_t *v)
{
    const unsigned char *at;
    if (!scan_take(sc, (size_t)bytes, &at))
        return false;
    *v = 0;
    for (int i = 0; i < bytes; i++)
        *v = (*v << 8) | at[i];
    return true;
}

/* Reads one header: *str is set for strings (payload consumed), *items to the number
 * of values that follow inside (arrays, maps), *uint for unsigned integers (has_uint).
 * Every other payload is consumed. @returns false on malformed or truncated input. */
static bool scan_header(scan_t *sc, const unsigned char **str, uint64_t *str_len,
                        uint64_t *items, bool *has_uint, uint64_t *uint)
{
    const unsigned char *b, *at;
    uint64_t n;
    *str = NULL;
    *items = 0;
    *has_uint = false;
    if (!scan_take(sc, 1, &b))
        return false;
    unsigned c = *b;
    if (c <= 0x7f) {
        *has_uint = true;
        *uint = c;
        return true;
    }
    if (c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return true;
    if (c >= 0x80 && c <= 0x8f) {
        *items = 2 * (uint64_t)(c & 0x0f);
        return true;
    }
    if (c >= 0x90 && c <= 0x9f) {
        *items = c & 0x0f;
        return true;
    }
    if (c >= 0xa0 && c <= 0xbf) {
        *str_len = c & 0x1f;
        return scan_take(sc, (size_t)*str_len, str);
    }
    switch (c) {
    case 0xcc ... 0xcf: /* a GNU C range: the types of one family */
        *has_uint = true;
        return scan_uint(sc, 1 << (c - 0xcc), uint);
    case 0xd0 ... 0xd3:
        return scan_take(sc, (size_t)1 << (c - 0xd0), &at);
    case 0xca:
        return scan_take(sc, 4, &at);
    case 0xcb:
        return scan_take(sc, 8, &at);
    case 0xd4 ... 0xd8:
        return scan_take(sc, 1 + ((size_t)1 << (c - 0xd4)), &at);
    case 0xd9 ... 0xdb:
        if (!scan_uint(sc, 1 << (c - 0xd9), str_len) ||
            *str_len > (size_t)(sc->end - sc->p))
            return false;
        return scan_take(sc, (size_t)*str_len, str);
    case 0xc4 ... 0xc6:
        return scan_uint(sc, 1 << (c - 0xc4), &n) && n <= (size_t)(sc->end - sc->p) &&
               scan_take(sc, (size_t)n, &at);
    case 0xc7 ... 0xc9:
        return scan_uint(sc, 1 << (c - 0xc7), &n) && n < (size_t)(sc->end - sc->p) &&
               scan_take(sc, (size_t)n + 1, &at);
    case 0xdc ... 0xdd:
        return scan_uint(sc, 2 << (c - 0xdc), items);
    case 0xde ... 0xdf:
        if (!scan_uint(sc, 2 << (c - 0xde), &n))
            return false;
        *items = 2 * n;
        return true;
    }
    return false; /* 0xc1 */
}

/* Skips one value, however deeply nested, with a count instead of recursion. */
static bool scan_skip(scan_t *sc)
{
    uint64_t pending = 1;
    while (pending) {
        const unsigned char *str;
        uint64_t str_len, items, uint;
        bool has_uint;
        if (!scan_header(sc, &str, &str_len, &items, &has_uint, &uint))
            return false;
        /* Every value takes at least a byte: more than that is a lie. */
        if (items > (uint64_t)(sc->end - sc->p))
            return false;
        pending += items - 1;
    }
    return true;
}

bool codec_msgpack_skip(const char *buf, size_t len, size_t *off)
{
    if (*off > len)
        return false;
    scan_t sc = {(const unsigned char *)buf + *off, (const unsigned char *)buf + len};
    if (!scan_skip(&sc))
        return false;
    *off = (size_t)(sc.p - (const unsigned char *)buf);
    return true;
}

/* Opens the array (map: false) or map (true) at buf[*off]: sc is left after its
 * header and *items set (a map counts keys and values). */
static bool container_open(const char *buf, size_t len, size_t off, bool map, scan_t *sc,
                           uint64_t *items)
{
    if (off >= len)
        return false;
    unsigned char c = (unsigned char)buf[off];
    if (map ? !((c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf)
            : !((c >= 0x90 && c <= 0x9f) || c == 0xdc || c == 0xdd))
        return false;
    *sc = (scan_t){(const unsigned char *)buf + off, (const unsigned char *)buf + len};
    const unsigned char *str;
    uint64_t str_len, uint;
    bool has_uint;
    return scan_header(sc, &str, &str_len, items, &has_uint, &uint);
}

/* The array or map header at *off, stepped over: *count its items (a map's keys). */
static bool container_step(const char *buf, size_t len, size_t *off, bool map,
                           uint32_t *count)
{
    scan_t sc;
    uint64_t items;
    if (!container_open(buf, len, *off, map, &sc, &items))
        return false;
    *count = (uint32_t)(map ? items / 2 : items);
    *off = (size_t)(sc.p - (const unsigned char *)buf);
    return true;
}

bool codec_msgpack_array_open(const char *buf, size_t len, size_t *off, uint32_t *count)
{
    return container_step(buf, len, off, false, count);
}

bool codec_msgpack_map_open(const char *buf, size_t len, size_t *off, uint32_t *count)
{
    return container_step(buf, len, off, true, count);
}

bool codec_msgpack_map_find(const char *buf, size_t len, size_t *off, const char *key,
                            size_t key_len)
{
    scan_t sc;
    const unsigned char *str;
    uint64_t str_len, items, uint;
    bool has_uint;
    if (!container_open(buf, len, *off, true, &sc, &items))
        return false;
    for (uint64_t entries = items / 2; entries > 0; entries--) {
        if (!scan_header(&sc, &str, &str_len, &items, &has_uint, &uint) || !str)
            return false;
        if (str_len == key_len && !memcmp(str, key, key_len)) {
            *off = (size_t)(sc.p - (const unsigned char *)buf);
            return true;
        }
        if (!scan_skip(&sc))
            return false;
    }
    return false;
}

/* One scalar header at *off, read and stepped over. */
static bool scalar_at(const char *buf, size_t len, size_t *off, const unsigned char **str,
                      uint64_t *str_len, bool *has_uint, uint64_t *uint)
{
    if (*off >= len)
        return false;
    scan_t sc = {(const unsigned char *)buf + *off, (const unsigned char *)buf + len};
    uint64_t items;
    if (!scan_header(&sc, str, str_len, &items, has_uint, uint) || items)
        return false;
    *off = (size_t)(sc.p - (const unsigned char *)buf);
    return true;
}

bool codec_msgpack_read_str(const char *buf, size_t len, size_t *off, const char **str,
                            size_t *str_len)
{
    size_t at = *off;
    const unsigned char *s;
    uint64_t n, uint;
    bool has_uint;
    if (!scalar_at(buf, len, &at, &s, &n, &has_uint, &uint) || !s)
        return false; /* scan_header() sets s for strings only, not bin */
    *str = (const char *)s;
    *str_len = (size_t)n;
    *off = at;
    return true;
}

bool codec_msgpack_read_uint(const char *buf, size_t len, size_t *off, uint64_t *value)
{
    size_t at = *off;
    const unsigned char *s;
    uint64_t n;
    bool has_uint;
    if (!scalar_at(buf, len, &at, &s, &n, &has_uint, value) || !has_uint)
        return false;
    *off = at;
    return true;
}

void codec_msgpack_identify(const char *buf, size_t len, codec_identity_t *id)
{
    memset(id, 0, sizeof(*id));
    if (len == 0)
        return;
    unsigned char first = (unsigned char)buf[0];
    if (!((first >= 0x80 && first <= 0x8f) || first == 0xde || first == 0xdf))
        return; /* not a map */
    scan_t sc = {(const unsigned char *)buf, (const unsigned char *)buf + len};
    const unsigned char *str, *key;
    uint64_t str_len, key_len, items, uint;
    bool has_uint;
    if (!scan_header(&sc, &str, &str_len, &items, &has_uint, &uint))
        return;
    for (uint64_t entries = items / 2; entries > 0; entries--) {
        if (!scan_header(&sc, &key, &key_len, &items, &has_uint, &uint) || !key)
            return; /* a key that is not a string: stop rather than guess */
        bool is_model = key_len == 5 && !memcmp(key, "model", 5);
        bool is_client = key_len == 6 && !memcmp(key, "client", 6);
        bool is_seq = key_len == 3 && !memcmp(key, "seq", 3);
        const unsigned char *value = sc.p;
        if (!is_model && !is_client && !is_seq) {
            if (!scan_skip(&sc))
                return;
            continue;
        }
        if (!scan_header(&sc, &str, &str_len, &items, &has_uint, &uint))
            return;
        if (items) { /* a container where a scalar belongs: skip all of it */
            sc.p = value;
            if (!scan_skip(&sc))
                return;
        } else if (str && (is_model || is_client) &&
                   codec_utf8_valid((const char *)str, (size_t)str_len)) {
            *(is_model ? &id->model : &id->client) = (const char *)str;
            *(is_model ? &id->model_len : &id->client_len) = (size_t)str_len;
        } else if (is_seq && has_uint && uint <= CODEC_MAX_SAFE_INTEGER) {
            id->has_seq = true;
            id->seq = uint;
        }
    }
}
