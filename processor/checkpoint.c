/* processor/checkpoint.c - the partitions' checkpoints: made, found, pruned and
 * installed (checkpoint.h has the naming and why a checkpoint can be trusted). */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "setup.h"

/* What follows "partition-N." in name, or NULL when name is not the partition's. */
static const char *after_prefix(const char *name, int32_t partition)
{
    char prefix[64];
    int n =
        snprintf(prefix, sizeof(prefix), PROCESSOR_PARTITION_DIR "%d.", (int)partition);
    return strncmp(name, prefix, (size_t)n) == 0 ? name + n : NULL;
}

/* The ms of a complete checkpoint of the partition named name, or 0 for any other
 * name (another partition's, a temporary one, not ours). */
static uint64_t checkpoint_ms(const char *name, int32_t partition)
{
    const char *digits = after_prefix(name, partition);
    if (!digits)
        return 0;
    uint64_t ms = 0;
    for (const char *c = digits; *c; c++) {
        if (*c < '0' || *c > '9' || c - digits >= 19)
            return 0;
        ms = ms * 10 + (uint64_t)(*c - '0');
    }
    return ms;
}

/* Whether name is the partition's, complete or not (RocksDB's temporary copy is the
 * name with ".tmp" after it). */
static bool partition_entry(const char *name, int32_t partition)
{
    const char *rest = after_prefix(name, partition);
    return rest && *rest >= '0' && *rest <= '9';
}

/* Removes a checkpoint: a directory of files, no subdirectories. */
static int remove_flat_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    struct dirent *e;
    char file[PATH_MAX];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (snprintf(file, sizeof(file), "%s/%s", path, e->d_name) < (int)sizeof(file))
            unlink(file);
    }
    closedir(d);
    return rmdir(path);
}

/* The newest complete checkpoint's ms (0: none) and name; with prune_except, every
 * entry of the partition but that one is removed. @returns 0, or -1 (errno). */
static int scan(const char *dir, int32_t partition, uint64_t *newest, char *name,
                size_t name_size, const char *prune_except)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    *newest = 0;
    struct dirent *e;
    char path[PATH_MAX];
    while ((e = readdir(d))) {
        if (!partition_entry(e->d_name, partition))
            continue;
        if (prune_except) {
            if (strcmp(e->d_name, prune_except) != 0 &&
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) < (int)sizeof(path))
                remove_flat_dir(path);
            continue;
        }
        uint64_t ms = checkpoint_ms(e->d_name, partition);
        if (ms > *newest) {
            *newest = ms;
            snprintf(name, name_size, "%s", e->d_name);
        }
    }
    closedir(d);
    return 0;
}

