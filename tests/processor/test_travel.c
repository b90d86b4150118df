/* tests/processor/test_travel.c - time travel: a snapshot request with "at" is
 * answered with the document as it was at that version, rebuilt by the store from its
 * past snapshots and history (state/store_travel.c), whatever the cache, the steps and
 * the reopens did; older versions than kept are history_unavailable naming the oldest
 * one, later ones bad_range.
 *
 * The reference is independent of the store: the change record of every applied flush
 * (what was applied, command by command) replayed through an in-memory master, the
 * document recorded after each command. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "processor/handler.h"
#include <rocksdb/c.h>

static char state_dir[] = "/tmp/flushout-test-travel-XXXXXX";

static void setup(void)
{
    cr_assert_not_null(mkdtemp(state_dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", state_dir);
    cr_assert_eq(system(cmd), 0);
    strcpy(state_dir, "/tmp/flushout-test-travel-XXXXXX");
}

TestSuite(travel, .init = setup, .fini = teardown);

typedef enum mode_e {
    STEPS,    /* a large cache, a commit every 7 requests: travel into uncommitted ones */
    EVICTING, /* every model evicted after every commit (one per request) */
    REOPENED, /* a commit per request, the store reopened every 40 */
} mode_t_;

typedef struct travel_s {
    char dir[PATH_MAX];
    mode_t_ mode;
    state_store_conf_t conf;
    state_store_t *store;
    processor_handler_t *h;
    processor_output_t out;
    uint64_t requests, seq;
    /* The reference: the document after each command, packed. */
    state_master_t *ref;
    msgpack_sbuffer *docs;
    size_t docs_len, docs_cap;
    msgpack_zone *zone;
    uint64_t rng;
    uint64_t floor; /* the oldest version promised is no older than this (a restore) */
    bool small;     /* short texts and more deletes: a small document, many rewrites */
} travel_t;

static void record_doc(travel_t *t)
{
    if (t->docs_len == t->docs_cap)
        t->docs = realloc(t->docs, (t->docs_cap = t->docs_cap ? t->docs_cap * 2 : 64) *
                                       sizeof(*t->docs));
    msgpack_sbuffer *sb = &t->docs[t->docs_len++];
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, state_master_document(t->ref));
    cr_assert_eq(t->docs_len, state_master_command_count(t->ref) + 1);
}

static void store_open(travel_t *t)
{
    char errstr[256];
    t->store = state_store_open(&t->conf, errstr, sizeof(errstr));
    cr_assert_not_null(t->store, "%s", errstr);
    processor_handler_conf_t hc = {
        .store = t->store,
        .master = t->conf.master,
        .history = t->conf.history,
        .limits = codec_limits_default,
        .changes = true,
    };
    t->h = processor_handler_new(&hc);
}

static void store_close(travel_t *t)
{
    processor_handler_destroy(t->h);
    state_store_close(t->store);
    t->h = NULL;
    t->store = NULL;
}

static void travel_open(travel_t *t, const char *name, mode_t_ mode, uint64_t history,
                        uint64_t snapshot_every)
{
    memset(t, 0, sizeof(*t));
    snprintf(t->dir, sizeof(t->dir), "%s/%s", state_dir, name);
    t->mode = mode;
    t->conf = (state_store_conf_t){
        .dir = t->dir,
        .history = history,
        .snapshot_every = snapshot_every,
        .cache_bytes = mode == EVICTING ? 1 : 256u << 20,
        .clients_per_model = 1000,
        .master = {.ids = STATE_IDS_HASH},
    };
    store_open(t);
    processor_output_init(&t->out);
    t->ref = state_master_new("m", 1, 0, codec_value_map(0), &t->conf.master);
    t->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    t->rng = 0x9e3779b97f4a7c15ull;
    record_doc(t);
}

static void travel_close(travel_t *t)
{
    store_close(t);
    processor_output_destroy(&t->out);
    state_master_destroy(t->ref);
    for (size_t i = 0; i < t->docs_len; i++)
        msgpack_sbuffer_destroy(&t->docs[i]);
    free(t->docs);
    msgpack_zone_free(t->zone);
}

