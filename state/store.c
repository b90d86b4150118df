/* state/store.c - durable masters in RocksDB, written one processing step at a time:
 * the store's facade (open, close, commit, drop, offsets and settings, stats).
 *
 * Everything a partition owns sits under a 4-byte big-endian partition prefix, so a
 * partition is one contiguous key range (dropped or counted on its own). The kinds of
 * record under it, and the map of the files that read and write them (store_*.c),
 * are in state/README.md. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "codec/alloc.h"
#include "codec/msgpack.h"
#include "store_int.h"

/* ---- open / close ---- */

int store_fail_rocks(char *err, const char *what, char *errstr, size_t errstr_size)
{
    snprintf(errstr, errstr_size, "%s: %s", what, err ? err : "unknown RocksDB error");
    rocksdb_free(err);
    return -1;
}

static int check_layout(state_store_t *s, char *errstr, size_t errstr_size)
{
    store_key_t k;
    store_key_init(&k, STORE_META_PARTITION, STORE_KEY_VERSION);
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get(s->db, s->read_options, k.p, k.len, &len, &err);
    if (err)
        return store_fail_rocks(err, "reading the layout version", errstr, errstr_size);
    char want[32], oldest[32];
    int want_len = snprintf(want, sizeof(want), "flushout-store %d", STATE_STORE_LAYOUT);
    int oldest_len =
        snprintf(oldest, sizeof(oldest), "flushout-store %d", STATE_STORE_LAYOUT_OLDEST);
    bool current = v && len == (size_t)want_len && !memcmp(v, want, len);
    bool older = v && len == (size_t)oldest_len && !memcmp(v, oldest, len);
    int rc = 0;
    if (!v || (older && s->conf.partition != STATE_STORE_PARTITION_STORED)) {
        /* New, or an older layout about to get appends (store_merge.c): from now on
         * only builds that read them may open it. A store opened to be read keeps its
         * layout. */
        rocksdb_put(s->db, s->write_options, k.p, k.len, want, (size_t)want_len, &err);
        if (err)
            rc = store_fail_rocks(err, "writing the layout version", errstr, errstr_size);
    } else if (!current && !older) {
        snprintf(errstr, errstr_size,
                 "%s holds layout \"%.*s\", this build reads \"%s\": use a matching "
                 "build, or rebuild the state from the topics",
                 s->conf.dir, (int)(len > 40 ? 40 : len), v, want);
        rc = -1;
    }
    free(v);
    return rc;
}

/* STATE_STORE_PARTITION_STORED: the partition of the first record (the layout
 * version's key sorts last), 0 for an empty store. */
static int32_t stored_partition(state_store_t *s)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    rocksdb_iter_seek_to_first(it);
    int32_t partition = 0;
    size_t klen;
    const char *k = rocksdb_iter_valid(it) ? rocksdb_iter_key(it, &klen) : NULL;
    if (k && klen >= 4 && store_be_n(k, 4) != STORE_META_PARTITION)
        partition = (int32_t)store_be_n(k, 4);
    rocksdb_iter_destroy(it);
    return partition;
}

static int count_bytes(void *data, const char *buf, size_t len)
{
    (void)buf;
    *(size_t *)data += len;
    return 0;
}

void state_store_thread_start(void)
{
    rocksdb_set_perf_level(1); /* rocksdb::PerfLevel::kDisable */
}

