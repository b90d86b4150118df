/* tests/processor/test_checkpoint.c - the checkpoint folders (processor/checkpoint.c):
 * names, what counts as complete, pruning, a clock that went back, and installing one
 * as a new store. No Kafka: a changelog store is checkpointed directly. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "processor/checkpoint.h"
#include "state/store.h"

static char dir[] = "/tmp/flushout-test-checkpoint-XXXXXX";
static char ckpt[256];
static char errstr[512];
static state_store_t *store;

static state_store_conf_t store_conf(const char *path)
{
    return (state_store_conf_t){
        .dir = path,
        .partition = 1,
        .changelog = true,
        .checkpoint_ms = 3600 * 1000, /* flush points only when asked */
        .history = 100,
        .snapshot_every = 100,
        .cache_bytes = 1 << 20,
        .master = {.ids = STATE_IDS_SEQUENTIAL},
    };
}

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    snprintf(ckpt, sizeof(ckpt), "%s/checkpoints", dir);
    cr_assert_eq(mkdir(ckpt, 0755), 0);
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/store", dir);
    state_store_conf_t conf = store_conf(path);
    store = state_store_open(&conf, errstr, sizeof(errstr));
    cr_assert_not_null(store, "%s", errstr);
}

static void teardown(void)
{
    state_store_close(store);
    store = NULL;
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    strcpy(dir, "/tmp/flushout-test-checkpoint-XXXXXX");
}

TestSuite(checkpoint, .init = setup, .fini = teardown);

/* A folder named name in the checkpoint folder, holding one file. */
static void make_entry(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", ckpt, name);
    cr_assert_eq(mkdir(path, 0755), 0, "%s", path);
    snprintf(path, sizeof(path), "%s/%s/CURRENT", ckpt, name);
    FILE *fp = fopen(path, "w");
    cr_assert_not_null(fp);
    fclose(fp);
}

static bool exists(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", ckpt, name);
    return access(path, F_OK) == 0;
}

/* The entries of the checkpoint folder, sorted, joined by spaces. */
static char *entries(void)
{
    struct dirent **list;
    int n = scandir(ckpt, &list, NULL, alphasort);
    cr_assert_geq(n, 0);
    char *out = calloc(1, 4096);
    for (int i = 0; i < n; i++) {
        if (list[i]->d_name[0] != '.') {
            strcat(out, out[0] ? " " : "");
            strcat(out, list[i]->d_name);
        }
        free(list[i]);
    }
    free(list);
    return out;
}