static void commit(travel_t *t)
{
    char errstr[256];
    cr_assert_eq(processor_handler_commit(t->h, -1, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
}

/* Ends a request as the mode does: commits, evicts, reopens. */
static void step(travel_t *t)
{
    t->requests++;
    if (t->mode == STEPS && t->requests % 7)
        return;
    commit(t);
    if (t->mode == REOPENED && t->requests % 40 == 0) {
        store_close(t);
        store_open(t);
    }
}

/* Handles one request given as JSON; @returns its reply, decoded (caller destroys). */
static codec_value_t *ask(travel_t *t, const char *json)
{
    codec_value_t *v;
    char errstr[256];
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr)),
                 CODEC_OK, "%s: %s", errstr, json);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);
    processor_output_reset(&t->out);
    processor_handler_handle(t->h, -1, -1, "m", 1, sb.data, sb.size, &t->out);
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(codec_msgpack_decode(t->out.reply.data, t->out.reply.size,
                                      &codec_limits_trusted, &v, errstr, sizeof(errstr)),
                 CODEC_OK, "%s", errstr);
    return v;
}

static const codec_value_t *field(const codec_value_t *map, const char *name)
{
    const codec_value_t *v = codec_map_get(map, name, strlen(name));
    cr_assert_not_null(v, "no %s", name);
    return v;
}

static const char *error_code(const codec_value_t *reply)
{
    return field(field(reply, "error"), "code")->u.str.ptr;
}

static uint64_t next_rand(travel_t *t)
{
    t->rng ^= t->rng << 13;
    t->rng ^= t->rng >> 7;
    t->rng ^= t->rng << 17;
    return t->rng;
}

/* Replays the applied completions of the last change record onto the reference. */
static void follow_change(travel_t *t)
{
    if (!t->out.change.size)
        return;
    codec_value_t *rec;
    char errstr[256];
    cr_assert_eq(codec_msgpack_decode(t->out.change.data, t->out.change.size,
                                      &codec_limits_trusted, &rec, errstr,
                                      sizeof(errstr)),
                 CODEC_OK);
    const codec_value_t *applied = field(rec, "applied");
    cr_assert_eq((uint64_t)field(applied, "from")->u.i,
                 state_master_command_count(t->ref));
    const codec_value_t *list = field(applied, "completions");
    for (uint32_t i = 0; i < list->u.array.len; i++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        codec_msgpack_pack_value(&pk, list->u.array.items[i]);
        codec_completion_t c;
        cr_assert_eq(codec_completion_decode(sb.data, sb.size, t->zone, &c, errstr,
                                             sizeof(errstr)),
                     CODEC_OK, "%s", errstr);
        cr_assert_eq(state_master_replay(t->ref, &c, errstr, sizeof(errstr)), 0, "%s",
                     errstr);
        msgpack_zone_clear(t->zone);
        msgpack_sbuffer_destroy(&sb);
        record_doc(t);
    }
    codec_value_destroy(rec);
}

/* A flush of 1 to 3 commands: creates of items with text of random length (so that
 * both snapshot rewrite rules come into play), updates and deletes of earlier ones
 * (some of them gone: those commands fail and are not applied). */
static void flush_random(travel_t *t)
{
    char json[4096];
    uint64_t count = state_master_command_count(t->ref);
    t->seq++;
    int off = snprintf(json, sizeof(json),
                       "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%llu,\"from\":%llu,"
                       "\"completions\":[",
                       (unsigned long long)t->seq, (unsigned long long)count);
    int n = 1 + (int)(next_rand(t) % 3);
    for (int i = 0; i < n; i++) {
        uint64_t r = next_rand(t);
        uint64_t target = t->seq > 1 ? 1 + (r >> 8) % (t->seq - 1) : 1;
        const char *sep = i ? "," : "";
        if (r % 5 < (t->small ? 2u : 3u)) {
            int text = (int)((r >> 20) % (t->small ? 8 : 120));
            off +=
                snprintf(json + off, sizeof(json) - (size_t)off,
                         "%s{\"command\":{\"action\":\"create\",\"props\":{\"n\":%llu,"
                         "\"text\":\"%.*s\"}},\"createdId\":\"i%llu_%d\"}",
                         sep, (unsigned long long)r % 1000, text,
                         "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghij"
                         "klmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrs",
                         (unsigned long long)t->seq, i);
        } else if (r % 5 == (t->small ? 2u : 3u)) {
            off +=
                snprintf(json + off, sizeof(json) - (size_t)off,
                         "%s{\"command\":{\"action\":\"update\",\"path\":[\"i%llu_0\"],"
                         "\"props\":{\"n\":%llu}}}",
                         sep, (unsigned long long)target, (unsigned long long)r % 77);
        } else {
            off +=
                snprintf(json + off, sizeof(json) - (size_t)off,
                         "%s{\"command\":{\"action\":\"detete\",\"path\":[\"i%llu_0\"]}}",
                         sep, (unsigned long long)target);
        }
    }
    snprintf(json + off, sizeof(json) - (size_t)off, "]}");
    codec_value_t *reply = ask(t, json);
    cr_assert_str_eq(field(reply, "type")->u.str.ptr, "flushResult");
    codec_value_destroy(reply);
    follow_change(t);
    step(t);
}

