/* tests/processor/test_apply.c - `flushout-processor apply`: NDJSON in, one reply per
 * request out, options from the table. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "processor/cmd_apply.h"
#include "processor/cmd_inspect.h"
#include "processor/handler.h"
#include "processor/options.h"

static char state_dir[] = "/tmp/flushout-test-apply-XXXXXX";
static processor_config_t cfg;

static void setup(void)
{
    cr_assert_not_null(mkdtemp(state_dir));
}

static void teardown(void)
{
    processor_config_clear(&cfg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", state_dir);
    cr_assert_eq(system(cmd), 0);
    strcpy(state_dir, "/tmp/flushout-test-apply-XXXXXX");
}

TestSuite(processor_apply, .init = setup, .fini = teardown);

/* Loads apply's configuration with up to two more options (flag NULL: none). */
static void load_with(const char *flag, const char *value, const char *flag2,
                      const char *value2)
{
    char *argv[] = {"--state-dir", state_dir,     "--ids",       "sequential",
                    (char *)flag,  (char *)value, (char *)flag2, (char *)value2};
    char errstr[256];
    int argc = flag2 ? 8 : flag ? 6 : 4;
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", argc, argv,
                                       errstr, sizeof(errstr)),
                 0, "%s", errstr);
}

static void load(const char *extra_flag, const char *extra_value)
{
    load_with(extra_flag, extra_value, NULL, NULL);
}

/* Runs apply over input and returns its output (caller frees). */
static char *run(const char *input)
{
    FILE *in = fmemopen((void *)input, strlen(input), "r");
    char *output = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&output, &size);
    cr_assert_eq(processor_cmd_apply(&cfg, in, out), 0);
    fclose(in);
    fclose(out);
    return output;
}

/* The n-th line of text (0-based), as a value. */
static codec_value_t *line(const char *text, int n)
{
    for (int i = 0; i < n; i++) {
        text = strchr(text, '\n');
        cr_assert_not_null(text, "fewer than %d lines", n + 1);
        text++;
    }
    const char *end = strchr(text, '\n');
    cr_assert_not_null(end);
    codec_value_t *v;
    char errstr[256];
    cr_assert_eq(
        codec_json_decode(text, (size_t)(end - text), NULL, &v, errstr, sizeof(errstr)),
        CODEC_OK, "%s", errstr);
    return v;
}

static int count_lines(const char *text)
{
    int n = 0;
    for (; *text; text++)
        n += *text == '\n';
    return n;
}

static void expect_line(const char *output, int n, const char *expected_json)
{
    codec_value_t *got = line(output, n);
    codec_value_t *expected;
    char errstr[256];
    cr_assert_eq(codec_json_decode(expected_json, strlen(expected_json), NULL, &expected,
                                   errstr, sizeof(errstr)),
                 CODEC_OK);
    char *got_json = codec_json_encode(got, NULL);
    cr_assert(codec_value_equal(got, expected), "line %d: expected %s\n got %s", n,
              expected_json, got_json);
    free(got_json);
    codec_value_destroy(got);
    codec_value_destroy(expected);
}

static const char *error_code(const codec_value_t *reply)
{
    const codec_value_t *type = codec_map_get(reply, "type", 4);
    cr_assert_str_eq(type->u.str.ptr, "error");
    return codec_map_get(codec_map_get(reply, "error", 5), "code", 4)->u.str.ptr;
}

