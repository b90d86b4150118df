/* codec/reply.c - protocol v1 replies, packed as msgpack. */
#include "reply.h"

#include <string.h>

#include "alloc.h"
#include "msgpack.h"
#include "utf8.h"

void codec_packed_init(codec_packed_t *list)
{
    memset(list, 0, sizeof(*list));
    msgpack_sbuffer_init(&list->buf);
    msgpack_packer_init(&list->pk, &list->buf, codec_sbuffer_write);
    list->offsets_cap = 8;
    list->offsets = codec_xmalloc(list->offsets_cap * sizeof(*list->offsets));
    list->offsets[0] = 0;
}

void codec_packed_destroy(codec_packed_t *list)
{
    msgpack_sbuffer_destroy(&list->buf);
    free(list->offsets);
    memset(list, 0, sizeof(*list));
}

void codec_packed_reset(codec_packed_t *list)
{
    msgpack_sbuffer_clear(&list->buf);
    list->count = 0;
}

void codec_packed_mark_item(codec_packed_t *list, size_t end)
{
    if (list->count + 2 > list->offsets_cap) {
        list->offsets_cap *= 2;
        list->offsets =
            codec_xrealloc(list->offsets, list->offsets_cap * sizeof(*list->offsets));
    }
    list->offsets[++list->count] = (uint32_t)end;
}

void codec_packed_end_item(codec_packed_t *list)
{
    codec_packed_mark_item(list, list->buf.size);
}

void codec_packed_write(codec_packed_t *list, const char *bytes, size_t len)
{
    codec_msgpack_pack_raw(&list->pk, bytes, len);
}

void codec_packed_add_raw(codec_packed_t *list, const char *bytes, size_t len)
{
    codec_msgpack_pack_raw(&list->pk, bytes, len);
    codec_packed_end_item(list);
}

const char *codec_packed_item(const codec_packed_t *list, uint32_t i, size_t *len)
{
    *len = list->offsets[i + 1] - list->offsets[i];
    return list->buf.data + list->offsets[i];
}

size_t codec_packed_bytes(const codec_packed_t *list)
{
    return list->count ? list->buf.size : 0;
}

void codec_packed_pack_array(msgpack_packer *pk, const codec_packed_t *list)
{
    msgpack_pack_array(pk, list->count);
    codec_msgpack_pack_raw(pk, list->buf.data, codec_packed_bytes(list));
}

void codec_flush_result_init(codec_flush_result_t *r)
{
    memset(r, 0, sizeof(*r));
    codec_packed_init(&r->applied);
    codec_packed_init(&r->errors);
    codec_packed_init(&r->diff_history);
}

void codec_flush_result_destroy(codec_flush_result_t *r)
{
    codec_packed_destroy(&r->applied);
    codec_packed_destroy(&r->errors);
    codec_packed_destroy(&r->diff_history);
}

/* A string literal: its length is known at compile time. */
#define PACK_LIT(pk, lit) msgpack_pack_str_with_body(pk, lit, sizeof(lit) - 1)

static void pack_key(msgpack_packer *pk, const char *key)
{
    msgpack_pack_str_with_body(pk, key, strlen(key));
}

void codec_flush_result_add_error(codec_flush_result_t *r, codec_action_t action,
                                  const codec_value_t *path, const char *message)
{
    msgpack_packer *pk = &r->errors.pk;
    msgpack_pack_map(pk, 3);
    PACK_LIT(pk, "action");
    pack_key(pk, codec_action_name(action));
    PACK_LIT(pk, "path");
    codec_path_pack(pk, path);
    PACK_LIT(pk, "errorMessage");
    pack_key(pk, message);
    codec_packed_end_item(&r->errors);
}

/* Packs the map header and the type/model/client/seq fields every reply starts with. */
static void pack_head(msgpack_packer *pk, const char *type, const codec_reply_to_t *to,
                      uint32_t n_more)
{
    msgpack_pack_map(pk, 1 + !!to->model + !!to->client + !!to->seq + n_more);
    PACK_LIT(pk, "type");
    pack_key(pk, type);
    if (to->model) {
        PACK_LIT(pk, "model");
        msgpack_pack_str_with_body(pk, to->model->ptr, to->model->len);
    }
    if (to->client) {
        PACK_LIT(pk, "client");
        msgpack_pack_str_with_body(pk, to->client->ptr, to->client->len);
    }
    if (to->seq) {
        PACK_LIT(pk, "seq");
        msgpack_pack_uint64(pk, *to->seq);
    }
}

