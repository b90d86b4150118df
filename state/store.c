/* state/store.c - durable masters in RocksDB, written one processing step at a time.
 *
 * Everything a partition owns sits under a 4-byte big-endian partition prefix, so a
 * partition is one contiguous key range (dropped or counted on its own). The kinds of
 * record under it are listed in state/README.md. */
#define _GNU_SOURCE /* qsort_r */
#include "store.h"

#include <errno.h>
#include <pthread.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "codec/hash.h"
/* Seeded: model and client ids come from clients (hash flooding). */
#define HASH_FUNCTION CODEC_UTHASH_FUNCTION
#include <uthash.h>

#include "codec/alloc.h"
#include "codec/msgpack.h"
#include "codec/request.h"
#include "history_mem.h"

#define META_PARTITION  0xffffffffu
#define KIND_VERSION    'V'
#define KIND_OFFSET     'o'
#define KIND_SNAPSHOT   's'
#define KIND_HISTORY    'h'
#define KIND_CLIENT     'c'
#define KIND_OUTBOX     'x'
#define KIND_CHANGES    'k'
#define KIND_PARTITIONS 'p'
#define KIND_CHANGED    'd'
#define KIND_SETTINGS   'f'
#define MAX_ID_BYTES    65535 /* model ids are length-prefixed with 16 bits */

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
    bool seen;             /* found stored by the scan in progress (scan_clients()) */
    uint64_t seq;
    uint64_t at;        /* the model's command count after that flush: ages the record */
    char *mapped_paths; /* msgpack map of the last applied flush's reply */
    size_t mapped_paths_len;
    UT_hash_handle hh;
} client_t;

/* A client record expired in the step in progress: its delete is not in RocksDB yet,
 * so reads must not see the record (client_load(), scan_clients()). Same key as
 * client_t's. */
typedef struct expired_s {
    UT_hash_handle hh;
    size_t key_len;
    char key[];
} expired_t;

struct state_model_s {
    char *key; /* partition (4 bytes BE) + model id: the cache key */
    size_t key_len;
    int32_t partition;
    const char *id; /* points into key */
    size_t id_len;
    state_master_t *master;
    state_history_mem_t *history;
    /* Everything that decides an outcome or what is stored (the document bound, the
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
    uint64_t client_records;    /* client records stored (committed or in the step) */
    bool clients_counted;       /* client_records is known (counted on first need) */
    /* The counts of the history keys written in step step_keys_of: trim_history()
     * does not see them in RocksDB yet, and must cut where it would after a commit. */
    uint64_t *step_keys;
    size_t step_keys_len, step_keys_cap;
    uint64_t step_keys_of;
    bool changed_marked; /* its "changed since its last snapshot record" key is written */
    bool snapshot_sent;  /* a swept snapshot record of it is on its way to Kafka */
    client_t *clients;   /* a list; the store's table finds them */
    state_model_t *lru_prev, *lru_next; /* most recently used first */
    UT_hash_handle hh;
};

/* The next outbox id of a partition, found on first use. */
typedef struct outbox_seq_s {
    int32_t partition;
    uint64_t next;
    UT_hash_handle hh;
} outbox_seq_t;

/* A point write of the step in progress: key and value live in the store's op_bytes. */
typedef struct pending_op_s {
    size_t at;        /* key at op_bytes + at, value right after it */
    uint32_t key_len; /* value_len is UINT32_MAX for a delete */
    uint32_t value_len;
    size_t order; /* keeps writes to one key in the order they were made */
} pending_op_t;

struct state_store_s {
    state_store_conf_t conf;
    /* A step's point writes, handed to RocksDB sorted by key at commit: the memtable's
     * skiplist inserts a sorted run by moving its last position along, instead of
     * searching every level from the top for each key (the processor's biggest cost,
     * seen with perf, when history, client, outbox and offset keys alternate). */
    pending_op_t *ops;
    size_t ops_len, ops_cap;
    char *op_bytes;
    size_t op_bytes_len, op_bytes_cap;
    /* The step's outbox records, written as one key at commit (see outbox_add()). */
    msgpack_sbuffer outbox_step;
    uint32_t outbox_step_count;
    int32_t outbox_step_partition;
    uint64_t outbox_step_id;
    /* History trims, applied after the point writes (see trim_history()). */
    char *trims;
    size_t trims_len, trims_cap;
    outbox_seq_t *outbox_seqs;
    codec_value_t *initial_document;
    size_t initial_bytes; /* the initial document's size as msgpack */
    rocksdb_t *db;
    rocksdb_options_t *options;
    rocksdb_writeoptions_t *write_options;
    rocksdb_readoptions_t *read_options;
    rocksdb_writebatch_t *batch;
    state_model_t *models; /* the cache */
    client_t *clients;     /* the cached models' client records */
    expired_t *expired;    /* client records expired in this step */
    state_model_t *lru_head, *lru_tail;
    size_t cache_used;
    uint64_t cache_hits, cache_misses; /* state_store_model() calls */
    uint64_t step;                     /* commits so far (state_model_t.step_keys_of) */
    char failed[256]; /* non-empty once a write failed: no more commits */
    msgpack_zone *zone;
};

/* ---- keys ---- */

typedef struct key_s {
    char buf[64];
    char *p;
    size_t len, cap;
} store_key_t;

static void key_init(store_key_t *k, uint32_t partition, char kind)
{
    k->p = k->buf;
    k->cap = sizeof(k->buf);
    k->buf[0] = (char)(partition >> 24);
    k->buf[1] = (char)(partition >> 16);
    k->buf[2] = (char)(partition >> 8);
    k->buf[3] = (char)partition;
    k->buf[4] = kind;
    k->len = 5;
}

static void key_add(store_key_t *k, const void *bytes, size_t len)
{
    if (k->len + len > k->cap) {
        size_t cap = (k->len + len) * 2;
        char *p = codec_xmalloc(cap);
        memcpy(p, k->p, k->len);
        if (k->p != k->buf)
            free(k->p);
        k->p = p;
        k->cap = cap;
    }
    memcpy(k->p + k->len, bytes, len);
    k->len += len;
}

static void key_add_u64(store_key_t *k, uint64_t v)
{
    unsigned char b[8];
    for (int i = 7; i >= 0; i--, v >>= 8)
        b[i] = (unsigned char)v;
    key_add(k, b, 8);
}

static void key_add_id(store_key_t *k, const char *id, size_t len)
{
    unsigned char b[2] = {(unsigned char)(len >> 8), (unsigned char)len};
    key_add(k, b, 2);
    key_add(k, id, len);
}

static void key_free(store_key_t *k)
{
    if (k->p != k->buf)
        free(k->p);
}

static uint64_t be_n(const char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}

static uint64_t be64(const char *p)
{
    return be_n(p, 8);
}

/* ---- open / close ---- */

static int fail_rocks(char *err, const char *what, char *errstr, size_t errstr_size)
{
    snprintf(errstr, errstr_size, "%s: %s", what, err ? err : "unknown RocksDB error");
    rocksdb_free(err);
    return -1;
}

static int check_layout(state_store_t *s, char *errstr, size_t errstr_size)
{
    store_key_t k;
    key_init(&k, META_PARTITION, KIND_VERSION);
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get(s->db, s->read_options, k.p, k.len, &len, &err);
    if (err)
        return fail_rocks(err, "reading the layout version", errstr, errstr_size);
    char want[32];
    int want_len = snprintf(want, sizeof(want), "flushout-store %d", STATE_STORE_LAYOUT);
    int rc = 0;
    if (!v) {
        rocksdb_put(s->db, s->write_options, k.p, k.len, want, (size_t)want_len, &err);
        if (err)
            rc = fail_rocks(err, "writing the layout version", errstr, errstr_size);
    } else if (len != (size_t)want_len || memcmp(v, want, len) != 0) {
        snprintf(errstr, errstr_size,
                 "%s holds layout \"%.*s\", this build reads \"%s\": use a matching "
                 "build, or rebuild the state from the topics",
                 s->conf.dir, (int)(len > 40 ? 40 : len), v, want);
        rc = -1;
    }
    free(v);
    return rc;
}

static int count_bytes(void *data, const char *buf, size_t len)
{
    (void)buf;
    *(size_t *)data += len;
    return 0;
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

    if (mkdir(conf->dir, 0755) != 0 && errno != EEXIST) {
        snprintf(errstr, errstr_size, "cannot create %s: %s", conf->dir, strerror(errno));
        goto err;
    }
    s->options = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(s->options, 1);
    /* One store per partition, each with up to two memtables: 16 MB ones (RocksDB's
     * default is 64) keep 8 partitions' memtables at 256 MB, and were as fast in the
     * end-to-end benchmark. */
    rocksdb_options_set_write_buffer_size(s->options, 16 << 20);
    s->write_options = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->write_options, conf->fsync);
    s->read_options = rocksdb_readoptions_create();
    s->db = rocksdb_open(s->options, conf->dir, &err);
    if (err) {
        fail_rocks(err, conf->dir, errstr, errstr_size);
        goto err;
    }
    if (check_layout(s, errstr, errstr_size))
        goto err;
    s->batch = rocksdb_writebatch_create();
    msgpack_sbuffer_init(&s->outbox_step);
    s->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (!s->zone) {
        snprintf(errstr, errstr_size, "out of memory");
        goto err;
    }
    return s;

