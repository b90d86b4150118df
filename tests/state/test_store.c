/* tests/state/test_store.c - the RocksDB store: reload, snapshots and trimming, cache
 * eviction, client records, offsets, and refusals (layout version, unusable dir). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/common/big_flush.h"
#include "codec/json.h"
#include "codec/msgpack.h"
#include "state/store.h"
#include "state/store_int.h" /* SNAPSHOT_MIN_REWRITE_BYTES, HISTORY_KEY_* */

static char dir[] = "/tmp/flushout-test-store-XXXXXX";
static char errstr[512];
static state_store_conf_t conf;
static state_store_t *store;

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    conf = (state_store_conf_t){
        .dir = dir,
        .history = 1000,
        .snapshot_every = 1000,
        .cache_bytes = 64 << 20,
        .master = {.ids = STATE_IDS_SEQUENTIAL},
    };
}

static void teardown(void)
{
    state_store_close(store);
    store = NULL;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    strcpy(dir, "/tmp/flushout-test-store-XXXXXX");
}

TestSuite(state_store, .init = setup, .fini = teardown);

static void open_store(void)
{
    state_store_close(store);
    store = state_store_open(&conf, errstr, sizeof(errstr));
    cr_assert_not_null(store, "%s", errstr);
}

/* Serves partition p from the store's directory (reopened as p when it served
 * another): one store serves one partition, and partitions share nothing. */
static void use_partition(int32_t p)
{
    if (store && conf.partition == p)
        return;
    conf.partition = p;
    open_store();
}

static state_model_t *model(const char *id)
{
    state_model_t *m = state_store_model(store, id, strlen(id), errstr, sizeof(errstr));
    cr_assert_not_null(m, "%s", errstr);
    return m;
}

/* When set, each flush() packs its change record into the next of these. */
typedef struct change_s {
    msgpack_sbuffer value;
} change_t;
static change_t *changes;
static size_t change_count;
/* What state_model_flushed() said of the last flush applied_request() recorded. */
static bool rewrote;
static uint64_t replaced;

/* Applies a decoded flush through the model's master and records it. */
static void apply_request(const char *id, const char *client, uint64_t seq,
                          codec_request_t *req)
{
    state_model_t *m = model(id);
    cr_assert_eq(state_model_check_seq(store, m, client, strlen(client), seq, NULL),
                 STATE_SEQ_NEW);
    state_apply_t a;
    state_apply_init(&a);
    state_history_t history = state_model_history(m);
    state_master_apply(state_model_master(m), req, &history, &a);
    replaced = UINT64_MAX;
    rewrote = state_model_flushed(store, m, client, strlen(client), seq, &a, &replaced);
    cr_assert_eq(rewrote, replaced != UINT64_MAX, "replaced is set with a rewrite only");
    if (changes) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &changes[change_count].value, msgpack_sbuffer_write);
        state_change_pack(&pk, id, strlen(id), client, strlen(client), seq, &a,
                          (int64_t)change_count * 10);
        change_count++;
    }
    state_apply_destroy(&a);
}

/* Applies a flush given as JSON through the model's master and records it. */
static void flush(const char *id, const char *client, uint64_t seq, const char *json)
{
    codec_value_t *v;
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, errstr, sizeof(errstr)),
                 0, "%s", errstr);
    codec_request_t req;
    cr_assert_eq(
        codec_request_from_value(v, id, strlen(id), NULL, &req, errstr, sizeof(errstr)),
        0, "%s", errstr);
    apply_request(id, client, seq, &req);
    codec_request_clear(&req);
}

/* A flush of n creates (and an update of each) from the model's current count. */
static void flush_creates(const char *id, const char *client, uint64_t seq, int n)
{
    uint64_t from = state_master_command_count(state_model_master(model(id)));
    char json[8192];
    int off = snprintf(json, sizeof(json),
                       "{\"type\":\"flush\",\"client\":\"%s\",\"seq\":%llu,\"from\":%llu,"
                       "\"completions\":[",
                       client, (unsigned long long)seq, (unsigned long long)from);
    for (int i = 0; i < n; i++) {
        unsigned long long idn = (unsigned long long)from + (unsigned long long)i * 2 + 1;
        off +=
            snprintf(json + off, sizeof(json) - (size_t)off,
                     "%s{\"command\":{\"action\":\"create\",\"path\":[\"items\"],"
                     "\"parentDefault\":{},\"props\":{\"n\":%d}},\"createdId\":\"%llu\"},"
                     "{\"command\":{\"action\":\"update\",\"path\":[\"items\",\"%llu\"],"
                     "\"props\":{\"done\":true}}}",
                     i ? "," : "", i, idn, idn);
    }
    snprintf(json + off, sizeof(json) - (size_t)off, "]}");
    flush(id, client, seq, json);
}

/* Closes the store and opens its RocksDB database directly (caller closes it). */
static rocksdb_t *raw_db(void)
{
    state_store_close(store);
    store = NULL;
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_merge_operator(o, state_store_merge_operator_new());
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &err);
    rocksdb_options_destroy(o);
    cr_assert_null(err, "%s", err);
    return db;
}

static void commit(int64_t offset)
{
    cr_assert_eq(state_store_commit(store, offset, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
}

/* The model's snapshot as a heap copy, for comparing across a reopen. */
static codec_value_t *document_of(const char *id, uint64_t *count)
{
    state_master_t *m = state_model_master(model(id));
    *count = state_master_command_count(m);
    return codec_value_copy(state_master_document(m));
}

static void expect_history(const char *id, uint64_t from, uint64_t to, bool available)
{
    state_history_t h = state_model_history(model(id));
    codec_packed_t out;
    codec_packed_init(&out);
    int rc = h.range(h.opaque, from, to, &out);
    cr_assert_eq(rc, available ? 0 : -1, "history %llu..%llu", (unsigned long long)from,
                 (unsigned long long)to);
    if (available)
        cr_assert_eq(out.count, to - from);
    codec_packed_destroy(&out);
}

Test(state_store, a_reopened_store_has_the_same_models)
{
    open_store();
    for (int i = 0; i < 10; i++)
        flush_creates("a", "c1", (uint64_t)i, 3);
    flush_creates("b", "c2", 0, 1);
    commit(41);
    uint64_t count_a, count_b;
    codec_value_t *a = document_of("a", &count_a);
    codec_value_t *b = document_of("b", &count_b);
    cr_assert_eq(count_a, 60);

    open_store();
    uint64_t again;
    codec_value_t *a2 = document_of("a", &again);
    cr_assert_eq(again, count_a);
    cr_assert(codec_value_equal(a, a2));
    codec_value_t *b2 = document_of("b", &again);
    cr_assert_eq(again, count_b);
    cr_assert(codec_value_equal(b, b2));
    expect_history("a", 0, 60, true);
    cr_assert_eq(state_store_next_offset(store), 41);
    use_partition(7);
    cr_assert_eq(state_store_next_offset(store), -1);
    codec_value_destroy(a);
    codec_value_destroy(a2);
    codec_value_destroy(b);
    codec_value_destroy(b2);
}

Test(state_store, uncommitted_changes_are_not_stored)
{
    open_store();
    flush_creates("a", "c1", 1, 2);
    commit(1);
    flush_creates("a", "c1", 2, 2);
    open_store(); /* closes without committing the second flush */
    uint64_t count;
    codec_value_t *doc = document_of("a", &count);
    cr_assert_eq(count, 4);
    codec_value_destroy(doc);
    cr_assert_eq(state_store_next_offset(store), 1);
}

Test(state_store, snapshots_are_rewritten_and_old_history_trimmed)
{
    conf.snapshot_every = 7;
    conf.history = 5;
    open_store();
    for (int i = 0; i < 20; i++) {
        flush_creates("a", "c1", (uint64_t)i, 1);
        commit(i);
    }
    uint64_t count;
    codec_value_t *doc = document_of("a", &count);
    cr_assert_eq(count, 40);

    open_store();
    uint64_t again;
    codec_value_t *doc2 = document_of("a", &again);
    cr_assert_eq(again, 40);
    cr_assert(codec_value_equal(doc, doc2), "snapshot + replayed history = the document");
    expect_history("a", 35, 40, true);
    expect_history(
        "a", 34, 40,
        false); /* Nothing older than the snapshot and the window is left in RocksDB. */
    rocksdb_t *db = raw_db();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    int history_keys = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t len;
        const char *k = rocksdb_iter_key(it, &len);
        history_keys += len > 4 && k[4] == 'h';
    }
    cr_assert_leq(history_keys, 5 + 7, "history kept: %d entries", history_keys);
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    codec_value_destroy(doc);
    codec_value_destroy(doc2);
}

/* A small document is rewritten once the history since its last snapshot reaches
 * SNAPSHOT_MIN_REWRITE_BYTES (16 KB), not after each flush that outgrows it: the
 * stored snapshot and the past snapshots kept are where that rule, replayed over the
 * stored history, puts them. */
Test(state_store, a_small_document_waits_for_16_kb_of_history)
{
    open_store();
    flush("small", "c", 1,
          "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,\"completions\":["
          "{\"command\":{\"action\":\"create\",\"props\":{\"n\":0}},\"createdId\":\"x\"}]"
          "}");
    commit(0);
    enum { FLUSHES = 1200 };
    /* What state_model_flushed() reported: each rewrite replaces the one before. */
    int reported = 0;
    uint64_t last_rewrite = 0;
    for (int i = 2; i <= FLUSHES; i++) {
        char json[256];
        snprintf(json, sizeof(json),
                 "{\"type\":\"flush\",\"client\":\"c\",\"seq\":%d,\"from\":%d,"
                 "\"completions\":[{\"command\":{\"action\":\"update\",\"path\":[\"x\"],"
                 "\"props\":{\"n\":%d}}}]}",
                 i, i - 1, i);
        flush("small", "c", (uint64_t)i, json);
        if (rewrote) {
            reported++;
            cr_assert_eq(replaced, last_rewrite);
            last_rewrite = (uint64_t)i;
        }
        commit(i);
    }
    rocksdb_t *db = raw_db();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    /* The rule over the stored history (each key an array of the commands of one or
     * more flushes, one command each here, in count order): a rewrite once the
     * commands since the last one reach SNAPSHOT_MIN_REWRITE_BYTES. */
    uint64_t since = 0, expected_count = 0;
    int rewrites = 0, past = 0, history = 0, history_keys = 0;
    int64_t stored_count = -1;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        if (klen < 5 || !memcmp(k, "\xff\xff\xff\xff", 4))
            continue;
        if (k[4] == 'h') {
            const unsigned char *head = (const unsigned char *)v;
            cr_assert(vlen >= 3 && ((head[0] & 0xf0) == 0x90 || head[0] == 0xdc));
            size_t n = head[0] == 0xdc ? (size_t)head[1] << 8 | head[2] : head[0] & 0x0f;
            size_t off = head[0] == 0xdc ? 3 : 1;
            for (size_t j = 0; j < n; j++) {
                size_t at = off;
                cr_assert(codec_msgpack_skip(v, vlen, &off));
                history++;
                since += off - at;
                if (since >= SNAPSHOT_MIN_REWRITE_BYTES) {
                    rewrites++;
                    expected_count = (uint64_t)history;
                    since = 0;
                }
            }
            cr_assert_eq(off, vlen, "one array of commands per key");
            history_keys++;
        } else if (k[4] == 'v') {
            past++;
        } else if (k[4] == 's') {
            codec_value_t *snap;
            cr_assert_eq(codec_msgpack_decode(v, vlen, &codec_limits_trusted, &snap,
                                              errstr, sizeof(errstr)),
                         CODEC_OK, "%s", errstr);
            stored_count = codec_map_get(snap, "commandCount", 12)->u.i;
            codec_value_destroy(snap);
        }
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    cr_assert_eq(history, FLUSHES);
    /* One-command flushes share keys of HISTORY_KEY_COMMANDS commands (their values
     * stay under HISTORY_KEY_BYTES). */
    cr_assert_eq(history_keys,
                 (FLUSHES + HISTORY_KEY_COMMANDS - 1) / HISTORY_KEY_COMMANDS,
                 "%d history keys", history_keys);
    cr_assert_geq(rewrites, 2, "%d rewrites", rewrites);
    cr_assert_leq(rewrites, FLUSHES / 50, "%d rewrites of a small document", rewrites);
    cr_assert_eq(stored_count, (int64_t)expected_count);
    cr_assert_eq(past, rewrites, "one past snapshot per rewrite");
    cr_assert_eq(reported, rewrites, "state_model_flushed() reports each rewrite");
    cr_assert_eq(last_rewrite, expected_count);
}

Test(state_store, evicted_models_reload_identically)
{
    conf.cache_bytes = 1; /* every commit evicts everything */
    open_store();
    flush_creates("a", "c1", 1, 5);
    uint64_t count;
    codec_value_t *before = document_of("a", &count);
    commit(0);
    uint64_t again;
    codec_value_t *reloaded = document_of("a", &again); /* evicted by the commit */
    cr_assert_eq(again, count);
    cr_assert(codec_value_equal(before, reloaded));
    flush_creates("a", "c1", 2, 5);
    commit(1);
    codec_value_t *after = document_of("a", &again);
    cr_assert_eq(again, count + 10);
    cr_assert_eq(codec_map_get(after, "items", 5)->u.map.count, 10);
    codec_value_destroy(before);
    codec_value_destroy(reloaded);
    codec_value_destroy(after);
}

/* alice's and bob's flushes of one ID to model "m", bob's remapped, in one step. */
static void two_clients_flush(void)
{
    flush(
        "m", "alice", 0,
        "{\"type\":\"flush\",\"client\":\"alice\",\"seq\":0,\"from\":0,\"completions\":["
        "{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}");
    flush("m", "bob", 4,
          "{\"type\":\"flush\",\"client\":\"bob\",\"seq\":4,\"from\":0,\"completions\":["
          "{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}");
    commit(2);
}

Test(state_store, client_records_recognise_retries_across_reopen)
{
    open_store();
    two_clients_flush(); /* the second create of the same ID is remapped */
    open_store();
    state_model_t *m = model("m");
    state_retry_t retry;
    cr_assert_eq(state_model_check_seq(store, m, "bob", 3, 5, NULL), STATE_SEQ_NEW);
    cr_assert_eq(state_model_check_seq(store, m, "bob", 3, 3, NULL), STATE_SEQ_STALE);
    cr_assert_eq(state_model_check_seq(store, m, "bob", 3, 4, &retry),
                 STATE_SEQ_DUPLICATE);
    cr_assert_eq(state_model_check_seq(store, m, "alice", 5, 0, NULL),
                 STATE_SEQ_DUPLICATE, "seq 0 is a seq like any other");
    cr_assert_eq(state_model_check_seq(store, m, "carol", 5, 0, NULL), STATE_SEQ_NEW);
    /* bob's original reply mapped "1" to "3": a retry must see that again */
    cr_assert_eq(state_model_check_seq(store, m, "bob", 3, 4, &retry),
                 STATE_SEQ_DUPLICATE);
    cr_assert_not_null(retry.mapped_paths);
    cr_assert_eq(retry.at, 2, "bob's flush left the model at 2 commands");
    /* {"1":["3"]}: a map of one, fixstr "1", an array of one, fixstr "3" */
    static const char want[] = "\x81\xa1"
                               "1"
                               "\x91\xa1"
                               "3";
    cr_assert_eq(retry.mapped_paths_len, sizeof(want) - 1);
    cr_assert_eq(memcmp(retry.mapped_paths, want, sizeof(want) - 1), 0);
}

Test(state_store, refuses_a_store_of_another_layout)
{
    open_store();
    rocksdb_t *db = raw_db();
    char *err = NULL;
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_put(db, wo, "\xff\xff\xff\xffV", 5, "flushout-store 99", 17, &err);
    cr_assert_null(err);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);

    cr_assert_null(state_store_open(&conf, errstr, sizeof(errstr)));
    cr_assert(strstr(errstr, "flushout-store 99"), "%s", errstr);
    cr_assert(strstr(errstr, "flushout-store 2"), "%s", errstr);
}

