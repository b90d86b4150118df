/* tests/bench/bench_master.c - times decode -> apply -> encode on a recorded workload.
 *
 * The C side of tests/bench/run.sh: the NDJSON workload from workload.js is turned
 * into msgpack records (key = model) before the clock starts, as they would arrive
 * from Kafka; then every record goes through processor_handler_handle, which decodes
 * the request, applies it to the model's master, appends to the history and packs the
 * reply. The handler is set up as `apply --ids sequential --history 1000`, matching
 * js_master.js. Best of N runs, each on a fresh handler.
 *
 * Memory per model is reported two ways: the growth of the resident set over the
 * first run (models, documents, histories and allocator overhead) divided by the
 * number of models, and codec_value_mem_size of the documents alone.
 *
 * A final untimed run re-reads every reply and counts what it says (syncs, mapped
 * paths, command errors) so that run.sh can compare with the JS master's replies.
 * Exits 1 if any request got an error reply: the recorded workload is all valid.
 *
 * Usage: bench_master WORKLOAD.ndjson [--runs N] [--history N]
 * Prints one JSON object on stdout. */
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codec/alloc.h"
#include "codec/json.h"
#include "codec/msgpack.h"
#include "processor/handler.h"

/* The workload as records: record i is value bytes [off, off + len) of `values` and
 * key bytes [key_off, key_off + key_len) of `keys`. */
typedef struct bench_record_s {
    size_t off, len;
    size_t key_off, key_len;
} bench_record_t;

typedef struct bench_workload_s {
    msgpack_sbuffer values;
    msgpack_sbuffer keys;
    bench_record_t *records;
    size_t count, cap;
    size_t *models; /* index of one record per distinct model */
    size_t n_models;
} bench_workload_t;

/* What the replies said; the same counts as js_master.js's countReply. */
typedef struct bench_stats_s {
    uint64_t flushes, commands_applied, command_errors;
    uint64_t syncs_partial, syncs_full, mapped_paths;
    uint64_t error_replies, reply_bytes;
} bench_stats_t;