err:
    state_store_close(s);
    return NULL;
}

/* The step is written (or failed): RocksDB has the deletes now. */
static void forget_expired(state_store_t *s)
{
    expired_t *e, *tmp;
    HASH_ITER(hh, s->expired, e, tmp)
    {
        HASH_DEL(s->expired, e);
        free(e);
    }
}

static bool is_expired(state_store_t *s, const char *key, size_t key_len)
{
    expired_t *e = NULL;
    if (s->expired)
        HASH_FIND(hh, s->expired, key, key_len, e);
    return e != NULL;
}

static void client_free(client_t *c)
{
    free(c->key);
    free(c->mapped_paths);
    free(c);
}

static void model_free(state_store_t *s, state_model_t *m)
{
    while (m->clients) {
        client_t *c = m->clients;
        m->clients = c->next;
        HASH_DEL(s->clients, c);
        client_free(c);
    }
    state_master_destroy(m->master);
    state_history_mem_destroy(m->history);
    free(m->step_keys);
    free(m->key);
    free(m);
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

void state_store_close(state_store_t *s)
{
    if (!s)
        return;
    if (s->failed[0] && s->db && keep_failed_db(s->db))
        s->db = NULL;
    state_model_t *m, *tmp;
    HASH_ITER(hh, s->models, m, tmp)
    {
        HASH_DEL(s->models, m);
        model_free(s, m);
    }
    if (s->batch)
        rocksdb_writebatch_destroy(s->batch);
    free(s->ops);
    free(s->op_bytes);
    msgpack_sbuffer_destroy(&s->outbox_step);
    free(s->trims);
    if (s->db)
        rocksdb_close(s->db);
    if (s->options)
        rocksdb_options_destroy(s->options);
    if (s->write_options)
        rocksdb_writeoptions_destroy(s->write_options);
    if (s->read_options)
        rocksdb_readoptions_destroy(s->read_options);
    if (s->zone)
        msgpack_zone_free(s->zone);
    outbox_seq_t *o, *otmp;
    HASH_ITER(hh, s->outbox_seqs, o, otmp)
    {
        HASH_DEL(s->outbox_seqs, o);
        free(o);
    }
    codec_value_destroy(s->initial_document);
    forget_expired(s);
    free(s);
}

/* ---- the cache ---- */

static void lru_unlink(state_store_t *s, state_model_t *m)
{
    if (m->lru_prev)
        m->lru_prev->lru_next = m->lru_next;
    else
        s->lru_head = m->lru_next;
    if (m->lru_next)
        m->lru_next->lru_prev = m->lru_prev;
    else
        s->lru_tail = m->lru_prev;
    m->lru_prev = m->lru_next = NULL;
}

static void lru_push_front(state_store_t *s, state_model_t *m)
{
    m->lru_next = s->lru_head;
    if (s->lru_head)
        s->lru_head->lru_prev = m;
    s->lru_head = m;
    if (!s->lru_tail)
        s->lru_tail = m;
}

static void charge(state_store_t *s, state_model_t *m, size_t bytes)
{
    m->mem_bytes += bytes;
    s->cache_used += bytes;
}

/* Allocator overhead per allocation, and per model the fixed parts: the model, its
 * master, its hash handle and the cache key. */
#define ALLOC_OVERHEAD 16
#define MODEL_FIXED    (sizeof(state_model_t) + 320 + 4 * ALLOC_OVERHEAD)

/* Re-charges the model's history ring, which grows in steps. */
static void recharge_history(state_store_t *s, state_model_t *m, size_t *charged)
{
    size_t now_bytes = state_history_mem_size(m->history);
    if (now_bytes > *charged)
        charge(s, m, now_bytes - *charged);
    *charged = now_bytes;
}

/* Evicts least recently used models until the cache fits; called after a commit, when
 * every model is clean (its state is in RocksDB). */
static void drop_model(state_store_t *s, state_model_t *m)
{
    lru_unlink(s, m);
    HASH_DEL(s->models, m);
    s->cache_used -= m->mem_bytes;
    model_free(s, m);
}

static void evict(state_store_t *s)
{
    while (s->cache_used > s->conf.cache_bytes && s->lru_tail)
        drop_model(s, s->lru_tail);
}

/* ---- loading ---- */

/* Reads the snapshot into *count and *doc (NULL when there is none). */
static int load_snapshot(state_store_t *s, state_model_t *m, uint64_t *count,
                         codec_value_t **doc, char *errstr, size_t errstr_size)
{
    store_key_t k;
    key_init(&k, (uint32_t)m->partition, KIND_SNAPSHOT);
    key_add(&k, m->id, m->id_len);
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get(s->db, s->read_options, k.p, k.len, &len, &err);
    key_free(&k);
    *doc = NULL;
    *count = 0;
    if (err)
        return fail_rocks(err, "reading a snapshot", errstr, errstr_size);
    if (!v)
        return 0;
    codec_value_t *snap = NULL;
    char derr[256];
    int rc = 0;
    const codec_value_t *c, *d;
    if (codec_msgpack_decode(v, len, &codec_limits_trusted, &snap, derr, sizeof(derr)) ||
        snap->type != CODEC_VALUE_MAP || !(c = codec_map_get(snap, "commandCount", 12)) ||
        c->type != CODEC_VALUE_INT || !(d = codec_map_get(snap, "document", 8)) ||
        d->type != CODEC_VALUE_MAP) {
        snprintf(errstr, errstr_size, "the snapshot of model \"%.*s\" is corrupt",
                 (int)(m->id_len > 40 ? 40 : m->id_len), m->id);
        rc = -1;
    } else {
        *count = (uint64_t)c->u.i;
        *doc = codec_map_take(snap, "document", 8);
        m->snapshot_bytes = len;
    }
    codec_value_destroy(snap);
    free(v);
    return rc;
}

/* Feeds the stored history to the model: entries before the snapshot only fill the
 * in-memory history, later ones are replayed onto the document. */
static int load_history(state_store_t *s, state_model_t *m, char *errstr,
                        size_t errstr_size)
{
    store_key_t prefix;
    key_init(&prefix, (uint32_t)m->partition, KIND_HISTORY);
    key_add_id(&prefix, m->id, m->id_len);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    int rc = 0;
    bool first = true;
    codec_packed_t one;
    codec_packed_init(&one);

    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *key = rocksdb_iter_key(it, &klen);
        if (klen != prefix.len + 8 || memcmp(key, prefix.p, prefix.len) != 0)
            break;
        uint64_t key_count = be64(key + prefix.len);
        const char *stored = rocksdb_iter_value(it, &vlen);
        /* A flush's completions, or one completion as earlier versions stored it. */
        uint32_t n = 1;
        size_t at = 0, stored_len = vlen;
        const unsigned char *b = (const unsigned char *)stored;
        if (vlen >= 1 && (b[0] & 0xf0) == 0x90)
            n = b[0] & 0x0f, at = 1;
        else if (vlen >= 3 && b[0] == 0xdc)
            n = (uint32_t)be_n(stored + 1, 2), at = 3;
        else if (vlen >= 5 && b[0] == 0xdd)
            n = (uint32_t)be_n(stored + 1, 4), at = 5;
        for (uint32_t i = 0; i < n && !rc; i++) {
            size_t item_start = at;
            if (at > 0) { /* an array: the next of its items */
                /* Found by skipping, not unpacking: msgpack-c's unpacker stops at 32
                 * levels, and documents nest deeper. */
                size_t off = at;
                if (!codec_msgpack_skip(stored, stored_len, &off)) {
                    snprintf(errstr, errstr_size,
                             "the history of model \"%.*s\" is corrupt at command %llu",
                             (int)(m->id_len > 40 ? 40 : m->id_len), m->id,
                             (unsigned long long)(key_count + i));
                    rc = -1;
                    break;
                }
                at = off;
            } else {
                at = stored_len;
            }
            const char *value = stored + item_start;
            vlen = at - item_start;
            uint64_t count = key_count + i;
            if (first) {
                m->history_start = count;
                m->history = state_history_mem_new(s->conf.history, count);
                first = false;
            }
            if (count >= m->snapshot_count) {
                /* Counted as record_flush() counted it when it was applied. */
                m->history_bytes_since += vlen;
                /* Replay: the stored completion is the command as it was applied. */
                codec_completion_t c;
                char derr[256];
                if (count != state_master_command_count(m->master) ||
                    codec_completion_decode(value, vlen, s->zone, &c, derr,
                                            sizeof(derr)) ||
                    state_master_replay(m->master, &c, derr, sizeof(derr))) {
                    snprintf(
                        errstr, errstr_size,
                        "the history of model \"%.*s\" does not replay at command %llu",
                        (int)(m->id_len > 40 ? 40 : m->id_len), m->id,
                        (unsigned long long)count);
                    rc = -1;
                    msgpack_zone_clear(s->zone);
                    break;
                }
                msgpack_zone_clear(s->zone);
            }
            codec_packed_reset(&one);
            codec_packed_add_raw(&one, value, vlen);
            if (state_history_mem_append(m->history, count, &one) != 0) {
                snprintf(errstr, errstr_size,
                         "the history of model \"%.*s\" has a gap at %llu",
                         (int)(m->id_len > 40 ? 40 : m->id_len), m->id,
                         (unsigned long long)count);
                rc = -1;
                break;
            }
        }
        if (rc)
            break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err && !rc)
        rc = fail_rocks(err, "reading history", errstr, errstr_size);
    rocksdb_iter_destroy(it);
    codec_packed_destroy(&one);
    key_free(&prefix);
    if (!rc && first) { /* no history stored */
        m->history_start = m->snapshot_count;
        m->history = state_history_mem_new(s->conf.history, m->snapshot_count);
    }
    if (!rc && state_master_command_count(m->master) < m->snapshot_count) {
        snprintf(errstr, errstr_size, "model \"%.*s\" ends before its snapshot",
                 (int)(m->id_len > 40 ? 40 : m->id_len), m->id);
        rc = -1;
    }
    return rc;
}