Test(processor_apply, answers_every_request_in_order_and_keeps_going_after_bad_lines)
{
    load(NULL, NULL);
    char *out = run(
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"c\",\"seq\":1,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}\n"
        "this is not json\n"
        "\n"
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"c\",\"seq\":2,\"from\":1,"
        "\"completions\":[{\"command\":{\"action\":\"smash\"}}]}\n"
        "{\"type\":\"flush\",\"client\":\"c\",\"seq\":3,\"from\":0,\"completions\":[]}\n"
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"c\",\"seq\":4}\n"
        "{\"type\":\"snapshot\",\"model\":\"b\",\"client\":\"c\",\"seq\":5}\n");
    cr_assert_eq(count_lines(out), 6, "one reply per request, blank lines skipped:\n%s",
                 out);
    expect_line(
        out, 0,
        "{\"type\":\"flushResult\",\"model\":\"a\",\"client\":\"c\",\"seq\":1,"
        "\"applied\":{\"from\":0,\"completions\":[{\"command\":{\"action\":\"create\"},"
        "\"createdId\":\"1\"}]}}");
    codec_value_t *v = line(out, 1);
    cr_assert_str_eq(error_code(v), "invalid_json");
    codec_value_destroy(v);
    v = line(out, 2);
    cr_assert_str_eq(error_code(v), "unknown_action");
    cr_assert_str_eq(codec_map_get(v, "client", 6)->u.str.ptr, "c");
    cr_assert_eq(codec_map_get(v, "seq", 3)->u.i, 2);
    codec_value_destroy(v);
    v = line(out, 3);
    cr_assert_str_eq(error_code(v), "missing_field");
    codec_value_destroy(v);
    expect_line(out, 4,
                "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"c\",\"seq\":4,"
                "\"snapshot\":{\"commandCount\":1,\"document\":{\"1\":{}}}}");
    expect_line(out, 5,
                "{\"type\":\"snapshot\",\"model\":\"b\",\"client\":\"c\",\"seq\":5,"
                "\"snapshot\":{\"commandCount\":0,\"document\":{}}}");
    free(out);
}

Test(processor_apply, serves_history_within_what_is_kept)
{
    load("--history", "2");
    char *out = run(
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"c\",\"seq\":1,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"x\"},"
        "{\"command\":{\"action\":\"update\",\"path\":[\"x\"],\"props\":{\"n\":1}}},"
        "{\"command\":{\"action\":\"detete\",\"path\":[\"x\"]}}]}\n"
        "{\"type\":\"history\",\"model\":\"a\",\"client\":\"c\",\"seq\":2,\"from\":1,"
        "\"to\":2}\n"
        "{\"type\":\"history\",\"model\":\"a\",\"client\":\"c\",\"seq\":3,\"from\":0}\n"
        "{\"type\":\"history\",\"model\":\"a\",\"client\":\"c\",\"seq\":4,\"from\":2,"
        "\"to\":9}\n");
    expect_line(
        out, 1,
        "{\"type\":\"history\",\"model\":\"a\",\"client\":\"c\",\"seq\":2,\"from\":1,"
        "\"completions\":[{\"command\":{\"action\":\"update\",\"path\":[\"x\"],"
        "\"props\":{\"n\":1}}}]}");
    codec_value_t *v = line(out, 2);
    cr_assert_str_eq(error_code(v), "history_unavailable");
    codec_value_destroy(v);
    v = line(out, 3);
    cr_assert_str_eq(error_code(v), "bad_range");
    codec_value_destroy(v);
    free(out);
}