void codec_snapshot_pack(msgpack_packer *pk, uint64_t count, const codec_value_t *doc)
{
    msgpack_pack_map(pk, 2);
    PACK_LIT(pk, "commandCount");
    msgpack_pack_uint64(pk, count);
    PACK_LIT(pk, "document");
    codec_msgpack_pack_value(pk, doc);
}

void codec_reply_pack_flush(msgpack_packer *pk, const codec_reply_to_t *to,
                            const codec_flush_result_t *r)
{
    pack_head(pk, "flushResult", to,
              1 + (r->sync != CODEC_SYNC_NONE) + (r->errors.count > 0) + r->duplicate);
    if (r->duplicate) {
        PACK_LIT(pk, "duplicate");
        msgpack_pack_true(pk);
    }
    PACK_LIT(pk, "applied");
    msgpack_pack_map(pk, 2);
    PACK_LIT(pk, "from");
    msgpack_pack_uint64(pk, r->applied_from);
    PACK_LIT(pk, "completions");
    codec_packed_pack_array(pk, &r->applied);

    if (r->sync != CODEC_SYNC_NONE) {
        PACK_LIT(pk, "sync");
        msgpack_pack_map(pk, 3);
        PACK_LIT(pk, "isPartial");
        if (r->sync == CODEC_SYNC_PARTIAL) {
            msgpack_pack_true(pk);
            PACK_LIT(pk, "diff");
            msgpack_pack_map(pk, 2);
            PACK_LIT(pk, "from");
            msgpack_pack_uint64(pk, r->diff_from);
            PACK_LIT(pk, "completions");
            msgpack_pack_array(pk, r->diff_history.count + r->applied.count);
            codec_msgpack_pack_raw(pk, r->diff_history.buf.data,
                                   r->diff_history.count ? r->diff_history.buf.size : 0);
            codec_msgpack_pack_raw(pk, r->applied.buf.data,
                                   r->applied.count ? r->applied.buf.size : 0);
        } else {
            msgpack_pack_false(pk);
            PACK_LIT(pk, "latest");
            codec_snapshot_pack(pk, r->latest_count, r->latest_document);
        }
        PACK_LIT(pk, "mappedPaths");
        if (r->mapped_paths_raw)
            codec_msgpack_pack_raw(pk, r->mapped_paths_raw, r->mapped_paths_raw_len);
        else if (r->mapped_paths)
            codec_msgpack_pack_value(pk, r->mapped_paths);
        else
            msgpack_pack_map(pk, 0);
    }
    if (r->errors.count > 0) {
        PACK_LIT(pk, "errors");
        codec_packed_pack_array(pk, &r->errors);
    }
}

void codec_reply_pack_snapshot(msgpack_packer *pk, const codec_reply_to_t *to,
                               uint64_t command_count, const codec_value_t *document)
{
    pack_head(pk, "snapshot", to, 1);
    PACK_LIT(pk, "snapshot");
    codec_snapshot_pack(pk, command_count, document);
}

void codec_reply_pack_history(msgpack_packer *pk, const codec_reply_to_t *to,
                              uint64_t from, const codec_packed_t *completions)
{
    pack_head(pk, "history", to, 2);
    PACK_LIT(pk, "from");
    msgpack_pack_uint64(pk, from);
    PACK_LIT(pk, "completions");
    codec_packed_pack_array(pk, completions);
}

void codec_reply_pack_error(msgpack_packer *pk, const codec_reply_to_t *to,
                            codec_err_t code, const char *message)
{
    codec_reply_pack_error_oldest(pk, to, code, message, NULL);
}

void codec_reply_pack_error_oldest(msgpack_packer *pk, const codec_reply_to_t *to,
                                   codec_err_t code, const char *message,
                                   const uint64_t *oldest)
{
    pack_head(pk, "error", to, 1);
    PACK_LIT(pk, "error");
    msgpack_pack_map(pk, oldest ? 3 : 2);
    PACK_LIT(pk, "code");
    pack_key(pk, codec_err_name(code));
    PACK_LIT(pk, "message");
    size_t len = strlen(message);
    char *clean = codec_xmemdup(message, len);
    codec_utf8_sanitize(clean, len); /* messages may cut input strings mid-character */
    msgpack_pack_str_with_body(pk, clean, len);
    free(clean);
    if (oldest) {
        PACK_LIT(pk, "oldest");
        msgpack_pack_uint64(pk, *oldest);
    }
}
