/* tests/state/test_history_mem.c - the in-memory history ring: retention, ranges
 * across the ring's wrap, growth, and a start at a non-zero command count. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "state/history_mem.h"

/* Entry c is the msgpack string "cmd-<c>" padded to a length that varies with c, so
 * entries straddle the ring's end at different places. */
static void entry(uint64_t c, char *buf, size_t *len)
{
    char text[64];
    int n = snprintf(text, sizeof(text), "cmd-%llu-%.*s", (unsigned long long)c,
                     (int)(c % 23), "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    buf[0] = (char)(0xa0 | n); /* fixstr */
    memcpy(buf + 1, text, (size_t)n);
    *len = (size_t)n + 1;
}

static void append_range(state_history_mem_t *h, uint64_t from, uint64_t to)
{
    codec_packed_t list;
    codec_packed_init(&list);
    for (uint64_t c = from; c < to; c++) {
        char buf[64];
        size_t len;
        entry(c, buf, &len);
        codec_packed_add_raw(&list, buf, len);
    }
    cr_assert_eq(state_history_mem_append(h, from, &list), 0);
    codec_packed_destroy(&list);
}

/* Checks that [from, to) comes back item by item, byte for byte. */
static void expect_range(state_history_mem_t *h, uint64_t from, uint64_t to)
{
    state_history_t p = state_history_mem_provider(h);
    codec_packed_t out;
    codec_packed_init(&out);
    codec_packed_add_raw(&out, "\xc0", 1); /* a range appends after what is there */
    cr_assert_eq(p.range(p.opaque, from, to, &out), 0, "range %llu..%llu",
                 (unsigned long long)from, (unsigned long long)to);
    cr_assert_eq(out.count, 1 + to - from);
    for (uint64_t c = from; c < to; c++) {
        char want[64];
        size_t want_len, got_len;
        entry(c, want, &want_len);
        const char *got = codec_packed_item(&out, (uint32_t)(1 + c - from), &got_len);
        cr_assert_eq(got_len, want_len, "entry %llu", (unsigned long long)c);
        cr_assert_eq(memcmp(got, want, want_len), 0, "entry %llu", (unsigned long long)c);
    }
    codec_packed_destroy(&out);
}

static void expect_unavailable(state_history_mem_t *h, uint64_t from, uint64_t to)
{
    state_history_t p = state_history_mem_provider(h);
    codec_packed_t out;
    codec_packed_init(&out);
    cr_assert_eq(p.range(p.opaque, from, to, &out), -1, "range %llu..%llu",
                 (unsigned long long)from, (unsigned long long)to);
    cr_assert_eq(out.count, 0, "an unavailable range leaves the output alone");
    cr_assert_eq(out.buf.size, 0);
    codec_packed_destroy(&out);
}

Test(state_history_mem, keeps_exactly_the_last_n_commands_across_wraps)
{
    state_history_mem_t *h = state_history_mem_new(37, 0);
    uint64_t count = 0;
    /* Appends of varying sizes, so the byte ring wraps at many offsets and grows. */
    for (int step = 0; step < 200; step++) {
        uint64_t n = 1 + (uint64_t)(step * 7 % 11);
        append_range(h, count, count + n);
        count += n;
        uint64_t base = count > 37 ? count - 37 : 0;
        expect_range(h, base, count);
        expect_range(h, count - 1 > base ? count - 1 : base, count);
        if (base > 0)
            expect_unavailable(h, base - 1, count);
    }
    state_history_mem_destroy(h);
}

Test(state_history_mem, serves_sub_ranges_and_refuses_bad_ones)
{
    state_history_mem_t *h = state_history_mem_new(100, 0);
    append_range(h, 0, 60);
    expect_range(h, 10, 20);
    expect_range(h, 0, 60);
    expect_range(h, 59, 60);
    expect_range(h, 30, 30);
    expect_unavailable(h, 5, 61); /* beyond the end */
    expect_unavailable(h, 6, 5);  /* backwards */
    state_history_mem_destroy(h);
}

Test(state_history_mem, starts_at_the_loaded_command_count)
{
    state_history_mem_t *h = state_history_mem_new(10, 500);
    expect_unavailable(h, 499, 500);
    append_range(h, 500, 505);
    expect_range(h, 500, 505);
    codec_packed_t empty;
    codec_packed_init(&empty);
    cr_assert_eq(state_history_mem_append(h, 7, &empty), -1, "a gap is refused");
    codec_packed_destroy(&empty);
    state_history_mem_destroy(h);
}

Test(state_history_mem, retain_zero_keeps_nothing_but_counts)
{
    state_history_mem_t *h = state_history_mem_new(0, 0);
    append_range(h, 0, 3);
    append_range(h, 3, 5);
    expect_unavailable(h, 4, 5);
    expect_range(h, 5, 5);
    state_history_mem_destroy(h);
}

/* Entry c of `size` bytes: a str8 "e<c>" padded with dashes. */
static size_t sized_entry(uint64_t c, size_t size, char *buf)
{
    memset(buf, '-', size);
    buf[0] = (char)0xd9;
    buf[1] = (char)(size - 2);
    char text[24];
    int n = snprintf(text, sizeof(text), "e%llu", (unsigned long long)c);
    memcpy(buf + 2, text, (size_t)n);
    return size;
}

/* The ring grows while its kept bytes wrap past its end, and again while they wrap in
 * the new ring too: every kept entry comes back byte for byte each time. */
Test(state_history_mem, grows_while_its_bytes_wrap)
{
    enum { KEEP = 8, N = 37 + 8 + 8 };
    size_t sizes[N];
    for (int c = 0; c < N; c++)
        sizes[c] = c < 37 ? 10 : c < 45 ? 30 : 60;
    state_history_mem_t *h = state_history_mem_new(KEEP, 0);
    for (uint64_t c = 0; c < N; c++) {
        char buf[64];
        codec_packed_t one;
        codec_packed_init(&one);
        codec_packed_add_raw(&one, buf, sized_entry(c, sizes[c], buf));
        cr_assert_eq(state_history_mem_append(h, c, &one), 0);
        codec_packed_destroy(&one);

        uint64_t from = c + 1 > KEEP ? c + 1 - KEEP : 0;
        state_history_t p = state_history_mem_provider(h);
        codec_packed_t out;
        codec_packed_init(&out);
        cr_assert_eq(p.range(p.opaque, from, c + 1, &out), 0);
        cr_assert_eq(out.count, c + 1 - from);
        for (uint64_t k = from; k <= c; k++) {
            char want[64];
            size_t want_len = sized_entry(k, sizes[k], want), got_len;
            const char *got = codec_packed_item(&out, (uint32_t)(k - from), &got_len);
            cr_assert_eq(got_len, want_len, "entry %llu after %llu appends",
                         (unsigned long long)k, (unsigned long long)c + 1);
            cr_assert_eq(memcmp(got, want, want_len), 0, "entry %llu after %llu appends",
                         (unsigned long long)k, (unsigned long long)c + 1);
        }
        codec_packed_destroy(&out);
    }
    cr_assert_geq(state_history_mem_size(h), 512, "the ring grew to hold 8 x 60 bytes");
    state_history_mem_destroy(h);
}
