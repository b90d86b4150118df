/* tests/common/big_flush.h - a flush (JSON) that creates item `id` at the root with one
 * string prop "s" of `bytes` 'x's: a document past the store's large-value sizes in
 * one request. Shared by the C tests; header-only. */
#ifndef FLUSHOUT_TESTS_BIG_FLUSH_H
#define FLUSHOUT_TESTS_BIG_FLUSH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** @returns the flush's JSON (seq 1, from 0, client "c"); free() it. */
static inline char *test_big_create_flush(const char *id, size_t bytes)
{
    char *json = malloc(bytes + 256);
    int off = snprintf(json, 256,
                       "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,"
                       "\"completions\":[{\"command\":{\"action\":\"create\",\"path\":[],"
                       "\"props\":{\"s\":\"");
    memset(json + off, 'x', bytes);
    snprintf(json + off + bytes, 64, "\"}},\"createdId\":\"%s\"}]}", id);
    return json;
}

#endif
