/* tests/bench/bench_interceptor.c - what an interceptor adds to a command, measured
 * against the same workload without one, in the same process.
 *
 * Three figures (issue 15's targets, reported by master.sh and BENCHMARKS.md):
 *   trivial     a script that returns nil: CPU added per command (target <= 1 us);
 *   created_by  createdBy/createdAt stamped on creates (deploy/interceptors/
 *               created_by.lua's work): CPU added per create (target <= 3 us);
 *   read_field  reading one field of the document: the CPU it adds per command on a
 *               10 MB document over what it adds on a 1 KB one (target ~1x).
 * Each workload runs through processor_handler_handle (decode, intercept, apply,
 * encode) on a fresh handler without a store, best of --runs by CPU time.
 *
 * Usage: bench_interceptor WORKDIR [--flushes N] [--runs N] [--doc-mb N]
 * Prints one JSON object per figure on stdout. Exit 3 when a target is missed with
 * --check, 1 on errors. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/alloc.h"
#include "codec/json.h"
#include "codec/msgpack.h"
#include "processor/handler.h"
#include "processor/interceptor.h"

static const char TRIVIAL[] = "function intercept() return nil end\n";

static const char CREATED_BY[] =
    "function intercept(document, command, context, meta)\n"
    "  if command.action ~= 'create' then return nil end\n"
    "  local props = {}\n"
    "  for k, v in pairs(command.props or {}) do props[k] = v end\n"
    "  props.createdBy = context and context.user\n"
    "  props.createdAt = meta.timestamp\n"
    "  return {newProps = props}\n"
    "end\n";

static const char READ_FIELD[] =
    "function intercept(document, command, context, meta)\n"
    "  if document.title == 'frozen' then return {rejection = 'frozen'} end\n"
    "end\n";

typedef struct records_s {
    msgpack_sbuffer values;
    size_t *offsets; /* record i is values[offsets[i], offsets[i + 1]) */
    size_t count;
    char (*models)[32];
} records_t;

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef enum workload_e {
    CREATE_AND_UPDATE, /* each flush creates an item (the client's proposed id) and
                          updates it */
    CREATES,           /* each flush creates an item: what a create costs, alone */
    UPDATES, /* each flush updates one field: the document's size does not matter */
} workload_t;

/* flushes flushes of kind over models models. */
static void records_make(records_t *r, size_t flushes, size_t models, workload_t kind)
{
    msgpack_sbuffer_init(&r->values);
    r->offsets = codec_xmalloc((flushes + 1) * sizeof(*r->offsets));
    r->models = codec_xmalloc(flushes * sizeof(*r->models));
    r->count = flushes;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &r->values, msgpack_sbuffer_write);
    uint64_t *count = codec_xcalloc(models, sizeof(*count));
    for (size_t i = 0; i < flushes; i++) {
        size_t m = i % models;
        snprintf(r->models[i], sizeof(r->models[i]), "model-%zu", m);
        char json[512];
        if (kind == CREATE_AND_UPDATE)
            snprintf(json, sizeof(json),
                     "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%zu,\"from\":%llu,"
                     "\"timestamp\":%zu,\"context\":{\"user\":\"alice\"},\"completions\":"
                     "[{\"command\":{\"action\":\"create\",\"props\":{\"title\":\"todo "
                     "%zu\",\"done\":false}},\"createdId\":\"t%zu\"},{\"command\":{"
                     "\"action\":\"update\",\"path\":[\"t%zu\"],\"props\":{\"done\":"
                     "true}}}]}",
                     i + 1, (unsigned long long)count[m], 1700000000000 + i, i, i, i);
        else if (kind == CREATES)
            snprintf(json, sizeof(json),
                     "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%zu,\"from\":%llu,"
                     "\"timestamp\":%zu,\"context\":{\"user\":\"alice\"},\"completions\":"
                     "[{\"command\":{\"action\":\"create\",\"props\":{\"title\":\"todo "
                     "%zu\",\"done\":false}},\"createdId\":\"t%zu\"}]}",
                     i + 1, (unsigned long long)count[m], 1700000000000 + i, i, i);
        else
            snprintf(json, sizeof(json),
                     "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%zu,\"from\":%llu,"
                     "\"completions\":[{\"command\":{\"action\":\"update\",\"props\":{"
                     "\"n\":%zu}}}]}",
                     i + 1, (unsigned long long)count[m], i);
        count[m] += kind == CREATE_AND_UPDATE ? 2 : 1;
        codec_value_t *v;
        char err[256];
        if (codec_json_decode(json, strlen(json), NULL, &v, err, sizeof(err))) {
            fprintf(stderr, "bench_interceptor: %s\n", err);
            exit(1);
        }
        r->offsets[i] = r->values.size;
        codec_msgpack_pack_value(&pk, v);
        codec_value_destroy(v);
    }
    r->offsets[flushes] = r->values.size;
    free(count);
}

