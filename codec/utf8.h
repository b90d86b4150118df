/* codec/utf8.h - UTF-8 as the protocol accepts it: every string and key a client sends
 * is checked, and messages cut to a length are mended before they are sent. */
#ifndef FLUSHOUT_CODEC_UTF8_H
#define FLUSHOUT_CODEC_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/** @returns how many bytes s[0..len) starts with below 0x80 (plain ASCII): eight at a
 *  time, since most keys and values are ASCII, and inline, since most are short. */
static inline size_t codec_utf8_ascii_prefix(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    for (uint64_t word; i + 8 <= len; i += 8) {
        memcpy(&word, u + i, sizeof(word));
        if (word & UINT64_C(0x8080808080808080))
            break;
    }
    while (i < len && u[i] < 0x80)
        i++;
    return i;
}

/** @returns true if s[0..len) is valid UTF-8 (no overlongs, surrogates or values
 *  above U+10FFFF). */
bool codec_utf8_valid(const char *s, size_t len);

/** Replaces every byte that is not part of valid UTF-8 with '?', in place, so that a
 *  message truncated inside a character can still be sent as a string. */
void codec_utf8_sanitize(char *s, size_t len);

#endif
