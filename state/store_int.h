/* state/store_int.h - the store's private types and the functions its files share.
 *
 * state/store.c is a facade (open, close, commit, offsets, stats) over one file per
 * concept; this header is for those files only, never for callers of store.h
 * (librdkafka's *_int.h habit). state/README.md has the map of the files. */
#ifndef FLUSHOUT_STATE_STORE_INT_H
#define FLUSHOUT_STATE_STORE_INT_H

#include <rocksdb/c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "codec/hash.h"
/* Seeded: model and client ids come from clients (hash flooding). */
#define HASH_FUNCTION CODEC_UTHASH_FUNCTION
#include <uthash.h>

#include "codec/value.h"
#include "history_mem.h"
#include "store.h"

/* ---- keys (store_key.c); the layout is in state/README.md ---- */

/* The record kinds are STATE_ITEM_* (store.h); these two are not per partition. */
#define STORE_META_PARTITION 0xffffffffu /* the prefix of store-wide keys */
#define STORE_KEY_VERSION    'V'         /* under it: the layout version */
#define STORE_MAX_ID_BYTES   65535       /* model ids are length-prefixed with 16 bits */
/* A snapshot is rewritten once the history since it outgrows it, and is at least this
 * long: a small document would otherwise be rewritten, copied as a past snapshot and
 * its history trimmed after nearly every flush (4 writes a flush instead of 2), while
 * loading a model or travelling back in time replays at most this much more history.
 * 4 KB was 0.82-0.84x the CPU per flush of no floor in tests/bench/ab.sh; 16 KB is
 * 0.92-0.94x that of 4 KB (a quarter of the rewrites) and neutral with 100,000 models,
 * whose flushes load their models. At most 32 KB keeps a document below
 * STATE_RECORD_SIZE_FLOOR, so its snapshot records stay due by count alone. */
#define SNAPSHOT_MIN_REWRITE_BYTES 16384u
/* A flush joins the model's last history key (appended to it by the store's merge
 * operator, store_merge.c) while that key holds fewer than HISTORY_KEY_COMMANDS
 * commands and fewer than HISTORY_KEY_BYTES bytes of them, else starts a key of its
 * own. Decided from what is stored alone, so the keys are the same however flushes
 * were grouped into steps; within a step the batch folds a key's appends into one,
 * so a model's flushes of one step are one memtable entry, not one each, and a
 * changelog store holds the open key until it closes (state/README.md). 64 commands
 * and 8 KB instead of 16 and 2 KB: 0.90-0.93x the CPU per flush in tests/bench/ab.sh
 * (a quarter of the history keys written), neutral with 100,000 models; a trim keeps
 * up to a key more of history, a time-travel or load decodes up to a key more. */
#define HISTORY_KEY_COMMANDS 64u
#define HISTORY_KEY_BYTES    8192u
/* Values this large go to RocksDB's blob files (store_batch.c). */
#define STORE_BLOB_MIN_BYTES (64u << 10)

/* A key being built: in buf while it fits, else on the heap. */
typedef struct store_key_s {
    char buf[64];
    char *p;
    size_t len, cap;
} store_key_t;

/** Starts a key: the partition (4 bytes BE) and the kind byte. */
void store_key_init(store_key_t *k, uint32_t partition, char kind);
/** Starts a key of the store's partition. */
void store_key_start(store_key_t *k, const state_store_t *s, char kind);
void store_key_add(store_key_t *k, const void *bytes, size_t len);
/** Appends v as 8 bytes BE, so that byte order is numeric order. */
void store_key_add_u64(store_key_t *k, uint64_t v);
/** Appends a model id, length-prefixed (16 bits BE), then the id. */
void store_key_add_id(store_key_t *k, const char *id, size_t len);
void store_key_free(store_key_t *k);
/** Reads k's value from the store's database and frees k. @returns the value (NULL:
 *  none, or *err set; free() it), its length in *len. */
char *store_key_get(state_store_t *s, store_key_t *k, size_t *len, char **err);
/** RocksDB's prefix extractor for the store's keys (the options own it): the prefix
 *  `<p> kind <len:u16> <model>` of a model's history, past snapshot and client keys,
 *  which the bloom filters index next to whole keys. */