static void records_clear(records_t *r)
{
    msgpack_sbuffer_destroy(&r->values);
    free(r->offsets);
    free(r->models);
}

/* Best CPU seconds of runs passes over r, each on a fresh handler. */
/* CPU seconds of one pass over r on a fresh handler. */
static double time_once(const records_t *r, processor_interceptor_t *ic,
                        const codec_value_t *initial)
{
    processor_handler_conf_t hc = {
        .master = {.ids = STATE_IDS_SEQUENTIAL,
                   .interceptor = ic ? processor_interceptor_call : NULL,
                   .interceptor_opaque = ic},
        .history = 1000,
        .initial_document = initial,
        .limits = codec_limits_default,
    };
    processor_handler_t *h = processor_handler_new(&hc);
    processor_output_t out;
    processor_output_init(&out);
    double start = 0;
    for (size_t i = 0; i < r->count; i++) {
        if (i == 1) /* the first record made its model: a copy of initial, untimed */
            start = cpu_s();
        processor_output_reset(&out);
        processor_handler_handle(h, -1, -1, r->models[i], strlen(r->models[i]),
                                 r->values.data + r->offsets[i],
                                 r->offsets[i + 1] - r->offsets[i], &out);
        if (out.error || memmem(out.reply.data, out.reply.size, "errorMessage", 12)) {
            fprintf(stderr, "bench_interceptor: record %zu failed: %s\n", i, out.message);
            exit(1);
        }
    }
    double t = cpu_s() - start;
    processor_output_destroy(&out);
    processor_handler_destroy(h);
    return t;
}

/* The best of runs passes over r without a script (*without) and with ic (*with),
 * alternating, so that a slower spell of the machine weighs on both alike. */
static void time_pair(const records_t *r, processor_interceptor_t *ic,
                      const codec_value_t *initial, int runs, double *without,
                      double *with)
{
    *without = *with = 1e30;
    for (int run = 0; run < runs; run++) {
        double t = time_once(r, NULL, initial);
        *without = t < *without ? t : *without;
        t = time_once(r, ic, initial);
        *with = t < *with ? t : *with;
    }
}

static processor_interceptor_t *load(const char *dir, const char *name, const char *src)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s.lua", dir, name);
    FILE *fp = fopen(path, "w");
    if (!fp || fputs(src, fp) < 0 || fclose(fp)) {
        fprintf(stderr, "bench_interceptor: cannot write %s\n", path);
        exit(1);
    }
    processor_interceptor_conf_t conf = {.path = path,
                                         .max_instructions = 1000000,
                                         .max_memory_bytes = 64u << 20,
                                         .limits = codec_limits_default};
    char errstr[512];
    processor_interceptor_t *ic =
        processor_interceptor_load(&conf, errstr, sizeof(errstr));
    if (!ic) {
        fprintf(stderr, "bench_interceptor: %s\n", errstr);
        exit(1);
    }
    return ic;
}

