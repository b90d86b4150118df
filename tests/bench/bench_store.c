/* tests/bench/bench_store.c - the state store's costs: flushes per second against one
 * model of 1 KB, 100 KB, 1 MB and 10 MB, and peak RSS with many small models.
 *
 * Document size: each store starts one model from a document of that size (a map of
 * ~100-byte items) and applies small flushes (one update of one item each) through
 * the handler and the RocksDB store, one committed step per 100 flushes. The cost of
 * a flush must not follow the document's size: the 10 MB figure is checked against
 * 0.8x the 1 KB one. The flushes edit 64 items in turn (people edit a few items of a
 * large list at a time); a second run edits items at random all over the document,
 * which is reported too: it measures memory latency more than the store.
 *
 * Many models: --models N small models (one create each, one step per 1000 flushes)
 * with --cache-mb C; reports peak RSS (VmHWM) before and after, so the fixed
 * overhead (RocksDB memtables and block cache, allocator) shows separately.
 *
 * Steps: --steps N steps shaped like `run`'s at full load (loadgen): 500 flushes of
 * two commands (a create, a delete) over 125 models of a few items, one client per
 * model (so each model's history, client and snapshot keys are written about 4 times
 * a step), each flush's reply and change record added to the outbox, one commit
 * (offset key, sorted batch) per step, in a changelog store (no WAL) as `run`'s. Reports
 * the microseconds per flush, the handler's included. --per-step N (500) sets the
 * flushes a step: `run` at ab.sh's maximum load makes steps of about 280 (2 flushes a
 * model), 125 is one flush a model a step, as at lower loads.
 *
 * Usage: bench_store DIR [--flushes N] [--sizes-kb LIST] [--models N] [--cache-mb C]
 *        [--min-ratio R] [--overhead-mb M] [--steps N] [--per-step N]
 * Prints JSON lines; exits 3 when the largest / smallest document ratio is below
 * --min-ratio (0.8), 4 when peak RSS exceeds --cache-mb + --overhead-mb (150: RocksDB's
 * two 64 MB write buffers and 8 MB block cache, and the process itself). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/msgpack.h"
#include "processor/handler.h"

static double clock_s(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

/* VmHWM (peak RSS) or VmRSS of this process, in KB. */
static long proc_kb(const char *field)
{
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (fp && fgets(line, sizeof(line), fp))
        if (!strncmp(line, field, n))
            kb = strtol(line + n + 1, NULL, 10);
    if (fp)
        fclose(fp);
    return kb;
}

/* A document of about kb kilobytes: {"items":{"1":{"title":...,"n":i},...}}. */
static codec_value_t *document(size_t kb)
{
    codec_value_t *items = codec_value_map(0);
    size_t bytes = 0;
    char id[24], title[80];
    for (int i = 1; bytes < kb * 1024; i++) {
        int idn = snprintf(id, sizeof(id), "%d", i);
        int tn =
            snprintf(title, sizeof(title), "item %d: water the plants, then review", i);
        codec_value_t *item = codec_value_map(2);
        codec_map_set(item, "title", 5, codec_value_str(title, (size_t)tn));
        codec_map_set(item, "n", 1, codec_value_int(i));
        codec_map_set(items, id, (size_t)idn, item);
        bytes += (size_t)(idn + tn + 16);
    }
    codec_value_t *doc = codec_value_map(1);
    codec_map_set(doc, "items", 5, items);
    return doc;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Starts sb over with a flush of client holding n completions: {"type":"flush",
 * "client":client,"seq":seq,"from":from,"completions":[ ...the caller's */
static void flush_start(msgpack_sbuffer *sb, msgpack_packer *pk, const char *client,
                        uint64_t seq, uint64_t from, uint32_t n)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(pk, 5);
    pack_str(pk, "type");
    pack_str(pk, "flush");
    pack_str(pk, "client");
    pack_str(pk, client);
    pack_str(pk, "seq");
    msgpack_pack_uint64(pk, seq);
    pack_str(pk, "from");
    msgpack_pack_uint64(pk, from);
    pack_str(pk, "completions");
    msgpack_pack_array(pk, n);
}

/* A flush that updates items/<item>. */
static void flush_record(msgpack_sbuffer *sb, uint64_t seq, uint64_t from, int item)
{
    msgpack_packer pk;
    flush_start(sb, &pk, "c", seq, from, 1);
    char id[24];
    snprintf(id, sizeof(id), "%d", item);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "command");
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "action");
    pack_str(&pk, "update");
    pack_str(&pk, "path");
    msgpack_pack_array(&pk, 2);
    pack_str(&pk, "items");
    pack_str(&pk, id);
    pack_str(&pk, "props");
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "done");
    msgpack_pack_true(&pk);
}