state_model_t *state_store_model(state_store_t *s, int32_t partition, const char *model,
                                 size_t model_len, char *errstr, size_t errstr_size)
{
    if (model_len > MAX_ID_BYTES) {
        snprintf(errstr, errstr_size, "model id of %zu bytes exceeds %d", model_len,
                 MAX_ID_BYTES);
        return NULL;
    }
    size_t key_len = 4 + model_len;
    char stack_key[256];
    char *key = key_len <= sizeof(stack_key) ? stack_key : codec_xmalloc(key_len);
    key[0] = (char)((uint32_t)partition >> 24);
    key[1] = (char)((uint32_t)partition >> 16);
    key[2] = (char)((uint32_t)partition >> 8);
    key[3] = (char)partition;
    memcpy(key + 4, model, model_len);

    state_model_t *m = NULL;
    HASH_FIND(hh, s->models, key, key_len, m);
    if (m) {
        if (key != stack_key)
            free(key);
        lru_unlink(s, m);
        lru_push_front(s, m);
        s->cache_hits++;
        return m;
    }
    s->cache_misses++;

    m = codec_xcalloc(1, sizeof(*m));
    m->key = codec_xmemdup(key, key_len);
    if (key != stack_key)
        free(key);
    m->key_len = key_len;
    m->partition = partition;
    m->id = m->key + 4;
    m->id_len = model_len;

    uint64_t count;
    codec_value_t *doc;
    if (load_snapshot(s, m, &count, &doc, errstr, errstr_size)) {
        model_free(s, m);
        return NULL;
    }
    m->snapshot_count = count;
    m->base_bytes = doc ? m->snapshot_bytes : s->initial_bytes;
    m->master = state_master_new(model, model_len, count,
                                 doc ? doc : codec_value_copy(s->initial_document),
                                 &s->conf.master);
    if (load_history(s, m, errstr, errstr_size)) {
        model_free(s, m);
        return NULL;
    }
    charge(s, m,
           MODEL_FIXED + m->key_len +
               codec_value_mem_size(state_master_document(m->master)));
    recharge_history(s, m, &m->history_charged);
    HASH_ADD_KEYPTR(hh, s->models, m->key, m->key_len, m);
    lru_push_front(s, m);
    return m;
}

size_t state_model_document_bound(const state_model_t *m)
{
    return m->base_bytes + m->history_bytes_since;
}

state_master_t *state_model_master(state_model_t *m)
{
    return m->master;
}

state_history_t state_model_history(state_model_t *m)
{
    return state_history_mem_provider(m->history);
}

/* ---- clients ---- */

/* The store-wide key of a model's client, in a malloc'ed buffer (*key_len set). */
static char *client_key(const state_model_t *m, const char *id, size_t id_len,
                        size_t *key_len)
{
    *key_len = m->key_len + 2 + id_len;
    char *key = codec_xmalloc(*key_len);
    memcpy(key, m->key, m->key_len);
    key[m->key_len] = (char)(m->id_len >> 8);
    key[m->key_len + 1] = (char)m->id_len;
    memcpy(key + m->key_len + 2, id, id_len);
    return key;
}

static client_t *client_find(state_store_t *s, const state_model_t *m, const char *id,
                             size_t id_len)
{
    size_t key_len;
    char *key = client_key(m, id, id_len, &key_len);
    client_t *c = NULL;
    HASH_FIND(hh, s->clients, key, key_len, c);
    free(key);
    return c;
}

static client_t *client_load(state_store_t *s, state_model_t *m, const char *id,
                             size_t id_len)
{
    client_t *c = client_find(s, m, id, id_len);
    if (c)
        return c;
    c = codec_xcalloc(1, sizeof(*c));
    c->key = client_key(m, id, id_len, &c->key_len);
    c->id = c->key + m->key_len + 2;
    c->id_len = id_len;
    if (is_expired(s, c->key, c->key_len))
        goto add; /* a new client again, whether or not the step is written yet */

    store_key_t k;
    key_init(&k, (uint32_t)m->partition, KIND_CLIENT);
    key_add_id(&k, m->id, m->id_len);
    key_add(&k, id, id_len);
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get(s->db, s->read_options, k.p, k.len, &len, &err);
    key_free(&k);
    codec_value_t *rec = NULL;
    char derr[128];
    c->stored = v != NULL;
    const codec_value_t *seq = NULL;
    if (!err && v &&
        codec_msgpack_decode(v, len, &codec_limits_trusted, &rec, derr, sizeof(derr)) ==
            0 &&
        rec->type == CODEC_VALUE_MAP)
        seq = codec_map_get(rec, "seq", 3);
    if (err || (v && (!seq || seq->type != CODEC_VALUE_INT))) {
        /* Taken as "no record", the client's retry would be applied twice. The store
         * refuses the step instead: its partition stops, nothing of it answered. */
        snprintf(s->failed, sizeof(s->failed),
                 "the client record \"%.*s\" of model \"%.*s\" cannot be read: %s",
                 (int)(id_len > 40 ? 40 : id_len), id,
                 (int)(m->id_len > 40 ? 40 : m->id_len), m->id,
                 err ? err : "not a client record");
    } else if (seq) {
        const codec_value_t *mp = codec_map_get(rec, "mappedPaths", 11);
        const codec_value_t *at = codec_map_get(rec, "at", 2);
        c->known = true;
        c->seq = (uint64_t)seq->u.i;
        c->at = at && at->type == CODEC_VALUE_INT ? (uint64_t)at->u.i : 0;
        if (mp) {
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            codec_msgpack_pack_value(&pk, mp);
            c->mapped_paths = sb.data; /* ownership moves: freed with free() */
            c->mapped_paths_len = sb.size;
        }
    }
    codec_value_destroy(rec);
    rocksdb_free(err);
    free(v);
add:
    HASH_ADD_KEYPTR(hh, s->clients, c->key, c->key_len, c);
    c->next = m->clients;
    m->clients = c;
    charge(s, m, sizeof(*c) + c->key_len + c->mapped_paths_len + 3 * ALLOC_OVERHEAD);
    return c;
}

state_seq_t state_model_check_seq(state_store_t *s, state_model_t *m, const char *client,
                                  size_t client_len, uint64_t seq, state_retry_t *retry)
{
    client_t *c = client_load(s, m, client, client_len);
    if (retry)
        *retry = (state_retry_t){c->mapped_paths, c->mapped_paths_len, c->at};
    if (!c->known || seq > c->seq)
        return STATE_SEQ_NEW;
    return seq == c->seq ? STATE_SEQ_DUPLICATE : STATE_SEQ_STALE;
}

/* ---- writing ---- */

static void op_bytes_add(state_store_t *s, const void *bytes, size_t len)
{
    if (!len)
        return;
    if (s->op_bytes_len + len > s->op_bytes_cap) {
        s->op_bytes_cap = (s->op_bytes_len + len) * 2;
        s->op_bytes = codec_xrealloc(s->op_bytes, s->op_bytes_cap);
    }
    memcpy(s->op_bytes + s->op_bytes_len, bytes, len);
    s->op_bytes_len += len;
}

/* value NULL: a delete. */
static void batch_write(state_store_t *s, const char *key, size_t key_len,
                        const char *value, size_t value_len)
{
    if (s->ops_len == s->ops_cap)
        s->ops = codec_xrealloc(s->ops, (s->ops_cap = s->ops_cap ? s->ops_cap * 2 : 256) *
                                            sizeof(*s->ops));
    s->ops[s->ops_len] =
        (pending_op_t){s->op_bytes_len, (uint32_t)key_len,
                       value ? (uint32_t)value_len : UINT32_MAX, s->ops_len};
    s->ops_len++;
    op_bytes_add(s, key, key_len);
    if (value)
        op_bytes_add(s, value, value_len);
}

static int by_key(const void *a, const void *b, void *op_bytes)
{
    const pending_op_t *x = a, *y = b;
    const char *sort_base = op_bytes;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(sort_base + x->at, sort_base + y->at, n);
    if (c)
        return c;
    if (x->key_len != y->key_len)
        return x->key_len < y->key_len ? -1 : 1;
    return x->order < y->order ? -1 : 1;
}