/* The layout version key's value, read with the store closed. */
static char *stored_layout(void)
{
    rocksdb_t *db = raw_db();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get(db, ro, "\xff\xff\xff\xffV", 5, &len, &err);
    cr_assert_null(err, "%s", err);
    cr_assert_not_null(v);
    char *text = strndup(v, len);
    free(v);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    return text;
}

/* A layout 1 store (before history appends) is read as it is: opened to be written it
 * becomes layout 2, which builds that know only layout 1 refuse at open; opened to be
 * read (inspect) it keeps its layout. */
Test(state_store, a_layout_1_store_is_read_and_becomes_layout_2_when_written)
{
    open_store();
    flush_creates("a", "c1", 1, 1);
    commit(0);
    rocksdb_t *db = raw_db();
    char *err = NULL;
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_put(db, wo, "\xff\xff\xff\xffV", 5, "flushout-store 1", 16, &err);
    cr_assert_null(err);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);

    state_store_conf_t read_conf = conf;
    read_conf.partition = STATE_STORE_PARTITION_STORED;
    store = state_store_open(&read_conf, errstr, sizeof(errstr));
    cr_assert_not_null(store, "%s", errstr);
    expect_history("a", 0, 2, true);
    char *layout = stored_layout();
    cr_assert_str_eq(layout, "flushout-store 1", "opened to be read: kept");
    free(layout);

    open_store();
    expect_history("a", 0, 2, true);
    flush_creates("a", "c1", 2, 1); /* appended to the layout 1 store's key */
    commit(1);
    layout = stored_layout();
    cr_assert_str_eq(layout, "flushout-store 2");
    free(layout);
    open_store();
    expect_history("a", 0, 4, true);
}

Test(state_store, reports_an_unusable_directory)
{
    char file[300];
    snprintf(file, sizeof(file), "%s/not-a-dir", dir);
    FILE *fp = fopen(file, "w");
    fputs("x", fp);
    fclose(fp);
    conf.dir = file;
    cr_assert_null(state_store_open(&conf, errstr, sizeof(errstr)));
    cr_assert(strstr(errstr, "not-a-dir"), "%s", errstr);
}

/* Disk full, simulated with a file size limit in a child: the failing commit reports
 * it, later commits are refused, and reopening finds the last good commit whole. */
Test(state_store, a_failed_write_is_reported_and_nothing_half_written)
{
    open_store();
    flush_creates("a", "c1", 1, 3);
    commit(1);
    state_store_close(store);
    store = NULL;

    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
        store = state_store_open(&conf, errstr, sizeof(errstr));
        if (!store)
            _exit(10);
        struct rlimit limit = {64 << 10, 64 << 10};
        setrlimit(RLIMIT_FSIZE, &limit);
        int failed_at = -1;
        for (int i = 0; i < 200 && failed_at < 0; i++) {
            flush_creates("a", "c1", 2 + (uint64_t)i, 40);
            if (state_store_commit(store, 2 + i, errstr, sizeof(errstr)) != 0)
                failed_at = i;
        }
        if (failed_at < 0)
            _exit(11); /* the limit never bit */
        if (!strstr(errstr, "writing a step"))
            _exit(12);
        if (state_store_commit(store, 999, errstr, sizeof(errstr)) == 0 ||
            !strstr(errstr, "refuses writes"))
            _exit(13);
        FILE *fp = fopen("/tmp/flushout-test-store-failed-at", "w");
        fprintf(fp, "%d\n", failed_at);
        fclose(fp);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d",
              WEXITSTATUS(status));
    FILE *fp = fopen("/tmp/flushout-test-store-failed-at", "r");
    int failed_at = -1;
    cr_assert_eq(fscanf(fp, "%d", &failed_at), 1);
    fclose(fp);
    unlink("/tmp/flushout-test-store-failed-at");

    /* Each good commit added 80 commands; the failed one added none. */
    open_store();
    uint64_t count;
    codec_value_t *doc = document_of("a", &count);
    cr_assert_eq(count, 6 + 80 * (uint64_t)failed_at, "failed at step %d", failed_at);
    cr_assert_eq(state_store_next_offset(store), failed_at ? 1 + failed_at : 1);
    codec_value_destroy(doc);
}

typedef struct seen_s {
    int n;
    uint64_t ids[8];
    char values[8][16];
} seen_t;

static int remember(void *opaque, uint64_t id, const state_outbox_rec_t *rec)
{
    seen_t *seen = opaque;
    cr_assert_str_eq(rec->topic, "replies");
    cr_assert_eq(rec->partition, -1);
    cr_assert_eq(rec->key_len, 5);
    cr_assert_eq(memcmp(rec->key, "alice", 5), 0);
    cr_assert_eq(rec->header_count, 1);
    cr_assert_str_eq(rec->headers[0].name, "kafka_correlationId");
    cr_assert_eq(rec->headers[0].value_len, 3);
    cr_assert_eq(memcmp(rec->headers[0].value, "\0\1\2", 3), 0);
    cr_assert_lt(seen->n, 8);
    seen->ids[seen->n] = id;
    snprintf(seen->values[seen->n], sizeof(seen->values[0]), "%.*s", (int)rec->value_len,
             rec->value);
    seen->n++;
    return 0;
}

static uint64_t add_reply_at(int32_t partition, const char *value, size_t *value_at)
{
    use_partition(partition);
    static const state_header_t correlation = {"kafka_correlationId", "\0\1\2", 3};
    state_outbox_rec_t rec = {
        .topic = "replies",
        .partition = -1,
        .key = "alice",
        .key_len = 5,
        .value = value,
        .value_len = strlen(value),
        .headers = &correlation,
        .header_count = 1,
    };
    return state_store_outbox_add(store, &rec, value_at);
}

static uint64_t add_reply(int32_t partition, const char *value)
{
    return add_reply_at(partition, value, NULL);
}

static seen_t outbox(int32_t partition)
{
    use_partition(partition);
    seen_t seen = {0};
    cr_assert_eq(state_store_outbox_scan(store, remember, &seen, errstr, sizeof(errstr)),
                 0, "%s", errstr);
    return seen;
}

