/* codec/reply.h - protocol v1 replies, packed as msgpack.
 *
 * Lists of completions and errors are packed once, item by item, into a
 * codec_packed_t; a reply then splices the bytes in after an array header. That way
 * a flush's applied commands are encoded once for its reply, its history entries and
 * later its change record. */
#ifndef FLUSHOUT_CODEC_REPLY_H
#define FLUSHOUT_CODEC_REPLY_H

#include <msgpack.h>

#include "error.h"
#include "request.h"
#include "value.h"

/* A list of msgpack-encoded items: item i is bytes [offsets[i], offsets[i+1]). */
typedef struct codec_packed_s {
    msgpack_sbuffer buf;
    msgpack_packer pk; /* appends to buf */
    uint32_t count;
    uint32_t *offsets; /* count + 1 entries once items are ended */
    uint32_t offsets_cap;
} codec_packed_t;

void codec_packed_init(codec_packed_t *list);
void codec_packed_destroy(codec_packed_t *list);
void codec_packed_reset(codec_packed_t *list);
/** Call after packing one item into list->pk. */
void codec_packed_end_item(codec_packed_t *list);
/** Appends bytes without ending an item: several items' bytes at once, whose ends
 *  are then marked with codec_packed_mark_item(). */
void codec_packed_write(codec_packed_t *list, const char *bytes, size_t len);
/** Ends the next item at byte offset end of list->buf. */
void codec_packed_mark_item(codec_packed_t *list, size_t end);
/** Appends an already-encoded item. */
void codec_packed_add_raw(codec_packed_t *list, const char *bytes, size_t len);
/** Item i's bytes. */
const char *codec_packed_item(const codec_packed_t *list, uint32_t i, size_t *len);
/** The items' bytes together, as codec_packed_pack_array() packs them after the
 *  array's head. */
size_t codec_packed_bytes(const codec_packed_t *list);
/** Packs the list as a msgpack array of its items. */
void codec_packed_pack_array(msgpack_packer *pk, const codec_packed_t *list);

/* Who a reply is for. */
typedef struct codec_reply_to_s {
    const codec_str_t *model;  /* NULL when unknown */
    const codec_str_t *client; /* NULL when unknown */
    const uint64_t *seq;       /* NULL when unknown */
} codec_reply_to_t;

typedef enum codec_sync_kind_e {
    CODEC_SYNC_NONE,
    CODEC_SYNC_PARTIAL,
    CODEC_SYNC_FULL,
} codec_sync_kind_t;

/* What Flushout's Master.apply returns, ready to pack. */
typedef struct codec_flush_result_s {
    uint64_t applied_from;
    codec_packed_t applied; /* the applied completions */
    codec_packed_t errors;  /* {"action","path","errorMessage"} items */
    codec_sync_kind_t sync;
    uint64_t diff_from;                   /* partial */
    codec_packed_t diff_history;          /* partial: history before applied */
    uint64_t latest_count;                /* full */
    const codec_value_t *latest_document; /* full; borrowed */
    const codec_value_t *mapped_paths;    /* map of joined path -> path; borrowed */
    bool duplicate; /* a retry of the client's last flush: nothing applied */
    const char *mapped_paths_raw; /* duplicate: the original mappedPaths, msgpack */
    size_t mapped_paths_raw_len;
} codec_flush_result_t;

void codec_flush_result_init(codec_flush_result_t *r);
void codec_flush_result_destroy(codec_flush_result_t *r);

/** Packs one {"action","path","errorMessage"} item into r->errors. */
void codec_flush_result_add_error(codec_flush_result_t *r, codec_action_t action,
                                  const codec_value_t *path, const char *message);

/** Packs a snapshot, {"commandCount": n, "document": {...}}: in replies and as stored. */
void codec_snapshot_pack(msgpack_packer *pk, uint64_t command_count,
                         const codec_value_t *document);

void codec_reply_pack_flush(msgpack_packer *pk, const codec_reply_to_t *to,
                            const codec_flush_result_t *r);
void codec_reply_pack_snapshot(msgpack_packer *pk, const codec_reply_to_t *to,
                               uint64_t command_count, const codec_value_t *document);
void codec_reply_pack_history(msgpack_packer *pk, const codec_reply_to_t *to,
                              uint64_t from, const codec_packed_t *completions);
void codec_reply_pack_error(msgpack_packer *pk, const codec_reply_to_t *to,
                            codec_err_t code, const char *message);
/** The same, for history_unavailable: the error also names the oldest version that
 *  can be asked for ("oldest", when known). */
void codec_reply_pack_error_oldest(msgpack_packer *pk, const codec_reply_to_t *to,
                                   codec_err_t code, const char *message,
                                   const uint64_t *oldest);

#endif
