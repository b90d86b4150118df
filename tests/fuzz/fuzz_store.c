/* tests/fuzz/fuzz_store.c - libFuzzer target: request bytes through the handler with
 * the RocksDB store, each input a committed step, and the store reopened now and then.
 *
 * The first input byte picks one of three models, the rest is the record value. The
 * store is tuned to make everything happen often: a 5-command history, snapshot
 * rewrites every 3 commands, a 64 KB cache (evictions), 2 client records per model.
 *
 * Checked properties (abort() on violation):
 *  - every reply decodes and is a map with a string "type";
 *  - every commit succeeds (input must never break the store);
 *  - after closing and reopening the store, every model loads (snapshot + replayed
 *    history) to the same command count and document it had: replay of whatever
 *    the fuzzer applied is deterministic. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "processor/handler.h"
#include "reply_check.h"

#define FUZZ_MODELS        3
#define FUZZ_REOPEN_INPUTS 300   /* inputs between reopen checks */
#define FUZZ_WIPE_INPUTS   30000 /* inputs before starting over with an empty store */

static char fuzz_dir[64];
static state_store_t *fuzz_store;
static processor_handler_t *fuzz_handler;
static unsigned fuzz_inputs;

static state_store_t *store_open(void)
{
    state_store_conf_t conf = {
        .dir = fuzz_dir,
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
    fuzz_store = store_open();
    processor_handler_conf_t conf = {
        .store = fuzz_store,
        .master = {.ids = STATE_IDS_SEQUENTIAL},
        .history = 5,
        .limits = codec_limits_default,
    };
    fuzz_handler = processor_handler_new(&conf);
}

static void stop(void)
{
    processor_handler_destroy(fuzz_handler);
    state_store_close(fuzz_store);
    fuzz_handler = NULL;
    fuzz_store = NULL;
}

static void model_name(int i, char *buf)
{
    snprintf(buf, 8, "m%d", i);
}

/* Closes and reopens the store, and requires every model to come back the same. */
static void reopen_and_compare(void)
{
    codec_value_t *docs[FUZZ_MODELS];
    uint64_t counts[FUZZ_MODELS];
    char errstr[512], name[8];
    for (int i = 0; i < FUZZ_MODELS; i++) {
        model_name(i, name);
        state_model_t *m =
            state_store_model(fuzz_store, 0, name, strlen(name), errstr, sizeof(errstr));
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
            state_store_model(fuzz_store, 0, name, strlen(name), errstr, sizeof(errstr));
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
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fuzz_dir);
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
        wipe();
        start();
        processor_output_init(&out);
        atexit(at_exit);
    }
    if (size < 1)
        return 0;
    char name[8];
    model_name(data[0] % FUZZ_MODELS, name);

    processor_output_reset(&out);
    processor_handler_handle(fuzz_handler, 0, -1, name, strlen(name),
                             (const char *)data + 1, size - 1, &out);
    fuzz_check_reply(&out);
    char errstr[512];
    if (processor_handler_commit(fuzz_handler, 0, (int64_t)fuzz_inputs, errstr,
                                 sizeof(errstr))) {
        fprintf(stderr, "fuzz_store: commit failed: %s\n", errstr);
        abort();
    }

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