Test(processor_apply, answers_snapshot_requests_at_earlier_versions)
{
    /* A tiny document rewritten after every flush (--snapshot-every 1: its history
     * since is over an eighth of it), so a past snapshot is kept at every version;
     * with --history 2 the last rewrite (at LAST) keeps the one at LAST - 2 and nothing
     * older. The history before it goes too: LAST commands fill more than two history
     * keys of 64 commands, and a trim keeps only the key holding the oldest command
     * kept. (Without --snapshot-every, a document this small waits for 16 KB of
     * history.) */
    enum { LAST = 150 };
    /* The versions asked for by seq 1-5: kept, kept, the latest, trimmed, beyond. */
    const int at[] = {LAST - 1, LAST - 2, LAST, LAST - 3, LAST + 1};
    load_with("--history", "2", "--snapshot-every", "1");
    static char input[32768];
    int off = snprintf(input, sizeof(input),
                       "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"c\",\"seq\":1,"
                       "\"from\":0,\"completions\":[{\"command\":{\"action\":\"create\"},"
                       "\"createdId\":\"x\"}]}\n");
    for (int k = 2; k <= LAST; k++)
        off +=
            snprintf(input + off, sizeof(input) - (size_t)off,
                     "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"c\",\"seq\":%d,"
                     "\"from\":%d,\"completions\":[{\"command\":{\"action\":\"update\","
                     "\"path\":[\"x\"],\"props\":{\"n\":%d}}}]}\n",
                     k, k - 1, k);
    snprintf(
        input + off, sizeof(input) - (size_t)off,
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"r\",\"seq\":1,\"at\":%d}\n"
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"r\",\"seq\":2,\"at\":%d}\n"
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"r\",\"seq\":3,\"at\":%d}\n"
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"r\",\"seq\":4,\"at\":%d}\n"
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"r\",\"seq\":5,\"at\":%d}\n"
        "{\"type\":\"snapshot\",\"model\":\"b\",\"client\":\"r\",\"seq\":6,\"at\":0}\n"
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"r\",\"seq\":7,\"at\":\"2\"}"
        "\n",
        at[0], at[1], at[2], at[3], at[4]);
    char *out = run(input);
    cr_assert_eq(count_lines(out), LAST + 7);
    char want[512];
    for (int seq = 1; seq <= 3; seq++) {
        snprintf(want, sizeof(want),
                 "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"r\",\"seq\":%d,"
                 "\"snapshot\":{\"commandCount\":%d,\"document\":{\"x\":{\"n\":%d}}}}",
                 seq, at[seq - 1], at[seq - 1]);
        expect_line(out, LAST - 1 + seq, want);
    }
    snprintf(want, sizeof(want),
             "{\"type\":\"error\",\"model\":\"a\",\"client\":\"r\",\"seq\":4,"
             "\"error\":{\"code\":\"history_unavailable\",\"message\":\"version %d is "
             "older than the history kept: the oldest version available is "
             "%d\",\"oldest\":%d}}",
             at[3], LAST - 2, LAST - 2);
    expect_line(out, LAST + 3, want);
    snprintf(want, sizeof(want),
             "{\"type\":\"error\",\"model\":\"a\",\"client\":\"r\",\"seq\":5,"
             "\"error\":{\"code\":\"bad_range\",\"message\":\"version %d is beyond "
             "the model's %d commands\"}}",
             at[4], LAST);
    expect_line(out, LAST + 4, want);
    expect_line(out, LAST + 5,
                "{\"type\":\"snapshot\",\"model\":\"b\",\"client\":\"r\",\"seq\":6,"
                "\"snapshot\":{\"commandCount\":0,\"document\":{}}}");
    codec_value_t *v = line(out, LAST + 6);
    cr_assert_str_eq(error_code(v), "wrong_type");
    codec_value_destroy(v);
    free(out);
}

Test(processor_apply, new_models_start_from_the_initial_document)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/initial.json", state_dir);
    FILE *fp = fopen(path, "w");
    fputs("{\"todos\":{},\"title\":\"list\"}", fp);
    fclose(fp);
    load("--initial-document", path);
    char *out =
        run("{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"c\",\"seq\":1}\n");
    expect_line(out, 0,
                "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"c\",\"seq\":1,"
                "\"snapshot\":{\"commandCount\":0,\"document\":{\"todos\":{},\"title\":"
                "\"list\"}}}");
    free(out);
}

Test(processor_apply, options_come_from_the_table_with_clear_errors)
{
    char errstr[256];
    char *bad_enum[] = {"--state-dir", "x", "--ids", "random"};
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", 4, bad_enum,
                                       errstr, sizeof(errstr)),
                 -1);
    cr_assert(strstr(errstr, "hash|sequential"), "%s", errstr);
    processor_config_clear(&cfg);

    char *missing[] = {"--history", "3"};
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", 2, missing,
                                       errstr, sizeof(errstr)),
                 -1);
    cr_assert(strstr(errstr, "--state-dir is required"), "%s", errstr);
    processor_config_clear(&cfg);

    char *negative[] = {"--state-dir", "x", "--history=-1"};
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", 3, negative,
                                       errstr, sizeof(errstr)),
                 -1);
    processor_config_clear(&cfg);

    setenv("FLUSHOUT_HISTORY", "7", 1);
    char *ok[] = {"--state-dir=x"};
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", 1, ok, errstr,
                                       sizeof(errstr)),
                 0, "%s", errstr);
    unsetenv("FLUSHOUT_HISTORY");
    cr_assert_eq(cfg.history, 7);
    cr_assert_str_eq(cfg.ids, "hash");
}