rocksdb_slicetransform_t *store_key_model_prefix_new(void);
/** The n-byte big-endian integer at p. */
uint64_t store_be_n(const char *p, int n);
uint64_t store_be64(const char *p);
/** A scan of one model's keys of one kind (the prefix `<p> kind <len:u16> <model>`,
 *  store_key_model_prefix_new()): the prefix filters skip every table file that holds
 *  none of them, and an upper bound ends it before the next model's first key, whose
 *  value RocksDB would otherwise read (and, for history, merge) to find the prefix
 *  changed. */
typedef struct store_model_scan_s {
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ro;
    store_key_t upper;
} store_model_scan_t;
/** Opens a scan of the keys starting with prefix[0..prefix_len) (not positioned:
 *  seek sc->it). */
void store_model_scan_open(store_model_scan_t *sc, state_store_t *s, const char *prefix,
                           size_t prefix_len);
void store_model_scan_close(store_model_scan_t *sc);
/** Parses a key into item. @returns false for keys that are not per-partition
 *  records. */
bool store_key_parse(const char *k, size_t len, state_store_item_t *item);

/* ---- the cache and what it holds (store_cache.c, store_client.c) ---- */

/* Client records of all cached models live in one store-wide table (a table per model
 * would cost more than the model itself), keyed by model and client; each model also
 * lists its own, to drop them with it. */
typedef struct client_s {
    char *key; /* the model's cache key, the model id's length (2 bytes), the client id */
    size_t key_len;
    const char *id; /* the client id, inside key */
    size_t id_len;
    struct client_s *next; /* the model's next client */
    bool known;            /* a flush of this client was applied (seq 0 is a valid seq) */
    bool stored;           /* it has a record (in RocksDB or in the step) */
    bool seen; /* found stored by the scan in progress (store_clients_scan()) */
    /* Its record in RocksDB is older than this (a changelog store writes client
     * records at flush points, not with every step: store_clients_write()). */
    bool dirty;
    uint64_t seq;
    uint64_t at;        /* the model's command count after that flush: ages the record */
    char *mapped_paths; /* msgpack map of the last applied flush's reply */
    size_t mapped_paths_len;
    UT_hash_handle hh;
} client_t;

/* A client record expired in the step in progress: its delete is not in RocksDB yet,
 * so reads must not see the record (store_client_load(), store_clients_scan()). Same key
 * as client_t's. */
typedef struct expired_s {
    UT_hash_handle hh;
    size_t key_len;
    char key[];
} expired_t;

/* Completions of one history key not written yet: what a changelog store holds instead
 * of a memtable entry per model and step (store_flush.c). */
typedef struct held_history_s {
    uint64_t key;         /* the history key's count */
    uint32_t appended_to; /* completions the key held before these; STORE_NOT_APPENDED:
                           * the key starts with them */
    uint32_t items;
    char *bytes; /* an array32 head (HELD_HEAD_BYTES), then the items */
    size_t len, cap;
} held_history_t;

