/* state/store.h - durable masters in RocksDB: snapshots, history, client records and
 * the partition's progress, written atomically one processing step at a time.
 *
 * A store serves one input partition, named once in its configuration: every call
 * reads and writes that partition's records (their keys start with it, so a partition
 * is one key range that can be dropped or restored on its own). Models are loaded into
 * a bounded cache (decoded document + recent history in memory); each flush appends its
 * applied commands to the step's write batch, and state_store_commit() writes the batch
 * together with the partition's next input offset. The key layout, and the map of the
 * files behind this header, are in state/README.md. */
#ifndef FLUSHOUT_STATE_STORE_H
#define FLUSHOUT_STATE_STORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "codec/value.h"
#include "history.h"
#include "master.h"

/* The layout this code writes. Layout 1 (history keys without merge operands) is
 * read too, and becomes layout 2 when opened to be written; any other is refused, and
 * builds that know only layout 1 refuse a layout 2 store at open rather than fail to
 * read its history (state/README.md). */
#define STATE_STORE_LAYOUT        2
#define STATE_STORE_LAYOUT_OLDEST 1

/* state_store_conf_t.partition for a store opened to be read whatever it holds
 * (inspect): the partition of its first record, 0 when it is empty. */
#define STATE_STORE_PARTITION_STORED (-1)

typedef struct state_store_conf_s {
    const char *dir;
    int32_t partition; /* the input partition it serves (the keys' prefix) */
    bool fsync;        /* sync every commit (power-loss durability) */
    /* The changes topic holds what every commit changed (run): commits skip RocksDB's
     * write-ahead log, as Kafka Streams' stores do, and a crash rolls the store back
     * to its last memtable flush, from where the owner catches up (store.c has the
     * argument). Ignored with fsync. */
    bool changelog;
    /* A changelog store flushes its memtable at least this often (0: 30 s). */
    uint32_t checkpoint_ms;
    uint64_t history;        /* commands of history kept per model for partial syncs */
    uint64_t snapshot_every; /* rewrite a snapshot at least every N commands */
    size_t cache_bytes;      /* decoded models kept in memory (LRU by bytes) */
    /* Stores sharing a pool may each keep more than cache_bytes (their share) while
     * their total, counted in *cache_pool at each commit, is within cache_pool_bytes:
     * a partition with more busy large models than its share then keeps them, where
     * it would reload one at every step. NULL: cache_bytes is a hard bound. */
    atomic_size_t *cache_pool;
    size_t cache_pool_bytes;
    uint64_t clients_per_model; /* client records kept per model, newest first */
    state_master_conf_t master;
    const codec_value_t *initial_document; /* new models start from a copy; NULL = {} */
} state_store_conf_t;

typedef struct state_store_s state_store_t;
typedef struct state_model_s state_model_t;

/** Call once at the start of every thread that opens, writes or reads stores:
 *  turns off RocksDB's per-thread perf counting, which it enables by default and
 *  pays for at every key comparison of a memtable insert (about 1% of a worker). */
void state_store_thread_start(void);

/** Opens (creating if missing) the store of conf->partition in conf->dir. conf is
 *  copied.
 *  @returns the store, or NULL and errstr (a store of another layout version, an
 *  unwritable directory, a corrupt file). */
state_store_t *state_store_open(const state_store_conf_t *conf, char *errstr,
                                size_t errstr_size);
/** Closes the store; uncommitted changes are lost, committed ones are flushed to table
 *  files first (a changelog store's are in no log). NULL-safe. A store whose write
 *  failed keeps its database open until the process exits (see store.c). */
void state_store_close(state_store_t *s);

/** The model, loaded from the store (snapshot + the history after it) or
 *  new. Lives until the next state_store_commit() (which may evict it).
 *  @returns NULL and errstr when the store cannot be read. */
state_model_t *state_store_model(state_store_t *s, const char *model, size_t model_len,
                                 char *errstr, size_t errstr_size);

state_master_t *state_model_master(state_model_t *m);
/** The model's history provider (recent commands, in memory). */
state_history_t state_model_history(state_model_t *m);