Test(processor_apply, a_second_run_continues_and_recognises_retries)
{
    load(NULL, NULL);
    const char *flushes =
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"alice\",\"seq\":1,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}\n"
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"bob\",\"seq\":7,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}\n";
    char *out = run(flushes);
    free(out);

    /* A new process on the same directory: bob's reply was lost and he retries. */
    out = run(
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"bob\",\"seq\":7,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}\n"
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"bob\",\"seq\":6,\"from\":0,"
        "\"completions\":[]}\n"
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"bob\",\"seq\":8}\n");
    expect_line(out, 0,
                "{\"type\":\"flushResult\",\"model\":\"a\",\"client\":\"bob\",\"seq\":7,"
                "\"duplicate\":true,\"applied\":{\"from\":2,\"completions\":[]},"
                "\"sync\":{\"isPartial\":true,\"diff\":{\"from\":0,\"completions\":["
                "{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"},"
                "{\"command\":{\"action\":\"create\"},\"createdId\":\"3\"}]},"
                "\"mappedPaths\":{\"1\":[\"3\"]}}}");
    codec_value_t *v = line(out, 1);
    cr_assert_str_eq(error_code(v), "stale_seq");
    codec_value_destroy(v);
    expect_line(out, 2,
                "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"bob\",\"seq\":8,"
                "\"snapshot\":{\"commandCount\":2,\"document\":{\"1\":{},\"3\":{}}}}");
    free(out);
}

/* Runs inspect with the current cfg and returns its output (caller frees). */
static char *inspect(void)
{
    char *text = NULL;
    size_t size;
    FILE *fp = open_memstream(&text, &size);
    cr_assert_eq(processor_cmd_inspect(&cfg, fp), 0);
    fclose(fp);
    return text;
}

static int64_t int_field(const codec_value_t *v, const char *name)
{
    const codec_value_t *f = codec_map_get(v, name, strlen(name));
    cr_assert_not_null(f, "no field %s", name);
    cr_assert_eq(f->type, CODEC_VALUE_INT, "%s is not an integer", name);
    return f->u.i;
}

