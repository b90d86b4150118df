/* tests/state/test_crash.c - crash consistency of the store: a child applies a long
 * workload and is killed with SIGKILL at a random moment, again and again; each time
 * the whole workload is sent again (retries are recognised by client and seq). At the
 * end every model must equal the same workload applied once, in memory.
 *
 * Twice: a store with its write-ahead log (apply), where a kill loses no commit, and a
 * changelog store (run: no WAL, a memtable flush every few milliseconds here), where a
 * kill rolls the store back to its last flush, which must be one of its commits, whole.
 *
 * Then the outbox of a changelog store, killed at random moments (below).
 *
 * CRASH_KILLS sets the number of kills (default 50 for the workload, 12 for each outbox
 * case); the test is labelled "faults". */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "codec/msgpack.h"
#include "processor/handler.h"

#define MODELS  12
#define CLIENTS 4
#define RECORDS 6000

typedef struct record_s {
    char key[16];
    msgpack_sbuffer value;
} record_t;

static record_t records[RECORDS];
static char dir[] = "/tmp/flushout-test-crash-XXXXXX";
static bool changelog; /* the store under test skips the WAL */

static uint32_t rng_state = 12345;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 8) % n;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Flushes of 1-3 commands from CLIENTS clients on MODELS models: creates (with IDs
 * that collide between clients), updates and deletes of IDs that may or may not
 * exist. Replies are not checked here, only the final state. */
static void make_workload(void)
{
    uint64_t seq[MODELS][CLIENTS] = {{0}};
    for (int i = 0; i < RECORDS; i++) {
        record_t *r = &records[i];
        int m = (int)rnd(MODELS), c = (int)rnd(CLIENTS);
        snprintf(r->key, sizeof(r->key), "m%d", m);
        msgpack_sbuffer_init(&r->value);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &r->value, msgpack_sbuffer_write);
        char client[8];
        snprintf(client, sizeof(client), "c%d", c);
        uint32_t n = 1 + rnd(3);
        msgpack_pack_map(&pk, 5);
        pack_str(&pk, "type");
        pack_str(&pk, "flush");
        pack_str(&pk, "client");
        pack_str(&pk, client);
        pack_str(&pk, "seq");
        msgpack_pack_uint64(&pk, seq[m][c]++);
        pack_str(&pk, "from");
        msgpack_pack_uint64(&pk, rnd(4) == 0 ? 0 : (uint64_t)i / 4);
        pack_str(&pk, "completions");
        msgpack_pack_array(&pk, n);
        for (uint32_t k = 0; k < n; k++) {
            char id[16], child[16];
            snprintf(id, sizeof(id), "%u", 1 + rnd(60));
            snprintf(child, sizeof(child), "%u", 1 + rnd(20));
            uint32_t what = rnd(4);
            msgpack_pack_map(&pk, what == 0 ? 2 : 1);
            pack_str(&pk, "command");
            if (what == 0) { /* create at the root, proposing a colliding ID */
                msgpack_pack_map(&pk, 2);
                pack_str(&pk, "action");
                pack_str(&pk, "create");
                pack_str(&pk, "props");
                msgpack_pack_map(&pk, 1);
                pack_str(&pk, "n");
                msgpack_pack_int(&pk, i);
            } else if (what == 1) { /* create inside an item, with a parent default */
                msgpack_pack_map(&pk, 4);
                pack_str(&pk, "action");
                pack_str(&pk, "create");
                pack_str(&pk, "path");
                msgpack_pack_array(&pk, 2);
                pack_str(&pk, id);
                pack_str(&pk, "sub");
                pack_str(&pk, "parentDefault");
                msgpack_pack_map(&pk, 0);
                pack_str(&pk, "props");
                msgpack_pack_map(&pk, 1);
                pack_str(&pk, "k");
                msgpack_pack_int(&pk, k);
            } else if (what == 2) {
                msgpack_pack_map(&pk, 3);
                pack_str(&pk, "action");
                pack_str(&pk, "update");
                pack_str(&pk, "path");
                msgpack_pack_array(&pk, 1);
                pack_str(&pk, id);
                pack_str(&pk, "props");
                msgpack_pack_map(&pk, 1);
                pack_str(&pk, "u");
                msgpack_pack_int(&pk, i);
            } else {
                msgpack_pack_map(&pk, 2);
                pack_str(&pk, "action");
                pack_str(&pk, "detete");
                pack_str(&pk, "path");
                msgpack_pack_array(&pk, 1);
                pack_str(&pk, rnd(2) ? id : child);
            }
            if (what == 0) {
                pack_str(&pk, "createdId");
                pack_str(&pk, id);
            }
        }
    }
}