state_store_t *state_store_open(const state_store_conf_t *conf, char *errstr,
                                size_t errstr_size)
{
    state_store_t *s = codec_xcalloc(1, sizeof(*s));
    char *err = NULL;
    s->conf = *conf;
    s->initial_document = conf->initial_document
                              ? codec_value_copy(conf->initial_document)
                              : codec_value_map(0);
    s->conf.initial_document = NULL;
    msgpack_packer size_pk;
    msgpack_packer_init(&size_pk, &s->initial_bytes, count_bytes);
    codec_msgpack_pack_value(&size_pk, s->initial_document);
    if (!s->conf.snapshot_every)
        s->conf.snapshot_every = 1000;
    if (!s->conf.clients_per_model)
        s->conf.clients_per_model = 1000;

    if (conf->partition < 0 && conf->partition != STATE_STORE_PARTITION_STORED) {
        snprintf(errstr, errstr_size, "no input partition %d", (int)conf->partition);
        goto err;
    }
    if (mkdir(conf->dir, 0755) != 0 && errno != EEXIST) {
        snprintf(errstr, errstr_size, "cannot create %s: %s", conf->dir, strerror(errno));
        goto err;
    }
    s->options = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(s->options, 1);
    s->logged = !conf->changelog || conf->fsync;
    /* One store per partition, each with up to two memtables of about 16 MB (RocksDB's
     * default is 64): 8 partitions' memtables stay within 256 MB, and were as fast in
     * the end-to-end benchmark. A changelog store flushes its memtables itself at 16 MB
     * estimated (FLUSH_POINT_BYTES, below): RocksDB's own limit is set far above, so
     * that it never flushes a memtable without the outbox records it needs, and so is
     * its flush at close (a failed store's memtable is dropped, as a crash would). */
    rocksdb_options_set_write_buffer_size(s->options, s->logged ? 16 << 20 : 64 << 20);
    rocksdb_options_set_arena_block_size(s->options, 2 << 20);
    if (!s->logged) {
        rocksdb_options_t *changelog = rocksdb_options_create();
        rocksdb_get_options_from_string(s->options, "avoid_flush_during_shutdown=true",
                                        changelog, &err);
        rocksdb_options_destroy(s->options);
        s->options = changelog;
        if (err) {
            store_fail_rocks(err, "setting the store's options", errstr, errstr_size);
            goto err;
        }
    }
    /* Blob files are turned on with the first large value (store_batch_write()). */
    rocksdb_options_set_min_blob_size(s->options, STORE_BLOB_MIN_BYTES);
    /* Flushes append to history keys (store_merge.c); the options own it. */
    rocksdb_options_set_merge_operator(s->options, state_store_merge_operator_new());
    /* Bloom filters of whole keys and of model prefixes (10 bits a key, about 1%
     * false positives): loading an evicted model reads only the table files that
     * hold some of its keys. Without them a lookup read a block of every file whose
     * range covered the key, often a large outbox record's block, decompressed. */
    rocksdb_options_set_prefix_extractor(s->options, store_key_model_prefix_new());
    rocksdb_block_based_table_options_t *table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_filter_policy(
        table, rocksdb_filterpolicy_create_bloom_full(10));
    rocksdb_options_set_block_based_table_factory(s->options, table);
    rocksdb_block_based_options_destroy(table);
    s->write_options = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->write_options, conf->fsync);
    /* A changelog store's commits skip the WAL (a tenth of the processor's CPU at
     * full load). A crash then loses the commits since the last memtable flush, never
     * part of one: with one column family RocksDB flushes memtables in order, so the
     * store comes back as one of its commits left it, holding that commit's input
     * offset and changes position, and the outbox records of every step not
     * delivered by then (each flush is a flush point, store_flush()). Nothing is
     * lost for good: every change
     * record the lost commits published is on the changes topic after that position,
     * and the owner's catch-up applies them (processor/catch_up.h); each flush whose
     * change record did not reach Kafka has its input offset uncommitted too (a
     * step's offset is committed to Kafka only once all its records are delivered),
     * so it is consumed and applied again, to the same state, with the same outputs.
     * A flush whose change record was published but whose reply was not is answered
     * again as a retry (`duplicate`). The periodic flush bounds what a restarted
     * owner replays. */
    if (!s->logged)
        rocksdb_writeoptions_disable_WAL(s->write_options, 1);
    s->unlogged_options = rocksdb_writeoptions_create();
    rocksdb_writeoptions_disable_WAL(s->unlogged_options, 1);
    s->read_options = rocksdb_readoptions_create();
    rocksdb_readoptions_set_total_order_seek(s->read_options, 1);
    s->db = rocksdb_open(s->options, conf->dir, &err);
    if (err) {
        store_fail_rocks(err, conf->dir, errstr, errstr_size);
        goto err;
    }
    if (check_layout(s, errstr, errstr_size))
        goto err;
    if (s->conf.partition == STATE_STORE_PARTITION_STORED)
        s->conf.partition = stored_partition(s);
    s->batch = rocksdb_writebatch_create();
    msgpack_sbuffer_init(&s->outbox_step);
    msgpack_sbuffer_init(&s->scratch);
    msgpack_sbuffer_init(&s->mapped);
    s->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    s->record_zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    codec_packed_init(&s->record_applied);
    if (!s->zone || !s->record_zone) {
        snprintf(errstr, errstr_size, "out of memory");
        goto err;
    }
    return s;