Test(processor_apply, inspect_lists_and_prints_what_apply_stored)
{
    load(NULL, NULL);
    char *out = run(
        "{\"type\":\"flush\",\"model\":\"m1\",\"client\":\"c\",\"seq\":1,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":{\"t\":\"x\"}},"
        "\"createdId\":\"1\"},{\"command\":{\"action\":\"update\",\"path\":[\"1\"],"
        "\"props\":{\"t\":\"y\"}}}]}\n");
    free(out);

    char *listing = inspect();
    cr_assert_eq(count_lines(listing), 2, "%s", listing);
    codec_value_t *partition = line(listing, 0);
    cr_assert_eq(int_field(partition, "partition"), 0);
    cr_assert_eq(int_field(partition, "models"), 1);
    cr_assert_gt(int_field(partition, "storedBytes"), 0);
    codec_value_t *model = line(listing, 1);
    cr_assert_str_eq(codec_map_get(model, "model", 5)->u.str.ptr, "m1");
    cr_assert_eq(int_field(model, "commandCount"), 2);
    cr_assert_eq(int_field(model, "clients"), 1);
    codec_value_destroy(partition);
    codec_value_destroy(model);
    free(listing);

    cfg.model = strdup("m1");
    char *snapshot = inspect();
    expect_line(
        snapshot, 0,
        "{\"partition\":0,\"model\":\"m1\",\"commandCount\":2,\"document\":{\"1\":{"
        "\"t\":\"y\"}}}");
    free(snapshot);
    free(cfg.model);
    cfg.model = NULL;

    cfg.history_of = strdup("m1");
    char *history = inspect();
    cr_assert_eq(count_lines(history), 2, "%s", history);
    expect_line(
        history, 1,
        "{\"partition\":0,\"model\":\"m1\",\"count\":1,\"completion\":{\"command\":{"
        "\"action\":\"update\",\"path\":[\"1\"],\"props\":{\"t\":\"y\"}}}}");
    free(history);
}

Test(processor_apply, a_document_stops_growing_at_its_limit_but_can_shrink)
{
    load("--max-document-bytes", "1100");
    /* Each flush creates an item of ~400 bytes: two fit, the third could not. */
    char input[4096] = "";
    size_t off = 0;
    for (int i = 0; i < 3; i++)
        off += (size_t)snprintf(
            input + off, sizeof(input) - off,
            "{\"type\":\"flush\",\"model\":\"m\",\"client\":\"c\",\"seq\":%d,"
            "\"from\":%d,\"completions\":[{\"command\":{\"action\":"
            "\"create\",\"props\":{\"text\":\"%0400d\"}},\"createdId\":"
            "\"i%d\"}]}\n",
            i + 1, i, i, i);
    snprintf(
        input + off, sizeof(input) - off,
        "{\"type\":\"flush\",\"model\":\"m\",\"client\":\"c\",\"seq\":4,\"from\":2,"
        "\"completions\":[{\"command\":{\"action\":\"detete\",\"path\":[\"i0\"]}}]}\n");
    char *out = run(input);
    codec_value_t *third = line(out, 2);
    cr_assert_str_eq(error_code(third), "too_large");
    codec_value_destroy(third);
    codec_value_t *shrink = line(out, 3);
    cr_assert_str_eq(codec_map_get(shrink, "type", 4)->u.str.ptr, "flushResult",
                     "a delete passes when the document is full");
    codec_value_destroy(shrink);
    free(out);
}

/* ---- determinism: the same requests give the same replies and the same stored state
 * whatever the cache did (the handoff of a partition relies on it) ---- */

typedef enum cache_mode_e {
    CACHED,   /* one store, a cache that holds everything */
    RELOADED, /* a cache of 1 byte: every model is evicted after every step */
    REOPENED, /* RELOADED, and the store closed and reopened now and then */
    ONE_STEP, /* cached, and every request in one step (a single commit at the end) */
} cache_mode_t;

typedef struct replay_s {
    char dir[64];
    state_store_conf_t conf;
    state_store_t *store;
    processor_handler_t *h;
    msgpack_sbuffer replies; /* every reply, each preceded by its length */
    int too_large;           /* too_large refusals */
} replay_t;

/* The store and handler settings: the processor's defaults (processor/options.c),
 * then what a test lowers. */
typedef struct limits_s {
    uint64_t history, snapshot_every, clients_per_model, max_document_bytes;
} limits_t;

static const limits_t default_limits = {1000, 1000, 1000, 67108864};

static void replay_open(replay_t *r, cache_mode_t mode, const limits_t *l)
{
    r->conf = (state_store_conf_t){
        .dir = r->dir,
        .history = l->history,
        .snapshot_every = l->snapshot_every,
        .cache_bytes = mode == RELOADED || mode == REOPENED ? 1 : 256u << 20,
        .clients_per_model = l->clients_per_model,
        .master = {.ids = STATE_IDS_HASH},
    };
    char errstr[256];
    r->store = state_store_open(&r->conf, errstr, sizeof(errstr));
    cr_assert_not_null(r->store, "%s", errstr);
    processor_handler_conf_t hc = {
        .store = r->store,
        .master = r->conf.master,
        .history = l->history,
        .limits = codec_limits_default,
        .max_document_bytes = l->max_document_bytes,
        .changes = true,
        .snapshot_every = 1000,
    };
    r->h = processor_handler_new(&hc);
}

static void replay_close(replay_t *r)
{
    processor_handler_destroy(r->h);
    state_store_close(r->store);
    r->h = NULL;
    r->store = NULL;
}

/* A request given as JSON, as msgpack (caller destroys). */
static void pack_json(msgpack_sbuffer *sb, const char *json)
{
    codec_value_t *v;
    char errstr[256];
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr)),
                 CODEC_OK, "%s: %s", errstr, json);
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);
}