/* A cached model. @locality the store's user thread, like all of the store. */
struct state_model_s {
    /* Identity and decoded state: set when loaded (store_cache.c). */
    char *key; /* partition (4 bytes BE) + model id: the cache key */
    size_t key_len;
    const char *id; /* points into key */
    size_t id_len;
    state_master_t *master;
    state_history_mem_t *history;
    /* Set when loaded, kept up by store_flush.c and store_record.c.
     * Everything that decides an outcome or what is stored (the document bound, the
     * snapshot rewrite, history trimming, client expiry) is derived from what is
     * stored, the same way on every load: a model behaves the same whether it stayed
     * cached, was reloaded, or was rebuilt from change or snapshot records. */
    uint64_t snapshot_count;    /* command count of the stored snapshot */
    uint64_t history_start;     /* oldest history entry stored */
    size_t snapshot_bytes;      /* size of the stored snapshot (0: none) */
    size_t base_bytes;          /* the snapshot's size, or the initial document's */
    size_t history_bytes_since; /* stored history bytes from the snapshot's count on */
    size_t mem_bytes;           /* what the cache charges for this model */
    size_t history_charged;     /* the history ring's part of mem_bytes */
    size_t document_charged;    /* the document's part: measured when loaded and at
                                 * each snapshot rewrite, estimated in between */
    uint64_t client_records;    /* client records stored (committed or in the step) */
    bool clients_counted;       /* client_records is known (counted on first need) */
    bool clients_dirty;         /* some of its clients are dirty */
    /* The counts of its history keys from history_start on, stored or written in the
     * step, in order: trim_history() finds where to cut here, not with a RocksDB
     * iterator (whose creation, under a memtable full of the trims' range deletes,
     * was a third of a flush's cost). */
    uint64_t *history_keys;
    size_t history_keys_len, history_keys_cap;
    /* What its last history key holds while later flushes may still join it
     * (history_tail_open; store_flush.c): tail_items completions of tail_bytes bytes.
     * Set when loaded, from what is stored: the keys are the same however the model
     * was cached. Only the counts: the completions are appended by RocksDB. */
    uint64_t history_tail_items;
    size_t history_tail_bytes;
    bool history_tail_open;
    /* The counts of its past snapshots (STATE_ITEM_PAST keys), stored or written in
     * the step, in order: where time travel starts, and how far trim_history() may
     * cut (store_travel.c). Read with the model. */
    uint64_t *past;
    size_t past_len, past_cap;
    /* The sweep's marks (store_flush.c sets, store_sweep.c clears). */
    bool changed_marked; /* its "changed since its last snapshot record" key is written */
    bool snapshot_sent;  /* a swept snapshot record of it is on its way to Kafka */
    /* A changelog store's history not written to RocksDB yet (store_flush.c): the
     * completions for its last history key while later flushes may join it. */
    held_history_t *held;
    size_t held_len, held_cap;
    uint64_t flushed_in_step; /* the store's step of its last flush, plus one (0: none) */
    /* Its client records (store_client.c) and the LRU (store_cache.c). */
    client_t *clients;                  /* a list; the store's table finds them */
    state_model_t *lru_prev, *lru_next; /* most recently used first */
    UT_hash_handle hh;
};

/* A point write of the step in progress: key and value live in the store's op_bytes. */
typedef struct pending_op_s {
    size_t at;        /* key at op_bytes + at, value right after it */
    uint32_t key_len; /* value_len is UINT32_MAX for a delete */
    uint32_t value_len;
    /* An append to a history key (store_batch_append()): how many completions the
     * key held before it; STORE_NOT_APPENDED for a put or a delete. */
    uint32_t appended_to;
    size_t order; /* keeps writes to one key in the order they were made */
} pending_op_t;

struct state_outbox_bytes_s {
    atomic_uint refs;
    size_t len;
    char *data; /* the step's outbox value */
};

/* A changelog store's step whose records Kafka has not confirmed yet. */
typedef struct outbox_held_s {
    uint64_t id;
    /* The store's reference to the step's bytes; NULL once written at a flush point
     * (then deleting it needs a RocksDB delete). */
    state_outbox_bytes_t *bytes;
} outbox_held_t;

/* One store: the connection to its RocksDB database, the step in progress, and the
 * cache. A store has one user thread (the worker that owns its partition, or a
 * command's main thread); nothing here is locked. */
struct state_store_s {
    /* @locality set by state_store_open(); cache_bytes also by
     * state_store_set_cache_bytes() between steps. */
    state_store_conf_t conf;
    codec_value_t *initial_document;
    size_t initial_bytes; /* the initial document's size as msgpack */

    /* @locality RocksDB handles: opened and closed with the store (store.c). */
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_writeoptions_t *write_options;
    rocksdb_writeoptions_t *unlogged_options; /* a restore's commits: no WAL */
    bool restoring;                           /* state_store_restore_begin() */
    bool logged;   /* live commits use the WAL: not a changelog store (or fsync) */
    bool unlogged; /* commits skipped the WAL since open: flush before closing */
    /* A flush recorded since the last commit left a dirty client record: the cache
     * holds a state RocksDB must not get before that commit (state_store_close()). */
    bool clients_uncommitted;
    bool blob_files;       /* large values go to blob files (store_batch_write()) */
    double checkpoint_at;  /* a changelog store's next memtable flush, monotonic s */
    uint64_t flush_points; /* memtable flushes asked for (state_store_checkpoint()) */
    /* total order: every read but a model's scans (store_model_scan_open()) */
    rocksdb_readoptions_t *read_options;
    char failed[256]; /* non-empty once a write failed: no more commits */

