/* tests/processor/test_log.c - log lines cannot be forged by the ids they quote. */
#include <criterion/criterion.h>
#include <string.h>

#include "processor/log.h"

static const char *escape(const char *in, size_t len)
{
    static char out[256];
    processor_log_escape(out, sizeof(out), in, len);
    return out;
}

Test(log, printable_text_and_utf8_pass_unchanged)
{
    const char *s = "model \"todo-42\" caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x98\x80";
    cr_assert_str_eq(escape(s, strlen(s)), s);
}

Test(log, a_newline_or_terminal_escape_cannot_start_a_line_or_drive_a_terminal)
{
    const char *s = "m\n2026-01-01T00:00:00Z ERROR forged\x1b[2J\r\x7f";
    cr_assert_str_eq(escape(s, strlen(s)),
                     "m\\x0a2026-01-01T00:00:00Z ERROR forged\\x1b[2J\\x0d\\x7f");
}

Test(log, invalid_utf8_c1_controls_and_bidi_overrides_are_escaped)
{
    /* a lone 0x9b (CSI in 8-bit terminals), U+009B as UTF-8, an overlong '/', and
     * U+202E (right-to-left override); NUL too. */
    const char s[] = "a\x9b"
                     "b\xc2\x9b"
                     "c\xc0\xaf"
                     "d\xe2\x80\xae"
                     "e\0f";
    cr_assert_str_eq(escape(s, sizeof(s) - 1),
                     "a\\x9bb\\xc2\\x9bc\\xc0\\xafd\\xe2\\x80\\xaee\\x00f");
}

Test(log, backslashes_are_doubled_so_escapes_are_unambiguous)
{
    cr_assert_str_eq(escape("a\\x0a", 5), "a\\\\x0a");
}

Test(log, output_is_cut_at_a_whole_character_and_terminated)
{
    char out[8];
    size_t n = processor_log_escape(out, sizeof(out), "ab\ncdef", 7);
    cr_assert_eq(n, 7);
    cr_assert_str_eq(out, "ab\\x0ac"); /* "d" would not fit with the NUL */
    n = processor_log_escape(out, sizeof(out), "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8);
    cr_assert_eq(n, 6);
    cr_assert_eq(strlen(out), 6);
}