typedef struct request_s {
    const char *model;
    msgpack_sbuffer value;
} request_t;

/* Every request through a fresh store in mode, one step each (ONE_STEP: one in all);
 * the replies are kept in r, the store is left open. */
static void replay_run(replay_t *r, cache_mode_t mode, const limits_t *l,
                       const request_t *reqs, size_t n)
{
    snprintf(r->dir, sizeof(r->dir), "%s/run-%d", state_dir, (int)mode);
    replay_open(r, mode, l);
    msgpack_sbuffer_init(&r->replies);
    r->too_large = 0;
    processor_output_t out;
    processor_output_init(&out);
    char errstr[256];
    for (size_t i = 0; i < n; i++) {
        if (mode == REOPENED && i % (n / 40 + 7) == 6) {
            replay_close(r);
            replay_open(r, mode, l);
        }
        processor_output_reset(&out);
        processor_handler_handle(r->h, (int64_t)i, -1, reqs[i].model,
                                 strlen(reqs[i].model), reqs[i].value.data,
                                 reqs[i].value.size, &out);
        uint32_t len = (uint32_t)out.reply.size;
        msgpack_sbuffer_write(&r->replies, (const char *)&len, sizeof(len));
        msgpack_sbuffer_write(&r->replies, out.reply.data, out.reply.size);
        r->too_large += out.error == CODEC_ERR_TOO_LARGE;
        if (mode != ONE_STEP || i + 1 == n)
            cr_assert_eq(
                processor_handler_commit(r->h, (int64_t)i + 1, errstr, sizeof(errstr)), 0,
                "%s", errstr);
    }
    processor_output_destroy(&out);
}

static int dump_item(void *opaque, const state_store_item_t *item)
{
    FILE *fp = opaque;
    fprintf(fp, "%c %d %.*s %llu %.*s =", item->kind, item->partition,
            (int)item->model_len, item->model ? item->model : "",
            (unsigned long long)item->count, (int)item->client_len,
            item->client ? item->client : "");
    for (size_t i = 0; i < item->value_len; i++)
        fprintf(fp, "%02x", (unsigned char)item->value[i]);
    fputc('\n', fp);
    return 0;
}