err:
    state_store_close(s);
    return NULL;
}

/* Databases whose write failed are never closed: closing syncs the write-ahead log,
 * and RocksDB (as Debian builds it, with assertions on) aborts the whole process when a
 * writer that failed is used again. They stay here, reachable, until the process
 * exits; a failed write is rare and the operator restarts after fixing the disk. */
static rocksdb_t *failed_dbs[256];
static size_t failed_db_count;
static pthread_mutex_t failed_dbs_lock = PTHREAD_MUTEX_INITIALIZER;

static bool keep_failed_db(rocksdb_t *db)
{
    pthread_mutex_lock(&failed_dbs_lock);
    bool kept = failed_db_count < sizeof(failed_dbs) / sizeof(failed_dbs[0]);
    if (kept)
        failed_dbs[failed_db_count++] = db;
    pthread_mutex_unlock(&failed_dbs_lock);
    return kept;
}

void store_set_failed(state_store_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->failed, sizeof(s->failed), fmt, ap);
    va_end(ap);
    if (!s->logged && s->db)
        rocksdb_cancel_all_background_work(s->db, 1);
}

/* Flushes the memtables to table files (synced). wait: until written; else it is
 * scheduled, and RocksDB reports a failure at a later write. @returns 0, or -1 and
 * errstr (the store then refuses further commits). */
static int store_flush(state_store_t *s, bool wait, char *errstr, size_t errstr_size)
{
    char *err = NULL;
    /* Every flush is a flush point: held steps not stored yet are written first, and
     * the client records and history recorded since the last one. */
    rocksdb_writebatch_t *held = rocksdb_writebatch_create();
    store_outbox_flush_point(s, held);
    store_clients_write(s, NULL, held);
    store_history_write(s, NULL, held);
    if (rocksdb_writebatch_count(held)) {
        rocksdb_write(s->db, s->unlogged_options, held, &err);
        s->unlogged = true;
    }
    rocksdb_writebatch_destroy(held);
    s->memtable_estimate = 0;
    s->checkpoint_at = 0; /* the next interval starts now */
    s->flush_points++;
    if (!err) {
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        rocksdb_flushoptions_set_wait(fo, wait);
        rocksdb_flush(s->db, fo, &err);
        rocksdb_flushoptions_destroy(fo);
    }
    if (err) {
        store_set_failed(s, "%s", err);
        return store_fail_rocks(err, "flushing the memtable", errstr, errstr_size);
    }
    return 0;
}

/* A changelog store's memtable flushes, each a flush point (store_outbox_flush_point()).
 * On an interval: what a restarted owner replays from the changes topic is at most
 * this long (or one memtable), and the changes topic's retention need only be longer.
 * One coarse clock read per commit. */
static bool checkpoint_due(state_store_t *s)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    double now = (double)t.tv_sec + (double)t.tv_nsec / 1e9;
    double interval_s = (s->conf.checkpoint_ms ? s->conf.checkpoint_ms : 30000) / 1e3;
    if (!s->checkpoint_at)
        s->checkpoint_at = now + interval_s;
    if (now < s->checkpoint_at)
        return false;
    s->checkpoint_at = now + interval_s;
    return true;
}

/* And when the memtable is full: at FLUSH_POINT_BYTES of what the commits since the
 * last flush may take in it, counted as RocksDB's memtable charges its entries at most
 * (each entry's bytes in the batch, plus its skiplist node and sequence number, under
 * MEMTABLE_ENTRY_BYTES; arena blocks add at most a quarter more), well under RocksDB's
 * own write_buffer_size (RocksDB switches at about 63 MB allocated), so that RocksDB
 * never switches memtables between two flush points: a commit that passes it, even
 * one of several hundred megabytes, is a flush point itself, holding the outbox
 * records, and the flush follows it at once. */