Test(state_store, the_outbox_keeps_records_until_they_are_done)
{
    open_store();
    cr_assert_eq(add_reply(2, "r0"), 0);
    cr_assert_eq(add_reply(2, "r1"), 0, "the records of one step share its id");
    commit(0);
    cr_assert_eq(add_reply(2, "r2"), 1, "the next step has the next id");
    commit(1);
    add_reply(2, "lost"); /* not committed */
    open_store();
    seen_t seen = outbox(2);
    cr_assert_eq(seen.n, 3);
    cr_assert_str_eq(seen.values[0], "r0");
    cr_assert_str_eq(seen.values[1], "r1");
    cr_assert_str_eq(seen.values[2], "r2");
    cr_assert_eq(seen.ids[1], 0);
    cr_assert_eq(seen.ids[2], 1);
    cr_assert_eq(outbox(0).n, 0, "partitions have their own outboxes");

    use_partition(2);
    state_store_outbox_done(store, 0, 0);
    commit(-1);
    seen = outbox(2);
    cr_assert_eq(seen.n, 1, "a step's records go together");
    cr_assert_str_eq(seen.values[0], "r2");

    open_store();
    cr_assert_eq(add_reply(2, "r3"), 2, "ids continue after the newest stored record");
    commit(-1);
    cr_assert_eq(add_reply(2, "r4"), 3);
    commit(-1);
    cr_assert_eq(outbox(2).n, 3);
    state_store_outbox_done(store, 1, 2);
    commit(-1);
    seen = outbox(2);
    cr_assert_eq(seen.n, 1, "a range of steps goes at once");
    cr_assert_str_eq(seen.values[0], "r4");
}

/* A committed step's bytes are what the producer sends from (no copy per record): each
 * value lies where state_store_outbox_add() said, and the bytes outlive whatever the
 * store does with the step (done, stored at a flush point, the store closed) until the
 * last reference goes. ASan checks the reads after the store let go, and that the
 * last unref frees them. */
static void expect_step_value(const state_outbox_bytes_t *b, size_t at, const char *value)
{
    size_t len;
    const char *data = state_outbox_bytes_data(b, &len);
    cr_assert_leq(at + strlen(value), len);
    cr_assert_eq(memcmp(data + at, value, strlen(value)), 0, "%s", value);
}

static void start_over(void);

static void share_a_step(bool changelog)
{
    conf.changelog = changelog;
    conf.checkpoint_ms = 1; /* a changelog store's commits after 1 ms are flush points */
    conf.partition = 3;
    open_store();
    static const char *values[] = {"first reply", "", "a change record"};
    size_t at[3];
    uint64_t id;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(add_reply_at(3, values[i], &at[i]), 0);
    cr_assert_null(state_store_outbox_take_step(store, &id), "nothing committed yet");
    commit(-1);
    state_outbox_bytes_t *b = state_store_outbox_take_step(store, &id);
    cr_assert_not_null(b);
    cr_assert_eq(id, 0);
    cr_assert_null(state_store_outbox_take_step(store, &id), "taken once");
    for (int i = 0; i < 3; i++)
        expect_step_value(b, at[i], values[i]);
    state_outbox_bytes_ref(b, 2); /* two records in flight, and the caller's */
    state_outbox_bytes_unref(b);

    /* A step not taken is let go by the next commit; one without records has none. */
    cr_assert_eq(add_reply(3, "x"), 1);
    commit(-1);
    commit(-1);
    cr_assert_null(state_store_outbox_take_step(store, &id));

    usleep(2000);
    /* A flush point (changelog): the held steps are stored, their bytes kept. */
    commit(-1);
    cr_assert_eq(outbox(3).n, 4, "both steps are in the outbox until done (%s)",
                 changelog ? "changelog" : "logged");
    state_outbox_bytes_unref(b); /* one record delivered */
    state_store_outbox_done(store, 0, 1);
    commit(-1);
    cr_assert_eq(outbox(3).n, 0);
    state_store_close(store);
    store = NULL;
    expect_step_value(b, at[2], values[2]); /* the last record still in flight */
    state_outbox_bytes_unref(b);
}

Test(state_store, a_committed_step_is_shared_until_its_last_holder_lets_go)
{
    share_a_step(false);
    start_over();
    share_a_step(true);
}

/* A checkpoint is the store as its last flush point left it, the state a crash would
 * leave: what was committed after that flush point is not in it, even once written
 * to the memtable; and it can be opened as a store of its own. */
Test(state_store, a_checkpoint_holds_the_store_as_its_last_flush_point_left_it)
{
    conf.changelog = true;
    conf.checkpoint_ms = 3600 * 1000; /* no flush point but the ones asked for */
    conf.partition = 2;
    open_store();
    cr_assert_eq(state_store_flush_points(store), 0);
    flush_creates("m", "c", 1, 2);
    commit(10);
    uint64_t flushed_count;
    codec_value_t *flushed = document_of("m", &flushed_count);
    cr_assert_eq(state_store_flush_point(store, errstr, sizeof(errstr)), 0, "%s", errstr);
    cr_assert_eq(state_store_flush_points(store), 1);
    flush_creates("m", "c", 2, 2);
    commit(20);

    char ckpt[PATH_MAX];
    snprintf(ckpt, sizeof(ckpt), "%s/checkpoint", dir);
    uint64_t held = 0;
    cr_assert_eq(state_store_checkpoint(store, ckpt, &held, errstr, sizeof(errstr)), 0,
                 "%s", errstr);
    cr_assert_eq(held, 1, "it holds the first flush point");
    cr_assert_eq(state_store_checkpoint(store, ckpt, &held, errstr, sizeof(errstr)), -1,
                 "never over an existing directory");
    uint64_t live_count;
    codec_value_t *live = document_of("m", &live_count);
    cr_assert_eq(live_count, flushed_count + 4, "the live store went on");
    cr_assert_eq(state_store_next_offset(store), 20);

    state_store_t *live_store = store;
    conf.dir = ckpt;
    store = NULL;
    open_store();
    uint64_t count;
    codec_value_t *doc = document_of("m", &count);
    cr_assert_eq(count, flushed_count, "the commit after the flush point is not in it");
    cr_assert(codec_value_equal(doc, flushed));
    cr_assert_eq(state_store_next_offset(store), 10, "the offset of its flush point");
    codec_value_destroy(doc);
    codec_value_destroy(flushed);
    codec_value_destroy(live);
    state_store_close(live_store);
    conf.dir = dir;

    /* A logged store has no flush points to copy. */
    start_over();
    conf.changelog = false;
    snprintf(ckpt, sizeof(ckpt), "%s/logged", dir);
    open_store();
    cr_assert_eq(state_store_checkpoint(store, ckpt, &held, errstr, sizeof(errstr)), -1);
}

/* The outbox packs its records by hand (store_outbox.c): the bytes must be what
 * msgpack-c's packer makes of the same map, at every size where a length changes form. */
typedef struct outbox_bytes_s {
    const char *value;
    size_t len;
} outbox_bytes_t;

static int outbox_value(void *opaque, const state_store_item_t *item)
{
    if (item->kind == STATE_ITEM_OUTBOX) {
        outbox_bytes_t *got = opaque;
        got->value = memcpy(malloc(item->value_len), item->value, item->value_len);
        got->len = item->value_len;
    }
    return 0;
}

static void pack_like_msgpack_c(msgpack_packer *pk, const state_outbox_rec_t *rec)
{
    msgpack_pack_map(pk, 5);
    msgpack_pack_str_with_body(pk, "topic", 5);
    msgpack_pack_str_with_body(pk, rec->topic, strlen(rec->topic));
    msgpack_pack_str_with_body(pk, "partition", 9);
    msgpack_pack_int32(pk, rec->partition);
    msgpack_pack_str_with_body(pk, "key", 3);
    if (rec->key)
        msgpack_pack_bin_with_body(pk, rec->key, rec->key_len);
    else
        msgpack_pack_nil(pk);
    msgpack_pack_str_with_body(pk, "value", 5);
    msgpack_pack_bin_with_body(pk, rec->value, rec->value_len);
    msgpack_pack_str_with_body(pk, "headers", 7);
    msgpack_pack_array(pk, (uint32_t)rec->header_count * 2);
    for (size_t i = 0; i < rec->header_count; i++) {
        msgpack_pack_str_with_body(pk, rec->headers[i].name,
                                   strlen(rec->headers[i].name));
        msgpack_pack_bin_with_body(pk, rec->headers[i].value, rec->headers[i].value_len);
    }
}

Test(state_store, outbox_records_are_the_bytes_msgpack_c_packs)
{
    static const size_t lens[] = {0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536};
    static const int32_t partitions[] = {-1,     -32,       -33,   -128,     -129, -32768,
                                         -32769, INT32_MIN, 0,     127,      128,  255,
                                         256,    65535,     65536, INT32_MAX};
    enum {
        N = sizeof(lens) / sizeof(lens[0]),
        P = sizeof(partitions) / sizeof(partitions[0])
    };
    char *bytes = calloc(1, 70000);
    for (size_t i = 0; i < 70000; i++)
        bytes[i] = (char)('a' + i % 26);
    static state_header_t headers[17];
    for (size_t h = 0; h < 17; h++)
        headers[h] = (state_header_t){"kafka_correlationId", "\0\1\2", 3};
    conf.partition = 0;
    open_store();
    msgpack_sbuffer want;
    msgpack_sbuffer_init(&want);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &want, msgpack_sbuffer_write);
    uint32_t count = 0;
    msgpack_sbuffer_write(&want, "\xdd\0\0\0\0", 5); /* the step's array32 */
    for (size_t i = 0; i < N; i++) {
        char topic[300];
        size_t topic_len = lens[i] < sizeof(topic) ? lens[i] : sizeof(topic) - 1;
        memcpy(topic, bytes, topic_len);
        topic[topic_len] = '\0';
        state_outbox_rec_t rec = {
            .topic = topic,
            .partition = partitions[i % P],
            .key = i % 3 ? bytes : NULL,
            .key_len = i % 3 ? lens[(i + 3) % N] : 0,
            .value = bytes,
            .value_len = lens[i],
            .headers = headers,
            .header_count = i < 2   ? 0
                            : i < 5 ? 1
                            : i < 8 ? 8
                                    : 17,
        };
        state_store_outbox_add(store, &rec, NULL);
        pack_like_msgpack_c(&pk, &rec);
        count++;
    }
    for (size_t i = N; i < P; i++) { /* every partition form */
        state_outbox_rec_t rec = {
            .topic = "t", .partition = partitions[i], .value = "v", .value_len = 1};
        state_store_outbox_add(store, &rec, NULL);
        pack_like_msgpack_c(&pk, &rec);
        count++;
    }
    for (int b = 0; b < 4; b++)
        want.data[1 + b] = (char)(count >> (8 * (3 - b)));
    commit(-1);
    outbox_bytes_t got = {0};
    cr_assert_eq(state_store_scan(store, outbox_value, &got, errstr, sizeof(errstr)), 0,
                 "%s", errstr);
    cr_assert_eq(got.len, want.size);
    cr_assert_eq(memcmp(got.value, want.data, want.size), 0);
    free((void *)got.value);
    msgpack_sbuffer_destroy(&want);
    free(bytes);
}