/** An upper bound on the size of the model's document as msgpack: its stored
 *  snapshot plus every command applied since (O(1); exact right after a snapshot). */
size_t state_model_document_bound(const state_model_t *m);

/* A count-based snapshot record republishes the whole document. A document larger
 * than this is published with the rewrites of its stored snapshot only, whose rule
 * pays for each with history (see state_model_flushed()): a 10 MB document
 * republished every 1,000 commands of about 75 bytes put 130 bytes on the snapshots
 * topic for each byte of change record. */
#define STATE_RECORD_SIZE_FLOOR (64u * 1024)

/* Time travel: the model as it was at an earlier version. */
typedef enum state_travel_e {
    STATE_TRAVEL_OK,          /* *master is the model at that version */
    STATE_TRAVEL_UNAVAILABLE, /* older than what can be rebuilt: *oldest is the
                               * oldest version that can */
    STATE_TRAVEL_FAILED,      /* the store cannot be read, or does not replay (errstr) */
} state_travel_t;

/** The model as it was at version `at` (at commands applied, at most its command
 *  count), rebuilt from the newest kept snapshot at or below it (a past snapshot, the
 *  stored snapshot, or the initial document when the history starts at 0) and the
 *  stored history replayed forward from there. Reads RocksDB (and what the step in
 *  progress writes, and the history key the store holds); loads nothing into the
 *  cache. On OK the caller destroys
 *  *master. */
state_travel_t state_model_travel(state_store_t *s, state_model_t *m, uint64_t at,
                                  state_master_t **master, uint64_t *oldest, char *errstr,
                                  size_t errstr_size);

/* What a client's last applied flush was, to recognise a retry. */
typedef enum state_seq_e {
    STATE_SEQ_NEW,       /* greater than the last applied: apply */
    STATE_SEQ_DUPLICATE, /* equal: a retry of the last flush */
    STATE_SEQ_STALE,     /* lower: refuse */
} state_seq_t;

/* What a retry needs to be answered as the original flush was. */
typedef struct state_retry_s {
    const char *mapped_paths; /* the original reply's mappedPaths, msgpack; lives until
                               * the next call on the model */
    size_t mapped_paths_len;
    uint64_t at; /* the model's command count right after the original flush */
} state_retry_t;

/** Checks seq against the client's record. On DUPLICATE, retry (may be NULL) says how
 *  the original flush was answered. */
state_seq_t state_model_check_seq(state_store_t *s, state_model_t *m, const char *client,
                                  size_t client_len, uint64_t seq, state_retry_t *retry);

/** Records an applied flush: its applied completions go to the history and the step's
 *  batch, the client's record is updated, and the snapshot is rewritten when due
 *  (once the history since the last one is at least 16 KB and has outgrown it, or
 *  after --snapshot-every commands is an eighth of it: decided from what is stored,
 *  so the same on every load).
 *  @returns whether it rewrote the snapshot; then *replaced is the count of the one
 *  it replaced (0 for none). */
bool state_model_flushed(state_store_t *s, state_model_t *m, const char *client,
                         size_t client_len, uint64_t seq, const state_apply_t *a,
                         uint64_t *replaced);

/** Writes the step atomically: every change recorded since the last commit and the
 *  partition's next input offset (when next_offset >= 0).
 *  @returns 0, or -1 and errstr; after a failed write the store refuses further
 *  commits (nothing half-written is ever visible). */
int state_store_commit(state_store_t *s, int64_t next_offset, char *errstr,
                       size_t errstr_size);

/** Starts a restore (catching up, rebuilding): the commits that follow skip the
 *  write-ahead log. A crash may lose them, leaving the store as an earlier commit of
 *  the restore (or the one before it) left it, which is consistent: each commit holds
 *  the position its state reflects (a restore's rules make that resumable). */
void state_store_restore_begin(state_store_t *s);
/** Ends a restore: what it committed is flushed to table files (synced) before
 *  anything else is committed, with the log again: a logged write replayed after a
 *  crash on top of lost unlogged ones would leave a gap. @returns 0, or -1 and errstr
 *  (the store then refuses further commits). */