#define FLUSH_POINT_BYTES    (16u << 20)
#define MEMTABLE_ENTRY_BYTES 128

static bool flush_point_due(state_store_t *s, rocksdb_writebatch_t *batch)
{
    size_t len = 0;
    rocksdb_writebatch_data(batch, &len);
    s->memtable_estimate +=
        len + MEMTABLE_ENTRY_BYTES * (size_t)rocksdb_writebatch_count(batch);
    return s->memtable_estimate + s->held_history_bytes >= FLUSH_POINT_BYTES ||
           (!s->restoring && checkpoint_due(s));
}

void state_store_close(state_store_t *s)
{
    if (!s)
        return;
    char errstr[256];
    /* rocksdb_close() would flush them as well in a logged store (a changelog store
     * turns that off): done here, it does not hang on that default. A failure is the
     * crash case. The records not delivered yet stay in the outbox (store_flush()). */
    if (s->db && s->unlogged && !s->failed[0] && !s->clients_uncommitted)
        store_flush(s, true, errstr, sizeof(errstr));
    /* Closed with a step not committed whose flushes updated client records in the
     * cache (a partition that stopped mid-step): the cache no longer holds what was
     * committed, so nothing of it is written, and the memtable is dropped, as in a
     * crash. The store comes back at its last flush point; catch-up and the
     * uncommitted input offsets redo the rest (state/README.md). */
    if (s->failed[0] && s->db && keep_failed_db(s->db))
        s->db = NULL;
    store_outbox_free_held(s);
    state_model_t *m, *tmp;
    HASH_ITER(hh, s->models, m, tmp)
    {
        HASH_DEL(s->models, m);
        store_model_free(s, m);
    }
    store_pool_report(s, 0);
    if (s->batch)
        rocksdb_writebatch_destroy(s->batch);
    free(s->ops);
    free(s->op_bytes);
    msgpack_sbuffer_destroy(&s->outbox_step);
    msgpack_sbuffer_destroy(&s->scratch);
    msgpack_sbuffer_destroy(&s->mapped);
    free(s->trims);
    if (s->db)
        rocksdb_close(s->db);
    if (s->options)
        rocksdb_options_destroy(s->options);
    if (s->write_options)
        rocksdb_writeoptions_destroy(s->write_options);
    if (s->unlogged_options)
        rocksdb_writeoptions_destroy(s->unlogged_options);
    if (s->read_options)
        rocksdb_readoptions_destroy(s->read_options);
    if (s->zone)
        msgpack_zone_free(s->zone);
    if (s->record_zone)
        msgpack_zone_free(s->record_zone);
    codec_packed_destroy(&s->record_applied);
    codec_value_destroy(s->initial_document);
    store_expired_forget(s);
    free(s);
}

/* The store's partition's integer of kind: offsets, the partition count. */
static void put_u64(state_store_t *s, char kind, int64_t offset)
{
    store_key_t k;
    store_key_start(&k, s, kind);
    unsigned char v[8];
    for (int i = 7; i >= 0; i--)
        v[i] = (unsigned char)((uint64_t)offset >> (8 * (7 - i)));
    store_batch_write(s, k.p, k.len, (const char *)v, 8);
    store_key_free(&k);
}

static int64_t read_u64(state_store_t *s, char kind)
{
    store_key_t k;
    store_key_start(&k, s, kind);
    char *err = NULL;
    size_t len = 0;
    char *v = store_key_get(s, &k, &len, &err);
    int64_t offset = -1;
    if (!err && v && len == 8)
        offset = (int64_t)store_be64(v);
    rocksdb_free(err);
    free(v);
    return offset;
}

int64_t state_store_changes_offset(state_store_t *s)
{
    return read_u64(s, STATE_ITEM_CHANGES);
}

void state_store_set_changes_offset(state_store_t *s, int64_t offset)
{
    put_u64(s, STATE_ITEM_CHANGES, offset);
}

int32_t state_store_partition_count(state_store_t *s)
{
    int64_t count = read_u64(s, STATE_ITEM_PARTITIONS);
    return count > 0 && count <= INT32_MAX ? (int32_t)count : -1;
}

