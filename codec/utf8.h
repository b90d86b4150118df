/* codec/utf8.h - UTF-8 as the protocol accepts it: every string and key a client sends
 * is checked, and messages cut to a length are mended before they are sent. */
#ifndef FLUSHOUT_CODEC_UTF8_H
#define FLUSHOUT_CODEC_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/** @returns true if s[0..len) is valid UTF-8 (no overlongs, surrogates or values
 *  above U+10FFFF). */
bool codec_utf8_valid(const char *s, size_t len);

/** Replaces every byte that is not part of valid UTF-8 with '?', in place, so that a
 *  message truncated inside a character can still be sent as a string. */
void codec_utf8_sanitize(char *s, size_t len);

#endif