Test(state_store, client_records_expire_oldest_first)
{
    conf.clients_per_model = 2;
    conf.snapshot_every = 1; /* expiry runs with snapshot rewrites */
    open_store();
    const char *clients[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        flush_creates("m", clients[i], 5, 1);
        commit(i);
    }
    open_store();
    state_model_t *m = model("m");
    cr_assert_eq(state_model_check_seq(store, m, "a", 1, 5, NULL), STATE_SEQ_NEW,
                 "the oldest client is forgotten: its retry counts as new");
    cr_assert_eq(state_model_check_seq(store, m, "b", 1, 5, NULL), STATE_SEQ_DUPLICATE);
    cr_assert_eq(state_model_check_seq(store, m, "c", 1, 5, NULL), STATE_SEQ_DUPLICATE);
}

Test(state_store, a_partition_is_dropped_on_its_own)
{
    open_store();
    flush_creates("a", "c1", 1, 2); /* partition 0 */
    commit(5);
    use_partition(1);
    state_model_t *other = state_store_model(store, "b", 1, errstr, sizeof(errstr));
    cr_assert_not_null(other, "%s", errstr);
    add_reply(1, "x");
    cr_assert_eq(state_store_commit(store, 9, errstr, sizeof(errstr)), 0, "%s", errstr);

    cr_assert_eq(state_store_drop_partition(store, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
    cr_assert_eq(state_store_next_offset(store), -1);
    cr_assert_eq(outbox(1).n, 0);
    use_partition(0);
    cr_assert_eq(state_store_next_offset(store), 5, "other partitions stay");
    open_store();
    uint64_t count;
    codec_value_t *doc = document_of("a", &count);
    cr_assert_eq(count, 4);
    codec_value_destroy(doc);
}

/* inspect opens a directory to read whatever it holds. */
Test(state_store, a_store_opened_to_be_read_serves_the_partition_it_holds)
{
    use_partition(3);
    flush_creates("a", "c1", 1, 2);
    commit(5);
    use_partition(STATE_STORE_PARTITION_STORED);
    cr_assert_eq(state_store_next_offset(store), 5);
    uint64_t count;
    codec_value_t *doc = document_of("a", &count);
    cr_assert_eq(count, 4);
    codec_value_destroy(doc);
}

Test(state_store, an_empty_store_opened_to_be_read_serves_partition_0)
{
    use_partition(STATE_STORE_PARTITION_STORED);
    cr_assert_eq(state_store_next_offset(store), -1);
    flush_creates("a", "c1", 1, 1);
    commit(2);
    use_partition(0);
    cr_assert_eq(state_store_next_offset(store), 2);
}

Test(state_store, reports_a_corrupt_store)
{
    open_store();
    flush_creates("a", "c1", 1, 2);
    commit(1);
    state_store_close(store);
    store = NULL;
    char path[300];
    snprintf(path, sizeof(path), "%s/CURRENT", dir);
    FILE *fp = fopen(path, "w");
    fputs("MANIFEST-999999\n", fp); /* points at a manifest that is not there */
    fclose(fp);
    cr_assert_null(state_store_open(&conf, errstr, sizeof(errstr)));
    cr_assert(strstr(errstr, dir), "the message names the store: %s", errstr);
    cr_assert(strstr(errstr, "MANIFEST") || strstr(errstr, "Corruption") ||
                  strstr(errstr, "No such file"),
              "%s", errstr);
}

/* Model "m"'s snapshot record, as committed, into sb (caller destroys it). */
static void pack_snapshot_record(msgpack_sbuffer *sb)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    cr_assert_eq(
        state_store_pack_snapshot_record(store, "m", 1, &pk, errstr, sizeof(errstr)), 0,
        "%s", errstr);
}

/* Closes the store and deletes everything it held: the next open_store() is empty. */
static void start_over(void)
{
    state_store_close(store);
    store = NULL;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/*", dir);
    cr_assert_eq(system(cmd), 0);
}

static char *document_json(const char *id)
{
    uint64_t count;
    codec_value_t *doc = document_of(id, &count);
    size_t len;
    char *json = codec_json_encode(doc, &len);
    codec_value_destroy(doc);
    return json;
}

/* From now on, flush() records change records into recorded[n]. */
static void record_changes(change_t *recorded, int n)
{
    for (int i = 0; i < n; i++)
        msgpack_sbuffer_init(&recorded[i].value);
    changes = recorded;
    change_count = 0;
}

static void free_changes(change_t *recorded, int n)
{
    for (int i = 0; i < n; i++)
        msgpack_sbuffer_destroy(&recorded[i].value);
}

Test(state_store, change_records_rebuild_a_model_elsewhere)
{
    change_t recorded[8];
    record_changes(recorded, 8);
    open_store();
    flush_creates("m", "alice", 1, 2);
    flush("m", "bob", 7,
          "{\"type\":\"flush\",\"client\":\"bob\",\"seq\":7,\"from\":0,\"completions\":["
          "{\"command\":{\"action\":\"create\",\"path\":[\"items\"],\"props\":{\"x\":1}},"
          "\"createdId\":\"1\"}]}"); /* "1" is taken: renamed, mappedPaths recorded */
    flush_creates("m", "alice", 2, 1);
    commit(3);
    changes = NULL;
    char *expected = document_json("m");
    start_over();

    /* A second store catches up from the records alone. */
    open_store();
    int64_t offset = -1;
    for (size_t i = 0; i < change_count; i++)
        cr_assert_eq(state_store_apply_change(store, "m", 1, recorded[i].value.data,
                                              recorded[i].value.size, &offset, errstr,
                                              sizeof(errstr)),
                     STATE_CHANGE_APPLIED, "record %zu: %s", i, errstr);
    cr_assert_eq(offset, 20, "the last record's input offset");
    commit(offset + 1);
    open_store();
    char *rebuilt = document_json("m");
    cr_assert_str_eq(rebuilt, expected);
    state_retry_t retry;
    cr_assert_eq(state_model_check_seq(store, model("m"), "bob", 3, 7, &retry),
                 STATE_SEQ_DUPLICATE, "client records come along");
    cr_assert_gt(retry.mapped_paths_len, 1, "with the original remaps");

    /* Records already reflected are skipped, however often they come again. */
    for (size_t i = 0; i < change_count; i++)
        cr_assert_eq(state_store_apply_change(store, "m", 1, recorded[i].value.data,
                                              recorded[i].value.size, &offset, errstr,
                                              sizeof(errstr)),
                     STATE_CHANGE_SKIPPED);
    cr_assert_eq(state_store_apply_change(store, "other", 5, recorded[2].value.data,
                                          recorded[2].value.size, &offset, errstr,
                                          sizeof(errstr)),
                 STATE_CHANGE_FAILED, "a key that is not the record's model");
    cr_assert_eq(state_store_apply_change(store, "m", 1, "\x93\x01\x02\x03", 4, &offset,
                                          errstr, sizeof(errstr)),
                 STATE_CHANGE_FAILED);
    cr_assert(strstr(errstr, "not a change record"), "%s", errstr);
    free(rebuilt);
    free(expected);
    free_changes(recorded, 8);
}

Test(state_store, a_gap_in_change_records_is_refused)
{
    change_t recorded[4];
    record_changes(recorded, 4);
    open_store();
    flush_creates("m", "alice", 1, 1);
    flush_creates("m", "alice", 2, 1);
    changes = NULL;
    start_over();
    open_store();
    int64_t offset;
    cr_assert_eq(state_store_apply_change(store, "m", 1, recorded[1].value.data,
                                          recorded[1].value.size, &offset, errstr,
                                          sizeof(errstr)),
                 STATE_CHANGE_GAP);
    cr_assert(strstr(errstr, "change records are missing"), "%s", errstr);
    free_changes(recorded, 4);
}

/* The history keys of model id, as (first count, commands) pairs; closes the store. */
static int stored_history_keys(const char *id, uint64_t (*keys)[2], int max)
{
    rocksdb_t *db = raw_db();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    int n = 0;
    size_t id_len = strlen(id);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        /* <p:4> h <len:2> <id> <count:8> */
        if (klen != 4 + 1 + 2 + id_len + 8 || k[4] != 'h' || memcmp(k + 7, id, id_len))
            continue;
        cr_assert_lt(n, max);
        uint64_t count = 0;
        for (int i = 0; i < 8; i++)
            count = count << 8 | (unsigned char)k[klen - 8 + i];
        const char *v = rocksdb_iter_value(it, &vlen);
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        cr_assert_eq(msgpack_unpack_next(&up, v, vlen, &off), MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(off, vlen);
        keys[n][0] = count;
        /* [command...], or a single command as stores written before hold */
        keys[n][1] = up.data.type == MSGPACK_OBJECT_ARRAY ? up.data.via.array.size : 1;
        n++;
        msgpack_unpacked_destroy(&up);
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
    return n;
}

Test(state_store, history_stored_one_completion_per_key_still_loads)
{
    /* Stores written before history was kept per flush hold one completion per key,
     * at its own count. Rewrite a flush's key that way and load the model again. */
    conf.snapshot_every = 1000000; /* no snapshot: the model comes back by replay */
    open_store();
    flush_creates("a", "c1", 1, 3);
    commit(0);
    uint64_t count;
    codec_value_t *before = document_of("a", &count);
    cr_assert_eq(count, 6);

    rocksdb_t *db = raw_db();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    int flush_keys = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < 5 || k[4] != 'h')
            continue;
        flush_keys++;
        const char *v = rocksdb_iter_value(it, &vlen);
        msgpack_unpacked up;
        msgpack_unpacked_init(&up);
        size_t off = 0;
        cr_assert_eq(msgpack_unpack_next(&up, v, vlen, &off), MSGPACK_UNPACK_SUCCESS);
        cr_assert_eq(up.data.type, MSGPACK_OBJECT_ARRAY, "a flush's completions");
        cr_assert_eq(up.data.via.array.size, 6);
        char key[256];
        memcpy(key, k, klen);
        char *err = NULL;
        rocksdb_delete(db, wo, k, klen, &err);
        cr_assert_null(err);
        uint64_t first = 0;
        for (int i = 0; i < 8; i++)
            first = first << 8 | (unsigned char)k[klen - 8 + i];
        for (uint32_t i = 0; i < up.data.via.array.size; i++) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            msgpack_pack_object(&pk, up.data.via.array.ptr[i]);
            uint64_t at = first + i;
            for (int b = 0; b < 8; b++)
                key[klen - 8 + b] = (char)(at >> (56 - 8 * b));
            rocksdb_put(db, wo, key, klen, sb.data, sb.size, &err);
            cr_assert_null(err);
            msgpack_sbuffer_destroy(&sb);
        }
        msgpack_unpacked_destroy(&up);
        break; /* the iterator would now meet the keys just written */
    }
    cr_assert_eq(flush_keys, 1, "one history key for the flush");
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);

    open_store();
    uint64_t again;
    codec_value_t *after = document_of("a", &again);
    cr_assert_eq(again, 6);
    cr_assert(codec_value_equal(before, after));
    expect_history("a", 0, 6, true);
    flush_creates("a", "c1", 2, 1); /* and goes on from there */
    commit(1);
    codec_value_destroy(before);
    codec_value_destroy(after);
    /* A single completion is no array a flush could join: the next one starts a key. */
    uint64_t keys[8][2];
    int n = stored_history_keys("a", keys, 8);
    cr_assert_eq(n, 7, "6 keys of one completion, then the new flush's: %d", n);
    cr_assert(keys[6][0] == 6 && keys[6][1] == 2);
}

