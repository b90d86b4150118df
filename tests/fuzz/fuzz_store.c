/* tests/fuzz/fuzz_store.c - libFuzzer target: request bytes through the handler with
 * the RocksDB store, each input a committed step, and the store reopened now and then.
 *
 * The input is the record value and its length picks one of three models, so that the
 * seed corpus (request values, shared with fuzz_request) is valid input as it is: with
 * a model byte in front, no seed decoded and nothing was ever applied. The
 * store is tuned to make everything happen often: a 5-command history, snapshot
 * rewrites every 3 commands, a 64 KB cache (evictions), 2 client records per model.
 *
 * Checked properties (abort() on violation):
 *  - every reply decodes and is a map with a string "type";
 *  - every commit succeeds (input must never break the store);
 *  - every change record applies to a follower store (as a catch-up does), whose
 *    models must equal the store's: everything accepted reads back through the
 *    changes topic;
 *  - after closing and reopening the store, every model loads (snapshot + replayed
 *    history) to the same command count and document it had: replay of whatever
 *    the fuzzer applied is deterministic;
 *  - every model's snapshot record, installed in a fresh store, packs to the same
 *    bytes (document, count, client records): restores read back too. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/json.h"
#include "processor/handler.h"
#include "reply_check.h"

#define FUZZ_MODELS        3
#define FUZZ_REOPEN_INPUTS 300   /* inputs between reopen checks */
#define FUZZ_WIPE_INPUTS   30000 /* inputs before starting over with an empty store */

static char fuzz_dir[64], follower_dir[80], restored_dir[80];
static state_store_t *fuzz_store, *follower;
static processor_handler_t *fuzz_handler;
static unsigned fuzz_inputs;

static codec_value_t *initial_document;

static state_store_t *store_open(const char *dir)
{
    state_store_conf_t conf = {
        .initial_document = initial_document,
        .dir = dir,
        .history = 5,
        .snapshot_every = 3,
        .cache_bytes = 64 << 10,
        .clients_per_model = 2,
        .master = {.ids = STATE_IDS_SEQUENTIAL},
    };
    char errstr[512];
    state_store_t *s = state_store_open(&conf, errstr, sizeof(errstr));
    if (!s) {
        fprintf(stderr, "fuzz_store: %s\n", errstr);
        abort();
    }
    return s;
}

static void start(void)
{
    fuzz_store = store_open(fuzz_dir);
    follower = store_open(follower_dir);
    processor_handler_conf_t conf = {
        .store = fuzz_store,
        .master = {.ids = STATE_IDS_SEQUENTIAL},
        .history = 5,
        .limits = codec_limits_default,
        .initial_document = initial_document,
        .changes = true,
    };
    fuzz_handler = processor_handler_new(&conf);
}

static void stop(void)
{
    processor_handler_destroy(fuzz_handler);
    state_store_close(fuzz_store);
    state_store_close(follower);
    fuzz_handler = NULL;
    fuzz_store = NULL;
    follower = NULL;
}

static void model_name(int i, char *buf)
{
    snprintf(buf, 8, "m%d", i);
}

/* The model's snapshot record packed from s (document, count, client records). */
static void pack_model(state_store_t *s, const char *name, msgpack_sbuffer *sb)
{
    char errstr[512];
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (state_store_pack_snapshot_record(s, name, strlen(name), &pk, errstr,
                                         sizeof(errstr))) {
        fprintf(stderr, "fuzz_store: packing %s: %s\n", name, errstr);
        abort();
    }
}

static bool same_bytes(const msgpack_sbuffer *a, const msgpack_sbuffer *b)
{
    return a->size == b->size && !memcmp(a->data, b->data, a->size);
}

/* Applies the step's change record to the follower as a catch-up does. */
static void follow(const char *name, const processor_output_t *out)
{
    char errstr[512];
    if (out->change.size) {
        int64_t offset;
        state_change_t rc =
            state_store_apply_change(follower, name, strlen(name), out->change.data,
                                     out->change.size, &offset, errstr, sizeof(errstr));
        if (rc != STATE_CHANGE_APPLIED) {
            fprintf(stderr, "fuzz_store: change record of %s: %d %s\n", name, (int)rc,
                    rc == STATE_CHANGE_FAILED ? errstr : "");
            abort();
        }
    }
    if (state_store_commit(follower, -1, errstr, sizeof(errstr))) {
        fprintf(stderr, "fuzz_store: follower commit failed: %s\n", errstr);
        abort();
    }
}

/* Every model of the follower and of a store restored from the snapshot records
 * must pack to the bytes the store itself packs. */
