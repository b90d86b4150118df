/* codec/error.c - error code names and the default limits. */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const names[CODEC_ERR__COUNT] = {
    [CODEC_OK] = "ok",
    [CODEC_ERR_TRUNCATED] = "truncated",
    [CODEC_ERR_TRAILING_BYTES] = "trailing_bytes",
    [CODEC_ERR_RESERVED_BYTE] = "reserved_byte",
    [CODEC_ERR_UNSUPPORTED_EXT] = "unsupported_ext",
    [CODEC_ERR_INVALID_UTF8] = "invalid_utf8",
    [CODEC_ERR_INVALID_JSON] = "invalid_json",
    [CODEC_ERR_TOO_DEEP] = "too_deep",
    [CODEC_ERR_TOO_LARGE] = "too_large",
    [CODEC_ERR_DUPLICATE_KEY] = "duplicate_key",
    [CODEC_ERR_FORBIDDEN_KEY] = "forbidden_key",
    [CODEC_ERR_NOT_FINITE] = "not_finite",
    [CODEC_ERR_OUT_OF_RANGE] = "out_of_range",
    [CODEC_ERR_WRONG_TYPE] = "wrong_type",
    [CODEC_ERR_MISSING_FIELD] = "missing_field",
    [CODEC_ERR_UNKNOWN_TYPE] = "unknown_type",
    [CODEC_ERR_UNKNOWN_ACTION] = "unknown_action",
    [CODEC_ERR_MODEL_MISMATCH] = "model_mismatch",
    [CODEC_ERR_HISTORY_UNAVAILABLE] = "history_unavailable",
    [CODEC_ERR_BAD_RANGE] = "bad_range",
    [CODEC_ERR_STALE_SEQ] = "stale_seq",
    [CODEC_ERR_STORE_FAILED] = "store_failed",
    [CODEC_ERR_MISSING_KEY] = "missing_key",
    [CODEC_ERR_WRONG_PARTITION] = "wrong_partition",
    [CODEC_ERR_BAD_REPLY_TOPIC] = "bad_reply_topic",
    [CODEC_ERR_REPLY_TOO_LARGE] = "reply_too_large",
};

const codec_limits_t codec_limits_default = {
    .max_depth = CODEC_DEFAULT_MAX_DEPTH,
    .max_string_bytes = CODEC_DEFAULT_MAX_STRING_BYTES,
    .max_completions = CODEC_DEFAULT_MAX_COMPLETIONS,
    .max_path_length = CODEC_DEFAULT_MAX_PATH_LENGTH,
    .max_id_bytes = CODEC_DEFAULT_MAX_ID_BYTES,
};

/* What requests under the largest limits can store must read back. */
_Static_assert(CODEC_TRUSTED_MAX_DEPTH >= (uint64_t)CODEC_MAX_MAX_DEPTH +
                                              CODEC_MAX_MAX_PATH_LENGTH +
                                              CODEC_ENVELOPE_DEPTH,
               "trusted data must nest as deep as accepted requests can make it");

const codec_limits_t codec_limits_trusted = {
    .max_depth = CODEC_TRUSTED_MAX_DEPTH,
    .max_string_bytes = UINT32_MAX,
    .max_completions = UINT32_MAX,
    .max_path_length = UINT32_MAX,
    .max_id_bytes = CODEC_MAX_ID_BYTES,
};

uint32_t codec_limits_stored_depth(const codec_limits_t *limits)
{
    return limits->max_depth + limits->max_path_length + CODEC_ENVELOPE_DEPTH;
}

const char *codec_err_name(codec_err_t err)
{
    if ((unsigned)err >= CODEC_ERR__COUNT)
        return "unknown_error";
    return names[err];
}

codec_err_t codec_errf(codec_err_t err, char *errstr, size_t errstr_size, const char *fmt,
                       ...)
{
    if (errstr && errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return err;
}