static processor_handler_conf_t handler_conf(state_store_t *store)
{
    return (processor_handler_conf_t){
        .store = store,
        .master = {.ids = STATE_IDS_HASH},
        .history = 50,
        .limits = codec_limits_default,
    };
}

static state_store_t *open_store(void)
{
    char errstr[512];
    state_store_conf_t conf = {
        .dir = dir,
        .history = 50,
        .snapshot_every = 40, /* small: kills land in snapshot rewrites and trims too */
        .cache_bytes = 64 << 10, /* small: models are evicted and reloaded */
        .master = {.ids = STATE_IDS_HASH},
        .changelog = changelog,
        .checkpoint_ms = 5, /* kills land between flushes, and in them */
    };
    state_store_t *s = state_store_open(&conf, errstr, sizeof(errstr));
    if (!s) {
        fprintf(stderr, "crash test: %s\n", errstr);
        _exit(3);
    }
    return s;
}

/* The whole workload through the store, one committed step per 1-16 records. */
static void run_durable(void)
{
    state_store_t *s = open_store();
    processor_handler_conf_t conf = handler_conf(s);
    processor_handler_t *h = processor_handler_new(&conf);
    processor_output_t out;
    processor_output_init(&out);
    char errstr[512];
    for (int i = 0; i < RECORDS; i++) {
        processor_output_reset(&out);
        processor_handler_handle(h, -1, -1, records[i].key, strlen(records[i].key),
                                 records[i].value.data, records[i].value.size, &out);
        if ((i % 16 == (int)(rng_state % 16) || i == RECORDS - 1) &&
            processor_handler_commit(h, i + 1, errstr, sizeof(errstr))) {
            fprintf(stderr, "crash test: %s\n", errstr);
            _exit(4);
        }
        rnd(2);
    }
    processor_output_destroy(&out);
    processor_handler_destroy(h);
    state_store_close(s);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Whether a killed run left part of the workload stored (read in a child: RocksDB's
 * threads must not be in the parent that forks the next run). */
static bool stored_part(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        state_store_t *s = open_store();
        int64_t next = state_store_next_offset(s);
        state_store_close(s);
        _exit(next > 0 && next < RECORDS ? 10 : 11);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) >= 10, "reading the store failed");
    return WEXITSTATUS(status) == 10;
}

static void kill_and_resend(void)
{
    cr_assert_not_null(mkdtemp(dir));
    make_workload();
    int kills = getenv("CRASH_KILLS")
                    ? atoi(getenv("CRASH_KILLS"))
                    : 50; /* How long one full run takes (the faster of two, on a fresh
                           * store), to kill anywhere inside one. */
    double full = 1e9;
    pid_t pid;
    int status;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/*", dir);
    for (int i = 0; i < 2; i++) {
        double t0 = now();
        pid = fork();
        if (pid == 0) {
            run_durable();
            _exit(0);
        }
        waitpid(pid, &status, 0);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a full run failed");
        if (now() - t0 < full)
            full = now() - t0;
        cr_assert_eq(system(cmd), 0);
    }

    srand(42);
    int killed = 0, kept_part = 0; /* kills that left some of the workload stored */
    for (int k = 0; k < kills; k++) {
        pid = fork();
        if (pid == 0) {
            run_durable();
            _exit(0);
        } /* Resent runs skip what is already stored and go faster: aim early. */
        useconds_t delay = (useconds_t)((double)rand() / RAND_MAX * 0.6 * full * 1e6);
        usleep(delay);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        if (WIFSIGNALED(status)) {
            killed++;
            kept_part += stored_part();
        } else
            cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "run %d failed with status %d", k, status);
    }
    cr_assert_geq(killed, kills / 3, "only %d of %d runs were killed mid-way", killed,
                  kills);
    /* A changelog store keeps what its flushes wrote: kills must land after some, or
     * nothing here would test them. */
    cr_assert_geq(kept_part, killed / 4, "only %d of %d kills left part of the workload",
                  kept_part, killed);

    pid = fork(); /* the last run, to completion */
    if (pid == 0) {
        run_durable();
        _exit(0);
    }
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the final run failed");

    /* The reference: the workload applied once, in memory. */
    processor_handler_conf_t mem_conf = handler_conf(NULL);
    processor_handler_t *ref = processor_handler_new(&mem_conf);
    processor_output_t out;
    processor_output_init(&out);
    for (int i = 0; i < RECORDS; i++) {
        processor_output_reset(&out);
        processor_handler_handle(ref, -1, -1, records[i].key, strlen(records[i].key),
                                 records[i].value.data, records[i].value.size, &out);
    }
    processor_output_destroy(&out);

    state_store_t *s = open_store();
    char errstr[512];
    for (int m = 0; m < MODELS; m++) {
        char key[16];
        snprintf(key, sizeof(key), "m%d", m);
        const state_master_t *want = processor_handler_model(ref, key, strlen(key));
        state_model_t *got =
            state_store_model(s, key, strlen(key), errstr, sizeof(errstr));
        cr_assert_not_null(got, "%s", errstr);
        cr_assert_eq(state_master_command_count(state_model_master(got)),
                     state_master_command_count(want), "model %s", key);
        cr_assert(codec_value_equal(state_master_document(state_model_master(got)),
                                    state_master_document(want)),
                  "model %s differs from the reference", key);
    }
    cr_assert_eq(state_store_next_offset(s), RECORDS);
    state_store_close(s);
    processor_handler_destroy(ref);
    for (int i = 0; i < RECORDS; i++)
        msgpack_sbuffer_destroy(&records[i].value);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    fprintf(stderr,
            "crash test (%s): %d of %d runs killed mid-way, %d of them left part of the "
            "workload stored; full run %.2f s\n",
            changelog ? "changelog store" : "logged store", killed, kills, kept_part,
            full);
}

