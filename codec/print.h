/* codec/print.h - model ids in messages: quoted and cut to a length.
 *
 * A model id is the client's bytes (any UTF-8, up to --max-id-bytes, control characters
 * included), so a message shows at most CODEC_PRINT_ID_MAX bytes of it. Escaping is the
 * writer's: processor_log() escapes every line it writes, errstr included. Here, in
 * codec/, so that state/'s messages print ids the same way:
 *     LOG_WARN("partition %d model " MODEL_FMT ": %s", p, MODEL_ARG(id, id_len), why); */
#ifndef FLUSHOUT_CODEC_PRINT_H
#define FLUSHOUT_CODEC_PRINT_H

#include <stddef.h>

#define CODEC_PRINT_ID_MAX 60 /* bytes of an id shown in a message */

/* MODEL_ARG(id, len): id (NULL allowed when len is 0) and its length in bytes, each
 * evaluated once. */
#define MODEL_FMT          "\"%.*s\""
#define MODEL_ARG(id, len) codec_print_id_len(len), codec_print_id(id)

static inline int codec_print_id_len(size_t len)
{
    return (int)(len > CODEC_PRINT_ID_MAX ? CODEC_PRINT_ID_MAX : len);
}

static inline const char *codec_print_id(const void *id)
{
    return id ? (const char *)id : "";
}

#endif
