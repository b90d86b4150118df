/* state/store_outbox.c - the outbox: the records a step produced (one key per step),
 * stored with the state change they come from (a changelog store holds them in memory
 * and stores them at its next flush point, with every step not delivered by then) and
 * deleted once Kafka confirms them; what is left after a crash is produced again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/alloc.h"
#include "codec/msgpack.h"
#include "store_int.h"

/* The step's value starts with an array32 header, its count filled in at the end: the
 * records are packed once, where they are stored from (msgpack allows array32 for any
 * count). */
#define OUTBOX_HEADER_BYTES 5

static void put_step(state_store_t *s, rocksdb_writebatch_t *batch, uint64_t id,
                     const char *value, size_t len)
{
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_OUTBOX);
    store_key_add_u64(&k, id);
    /* Straight into RocksDB's batch, after the sorted writes: a step's id is the
     * partition's last key (kind 'x', the highest id), so the writes stay sorted (at a
     * flush point they come after the trims too, which only costs the memtable a
     * search), and no write of the step names it (the deletes are of delivered steps). */
    rocksdb_writebatch_put(batch, k.p, k.len, value, len);
    store_key_free(&k);
}

static state_outbox_bytes_t *bytes_new(msgpack_sbuffer *sb)
{
    state_outbox_bytes_t *b = codec_xmalloc(sizeof(*b));
    b->len = sb->size;
    b->data = msgpack_sbuffer_release(sb);
    atomic_init(&b->refs, 1);
    return b;
}

const char *state_outbox_bytes_data(const state_outbox_bytes_t *b, size_t *len)
{
    *len = b->len;
    return b->data;
}

void state_outbox_bytes_ref(state_outbox_bytes_t *b, unsigned n)
{
    atomic_fetch_add_explicit(&b->refs, n, memory_order_relaxed);
}

void state_outbox_bytes_unref(state_outbox_bytes_t *b)
{
    /* Release, then acquire by the last: every user's reads come before the free. */
    if (!b || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_release) != 1)
        return;
    atomic_thread_fence(memory_order_acquire);
    free(b->data);
    free(b);
}

state_outbox_bytes_t *state_store_outbox_take_step(state_store_t *s, uint64_t *id)
{
    state_outbox_bytes_t *b = s->outbox_last;
    s->outbox_last = NULL;
    *id = s->outbox_last_id;
    return b;
}

void store_outbox_write_step(state_store_t *s)
{
    state_outbox_bytes_unref(s->outbox_last); /* not taken: nobody points into it */
    s->outbox_last = NULL;
    if (!s->outbox_step_count)
        return;
    unsigned char *h = (unsigned char *)s->outbox_step.data;
    h[0] = 0xdd;
    for (int i = 0; i < 4; i++)
        h[1 + i] = (unsigned char)(s->outbox_step_count >> (8 * (3 - i)));
    s->outbox_step_count = 0;
    /* The step's bytes, kept for the producer (the caller takes them after the
     * commit): its records are produced from here, not copied again. */
    state_outbox_bytes_t *b = bytes_new(&s->outbox_step);
    s->outbox_last = b;
    s->outbox_last_id = s->outbox_step_id;
    if (s->logged) {
        put_step(s, s->batch, s->outbox_step_id, b->data, b->len);
        return;
    }
    /* A changelog store's commits reach the disk only with a memtable flush, and most
     * steps are delivered long before one: their records are held here and written
     * only at a flush point, which keeps them (most of the bytes a step writes) out
     * of the memtable. */
    if (s->held_len == s->held_cap) {
        s->held_cap = s->held_cap ? 2 * s->held_cap : 16;
        s->held = codec_xrealloc(s->held, s->held_cap * sizeof(*s->held));
    }
    state_outbox_bytes_ref(b, 1);
    s->held[s->held_len++] = (outbox_held_t){s->outbox_step_id, b};
}

size_t store_outbox_flush_point(state_store_t *s, rocksdb_writebatch_t *batch)
{
    size_t put = 0;
    for (size_t i = 0; i < s->held_len; i++) {
        outbox_held_t *h = &s->held[i];
        if (!h->bytes)
            continue;
        put_step(s, batch, h->id, h->bytes->data, h->bytes->len);
        put++;
        /* The batch has a copy; a stored step is never read from here (its records in
         * flight may still point into the bytes). */
        state_outbox_bytes_unref(h->bytes);
        h->bytes = NULL;
    }
    return put;
}

