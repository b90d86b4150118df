/* state/store_record.c - change and snapshot records: packing them, and applying or
 * installing them in a store exactly as their owner stored the flush or the model.
 * Read with the project's decoder under the trusted limits (documents nest deeper than
 * msgpack-c's unpacker goes). */
#include <stdio.h>
#include <string.h>

#include "codec/msgpack.h"
#include "codec/print.h"
#include "codec/request.h"
#include "store_int.h"

/* The head of a change or snapshot record, as decode_record() reads it: a map of
 * fields entries, starting with "type" and "model". */
static void pack_head(msgpack_packer *pk, uint32_t fields, const char *type,
                      const char *model, size_t model_len)
{
    msgpack_pack_map(pk, fields);
    msgpack_pack_str_with_body(pk, "type", 4);
    msgpack_pack_str_with_body(pk, type, strlen(type));
    msgpack_pack_str_with_body(pk, "model", 5);
    msgpack_pack_str_with_body(pk, model, model_len);
}

void state_change_pack(msgpack_packer *pk, const char *model, size_t model_len,
                       const char *client, size_t client_len, uint64_t seq,
                       const state_apply_t *a, int64_t offset)
{
    pack_head(pk, 7, "applied", model, model_len);
    msgpack_pack_str_with_body(pk, "client", 6);
    msgpack_pack_str_with_body(pk, client, client_len);
    msgpack_pack_str_with_body(pk, "seq", 3);
    msgpack_pack_uint64(pk, seq);
    msgpack_pack_str_with_body(pk, "applied", 7);
    msgpack_pack_map(pk, 2);
    msgpack_pack_str_with_body(pk, "from", 4);
    msgpack_pack_uint64(pk, a->result.applied_from);
    msgpack_pack_str_with_body(pk, "completions", 11);
    codec_packed_pack_array(pk, &a->result.applied);
    msgpack_pack_str_with_body(pk, "mappedPaths", 11);
    codec_msgpack_pack_value(pk, a->mapper.mappings);
    msgpack_pack_str_with_body(pk, "offset", 6);
    msgpack_pack_int64(pk, offset);
}

const codec_value_t *store_field(const codec_value_t *map, const char *name,
                                 codec_value_type_t type)
{
    const codec_value_t *v = map && map->type == CODEC_VALUE_MAP
                                 ? codec_map_get(map, name, strlen(name))
                                 : NULL;
    return v && v->type == type ? v : NULL;
}

static bool field_uint(const codec_value_t *map, const char *name, uint64_t *v)
{
    const codec_value_t *o = store_field(map, name, CODEC_VALUE_INT);
    if (!o || o->u.i < 0)
        return false;
    *v = (uint64_t)o->u.i;
    return true;
}

/* Where the top-level map in buf[0..len) holds name's value: [*start, *end). */
static bool field_span(const char *buf, size_t len, const char *name, size_t *start,
                       size_t *end)
{
    *start = 0;
    if (!codec_msgpack_map_find(buf, len, start, name, strlen(name)))
        return false;
    *end = *start;
    return codec_msgpack_skip(buf, len, end);
}

/* Decodes a change or snapshot record (what, for messages) into *root (caller frees
 * it; with a zone, into the zone, freed by clearing it): exactly one map whose "type" is
 * type and whose "model" is a string equal to the record's key (when it has one). With
 * the project's decoder under the trusted limits, since documents nest deeper than
 * msgpack-c's unpacker goes (32 levels).
 * @returns the model, or NULL and errstr. */
static const codec_value_t *decode_record(codec_value_t **root, msgpack_zone *zone,
                                          const char *value, size_t value_len,
                                          const char *what, const char *type,
                                          const char *key, size_t key_len, char *errstr,
                                          size_t errstr_size)
{
    char derr[256];
    const codec_value_t *t, *model;
    if (zone ? codec_msgpack_decode_zone(zone, NULL, value, value_len,
                                         &codec_limits_trusted, root, derr, sizeof(derr))
             : codec_msgpack_decode(value, value_len, &codec_limits_trusted, root, derr,
                                    sizeof(derr))) {
        *root = NULL;
        snprintf(errstr, errstr_size, "not a %s record: %s", what, derr);
        return NULL;
    }
    if (!(t = store_field(*root, "type", CODEC_VALUE_STR)) ||
        t->u.str.len != strlen(type) || memcmp(t->u.str.ptr, type, t->u.str.len) ||
        !(model = store_field(*root, "model", CODEC_VALUE_STR))) {
        snprintf(errstr, errstr_size, "not a %s record", what);
        return NULL;
    }
    if (key && (key_len != model->u.str.len || memcmp(key, model->u.str.ptr, key_len))) {
        snprintf(errstr, errstr_size, "a %s record whose key is not its model", what);
        return NULL;
    }
    return model;
}