int processor_checkpoint_take(state_store_t *store, const char *dir, int32_t partition,
                              uint64_t *taken, char *path, size_t path_size, char *errstr,
                              size_t errstr_size)
{
    if (state_store_flush_points(store) == *taken)
        return 0;
    if (state_store_flush_pending(store))
        return 1; /* before reading dir: a worker asks after every step */
    uint64_t newest;
    char name[NAME_MAX + 1];
    if (scan(dir, partition, &newest, name, sizeof(name), NULL)) {
        snprintf(errstr, errstr_size, "cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t ms = (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
    if (ms <= newest) /* the clock went back, or two within a millisecond */
        ms = newest + 1;
    snprintf(name, sizeof(name), PROCESSOR_PARTITION_DIR "%d.%llu", (int)partition,
             (unsigned long long)ms);
    snprintf(path, path_size, "%s/%s", dir, name);
    uint64_t held;
    int rc = state_store_checkpoint(store, path, &held, errstr, errstr_size);
    if (rc)
        return rc;
    *taken = held;
    scan(dir, partition, &newest, NULL, 0, name); /* what is left is not needed */
    return 0;
}

int processor_checkpoint_latest(const char *dir, int32_t partition, char *path,
                                size_t path_size, char *errstr, size_t errstr_size)
{
    uint64_t newest;
    char name[NAME_MAX + 1];
    if (scan(dir, partition, &newest, name, sizeof(name), NULL)) {
        snprintf(errstr, errstr_size, "cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!newest)
        return 0;
    snprintf(path, path_size, "%s/%s", dir, name);
    return 1;
}

/* Copies from into to (created), synced. @returns 0, or -1 (errno). */
static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -1;
    int out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        errno = e;
        return -1;
    }
    char buf[1 << 16];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof(buf))) > 0) {
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w < 0) {
                rc = -1;
                break;
            }
            done += w;
        }
        if (rc)
            break;
    }
    if (n < 0 || fsync(out))
        rc = -1;
    int e = errno;
    close(in);
    close(out);
    errno = e;
    return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int processor_checkpoint_install(const char *checkpoint, const char *store_dir,
                                 char *errstr, size_t errstr_size)
{
    struct stat st;
    bool exists = stat(store_dir, &st) == 0;
    if (exists || errno != ENOENT) {
        snprintf(errstr, errstr_size, "cannot create %s: %s", store_dir,
                 exists ? "it exists" : strerror(errno));
        return -1;
    }
    /* Built under another name and renamed when whole: an install cut short (a
     * crash, a full disk) never leaves a store that looks like one. */
    char building[PATH_MAX];
    if (snprintf(building, sizeof(building), "%s.installing", store_dir) >=
        (int)sizeof(building)) {
        snprintf(errstr, errstr_size, "%s: a path too long", store_dir);
        return -1;
    }
    remove_flat_dir(building); /* what an earlier install left */
    if (mkdir(building, 0755)) {
        snprintf(errstr, errstr_size, "cannot create %s: %s", building, strerror(errno));
        return -1;
    }
    DIR *d = opendir(checkpoint);
    if (!d) {
        snprintf(errstr, errstr_size, "cannot read %s: %s", checkpoint, strerror(errno));
        remove_flat_dir(building);
        return -1;
    }
    struct dirent *e;
    char from[PATH_MAX], to[PATH_MAX];
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (snprintf(from, sizeof(from), "%s/%s", checkpoint, e->d_name) >=
                (int)sizeof(from) ||
            snprintf(to, sizeof(to), "%s/%s", building, e->d_name) >= (int)sizeof(to)) {
            snprintf(errstr, errstr_size, "%s: a path too long", checkpoint);
            rc = -1;
            break;
        }
        /* Table and blob files are immutable; the rest (MANIFEST, CURRENT, OPTIONS,
         * LOG) RocksDB may write or rename in the new store, so each gets its own. */
        bool immutable = ends_with(e->d_name, ".sst") || ends_with(e->d_name, ".blob");
        if ((!immutable || link(from, to)) && copy_file(from, to)) {
            snprintf(errstr, errstr_size, "cannot copy %s to %s: %s", from, to,
                     strerror(errno));
            rc = -1;
        }
    }
    closedir(d);
    int fd = rc ? -1 : open(building, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (!rc && (fd < 0 || fsync(fd) || rename(building, store_dir))) {
        snprintf(errstr, errstr_size, "cannot install %s as %s: %s", building, store_dir,
                 strerror(errno));
        rc = -1;
    }
    if (fd >= 0)
        close(fd);
    if (rc) {
        remove_flat_dir(building);
        return rc;
    }
    /* The new name, in its parent folder. */
    char parent[PATH_MAX];
    snprintf(parent, sizeof(parent), "%s/..", store_dir);
    fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    return 0;
}

int processor_checkpoint_restore(const char *dir, int32_t partition,
                                 const char *store_dir, char *checkpoint,
                                 size_t checkpoint_size, char *errstr, size_t errstr_size)
{
    int found = processor_checkpoint_latest(dir, partition, checkpoint, checkpoint_size,
                                            errstr, errstr_size);
    if (found <= 0)
        return found;
    return processor_checkpoint_install(checkpoint, store_dir, errstr, errstr_size) ? -1
                                                                                    : 1;
}
