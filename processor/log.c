/* processor/log.c - one line per event on stderr. */
#include "log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "codec/msgpack.h"
#include "codec/utf8.h"

processor_log_level_t processor_log_threshold = PROCESSOR_LOG_INFO;

/* The length of the valid UTF-8 sequence at s[0..len), or 0 if there is none. */
static size_t utf8_sequence(const unsigned char *s, size_t len)
{
    size_t n = s[0] < 0x80             ? 1
               : (s[0] & 0xe0) == 0xc0 ? 2
               : (s[0] & 0xf0) == 0xe0 ? 3
               : (s[0] & 0xf8) == 0xf0 ? 4
                                       : 0;
    return n && n <= len && codec_utf8_valid((const char *)s, n) ? n : 0;
}

/* Characters that could forge a log line or drive a terminal: C0 and C1 controls,
 * DEL, and the bidirectional overrides and isolates (text that displays reversed). */
static bool is_dangerous(uint32_t c)
{
    return c < 0x20 || (c >= 0x7f && c <= 0x9f) || (c >= 0x202a && c <= 0x202e) ||
           (c >= 0x2066 && c <= 0x2069);
}

size_t processor_log_escape(char *out, size_t size, const char *in, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;
    if (!size)
        return 0;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_sequence(s + i, len - i);
        uint32_t c = 0;
        if (n == 1)
            c = s[i];
        else if (n == 2)
            c = (uint32_t)(s[i] & 0x1f) << 6 | (s[i + 1] & 0x3f);
        else if (n == 3)
            c = (uint32_t)(s[i] & 0x0f) << 12 | (uint32_t)(s[i + 1] & 0x3f) << 6 |
                (s[i + 2] & 0x3f);
        else if (n == 4)
            c = 0x10000; /* astral: never dangerous */
        if (n && !is_dangerous(c) && c != '\\') {
            if (o + n >= size)
                break;
            for (size_t k = 0; k < n; k++)
                out[o++] = (char)s[i + k];
            i += n;
            continue;
        }
        /* Escaped byte by byte: \xNN for each byte of the character (or the invalid
         * byte), and a backslash doubled so that escapes stay unambiguous. */
        size_t bytes = n ? n : 1;
        if (o + 4 * bytes >= size)
            break;
        for (size_t k = 0; k < bytes; k++) {
            unsigned char b = s[i + k];
            out[o++] = '\\';
            if (b == '\\') {
                out[o++] = '\\';
                continue;
            }
            out[o++] = 'x';
            out[o++] = hex[b >> 4];
            out[o++] = hex[b & 15];
        }
        i += bytes;
    }
    out[o] = '\0';
    return o;
}

void processor_log(processor_log_level_t level, const char *fmt, ...)
{
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    if (level > processor_log_threshold)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char message[2048];
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    size_t message_len = m < 0                         ? 0
                         : (size_t)m < sizeof(message) ? (size_t)m
                                                       : sizeof(message) - 1;
    char line[4096];
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level]);
    /* Messages quote model ids, client ids and request fields, which are the
     * client's: escaped, a newline in one cannot start a line of its own. */
    size_t len = (size_t)n + processor_log_escape(line + n, sizeof(line) - (size_t)n - 1,
                                                  message, message_len);
    line[len++] = '\n';
    /* One write per line: threads' (and processes') lines never mix. */
    ssize_t rc = write(STDERR_FILENO, line, len);
    (void)rc;
}