void state_store_set_partition_count(state_store_t *s, int32_t count)
{
    put_u64(s, STATE_ITEM_PARTITIONS, count);
}

char *state_store_settings(state_store_t *s)
{
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_SETTINGS);
    char *err = NULL;
    size_t len = 0;
    char *v = store_key_get(s, &k, &len, &err);
    char *settings = NULL;
    if (!err && v) {
        settings = codec_xmalloc(len + 1);
        memcpy(settings, v, len);
        settings[len] = '\0';
    }
    rocksdb_free(err);
    free(v);
    return settings;
}

void state_store_set_settings(state_store_t *s, const char *settings)
{
    store_key_t k;
    store_key_start(&k, s, STATE_ITEM_SETTINGS);
    store_batch_write(s, k.p, k.len, settings, strlen(settings));
    store_key_free(&k);
}

void state_store_set_cache_bytes(state_store_t *s, size_t cache_bytes)
{
    s->conf.cache_bytes = cache_bytes;
    if (!s->ops_len) /* every model is clean: evicting loses nothing */
        store_evict(s);
}

/* FLUSHOUT_FAILPOINT=store-write:P:N (tests only): the N-th commit of a processing step
 * (one with an offset) to partition P fails as a RocksDB write error would. A real full
 * disk cannot stand in for it here: Debian's RocksDB asserts on a failed WAL write. */
static int failpoint_partition = -1;
static long failpoint_countdown;
static pthread_once_t failpoint_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t failpoint_lock = PTHREAD_MUTEX_INITIALIZER;

static void failpoint_init(void)
{
    const char *fp = getenv("FLUSHOUT_FAILPOINT");
    int partition;
    long n;
    if (fp && sscanf(fp, "store-write:%d:%ld", &partition, &n) == 2) {
        failpoint_partition = partition;
        failpoint_countdown = n;
    }
}

static bool injected_write_error(int32_t partition, int64_t next_offset)
{
    pthread_once(&failpoint_once, failpoint_init);
    if (next_offset < 0 || failpoint_partition != partition)
        return false;
    pthread_mutex_lock(&failpoint_lock);
    bool fail = failpoint_countdown > 0 && --failpoint_countdown == 0;
    pthread_mutex_unlock(&failpoint_lock);
    return fail;
}

int state_store_commit(state_store_t *s, int64_t next_offset, char *errstr,
                       size_t errstr_size)
{
    if (s->failed[0]) {
        snprintf(errstr, errstr_size,
                 "the store refuses writes after an earlier failure: %s", s->failed);
        return -1;
    }
    if (next_offset >= 0)
        put_u64(s, STATE_ITEM_OFFSET, next_offset);
    char *err = NULL;
    rocksdb_writebatch_t *batch = store_batch_finish(s);
    bool flush_point = !s->logged && flush_point_due(s, batch);
    /* The held records go in the step's own batch: once this batch fills the memtable,
     * RocksDB may switch memtables before any later write. */
    if (flush_point) {
        store_outbox_flush_point(s, batch);
        store_clients_write(s, NULL, batch);
        store_history_write(s, NULL, batch);
    }
    if (injected_write_error(s->conf.partition, next_offset))
        err = strdup("IO error: injected by FLUSHOUT_FAILPOINT");
    else
        rocksdb_write(s->db, s->restoring ? s->unlogged_options : s->write_options, batch,
                      &err);
    s->unlogged |= s->restoring || !s->logged;
    rocksdb_writebatch_clear(s->batch);
    store_expired_forget(s);
    s->step++;
    if (err) {
        store_set_failed(s, "%s", err);
        return store_fail_rocks(err, "writing a step", errstr, errstr_size);
    }
    s->clients_uncommitted = false;
    store_evict(s);
    return flush_point ? store_flush(s, false, errstr, errstr_size) : 0;
}

void store_write_now(state_store_t *s, rocksdb_writebatch_t *batch)
{
    if (!rocksdb_writebatch_count(batch))
        return;
    size_t len = 0;
    rocksdb_writebatch_data(batch, &len);
    s->memtable_estimate +=
        len + MEMTABLE_ENTRY_BYTES * (size_t)rocksdb_writebatch_count(batch);
    char *err = NULL;
    rocksdb_write(s->db, s->unlogged_options, batch, &err);
    s->unlogged = true;
    if (err) {
        store_set_failed(s, "%s", err);
        rocksdb_free(err);
    }
}