int state_store_restore_end(state_store_t *s, char *errstr, size_t errstr_size);

/* Checkpoints: copies of a changelog store as a flush point left it, the state a
 * crash would leave, from which the owner's catch-up rules (processor/catch_up.h)
 * bring it forward. `run --checkpoint-dir` keeps one per partition for `rebuild`. */

/** Makes a flush point now and waits until it is written (a changelog store; others
 *  have nothing to do). @returns 0, or -1 and errstr. */
int state_store_flush_point(state_store_t *s, char *errstr, size_t errstr_size);
/** Memtable flushes of a changelog store so far, each a flush point (the 30 s
 *  interval, a full memtable, state_store_flush_point(), a restore's end, close). */
uint64_t state_store_flush_points(const state_store_t *s);
/** Whether the last flush point's memtable is still being written to table files. */
bool state_store_flush_pending(state_store_t *s);
/** Copies the store as its last flush point left it to dir, which must not exist
 *  (RocksDB's checkpoint: table files are hard-linked when dir is on the same file
 *  system, else copied; what was committed since is not in it).
 *  @returns 0 (*flush_point: state_store_flush_points() of the state it holds), 1
 *  (that flush point is still being written: try again at a later commit), or -1 and
 *  errstr. */
int state_store_checkpoint(state_store_t *s, const char *dir, uint64_t *flush_point,
                           char *errstr, size_t errstr_size);

/* One stored record, as state_store_scan() sees it. */
typedef struct state_store_item_s {
    int32_t partition;
    char kind;         /* STATE_ITEM_* */
    const char *model; /* snapshot, history, client */
    size_t model_len;
    uint64_t count;     /* history, past snapshot: the command count */
    const char *client; /* client record */
    size_t client_len;
    const char *value; /* the stored bytes (msgpack; offset: 8 bytes BE) */
    size_t value_len;
} state_store_item_t;

/* The kinds of record, each the kind byte of its keys (state/README.md): */
#define STATE_ITEM_OFFSET     'o'
#define STATE_ITEM_SNAPSHOT   's'
#define STATE_ITEM_HISTORY    'h'
#define STATE_ITEM_CLIENT     'c'
#define STATE_ITEM_OUTBOX     'x'
#define STATE_ITEM_CHANGES    'k'
#define STATE_ITEM_PARTITIONS 'p'
#define STATE_ITEM_CHANGED    'd'
#define STATE_ITEM_SETTINGS   'f'
#define STATE_ITEM_PAST       'v' /* a past snapshot, for time travel */

/** RocksDB's merge operator for the store's history keys, which flushes append to
 *  (state/store_merge.c): whatever opens a store's RocksDB directly, not through
 *  state_store_open(), sets it in its options to read history. */
struct rocksdb_mergeoperator_t *state_store_merge_operator_new(void);

/** Calls visit for every stored record, in key order (partition by partition, should
 *  the store hold several; within one, client records, history, the offset, then
 *  snapshots), whatever partition the store serves. visit returns non-zero
 *  to stop. @returns 0, or -1 and errstr when the store cannot be read. */
int state_store_scan(state_store_t *s,
                     int (*visit)(void *opaque, const state_store_item_t *item),
                     void *opaque, char *errstr, size_t errstr_size);

/** Deletes everything stored for the store's partition (models, history, clients,
 *  offsets, outbox) at once, and empties the cache: for a partition whose state is to
 *  be rebuilt from the topics. Commits. @returns 0, or -1 and errstr. */
int state_store_drop_partition(state_store_t *s, char *errstr, size_t errstr_size);

/* What a store reports about itself (the processor's /metrics). */
typedef struct state_store_stats_s {
    uint64_t cache_bytes, cache_models;
    uint64_t cache_hits, cache_misses; /* models found in the cache / loaded, so far */
    /* RocksDB properties worth watching: */
    uint64_t sst_bytes, memtable_bytes, pending_compaction_bytes, running_compactions;
    uint64_t write_stopped; /* 1 while writes stall on compactions */
    uint64_t estimated_keys;
} state_store_stats_t;