/* A flush joins the model's last history key while that key holds fewer than
 * HISTORY_KEY_COMMANDS (64) commands and fewer than HISTORY_KEY_BYTES (8 KB) of them,
 * else starts one: decided from what is stored, so the keys are the same whether the
 * model stayed cached, was reloaded between two flushes or had several flushes in one
 * step. */
Test(state_store, flushes_share_history_keys_while_the_last_one_has_room)
{
    enum { K = HISTORY_KEY_COMMANDS };
    enum { FLUSHES = K + K / 4 };        /* of 2 commands: keys at 0, K and 2K */
    const char *ids[] = {"a", "b", "c"}; /* cached, reloaded, one step */
    open_store();
    int64_t offset = 0;
    for (int m = 0; m < 3; m++) {
        for (int i = 0; i < FLUSHES; i++) {
            flush_creates(ids[m], "c1", (uint64_t)i + 1, 1);
            if (m == 0)
                commit(offset++);
            if (m == 1) { /* its last key read back before every flush */
                commit(offset++);
                open_store();
            }
        }
        commit(offset++);
    }
    /* A flush that takes the last key past HISTORY_KEY_BYTES closes it: the next
     * starts one. */
    enum { TEXT = HISTORY_KEY_BYTES + 1000 };
    static char json[TEXT + 256];
    static char text[TEXT + 1];
    memset(text, 'x', TEXT);
    text[TEXT] = '\0';
    for (int m = 0; m < 3; m++) {
        snprintf(json, sizeof(json),
                 "{\"type\":\"flush\",\"client\":\"c1\",\"seq\":%d,\"from\":%d,"
                 "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":"
                 "{\"text\":\"%s\"}},\"createdId\":\"t\"}]}",
                 FLUSHES + 1, 2 * FLUSHES, text);
        flush(ids[m], "c1", FLUSHES + 1, json);
        flush_creates(ids[m], "c1", FLUSHES + 2, 1);
    }
    commit(offset);
    /* K = 16 gave {0, 16}, {16, 16}, {32, 9}, {41, 2}. */
    const uint64_t expected[][2] = {
        {0, K}, {K, K}, {2 * K, K / 2 + 1}, {2 * K + K / 2 + 1, 2}};
    for (int m = 0; m < 3; m++) {
        uint64_t keys[8][2];
        int n = stored_history_keys(ids[m], keys, 8);
        cr_assert_eq(n, 4, "%s: %d history keys", ids[m], n);
        for (int i = 0; i < n; i++)
            cr_assert(keys[i][0] == expected[i][0] && keys[i][1] == expected[i][1],
                      "%s: key %d at %llu with %llu commands", ids[m], i,
                      (unsigned long long)keys[i][0], (unsigned long long)keys[i][1]);
        open_store();
        expect_history(ids[m], 0, 2 * K + K / 2 + 3, true); /* and it all loads back */
    }
}

/* A snapshot record installed in the middle of a step deletes ranges, which hands the
 * step's writes so far to RocksDB: a history key's put and first append go before the
 * range delete, its later appends after it, and the key still reads back whole. */
Test(state_store, appends_to_a_key_on_both_sides_of_a_range_delete_read_back_whole)
{
    open_store();
    flush_creates("m", "alice", 1, 1);
    commit(0);
    msgpack_sbuffer snap;
    pack_snapshot_record(&snap);
    start_over();
    open_store();
    flush_creates("a", "c1", 1, 1); /* key 0: a put of 2 commands */
    commit(0);
    flush_creates("a", "c1", 2, 1); /* appended */
    cr_assert_eq(state_store_install_snapshot(store, "m", 1, snap.data, snap.size, errstr,
                                              sizeof(errstr)),
                 1, "%s", errstr);
    flush_creates("a", "c1", 3, 1); /* appended after the range deletes */
    flush_creates("a", "c1", 4, 1);
    expect_history("a", 0, 8, true); /* the model as cached, before the commit */
    commit(1);
    msgpack_sbuffer_destroy(&snap);
    uint64_t keys[4][2];
    int n = stored_history_keys("a", keys, 4);
    cr_assert_eq(n, 1, "%d history keys", n);
    cr_assert(keys[0][0] == 0 && keys[0][1] == 8, "key at %llu with %llu commands",
              (unsigned long long)keys[0][0], (unsigned long long)keys[0][1]);
    open_store();
    expect_history("a", 0, 8, true);
}

static int table_files(void)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        n += len > 4 && !strcmp(e->d_name + len - 4, ".sst");
    }
    closedir(d);
    return n;
}

/* Loading a model seeks its history, past snapshots and client records with RocksDB's
 * prefix filters, which skip a table file that holds no key of the model's prefix. A
 * snapshot record's range deletes are no such keys: in a newer file than the keys they
 * delete, they must still hide them. */
Test(state_store, range_deletes_in_a_newer_table_file_hide_an_older_files_keys)
{
    conf.changelog = true; /* each close flushes the memtable into a table file */
    open_store();
    flush_creates("m", "alice", 1, 5); /* 10 commands: ahead of bob's 6 below */
    commit(0);
    msgpack_sbuffer snap;
    pack_snapshot_record(&snap);
    uint64_t count;
    codec_value_t *want = document_of("m", &count);
    start_over();
    open_store();
    flush_creates("m", "bob", 1, 3); /* history and a client record for bob */
    commit(0);
    open_store(); /* bob's keys are in a table file */
    int before = table_files();
    cr_assert_eq(state_store_install_snapshot(store, "m", 1, snap.data, snap.size, errstr,
                                              sizeof(errstr)),
                 1, "%s", errstr);
    commit(1);
    msgpack_sbuffer_destroy(&snap);
    open_store(); /* the range deletes are in a newer one */
    cr_assert_gt(table_files(), before, "the install is in a table file of its own");
    uint64_t got_count;
    codec_value_t *got = document_of("m", &got_count);
    cr_assert_eq(got_count, count, "the snapshot's count, not bob's history replayed");
    cr_assert(codec_value_equal(got, want));
    for (uint64_t from = 0; from < count; from++) /* bob's history is deleted */
        expect_history("m", from, from + 1, false);
    state_model_t *m = model("m");
    cr_assert_eq(state_model_check_seq(store, m, "bob", 3, 1, NULL), STATE_SEQ_NEW,
                 "bob's client record is deleted");
    cr_assert_eq(state_model_check_seq(store, m, "alice", 5, 1, NULL),
                 STATE_SEQ_DUPLICATE, "alice's comes with the snapshot");
    codec_value_destroy(want);
    codec_value_destroy(got);
}

/* The merge operator joins arrays of completions whatever their count (array heads of
 * 1, 3 and 5 bytes), and refuses to append to a value that is not an array (a single
 * completion, as earlier versions stored one): RocksDB then reports the key as corrupt
 * instead of returning a value that is neither. */
Test(state_store, the_history_merge_operator_joins_arrays_and_refuses_anything_else)
{
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_merge_operator(o, state_store_merge_operator_new());
    char *err = NULL;
    rocksdb_t *db = rocksdb_open(o, dir, &err);
    cr_assert_null(err, "%s", err);
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    /* "a": [0], then [1, 2], then [3] ... [69999] one by one: 70,000 items. */
    rocksdb_put(db, wo, "a", 1, "\x91\x00", 2, &err);
    cr_assert_null(err);
    rocksdb_merge(db, wo, "a", 1, "\x92\x01\x02", 3, &err);
    cr_assert_null(err);
    enum { ITEMS = 70000 };
    for (uint32_t i = 3; i < ITEMS; i++) {
        char one[6] = {(char)0x91,      (char)0xce,     (char)(i >> 24),
                       (char)(i >> 16), (char)(i >> 8), (char)i};
        rocksdb_merge(db, wo, "a", 1, one, sizeof(one), &err);
        cr_assert_null(err);
        if (i == 14 || i == 200) { /* 15 items: the last fixarray head; 201: array 16 */
            size_t len;
            char *v = rocksdb_get(db, ro, "a", 1, &len, &err);
            cr_assert_null(err, "%s", err);
            cr_assert_eq((unsigned char)v[0], i == 14 ? 0x9f : 0xdc);
            free(v);
        }
    }
    size_t len;
    char *v = rocksdb_get(db, ro, "a", 1, &len, &err);
    cr_assert_null(err, "%s", err);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&up, v, len, &off), MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(off, len);
    cr_assert_eq((unsigned char)v[0], 0xdd, "an array 32 head");
    cr_assert_eq(up.data.type, MSGPACK_OBJECT_ARRAY);
    cr_assert_eq(up.data.via.array.size, ITEMS);
    for (uint32_t i = 0; i < ITEMS; i++)
        cr_assert_eq(up.data.via.array.ptr[i].via.u64, i, "item %u", i);
    msgpack_unpacked_destroy(&up);
    free(v);
    /* "b": a single completion (a map), then an append. */
    rocksdb_put(db, wo, "b", 1, "\x81\xa1x\x01", 4, &err);
    cr_assert_null(err);
    rocksdb_merge(db, wo, "b", 1, "\x91\x02", 2, &err);
    cr_assert_null(err);
    v = rocksdb_get(db, ro, "b", 1, &len, &err);
    cr_assert_null(v, "no value that is neither");
    cr_assert_not_null(err);
    cr_assert(strstr(err, "orrupt") || strstr(err, "erge"), "%s", err);
    rocksdb_free(err);
    rocksdb_readoptions_destroy(ro);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);
    rocksdb_options_destroy(o);
}

/* A changelog store writes client records at its flush points and when their model
 * leaves the cache, not with every step: a model evicted by the commit and loaded again
 * still knows its clients' retries, and its snapshot record, packed between steps,
 * lists the clients of the step just committed. */
