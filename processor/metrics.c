/* processor/metrics.c - latency histograms (see metrics.h). */
#include "metrics.h"

#include <time.h>

static unsigned bucket_of(uint64_t us)
{
    if (us < 16)
        return (unsigned)us;
    unsigned exp = 63u - (unsigned)__builtin_clzll(us); /* >= 4 */
    unsigned sub = (unsigned)(us >> (exp - 3)) & 7u;
    unsigned b = 16 + (exp - 4) * 8 + sub;
    return b < PROCESSOR_HISTOGRAM_BUCKETS ? b : PROCESSOR_HISTOGRAM_BUCKETS - 1;
}

/* The largest value that falls in bucket b. */
static uint64_t bucket_upper(unsigned b)
{
    if (b < 16)
        return b;
    unsigned exp = 4 + (b - 16) / 8, sub = (b - 16) % 8;
    return ((uint64_t)(8 + sub + 1) << (exp - 3)) - 1;
}

void processor_histogram_record(processor_histogram_t *h, uint64_t us)
{
    atomic_fetch_add_explicit(&h->buckets[bucket_of(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
    while (us > max && !atomic_compare_exchange_weak_explicit(&h->max_us, &max, us,
                                                              memory_order_relaxed,
                                                              memory_order_relaxed))
        ;
}

uint64_t processor_histogram_quantile(const processor_histogram_t *h, double q)
{
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    if (!count)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)count + 0.5), seen = 0;
    if (rank < 1)
        rank = 1;
    for (unsigned b = 0; b < PROCESSOR_HISTOGRAM_BUCKETS; b++) {
        seen += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
        if (seen >= rank) {
            uint64_t upper = bucket_upper(b), max = atomic_load(&h->max_us);
            return upper < max ? upper : max;
        }
    }
    return atomic_load(&h->max_us);
}

void processor_histogram_write_prometheus(FILE *fp, const char *name, const char *help,
                                          const processor_histogram_t *h)
{
    static const double le_s[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                  0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                  1,      2.5,     5,      10};
    fprintf(fp, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cumulative = 0;
    unsigned b = 0;
    for (size_t i = 0; i < sizeof(le_s) / sizeof(le_s[0]); i++) {
        uint64_t le_us = (uint64_t)(le_s[i] * 1e6 + 0.5);
        for (; b < PROCESSOR_HISTOGRAM_BUCKETS && bucket_upper(b) <= le_us; b++)
            cumulative += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
        fprintf(fp, "%s_bucket{le=\"%g\"} %llu\n", name, le_s[i],
                (unsigned long long)cumulative);
    }
    for (; b < PROCESSOR_HISTOGRAM_BUCKETS; b++)
        cumulative += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
    /* +Inf and _count from the same sum of buckets, so that they agree. */
    fprintf(fp, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
            (unsigned long long)cumulative, name,
            (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6, name,
            (unsigned long long)cumulative);
}

double processor_monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timespec processor_clock_after_ms(clockid_t clock, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}
