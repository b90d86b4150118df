/* processor/metrics.h - counters and latency histograms the processor keeps about
 * itself: logged in its periodic and final stats lines, read by the benchmarks.
 *
 * A histogram is log-linear (HdrHistogram's layout at 3 bits of precision): exact
 * below 16 us, then 8 buckets per power of two, so any quantile is within 6.25% of
 * the true value while recording stays one atomic add and needs no lock. */
#ifndef FLUSHOUT_PROCESSOR_METRICS_H
#define FLUSHOUT_PROCESSOR_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define PROCESSOR_HISTOGRAM_BUCKETS (16 + 60 * 8)

typedef struct processor_histogram_s {
    atomic_uint_fast64_t buckets[PROCESSOR_HISTOGRAM_BUCKETS];
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t max_us;
    atomic_uint_fast64_t sum_us;
} processor_histogram_t;

/** Records one value in microseconds. Thread-safe. */
void processor_histogram_record(processor_histogram_t *h, uint64_t us);

/** The value (us) below which a fraction q of the recorded values lie: the upper
 *  bound of the bucket holding it, or 0 when nothing was recorded. */
uint64_t processor_histogram_quantile(const processor_histogram_t *h, double q);

/** Writes h as a Prometheus histogram in seconds (name_bucket{le=...}, name_sum,
 *  name_count) with its # HELP and # TYPE lines. A bucket of ours counts under the
 *  first le at or above its upper bound, so a cumulative count may lag by at most
 *  one bucket's width (6.25%). */
void processor_histogram_write_prometheus(FILE *fp, const char *name, const char *help,
                                          const processor_histogram_t *h);

/** Seconds on the monotonic clock. */
double processor_monotonic_s(void);

/** The time ms from now on clock, as pthread_cond_timedwait() and friends take it. */
struct timespec processor_clock_after_ms(clockid_t clock, uint64_t ms);

#endif