/* Asks for version at. @returns the oldest version available when the answer is
 * history_unavailable, else 0 (the answer then is the reference's document). */
static uint64_t expect_version(travel_t *t, uint64_t at)
{
    uint64_t count = state_master_command_count(t->ref);
    char json[160];
    snprintf(json, sizeof(json),
             "{\"type\":\"snapshot\",\"client\":\"r\",\"seq\":1,\"at\":%llu}",
             (unsigned long long)at);
    codec_value_t *reply = ask(t, json);
    const char *type = field(reply, "type")->u.str.ptr;
    uint64_t oldest = 0;
    if (at > count) {
        cr_assert_str_eq(error_code(reply), "bad_range", "at %llu of %llu",
                         (unsigned long long)at, (unsigned long long)count);
    } else if (!strcmp(type, "snapshot")) {
        const codec_value_t *snap = field(reply, "snapshot");
        cr_assert_eq((uint64_t)field(snap, "commandCount")->u.i, at);
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        codec_msgpack_pack_value(&pk, field(snap, "document"));
        const msgpack_sbuffer *want = &t->docs[at];
        char *got_json = codec_json_encode(field(snap, "document"), NULL);
        cr_assert(sb.size == want->size && !memcmp(sb.data, want->data, sb.size),
                  "version %llu of %llu: got %.300s", (unsigned long long)at,
                  (unsigned long long)count, got_json);
        free(got_json);
        msgpack_sbuffer_destroy(&sb);
    } else {
        cr_assert_str_eq(error_code(reply), "history_unavailable", "at %llu",
                         (unsigned long long)at);
        const char *msg = field(field(reply, "error"), "message")->u.str.ptr;
        const char *says = strstr(msg, "the oldest version available is ");
        cr_assert_not_null(says, "%s", msg);
        oldest = strtoull(says + strlen("the oldest version available is "), NULL, 10);
        cr_assert_eq((uint64_t)field(field(reply, "error"), "oldest")->u.i, oldest,
                     "the error's oldest field says what its message says: %s", msg);
        cr_assert_gt(oldest, at, "%s", msg);
        /* The promise: every version from count - --history on (since the restore). */
        uint64_t window = count > t->conf.history ? count - t->conf.history : 0;
        if (window < t->floor)
            window = t->floor;
        cr_assert_leq(oldest, window, "%s (count %llu)", msg, (unsigned long long)count);
    }
    codec_value_destroy(reply);
    return oldest;
}

/* The in-memory history for syncs is the last --history commands, exactly. */
static void expect_sync_window(travel_t *t)
{
    uint64_t count = state_master_command_count(t->ref);
    uint64_t window = count > t->conf.history ? count - t->conf.history : 0;
    char json[160];
    snprintf(json, sizeof(json),
             "{\"type\":\"history\",\"client\":\"r\",\"seq\":2,\"from\":%llu}",
             (unsigned long long)window);
    codec_value_t *reply = ask(t, json);
    cr_assert_str_eq(field(reply, "type")->u.str.ptr, "history");
    codec_value_destroy(reply);
    if (!window)
        return;
    snprintf(json, sizeof(json),
             "{\"type\":\"history\",\"client\":\"r\",\"seq\":2,\"from\":%llu}",
             (unsigned long long)window - 1);
    reply = ask(t, json);
    cr_assert_str_eq(error_code(reply), "history_unavailable");
    codec_value_destroy(reply);
}

/* Every version: those below the oldest available are refused naming it, all the
 * others are the reference's; one beyond the count is bad_range. */
static uint64_t sweep(travel_t *t)
{
    uint64_t count = state_master_command_count(t->ref);
    uint64_t oldest = expect_version(t, 0);
    for (uint64_t v = 1; v < oldest; v++)
        cr_assert_eq(expect_version(t, v), oldest, "version %llu", (unsigned long long)v);
    for (uint64_t v = oldest; v <= count; v++)
        cr_assert_eq(expect_version(t, v), 0, "version %llu", (unsigned long long)v);
    expect_version(t, count + 1);
    return oldest;
}