/* Moves the pending point writes into the RocksDB batch, sorted by key. */
static void batch_flush_sorted(state_store_t *s)
{
    if (!s->ops_len)
        return;
    qsort_r(s->ops, s->ops_len, sizeof(*s->ops), by_key, s->op_bytes);
    for (size_t i = 0; i < s->ops_len; i++) {
        const pending_op_t *op = &s->ops[i];
        const char *key = s->op_bytes + op->at;
        if (op->value_len == UINT32_MAX)
            rocksdb_writebatch_delete(s->batch, key, op->key_len);
        else
            rocksdb_writebatch_put(s->batch, key, op->key_len, key + op->key_len,
                                   op->value_len);
    }
    s->ops_len = 0;
    s->op_bytes_len = 0;
}

/* Writes the step's outbox records as one key: [record...]. */
static void outbox_write_step(state_store_t *s)
{
    if (!s->outbox_step_count)
        return;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, s->outbox_step_count);
    msgpack_sbuffer_write(&sb, s->outbox_step.data, s->outbox_step.size);
    store_key_t k;
    key_init(&k, (uint32_t)s->outbox_step_partition, KIND_OUTBOX);
    key_add_u64(&k, s->outbox_step_id);
    batch_write(s, k.p, k.len, sb.data, sb.size);
    key_free(&k);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_clear(&s->outbox_step);
    s->outbox_step_count = 0;
}

/* A range delete that may cover keys written before it in this step: those go first. */
static void batch_delete_range(state_store_t *s, const char *from, size_t from_len,
                               const char *to, size_t to_len)
{
    batch_flush_sorted(s);
    rocksdb_writebatch_delete_range(s->batch, from, from_len, to, to_len);
}

static void put_snapshot(state_store_t *s, state_model_t *m)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    codec_snapshot_pack(&pk, state_master_command_count(m->master),
                        state_master_document(m->master));

    store_key_t k;
    key_init(&k, (uint32_t)m->partition, KIND_SNAPSHOT);
    key_add(&k, m->id, m->id_len);
    batch_write(s, k.p, k.len, sb.data, sb.size);
    key_free(&k);
    m->snapshot_count = state_master_command_count(m->master);
    m->snapshot_bytes = m->base_bytes = sb.size;
    m->history_bytes_since = 0;
    msgpack_sbuffer_destroy(&sb);
}

/* Deletes stored history older than both the snapshot and the kept window. */
static void trim_history(state_store_t *s, state_model_t *m)
{
    uint64_t count = state_master_command_count(m->master);
    uint64_t window = count > s->conf.history ? count - s->conf.history : 0;
    uint64_t keep_from = window < m->snapshot_count ? window : m->snapshot_count;
    if (keep_from <= m->history_start)
        return;
    store_key_t from, to;
    key_init(&from, (uint32_t)m->partition, KIND_HISTORY);
    key_add_id(&from, m->id, m->id_len);
    key_init(&to, (uint32_t)m->partition, KIND_HISTORY);
    key_add_id(&to, m->id, m->id_len);
    /* A key holds a whole flush: keep the one that holds keep_from (the newest stored
     * at or before it, in RocksDB or written in this step). */
    size_t prefix = to.len;
    key_add_u64(&to, keep_from);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    rocksdb_iter_seek_for_prev(it, to.p, to.len);
    uint64_t cut = m->history_start;
    if (rocksdb_iter_valid(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen == to.len && !memcmp(k, to.p, prefix))
            cut = be64(k + prefix);
    }
    rocksdb_iter_destroy(it);
    /* The keys of this step count too: the cut is the same however the flushes were
     * grouped into steps. */
    for (size_t i = 0; m->step_keys_of == s->step && i < m->step_keys_len; i++)
        if (m->step_keys[i] <= keep_from && m->step_keys[i] > cut)
            cut = m->step_keys[i];
    if (cut <= m->history_start) {
        key_free(&from);
        key_free(&to);
        return;
    }
    keep_from = cut;
    to.len = prefix;
    key_add_u64(&from, m->history_start);
    key_add_u64(&to, keep_from);
    /* Applied after the step's point writes (no barrier): the range is older than
     * the model's count, so no later write of the step falls in it, and the earlier
     * ones in it are meant to go. Each trim is [from_len][from][to_len][to]. */
    size_t need = 2 * sizeof(size_t) + from.len + to.len;
    if (s->trims_len + need > s->trims_cap)
        s->trims = codec_xrealloc(s->trims, s->trims_cap = (s->trims_len + need) * 2);
    memcpy(s->trims + s->trims_len, &from.len, sizeof(size_t));
    memcpy(s->trims + s->trims_len + sizeof(size_t), from.p, from.len);
    memcpy(s->trims + s->trims_len + sizeof(size_t) + from.len, &to.len, sizeof(size_t));
    memcpy(s->trims + s->trims_len + 2 * sizeof(size_t) + from.len, to.p, to.len);
    s->trims_len += need;
    key_free(&from);
    key_free(&to);
    m->history_start = keep_from;
}

typedef struct aged_s {
    char *id;
    size_t id_len;
    uint64_t at;
} aged_t;

static int by_age(const void *a, const void *b)
{
    const aged_t *x = a, *y = b;
    if (x->at != y->at)
        return x->at < y->at ? -1 : 1;
    /* Equal ages (a flush that applied nothing leaves the count as it was) go by id,
     * so that every instance forgets the same clients. */
    int c = memcmp(x->id, y->id, x->id_len < y->id_len ? x->id_len : y->id_len);
    return c ? c : (x->id_len > y->id_len) - (x->id_len < y->id_len);
}

/* The model's client records as the step leaves them: RocksDB's, with the cache's
 * newer state of this step (records written, records expired). @returns how many;
 * with ages, each one's id and age too (caller frees). Reads the ages only when
 * asked: counting needs the keys alone. */
static size_t scan_clients(state_store_t *s, state_model_t *m, aged_t **ages)
{
    aged_t *all = NULL;
    size_t n = 0, cap = 0;
    store_key_t prefix;
    key_init(&prefix, (uint32_t)m->partition, KIND_CLIENT);
    key_add_id(&prefix, m->id, m->id_len);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < prefix.len || memcmp(k, prefix.p, prefix.len) != 0)
            break;
        const char *id = k + prefix.len;
        size_t id_len = klen - prefix.len, key_len;
        client_t *c = client_find(s, m, id, id_len);
        if (c)
            c->seen = true;
        if (!c || !c->known) {
            char *key = client_key(m, id, id_len, &key_len);
            bool gone = is_expired(s, key, key_len);
            free(key);
            if (gone)
                continue;
        }
        uint64_t at = 0;
        if (c && c->known) {
            at = c->at;
        } else if (ages) {
            const char *v = rocksdb_iter_value(it, &vlen);
            codec_value_t *rec = NULL;
            char derr[64];
            if (codec_msgpack_decode(v, vlen, &codec_limits_trusted, &rec, derr,
                                     sizeof(derr)) == 0 &&
                rec->type == CODEC_VALUE_MAP) {
                const codec_value_t *a = codec_map_get(rec, "at", 2);
                at = a && a->type == CODEC_VALUE_INT ? (uint64_t)a->u.i : 0;
            }
            codec_value_destroy(rec);
        }
        if (ages) {
            if (n == cap)
                all = codec_xrealloc(all, (cap = cap ? cap * 2 : 16) * sizeof(*all));
            all[n] = (aged_t){codec_xmemdup(id, id_len), id_len, at};
        }
        n++;
    }
    rocksdb_iter_destroy(it);
    key_free(&prefix);
    /* Records of this step are not in RocksDB yet: the cache has them. */
    for (client_t *c = m->clients; c; c = c->next) {
        if (c->known && !c->seen) {
            if (ages) {
                if (n == cap)
                    all = codec_xrealloc(all, (cap = cap ? cap * 2 : 16) * sizeof(*all));
                all[n] = (aged_t){codec_xmemdup(c->id, c->id_len), c->id_len, c->at};
            }
            n++;
        }
        c->seen = false;
    }
    if (ages)
        *ages = all;
    return n;
}

/* Keeps the model's client records to the newest clients_per_model (by the command
 * count of their last flush, then by id), deleting the rest. It runs when a new
 * client takes the model an eighth over the limit, so its scan is paid for by that
 * many new clients; and it depends on the stored records alone, so every instance,
 * whatever its cache did, forgets the same clients at the same flush. */
static void expire_clients(state_store_t *s, state_model_t *m)
{
    aged_t *all = NULL;
    size_t n = scan_clients(s, m, &all);
    uint64_t keep = s->conf.clients_per_model;
    if (n > keep) {
        qsort(all, n, sizeof(*all), by_age);
        for (size_t i = 0; i < n - keep; i++) {
            store_key_t k;
            key_init(&k, (uint32_t)m->partition, KIND_CLIENT);
            key_add_id(&k, m->id, m->id_len);
            key_add(&k, all[i].id, all[i].id_len);
            batch_write(s, k.p, k.len, NULL, 0);
            key_free(&k);
            size_t key_len;
            char *key = client_key(m, all[i].id, all[i].id_len, &key_len);
            if (!is_expired(s, key, key_len)) {
                expired_t *e = codec_xmalloc(sizeof(*e) + key_len);
                memset(&e->hh, 0, sizeof(e->hh));
                e->key_len = key_len;
                memcpy(e->key, key, key_len);
                HASH_ADD_KEYPTR(hh, s->expired, e->key, e->key_len, e);
            }
            free(key);
            client_t *c = client_find(s, m, all[i].id, all[i].id_len);
            if (c) {
                client_t **link = &m->clients;
                while (*link != c)
                    link = &(*link)->next;
                *link = c->next;
                HASH_DEL(s->clients, c);
                client_free(c);
            }
        }
    }
    m->client_records = n > keep ? keep : n;
    for (size_t i = 0; i < n; i++)
        free(all[i].id);
    free(all);
}