state_change_t state_store_apply_change(state_store_t *s, const char *key, size_t key_len,
                                        const char *value, size_t value_len,
                                        int64_t *offset, char *errstr, size_t errstr_size)
{
    /* The record's tree in a zone, its completions and mappedPaths in buffers of the
     * store: no malloc per record (restoring applies them by the million). */
    codec_value_t *root = NULL;
    state_change_t rc = STATE_CHANGE_FAILED;
    msgpack_sbuffer *sb = &s->mapped;
    codec_packed_t *applied = &s->record_applied;

    const codec_value_t *model, *client, *completions, *paths, *off_o, *applied_o;
    uint64_t seq, from;
    uint32_t n;
    size_t at = 0; /* the completions' bytes, stored as they are (as their owner did) */
    if (!(model = decode_record(&root, s->record_zone, value, value_len, "change",
                                "applied", key, key_len, errstr, errstr_size)))
        goto done;
    if (!(client = store_field(root, "client", CODEC_VALUE_STR)) ||
        !field_uint(root, "seq", &seq) ||
        !(applied_o = store_field(root, "applied", CODEC_VALUE_MAP)) ||
        !field_uint(applied_o, "from", &from) ||
        !(completions = store_field(applied_o, "completions", CODEC_VALUE_ARRAY)) ||
        !(paths = store_field(root, "mappedPaths", CODEC_VALUE_MAP)) ||
        !codec_msgpack_map_find(value, value_len, &at, "applied", 7) ||
        !codec_msgpack_map_find(value, value_len, &at, "completions", 11) ||
        !codec_msgpack_array_open(value, value_len, &at, &n) ||
        n != completions->u.array.len) {
        snprintf(errstr, errstr_size, "not a change record");
        goto done;
    }
    int64_t input_offset = -1;
    if ((off_o = store_field(root, "offset", CODEC_VALUE_INT)) && off_o->u.i >= 0)
        input_offset = off_o->u.i;

    state_model_t *m =
        state_store_model(s, model->u.str.ptr, model->u.str.len, errstr, errstr_size);
    if (!m)
        goto done;
    uint64_t count = state_master_command_count(m->master);
    client_t *c = store_client_load(s, m, client->u.str.ptr, client->u.str.len);
    /* Already reflected: an earlier command count, or an empty flush (nothing applied)
     * not newer than the client's record. */
    if (from < count || (from == count && n == 0 && c->known && seq <= c->seq)) {
        *offset = input_offset;
        rc = STATE_CHANGE_SKIPPED;
        goto done;
    }
    if (from > count) {
        rc = STATE_CHANGE_GAP;
        snprintf(errstr, errstr_size,
                 "model " MODEL_FMT
                 " is at command %llu but the next change record starts at "
                 "%llu: change records are missing",
                 MODEL_ARG(model->u.str.ptr, model->u.str.len), (unsigned long long)count,
                 (unsigned long long)from);
        goto done;
    }
    /* Each completion from the record's tree (decoded once), with its bytes. */
    for (uint32_t i = 0; i < n; i++) {
        size_t start = at;
        codec_completion_t cmp;
        char derr[256] = "malformed";
        if (!codec_msgpack_skip(value, value_len, &at) ||
            codec_completion_from_value(completions->u.array.items[i], value + start,
                                        at - start, &cmp, derr, sizeof(derr)) ||
            state_master_replay(m->master, &cmp, derr, sizeof(derr))) {
            /* The commands before this one are applied already: the model is now
             * ahead of its stored state, so it must not be used again. */
            store_model_drop(s, m);
            snprintf(errstr, errstr_size,
                     "change record of model " MODEL_FMT " at %llu: %s",
                     MODEL_ARG(model->u.str.ptr, model->u.str.len),
                     (unsigned long long)(from + i), derr);
            goto done;
        }
        codec_packed_add_raw(applied, value + start, at - start);
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, codec_sbuffer_write);
    codec_msgpack_pack_value(&pk, paths);
    uint64_t replaced;
    store_record_flush(s, m, client->u.str.ptr, client->u.str.len, seq, from, applied,
                       sb->data, sb->size, &replaced);
    *offset = input_offset;
    rc = STATE_CHANGE_APPLIED;
done:
    if (applied->buf.alloc > SCRATCH_KEEP_BYTES) {
        codec_packed_destroy(applied);
        codec_packed_init(applied);
    }
    codec_packed_reset(applied);
    store_scratch_done(sb);
    msgpack_zone_clear(s->record_zone);
    return rc;
}

int state_store_pack_snapshot_record(state_store_t *s, const char *model,
                                     size_t model_len, msgpack_packer *pk, char *errstr,
                                     size_t errstr_size)
{
    state_model_t *m = state_store_model(s, model, model_len, errstr, errstr_size);
    if (!m)
        return -1;
    /* The client records, as committed (between steps: the cache's are). */
    store_clients_write(s, m, NULL);
    store_key_t prefix;
    store_key_start(&prefix, s, STATE_ITEM_CLIENT);
    store_key_add_id(&prefix, m->id, m->id_len);
    store_model_scan_t scan;
    store_model_scan_open(&scan, s, prefix.p, prefix.len);
    rocksdb_iterator_t *it = scan.it;
    uint32_t clients = 0;
    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < prefix.len || memcmp(k, prefix.p, prefix.len) != 0)
            break;
        clients++;
    }
    pack_head(pk, 5, "snapshot", model, model_len);
    msgpack_pack_str_with_body(pk, "commandCount", 12);
    msgpack_pack_uint64(pk, state_master_command_count(m->master));
    msgpack_pack_str_with_body(pk, "document", 8);
    codec_msgpack_pack_value(pk, state_master_document(m->master));
    msgpack_pack_str_with_body(pk, "clients", 7);
    msgpack_pack_map(pk, clients);
    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it) && clients;
         rocksdb_iter_next(it), clients--) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        msgpack_pack_str_with_body(pk, k + prefix.len, klen - prefix.len);
        codec_msgpack_pack_raw(pk, v, vlen);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    store_model_scan_close(&scan);
    store_key_free(&prefix);
    return err ? store_fail_rocks(err, "reading client records", errstr, errstr_size) : 0;
}