static state_store_t *store_open(const char *dir, size_t cache_mb,
                                 const codec_value_t *doc, bool changelog)
{
    char errstr[512];
    state_store_conf_t conf = {
        .dir = dir,
        .history = 1000,
        .snapshot_every = 1000,
        .cache_bytes = cache_mb << 20,
        .master = {.ids = STATE_IDS_HASH},
        .initial_document = doc,
        .changelog = changelog,
    };
    state_store_t *s = state_store_open(&conf, errstr, sizeof(errstr));
    if (!s) {
        fprintf(stderr, "bench_store: %s\n", errstr);
        exit(1);
    }
    return s;
}

/* A handler over s, configured as both runs use it. */
static processor_handler_t *handler_over(state_store_t *s)
{
    processor_handler_conf_t conf = {.store = s,
                                     .master = {.ids = STATE_IDS_HASH},
                                     .history = 1000,
                                     .limits = codec_limits_default};
    return processor_handler_new(&conf);
}

static void commit(processor_handler_t *h, int64_t offset)
{
    char errstr[512];
    if (processor_handler_commit(h, offset, errstr, sizeof(errstr))) {
        fprintf(stderr, "bench_store: %s\n", errstr);
        exit(1);
    }
}

static void handle(processor_handler_t *h, const char *model, msgpack_sbuffer *sb,
                   processor_output_t *out)
{
    processor_output_reset(out);
    processor_handler_handle(h, -1, -1, model, strlen(model), sb->data, sb->size, out);
    if (out->error) {
        fprintf(stderr, "bench_store: a flush got an error reply (%s)\n",
                codec_err_name(out->error));
        exit(1);
    }
}

/* Flushes per second against one model of size_kb, editing 64 items in turn or (random)
 * any item. */
static double document_run(const char *base, size_t size_kb, int flushes, bool random)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/doc-%zukb%s", base, size_kb, random ? "-random" : "");
    codec_value_t *doc = document(size_kb);
    size_t items = codec_map_get(doc, "items", 5)->u.map.count;
    state_store_t *s = store_open(dir, 1024, doc, false);
    codec_value_destroy(doc);
    processor_handler_t *h = handler_over(s);
    processor_output_t out;
    processor_output_init(&out);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);

    /* Warm-up outside the clock: loading the model and its first snapshot, which is
     * written once 4 KB of history has been flushed onto the initial document
     * (SNAPSHOT_MIN_REWRITE_BYTES): WARM_UP flushes are over that. */
    enum { WARM_UP = 200 };
    unsigned spread = random ? (unsigned)items : (unsigned)(items < 64 ? items : 64);
    double t0 = 0;
    for (int i = 0; i < WARM_UP + flushes; i++) {
        if (i == WARM_UP)
            t0 = now();
        flush_record(&sb, (uint64_t)i, (uint64_t)i,
                     1 + (int)((unsigned)i * 7919u % spread));
        handle(h, "doc", &sb, &out);
        if (i % 100 == 99 || i == WARM_UP + flushes - 1)
            commit(h, i + 1);
    }
    double rate = flushes / (now() - t0);
    msgpack_sbuffer_destroy(&sb);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
    state_store_close(s);
    printf("{\"bench\":\"document%s\",\"document_kb\":%zu,\"items\":%zu,\"flushes\":%d,"
           "\"flushes_per_s\":%.0f}\n",
           random ? "_random_items" : "", size_kb, items, flushes, rate);
    fflush(stdout);
    return rate;
}