/* Past snapshots stored, and the oldest of them. */
static int count_past(void *opaque, const state_store_item_t *item)
{
    uint64_t *n = opaque;
    if (item->kind == STATE_ITEM_PAST) {
        n[0]++;
        if (item->count < n[1])
            n[1] = item->count;
    }
    return 0;
}

/* @returns the oldest version available at the end. */
static uint64_t run(const char *name, mode_t_ mode, uint64_t history,
                    uint64_t snapshot_every, int flushes)
{
    travel_t t;
    travel_open(&t, name, mode, history, snapshot_every);
    t.small = strstr(name, "small") != NULL;
    for (int i = 0; i < flushes; i++) {
        flush_random(&t);
        uint64_t count = state_master_command_count(t.ref);
        /* Now and then, versions in between (also into the step in progress). */
        if (i % 9 == 4) {
            expect_version(&t, count);
            expect_version(&t, count + 1 + next_rand(&t) % 3);
            expect_version(&t, next_rand(&t) % (count + 1));
            expect_version(&t, count > history ? count - history : 0);
            expect_version(&t, count - next_rand(&t) % (count < 4 ? count + 1 : 4));
            step(&t);
        }
    }
    uint64_t oldest = sweep(&t);
    expect_sync_window(&t);
    commit(&t);
    /* Reopened: the same answers. */
    store_close(&t);
    store_open(&t);
    cr_assert_eq(sweep(&t), oldest);
    expect_sync_window(&t);
    /* The past snapshots kept are bounded (at most one per rewrite within the window,
     * each after at least one command, and one at or below it) and none is older than
     * the oldest version available. */
    uint64_t past[2] = {0, UINT64_MAX};
    char errstr[256];
    cr_assert_eq(state_store_scan(t.store, count_past, past, errstr, sizeof(errstr)), 0);
    cr_assert_gt(past[0], 0);
    cr_assert_leq(past[0], history + 1, "%llu past snapshots",
                  (unsigned long long)past[0]);
    cr_assert_geq(past[1], oldest);
    if (getenv("TRAVEL_VERBOSE"))
        fprintf(stderr, "%s: count %llu, oldest %llu, %llu past snapshots from %llu\n",
                name, (unsigned long long)state_master_command_count(t.ref),
                (unsigned long long)oldest, (unsigned long long)past[0],
                (unsigned long long)past[1]);
    travel_close(&t);
    return oldest;
}

Test(travel, every_version_kept_with_small_settings_whatever_the_cache)
{
    /* The same flushes: the same versions kept, whatever the cache and the steps. */
    uint64_t oldest = run("steps", STEPS, 5, 3, 240);
    cr_assert_eq(run("evicting", EVICTING, 5, 3, 240), oldest);
    cr_assert_eq(run("reopened", REOPENED, 5, 3, 240), oldest);
    run("other-settings", STEPS, 7, 4, 240);
    oldest = run("small-steps", STEPS, 5, 3, 240);
    cr_assert_eq(run("small-evicting", EVICTING, 5, 3, 240), oldest);
}

Test(travel, every_version_kept_with_the_default_settings)
{
    /* --history 1000, --snapshot-every 1000: beyond the window, several rewrites. */
    run("defaults", STEPS, 1000, 1000, 900);
}

/* A store restored from a snapshot record (a new owner's catch-up, rebuild) has no
 * past snapshots but the one it installed: time travel reaches back to it, and to the
 * whole window again once the model has moved on. */