Test(state_store, a_changelog_store_writes_client_records_before_they_are_read_back)
{
    conf.changelog = true;
    conf.cache_bytes = 1; /* every commit evicts everything */
    open_store();
    two_clients_flush();
    state_model_t *m = model("m"); /* loaded again */
    state_retry_t retry;
    cr_assert_eq(state_model_check_seq(store, m, "bob", 3, 4, &retry),
                 STATE_SEQ_DUPLICATE);
    cr_assert_eq(retry.at, 2);
    cr_assert_eq(retry.mapped_paths_len, 6, "{\"1\":[\"3\"]}");
    cr_assert_eq(state_model_check_seq(store, m, "alice", 5, 0, NULL),
                 STATE_SEQ_DUPLICATE);

    start_over();
    conf.cache_bytes = 64 << 20; /* cached: the records are in the cache alone */
    open_store();
    two_clients_flush();
    msgpack_sbuffer snap;
    pack_snapshot_record(&snap);
    codec_value_t *rec = NULL;
    cr_assert_eq(codec_msgpack_decode(snap.data, snap.size, &codec_limits_trusted, &rec,
                                      errstr, sizeof(errstr)),
                 0, "%s", errstr);
    const codec_value_t *clients = codec_map_get(rec, "clients", 7);
    cr_assert(clients && clients->type == CODEC_VALUE_MAP);
    cr_assert_eq(clients->u.map.count, 2);
    const codec_value_t *bob = codec_map_get(clients, "bob", 3);
    cr_assert(bob && bob->type == CODEC_VALUE_MAP);
    const codec_value_t *seq = codec_map_get(bob, "seq", 3);
    cr_assert(seq && seq->type == CODEC_VALUE_INT && seq->u.i == 4);
    codec_value_destroy(rec);
    msgpack_sbuffer_destroy(&snap);
}

/* A changelog store closed with a step not committed (a partition stopped mid-step)
 * writes nothing of that step: the client record its flush updated in the cache is
 * not written at close. The store comes back as a commit left it (here, as a crash
 * would, at its last flush point): that flush is not applied and its seq is new, and
 * each client record agrees with the history it comes back with. */
Test(state_store, a_changelog_store_closed_mid_step_keeps_the_step_out)
{
    conf.changelog = true;
    open_store();
    state_store_restore_begin(store);
    flush_creates("a", "c1", 1, 1);
    commit(0);
    flush_creates("a", "c1", 2, 1);
    commit(1);
    /* A flush point, synchronous: both flushes and c1's record in table files. */
    cr_assert_eq(state_store_restore_end(store, errstr, sizeof(errstr)), 0, "%s", errstr);
    flush_creates("a", "c1", 3, 1);
    commit(2);                      /* in the memtable */
    flush_creates("a", "c1", 4, 1); /* not committed */
    open_store();                   /* closes the store mid-step */
    state_model_t *m = model("a");
    uint64_t count = state_master_command_count(state_model_master(m));
    cr_assert(count == 4 || count == 6, "as commit 1 or 2 left it: %llu commands",
              (unsigned long long)count);
    cr_assert_eq(state_model_check_seq(store, m, "c1", 2, 4, NULL), STATE_SEQ_NEW,
                 "not applied, so not a retry");
    cr_assert_eq(state_model_check_seq(store, m, "c1", 2, 3, NULL),
                 count == 6 ? STATE_SEQ_DUPLICATE : STATE_SEQ_NEW);
    cr_assert_eq(state_model_check_seq(store, m, "c1", 2, 2, NULL), STATE_SEQ_DUPLICATE);
}

Test(state_store, records_the_partition_count_it_was_built_for)
{
    open_store();
    cr_assert_eq(state_store_partition_count(store), -1, "a new store has none");
    state_store_set_partition_count(store, 12);
    cr_assert_eq(state_store_partition_count(store), -1, "not before the commit");
    commit(1);
    use_partition(3);
    state_store_set_partition_count(store, 24);
    commit(1);
    open_store();
    use_partition(0);
    cr_assert_eq(state_store_partition_count(store), 12);
    use_partition(3);
    cr_assert_eq(state_store_partition_count(store), 24, "per partition");
    use_partition(1);
    cr_assert_eq(state_store_partition_count(store), -1);
    use_partition(0);
    cr_assert_eq(state_store_drop_partition(store, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
    cr_assert_eq(state_store_partition_count(store), -1, "dropped with its partition");
}

Test(state_store, stats_count_cache_hits_and_misses)
{
    open_store();
    state_store_stats_t st;
    state_store_stats(store, &st);
    cr_assert_eq(st.cache_hits + st.cache_misses + st.cache_models, 0);
    flush_creates("a", "c1", 1, 2);
    flush_creates("b", "c1", 1, 1);
    commit(2);
    model("a");
    state_store_stats(store, &st);
    cr_assert_eq(st.cache_models, 2);
    cr_assert_eq(st.cache_misses, 2, "each model loaded once");
    cr_assert_geq(st.cache_hits, 1, "found in the cache afterwards");
    cr_assert_gt(st.cache_bytes, 0);
    cr_assert_gt(st.memtable_bytes, 0, "RocksDB's figures come through");
    cr_assert_gt(st.estimated_keys, 0);
    cr_assert_eq(st.write_stopped, 0);
}

/* ---- nesting: whatever the request limits accept reads back from every form ---- */

/* Packs a flush of one command at path ("1" then "a"s, path_len elements in all; none
 * for 0) whose props nest `levels` maps: {"a":{"a":...{"a":1}}}. */
static void pack_deep_flush(msgpack_sbuffer *sb, const char *client, uint64_t seq,
                            uint64_t from, const char *action, int path_len, int levels)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    codec_msgpack_pack_str(&pk, "type", 4);
    codec_msgpack_pack_str(&pk, "flush", 5);
    codec_msgpack_pack_str(&pk, "client", 6);
    codec_msgpack_pack_str(&pk, client, strlen(client));
    codec_msgpack_pack_str(&pk, "seq", 3);
    msgpack_pack_uint64(&pk, seq);
    codec_msgpack_pack_str(&pk, "from", 4);
    msgpack_pack_uint64(&pk, from);
    codec_msgpack_pack_str(&pk, "completions", 11);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 1);
    codec_msgpack_pack_str(&pk, "command", 7);
    msgpack_pack_map(&pk, 3);
    codec_msgpack_pack_str(&pk, "action", 6);
    codec_msgpack_pack_str(&pk, action, strlen(action));
    codec_msgpack_pack_str(&pk, "path", 4);
    msgpack_pack_array(&pk, (size_t)path_len);
    for (int i = 0; i < path_len; i++)
        codec_msgpack_pack_str(&pk, i ? "a" : "1", 1);
    codec_msgpack_pack_str(&pk, "props", 5);
    for (int i = 0; i < levels; i++) {
        msgpack_pack_map(&pk, 1);
        codec_msgpack_pack_str(&pk, "a", 1);
    }
    msgpack_pack_int(&pk, 1);
}

/* Decodes a packed flush under limits (as the processor does) and applies it.
 * @returns the decoder's verdict; only an accepted flush is applied. */
static codec_err_t flush_packed(const char *id, const char *client, uint64_t seq,
                                const msgpack_sbuffer *sb, const codec_limits_t *limits)
{
    codec_request_t req;
    codec_err_t err = codec_request_decode(sb->data, sb->size, id, strlen(id), limits,
                                           NULL, &req, errstr, sizeof(errstr));
    if (!err)
        apply_request(id, client, seq, &req);
    codec_request_clear(&req);
    return err;
}

/* The model's document, command count and whole history, packed. */
typedef struct packed_model_s {
    msgpack_sbuffer doc;
    uint64_t count;
    codec_packed_t history;
} packed_model_t;

static void packed_model_take(packed_model_t *pm, const char *id, bool history)
{
    state_model_t *m = model(id);
    msgpack_sbuffer_init(&pm->doc);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &pm->doc, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, state_master_document(state_model_master(m)));
    pm->count = state_master_command_count(state_model_master(m));
    codec_packed_init(&pm->history);
    state_history_t h = state_model_history(m);
    if (history) /* a restored snapshot keeps none */
        cr_assert_eq(h.range(h.opaque, 0, pm->count, &pm->history), 0,
                     "the whole history");
}

static void packed_model_destroy(packed_model_t *pm)
{
    msgpack_sbuffer_destroy(&pm->doc);
    codec_packed_destroy(&pm->history);
}

/* The model as it is now must be want byte for byte (and its history too). */
static void expect_model(const char *id, const packed_model_t *want, bool history,
                         const char *how)
{
    packed_model_t got;
    packed_model_take(&got, id, history);
    cr_assert_eq(got.count, want->count, "%s: command count", how);
    cr_assert(got.doc.size == want->doc.size &&
                  !memcmp(got.doc.data, want->doc.data, got.doc.size),
              "%s: the document differs", how);
    if (history)
        cr_assert(got.history.buf.size == want->history.buf.size &&
                      !memcmp(got.history.buf.data, want->history.buf.data,
                              got.history.buf.size),
                  "%s: the history differs", how);
    packed_model_destroy(&got);
}

/* Under limits, builds the deepest document those limits let requests make (a path
 * as long as they accept, then props as deep as they accept), and checks it reads
 * back identically from each form it is stored or published in: the store after a
 * reopen (stored snapshot and history, no cache), its change records applied to a new
 * store, its snapshot record installed in a new store. */
static void deepest_document_reads_back(const codec_limits_t *limits)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int path_len = (int)limits->max_path_length;

    /* The deepest props these limits accept, found by asking the decoder. */
    int deepest = 0;
    for (;; deepest++) {
        pack_deep_flush(&sb, "x", 1, 0, "create", path_len, deepest + 1);
        codec_request_t req;
        codec_err_t err = codec_request_decode(sb.data, sb.size, "m", 1, limits, NULL,
                                               &req, errstr, sizeof(errstr));
        codec_request_clear(&req);
        if (err) {
            cr_assert_eq(err, CODEC_ERR_TOO_DEEP, "%s", errstr);
            break;
        }
    }
    cr_assert_gt(deepest, 30);

    change_t recorded[64];
    record_changes(recorded, 64);
    open_store();
    /* The flush of the report: props 30 levels deep, 194 bytes. */
    uint64_t seq = 1;
    pack_deep_flush(&sb, "alice", seq, 0, "create", 0, 30);
    cr_assert_eq(flush_packed("m", "alice", seq++, &sb, limits), CODEC_OK, "%s", errstr);
    /* A chain of "a"s under "1" long enough for the longest path (each update extends
     * it by as much as props go). */
    int chain = 29; /* "1" then this many "a"s are maps */
    while (chain < path_len - 1) {
        int at = chain < path_len - 1 ? chain : path_len - 1;
        uint64_t from = state_master_command_count(state_model_master(model("m")));
        pack_deep_flush(&sb, "alice", seq, from, "update", at + 1, deepest);
        cr_assert_eq(flush_packed("m", "alice", seq++, &sb, limits), CODEC_OK, "%s",
                     errstr);
        chain = at + deepest - 1;
        cr_assert_lt(change_count, 63);
    }
    /* The deepest create: at the longest path, the deepest props. */
    uint64_t from = state_master_command_count(state_model_master(model("m")));
    pack_deep_flush(&sb, "bob", 1, from, "create", path_len, deepest);
    cr_assert_eq(flush_packed("m", "bob", 1, &sb, limits), CODEC_OK, "%s", errstr);
    cr_assert_eq(state_master_command_count(state_model_master(model("m"))), from + 1,
                 "the deepest create is applied");
    commit(1);
    changes = NULL;

    packed_model_t want;
    packed_model_take(&want, "m", true);
    msgpack_sbuffer snap;
    pack_snapshot_record(&snap);

    /* Reloaded from the store alone. */
    open_store();
    expect_model("m", &want, true, "reopened");

    /* Caught up from the change records by a new store. */
    start_over();
    open_store();
    int64_t offset = -1;
    for (size_t i = 0; i < change_count; i++)
        cr_assert_eq(state_store_apply_change(store, "m", 1, recorded[i].value.data,
                                              recorded[i].value.size, &offset, errstr,
                                              sizeof(errstr)),
                     STATE_CHANGE_APPLIED, "change record %zu: %s", i, errstr);
    commit(offset + 1);
    expect_model("m", &want, true, "from change records");
    open_store();
    expect_model("m", &want, true, "from change records, reopened");

    /* Restored from the snapshot record by a new store. */
    start_over();
    open_store();
    cr_assert_eq(state_store_install_snapshot(store, "m", 1, snap.data, snap.size, errstr,
                                              sizeof(errstr)),
                 1, "%s", errstr);
    commit(1);
    open_store();
    expect_model("m", &want, false, "from the snapshot record");
    msgpack_sbuffer again;
    pack_snapshot_record(&again);
    cr_assert(again.size == snap.size && !memcmp(again.data, snap.data, snap.size),
              "the restored model publishes the same snapshot record");

    msgpack_sbuffer_destroy(&again);
    msgpack_sbuffer_destroy(&snap);
    packed_model_destroy(&want);
    free_changes(recorded, 64);
    msgpack_sbuffer_destroy(&sb);
}