static long models_run(const char *base, int models, size_t cache_mb)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/models", base);
    long rss_before = proc_kb("VmRSS:");
    state_store_t *s = store_open(dir, cache_mb, NULL, false);
    processor_handler_t *h = handler_over(s);
    processor_output_t out;
    processor_output_init(&out);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    double t0 = now();
    char model[32];
    for (int i = 0; i < models; i++) {
        snprintf(model, sizeof(model), "model-%d", i);
        flush_start(&sb, &pk, "c", 1, 0, 1);
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "command");
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "action");
        pack_str(&pk, "create");
        pack_str(&pk, "props");
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "title");
        pack_str(&pk, "buy milk");
        pack_str(&pk, "done");
        msgpack_pack_false(&pk);
        pack_str(&pk, "createdId");
        pack_str(&pk, "1");
        handle(h, model, &sb, &out);
        if ((i + 1) % 1000 == 0 || i == models - 1)
            commit(h, i + 1);
    }
    double secs = now() - t0;
    long hwm = proc_kb("VmHWM:");
    size_t cached;
    size_t cache_bytes = state_store_cache_bytes(s, &cached);
    msgpack_sbuffer_destroy(&sb);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
    state_store_close(s);
    printf("{\"bench\":\"models\",\"models\":%d,\"cache_mb\":%zu,\"flushes_per_s\":%.0f,"
           "\"rss_before_kb\":%ld,\"peak_rss_kb\":%ld,\"cached_models\":%zu,"
           "\"cache_kb\":%zu}\n",
           models, cache_mb, models / secs, rss_before, hwm, cached, cache_bytes >> 10);
    return hwm;
}

/* A flush of client c-<model> as loadgen makes them: a create of item k<seq> (a
 * 40-byte title) and, once the model has 4 items, the delete of the oldest, so the
 * document stays small and its snapshot is rewritten every few flushes. */
static void step_flush(msgpack_sbuffer *sb, const char *client, uint64_t seq,
                       uint64_t from)
{
    msgpack_packer pk;
    flush_start(sb, &pk, client, seq, from, 2);
    char id[32];
    snprintf(id, sizeof(id), "k%" PRIu64, seq);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "command");
    msgpack_pack_map(&pk, 4);
    pack_str(&pk, "action");
    pack_str(&pk, "create");
    pack_str(&pk, "path");
    msgpack_pack_array(&pk, 1);
    pack_str(&pk, "items");
    pack_str(&pk, "parentDefault");
    msgpack_pack_map(&pk, 0);
    pack_str(&pk, "props");
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "title");
    pack_str(&pk, "water the plants, then review the list ok");
    pack_str(&pk, "createdId");
    pack_str(&pk, id);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "command");
    if (seq > 4) {
        snprintf(id, sizeof(id), "k%" PRIu64, seq - 4);
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "action");
        pack_str(&pk, "delete");
        pack_str(&pk, "path");
        msgpack_pack_array(&pk, 2);
        pack_str(&pk, "items");
        pack_str(&pk, id);
    } else {
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "action");
        pack_str(&pk, "update");
        pack_str(&pk, "props");
        msgpack_pack_map(&pk, 1);
        pack_str(&pk, "n");
        msgpack_pack_uint64(&pk, seq);
    }
}

/* Adds a reply or change record to the store's outbox as run_step.c does. */
static uint64_t step_outbox(state_store_t *s, const char *topic, const char *key,
                            size_t key_len, const msgpack_sbuffer *value)
{
    state_header_t hdr = {"flushout_settings", "ids=hash", 8};
    state_outbox_rec_t rec = {.topic = topic,
                              .partition = -1,
                              .key = key,
                              .key_len = key_len,
                              .value = value->data,
                              .value_len = value->size,
                              .headers = &hdr,
                              .header_count = 1};
    return state_store_outbox_add(s, &rec, NULL);
}