/* Everything stored, one line per record (caller frees). */
static char *dump_store(state_store_t *store)
{
    char *text = NULL, errstr[256];
    size_t size;
    FILE *fp = open_memstream(&text, &size);
    cr_assert_eq(state_store_scan(store, dump_item, fp, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
    fclose(fp);
    return text;
}

static int count_kind(const char *dump, char kind)
{
    int n = 0;
    for (const char *p = dump; *p; p = strchr(p, '\n') + 1)
        n += *p == kind;
    return n;
}

/* The first line where a and b differ, for the failure message. */
static const char *first_difference(const char *a, const char *b)
{
    const char *line = a;
    for (; *a && *a == *b; a++, b++)
        if (*a == '\n')
            line = a + 1;
    return line;
}

/* Runs reqs in every mode: replies and stored state must equal CACHED's byte for byte.
 * @returns CACHED's dump (caller frees) and, in *too_large, its too_large refusals. */
static char *expect_same_whatever_the_cache(const limits_t *l, const request_t *reqs,
                                            size_t n, int *too_large)
{
    replay_t base;
    replay_run(&base, CACHED, l, reqs, n);
    char *expected = dump_store(base.store);
    *too_large = base.too_large;
    const char *names[] = {"cached", "reloaded", "reopened", "one step"};
    for (cache_mode_t mode = RELOADED; mode <= ONE_STEP; mode++) {
        replay_t r;
        replay_run(&r, mode, l, reqs, n);
        cr_assert_eq(r.too_large, base.too_large, "%s: %d too_large refusals, cached: %d",
                     names[mode], r.too_large, base.too_large);
        cr_assert(r.replies.size == base.replies.size &&
                      !memcmp(r.replies.data, base.replies.data, r.replies.size),
                  "%s: the replies differ from the cached model's", names[mode]);
        char *got = dump_store(r.store);
        cr_assert_str_eq(got, expected, "%s: the stored state differs, first at\n%.300s",
                         names[mode], first_difference(got, expected));
        free(got);
        msgpack_sbuffer_destroy(&r.replies);
        replay_close(&r);
    }
    msgpack_sbuffer_destroy(&base.replies);
    replay_close(&base);
    return expected;
}

static void free_requests(request_t *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        msgpack_sbuffer_destroy(&reqs[i].value);
    free(reqs);
}

/* n flushes of one client, each creating an item whose text has text_bytes bytes. */
static request_t *growing_flushes(size_t n, size_t text_bytes)
{
    request_t *reqs = calloc(n, sizeof(*reqs));
    char *text = malloc(text_bytes + 1);
    memset(text, 'x', text_bytes);
    text[text_bytes] = '\0';
    char *json = malloc(text_bytes + 256);
    for (size_t i = 0; i < n; i++) {
        sprintf(json,
                "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%zu,\"from\":0,"
                "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":"
                "{\"text\":\"%s\"}},\"createdId\":\"i%zu\"}]}",
                i + 1, text, i);
        reqs[i].model = "m";
        pack_json(&reqs[i].value, json);
    }
    free(json);
    free(text);
    return reqs;
}

Test(processor_apply, the_document_limit_does_not_depend_on_the_cache)
{
    /* Issue 13, finding 5: 14 flushes with --max-document-bytes 20000 were refused
     * 12 times in one process and never when the model was reloaded in between. */
    limits_t l = default_limits;
    l.max_document_bytes = 20000;
    request_t *reqs = growing_flushes(14, 3000);
    int too_large;
    free(expect_same_whatever_the_cache(&l, reqs, 14, &too_large));
    cr_assert_eq(too_large, 8, "six flushes of 3 KB fit in 20000 bytes: %d refused",
                 too_large);
    free_requests(reqs, 14);

    /* The defaults: nothing is refused, and the store is the same. */
    reqs = growing_flushes(60, 3000);
    free(expect_same_whatever_the_cache(&default_limits, reqs, 60, &too_large));
    cr_assert_eq(too_large, 0);
    free_requests(reqs, 60);
}

/* n one-command flushes from one client, each creating a small item: the document
 * grows, so each flush's history is much smaller than the snapshot. */
static request_t *small_flushes(size_t n)
{
    request_t *reqs = calloc(n, sizeof(*reqs));
    for (size_t i = 0; i < n; i++) {
        char json[256];
        snprintf(json, sizeof(json),
                 "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%zu,\"from\":%zu,"
                 "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":"
                 "{\"n\":%zu}},\"createdId\":\"i%zu\"}]}",
                 i + 1, i, i, i);
        reqs[i].model = "m";
        pack_json(&reqs[i].value, json);
    }
    return reqs;
}

Test(processor_apply, snapshots_and_trimming_do_not_depend_on_the_cache)
{
    /* Issue 13, finding 5: with --history 10, 401 flushes left 128 history entries
     * in a cached model, but every one of the 401 was kept (and replayed on each
     * load) when the model was reloaded between requests. */
    limits_t l = default_limits;
    l.history = 10;
    request_t *reqs = small_flushes(401);
    int too_large;
    char *dump = expect_same_whatever_the_cache(&l, reqs, 401, &too_large);
    cr_assert_lt(count_kind(dump, 'h'), 150, "old history is trimmed:\n%s", dump);
    free(dump);
    free_requests(reqs, 401);

    /* The defaults (1000 commands of history, a rewrite at most every 1000). */
    reqs = small_flushes(1200);
    dump = expect_same_whatever_the_cache(&default_limits, reqs, 1200, &too_large);
    cr_assert_lt(count_kind(dump, 'h'), 1200, "old history is trimmed");
    free(dump);
    free_requests(reqs, 1200);
}

/* n flushes of clients c0..c(clients-1) in a scrambled order, every third one empty
 * (nothing applied: clients of equal age), and, every 5th request, a retry of an
 * earlier flush (a duplicate if its client's record is kept, applied again if it
 * expired). */
static request_t *many_clients(size_t n, unsigned clients)
{
    request_t *reqs = calloc(n, sizeof(*reqs));
    uint64_t *seq = calloc(clients, sizeof(*seq));
    uint32_t rng = 7;
    for (size_t i = 0; i < n; i++) {
        rng = rng * 1103515245u + 12345u;
        unsigned c = (unsigned)(i < clients ? i : (rng >> 8) % clients);
        uint64_t s = i % 5 == 4 && seq[c] ? seq[c] : ++seq[c];
        char json[256];
        if (i % 3 == 1) /* nothing applied: clients of equal age */
            snprintf(json, sizeof(json),
                     "{\"type\":\"flush\",\"client\":\"c%u\",\"seq\":%llu,"
                     "\"from\":0,\"completions\":[]}",
                     c, (unsigned long long)s);
        else
            snprintf(json, sizeof(json),
                     "{\"type\":\"flush\",\"client\":\"c%u\",\"seq\":%llu,"
                     "\"from\":0,\"completions\":[{\"command\":{\"action\":"
                     "\"update\",\"props\":{\"c%u\":%llu}}}]}",
                     c, (unsigned long long)s, c, (unsigned long long)s);
        reqs[i].model = "m";
        pack_json(&reqs[i].value, json);
    }
    free(seq);
    return reqs;
}

Test(processor_apply, client_expiry_does_not_depend_on_the_cache)
{
    limits_t l = default_limits;
    l.clients_per_model = 4;
    request_t *reqs = many_clients(300, 30);
    int too_large;
    char *dump = expect_same_whatever_the_cache(&l, reqs, 300, &too_large);
    cr_assert_leq(count_kind(dump, 'c'), 4 + 4 / 8, "%s", dump);
    free(dump);
    free_requests(reqs, 300);

    /* The default 1000 client records per model, with 1300 clients. */
    reqs = many_clients(2000, 1300);
    dump = expect_same_whatever_the_cache(&default_limits, reqs, 2000, &too_large);
    int kept = count_kind(dump, 'c');
    cr_assert(kept >= 1000 && kept <= 1000 + 1000 / 8, "%d client records kept", kept);
    free(dump);
    free_requests(reqs, 2000);
}

Test(processor_apply, the_document_limit_counts_the_initial_document)
{
    /* A model with no snapshot yet starts from the initial document: the bound that
     * decides whether the exact size is computed must include it, or the limit would
     * be checked on some instances (one restored from a snapshot) and not others. */
    char *text = malloc(18001);
    memset(text, 'x', 18000);
    text[18000] = '\0';
    char *json = malloc(18100);
    snprintf(json, 18100, "{\"text\":\"%s\"}", text);
    codec_value_t *initial;
    char errstr[256];
    cr_assert_eq(
        codec_json_decode(json, strlen(json), NULL, &initial, errstr, sizeof(errstr)),
        CODEC_OK, "%s", errstr);
    free(json);
    free(text);
    char dir[64];
    snprintf(dir, sizeof(dir), "%s/initial", state_dir);
    state_store_conf_t conf = {.dir = dir,
                               .history = 1000,
                               .snapshot_every = 1000,
                               .cache_bytes = 1 << 20,
                               .clients_per_model = 1000,
                               .initial_document = initial};
    state_store_t *store = state_store_open(&conf, errstr, sizeof(errstr));
    cr_assert_not_null(store, "%s", errstr);
    processor_handler_conf_t hc = {.store = store,
                                   .history = 1000,
                                   .limits = codec_limits_default,
                                   .max_document_bytes = 20000,
                                   .initial_document = initial};
    processor_handler_t *h = processor_handler_new(&hc);
    request_t *reqs = growing_flushes(1, 3000);
    processor_output_t out;
    processor_output_init(&out);
    processor_handler_handle(h, 0, -1, "m", 1, reqs[0].value.data, reqs[0].value.size,
                             &out);
    cr_assert_eq(out.error, CODEC_ERR_TOO_LARGE, "%s", out.message);
    processor_output_destroy(&out);
    free_requests(reqs, 1);
    processor_handler_destroy(h);
    state_store_close(store);
    codec_value_destroy(initial);
}
