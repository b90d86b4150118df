/* tests/processor/test_metrics.c - the latency histogram and its Prometheus form. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "processor/metrics.h"

/* The value of sample in text, or -1 when absent. */
static double sample(const char *text, const char *name)
{
    size_t len = strlen(name);
    for (const char *line = text; line && *line; line = strchr(line, '\n')) {
        if (*line == '\n')
            line++;
        if (!strncmp(line, name, len) && line[len] == ' ')
            return strtod(line + len + 1, NULL);
    }
    return -1;
}

Test(metrics, quantiles_are_within_a_bucket)
{
    static processor_histogram_t h;
    cr_assert_eq(processor_histogram_quantile(&h, 0.5), 0, "empty");
    for (uint64_t us = 1; us <= 10000; us++)
        processor_histogram_record(&h, us);
    uint64_t p50 = processor_histogram_quantile(&h, 0.5);
    uint64_t p99 = processor_histogram_quantile(&h, 0.99);
    cr_assert(p50 >= 5000 && p50 <= 5000 * 1.0625, "p50 %llu", (unsigned long long)p50);
    cr_assert(p99 >= 9900 && p99 <= 10000, "p99 %llu (never above the max)",
              (unsigned long long)p99);
}

Test(metrics, prometheus_histogram_is_cumulative_in_seconds)
{
    static processor_histogram_t h;
    processor_histogram_record(&h, 50);      /* <= 100 us */
    processor_histogram_record(&h, 150);     /* <= 250 us */
    processor_histogram_record(&h, 3000);    /* <= 5 ms */
    processor_histogram_record(&h, 2000000); /* <= 2.5 s */
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    processor_histogram_write_prometheus(fp, "x_seconds", "What x takes.", &h);
    fclose(fp);
    cr_assert(
        strstr(text, "# HELP x_seconds What x takes.\n# TYPE x_seconds histogram\n"));
    cr_assert_eq(sample(text, "x_seconds_bucket{le=\"0.0001\"}"), 1);
    cr_assert_eq(sample(text, "x_seconds_bucket{le=\"0.00025\"}"), 2);
    cr_assert_eq(sample(text, "x_seconds_bucket{le=\"0.0025\"}"), 2);
    cr_assert_eq(sample(text, "x_seconds_bucket{le=\"0.005\"}"), 3);
    cr_assert_eq(sample(text, "x_seconds_bucket{le=\"1\"}"), 3);
    cr_assert_eq(sample(text, "x_seconds_bucket{le=\"2.5\"}"), 4);
    cr_assert_eq(sample(text, "x_seconds_bucket{le=\"+Inf\"}"), 4);
    cr_assert_eq(sample(text, "x_seconds_count"), 4);
    double sum = sample(text, "x_seconds_sum");
    cr_assert(sum > 2.0031 && sum < 2.0033, "sum %f", sum);
    free(text);
}