/* ---- the outbox of a changelog store ----
 * A changelog store holds a step's outbox records in memory and writes them only at a
 * flush point (a memtable flush), so that most of them, delivered by then, never reach
 * RocksDB. Whatever a kill leaves must still hold every record not delivered by the
 * commit it comes back as. Each step below updates one model with PAYLOAD_BYTES (so
 * that memtables fill), adds one outbox record naming the step, and marks the record of
 * step i - LAG delivered: a store that comes back at next offset N must hold exactly
 * the records of steps N - LAG .. N - 1. */
#define OUTBOX_STEPS  4000
#define OUTBOX_LAG    7
#define PAYLOAD_BYTES 8192

static int outbox_checkpoint_ms;

static state_store_t *open_outbox_store(void)
{
    char errstr[512];
    state_store_conf_t conf = {
        .dir = dir,
        .history = 50,
        .master = {.ids = STATE_IDS_HASH},
        .changelog = true,
        .checkpoint_ms = outbox_checkpoint_ms,
    };
    state_store_t *s = state_store_open(&conf, errstr, sizeof(errstr));
    if (!s) {
        fprintf(stderr, "outbox crash test: %s\n", errstr);
        _exit(3);
    }
    return s;
}

/* Step i's flush: client "c" (seq i) creates item "1" (step 0), then updates it. */
static void outbox_flush(msgpack_sbuffer *buf, int i, const char *payload)
{
    msgpack_sbuffer_clear(buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "type");
    pack_str(&pk, "flush");
    pack_str(&pk, "client");
    pack_str(&pk, "c");
    pack_str(&pk, "seq");
    msgpack_pack_uint64(&pk, (uint64_t)i);
    pack_str(&pk, "from");
    msgpack_pack_uint64(&pk, (uint64_t)i);
    pack_str(&pk, "completions");
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, i ? 1 : 2);
    pack_str(&pk, "command");
    msgpack_pack_map(&pk, i ? 3 : 2);
    pack_str(&pk, "action");
    pack_str(&pk, i ? "update" : "create");
    pack_str(&pk, i ? "path" : "props");
    if (i) {
        msgpack_pack_array(&pk, 1);
        pack_str(&pk, "1");
        pack_str(&pk, "props");
    }
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "b");
    msgpack_pack_str_with_body(&pk, payload, PAYLOAD_BYTES);
    if (!i) {
        pack_str(&pk, "createdId");
        pack_str(&pk, "1");
    }
}

static void outbox_run(void)
{
    state_store_t *s = open_outbox_store();
    processor_handler_conf_t conf = handler_conf(s);
    processor_handler_t *h = processor_handler_new(&conf);
    processor_output_t out;
    processor_output_init(&out);
    msgpack_sbuffer flush;
    msgpack_sbuffer_init(&flush);
    static char payload[PAYLOAD_BYTES];
    static uint64_t ids[OUTBOX_STEPS];
    char errstr[512];
    for (int i = 0; i < OUTBOX_STEPS; i++) {
        memset(payload, 'a' + i % 26, sizeof(payload));
        outbox_flush(&flush, i, payload);
        processor_output_reset(&out);
        processor_handler_handle(h, -1, -1, "m", 1, flush.data, flush.size, &out);
        if (out.error) {
            fprintf(stderr, "outbox crash test: step %d refused: %s\n", i, out.message);
            _exit(5);
        }
        char step[32];
        int len = snprintf(step, sizeof(step), "step %d", i);
        state_outbox_rec_t rec = {
            .topic = "replies", .partition = -1, .value = step, .value_len = (size_t)len};
        ids[i] = state_store_outbox_add(s, &rec, NULL);
        if (i >= OUTBOX_LAG)
            state_store_outbox_done(s, ids[i - OUTBOX_LAG], ids[i - OUTBOX_LAG]);
        if (processor_handler_commit(h, i + 1, errstr, sizeof(errstr))) {
            fprintf(stderr, "outbox crash test: %s\n", errstr);
            _exit(4);
        }
    }
    msgpack_sbuffer_destroy(&flush);
    processor_output_destroy(&out);
    processor_handler_destroy(h);
    _exit(0); /* no close: a clean close is a flush point of its own */
}