/* A document of about bytes bytes: a title and many items. */
static codec_value_t *document_of(size_t bytes)
{
    codec_value_t *doc = codec_value_map(0);
    codec_map_set(doc, "title", 5, codec_value_str("a list", 6));
    char text[100];
    memset(text, 'x', sizeof(text));
    for (size_t i = 0; i * 130 < bytes; i++) {
        char key[24];
        int n = snprintf(key, sizeof(key), "item-%zu", i);
        codec_value_t *item = codec_value_map(2);
        codec_map_set(item, "text", 4, codec_value_str(text, sizeof(text)));
        codec_map_set(item, "done", 4, codec_value_bool(i % 2));
        codec_map_set(doc, key, (size_t)n, item);
    }
    return doc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_interceptor WORKDIR [--flushes N] [--runs N] "
                        "[--doc-mb N] [--check] [--only NAME]\n");
        return 2;
    }
    const char *dir = argv[1];
    size_t flushes = 50000, doc_mb = 10;
    int runs = 5;
    bool check = false;
    const char *only = NULL; /* trivial|created_by|read_field: one figure (profiling) */
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--flushes") && i + 1 < argc)
            flushes = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--doc-mb") && i + 1 < argc)
            doc_mb = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--check"))
            check = true;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
    }
    int missed = 0;

    records_t todo, creates_only;
    records_make(&todo, flushes, 100, CREATE_AND_UPDATE);
    records_make(&creates_only, flushes, 100, CREATES);
    size_t commands = 2 * flushes, creates = flushes;
    processor_interceptor_t *trivial = load(dir, "trivial", TRIVIAL);
    processor_interceptor_t *created_by = load(dir, "created_by", CREATED_BY);
    bool all = !only;
    double none_s = 0, trivial_s = 0, none_creates_s = 0, created_s = 0;
    if (all || !strcmp(only, "trivial"))
        time_pair(&todo, trivial, NULL, runs, &none_s, &trivial_s);
    /* The stamps include what they make the master do: a sync in the reply (flushout
     * sends one whenever an interceptor changed a command) and larger props. */
    if (all || !strcmp(only, "created_by"))
        time_pair(&creates_only, created_by, NULL, runs, &none_creates_s, &created_s);
    double trivial_us = (trivial_s - none_s) * 1e6 / (double)commands;
    double created_us = (created_s - none_creates_s) * 1e6 / (double)creates;
    printf("{\"bench\":\"trivial\",\"commands\":%zu,\"base_us_per_command\":%.3f,"
           "\"added_us_per_command\":%.3f,\"target_us\":1}\n",
           commands, none_s * 1e6 / (double)commands, trivial_us);
    printf("{\"bench\":\"created_by\",\"creates\":%zu,\"added_us_per_create\":%.3f,"
           "\"target_us\":3}\n",
           creates, created_us);
    missed += trivial_us > 1.0;
    missed += created_us > 3.0;
    records_clear(&todo);
    records_clear(&creates_only);
    processor_interceptor_destroy(trivial);
    processor_interceptor_destroy(created_by);

    if (!all && strcmp(only, "read_field"))
        return 0;
    /* One model whose document is small or large; one update per flush. */
    records_t updates;
    records_make(&updates, flushes, 1, UPDATES);
    processor_interceptor_t *read_field = load(dir, "read_field", READ_FIELD);
    codec_value_t *small = document_of(1024), *large = document_of(doc_mb << 20);
    double small_none, small_read, large_none, large_read;
    time_pair(&updates, read_field, small, runs, &small_none, &small_read);
    time_pair(&updates, read_field, large, runs, &large_none, &large_read);
    double per = 1e6 / (double)(updates.count - 1);
    double small_us = (small_read - small_none) * per,
           large_us = (large_read - large_none) * per;
    double ratio = large_us / (small_us > 0.01 ? small_us : 0.01);
    printf("{\"bench\":\"read_field\",\"commands\":%zu,\"doc_mb\":%zu,"
           "\"added_us_1kb\":%.3f,\"added_us_large\":%.3f,\"large_over_small\":%.2f,"
           "\"target\":1.5}\n",
           updates.count, doc_mb, small_us, large_us, ratio);
    missed += ratio > 1.5 && large_us - small_us > 0.5;
    codec_value_destroy(small);
    codec_value_destroy(large);
    records_clear(&updates);
    processor_interceptor_destroy(read_field);
    return check && missed ? 3 : 0;
}
