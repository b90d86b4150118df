/* codec/alloc.c - allocation that aborts on out-of-memory. */
#include "alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t size)
{
    fprintf(stderr, "flushout: out of memory allocating %zu bytes\n", size);
    abort();
}

void *codec_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

void *codec_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        oom(count * size);
    return p;
}

void *codec_xrealloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        oom(size);
    return p;
}

char *codec_xmemdup(const char *src, size_t len)
{
    char *p = codec_xmalloc(len + 1);
    if (len)
        memcpy(p, src, len);
    p[len] = '\0';
    return p;
}