void store_outbox_free_held(state_store_t *s)
{
    for (size_t i = 0; i < s->held_len; i++)
        state_outbox_bytes_unref(s->held[i].bytes);
    free(s->held);
    s->held = NULL;
    s->held_len = s->held_cap = 0;
    state_outbox_bytes_unref(s->outbox_last);
    s->outbox_last = NULL;
}

/* Drops the held steps first..last. @returns whether RocksDB may hold any of those
 * ids: one stored at a flush point, or not held at all (left by an earlier run). */
static bool release_held(state_store_t *s, uint64_t first, uint64_t last)
{
    uint64_t unstored = 0;
    size_t kept = 0;
    for (size_t i = 0; i < s->held_len; i++) {
        outbox_held_t *h = &s->held[i];
        if (h->id < first || h->id > last) {
            s->held[kept++] = *h;
            continue;
        }
        unstored += h->bytes != NULL;
        state_outbox_bytes_unref(h->bytes);
    }
    s->held_len = kept;
    return unstored != last - first + 1;
}

/* The next step's id: after the newest stored record, found on first use. */
static uint64_t outbox_next(state_store_t *s)
{
    if (s->outbox_next_known)
        return s->outbox_next++;
    s->outbox_next = 0;
    store_key_t last;
    store_key_start(&last, s, STATE_ITEM_OUTBOX);
    store_key_add_u64(&last, UINT64_MAX);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    rocksdb_iter_seek_for_prev(it, last.p, last.len);
    if (rocksdb_iter_valid(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen == last.len && memcmp(k, last.p, 5) == 0)
            s->outbox_next = store_be64(k + 5) + 1;
    }
    rocksdb_iter_destroy(it);
    store_key_free(&last);
    s->outbox_next_known = true;
    return s->outbox_next++;
}

void store_outbox_forget(state_store_t *s)
{
    s->outbox_next_known = false;
}

/* msgpack heads as msgpack-c writes them: fix (below fix_max, the length in the low
 * bits), else 8, 16 or 32 bits of length big-endian (code8 equal to code16: no 8-bit
 * form, as for arrays). */
static char *put_be(char *p, uint32_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *p++ = (char)(v >> (8 * i));
    return p;
}

static char *put_head(char *p, uint32_t len, unsigned fix, uint32_t fix_max,
                      unsigned code8, unsigned code16, unsigned code32)
{
    if (len < fix_max) {
        *p++ = (char)(fix | len);
        return p;
    }
    if (code8 != code16 && len < 256) {
        *p++ = (char)code8;
        return put_be(p, len, 1);
    }
    if (len < 65536) {
        *p++ = (char)code16;
        return put_be(p, len, 2);
    }
    *p++ = (char)code32;
    return put_be(p, len, 4);
}

static char *put_str(char *p, const char *s, size_t len)
{
    p = put_head(p, (uint32_t)len, 0xa0, 32, 0xd9, 0xda, 0xdb);
    memcpy(p, s, len);
    return p + len;
}

static char *put_bin(char *p, const char *b, size_t len)
{
    p = put_head(p, (uint32_t)len, 0, 0, 0xc4, 0xc5, 0xc6);
    if (len)
        memcpy(p, b, len);
    return p + len;
}

/* As msgpack_pack_int32(): the shortest form, unsigned codes for positive values. */
static char *put_int32(char *p, int32_t v)
{
    if (v >= -32 && v < 128) {
        *p++ = (char)v;
        return p;
    }
    if (v >= 0) {
        uint32_t u = (uint32_t)v;
        *p++ = (char)(u < 256 ? 0xcc : u < 65536 ? 0xcd : 0xce);
        return put_be(p, u, u < 256 ? 1 : u < 65536 ? 2 : 4);
    }
    int bytes = v >= -128 ? 1 : v >= -32768 ? 2 : 4;
    *p++ = (char)(bytes == 1 ? 0xd0 : bytes == 2 ? 0xd1 : 0xd2);
    return put_be(p, (uint32_t)v, bytes);
}