typedef struct outbox_seen_s {
    bool step[OUTBOX_STEPS];
    int n;
} outbox_seen_t;

static int outbox_remember(void *opaque, uint64_t id, const state_outbox_rec_t *rec)
{
    (void)id;
    outbox_seen_t *seen = opaque;
    int step = -1;
    char text[32] = "";
    if (rec->value_len < sizeof(text))
        memcpy(text, rec->value, rec->value_len);
    if (sscanf(text, "step %d", &step) != 1 || step < 0 || step >= OUTBOX_STEPS ||
        seen->step[step])
        _exit(20); /* a foreign, corrupt or repeated record */
    seen->step[step] = true;
    seen->n++;
    return 0;
}

/* Reads the killed run's store (in a child, as stored_part() does): exit 10 when
 * nothing was stored, 11 when the outbox is exactly what its next offset requires,
 * 12 when not. */
static int outbox_check(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        state_store_t *s = open_outbox_store();
        int64_t next = state_store_next_offset(s);
        outbox_seen_t seen = {{0}};
        char errstr[512];
        if (state_store_outbox_scan(s, outbox_remember, &seen, errstr, sizeof(errstr))) {
            fprintf(stderr, "outbox crash test: %s\n", errstr);
            _exit(13);
        }
        if (next < 0)
            _exit(seen.n ? 12 : 10);
        int64_t from = next > OUTBOX_LAG ? next - OUTBOX_LAG : 0;
        bool exact = seen.n == (int)(next - from);
        for (int64_t i = from; i < next; i++)
            exact &= seen.step[i];
        if (!exact)
            fprintf(stderr, "outbox crash test: next offset %lld, %d records kept\n",
                    (long long)next, seen.n);
        _exit(exact ? 11 : 12);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) >= 10 && WEXITSTATUS(status) <= 12,
              "reading the store failed (status %d)", status);
    cr_assert_neq(WEXITSTATUS(status), 12,
                  "a killed store lost an undelivered outbox record, or kept a delivered "
                  "one");
    return WEXITSTATUS(status);
}

static void outbox_kills(void)
{
    cr_assert_not_null(mkdtemp(dir));
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'/*", dir);
    int kills = getenv("CRASH_KILLS") ? atoi(getenv("CRASH_KILLS")) : 12;
    double t0 = now();
    pid_t pid = fork();
    if (pid == 0)
        outbox_run();
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a full run failed");
    double full = now() - t0;
    cr_assert_eq(outbox_check(), 11, "a full run's store");
    srand(7);
    int kept = 0;
    for (int k = 0; k < kills; k++) {
        cr_assert_eq(system(cmd), 0);
        pid = fork();
        if (pid == 0)
            outbox_run();
        usleep((useconds_t)((double)rand() / RAND_MAX * full * 1e6));
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        kept += outbox_check() == 11;
    }
    /* Kills must land after flush points, or nothing here would test them. */
    cr_assert_geq(kept, kills / 4, "only %d of %d kills came after a flush point", kept,
                  kills);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    fprintf(stderr,
            "outbox crash test (checkpoint %d ms): %d of %d kills after a flush "
            "point; full run %.2f s\n",
            outbox_checkpoint_ms, kept, kills, full);
}

Test(state_crash, changelog_store_killed_keeps_undelivered_outbox_at_full_memtables,
     .timeout = 900)
{
    outbox_checkpoint_ms = 3600 * 1000; /* flush points come from memtables filling */
    outbox_kills();
}

Test(state_crash, changelog_store_killed_keeps_undelivered_outbox_at_checkpoints,
     .timeout = 900)
{
    outbox_checkpoint_ms = 5;
    outbox_kills();
}

Test(state_crash, killed_runs_resent_in_full_end_in_the_reference_state, .timeout = 900)
{
    kill_and_resend();
}

Test(state_crash, changelog_store_killed_comes_back_as_one_of_its_commits, .timeout = 900)
{
    changelog = true;
    kill_and_resend();
}