/** Fills st. Not thread-safe against the store's user: call from its thread. */
void state_store_stats(state_store_t *s, state_store_stats_t *st);

/** Bytes the cache of decoded models holds now, and how many models. */
size_t state_store_cache_bytes(const state_store_t *s, size_t *models);

/** The partition's next input offset, or -1 when none is stored. */
int64_t state_store_next_offset(state_store_t *s);

/* The outbox: records a step produced (replies, change records, dead letters), stored
 * in the same batch as the state change they come from, and deleted once Kafka
 * confirms them. After a crash, what is still there is produced again. A changelog
 * store (no WAL) holds them in memory instead and stores them at its next memtable
 * flush, with every step not delivered by then: what a crash leaves is the same. */

typedef struct state_header_s {
    const char *name; /* NUL-terminated */
    const char *value;
    size_t value_len;
} state_header_t;

/* What the outbox keeps of a record's headers: a record with more, or with a longer
 * name (NUL included), is refused when read back (state_store_outbox_scan()), so
 * producers of outbox records stay within them. */
#define STATE_OUTBOX_MAX_HEADERS 32
#define STATE_OUTBOX_NAME_BYTES  256 /* a topic or header name, NUL included */

typedef struct state_outbox_rec_s {
    const char *topic;
    int32_t partition; /* -1: chosen from the key by the producer's partitioner */
    const char *key;   /* NULL: no key */
    size_t key_len;
    const char *value;
    size_t value_len;
    const state_header_t *headers;
    size_t header_count;
} state_outbox_rec_t;

/** Adds a record to the step's outbox. The records of one step share an outbox id
 *  (increasing, and continued after the highest one stored) and are stored and
 *  deleted together. value_at (NULL: not wanted) gets where rec's value lies in the
 *  step's bytes once committed (state_store_outbox_take_step()).
 *  @returns the step's outbox id. */
uint64_t state_store_outbox_add(state_store_t *s, const state_outbox_rec_t *rec,
                                size_t *value_at);

/* A committed step's outbox records, one block of bytes shared by the store (until the
 * step is delivered, or the store closes) and by whoever points into it (the producer's
 * records in flight): freed by the last of them to let go, on any thread. So each
 * output is copied once, into the step, and not again for the producer. */
typedef struct state_outbox_bytes_s state_outbox_bytes_t;

/** The bytes of the step the last commit wrote, with one reference for the caller, and
 *  their outbox id; NULL when that commit had no records (or they were taken). */
state_outbox_bytes_t *state_store_outbox_take_step(state_store_t *s, uint64_t *id);
/** b's bytes and their length. */
const char *state_outbox_bytes_data(const state_outbox_bytes_t *b, size_t *len);
/** Adds n references to b. */
void state_outbox_bytes_ref(state_outbox_bytes_t *b, unsigned n);
/** Drops one reference to b (NULL: nothing); the last frees it. */
void state_outbox_bytes_unref(state_outbox_bytes_t *b);

/** Marks the outbox ids first..last delivered (every record of those steps): they
 *  are deleted with the next commit (held ones not stored yet are just dropped). */
void state_store_outbox_done(state_store_t *s, uint64_t first, uint64_t last);

/** Calls visit for each record still in the outbox, oldest first, with its step's id
 *  (rec and what it points to live during the call); visit returns non-zero to stop.
 *  @returns 0, or -1 and errstr. */
int state_store_outbox_scan(state_store_t *s,
                            int (*visit)(void *opaque, uint64_t id,
                                         const state_outbox_rec_t *rec),
                            void *opaque, char *errstr, size_t errstr_size);

/* Change records: what a flush did, as published on the changes topic, and applied
 * to a store when catching up a partition that was processed elsewhere. */

/** Packs the change record of the flush a just applied (state_model_flushed()) to
 *  the model at input offset. */
void state_change_pack(msgpack_packer *pk, const char *model, size_t model_len,
                       const char *client, size_t client_len, uint64_t seq,
                       const state_apply_t *a, int64_t offset);