static double clock_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Resident set size in bytes, from /proc/self/statm. */
static long rss_bytes(void)
{
    long size = 0, resident = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (!fp)
        return -1;
    if (fscanf(fp, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(fp);
    return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

/* Gives freed heap pages back to the kernel, so that the RSS measured before a run
 * does not include free memory the run then reuses (which would hide its growth). */
static void trim_heap(void)
{
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static const char *record_key(const bench_workload_t *w, size_t i)
{
    return w->keys.data + w->records[i].key_off;
}

static const bench_workload_t *sort_workload;

static int cmp_model(const void *a, const void *b)
{
    const bench_record_t *x = &sort_workload->records[*(const size_t *)a];
    const bench_record_t *y = &sort_workload->records[*(const size_t *)b];
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(record_key(sort_workload, *(const size_t *)a),
                   record_key(sort_workload, *(const size_t *)b), n);
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* Finds the distinct models (for the per-model figures), by sorting record indexes. */
static void find_models(bench_workload_t *w)
{
    size_t *idx = codec_xmalloc((w->count ? w->count : 1) * sizeof(*idx));
    for (size_t i = 0; i < w->count; i++)
        idx[i] = i;
    sort_workload = w;
    qsort(idx, w->count, sizeof(*idx), cmp_model);
    w->n_models = 0;
    for (size_t i = 0; i < w->count; i++)
        if (i == 0 || cmp_model(&idx[i - 1], &idx[i]) != 0)
            idx[w->n_models++] = idx[i];
    w->models = idx;
}

/* Reads NDJSON requests into msgpack records. @returns 0, or -1 after printing why. */
static int workload_load(bench_workload_t *w, const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp) {
        perror(path);
        return -1;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w->values, msgpack_sbuffer_write);
    char *line = NULL, errstr[512];
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int rc = 0;
    while ((n = getline(&line, &cap, fp)) != -1) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)n)
            continue;
        codec_value_t *v = NULL;
        if (codec_json_decode(line, (size_t)n, &codec_limits_default, &v, errstr,
                              sizeof(errstr))) {
            fprintf(stderr, "%s:%zu: %s\n", path, lineno, errstr);
            rc = -1;
            break;
        }
        const codec_value_t *model =
            v->type == CODEC_VALUE_MAP ? codec_map_get(v, "model", 5) : NULL;
        if (!model || model->type != CODEC_VALUE_STR) {
            fprintf(stderr, "%s:%zu: request has no string \"model\"\n", path, lineno);
            codec_value_destroy(v);
            rc = -1;
            break;
        }
        if (w->count == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->records = codec_xrealloc(w->records, w->cap * sizeof(*w->records));
        }
        bench_record_t *r = &w->records[w->count++];
        r->key_off = w->keys.size;
        r->key_len = model->u.str.len;
        msgpack_sbuffer_write(&w->keys, model->u.str.ptr, model->u.str.len);
        r->off = w->values.size;
        codec_msgpack_pack_value(&pk, v);
        r->len = w->values.size - r->off;
        codec_value_destroy(v);
    }
    free(line);
    fclose(fp);
    if (rc == 0)
        find_models(w);
    return rc;
}

static void workload_clear(bench_workload_t *w)
{
    msgpack_sbuffer_destroy(&w->values);
    msgpack_sbuffer_destroy(&w->keys);
    free(w->records);
    free(w->models);
}

static processor_handler_t *handler_new(uint64_t history)
{
    processor_handler_conf_t conf = {
        .master = {.ids = STATE_IDS_SEQUENTIAL},
        .history = history,
        .initial_document = NULL, /* {} as js_master.js's masters start */
        .limits = codec_limits_default,
    };
    return processor_handler_new(&conf);
}

/* Handles every record once: the timed loop. @returns the number of error replies. */
static uint64_t run_all(processor_handler_t *h, const bench_workload_t *w,
                        processor_output_t *out)
{
    uint64_t errors = 0;
    for (size_t i = 0; i < w->count; i++) {
        const bench_record_t *r = &w->records[i];
        processor_output_reset(out);
        processor_handler_handle(h, -1, -1, record_key(w, i), r->key_len,
                                 w->values.data + r->off, r->len, out);
        errors += out->error != CODEC_OK;
    }
    return errors;
}

static uint64_t map_count(const codec_value_t *m)
{
    return m && m->type == CODEC_VALUE_MAP ? m->u.map.count : 0;
}

static uint64_t array_len(const codec_value_t *a)
{
    return a && a->type == CODEC_VALUE_ARRAY ? a->u.array.len : 0;
}

/* Counts what one reply says. @returns 0, or -1 if it is not a flushResult. */
static int count_reply(bench_stats_t *s, const processor_output_t *out, char *why,
                       size_t why_size)
{
    codec_value_t *v = NULL;
    char errstr[400];
    s->reply_bytes += out->reply.size;
    if (codec_msgpack_decode(out->reply.data, out->reply.size, &codec_limits_trusted, &v,
                             errstr, sizeof(errstr))) {
        snprintf(why, why_size, "reply is not valid msgpack: %s", errstr);
        return -1;
    }
    const codec_value_t *type = codec_map_get(v, "type", 4);
    if (out->error || !type || type->type != CODEC_VALUE_STR ||
        strcmp(type->u.str.ptr, "flushResult") != 0) {
        size_t len;
        char *json = codec_json_encode(v, &len);
        snprintf(why, why_size, "%.400s", json);
        free(json);
        codec_value_destroy(v);
        return -1;
    }
    s->flushes++;
    const codec_value_t *applied = codec_map_get(v, "applied", 7);
    s->commands_applied +=
        array_len(applied ? codec_map_get(applied, "completions", 11) : NULL);
    s->command_errors += array_len(codec_map_get(v, "errors", 6));
    const codec_value_t *sync = codec_map_get(v, "sync", 4);
    if (sync && sync->type == CODEC_VALUE_MAP) {
        const codec_value_t *partial = codec_map_get(sync, "isPartial", 9);
        if (partial && partial->type == CODEC_VALUE_BOOL && partial->u.b)
            s->syncs_partial++;
        else
            s->syncs_full++;
        s->mapped_paths += map_count(codec_map_get(sync, "mappedPaths", 11));
    }
    codec_value_destroy(v);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_master WORKLOAD.ndjson [--runs N] [--history N]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    long runs = 3, history = 1000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--history") && i + 1 < argc)
            history = strtol(argv[++i], NULL, 10);
        else if (argv[i][0] != '-' && !path)
            path = argv[i];
        else
            return usage();
    }
    if (!path || runs < 1 || history < 1)
        return usage();

    bench_workload_t w = {0};
    msgpack_sbuffer_init(&w.values);
    msgpack_sbuffer_init(&w.keys);
    if (workload_load(&w, path)) {
        workload_clear(&w);
        return 1;
    }

    processor_output_t out;
    processor_output_init(&out);
    double *times = codec_xcalloc((size_t)runs, sizeof(*times));
    double best = 0, best_cpu = 0;
    long rss_delta = 0;
    size_t doc_bytes = 0;
    uint64_t error_replies = 0, final_count = 0;
    for (long run = 0; run < runs; run++) {
        trim_heap();
        long rss_before = rss_bytes();
        processor_handler_t *h = handler_new((uint64_t)history);
        double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        error_replies += run_all(h, &w, &out);
        times[run] = clock_s(CLOCK_MONOTONIC) - t0;
        if (run == 0 || times[run] < best) {
            best = times[run];
            best_cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
        }
        if (run == 0) {
            rss_delta = rss_bytes() - rss_before;
            for (size_t i = 0; i < w.n_models; i++) {
                size_t r = w.models[i];
                const state_master_t *m =
                    processor_handler_model(h, record_key(&w, r), w.records[r].key_len);
                doc_bytes += codec_value_mem_size(state_master_document(m));
                final_count += state_master_command_count(m);
            }
        }
        processor_handler_destroy(h);
    }

    /* The untimed check: every reply decodes and is a flushResult. */
    bench_stats_t s = {0};
    char why[512] = "", scratch[512];
    size_t first_bad = SIZE_MAX;
    processor_handler_t *h = handler_new((uint64_t)history);
    for (size_t i = 0; i < w.count; i++) {
        const bench_record_t *r = &w.records[i];
        processor_output_reset(&out);
        processor_handler_handle(h, -1, -1, record_key(&w, i), r->key_len,
                                 w.values.data + r->off, r->len, &out);
        if (count_reply(&s, &out, first_bad == SIZE_MAX ? why : scratch, sizeof(why))) {
            s.error_replies++;
            if (first_bad == SIZE_MAX)
                first_bad = i;
        }
    }
    processor_handler_destroy(h);

    size_t models = w.n_models ? w.n_models : 1;
    printf("{\"impl\":\"c\",\"flushes\":%zu,\"models\":%zu,\"runs_s\":[", w.count,
           w.n_models);
    for (long run = 0; run < runs; run++)
        printf("%s%.6f", run ? "," : "", times[run]);
    printf("],\"best_s\":%.6f,\"best_cpu_s\":%.6f,\"flushes_per_s\":%.1f,\"rss_bytes_per_"
           "model\":%ld,"
           "\"doc_bytes_per_model\":%zu,\"final_command_count\":%" PRIu64
           ",\"reply_bytes\":%" PRIu64 ",\"error_replies\":%" PRIu64 ",\"stats\":{"
           "\"flushes\":%" PRIu64 ",\"commands_applied\":%" PRIu64
           ",\"command_errors\":%" PRIu64 ",\"syncs_partial\":%" PRIu64
           ",\"syncs_full\":%" PRIu64 ",\"mapped_paths\":%" PRIu64 "}}\n",
           best, best_cpu, best > 0 ? (double)w.count / best : 0.0,
           rss_delta / (long)models, doc_bytes / models, final_count, s.reply_bytes,
           s.error_replies, s.flushes, s.commands_applied, s.command_errors,
           s.syncs_partial, s.syncs_full, s.mapped_paths);

    int rc = 0;
    if (error_replies || s.error_replies) {
        fprintf(stderr,
                "bench_master: %" PRIu64 " error replies in the timed runs, %" PRIu64
                " bad replies in the check; first: record %zu: %s\n",
                error_replies, s.error_replies, first_bad, why);
        rc = 1;
    }
    free(times);
    processor_output_destroy(&out);
    workload_clear(&w);
    return rc;
}