static void compare_copies(void)
{
    char errstr[512], name[8], cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", restored_dir);
    if (system(cmd) != 0)
        abort();
    state_store_t *restored = store_open(restored_dir);
    for (int i = 0; i < FUZZ_MODELS; i++) {
        model_name(i, name);
        msgpack_sbuffer want, got;
        pack_model(fuzz_store, name, &want);
        pack_model(follower, name, &got);
        if (!same_bytes(&want, &got)) {
            fprintf(stderr, "fuzz_store: %s differs when caught up from change records\n",
                    name);
            abort();
        }
        msgpack_sbuffer_destroy(&got);
        if (state_store_install_snapshot(restored, name, strlen(name), want.data,
                                         want.size, errstr, sizeof(errstr)) < 0 ||
            state_store_commit(restored, -1, errstr, sizeof(errstr))) {
            fprintf(stderr, "fuzz_store: installing %s: %s\n", name, errstr);
            abort();
        }
        pack_model(restored, name, &got);
        if (!same_bytes(&want, &got)) {
            fprintf(stderr, "fuzz_store: %s differs when restored from its snapshot\n",
                    name);
            abort();
        }
        msgpack_sbuffer_destroy(&got);
        msgpack_sbuffer_destroy(&want);
    }
    state_store_close(restored);
}

/* Closes and reopens the store, and requires every model to come back the same. */
static void reopen_and_compare(void)
{
    codec_value_t *docs[FUZZ_MODELS];
    uint64_t counts[FUZZ_MODELS];
    char errstr[512], name[8];
    compare_copies();
    for (int i = 0; i < FUZZ_MODELS; i++) {
        model_name(i, name);
        state_model_t *m =
            state_store_model(fuzz_store, name, strlen(name), errstr, sizeof(errstr));
        if (!m) {
            fprintf(stderr, "fuzz_store: loading %s: %s\n", name, errstr);
            abort();
        }
        counts[i] = state_master_command_count(state_model_master(m));
        docs[i] = codec_value_copy(state_master_document(state_model_master(m)));
    }
    stop();
    start();
    for (int i = 0; i < FUZZ_MODELS; i++) {
        model_name(i, name);
        state_model_t *m =
            state_store_model(fuzz_store, name, strlen(name), errstr, sizeof(errstr));
        if (!m) {
            fprintf(stderr, "fuzz_store: reloading %s: %s\n", name, errstr);
            abort();
        }
        const state_master_t *master = state_model_master(m);
        if (state_master_command_count(master) != counts[i] ||
            !codec_value_equal(state_master_document(master), docs[i])) {
            fprintf(stderr,
                    "fuzz_store: %s reloads to another state (count %llu, was %llu)\n",
                    name, (unsigned long long)state_master_command_count(master),
                    (unsigned long long)counts[i]);
            abort();
        }
        codec_value_destroy(docs[i]);
    }
}

static void wipe(void)
{
    char cmd[320];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s' '%s'", fuzz_dir, follower_dir,
             restored_dir);
    if (system(cmd) != 0)
        abort();
}

static void at_exit(void)
{
    stop();
    wipe();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static processor_output_t out;
    if (!fuzz_handler) {
        snprintf(fuzz_dir, sizeof(fuzz_dir), "/tmp/flushout-fuzz-store-%d",
                 (int)getpid());
        snprintf(follower_dir, sizeof(follower_dir), "%s-follower", fuzz_dir);
        snprintf(restored_dir, sizeof(restored_dir), "%s-restored", fuzz_dir);
        char errstr[256];
        if (codec_json_decode(FUZZ_INITIAL_DOCUMENT, strlen(FUZZ_INITIAL_DOCUMENT),
                              &codec_limits_default, &initial_document, errstr,
                              sizeof(errstr))) {
            fprintf(stderr, "fuzz_store: initial document: %s\n", errstr);
            abort();
        }
        wipe();
        start();
        processor_output_init(&out);
        atexit(at_exit);
    }
    char name[8];
    model_name((int)(size % FUZZ_MODELS), name);

    processor_output_reset(&out);
    processor_handler_handle(fuzz_handler, -1, -1, name, strlen(name), (const char *)data,
                             size, &out);
    fuzz_check_reply(&out);
    char errstr[512];
    if (processor_handler_commit(fuzz_handler, (int64_t)fuzz_inputs, errstr,
                                 sizeof(errstr))) {
        fprintf(stderr, "fuzz_store: commit failed: %s\n", errstr);
        abort();
    }
    follow(name, &out);

    fuzz_inputs++;
    if (fuzz_inputs % FUZZ_REOPEN_INPUTS == 0)
        reopen_and_compare();
    if (fuzz_inputs % FUZZ_WIPE_INPUTS == 0) {
        stop();
        wipe();
        start();
    }
    return 0;
}