    /* @locality the step in progress (store_batch.c): filled by flushes, change and
     * snapshot records, offsets and outbox records; written and emptied by
     * state_store_commit().
     * A step's point writes, handed to RocksDB sorted by key at commit: the memtable's
     * skiplist inserts a sorted run by moving its last position along, instead of
     * searching every level from the top for each key (the processor's biggest cost,
     * seen with perf, when history, client, outbox and offset keys alternate). */
    pending_op_t *ops;
    size_t ops_len, ops_cap;
    char *op_bytes;
    size_t op_bytes_len, op_bytes_cap;
    /* History trims, applied after the point writes (see trim_history()). */
    char *trims;
    size_t trims_len, trims_cap;
    rocksdb_writebatch_t *batch;
    uint64_t step; /* commits so far */
    /* Reused for each value packed into the step (history, client record, snapshot)
     * and for a flush's mappedPaths: no malloc per flush once they have grown (see
     * store_scratch_done()). */
    msgpack_sbuffer scratch, mapped;

    /* @locality the outbox (store_outbox.c): the step's records, written as one key
     * at commit (see state_store_outbox_add()), and the next step's id. */
    msgpack_sbuffer outbox_step;
    uint32_t outbox_step_count;
    uint64_t outbox_step_id;
    /* The last commit's step, referenced until taken or the next commit. */
    state_outbox_bytes_t *outbox_last;
    uint64_t outbox_last_id;
    bool outbox_next_known; /* outbox_next was found (on first use) */
    uint64_t outbox_next;
    /* A changelog store's steps whose records are not delivered yet, oldest first:
     * written to RocksDB only at a flush point (store_outbox_flush_point()). */
    outbox_held_t *held;
    size_t held_len, held_cap;
    size_t memtable_estimate;  /* bytes the active memtable may hold (flush points) */
    size_t held_history_bytes; /* the cached models' held history (store_flush.c) */

    /* @locality the cache (store_cache.c, store_client.c): models loaded by
     * state_store_model(), evicted after commits. */
    state_model_t *models; /* the cache */
    client_t *clients;     /* the cached models' client records */
    expired_t *expired;    /* client records expired in this step (until the commit) */
    state_model_t *lru_head, *lru_tail;
    size_t cache_used;
    size_t pool_reported;              /* what *conf.cache_pool counts of cache_used */
    uint64_t cache_hits, cache_misses; /* state_store_model() calls */
    msgpack_zone *zone;                /* decoded commands being replayed */
    /* A change record being applied (store_record.c): its tree, its completions. */
    msgpack_zone *record_zone;
    codec_packed_t record_applied;
};

/* A client record's id and age (the model's command count after its last flush). */
typedef struct aged_s {
    char *id;
    size_t id_len;
    uint64_t at;
} aged_t;

/* Allocator overhead per allocation, charged to the cache with each allocation. */
#define STORE_ALLOC_OVERHEAD 16

/** Charges bytes to m and the cache. */
void store_charge(state_store_t *s, state_model_t *m, size_t bytes);
/** Charges m's document what it measures now (walks it: loading, snapshot rewrites). */
void store_measure_document(state_store_t *s, state_model_t *m);
/** Charges m's history ring what it measures now (it grows in steps). */
void store_recharge_history(state_store_t *s, state_model_t *m);
/** Drops m from the cache and frees it: what only the cache holds (dirty client
 *  records, held history) is written first, the step's writes stay in the step. */
void store_model_drop(state_store_t *s, state_model_t *m);
/** Frees m and its client records (not in the cache's lists). */
void store_model_free(state_store_t *s, state_model_t *m);
/** Evicts least recently used models until the cache fits; called when every model
 *  is clean (its state is in RocksDB). */
void store_evict(state_store_t *s);
/** Sets what the store counts in its cache pool (conf.cache_pool) to used. */
void store_pool_report(state_store_t *s, size_t used);
/** The cached model, or NULL when it is not in the cache (never loads). */
state_model_t *store_model_cached(state_store_t *s, const char *model, size_t model_len);

/** The client's record of m, loaded (or new) and cached. A record that cannot be read
 *  fails the store (s->failed): taken as "no record", a retry would apply twice. */
client_t *store_client_load(state_store_t *s, state_model_t *m, const char *id,
                            size_t id_len);