Test(travel, after_a_restore_from_the_installed_snapshot_on)
{
    travel_t a, b;
    travel_open(&a, "owner", STEPS, 5, 3);
    for (int i = 0; i < 60; i++)
        flush_random(&a);
    commit(&a);
    msgpack_sbuffer rec;
    msgpack_sbuffer_init(&rec);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &rec, msgpack_sbuffer_write);
    char errstr[256];
    cr_assert_eq(
        state_store_pack_snapshot_record(a.store, "m", 1, &pk, errstr, sizeof(errstr)), 0,
        "%s", errstr);
    uint64_t installed = state_master_command_count(a.ref);

    travel_open(&b, "restored", EVICTING, 5, 3);
    cr_assert_eq(state_store_install_snapshot(b.store, "m", 1, rec.data, rec.size, errstr,
                                              sizeof(errstr)),
                 1, "%s", errstr);
    commit(&b);
    /* b's reference continues from a's. */
    state_master_destroy(b.ref);
    b.ref =
        state_master_new("m", 1, installed,
                         codec_value_copy(state_master_document(a.ref)), &b.conf.master);
    msgpack_sbuffer_destroy(&b.docs[0]);
    b.docs_len = 0;
    for (size_t i = 0; i < a.docs_len; i++) {
        if (b.docs_len == b.docs_cap)
            b.docs =
                realloc(b.docs, (b.docs_cap = b.docs_cap * 2 + 64) * sizeof(*b.docs));
        msgpack_sbuffer_init(&b.docs[b.docs_len]);
        msgpack_sbuffer_write(&b.docs[b.docs_len++], a.docs[i].data, a.docs[i].size);
    }
    b.seq = a.seq;
    b.rng = a.rng;
    b.floor = installed;
    cr_assert_eq(sweep(&b), installed, "nothing before the installed snapshot");
    for (int i = 0; i < 5; i++)
        flush_random(&b);
    cr_assert_eq(sweep(&b), installed);
    /* Moved on: the promise holds again. */
    b.floor = 0;
    for (int i = 0; i < 30; i++)
        flush_random(&b);
    uint64_t oldest = sweep(&b);
    cr_assert_gt(oldest, installed);
    msgpack_sbuffer_destroy(&rec);
    travel_close(&a);
    travel_close(&b);
}

/* A store written before past snapshots existed: time travel reaches back to its
 * snapshot (replies and syncs are as before), and to the whole window once the model
 * has moved on. */
/* Deletes (value NULL) or overwrites every past snapshot of the closed store t, as an
 * earlier version (none) or a damaged disk (garbage) would leave them.
 * @returns how many there were. */
static int rewrite_past_snapshots(travel_t *t, const char *value)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_merge_operator(o, state_store_merge_operator_new());
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(o, t->dir, &err);
    cr_assert_null(err, "%s", err);
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    int found = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t len;
        const char *k = rocksdb_iter_key(it, &len);
        if (len <= 5 || k[4] != STATE_ITEM_PAST || (unsigned char)k[0] == 0xff)
            continue;
        if (value)
            rocksdb_put(db, wo, k, len, value, strlen(value), &err);
        else
            rocksdb_delete(db, wo, k, len, &err);
        cr_assert_null(err, "%s", err);
        found++;
    }
    rocksdb_iter_destroy(it);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
    return found;
}

Test(travel, a_store_without_past_snapshots)
{
    travel_t t;
    travel_open(&t, "legacy", REOPENED, 5, 3);
    for (int i = 0; i < 50; i++)
        flush_random(&t);
    commit(&t);
    store_close(&t);
    /* Delete every past snapshot, as if written by an earlier version. */
    cr_assert_gt(rewrite_past_snapshots(&t, NULL), 0);
    store_open(&t);

    t.floor = UINT64_MAX; /* promised: from its snapshot on */
    uint64_t oldest = sweep(&t);
    cr_assert_gt(oldest, 0);
    expect_sync_window(&t);
    t.floor = 0;
    for (int i = 0; i < 30; i++)
        flush_random(&t);
    sweep(&t);
    travel_close(&t);
}

/* A past snapshot that cannot be read fails only the request that needed it: the
 * reply is store_failed with store_intact set (the runner then goes on with the
 * partition, run_step.c), and the model keeps serving flushes and other versions. */
Test(travel, an_unreadable_past_snapshot_fails_only_that_request)
{
    travel_t t;
    travel_open(&t, "corrupt", REOPENED, 5, 3);
    for (int i = 0; i < 50; i++)
        flush_random(&t);
    commit(&t);
    uint64_t count = state_master_command_count(t.ref);
    store_close(&t);
    cr_assert_gt(rewrite_past_snapshots(&t, "\xc1\xc1"), 0); /* not msgpack */
    store_open(&t);

    int failed = 0;
    for (uint64_t at = 0; at <= count; at++) {
        char json[128];
        snprintf(json, sizeof(json),
                 "{\"type\":\"snapshot\",\"client\":\"r\",\"seq\":1,"
                 "\"at\":%llu}",
                 (unsigned long long)at);
        codec_value_t *reply = ask(&t, json);
        const char *code = codec_map_get(reply, "error", 5) ? error_code(reply) : NULL;
        if (code && !strcmp(code, "store_failed")) {
            cr_assert(t.out.store_intact,
                      "at %llu: store_failed must not stop the partition",
                      (unsigned long long)at);
            failed++;
        } else if (code) {
            cr_assert_str_eq(code, "history_unavailable", "at %llu",
                             (unsigned long long)at);
        }
        codec_value_destroy(reply);
    }
    cr_assert_gt(failed, 0, "some version needed a spoiled past snapshot");
    /* The model itself is intact: flushes go on, the latest version reads. */
    for (int i = 0; i < 10; i++)
        flush_random(&t);
    expect_version(&t, state_master_command_count(t.ref));
    travel_close(&t);
}