static void put_offset(state_store_t *s, int32_t partition, char kind, int64_t offset)
{
    store_key_t k;
    key_init(&k, (uint32_t)partition, kind);
    unsigned char v[8];
    for (int i = 7; i >= 0; i--)
        v[i] = (unsigned char)((uint64_t)offset >> (8 * (7 - i)));
    batch_write(s, k.p, k.len, (const char *)v, 8);
    key_free(&k);
}

static int64_t read_offset(state_store_t *s, int32_t partition, char kind)
{
    store_key_t k;
    key_init(&k, (uint32_t)partition, kind);
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get(s->db, s->read_options, k.p, k.len, &len, &err);
    int64_t offset = -1;
    if (!err && v && len == 8)
        offset = (int64_t)be64(v);
    rocksdb_free(err);
    free(v);
    key_free(&k);
    return offset;
}

/* Records a flush applied to m: its applied completions (applied_from on) go to the
 * history and the batch, the client's record gets seq and mapped_paths (msgpack), and
 * the snapshot is rewritten when due. */
static void record_flush(state_store_t *s, state_model_t *m, const char *client,
                         size_t client_len, uint64_t seq, uint64_t applied_from,
                         const codec_packed_t *applied, const char *mapped_paths,
                         size_t mapped_paths_len)
{
    /* One history key per flush, at its first command: [completion...]. */
    store_key_t k;
    if (applied->count) {
        msgpack_sbuffer hb;
        msgpack_sbuffer_init(&hb);
        msgpack_packer hp;
        msgpack_packer_init(&hp, &hb, msgpack_sbuffer_write);
        codec_packed_pack_array(&hp, applied);
        key_init(&k, (uint32_t)m->partition, KIND_HISTORY);
        key_add_id(&k, m->id, m->id_len);
        key_add_u64(&k, applied_from);
        batch_write(s, k.p, k.len, hb.data, hb.size);
        key_free(&k);
        msgpack_sbuffer_destroy(&hb);
        if (m->step_keys_of != s->step) {
            m->step_keys_len = 0;
            m->step_keys_of = s->step;
        }
        if (m->step_keys_len == m->step_keys_cap)
            m->step_keys = codec_xrealloc(
                m->step_keys,
                (m->step_keys_cap = m->step_keys_cap ? m->step_keys_cap * 2 : 4) *
                    sizeof(*m->step_keys));
        m->step_keys[m->step_keys_len++] = applied_from;
    }
    for (uint32_t i = 0; i < applied->count; i++) {
        size_t len;
        codec_packed_item(applied, i, &len);
        m->history_bytes_since += len;
        /* The document grew by about the decoded size of what was applied. */
        charge(s, m, 2 * len);
    }
    state_history_mem_append(m->history, applied_from, applied);
    recharge_history(s, m, &m->history_charged);

    /* The client's record: its seq and the mappedPaths a retry must see again. */
    client_t *c = client_load(s, m, client, client_len);
    if (!c->stored) { /* a new record */
        if (!m->clients_counted) {
            m->client_records = scan_clients(s, m, NULL);
            m->clients_counted = true;
        }
        m->client_records++;
        c->stored = true;
    }
    c->at = state_master_command_count(m->master);
    free(c->mapped_paths);
    c->mapped_paths = codec_xmemdup(mapped_paths, mapped_paths_len);
    c->mapped_paths_len = mapped_paths_len;
    c->seq = seq;
    c->known = true;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    msgpack_pack_str_with_body(&pk, "seq", 3);
    msgpack_pack_uint64(&pk, seq);
    msgpack_pack_str_with_body(&pk, "at", 2);
    msgpack_pack_uint64(&pk, c->at);
    msgpack_pack_str_with_body(&pk, "mappedPaths", 11);
    codec_msgpack_pack_raw(&pk, c->mapped_paths, c->mapped_paths_len);
    key_init(&k, (uint32_t)m->partition, KIND_CLIENT);
    key_add_id(&k, m->id, m->id_len);
    key_add(&k, client, client_len);
    batch_write(s, k.p, k.len, sb.data, sb.size);
    key_free(&k);
    msgpack_sbuffer_destroy(&sb);

    /* Marked changed (once per load, not per flush): the next sweep publishes its
     * snapshot record (state_store_changed_models()). */
    if (!m->changed_marked) {
        key_init(&k, (uint32_t)m->partition, KIND_CHANGED);
        key_add(&k, m->id, m->id_len);
        batch_write(s, k.p, k.len, "", 0);
        key_free(&k);
        m->changed_marked = true;
    }

    /* Rewriting the snapshot costs the document's size, so it waits until the history
     * since the last one has outgrown it: every flush then pays at most its own size
     * again, however large the document. After snapshot_every commands it comes
     * earlier, once that history is an eighth of the snapshot, so that loading a model
     * replays little without rewriting a large document often. */
    uint64_t since = state_master_command_count(m->master) - m->snapshot_count;
    if (since > 0 && (m->history_bytes_since >= m->snapshot_bytes ||
                      (since >= s->conf.snapshot_every &&
                       m->history_bytes_since * 8 >= m->snapshot_bytes))) {
        put_snapshot(s, m);
        trim_history(s, m);
    }
    if (m->client_records > s->conf.clients_per_model + s->conf.clients_per_model / 8)
        expire_clients(s, m);
}

static void pack_mapped_paths(msgpack_sbuffer *sb, const state_apply_t *a)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, a->mapper.mappings);
}