void state_store_restore_begin(state_store_t *s)
{
    s->restoring = true;
}

int state_store_restore_end(state_store_t *s, char *errstr, size_t errstr_size)
{
    s->restoring = false;
    if (!s->unlogged || s->failed[0])
        return 0;
    if (store_flush(s, true, errstr, errstr_size))
        return -1;
    s->unlogged = false;
    return 0;
}

/* A RocksDB integer property, 0 when the build does not know it. */
static uint64_t db_property(state_store_t *s, const char *name)
{
    uint64_t v = 0;
    return rocksdb_property_int(s->db, name, &v) == 0 ? v : 0;
}

int state_store_flush_point(state_store_t *s, char *errstr, size_t errstr_size)
{
    if (s->logged || s->failed[0])
        return 0;
    return store_flush(s, true, errstr, errstr_size);
}

bool state_store_flush_pending(state_store_t *s)
{
    /* The memtable of the last flush point is still being written: the table files
     * hold the one before, which is consistent too, but older than asked for. */
    return db_property(s, "rocksdb.num-immutable-mem-table") > 0;
}

int state_store_checkpoint(state_store_t *s, const char *dir, uint64_t *flush_point,
                           char *errstr, size_t errstr_size)
{
    if (s->logged || s->failed[0]) {
        snprintf(errstr, errstr_size, "%s",
                 s->failed[0] ? s->failed : "only a changelog store has flush points");
        return -1;
    }
    if (state_store_flush_pending(s))
        return 1;
    char *err = NULL;
    rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(s->db, &err);
    /* UINT64_MAX: no memtable flush of its own. Only the table files are copied, as
     * a flush point wrote them; the memtable holds commits after it, and without
     * what the store holds back until the next flush point (outbox, history). */
    if (!err)
        rocksdb_checkpoint_create(cp, dir, UINT64_MAX, &err);
    if (cp)
        rocksdb_checkpoint_object_destroy(cp);
    if (err)
        return store_fail_rocks(err, "making a checkpoint", errstr, errstr_size);
    *flush_point = s->flush_points;
    return 0;
}

uint64_t state_store_flush_points(const state_store_t *s)
{
    return s->flush_points;
}

int state_store_drop_partition(state_store_t *s, char *errstr, size_t errstr_size)
{
    state_model_t *m, *tmp;
    HASH_ITER(hh, s->models, m, tmp)
    {
        store_model_drop(s, m);
    }
    store_outbox_forget(s); /* ids start again from what is stored: none */
    store_outbox_free_held(s);
    store_key_t from, to;
    store_key_start(&from, s, 0);
    store_key_start(&to, s, (char)0xff); /* after every kind byte */
    from.len = 4;                        /* the partition prefix alone */
    store_batch_delete_range(s, from.p, from.len, to.p, to.len);
    store_key_free(&from);
    store_key_free(&to);
    return state_store_commit(s, -1, errstr, errstr_size);
}

void state_store_stats(state_store_t *s, state_store_stats_t *st)
{
    st->cache_bytes = s->cache_used;
    st->cache_models = HASH_COUNT(s->models);
    st->cache_hits = s->cache_hits;
    st->cache_misses = s->cache_misses;
    st->sst_bytes = db_property(s, "rocksdb.total-sst-files-size");
    st->memtable_bytes = db_property(s, "rocksdb.cur-size-all-mem-tables");
    st->pending_compaction_bytes =
        db_property(s, "rocksdb.estimate-pending-compaction-bytes");
    st->running_compactions = db_property(s, "rocksdb.num-running-compactions");
    st->write_stopped = db_property(s, "rocksdb.is-write-stopped");
    st->estimated_keys = db_property(s, "rocksdb.estimate-num-keys");
}

size_t state_store_cache_bytes(const state_store_t *s, size_t *models)
{
    if (models)
        *models = HASH_COUNT(s->models);
    return s->cache_used;
}

int64_t state_store_next_offset(state_store_t *s)
{
    return read_u64(s, STATE_ITEM_OFFSET);
}