Test(state_store, the_deepest_document_the_default_limits_accept_reads_back)
{
    deepest_document_reads_back(&codec_limits_default);
}

Test(state_store, the_deepest_document_any_accepted_limits_allow_reads_back)
{
    codec_limits_t limits = codec_limits_default;
    limits.max_depth = CODEC_MAX_MAX_DEPTH;
    limits.max_path_length = CODEC_MAX_MAX_PATH_LENGTH;
    cr_assert_leq(codec_limits_stored_depth(&limits), codec_limits_trusted.max_depth);
    deepest_document_reads_back(&limits);
}

/* A model whose flushes all failed stays at count 0, but its client records are
 * state: the sweep publishes them in a snapshot record, and once retention removed
 * the change records that record is all a new owner has. Skipped as "not ahead", the
 * retry of such a flush was applied again on the new owner, and a stale one too. */
Test(state_store, a_snapshot_record_at_count_0_restores_its_client_records)
{
    open_store();
    const char *failing = "{\"type\":\"flush\",\"client\":\"alice\",\"seq\":5,\"from\":0,"
                          "\"completions\":[{\"command\":{\"action\":\"update\","
                          "\"path\":[\"nowhere\"],\"props\":{\"x\":1}}}]}";
    flush("m", "alice", 5, failing);
    commit(1);
    cr_assert_eq(state_master_command_count(state_model_master(model("m"))), 0);
    msgpack_sbuffer snap;
    pack_snapshot_record(&snap);

    start_over();
    open_store();
    cr_assert_eq(state_store_install_snapshot(store, "m", 1, snap.data, snap.size, errstr,
                                              sizeof(errstr)),
                 1, "installed: %s", errstr);
    commit(-1);
    open_store();
    cr_assert_eq(state_model_check_seq(store, model("m"), "alice", 5, 5, NULL),
                 STATE_SEQ_DUPLICATE, "the retry is recognised");
    cr_assert_eq(state_model_check_seq(store, model("m"), "alice", 5, 4, NULL),
                 STATE_SEQ_STALE, "an older flush is refused");
    msgpack_sbuffer again;
    pack_snapshot_record(&again);
    cr_assert(again.size == snap.size && !memcmp(again.data, snap.data, snap.size),
              "the restored model publishes the same snapshot record");
    /* Installing it again changes nothing: the model now has client records. */
    cr_assert_eq(state_store_install_snapshot(store, "m", 1, snap.data, snap.size, errstr,
                                              sizeof(errstr)),
                 0, "%s", errstr);
    msgpack_sbuffer_destroy(&again);
    msgpack_sbuffer_destroy(&snap);
}

/* Worker threads run on the default pthread stack: 8 MB under the usual stack limit,
 * but 2 MB (glibc's own default) when the limit is unlimited. The deepest document
 * any accepted limits allow must read back, and encode as JSON (apply, inspect), on
 * that much stack: the tree operations (copy, equality, size, packing, destroying)
 * recurse once per level. */
static void *deepest_on_a_thread(void *arg)
{
    deepest_document_reads_back(arg);
    char *json =
        codec_json_encode(state_master_document(state_model_master(model("m"))), NULL);
    cr_assert_gt(strlen(json), CODEC_MAX_MAX_DEPTH + CODEC_MAX_MAX_PATH_LENGTH - 8);
    free(json);
    return NULL;
}

Test(state_store, the_deepest_document_reads_back_on_the_smallest_default_thread_stack)
{
    codec_limits_t limits = codec_limits_default;
    limits.max_depth = CODEC_MAX_MAX_DEPTH;
    limits.max_path_length = CODEC_MAX_MAX_PATH_LENGTH;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    cr_assert_eq(pthread_attr_setstacksize(&attr, 2u << 20), 0);
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, &attr, deepest_on_a_thread, &limits), 0);
    pthread_join(thread, NULL);
    pthread_attr_destroy(&attr);
}

Test(state_store, an_unreadable_snapshot_record_is_refused_not_skipped)
{
    open_store();
    /* Cut short, and a record of another type: neither is installed as nothing. */
    cr_assert_eq(state_store_install_snapshot(store, "m", 1, "\x85\xa4type", 6, errstr,
                                              sizeof(errstr)),
                 -1);
    cr_assert(strstr(errstr, "not a snapshot record"), "%s", errstr);
    cr_assert_eq(
        state_store_install_snapshot(store, "m", 1, "\x90", 1, errstr, sizeof(errstr)),
        -1);
}

/* An unreadable client record is not "no record": taken as one, the client's retry
 * would be applied a second time. The store refuses the step instead. */
Test(state_store, an_unreadable_client_record_fails_the_step_not_the_retry)
{
    open_store();
    flush("m", "bob", 4,
          "{\"type\":\"flush\",\"client\":\"bob\",\"seq\":4,\"from\":0,\"completions\":["
          "{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}");
    commit(1);
    rocksdb_t *db = raw_db();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    int corrupted = 0;
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen > 5 && k[4] == STATE_ITEM_CLIENT) {
            char *err = NULL;
            rocksdb_put(db, wo, k, klen, "\xc1", 1, &err); /* 0xc1: never msgpack */
            cr_assert_null(err);
            corrupted++;
        }
    }
    cr_assert_eq(corrupted, 1, "bob's record");
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_writeoptions_destroy(wo);
    rocksdb_close(db);

    open_store();
    state_model_check_seq(store, model("m"), "bob", 3, 4, NULL);
    cr_assert_neq(state_store_commit(store, 2, errstr, sizeof(errstr)), 0,
                  "the step is refused");
    cr_assert(strstr(errstr, "client record \"bob\" of model \"m\" cannot be read"), "%s",
              errstr);
}

/* How many blob files RocksDB keeps in the store's directory. */
static int blob_files(void)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "ls '%s' | grep -c '\\.blob$'", dir);
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    int n = -1;
    cr_assert_eq(fscanf(f, "%d", &n), 1);
    pclose(f);
    return n;
}

/* Values of 64 KB and more (a large document's snapshot) go to blob files, turned on
 * with the first one; a store of small documents has none. Both read back. A changelog
 * store (run's) flushes its memtable when closed, under the options of the moment. */
Test(state_store, large_values_go_to_blob_files_small_ones_do_not)
{
    conf.changelog = true;
    open_store();
    flush_creates("small", "c", 1, 5);
    commit(0);
    open_store(); /* closing flushes the memtable */
    cr_assert_eq(blob_files(), 0);

    enum { BIG = 100000 };
    char *json = test_big_create_flush("x", BIG);
    flush("big", "c", 1, json);
    free(json);
    commit(1);
    open_store();
    cr_assert_geq(blob_files(), 1);
    uint64_t count;
    codec_value_t *doc = document_of("big", &count);
    cr_assert_eq(count, 1);
    const codec_value_t *x = codec_map_get(doc, "x", 1);
    cr_assert_not_null(x);
    cr_assert_eq(codec_map_get(x, "s", 1)->u.str.len, BIG);
    codec_value_destroy(doc);
    codec_value_destroy(document_of("small", &count));
    cr_assert_eq(count, 10);
}

/* Stores sharing a cache pool each keep more than their share while the pool's total is
 * within its budget, and evict down to their share once it is not; a closed store's
 * part leaves the pool. */
static atomic_size_t pool;

Test(state_store, a_store_keeps_more_than_its_share_while_its_pool_has_room)
{
    atomic_store(&pool, 0);
    conf.cache_bytes = 1; /* its share: nothing */
    conf.cache_pool = &pool;
    conf.cache_pool_bytes = 64 << 20;
    open_store();
    flush_creates("a", "c", 1, 5);
    flush_creates("b", "c", 1, 5);
    commit(0);
    state_store_stats_t st;
    state_store_stats(store, &st);
    cr_assert_eq(st.cache_models, 2, "the pool has room: both kept");
    cr_assert_eq(atomic_load(&pool), st.cache_bytes, "the pool counts them");

    atomic_fetch_add(&pool, (size_t)64 << 20); /* another store takes the budget */
    model("a");
    commit(1);
    state_store_stats(store, &st);
    cr_assert_eq(st.cache_models, 0, "over the budget: down to its share");
    cr_assert_eq(atomic_load(&pool), (size_t)64 << 20);

    atomic_fetch_sub(&pool, (size_t)64 << 20); /* room again */
    model("a");
    model("b");
    commit(2);
    state_store_stats(store, &st);
    cr_assert_eq(st.cache_models, 2);
    state_store_close(store);
    store = NULL;
    cr_assert_eq(atomic_load(&pool), 0, "a closed store leaves the pool");
}

/* A document edited in place stays small, and so does what the cache charges for it:
 * each flush charges an estimate of growth, but every snapshot rewrite measures the
 * document again. Charging every update as growth made 1,000 busy models overflow
 * the default --cache-mb and reload over and over. */