void state_model_flushed(state_store_t *s, state_model_t *m, const char *client,
                         size_t client_len, uint64_t seq, const state_apply_t *a)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_mapped_paths(&sb, a);
    record_flush(s, m, client, client_len, seq, a->result.applied_from,
                 &a->result.applied, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- change records ---- */

void state_change_pack(msgpack_packer *pk, const char *model, size_t model_len,
                       const char *client, size_t client_len, uint64_t seq,
                       const state_apply_t *a, int64_t offset)
{
    msgpack_pack_map(pk, 7);
    msgpack_pack_str_with_body(pk, "type", 4);
    msgpack_pack_str_with_body(pk, "applied", 7);
    msgpack_pack_str_with_body(pk, "model", 5);
    msgpack_pack_str_with_body(pk, model, model_len);
    msgpack_pack_str_with_body(pk, "client", 6);
    msgpack_pack_str_with_body(pk, client, client_len);
    msgpack_pack_str_with_body(pk, "seq", 3);
    msgpack_pack_uint64(pk, seq);
    msgpack_pack_str_with_body(pk, "applied", 7);
    msgpack_pack_map(pk, 2);
    msgpack_pack_str_with_body(pk, "from", 4);
    msgpack_pack_uint64(pk, a->result.applied_from);
    msgpack_pack_str_with_body(pk, "completions", 11);
    codec_packed_pack_array(pk, &a->result.applied);
    msgpack_pack_str_with_body(pk, "mappedPaths", 11);
    codec_msgpack_pack_value(pk, a->mapper.mappings);
    msgpack_pack_str_with_body(pk, "offset", 6);
    msgpack_pack_int64(pk, offset);
}

/* map's field name when it has type, or NULL. */
static const codec_value_t *field(const codec_value_t *map, const char *name,
                                  codec_value_type_t type)
{
    const codec_value_t *v = map && map->type == CODEC_VALUE_MAP
                                 ? codec_map_get(map, name, strlen(name))
                                 : NULL;
    return v && v->type == type ? v : NULL;
}

static bool field_uint(const codec_value_t *map, const char *name, uint64_t *v)
{
    const codec_value_t *o = field(map, name, CODEC_VALUE_INT);
    if (!o || o->u.i < 0)
        return false;
    *v = (uint64_t)o->u.i;
    return true;
}

/* Where the top-level map in buf[0..len) holds name's value: [*start, *end). */
static bool field_span(const char *buf, size_t len, const char *name, size_t *start,
                       size_t *end)
{
    *start = 0;
    if (!codec_msgpack_map_find(buf, len, start, name, strlen(name)))
        return false;
    *end = *start;
    return codec_msgpack_skip(buf, len, end);
}

/* Decodes a change or snapshot record (what, for messages) into *root (caller frees
 * it): exactly one map whose "type" is type and whose "model" is a string equal to
 * the record's key (when it has one). With the project's decoder under the trusted
 * limits, since documents nest deeper than msgpack-c's unpacker goes (32 levels).
 * @returns the model, or NULL and errstr. */
static const codec_value_t *decode_record(codec_value_t **root, const char *value,
                                          size_t value_len, const char *what,
                                          const char *type, const char *key,
                                          size_t key_len, char *errstr,
                                          size_t errstr_size)
{
    char derr[256];
    const codec_value_t *t, *model;
    if (codec_msgpack_decode(value, value_len, &codec_limits_trusted, root, derr,
                             sizeof(derr))) {
        *root = NULL;
        snprintf(errstr, errstr_size, "not a %s record: %s", what, derr);
        return NULL;
    }
    if (!(t = field(*root, "type", CODEC_VALUE_STR)) || t->u.str.len != strlen(type) ||
        memcmp(t->u.str.ptr, type, t->u.str.len) ||
        !(model = field(*root, "model", CODEC_VALUE_STR))) {
        snprintf(errstr, errstr_size, "not a %s record", what);
        return NULL;
    }
    if (key && (key_len != model->u.str.len || memcmp(key, model->u.str.ptr, key_len))) {
        snprintf(errstr, errstr_size, "a %s record whose key is not its model", what);
        return NULL;
    }
    return model;
}

state_change_t state_store_apply_change(state_store_t *s, int32_t partition,
                                        const char *key, size_t key_len,
                                        const char *value, size_t value_len,
                                        int64_t *offset, char *errstr, size_t errstr_size)
{
    codec_value_t *root = NULL;
    state_change_t rc = STATE_CHANGE_FAILED;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    codec_packed_t applied;
    codec_packed_init(&applied);

    const codec_value_t *model, *client, *completions, *paths, *off_o, *applied_o;
    uint64_t seq, from;
    uint32_t n;
    size_t at = 0; /* the completions' bytes, stored as they are (as their owner did) */
    if (!(model = decode_record(&root, value, value_len, "change", "applied", key,
                                key_len, errstr, errstr_size)))
        goto done;
    if (!(client = field(root, "client", CODEC_VALUE_STR)) ||
        !field_uint(root, "seq", &seq) ||
        !(applied_o = field(root, "applied", CODEC_VALUE_MAP)) ||
        !field_uint(applied_o, "from", &from) ||
        !(completions = field(applied_o, "completions", CODEC_VALUE_ARRAY)) ||
        !(paths = field(root, "mappedPaths", CODEC_VALUE_MAP)) ||
        !codec_msgpack_map_find(value, value_len, &at, "applied", 7) ||
        !codec_msgpack_map_find(value, value_len, &at, "completions", 11) ||
        !codec_msgpack_array_open(value, value_len, &at, &n) ||
        n != completions->u.array.len) {
        snprintf(errstr, errstr_size, "not a change record");
        goto done;
    }
    int64_t input_offset = -1;
    if ((off_o = field(root, "offset", CODEC_VALUE_INT)) && off_o->u.i >= 0)
        input_offset = off_o->u.i;

    state_model_t *m = state_store_model(s, partition, model->u.str.ptr, model->u.str.len,
                                         errstr, errstr_size);
    if (!m)
        goto done;
    uint64_t count = state_master_command_count(m->master);
    client_t *c = client_load(s, m, client->u.str.ptr, client->u.str.len);
    /* Already reflected: an earlier command count, or an empty flush (nothing applied)
     * not newer than the client's record. */
    if (from < count || (from == count && n == 0 && c->known && seq <= c->seq)) {
        *offset = input_offset;
        rc = STATE_CHANGE_SKIPPED;
        goto done;
    }
    if (from > count) {
        rc = STATE_CHANGE_GAP;
        snprintf(errstr, errstr_size,
                 "model \"%.*s\" is at command %llu but the next change record starts at "
                 "%llu: change records are missing",
                 (int)(model->u.str.len > 40 ? 40 : model->u.str.len), model->u.str.ptr,
                 (unsigned long long)count, (unsigned long long)from);
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        size_t start = at;
        codec_completion_t cmp;
        char derr[256] = "malformed";
        if (!codec_msgpack_skip(value, value_len, &at) ||
            codec_completion_decode(value + start, at - start, s->zone, &cmp, derr,
                                    sizeof(derr)) ||
            state_master_replay(m->master, &cmp, derr, sizeof(derr))) {
            msgpack_zone_clear(s->zone);
            /* The commands before this one are applied already: the model is now
             * ahead of its stored state, so it must not be used again. */
            drop_model(s, m);
            snprintf(errstr, errstr_size, "change record of model \"%.*s\" at %llu: %s",
                     (int)(model->u.str.len > 40 ? 40 : model->u.str.len),
                     model->u.str.ptr, (unsigned long long)(from + i), derr);
            goto done;
        }
        msgpack_zone_clear(s->zone);
        codec_packed_add_raw(&applied, value + start, at - start);
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, paths);
    record_flush(s, m, client->u.str.ptr, client->u.str.len, seq, from, &applied, sb.data,
                 sb.size);
    *offset = input_offset;
    rc = STATE_CHANGE_APPLIED;
done:
    codec_packed_destroy(&applied);
    msgpack_sbuffer_destroy(&sb);
    codec_value_destroy(root);
    return rc;
}

int state_store_pack_snapshot_record(state_store_t *s, int32_t partition,
                                     const char *model, size_t model_len,
                                     msgpack_packer *pk, char *errstr, size_t errstr_size)
{
    state_model_t *m =
        state_store_model(s, partition, model, model_len, errstr, errstr_size);
    if (!m)
        return -1;
    /* The client records, as committed. */
    store_key_t prefix;
    key_init(&prefix, (uint32_t)partition, KIND_CLIENT);
    key_add_id(&prefix, m->id, m->id_len);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    uint32_t clients = 0;
    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < prefix.len || memcmp(k, prefix.p, prefix.len) != 0)
            break;
        clients++;
    }
    msgpack_pack_map(pk, 5);
    msgpack_pack_str_with_body(pk, "type", 4);
    msgpack_pack_str_with_body(pk, "snapshot", 8);
    msgpack_pack_str_with_body(pk, "model", 5);
    msgpack_pack_str_with_body(pk, model, model_len);
    msgpack_pack_str_with_body(pk, "commandCount", 12);
    msgpack_pack_uint64(pk, state_master_command_count(m->master));
    msgpack_pack_str_with_body(pk, "document", 8);
    codec_msgpack_pack_value(pk, state_master_document(m->master));
    msgpack_pack_str_with_body(pk, "clients", 7);
    msgpack_pack_map(pk, clients);
    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it) && clients;
         rocksdb_iter_next(it), clients--) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        const char *v = rocksdb_iter_value(it, &vlen);
        msgpack_pack_str_with_body(pk, k + prefix.len, klen - prefix.len);
        codec_msgpack_pack_raw(pk, v, vlen);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    key_free(&prefix);
    return err ? fail_rocks(err, "reading client records", errstr, errstr_size) : 0;
}

/* Deletes every key of kind for model in partition (history or client records). */
static void delete_model_keys(state_store_t *s, int32_t partition, char kind,
                              const char *model, size_t model_len)
{
    store_key_t from, to;
    key_init(&from, (uint32_t)partition, kind);
    key_add_id(&from, model, model_len);
    key_init(&to, (uint32_t)partition, kind);
    key_add_id(&to, model, model_len);
    const unsigned char past[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    key_add(&to, past,
            sizeof(past)); /* history counts are 8 bytes; client ids sort below */
    batch_delete_range(s, from.p, from.len, to.p, to.len);
    key_free(&from);
    key_free(&to);
}

int state_store_install_snapshot(state_store_t *s, int32_t partition, const char *key,
                                 size_t key_len, const char *value, size_t value_len,
                                 char *errstr, size_t errstr_size)
{
    codec_value_t *root = NULL;
    int rc = -1;
    const codec_value_t *model, *clients;
    const codec_map_entry_t *e;
    uint64_t count;
    uint32_t pos = 0;
    size_t doc, doc_end; /* the document's bytes, stored as they are */
    if (!(model = decode_record(&root, value, value_len, "snapshot", "snapshot", key,
                                key_len, errstr, errstr_size)))
        goto done;
    if (!field_uint(root, "commandCount", &count) ||
        !field(root, "document", CODEC_VALUE_MAP) ||
        !(clients = field(root, "clients", CODEC_VALUE_MAP)) ||
        !field_span(value, value_len, "document", &doc, &doc_end)) {
        snprintf(errstr, errstr_size, "not a snapshot record");
        goto done;
    }
    while ((e = codec_map_next(clients, &pos)))
        if (e->value->type != CODEC_VALUE_MAP) {
            snprintf(errstr, errstr_size, "not a snapshot record (client records)");
            goto done;
        }
    state_model_t *m = state_store_model(s, partition, model->u.str.ptr, model->u.str.len,
                                         errstr, errstr_size);
    if (!m)
        goto done;
    rc = 0;
    if (count <= state_master_command_count(m->master))
        goto done;
    /* The model starts again from the snapshot: no history before it, the clients the
     * snapshot knows. */
    const char *id = model->u.str.ptr;
    size_t id_len = model->u.str.len;
    drop_model(s, m);
    delete_model_keys(s, partition, KIND_HISTORY, id, id_len);
    delete_model_keys(s, partition, KIND_CLIENT, id, id_len);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "commandCount", 12);
    msgpack_pack_uint64(&pk, count);
    msgpack_pack_str_with_body(&pk, "document", 8);
    codec_msgpack_pack_raw(&pk, value + doc, doc_end - doc);
    store_key_t k;
    key_init(&k, (uint32_t)partition, KIND_SNAPSHOT);
    key_add(&k, id, id_len);
    batch_write(s, k.p, k.len, sb.data, sb.size);
    key_free(&k);
    for (pos = 0; (e = codec_map_next(clients, &pos));) {
        msgpack_sbuffer_clear(&sb);
        codec_msgpack_pack_value(&pk, e->value);
        key_init(&k, (uint32_t)partition, KIND_CLIENT);
        key_add_id(&k, id, id_len);
        key_add(&k, codec_map_entry_key(e), e->key_len);
        batch_write(s, k.p, k.len, sb.data, sb.size);
        key_free(&k);
    }
    msgpack_sbuffer_destroy(&sb);
    rc = 1;
done:
    codec_value_destroy(root);
    return rc;
}