/* Deletes every key of kind for model (history, past snapshots or client records). */
static void delete_model_keys(state_store_t *s, char kind, const char *model,
                              size_t model_len)
{
    store_key_t from, to;
    store_key_start(&from, s, kind);
    store_key_add_id(&from, model, model_len);
    store_key_start(&to, s, kind);
    store_key_add_id(&to, model, model_len);
    const unsigned char past[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    store_key_add(&to, past,
                  sizeof(past)); /* history counts are 8 bytes; client ids sort below */
    store_batch_delete_range(s, from.p, from.len, to.p, to.len);
    store_key_free(&from);
    store_key_free(&to);
}

int state_store_install_snapshot(state_store_t *s, const char *key, size_t key_len,
                                 const char *value, size_t value_len, char *errstr,
                                 size_t errstr_size)
{
    codec_value_t *root = NULL;
    int rc = -1;
    const codec_value_t *model, *clients;
    const codec_map_entry_t *e;
    uint64_t count;
    uint32_t pos = 0;
    size_t doc, doc_end; /* the document's bytes, stored as they are */
    if (!(model = decode_record(&root, NULL, value, value_len, "snapshot", "snapshot",
                                key, key_len, errstr, errstr_size)))
        goto done;
    if (!field_uint(root, "commandCount", &count) ||
        !store_field(root, "document", CODEC_VALUE_MAP) ||
        !(clients = store_field(root, "clients", CODEC_VALUE_MAP)) ||
        !field_span(value, value_len, "document", &doc, &doc_end)) {
        snprintf(errstr, errstr_size, "not a snapshot record");
        goto done;
    }
    while ((e = codec_map_next(clients, &pos)))
        if (e->value->type != CODEC_VALUE_MAP) {
            snprintf(errstr, errstr_size, "not a snapshot record (client records)");
            goto done;
        }
    state_model_t *m =
        state_store_model(s, model->u.str.ptr, model->u.str.len, errstr, errstr_size);
    if (!m)
        goto done;
    rc = 0;
    /* A record at the model's count is ahead only of a model with nothing stored: the
     * client records of flushes whose commands all failed (count 0) are in it alone.
     * At a count above 0 the model's own client records may be newer. */
    uint64_t have = state_master_command_count(m->master);
    if (count < have ||
        (count == have &&
         (count > 0 || clients->u.map.count == 0 ||
          (m->clients_counted ? m->client_records : store_clients_scan(s, m, NULL)) > 0)))
        goto done;
    /* The model starts again from the snapshot: no history before it, the clients the
     * snapshot knows. */
    const char *id = model->u.str.ptr;
    size_t id_len = model->u.str.len;
    store_model_drop(s, m);
    delete_model_keys(s, STATE_ITEM_HISTORY, id, id_len);
    delete_model_keys(s, STATE_ITEM_PAST, id, id_len);
    delete_model_keys(s, STATE_ITEM_CLIENT, id, id_len);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, codec_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "commandCount", 12);
    msgpack_pack_uint64(&pk, count);
    msgpack_pack_str_with_body(&pk, "document", 8);
    codec_msgpack_pack_raw(&pk, value + doc, doc_end - doc);
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_SNAPSHOT);
    store_key_add(&k, id, id_len);
    store_batch_write(s, k.p, k.len, sb.data, sb.size);
    store_key_free(&k);
    /* Time travel reaches back to it (store_travel.c), as to a rewritten snapshot. */
    store_key_start(&k, s, STATE_ITEM_PAST);
    store_key_add_id(&k, id, id_len);
    store_key_add_u64(&k, count);
    store_batch_write(s, k.p, k.len, sb.data, sb.size);
    store_key_free(&k);
    for (pos = 0; (e = codec_map_next(clients, &pos));) {
        msgpack_sbuffer_clear(&sb);
        codec_msgpack_pack_value(&pk, e->value);
        store_key_start(&k, s, STATE_ITEM_CLIENT);
        store_key_add_id(&k, id, id_len);
        store_key_add(&k, codec_map_entry_key(e), e->key_len);
        store_batch_write(s, k.p, k.len, sb.data, sb.size);
        store_key_free(&k);
    }
    msgpack_sbuffer_destroy(&sb);
    rc = 1;
done:
    codec_value_destroy(root);
    return rc;
}