/* A step's records share one outbox key (a msgpack array of them), written with the
 * step and deleted once all are delivered: two RocksDB writes per step instead of two
 * per record, which were most of the processor's memtable inserts. */
uint64_t state_store_outbox_add(state_store_t *s, const state_outbox_rec_t *rec,
                                size_t *value_at)
{
    if (!s->outbox_step_count) {
        s->outbox_step_id = outbox_next(s);
        msgpack_sbuffer_write(&s->outbox_step, "\0\0\0\0\0", OUTBOX_HEADER_BYTES);
    }
    s->outbox_step_count++;
    /* {"topic", "partition", "key", "value", "headers"}, as msgpack-c packs it, written
     * straight into room reserved once: packed piece by piece, two records a flush
     * were a twentieth of the workers' time. */
    size_t topic_len = strlen(rec->topic);
    size_t need = 64 + topic_len + rec->key_len + rec->value_len;
    for (size_t i = 0; i < rec->header_count; i++)
        need += 10 + strlen(rec->headers[i].name) + rec->headers[i].value_len;
    msgpack_sbuffer *sb = &s->outbox_step;
    if (sb->alloc - sb->size < need) {
        sb->alloc = sb->alloc * 2 > sb->size + need ? sb->alloc * 2 : sb->size + need;
        sb->data = codec_xrealloc(sb->data, sb->alloc);
    }
    char *p = sb->data + sb->size;
    *p++ = (char)0x85; /* a map of 5 */
    p = put_str(p, "topic", 5);
    p = put_str(p, rec->topic, topic_len);
    p = put_str(p, "partition", 9);
    p = put_int32(p, rec->partition);
    p = put_str(p, "key", 3);
    if (rec->key)
        p = put_bin(p, rec->key, rec->key_len);
    else
        *p++ = (char)0xc0; /* nil */
    p = put_str(p, "value", 5);
    p = put_bin(p, rec->value, rec->value_len);
    if (value_at)
        *value_at = (size_t)(p - sb->data) - rec->value_len;
    p = put_str(p, "headers", 7);
    p = put_head(p, (uint32_t)rec->header_count * 2, 0x90, 16, 0xdc, 0xdc, 0xdd);
    for (size_t i = 0; i < rec->header_count; i++) {
        const state_header_t *h = &rec->headers[i];
        p = put_str(p, h->name, strlen(h->name));
        p = put_bin(p, h->value, h->value_len);
    }
    sb->size = (size_t)(p - sb->data);
    return s->outbox_step_id;
}

void state_store_outbox_done(state_store_t *s, uint64_t first, uint64_t last)
{
    if (!release_held(s, first, last))
        return;
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_OUTBOX);
    store_key_add_u64(&k, first);
    if (first == last) {
        store_batch_write(s, k.p, k.len, NULL, 0);
    } else {
        store_key_t to;
        store_key_start(&to, s, STATE_ITEM_OUTBOX);
        store_key_add_u64(&to, last + 1);
        store_batch_delete_range(s, k.p, k.len, to.p, to.len);
        store_key_free(&to);
    }
    store_key_free(&k);
}

/* Reads an outbox record (as state_store_outbox_add() wrote it) into rec, pointing
 * into root; the topic and header names get NUL-terminated copies in names. */
typedef char outbox_name_t[STATE_OUTBOX_NAME_BYTES];

static bool copy_name(const codec_value_t *o, char *buf)
{
    if (!o || o->type != CODEC_VALUE_STR || o->u.str.len >= STATE_OUTBOX_NAME_BYTES)
        return false;
    memcpy(buf, o->u.str.ptr, o->u.str.len);
    buf[o->u.str.len] = '\0';
    return true;
}