int64_t state_store_changes_offset(state_store_t *s, int32_t partition)
{
    return read_offset(s, partition, KIND_CHANGES);
}

void state_store_set_changes_offset(state_store_t *s, int32_t partition, int64_t offset)
{
    put_offset(s, partition, KIND_CHANGES, offset);
}

int state_store_changed_models(state_store_t *s, int32_t partition, const char *after,
                               size_t after_len, size_t max,
                               int (*visit)(void *opaque, const char *model,
                                            size_t model_len),
                               void *opaque, char *errstr, size_t errstr_size)
{
    store_key_t prefix, from;
    key_init(&prefix, (uint32_t)partition, KIND_CHANGED);
    key_init(&from, (uint32_t)partition, KIND_CHANGED);
    if (after)
        key_add(&from, after, after_len);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    rocksdb_iter_seek(it, from.p, from.len);
    size_t seen = 0;
    for (; rocksdb_iter_valid(it) && seen < max; rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (after && klen == from.len && !memcmp(k, from.p, from.len))
            continue; /* the one visited last */
        seen++;
        if (klen < prefix.len || memcmp(k, prefix.p, prefix.len) != 0 ||
            visit(opaque, k + prefix.len, klen - prefix.len))
            break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    key_free(&prefix);
    key_free(&from);
    if (err) {
        snprintf(errstr, errstr_size, "reading the changed models: %s", err);
        rocksdb_free(err);
        return -1;
    }
    return 0;
}

/* The cached model, or NULL when it is not in the cache (never loads). */
static state_model_t *cached_model(state_store_t *s, int32_t partition, const char *model,
                                   size_t model_len)
{
    store_key_t k;
    key_init(&k, (uint32_t)partition, KIND_CHANGED);
    key_add(&k, model, model_len);
    /* The cache is keyed by partition + id: the key without its kind byte. */
    memmove(k.p + 4, k.p + 5, model_len);
    state_model_t *m = NULL;
    HASH_FIND(hh, s->models, k.p, 4 + model_len, m);
    key_free(&k);
    return m;
}

void state_store_snapshot_sent(state_store_t *s, int32_t partition, const char *model,
                               size_t model_len)
{
    state_model_t *m = cached_model(s, partition, model, model_len);
    if (m) { /* its next flush writes the mark again, and so says it changed */
        m->changed_marked = false;
        m->snapshot_sent = true;
    }
}

void state_store_snapshot_published(state_store_t *s, int32_t partition,
                                    const char *model, size_t model_len)
{
    /* Only a model known unchanged since its record was sent: still cached (a reload
     * forgets), and not flushed since (any flush, even one whose commands all failed,
     * rewrites a client record the snapshot record lacks). */
    state_model_t *m = cached_model(s, partition, model, model_len);
    if (!m || !m->snapshot_sent || m->changed_marked)
        return;
    m->snapshot_sent = false;
    store_key_t k;
    key_init(&k, (uint32_t)partition, KIND_CHANGED);
    key_add(&k, model, model_len);
    batch_write(s, k.p, k.len, NULL, 0);
    key_free(&k);
}

int32_t state_store_partition_count(state_store_t *s, int32_t partition)
{
    int64_t count = read_offset(s, partition, KIND_PARTITIONS);
    return count > 0 && count <= INT32_MAX ? (int32_t)count : -1;
}

void state_store_set_partition_count(state_store_t *s, int32_t partition, int32_t count)
{
    put_offset(s, partition, KIND_PARTITIONS, count);
}

char *state_store_settings(state_store_t *s, int32_t partition)
{
    store_key_t k;
    key_init(&k, (uint32_t)partition, KIND_SETTINGS);
    char *err = NULL;
    size_t len = 0;
    char *v = rocksdb_get(s->db, s->read_options, k.p, k.len, &len, &err);
    key_free(&k);
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

void state_store_set_settings(state_store_t *s, int32_t partition, const char *settings)
{
    store_key_t k;
    key_init(&k, (uint32_t)partition, KIND_SETTINGS);
    batch_write(s, k.p, k.len, settings, strlen(settings));
    key_free(&k);
}

void state_store_set_cache_bytes(state_store_t *s, size_t cache_bytes)
{
    s->conf.cache_bytes = cache_bytes;
    if (!s->ops_len) /* every model is clean: evicting loses nothing */
        evict(s);
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

/* The step's batch: point writes sorted, then the history trims. */
static rocksdb_writebatch_t *batch_finish(state_store_t *s)
{
    outbox_write_step(s);
    batch_flush_sorted(s);
    for (size_t at = 0; at < s->trims_len;) {
        size_t from_len, to_len;
        memcpy(&from_len, s->trims + at, sizeof(size_t));
        const char *from = s->trims + at + sizeof(size_t);
        memcpy(&to_len, from + from_len, sizeof(size_t));
        const char *to = from + from_len + sizeof(size_t);
        rocksdb_writebatch_delete_range(s->batch, from, from_len, to, to_len);
        at = (size_t)(to + to_len - s->trims);
    }
    s->trims_len = 0;
    return s->batch;
}

int state_store_commit(state_store_t *s, int32_t partition, int64_t next_offset,
                       char *errstr, size_t errstr_size)
{
    if (s->failed[0]) {
        snprintf(errstr, errstr_size,
                 "the store refuses writes after an earlier failure: %s", s->failed);
        return -1;
    }
    if (next_offset >= 0)
        put_offset(s, partition, KIND_OFFSET, next_offset);
    char *err = NULL;
    rocksdb_writebatch_t *batch = batch_finish(s);
    if (injected_write_error(partition, next_offset))
        err = strdup("IO error: injected by FLUSHOUT_FAILPOINT");
    else
        rocksdb_write(s->db, s->write_options, batch, &err);
    rocksdb_writebatch_clear(s->batch);
    forget_expired(s);
    s->step++;
    if (err) {
        snprintf(s->failed, sizeof(s->failed), "%s", err);
        return fail_rocks(err, "writing a step", errstr, errstr_size);
    }
    evict(s);
    return 0;
}

int state_store_drop_partition(state_store_t *s, int32_t partition, char *errstr,
                               size_t errstr_size)
{
    state_model_t *m, *tmp;
    HASH_ITER(hh, s->models, m, tmp)
    {
        if (m->partition == partition)
            drop_model(s, m);
    }
    outbox_seq_t *o = NULL;
    HASH_FIND(hh, s->outbox_seqs, &partition, sizeof(partition), o);
    if (o) { /* ids start again from what is stored: nothing */
        HASH_DEL(s->outbox_seqs, o);
        free(o);
    }
    unsigned char from[4], to[5];
    for (int i = 0; i < 4; i++)
        from[i] = to[i] = (unsigned char)((uint32_t)partition >> (24 - 8 * i));
    to[4] = 0xff; /* after every kind byte */
    batch_delete_range(s, (const char *)from, 4, (const char *)to, 5);
    return state_store_commit(s, partition, -1, errstr, errstr_size);
}

/* A RocksDB integer property, 0 when the build does not know it. */
static uint64_t db_property(state_store_t *s, const char *name)
{
    uint64_t v = 0;
    return rocksdb_property_int(s->db, name, &v) == 0 ? v : 0;
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

int64_t state_store_next_offset(state_store_t *s, int32_t partition)
{
    return read_offset(s, partition, KIND_OFFSET);
}

/* ---- scanning ---- */

/* Parses a key into item; @returns false for keys that are not per-partition records. */
static bool parse_key(const char *k, size_t len, state_store_item_t *item)
{
    if (len < 5)
        return false;
    uint32_t p = ((uint32_t)(unsigned char)k[0] << 24) |
                 ((uint32_t)(unsigned char)k[1] << 16) |
                 ((uint32_t)(unsigned char)k[2] << 8) | (uint32_t)(unsigned char)k[3];
    if (p == META_PARTITION)
        return false;
    memset(item, 0, sizeof(*item));
    item->partition = (int32_t)p;
    item->kind = k[4];
    const char *rest = k + 5;
    size_t rest_len = len - 5;
    switch (item->kind) {
    case KIND_OFFSET:
    case KIND_CHANGES:
    case KIND_PARTITIONS:
    case KIND_SETTINGS:
        return rest_len == 0;
    case KIND_OUTBOX:
        if (rest_len != 8)
            return false;
        item->count = be64(rest);
        return true;
    case KIND_SNAPSHOT:
    case KIND_CHANGED:
        item->model = rest;
        item->model_len = rest_len;
        return true;
    case KIND_HISTORY:
    case KIND_CLIENT: {
        if (rest_len < 2)
            return false;
        size_t mlen = ((size_t)(unsigned char)rest[0] << 8) | (unsigned char)rest[1];
        if (rest_len < 2 + mlen)
            return false;
        item->model = rest + 2;
        item->model_len = mlen;
        if (item->kind == KIND_CLIENT) {
            item->client = rest + 2 + mlen;
            item->client_len = rest_len - 2 - mlen;
            return true;
        }
        if (rest_len != 2 + mlen + 8)
            return false;
        item->count = be64(rest + 2 + mlen);
        return true;
    }
    }
    return false;
}

int state_store_scan(state_store_t *s,
                     int (*visit)(void *opaque, const state_store_item_t *item),
                     void *opaque, char *errstr, size_t errstr_size)
{
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    for (rocksdb_iter_seek_to_first(it); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        state_store_item_t item;
        if (!parse_key(k, klen, &item))
            continue;
        item.value = rocksdb_iter_value(it, &item.value_len);
        if ((item.kind == KIND_OFFSET || item.kind == KIND_CHANGES ||
             item.kind == KIND_PARTITIONS) &&
            item.value_len == 8)
            item.count = be64(item.value);
        if (visit(opaque, &item))
            break;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    rocksdb_iter_destroy(it);
    return err ? fail_rocks(err, "scanning the store", errstr, errstr_size) : 0;
}

/* ---- the outbox ---- */

static outbox_seq_t *outbox_seq(state_store_t *s, int32_t partition)
{
    outbox_seq_t *o = NULL;
    HASH_FIND(hh, s->outbox_seqs, &partition, sizeof(partition), o);
    if (o)
        return o;
    o = codec_xcalloc(1, sizeof(*o));
    o->partition = partition;
    /* Continue after the newest stored record, if any. */
    store_key_t last;
    key_init(&last, (uint32_t)partition, KIND_OUTBOX);
    key_add_u64(&last, UINT64_MAX);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    rocksdb_iter_seek_for_prev(it, last.p, last.len);
    if (rocksdb_iter_valid(it)) {
        size_t klen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen == last.len && memcmp(k, last.p, 5) == 0)
            o->next = be64(k + 5) + 1;
    }
    rocksdb_iter_destroy(it);
    key_free(&last);
    HASH_ADD(hh, s->outbox_seqs, partition, sizeof(o->partition), o);
    return o;
}

/* A step's records share one outbox key (a msgpack array of them), written with the
 * step and deleted once all are delivered: two RocksDB writes per step instead of two
 * per record, which were most of the processor's memtable inserts. */
uint64_t state_store_outbox_add(state_store_t *s, int32_t partition,
                                const state_outbox_rec_t *rec)
{
    if (s->outbox_step_count && s->outbox_step_partition != partition)
        outbox_write_step(s);
    if (!s->outbox_step_count) {
        s->outbox_step_partition = partition;
        s->outbox_step_id = outbox_seq(s, partition)->next++;
    }
    s->outbox_step_count++;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &s->outbox_step, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "topic", 5);
    msgpack_pack_str_with_body(&pk, rec->topic, strlen(rec->topic));
    msgpack_pack_str_with_body(&pk, "partition", 9);
    msgpack_pack_int32(&pk, rec->partition);
    msgpack_pack_str_with_body(&pk, "key", 3);
    if (rec->key)
        msgpack_pack_bin_with_body(&pk, rec->key, rec->key_len);
    else
        msgpack_pack_nil(&pk);
    msgpack_pack_str_with_body(&pk, "value", 5);
    msgpack_pack_bin_with_body(&pk, rec->value, rec->value_len);
    msgpack_pack_str_with_body(&pk, "headers", 7);
    msgpack_pack_array(&pk, (uint32_t)rec->header_count * 2);
    for (size_t i = 0; i < rec->header_count; i++) {
        const state_header_t *h = &rec->headers[i];
        msgpack_pack_str_with_body(&pk, h->name, strlen(h->name));
        msgpack_pack_bin_with_body(&pk, h->value, h->value_len);
    }
    return s->outbox_step_id;
}

void state_store_outbox_done(state_store_t *s, int32_t partition, uint64_t first,
                             uint64_t last)
{
    store_key_t k;
    key_init(&k, (uint32_t)partition, KIND_OUTBOX);
    key_add_u64(&k, first);
    if (first == last) {
        batch_write(s, k.p, k.len, NULL, 0);
    } else {
        store_key_t to;
        key_init(&to, (uint32_t)partition, KIND_OUTBOX);
        key_add_u64(&to, last + 1);
        batch_delete_range(s, k.p, k.len, to.p, to.len);
        key_free(&to);
    }
    key_free(&k);
}

/* Reads an outbox record (as state_store_outbox_add() wrote it) into rec, pointing
 * into root; the topic and header names get NUL-terminated copies in names. */
#define OUTBOX_MAX_HEADERS 32
#define OUTBOX_NAME_BYTES  256
typedef char outbox_name_t[OUTBOX_NAME_BYTES];

static bool copy_name(const codec_value_t *o, char *buf)
{
    if (!o || o->type != CODEC_VALUE_STR || o->u.str.len >= OUTBOX_NAME_BYTES)
        return false;
    memcpy(buf, o->u.str.ptr, o->u.str.len);
    buf[o->u.str.len] = '\0';
    return true;
}

static bool outbox_parse(const codec_value_t *root, state_outbox_rec_t *rec,
                         outbox_name_t *names, state_header_t *headers)
{
    const codec_value_t *partition = field(root, "partition", CODEC_VALUE_INT);
    const codec_value_t *key =
        root->type == CODEC_VALUE_MAP ? codec_map_get(root, "key", 3) : NULL;
    const codec_value_t *value = field(root, "value", CODEC_VALUE_BIN);
    const codec_value_t *hdrs = field(root, "headers", CODEC_VALUE_ARRAY);
    if (!copy_name(field(root, "topic", CODEC_VALUE_STR), names[0]) || !partition ||
        partition->u.i < INT32_MIN || partition->u.i > INT32_MAX || !key ||
        (key->type != CODEC_VALUE_BIN && key->type != CODEC_VALUE_NIL) || !value ||
        !hdrs || hdrs->u.array.len % 2 || hdrs->u.array.len / 2 > OUTBOX_MAX_HEADERS)
        return false;
    *rec = (state_outbox_rec_t){
        .topic = names[0],
        .partition = (int32_t)partition->u.i,
        .key = key->type == CODEC_VALUE_BIN ? key->u.str.ptr : NULL,
        .key_len = key->type == CODEC_VALUE_BIN ? key->u.str.len : 0,
        .value = value->u.str.ptr,
        .value_len = value->u.str.len,
        .headers = headers,
        .header_count = hdrs->u.array.len / 2,
    };
    for (size_t i = 0; i < rec->header_count; i++) {
        const codec_value_t *v = hdrs->u.array.items[2 * i + 1];
        if (!copy_name(hdrs->u.array.items[2 * i], names[i + 1]) ||
            v->type != CODEC_VALUE_BIN)
            return false;
        headers[i] = (state_header_t){names[i + 1], v->u.str.ptr, v->u.str.len};
    }
    return true;
}

int state_store_outbox_scan(state_store_t *s, int32_t partition,
                            int (*visit)(void *opaque, uint64_t id,
                                         const state_outbox_rec_t *rec),
                            void *opaque, char *errstr, size_t errstr_size)
{
    store_key_t prefix;
    key_init(&prefix, (uint32_t)partition, KIND_OUTBOX);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->read_options);
    int rc = 0;
    for (rocksdb_iter_seek(it, prefix.p, prefix.len); rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen, vlen;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen != prefix.len + 8 || memcmp(k, prefix.p, prefix.len) != 0)
            break;
        const char *v = rocksdb_iter_value(it, &vlen);
        outbox_name_t names[OUTBOX_MAX_HEADERS + 1];
        state_header_t headers[OUTBOX_MAX_HEADERS];
        state_outbox_rec_t rec;
        /* A step's array of records, or one record as earlier versions wrote it. */
        codec_value_t *root = NULL;
        char derr[256];
        bool ok = codec_msgpack_decode(v, vlen, &codec_limits_trusted, &root, derr,
                                       sizeof(derr)) == CODEC_OK;
        bool many = ok && root->type == CODEC_VALUE_ARRAY;
        uint32_t n = many ? root->u.array.len : 1;
        for (uint32_t i = 0; ok && i < n && !rc; i++) {
            if (!outbox_parse(many ? root->u.array.items[i] : root, &rec, names,
                              headers)) {
                snprintf(errstr, errstr_size,
                         "outbox record %llu of partition %d is corrupt",
                         (unsigned long long)be64(k + prefix.len), partition);
                rc = -1;
            } else if (visit(opaque, be64(k + prefix.len), &rec)) {
                rc = 1;
            }
        }
        codec_value_destroy(root);
        if (!ok) {
            snprintf(errstr, errstr_size, "outbox record %llu of partition %d is corrupt",
                     (unsigned long long)be64(k + prefix.len), partition);
            rc = -1;
        }
        if (rc)
            break;
    }
    if (rc > 0)
        rc = 0;
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err && !rc)
        rc = fail_rocks(err, "scanning the outbox", errstr, errstr_size);
    rocksdb_iter_destroy(it);
    key_free(&prefix);
    return rc;
}