typedef enum state_change_e {
    STATE_CHANGE_APPLIED, /* the record was applied */
    STATE_CHANGE_SKIPPED, /* the model already reflects it (from < command count) */
    STATE_CHANGE_GAP,     /* it starts after the model's count: records are missing */
    STATE_CHANGE_FAILED,  /* not a change record, or one that does not fit (errstr) */
} state_change_t;

/** Applies a change record (key = model) to its model, exactly as the
 *  flush was applied: document, history and the client's record. *offset is set to
 *  the record's input offset (-1 if it has none) unless FAILED. */
state_change_t state_store_apply_change(state_store_t *s, const char *key, size_t key_len,
                                        const char *value, size_t value_len,
                                        int64_t *offset, char *errstr,
                                        size_t errstr_size);

/* Snapshot records: a model's whole state, published on the snapshots topic now and
 * then so that a partition can be restored when the changes topic no longer reaches
 * back to the beginning:
 *   {"type":"snapshot","model","commandCount","document","clients":{id:{seq,at,mappedPaths}}}
 */

/** Packs the snapshot record of model as committed. Call right after a commit.
 *  @returns 0, or -1 and errstr. */
int state_store_pack_snapshot_record(state_store_t *s, const char *model,
                                     size_t model_len, msgpack_packer *pk, char *errstr,
                                     size_t errstr_size);

/** Installs a snapshot record (key = model) in the step's batch when it is
 *  ahead of the model (which then has no history before it). Commit before using the
 *  model again. @returns 1 installed, 0 not ahead, -1 and errstr for a bad record. */
int state_store_install_snapshot(state_store_t *s, const char *key, size_t key_len,
                                 const char *value, size_t value_len, char *errstr,
                                 size_t errstr_size);

/** The next offset of the partition's changes topic partition that this store has
 *  not necessarily seen (catching up starts there), or -1. */
int64_t state_store_changes_offset(state_store_t *s);
/** Records it in the step's batch. */
void state_store_set_changes_offset(state_store_t *s, int64_t offset);

/* Models changed since their last snapshot record: a flush or change record applied
 * marks its model (one small key, written once per load of the model), and publishing
 * its snapshot record clears the mark. Sweeping the marked models now and then
 * (--snapshot-topic-interval-ms) bounds how far back any model's restore must read
 * the changes topic, however quiet the model. */

/** Calls visit for up to max models marked changed, as committed, in key
 *  order, starting after the model after (NULL: from the first); visit returns non-zero
 *  to stop. @returns 0, or -1 and errstr. */
int state_store_changed_models(state_store_t *s, const char *after, size_t after_len,
                               size_t max,
                               int (*visit)(void *opaque, const char *model,
                                            size_t model_len),
                               void *opaque, char *errstr, size_t errstr_size);

/** Notes that model's snapshot record, as committed, was handed to the producer. */
void state_store_snapshot_sent(state_store_t *s, const char *model, size_t model_len);
/** Kafka confirmed it: clears model's mark in the step's batch, if the model has not
 *  changed since it was sent (as far as the cache knows: an evicted model keeps its
 *  mark, for the next sweep). */
void state_store_snapshot_published(state_store_t *s, const char *model,
                                    size_t model_len);

/** The partition count of the flushes topic that the partition's state was built for (the
 *  layout: which models a partition holds depends on it), or -1 when not recorded. */
int32_t state_store_partition_count(state_store_t *s);
/** Records it in the step's batch. */
void state_store_set_partition_count(state_store_t *s, int32_t count);

/** The settings that the partition's state was built with (a canonical "name=value;..."
 *  string of the options that change outcomes; see processor_settings()), or NULL when
 *  not recorded. The caller frees it. */
char *state_store_settings(state_store_t *s);
/** Records them in the step's batch. */
void state_store_set_settings(state_store_t *s, const char *settings);

/** Changes the cache's byte budget (the processor shares --cache-mb among its stores).
 *  Call between steps: with nothing uncommitted, models beyond it are evicted at once,
 *  else at the next commit. */
void state_store_set_cache_bytes(state_store_t *s, size_t cache_bytes);

#endif