void store_client_free(client_t *c);
/** How many client records m has as the step leaves them; with ages, each one's id
 *  and age too (the caller frees them). */
size_t store_clients_scan(state_store_t *s, state_model_t *m, aged_t **ages);
/** Writes the records of dirty clients, of m (NULL: of every cached model), into batch
 *  (NULL: straight into RocksDB, for a model about to leave the cache or to be
 *  published between steps). A changelog store writes client records only so: at
 *  each flush point, and when their model leaves the cache (store_record_flush()). */
void store_clients_write(state_store_t *s, state_model_t *m, rocksdb_writebatch_t *batch);
/** Puts c's record (seq, at, mappedPaths) of model m into batch (NULL: the step). */
void store_client_put(state_store_t *s, const state_model_t *m, const client_t *c,
                      rocksdb_writebatch_t *batch);
/** Writes batch to RocksDB outside a step (no WAL: a changelog store), counting it
 *  towards the next flush point; a failure fails the store. */
void store_write_now(state_store_t *s, rocksdb_writebatch_t *batch);
/** Keeps m's client records to the newest clients_per_model, deleting the rest. */
void store_clients_expire(state_store_t *s, state_model_t *m);
/** The step is written (or failed): RocksDB has the expired records' deletes now. */
void store_expired_forget(state_store_t *s);

/* ---- writing (store_batch.c, store_flush.c) ---- */

/** Adds a point write to the step (value NULL: a delete). */
void store_batch_write(state_store_t *s, const char *key, size_t key_len,
                       const char *value, size_t value_len);
#define STORE_NOT_APPENDED UINT32_MAX
/** Adds an append to a history key to the step: array (a msgpack array of
 *  completions) joins the key's array, which holds appended_to completions before
 *  it. The step's appends to one key, and a put before them, become one write. */
void store_batch_append(state_store_t *s, const char *key, size_t key_len,
                        const char *array, size_t array_len, uint32_t appended_to);
/** Joins msgpack arrays into one with the items of each, in order: first (unless
 *  NULL), then the n parts; at buf if it fits in buf_cap bytes, else in a malloc'ed
 *  buffer (the caller frees a result that is not buf). @returns it and *out_len, or
 *  NULL if a part is not an array. */
char *store_arrays_join(const char *first, size_t first_len, const char *const *parts,
                        const size_t *lens, size_t n, char *buf, size_t buf_cap,
                        size_t *out_len);
/** A range delete that may cover keys written before it in this step: those go
 *  first. */
void store_batch_delete_range(state_store_t *s, const char *from, size_t from_len,
                              const char *to, size_t to_len);
/** A history trim: a range delete applied after the step's point writes. */
void store_batch_trim(state_store_t *s, const char *from, size_t from_len, const char *to,
                      size_t to_len);
/** The step's RocksDB batch: the point writes sorted, the outbox key, the trims. */
rocksdb_writebatch_t *store_batch_finish(state_store_t *s);
/** Appends count to m's history keys; s NULL: not charged to the cache (yet). */
void store_history_key_add(state_store_t *s, state_model_t *m, uint64_t count);
/** Sets m's history tail from the value of its last history key, as loaded: kept when
 *  later flushes may join that key (HISTORY_KEY_COMMANDS), else none. */
void store_history_tail_load(state_model_t *m, const char *value, size_t len);
/** Calls visit for each point write of the step in progress whose key starts with
 *  prefix, in the order they were made (value NULL: a delete; appended_to: for an
 *  append, the completions its key held before it, else 0). Key and value live
 *  until the step's next write. Writes already handed to the RocksDB batch (by a
 *  range delete) are not seen: none precede a request's handling in a step. */
void store_batch_pending(const state_store_t *s, const char *prefix, size_t prefix_len,
                         void (*visit)(void *opaque, const char *key, size_t key_len,
                                       const char *value, size_t value_len,
                                       uint32_t appended_to),
                         void *opaque);
/** Writes m's held history (NULL: every cached model's) into batch. */
void store_history_write(state_store_t *s, state_model_t *m, rocksdb_writebatch_t *batch);
/** Calls visit for each of m's history keys held (not written yet), oldest first, as
 *  store_batch_pending() does for the step's writes: the value is a msgpack array of the
 *  held completions, appended_to what the key held before them (0: they start it).
 *  Values live until m's held history changes (a flush recorded, a write). */