/* Steps shaped like run's at full load (see the top of the file). */
static void steps_run(const char *base, int steps, int per_step)
{
    enum { MODELS = 125 };
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/steps", base);
    state_store_t *s = store_open(dir, 256, NULL, true);
    processor_handler_conf_t conf = {.store = s,
                                     .master = {.ids = STATE_IDS_HASH},
                                     .history = 1000,
                                     .limits = codec_limits_default,
                                     .changes = true};
    processor_handler_t *h = processor_handler_new(&conf);
    processor_output_t out;
    processor_output_init(&out);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    uint64_t seq[MODELS] = {0};
    char model[32], client[32];
    double t0 = 0, cpu0 = 0;
    int64_t offset = 0;
    uint64_t outbox_id = 0;
    /* The first 20 steps load the models and grow the RocksDB memtable: warm-up. */
    for (int step = -20; step < steps; step++) {
        if (step == 0) {
            t0 = now();
            cpu0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
        }
        for (int i = 0; i < per_step; i++) {
            int mi = (int)((unsigned)(step + 20) * 7u + (unsigned)i) % MODELS;
            snprintf(model, sizeof(model), "model-%d", mi);
            snprintf(client, sizeof(client), "c-%d", mi);
            seq[mi]++;
            step_flush(&sb, client, seq[mi], 2 * (seq[mi] - 1));
            handle(h, model, &sb, &out);
            step_outbox(s, "flushout.replies", client, strlen(client), &out.reply);
            outbox_id =
                step_outbox(s, "flushout.changes", model, strlen(model), &out.change);
            offset++;
        }
        commit(h, offset);
        /* Delivered: the step's outbox key goes with the next commit, as in run. */
        state_store_outbox_done(s, outbox_id, outbox_id);
    }
    double secs = now() - t0, cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    msgpack_sbuffer_destroy(&sb);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
    state_store_close(s);
    /* CPU time too (RocksDB's flush threads included): the wall clock follows
     * whatever else the machine runs. */
    printf("{\"bench\":\"steps\",\"steps\":%d,\"flushes_per_step\":%d,"
           "\"models\":%d,\"flushes_per_s\":%.0f,\"us_per_flush\":%.2f,"
           "\"cpu_us_per_flush\":%.2f}\n",
           steps, per_step, MODELS, (double)steps * per_step / secs,
           secs * 1e6 / ((double)steps * per_step),
           cpu * 1e6 / ((double)steps * per_step));
}

int main(int argc, char **argv)
{
    const char *base = NULL, *sizes = "1,100,1024,10240";
    int flushes = 20000, models = 0, steps = 0, per_step = 500;
    size_t cache_mb = 256;
    double min_ratio = 0.8;
    long overhead_mb = 150;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--flushes") && i + 1 < argc)
            flushes = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sizes-kb") && i + 1 < argc)
            sizes = argv[++i];
        else if (!strcmp(argv[i], "--models") && i + 1 < argc)
            models = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cache-mb") && i + 1 < argc)
            cache_mb = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--min-ratio") && i + 1 < argc)
            min_ratio = atof(argv[++i]);
        else if (!strcmp(argv[i], "--overhead-mb") && i + 1 < argc)
            overhead_mb = atol(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc)
            steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--per-step") && i + 1 < argc &&
                 (per_step = atoi(argv[i + 1])) > 0)
            i++;
        else if (argv[i][0] != '-' && !base)
            base = argv[i];
        else {
            fprintf(stderr, "usage: bench_store DIR [--flushes N] [--sizes-kb LIST] "
                            "[--models N] [--cache-mb C] [--min-ratio R] "
                            "[--overhead-mb M] [--steps N] [--per-step N]\n");
            return 2;
        }
    }
    if (!base)
        return fprintf(stderr, "bench_store: DIR is required\n"), 2;

    double first = 0, last = 0;
    for (const char *p = sizes; *p;) {
        size_t kb = (size_t)strtoul(p, (char **)&p, 10);
        double rate = document_run(base, kb, flushes, false);
        document_run(base, kb, flushes, true);
        if (first == 0)
            first = rate;
        last = rate;
        if (*p == ',')
            p++;
    }
    if (steps > 0)
        steps_run(base, steps, per_step);
    int rc = 0;
    if (first > 0) {
        printf("{\"bench\":\"document_ratio\",\"largest_over_smallest\":%.2f,"
               "\"target\":%.2f}\n",
               last / first, min_ratio);
        if (last / first < min_ratio)
            rc = 3;
    }
    if (models > 0) {
        long peak_kb = models_run(base, models, cache_mb);
        long limit_kb = ((long)cache_mb + overhead_mb) << 10;
        printf("{\"bench\":\"models_rss\",\"peak_rss_kb\":%ld,\"limit_kb\":%ld}\n",
               peak_kb, limit_kb);
        if (peak_kb > limit_kb)
            rc = rc ? rc : 4;
    }
    return rc;
}
