/* codec/alloc.h - allocation that aborts on out-of-memory.
 *
 * Like Redis' zmalloc: every limit on input is enforced before allocating, so an
 * allocation failure means the machine is out of memory, not that input was hostile.
 * Aborting then is safer than threading NULL checks through every tree operation. */
#ifndef FLUSHOUT_CODEC_ALLOC_H
#define FLUSHOUT_CODEC_ALLOC_H

#include <stddef.h>

void *codec_xmalloc(size_t size);
void *codec_xcalloc(size_t count, size_t size);
void *codec_xrealloc(void *ptr, size_t size);
/** Copies len bytes and appends a NUL, so keys and strings are also C strings. */
char *codec_xmemdup(const char *src, size_t len);

#endif