static bool outbox_parse(const codec_value_t *root, state_outbox_rec_t *rec,
                         outbox_name_t *names, state_header_t *headers)
{
    const codec_value_t *partition = store_field(root, "partition", CODEC_VALUE_INT);
    const codec_value_t *key =
        root->type == CODEC_VALUE_MAP ? codec_map_get(root, "key", 3) : NULL;
    const codec_value_t *value = store_field(root, "value", CODEC_VALUE_BIN);
    const codec_value_t *hdrs = store_field(root, "headers", CODEC_VALUE_ARRAY);
    if (!copy_name(store_field(root, "topic", CODEC_VALUE_STR), names[0]) || !partition ||
        partition->u.i < INT32_MIN || partition->u.i > INT32_MAX || !key ||
        (key->type != CODEC_VALUE_BIN && key->type != CODEC_VALUE_NIL) || !value ||
        !hdrs || hdrs->u.array.len % 2 ||
        hdrs->u.array.len / 2 > STATE_OUTBOX_MAX_HEADERS)
        return false;
    *rec = (state_outbox_rec_t){
        .topic = names[0],
        .partition = (int32_t)partition->u.i,
        .key = key->type == CODEC_VALUE_BIN ? key->u.str.ptr : NULL,
        .key_len = key->type == CODEC_VALUE_BIN ? key->u.str.len : 0,
        .value = value->u.str.ptr,
        .value_len = value->u.str.len,
        .headers = headers,
        .header_count = hdrs->u.array.len / 2,
    };
    for (size_t i = 0; i < rec->header_count; i++) {
        const codec_value_t *v = hdrs->u.array.items[2 * i + 1];
        if (!copy_name(hdrs->u.array.items[2 * i], names[i + 1]) ||
            v->type != CODEC_VALUE_BIN)
            return false;
        headers[i] = (state_header_t){names[i + 1], v->u.str.ptr, v->u.str.len};
    }
    return true;
}

/* Visits the records of one stored step. @returns 0, 1 (visit stopped) or -1 (corrupt,
 * errstr). */
static int visit_step(state_store_t *s, uint64_t id, const char *value, size_t len,
                      int (*visit)(void *opaque, uint64_t id,
                                   const state_outbox_rec_t *rec),
                      void *opaque, char *errstr, size_t errstr_size)
{
    outbox_name_t names[STATE_OUTBOX_MAX_HEADERS + 1];
    state_header_t headers[STATE_OUTBOX_MAX_HEADERS];
    state_outbox_rec_t rec;
    /* A step's array of records, or one record as earlier versions wrote it. */
    codec_value_t *root = NULL;
    char derr[256];
    bool ok = codec_msgpack_decode(value, len, &codec_limits_trusted, &root, derr,
                                   sizeof(derr)) == CODEC_OK;
    bool many = ok && root->type == CODEC_VALUE_ARRAY;
    uint32_t n = many ? root->u.array.len : 1;
    int rc = 0;
    for (uint32_t i = 0; ok && i < n && !rc; i++) {
        if (!outbox_parse(many ? root->u.array.items[i] : root, &rec, names, headers))
            ok = false;
        else if (visit(opaque, id, &rec))
            rc = 1;
    }
    codec_value_destroy(root);
    if (!ok) {
        snprintf(errstr, errstr_size, "outbox record %llu of partition %d is corrupt",
                 (unsigned long long)id, s->conf.partition);
        rc = -1;
    }
    return rc;
}

int state_store_outbox_scan(state_store_t *s,
                            int (*visit)(void *opaque, uint64_t id,
                                         const state_outbox_rec_t *rec),
                            void *opaque, char *errstr, size_t errstr_size)
{
    store_key_t prefix;
    store_key_start(&prefix, s, STATE_ITEM_OUTBOX);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    int rc = 0;
    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it) && !rc;
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen != prefix.len + 8 || memcmp(k, prefix.p, prefix.len) != 0)
            break;
        const char *v = rocksdb_iter_value(it, &vlen);
        rc = visit_step(s, store_be64(k + prefix.len), v, vlen, visit, opaque, errstr,
                        errstr_size);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err && rc >= 0)
        rc = store_fail_rocks(err, "scanning the outbox", errstr, errstr_size);
    else
        rocksdb_free(err);
    rocksdb_iter_destroy(it);
    store_key_free(&prefix);
    /* Then the held steps not stored yet: newer than every stored one. */
    for (size_t i = 0; i < s->held_len && !rc; i++)
        if (s->held[i].bytes)
            rc = visit_step(s, s->held[i].id, s->held[i].bytes->data,
                            s->held[i].bytes->len, visit, opaque, errstr, errstr_size);
    return rc > 0 ? 0 : rc;
}