/* Without a store (the handler's own models, for benchmarks and fuzzers) there are no
 * snapshots: only a model whose whole history is still in memory travels. */
static codec_value_t *ask_handler(processor_handler_t *h, const char *json)
{
    codec_value_t *v;
    char errstr[256];
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr)),
                 CODEC_OK);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    codec_value_destroy(v);
    processor_output_t out;
    processor_output_init(&out);
    processor_handler_handle(h, -1, -1, "m", 1, sb.data, sb.size, &out);
    cr_assert_eq(codec_msgpack_decode(out.reply.data, out.reply.size,
                                      &codec_limits_trusted, &v, errstr, sizeof(errstr)),
                 CODEC_OK);
    processor_output_destroy(&out);
    msgpack_sbuffer_destroy(&sb);
    return v;
}

static void expect_json(const codec_value_t *got, const char *json)
{
    codec_value_t *want;
    char errstr[256];
    cr_assert_eq(
        codec_json_decode(json, strlen(json), NULL, &want, errstr, sizeof(errstr)),
        CODEC_OK);
    char *text = codec_json_encode(got, NULL);
    cr_assert(codec_value_equal(got, want), "expected %s\n got %s", json, text);
    free(text);
    codec_value_destroy(want);
}

Test(travel, without_a_store_from_the_whole_history_in_memory)
{
    const uint64_t histories[] = {1000, 2};
    for (int i = 0; i < 2; i++) {
        uint64_t history = histories[i];
        processor_handler_conf_t hc = {.master = {.ids = STATE_IDS_SEQUENTIAL},
                                       .history = history,
                                       .limits = codec_limits_default};
        processor_handler_t *h = processor_handler_new(&hc);
        char json[512];
        for (int k = 1; k <= 4; k++) {
            snprintf(json, sizeof(json),
                     "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%d,\"from\":%d,"
                     "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":"
                     "{\"k\":%d}},\"createdId\":\"i%d\"}]}",
                     k, k - 1, k, k);
            codec_value_destroy(ask_handler(h, json));
        }
        codec_value_t *v =
            ask_handler(h, "{\"type\":\"snapshot\",\"client\":\"r\",\"seq\":1,\"at\":2}");
        if (history == 1000)
            expect_json(v, "{\"type\":\"snapshot\",\"model\":\"m\",\"client\":\"r\","
                           "\"seq\":1,\"snapshot\":{\"commandCount\":2,\"document\":"
                           "{\"i1\":{\"k\":1},\"i2\":{\"k\":2}}}}");
        else
            expect_json(v, "{\"type\":\"error\",\"model\":\"m\",\"client\":\"r\","
                           "\"seq\":1,\"error\":{\"code\":\"history_unavailable\","
                           "\"message\":\"version 2 is older than the history kept: the "
                           "oldest version available is 4\",\"oldest\":4}}");
        codec_value_destroy(v);
        v = ask_handler(h, "{\"type\":\"snapshot\",\"client\":\"r\",\"seq\":1,\"at\":0}");
        if (history == 1000)
            expect_json(v,
                        "{\"type\":\"snapshot\",\"model\":\"m\",\"client\":\"r\","
                        "\"seq\":1,\"snapshot\":{\"commandCount\":0,\"document\":{}}}");
        codec_value_destroy(v);
        v = ask_handler(h, "{\"type\":\"snapshot\",\"client\":\"r\",\"seq\":1,\"at\":5}");
        cr_assert_str_eq(
            codec_map_get(codec_map_get(v, "error", 5), "code", 4)->u.str.ptr,
            "bad_range");
        codec_value_destroy(v);
        processor_handler_destroy(h);
    }
}