Test(state_store, a_models_charge_follows_its_document_not_its_edits)
{
    atomic_store(&pool, 0);
    conf.history = 10;    /* a small in-memory history: the charge is the document's */
    conf.cache_bytes = 1; /* its share: nothing, so the pool decides what stays */
    conf.cache_pool = &pool;
    conf.cache_pool_bytes = 64 << 20;
    open_store();
    flush_creates("a", "c1", 1, 1); /* items["1"] */
    char pad[201];
    memset(pad, 'x', 200);
    pad[200] = '\0';
    for (uint64_t seq = 2; seq < 2002; seq++) {
        uint64_t from = state_master_command_count(state_model_master(model("a")));
        char json[1024];
        snprintf(json, sizeof(json),
                 "{\"type\":\"flush\",\"client\":\"c1\",\"seq\":%llu,\"from\":%llu,"
                 "\"completions\":[{\"command\":{\"action\":\"update\",\"path\":"
                 "[\"items\",\"1\"],\"props\":{\"text\":\"%s%llu\"}}}]}",
                 (unsigned long long)seq, (unsigned long long)from, pad,
                 (unsigned long long)seq);
        flush("a", "c1", seq, json);
        if (seq % 100 == 0)
            commit((int64_t)seq);
    }
    commit(2002);
    state_store_stats_t st;
    state_store_stats(store, &st);
    cr_assert_eq(st.cache_models, 1);
    size_t edited = st.cache_bytes;

    /* Whatever was charged and taken back, the model's going returns all of it. */
    atomic_fetch_add(&pool, (size_t)64 << 20); /* another store takes the budget */
    model("a");
    commit(2003);
    state_store_stats(store, &st);
    cr_assert_eq(st.cache_models, 0);
    cr_assert_eq(st.cache_bytes, 0, "%zu bytes left charged", (size_t)st.cache_bytes);
    cr_assert_eq(atomic_load(&pool), (size_t)64 << 20);
    atomic_fetch_sub(&pool, (size_t)64 << 20);

    model("a"); /* a fresh load measures the document */
    state_store_stats(store, &st);
    size_t loaded = st.cache_bytes;
    cr_assert_lt(edited, 2 * loaded + 16384,
                 "2,000 edits of a %zu-byte model charged %zu bytes", loaded, edited);
    cr_assert_lt(edited, 64 * 1024,
                 "charged %zu bytes (2,000 x 2 x 230 were charged before)", edited);
}

/* What a store answered and held over a run of flushes (history_workload()). */
typedef struct transcript_s {
    char *text;
    size_t len, cap;
} transcript_t;

static void say(transcript_t *t, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    cr_assert(n >= 0 && (size_t)n < sizeof(line));
    if (t->len + (size_t)n + 1 > t->cap) {
        t->cap = (t->len + (size_t)n + 1) * 2;
        t->text = realloc(t->text, t->cap);
        cr_assert_not_null(t->text);
    }
    memcpy(t->text + t->len, line, (size_t)n + 1);
    t->len += (size_t)n;
}

/* Every version of id from its count - 20 on, rebuilt by time travel. */
static void say_travel(transcript_t *t, const char *id)
{
    state_model_t *m = model(id);
    uint64_t count = state_master_command_count(state_model_master(m));
    say(t, "%s at %llu:", id, (unsigned long long)count);
    for (uint64_t at = count > 20 ? count - 20 : 0; at <= count; at++) {
        state_master_t *past = NULL;
        uint64_t oldest = 0;
        state_travel_t tr =
            state_model_travel(store, m, at, &past, &oldest, errstr, sizeof(errstr));
        cr_assert_neq(tr, STATE_TRAVEL_FAILED, "%s at %llu: %s", id,
                      (unsigned long long)at, errstr);
        if (tr == STATE_TRAVEL_UNAVAILABLE) {
            say(t, " %llu<%llu", (unsigned long long)at, (unsigned long long)oldest);
            continue;
        }
        size_t len;
        char *json = codec_json_encode(state_master_document(past), &len);
        /* A digest of the document: enough to tell versions apart. */
        uint32_t h = 2166136261u;
        for (size_t i = 0; i < len; i++)
            h = (h ^ (unsigned char)json[i]) * 16777619u;
        say(t, " %llu=%08x", (unsigned long long)at, h);
        free(json);
        state_master_destroy(past);
    }
}

/* say_travel(), and the history of the last 6 commands. */
static void say_versions(transcript_t *t, const char *id)
{
    say_travel(t, id);
    state_model_t *m = model(id);
    uint64_t count = state_master_command_count(state_model_master(m));
    state_history_t hist = state_model_history(m);
    codec_packed_t out;
    codec_packed_init(&out);
    uint64_t from = count > 6 ? count - 6 : 0;
    cr_assert_eq(hist.range(hist.opaque, from, count, &out), 0);
    say(t, " history %u items %zu bytes\n", out.count, out.buf.size);
    codec_packed_destroy(&out);
}

/* Flushes of one to three creates and updates to three models, with commits (not
 * after every flush), evictions of every model, and reopens; after each flush, time
 * travel to the last 20 versions of each model. A window of 6 commands and a snapshot
 * rewrite every 7 make the history keys fill, close and get trimmed throughout. Ends
 * with the store closed and every key of the database in the transcript. */
static void history_workload(bool changelog, transcript_t *t)
{
    conf.changelog = changelog;
    conf.history = 6;
    conf.snapshot_every = 7;
    open_store();
    const char *ids[3] = {"a", "bb", "ccc"};
    uint64_t seqs[3] = {0};
    uint32_t r = 12345;
    int64_t offset = 0;
    for (int i = 0; i < 150; i++) {
        r = r * 1103515245u + 12345u;
        int which = (int)((r >> 16) % 3);
        flush_creates(ids[which], "c1", seqs[which]++, 1 + (int)((r >> 20) % 3));
        if ((r >> 24) % 3) {
            commit(++offset);
            if ((r >> 26) % 4 == 0) { /* every model leaves the cache */
                state_store_set_cache_bytes(store, 1);
                state_store_set_cache_bytes(store, 64 << 20);
            }
            if ((r >> 28) % 8 == 0)
                open_store(); /* a clean close: a flush point */
        }
        for (int j = 0; j < 3; j++)
            say_versions(t, ids[j]);
    }
    commit(++offset);
    rocksdb_t *db = raw_db();
    rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
    rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const unsigned char *k = (const unsigned char *)rocksdb_iter_key(it, &klen);
        const unsigned char *v = (const unsigned char *)rocksdb_iter_value(it, &vlen);
        uint32_t h = 2166136261u;
        for (size_t i = 0; i < vlen; i++)
            h = (h ^ v[i]) * 16777619u;
        say(t, "key");
        for (size_t i = 0; i < klen; i++)
            say(t, "%02x", k[i]);
        say(t, " %zu bytes %08x\n", vlen, h);
    }
    rocksdb_iter_destroy(it);
    rocksdb_readoptions_destroy(ro);
    rocksdb_close(db);
}

/* A changelog store holds the history of its flushes in memory until its next flush
 * point, or until their model leaves the cache, instead of writing it with every step:
 * time travel, the history it serves and, once closed, every key it stored must be
 * those of a logged store, which writes every step. */
Test(state_store, a_changelog_store_holds_history_as_a_logged_store_writes_it)
{
    transcript_t logged = {0}, changelog = {0};
    history_workload(false, &logged);
    start_over();
    history_workload(true, &changelog);
    cr_assert_gt(logged.len, 0);
    size_t at = 0;
    while (at < logged.len && at < changelog.len && logged.text[at] == changelog.text[at])
        at++;
    cr_assert(at == logged.len && at == changelog.len,
              "they differ at byte %zu:\nlogged:    %.200s\nchangelog: %.200s", at,
              logged.text + (at > 100 ? at - 100 : 0),
              changelog.text + (at > 100 ? at - 100 : 0));
    free(logged.text);
    free(changelog.text);
}

/* Models with a snapshot and models with past snapshots (state_store_scan()). */
typedef struct snapshot_holders_s {
    char with_snapshot[4][8], with_past[4][8];
    int snapshots, pasts;
} snapshot_holders_t;

static void holders_add(char (*ids)[8], int *n, const char *id, size_t len)
{
    cr_assert_lt(len, 8);
    for (int i = 0; i < *n; i++)
        if (strlen(ids[i]) == len && !memcmp(ids[i], id, len))
            return;
    cr_assert_lt(*n, 4);
    memcpy(ids[*n], id, len);
    ids[(*n)++][len] = '\0';
}

static int holders_visit(void *opaque, const state_store_item_t *item)
{
    snapshot_holders_t *h = opaque;
    if (item->kind == STATE_ITEM_SNAPSHOT)
        holders_add(h->with_snapshot, &h->snapshots, item->model, item->model_len);
    else if (item->kind == STATE_ITEM_PAST)
        holders_add(h->with_past, &h->pasts, item->model, item->model_len);
    return 0;
}

/* Loading a model seeks its past snapshots only when it has a snapshot (store_cache.c):
 * a past snapshot is written only in the batch that writes its model's snapshot, and
 * a snapshot is never deleted on its own. Over rewrites and trims, an installed
 * snapshot record, evictions and a reopen, every model with past snapshots has a
 * snapshot, and each model, reloaded, travels back exactly as far as it did cached. */
Test(state_store, past_snapshots_are_stored_only_beside_their_models_snapshot)
{
    conf.history = 6;
    conf.snapshot_every = 7;
    open_store();
    for (uint64_t seq = 1; seq <= 8; seq++)
        flush_creates("m", "c1", seq, 1);
    commit(0);
    msgpack_sbuffer snap;
    pack_snapshot_record(&snap);
    start_over();

    open_store();
    /* 80 commands: a rewrite every 8, and a trim that drops the first history key (64
     * commands), so that the oldest versions travel from past snapshots alone. */
    for (uint64_t seq = 1; seq <= 40; seq++)
        flush_creates("a", "c1", seq, 1);
    flush_creates("small", "c1", 1, 1); /* 2 commands: no snapshot */
    cr_assert_eq(state_store_install_snapshot(store, "m", 1, snap.data, snap.size, errstr,
                                              sizeof(errstr)),
                 1, "%s", errstr);
    msgpack_sbuffer_destroy(&snap);
    commit(1);
    const char *ids[3] = {"a", "small", "m"};
    transcript_t cached = {0}, reloaded = {0};
    for (int i = 0; i < 3; i++)
        say_travel(&cached, ids[i]);
    state_store_set_cache_bytes(store, 1); /* every model leaves the cache */
    state_store_set_cache_bytes(store, 64 << 20);
    for (int i = 0; i < 3; i++)
        say_travel(&reloaded, ids[i]);
    open_store();
    for (int i = 0; i < 3; i++)
        say_travel(&reloaded, ids[i]);
    cr_assert_eq(reloaded.len, 2 * cached.len);
    cr_assert(!memcmp(reloaded.text, cached.text, cached.len) &&
                  !memcmp(reloaded.text + cached.len, cached.text, cached.len),
              "cached: %s\nreloaded: %s", cached.text, reloaded.text);

    snapshot_holders_t h = {0};
    cr_assert_eq(state_store_scan(store, holders_visit, &h, errstr, sizeof(errstr)), 0,
                 "%s", errstr);
    cr_assert_eq(h.pasts, 2,
                 "\"a\" (rewritten) and \"m\" (installed) have past snapshots");
    for (int i = 0; i < h.pasts; i++) {
        bool found = false;
        for (int j = 0; j < h.snapshots; j++)
            found |= !strcmp(h.with_past[i], h.with_snapshot[j]);
        cr_assert(found, "model %s has past snapshots but no snapshot", h.with_past[i]);
    }
    for (int j = 0; j < h.snapshots; j++)
        cr_assert_str_neq(h.with_snapshot[j], "small");
    free(cached.text);
    free(reloaded.text);
}