static void commit_with_flush_point(int64_t offset)
{
    state_store_set_partition_count(store, 4);
    cr_assert_eq(state_store_commit(store, offset, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
    cr_assert_eq(state_store_flush_point(store, errstr, sizeof(errstr)), 0, "%s", errstr);
}

/* The latest is the highest complete name of the partition: not RocksDB's temporary
 * copy, not another partition's (partition-10 is not partition-1's), not a name with
 * more after the digits. */
Test(checkpoint, the_latest_is_the_newest_complete_one_of_the_partition)
{
    char path[PATH_MAX];
    cr_assert_eq(
        processor_checkpoint_latest(ckpt, 1, path, sizeof(path), errstr, sizeof(errstr)),
        0, "none yet");
    make_entry("partition-1.100");
    make_entry("partition-1.250");
    make_entry("partition-1.900.tmp");
    make_entry("partition-10.999");
    make_entry("partition-1.300x");
    make_entry("partition-1.");
    cr_assert_eq(
        processor_checkpoint_latest(ckpt, 1, path, sizeof(path), errstr, sizeof(errstr)),
        1);
    char want[PATH_MAX];
    snprintf(want, sizeof(want), "%s/partition-1.250", ckpt);
    cr_assert_str_eq(path, want);
    cr_assert_eq(
        processor_checkpoint_latest(ckpt, 10, path, sizeof(path), errstr, sizeof(errstr)),
        1);
    cr_assert(strstr(path, "partition-10.999"));
    cr_assert_eq(processor_checkpoint_latest("/nonexistent/flushout", 1, path,
                                             sizeof(path), errstr, sizeof(errstr)),
                 -1, "an unreadable folder is an error, not \"none\"");
}

/* Making one removes the partition's others, complete or not, and nothing else; its
 * name is above every older one even when the clock says otherwise; with no flush
 * point since the last one, nothing is made. */
Test(checkpoint, taking_one_prunes_the_others_and_never_goes_back)
{
    make_entry("partition-1.100");
    make_entry("partition-1.5000000000000.tmp"); /* left by a crash */
    make_entry("partition-1.9999999999998");     /* a clock far ahead, once */
    make_entry("partition-10.100");
    make_entry("partition-2.100");
    uint64_t taken = 0;
    char path[PATH_MAX];
    cr_assert_eq(processor_checkpoint_take(store, ckpt, 1, &taken, path, sizeof(path),
                                           errstr, sizeof(errstr)),
                 0, "nothing new: %s", errstr);
    cr_assert_eq(taken, 0, "no flush point yet, nothing made");
    commit_with_flush_point(7);
    cr_assert_eq(processor_checkpoint_take(store, ckpt, 1, &taken, path, sizeof(path),
                                           errstr, sizeof(errstr)),
                 0, "%s", errstr);
    cr_assert_eq(taken, state_store_flush_points(store));
    char *all = entries();
    cr_assert_str_eq(all, "partition-1.9999999999999 partition-10.100 partition-2.100");
    free(all);
    char want[PATH_MAX];
    snprintf(want, sizeof(want), "%s/partition-1.9999999999999", ckpt);
    cr_assert_str_eq(path, want);
    cr_assert(!exists("partition-1.100"));

    /* Asked again with no flush point since: nothing made, nothing removed. */
    cr_assert_eq(processor_checkpoint_take(store, ckpt, 1, &taken, path, sizeof(path),
                                           errstr, sizeof(errstr)),
                 0);
    all = entries();
    cr_assert_str_eq(all, "partition-1.9999999999999 partition-10.100 partition-2.100");
    free(all);
}

/* Installed, a checkpoint is a store of its own holding the flush point's offset;
 * the folder it came from is unchanged, and an existing store is never written over. */
Test(checkpoint, an_installed_checkpoint_opens_as_the_store_it_copied)
{
    commit_with_flush_point(42);
    uint64_t taken = 0;
    char path[PATH_MAX];
    cr_assert_eq(processor_checkpoint_take(store, ckpt, 1, &taken, path, sizeof(path),
                                           errstr, sizeof(errstr)),
                 0, "%s", errstr);
    char *before = entries();
    char copy[PATH_MAX];
    snprintf(copy, sizeof(copy), "%s/installed", dir);
    cr_assert_eq(processor_checkpoint_install(path, copy, errstr, sizeof(errstr)), 0,
                 "%s", errstr);
    cr_assert_eq(processor_checkpoint_install(path, copy, errstr, sizeof(errstr)), -1,
                 "not over an existing folder");
    cr_assert(strstr(errstr, "cannot create"), "%s", errstr);

    state_store_conf_t conf = store_conf(copy);
    state_store_t *installed = state_store_open(&conf, errstr, sizeof(errstr));
    cr_assert_not_null(installed, "%s", errstr);
    cr_assert_eq(state_store_next_offset(installed), 42);
    cr_assert_eq(state_store_partition_count(installed), 4);
    /* Written to: it is its own store now, and the checkpoint stays as it was. */
    cr_assert_eq(state_store_commit(installed, 43, errstr, sizeof(errstr)), 0, "%s",
                 errstr);
    state_store_close(installed);
    char *after = entries();
    cr_assert_str_eq(after, before);
    free(before);
    free(after);
    conf = store_conf(path);
    state_store_t *again = state_store_open(&conf, errstr, sizeof(errstr));
    cr_assert_not_null(again, "%s", errstr);
    cr_assert_eq(state_store_next_offset(again), 42, "the checkpoint is unchanged");
    state_store_close(again);
}