void store_history_held_visit(state_store_t *s, const state_model_t *m,
                              void (*visit)(void *opaque, const char *key, size_t key_len,
                                            const char *value, size_t value_len,
                                            uint32_t appended_to),
                              void *opaque);
/** Frees m's held history, unwritten (m is being freed: its charge goes with m's). */
void store_history_held_free(state_store_t *s, state_model_t *m);
/** Records a flush applied to m: its applied completions (applied_from on) go to the
 *  history and the batch, the client's record gets seq and mapped_paths (msgpack),
 *  and the snapshot is rewritten when due (@returns whether it was; *replaced is the
 *  count of the one it replaced). */
bool store_record_flush(state_store_t *s, state_model_t *m, const char *client,
                        size_t client_len, uint64_t seq, uint64_t applied_from,
                        const codec_packed_t *applied, const char *mapped_paths,
                        size_t mapped_paths_len, uint64_t *replaced);

/* ---- past snapshots and time travel (store_travel.c) ---- */

/** Reads m's past snapshot counts into m->past (a store without them reads none).
 *  @returns 0, or -1 and errstr. */
int store_past_load(state_store_t *s, state_model_t *m, char *errstr, size_t errstr_size);
/** Writes a past snapshot of m at count: the bytes of its snapshot. */
void store_past_put(state_store_t *s, state_model_t *m, uint64_t count,
                    const char *snapshot, size_t snapshot_len);
/** Where trimming m's history may cut at most so that the versions from keep_from on
 *  stay reachable: the newest base (past snapshot, or the initial document when the
 *  history starts at 0) at or below keep_from, or keep_from when there is none. Past
 *  snapshots below that base are deleted in the step. */
uint64_t store_past_trim(state_store_t *s, state_model_t *m, uint64_t keep_from);

/* The items of a stored history value: the array of completions of one or more
 * consecutive flushes, or a single completion as earlier versions stored it. */
typedef struct store_items_s {
    const char *value;
    size_t len, at;
    uint32_t left;
} store_items_t;
void store_items_init(store_items_t *it, const char *value, size_t len);
/** The next item. @returns 1, 0 at the end, -1 when the value is corrupt. */
int store_items_next(store_items_t *it, const char **item, size_t *item_len);

/** Decodes a stored snapshot, {"commandCount", "document"}: @returns 0 with *count
 *  and *doc (the caller's), or -1 when it is not one (store_cache.c). */
int store_snapshot_decode(const char *value, size_t len, uint64_t *count,
                          codec_value_t **doc);

/* ---- the rest ---- */

/** Formats a RocksDB error into errstr and frees err. @returns -1. */
int store_fail_rocks(char *err, const char *what, char *errstr, size_t errstr_size);
/** map's field name when it has type, or NULL (store_record.c). */
const codec_value_t *store_field(const codec_value_t *map, const char *name,
                                 codec_value_type_t type);
/* Values larger than this are not kept in the store's scratch buffers between uses. */
#define SCRATCH_KEEP_BYTES (64 << 10)
/** sb emptied for the next value, its memory kept unless a large value (a snapshot)
 *  grew it: that is freed rather than held for as long as the store is open. */
void store_scratch_done(msgpack_sbuffer *sb);
/** Writes the step's outbox records as one key (store_outbox.c). */
void store_outbox_write_step(state_store_t *s);
/** A changelog store's flush point: the held steps not yet stored go into batch, so
 *  that the memtable flushed next holds every record not delivered by then.
 *  @returns how many steps it put in batch. */
size_t store_outbox_flush_point(state_store_t *s, rocksdb_writebatch_t *batch);
/** Fails the store: s->failed gets the message, and every later commit is refused. A
 *  changelog store also stops RocksDB's background work, which could otherwise flush
 *  its memtable by itself (recovering from a full disk) and persist steps whose outbox
 *  records are only held in memory. Left as its last flush point wrote it, the store
 *  comes back consistent, as after a crash. */
void store_set_failed(state_store_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Drops the held steps and the last commit's step (closing, dropping the partition):
 *  their bytes live on while referenced. */
void store_outbox_free_held(state_store_t *s);
/** Forgets the next outbox id: it is found again from what is stored. */
void store_outbox_forget(state_store_t *s);

#endif
