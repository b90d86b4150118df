/* tests/processor/test_property.c - everything accepted reads back: requests generated
 * at random (seeded) and the fuzz and bad-input corpora go through the real processing
 * path (processor_handler_t over a state store, change records on, snapshot records
 * due every few commands), and whatever it accepted must come out byte-identical
 * after a reload, a restart, a catch-up of a fresh store from the change records it
 * produced, and a restore of a fresh store from its snapshot records followed by the
 * change records after them.
 *
 * PROPERTY_CASES (default 3000) sets the generated requests per run, PROPERTY_SEED
 * (default 1) the seed, PROPERTY_VERBOSE=1 prints each record's outcome; the test is
 * labelled "property" (ctest -L property). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "processor/handler.h"

/* The deepest nesting generated, and of corpus inputs used: the default --max-depth,
 * so that everything the defaults accept is checked (msgpack-c's unpacker, which
 * stopped at 32 levels, hid a read-back bug behind lowered limits). */
#define PROPERTY_MAX_DEPTH CODEC_DEFAULT_MAX_DEPTH

/* Snapshot records are due every this many commands of a model (the processor's
 * --snapshot-topic-every, lowered so that a short run produces many). */
#define SNAPSHOT_RECORD_EVERY 5

/* The store's settings: the processor's defaults (processor/options.c) or lowered
 * ones that make rewrites, trimming and client expiry happen all the time. */
typedef struct limits_s {
    const char *name;
    uint64_t history, snapshot_every, clients_per_model, max_document_bytes;
    state_ids_t ids;
    const char *initial_document; /* JSON; NULL = {} */
} limits_t;

static const limits_t default_limits = {"default", 1000,           1000, 1000,
                                        67108864,  STATE_IDS_HASH, NULL};
static const limits_t lowered_limits = {
    "lowered", 5, 3, 2, 16384, STATE_IDS_SEQUENTIAL,
    /* the fuzz targets' document, so that the corpus' paths find nodes */
    "{\"items\":{\"1\":{\"name\":\"a\",\"done\":false},\"2\":{\"items\":{}}},"
    "\"meta\":{\"title\":\"t\"}}"};

/* One input record. */
typedef struct record_s {
    char *key; /* NULL: the record has no key */
    size_t key_len;
    char *value;
    size_t value_len;
} record_t;

typedef struct records_s {
    record_t *v;
    size_t n, cap;
} records_t;

static void records_add(records_t *r, const char *key, size_t key_len, const char *value,
                        size_t value_len)
{
    if (r->n == r->cap)
        r->v = realloc(r->v, (r->cap = r->cap ? r->cap * 2 : 256) * sizeof(*r->v));
    record_t *rec = &r->v[r->n++];
    rec->key = NULL;
    if (key) { /* NUL-terminated too, for the error codes kept as keys */
        rec->key = memcpy(malloc(key_len + 1), key, key_len);
        rec->key[key_len] = '\0';
    }
    rec->key_len = key_len;
    rec->value = memcpy(malloc(value_len + 1), value, value_len);
    rec->value_len = value_len;
}

static void records_clear(records_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].key);
        free(r->v[i].value);
    }
    free(r->v);
    memset(r, 0, sizeof(*r));
}

/* ---- the generator ---- */

static uint64_t rng;

static uint64_t next(void)
{
    rng ^= rng << 13; /* xorshift64 */
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint32_t below(uint32_t n)
{
    return (uint32_t)(next() % n);
}

static bool chance(uint32_t percent)
{
    return below(100) < percent;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static const char *const words[] = {
    "a", "name", "done", "items",       "1", "2", "x", "é",  "中文", "😀",     "k\u0301",
    "",  "sub",  "n",    "👩‍💻", "ß", "Ω", "0", "-1", "1e3",  "title",
};
#define WORDS (sizeof(words) / sizeof(words[0]))

static void gen_string(msgpack_packer *pk)
{
    uint32_t kind = below(10);
    if (kind < 6) {
        pack_str(pk, words[below(WORDS)]);
        return;
    }
    /* A longer string of mixed scripts, sometimes a few KB. */
    char buf[4096];
    size_t len = 0, want = kind == 9 ? below(4000) : below(60);
    while (len < want) {
        const char *w = words[below(WORDS)];
        size_t wl = strlen(w);
        if (len + wl >= sizeof(buf))
            break;
        memcpy(buf + len, w, wl);
        len += wl;
    }
    msgpack_pack_str_with_body(pk, buf, len);
}

/* Keys unique within their map (a duplicate would be refused, not stored). */
static void gen_value(msgpack_packer *pk, int depth);

static void gen_map(msgpack_packer *pk, int depth, uint32_t n)
{
    msgpack_pack_map(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        char key[48];
        snprintf(key, sizeof(key), "%s%u", words[below(WORDS)], i);
        pack_str(pk, key);
        gen_value(pk, depth + 1);
    }
}

/* A value at nesting depth (containers above it); depth never passes
 * PROPERTY_MAX_DEPTH. */
static void gen_value(msgpack_packer *pk, int depth)
{
    bool deep = depth < PROPERTY_MAX_DEPTH;
    switch (below(deep ? 16 : 12)) {
    case 0:
        msgpack_pack_nil(pk);
        break;
    case 1:
        chance(50) ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        break;
    case 2:
        msgpack_pack_int64(pk, (int64_t)below(200) - 100);
        break;
    case 3: {
        static const int64_t big[] = {INT64_MAX,    INT64_MIN,    (1LL << 53) + 1,
                                      -(1LL << 53), 4294967296LL, -32769,
                                      65535,        127};
        msgpack_pack_int64(pk, big[below(sizeof(big) / sizeof(big[0]))]);
        break;
    }
    case 4: {
        static const double d[] = {
            0.1, -0.0, 1e308, -1e-308, 5e-324, 3.141592653589793, 9007199254740993.0};
        msgpack_pack_double(pk, d[below(sizeof(d) / sizeof(d[0]))]);
        break;
    }
    case 5:
        msgpack_pack_float(pk, 1.5f); /* widened to a double */
        break;
    case 6: {
        char bin[8];
        for (size_t i = 0; i < sizeof(bin); i++)
            bin[i] = (char)below(256);
        msgpack_pack_bin_with_body(pk, bin, below(sizeof(bin)));
        break;
    }
    case 7:
    case 8:
    case 9:
    case 10:
    case 11:
        gen_string(pk);
        break;
    case 12:
    case 13: {
        uint32_t n = below(4);
        msgpack_pack_array(pk, n);
        for (uint32_t i = 0; i < n; i++)
            gen_value(pk, depth + 1);
        break;
    }
    case 14:
        gen_map(pk, depth, below(4));
        break;
    default: /* a chain as deep as allowed */
        if (chance(30)) {
            int levels = PROPERTY_MAX_DEPTH - depth;
            for (int i = 0; i < levels; i++) {
                msgpack_pack_map(pk, 1);
                pack_str(pk, "d");
            }
            msgpack_pack_int(pk, levels);
        } else {
            gen_map(pk, depth, below(3));
        }
    }
}

#define MODELS  4
#define CLIENTS 6

static const char *const model_ids[MODELS] = {"todos", "モデル", "m", "a/b:c"};

/* What the generator remembers to make requests that hit something. */
typedef struct gen_state_s {
    uint64_t count[MODELS];     /* about the model's command count */
    uint64_t seq[CLIENTS + 64]; /* each client's last seq (one counter for all models) */
    char ids[MODELS][16][16];   /* IDs proposed to each model */
    uint32_t id_count[MODELS];
    size_t last_flush[CLIENTS + 64]; /* each client's last flush, +1 (0: none) */
    uint32_t clients;                /* clients so far: new ones join now and then */
} gen_state_t;

static const char *some_id(gen_state_t *g, int m)
{
    if (!g->id_count[m] || chance(15))
        return words[below(WORDS)];
    return g->ids[m][below(g->id_count[m])];
}

/* A path of 0-3 elements through IDs the model was given. */
static void gen_path(msgpack_packer *pk, gen_state_t *g, int m, uint32_t len)
{
    msgpack_pack_array(pk, len);
    for (uint32_t i = 0; i < len; i++)
        pack_str(pk, i % 2 ? (chance(70) ? "sub" : words[below(WORDS)]) : some_id(g, m));
}

/* Requests are built with a header of this many fields at 4 levels of nesting
 * (record map, completions, completion, command): props start at depth 5. */
#define PROPS_DEPTH 5

static void gen_completion(msgpack_packer *pk, gen_state_t *g, int m)
{
    uint32_t what = below(10);
    bool has_id = what < 4 && chance(85);
    msgpack_pack_map(pk, has_id ? 2 : 1);
    pack_str(pk, "command");
    if (what < 4) { /* create, proposing an ID that may collide */
        uint32_t path_len = below(3);
        bool parent_default = path_len > 0 && chance(60);
        msgpack_pack_map(pk, 2 + (path_len > 0) + parent_default);
        pack_str(pk, "action");
        pack_str(pk, "create");
        if (path_len) {
            pack_str(pk, "path");
            gen_path(pk, g, m, path_len);
        }
        if (parent_default) {
            pack_str(pk, "parentDefault");
            gen_map(pk, PROPS_DEPTH, below(2));
        }
        pack_str(pk, "props");
        gen_map(pk, PROPS_DEPTH, below(4));
    } else if (what < 8) {
        msgpack_pack_map(pk, 3);
        pack_str(pk, "action");
        pack_str(pk, "update");
        pack_str(pk, "path");
        gen_path(pk, g, m, below(3));
        pack_str(pk, "props");
        gen_map(pk, PROPS_DEPTH, below(4));
    } else {
        msgpack_pack_map(pk, 2);
        pack_str(pk, "action");
        pack_str(pk, chance(80) ? "detete" : "delete");
        pack_str(pk, "path");
        gen_path(pk, g, m, 1 + below(2));
    }
    if (has_id) {
        char id[16];
        snprintf(id, sizeof(id), "%u", below(40));
        pack_str(pk, "createdId");
        pack_str(pk, id);
        if (g->id_count[m] < 16)
            snprintf(g->ids[m][g->id_count[m]++], 16, "%s", id);
        else
            snprintf(g->ids[m][below(16)], 16, "%s", id);
    }
}

/* One request: mostly flushes, some snapshot and history requests, retries of a
 * client's last flush (same seq) and stale seqs. */
static void gen_request(records_t *out, gen_state_t *g)
{
    if (g->clients < CLIENTS || (g->clients < CLIENTS + 64 && chance(3)))
        g->clients++;
    uint32_t c = below(g->clients);
    if (g->last_flush[c] && chance(6)) { /* a retry after a lost reply */
        const record_t *r = &out->v[g->last_flush[c] - 1];
        records_add(out, r->key, r->key_len, r->value, r->value_len);
        return;
    }
    int m = (int)below(MODELS);
    char client[16];
    snprintf(client, sizeof(client), "c%u", c);
    uint64_t seq = ++g->seq[c];
    if (g->seq[c] > 2 && chance(3))
        seq = g->seq[c] - 2; /* stale */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    uint32_t type = below(20);
    bool with_model = chance(30);
    if (type == 0) {
        msgpack_pack_map(&pk, 3 + with_model);
        pack_str(&pk, "type");
        pack_str(&pk, "snapshot");
    } else if (type == 1) {
        bool to = chance(50);
        msgpack_pack_map(&pk, 4 + with_model + to);
        pack_str(&pk, "type");
        pack_str(&pk, "history");
        pack_str(&pk, "from");
        uint64_t from = g->count[m] ? next() % (g->count[m] + 2) : 0;
        msgpack_pack_uint64(&pk, from);
        if (to) {
            pack_str(&pk, "to");
            msgpack_pack_uint64(&pk, from + below(4));
        }
    } else {
        bool context = chance(10);
        msgpack_pack_map(&pk, 5 + with_model + context);
        pack_str(&pk, "type");
        pack_str(&pk, "flush");
        pack_str(&pk, "from");
        /* Mostly up to date, sometimes behind (a sync), now and then ahead. */
        uint64_t from =
            chance(70) || !g->count[m] ? g->count[m] : next() % (g->count[m] + 3);
        msgpack_pack_uint64(&pk, from);
        if (context) {
            pack_str(&pk, "context");
            gen_map(&pk, 2, 2);
        }
        uint32_t n = chance(5) ? 0 : 1 + below(chance(10) ? 30 : 4);
        pack_str(&pk, "completions");
        msgpack_pack_array(&pk, n);
        for (uint32_t i = 0; i < n; i++)
            gen_completion(&pk, g, m);
        g->count[m] += n;
    }
    pack_str(&pk, "client");
    pack_str(&pk, client);
    pack_str(&pk, "seq");
    msgpack_pack_uint64(&pk, seq);
    if (with_model) {
        pack_str(&pk, "model");
        pack_str(&pk, chance(97) ? model_ids[m] : "another");
    }
    records_add(out, model_ids[m], strlen(model_ids[m]), sb.data, sb.size);
    if (type >= 2)
        g->last_flush[c] = out->n;
    msgpack_sbuffer_destroy(&sb);
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    return v && *v ? strtoull(v, NULL, 10) : dflt;
}

static void generate(records_t *out, uint64_t seed, size_t n)
{
    rng = seed * 0x9e3779b97f4a7c15ull + 1;
    gen_state_t g;
    memset(&g, 0, sizeof(g));
    for (size_t i = 0; i < n; i++)
        gen_request(out, &g);
}

/* ---- the corpora ---- */

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    cr_assert_not_null(fp, "%s", path);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)size + 1);
    cr_assert_eq(fread(buf, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    *len = (size_t)size;
    return buf;
}

/* Every file of dir, in name order, as the value of a record with key (NULL: none). */
static size_t add_dir(records_t *out, const char *dir, const char *suffix)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, by_name);
    cr_assert_geq(n, 0, "%s", dir);
    size_t added = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        size_t nl = strlen(name), sl = strlen(suffix);
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        struct stat st;
        if (name[0] != '.' && nl >= sl && !strcmp(name + nl - sl, suffix) &&
            stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            size_t len;
            char *value = read_file(path, &len);
            records_add(out, "m", 1, value, len); /* the fuzz targets' key */
            added++;
            free(value);
        }
        free(names[i]);
    }
    free(names);
    return added;
}

/* tests/fuzz/corpus* and tests/badinput. */
static void add_corpora(records_t *out)
{
    const char *fuzz = SOURCE_DIR "/tests/fuzz";
    struct dirent **names;
    int n = scandir(fuzz, &names, NULL, by_name);
    cr_assert_geq(n, 0);
    size_t added = 0;
    for (int i = 0; i < n; i++) {
        if (!strncmp(names[i]->d_name, "corpus", 6)) {
            char dir[1024];
            snprintf(dir, sizeof(dir), "%s/%s", fuzz, names[i]->d_name);
            struct stat st;
            if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
                added += add_dir(out, dir, "");
        }
        free(names[i]);
    }
    free(names);
    cr_assert_gt(added, 1000, "the fuzz corpus is missing: %zu inputs", added);
    cr_assert_gt(add_dir(out, SOURCE_DIR "/tests/badinput", ".msgpack"), 30);
}

/* ---- running records through stores ---- */

typedef struct produced_s {
    records_t changes;   /* the change records, in order */
    records_t snapshots; /* the snapshot records, in order */
    size_t *snapshot_at; /* for each: how many change records came before it */
    records_t replies;   /* one per input record (key: the error code) */
} produced_t;

static void produced_clear(produced_t *p)
{
    records_clear(&p->changes);
    records_clear(&p->snapshots);
    records_clear(&p->replies);
    free(p->snapshot_at);
    memset(p, 0, sizeof(*p));
}

typedef struct node_s {
    char dir[96];
    state_store_conf_t conf;
    codec_value_t *initial;
    state_store_t *store;
    processor_handler_t *h;
    const limits_t *limits;
    produced_t out;
} node_t;

static char base_dir[] = "/tmp/flushout-test-property-XXXXXX";

static void node_open(node_t *n)
{
    char errstr[256];
    n->conf = (state_store_conf_t){
        .dir = n->dir,
        .history = n->limits->history,
        .snapshot_every = n->limits->snapshot_every,
        .cache_bytes = n->conf.cache_bytes,
        .clients_per_model = n->limits->clients_per_model,
        .master = {.ids = n->limits->ids},
        .initial_document = n->initial,
    };
    n->store = state_store_open(&n->conf, errstr, sizeof(errstr));
    cr_assert_not_null(n->store, "%s", errstr);
    processor_handler_conf_t hc = {
        .store = n->store,
        .master = n->conf.master,
        .history = n->limits->history,
        .initial_document = n->initial,
        .limits = codec_limits_default,
        .max_document_bytes = n->limits->max_document_bytes,
        .changes = true,
        .snapshot_every = SNAPSHOT_RECORD_EVERY,
    };
    n->h = processor_handler_new(&hc);
}

static void node_close(node_t *n)
{
    processor_handler_destroy(n->h);
    state_store_close(n->store);
    n->h = NULL;
    n->store = NULL;
}

/* A fresh store in base_dir/name; cache_bytes 1 evicts every model after each step. */
static void node_new(node_t *n, const limits_t *l, const char *name, size_t cache_bytes)
{
    memset(n, 0, sizeof(*n));
    snprintf(n->dir, sizeof(n->dir), "%s/%s", base_dir, name);
    n->limits = l;
    if (l->initial_document) {
        char errstr[256];
        cr_assert_eq(codec_json_decode(l->initial_document, strlen(l->initial_document),
                                       NULL, &n->initial, errstr, sizeof(errstr)),
                     CODEC_OK, "%s", errstr);
    }
    n->conf.cache_bytes = cache_bytes;
    node_open(n);
}

static void node_destroy(node_t *n)
{
    node_close(n);
    codec_value_destroy(n->initial);
    produced_clear(&n->out);
}

static void commit(node_t *n, int64_t next_offset)
{
    char errstr[256];
    cr_assert_eq(processor_handler_commit(n->h, next_offset, errstr, sizeof(errstr)), 0,
                 "%s: %s", n->dir, errstr);
}

static int count_bytes(void *data, const char *buf, size_t len)
{
    (void)buf;
    *(size_t *)data += len;
    return 0;
}

/* The model's document bound is an upper bound on its exact size: otherwise the
 * --max-document-bytes check would depend on how the bound was reached. */
static void check_bound(node_t *n, const char *model, size_t model_len)
{
    char errstr[256];
    state_model_t *m =
        state_store_model(n->store, model, model_len, errstr, sizeof(errstr));
    cr_assert_not_null(m, "%s: %s", n->dir, errstr);
    size_t exact = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &exact, count_bytes);
    codec_msgpack_pack_value(&pk, state_master_document(state_model_master(m)));
    cr_assert_geq(state_model_document_bound(m), exact,
                  "%s: model \"%.*s\": bound %zu below its size %zu", n->dir,
                  (int)model_len, model, state_model_document_bound(m), exact);
}

/* Handles records [from, to) of in at offsets from..to-1, one committed step each,
 * keeping what they produced; reopen_every > 0 closes and reopens the store (a
 * restart) every that many records. */
static void node_handle(node_t *n, const records_t *in, size_t from, size_t to,
                        size_t reopen_every)
{
    processor_output_t out;
    processor_output_init(&out);
    for (size_t i = from; i < to; i++) {
        const record_t *r = &in->v[i];
        if (reopen_every && i % reopen_every == reopen_every - 1) {
            node_close(n);
            node_open(n);
        }
        processor_output_reset(&out);
        processor_handler_handle(n->h, (int64_t)i, -1, r->key, r->key_len, r->value,
                                 r->value_len, &out);
        const char *code = codec_err_name(out.error);
        records_add(&n->out.replies, code, strlen(code), out.reply.data, out.reply.size);
        if (out.change.size)
            records_add(&n->out.changes, r->key, r->key_len, out.change.data,
                        out.change.size);
        commit(n, (int64_t)i + 1);
        if (out.error == CODEC_OK && r->key && out.commands_applied)
            check_bound(n, r->key, r->key_len);
        if (out.snapshot_due) { /* as the processor does: right after the commit */
            msgpack_sbuffer sb;
            msgpack_sbuffer_init(&sb);
            msgpack_packer pk;
            msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
            char errstr[256];
            cr_assert_eq(state_store_pack_snapshot_record(n->store, r->key, r->key_len,
                                                          &pk, errstr, sizeof(errstr)),
                         0, "%s", errstr);
            records_add(&n->out.snapshots, r->key, r->key_len, sb.data, sb.size);
            n->out.snapshot_at = realloc(
                n->out.snapshot_at, n->out.snapshots.n * sizeof(*n->out.snapshot_at));
            n->out.snapshot_at[n->out.snapshots.n - 1] = n->out.changes.n;
            msgpack_sbuffer_destroy(&sb);
        }
    }
    processor_output_destroy(&out);
}

/* Applies change records [from, to) of changes to n as a catch-up does, in steps of
 * 1-5 records (how records are grouped into steps must not matter). */
static void node_catch_up(node_t *n, const records_t *changes, size_t from, size_t to)
{
    char errstr[256];
    for (size_t i = from; i < to; i++) {
        const record_t *c = &changes->v[i];
        int64_t offset;
        state_change_t rc =
            state_store_apply_change(n->store, c->key, c->key_len, c->value, c->value_len,
                                     &offset, errstr, sizeof(errstr));
        cr_assert(rc == STATE_CHANGE_APPLIED || rc == STATE_CHANGE_SKIPPED,
                  "%s: change record %zu: %d %s", n->dir, i, (int)rc,
                  rc == STATE_CHANGE_GAP || rc == STATE_CHANGE_FAILED ? errstr : "");
        if (i + 1 == to || chance(40))
            commit(n, -1);
    }
}

/* ---- comparing ---- */

typedef struct dump_s {
    FILE *fp;
    const char *kinds; /* the kinds of record to dump */
} dump_t;

static int dump_item(void *opaque, const state_store_item_t *item)
{
    dump_t *d = opaque;
    if (!strchr(d->kinds, item->kind))
        return 0;
    fprintf(d->fp, "%c %.*s %llu %.*s =", item->kind, (int)item->model_len,
            item->model ? item->model : "", (unsigned long long)item->count,
            (int)item->client_len, item->client ? item->client : "");
    for (size_t i = 0; i < item->value_len; i++)
        fprintf(d->fp, "%02x", (unsigned char)item->value[i]);
    fputc('\n', d->fp);
    return 0;
}

/* The store's records of the given kinds, one line each (caller frees). */
static char *dump_store(node_t *n, const char *kinds)
{
    char *text = NULL, errstr[256];
    size_t size;
    dump_t d = {open_memstream(&text, &size), kinds};
    cr_assert_eq(state_store_scan(n->store, dump_item, &d, errstr, sizeof(errstr)), 0,
                 "%s", errstr);
    fclose(d.fp);
    return text;
}

static const char *first_difference(const char *a, const char *b)
{
    const char *line = a;
    for (; *a && *a == *b; a++, b++)
        if (*a == '\n')
            line = a + 1;
    return line;
}

static void expect_same_store(node_t *got, node_t *want, const char *kinds,
                              const char *what)
{
    char *g = dump_store(got, kinds), *w = dump_store(want, kinds);
    cr_assert(!strcmp(g, w), "%s (%s limits): the stored state differs, first at\n%.400s",
              what, want->limits->name, first_difference(g, w));
    free(g);
    free(w);
}

/* Every model of in, as its snapshot record (document, command count and client
 * records, as committed), concatenated in the order of in. */
static void pack_models(node_t *n, const records_t *in, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    char errstr[256];
    for (size_t i = 0; i < in->n; i++) {
        const record_t *r = &in->v[i];
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = in->v[j].key && r->key && in->v[j].key_len == r->key_len &&
                   !memcmp(in->v[j].key, r->key, r->key_len);
        if (!r->key || seen || r->key_len > 65535)
            continue;
        cr_assert_eq(state_store_pack_snapshot_record(n->store, r->key, r->key_len, &pk,
                                                      errstr, sizeof(errstr)),
                     0, "%s: %s", n->dir, errstr);
        check_bound(n, r->key, r->key_len);
    }
}

static void expect_same_models(node_t *got, node_t *want, const records_t *in,
                               const char *what)
{
    msgpack_sbuffer g, w;
    msgpack_sbuffer_init(&g);
    msgpack_sbuffer_init(&w);
    pack_models(got, in, &g);
    pack_models(want, in, &w);
    cr_assert(g.size == w.size && !memcmp(g.data, w.data, g.size),
              "%s (%s limits): the models differ (%zu bytes of snapshot records, %zu "
              "expected)",
              what, want->limits->name, g.size, w.size);
    msgpack_sbuffer_destroy(&g);
    msgpack_sbuffer_destroy(&w);
}

static void expect_same_records(const records_t *got, const records_t *want,
                                size_t want_from, const char *what, const char *name)
{
    cr_assert_eq(got->n, want->n - want_from, "%s (%s limits): %zu records, %zu expected",
                 what, name, got->n, want->n - want_from);
    for (size_t i = 0; i < got->n; i++) {
        const record_t *g = &got->v[i], *w = &want->v[want_from + i];
        cr_assert(g->key_len == w->key_len && !memcmp(g->key, w->key, g->key_len) &&
                      g->value_len == w->value_len &&
                      !memcmp(g->value, w->value, g->value_len),
                  "%s (%s limits): record %zu differs (%.*s)", what, name, want_from + i,
                  (int)w->key_len, w->key);
    }
}

/* The whole property for one list of input records under limits l; generated input
 * must also have produced snapshot records to restore from (the corpora apply too
 * few commands for that). */
static void check_reads_back(const records_t *in, const limits_t *l, bool generated)
{
    size_t split = in->n * 2 / 3; /* the new stores take over from here */

    /* The reference: one process, one cache that holds everything. */
    node_t ref;
    node_new(&ref, l, "reference", 256u << 20);
    node_handle(&ref, in, 0, split, 0);
    size_t changes_at_split = ref.out.changes.n;
    size_t snapshots_at_split = ref.out.snapshots.n;
    size_t *snapshot_at = malloc((snapshots_at_split + 1) * sizeof(*snapshot_at));
    if (snapshots_at_split)
        memcpy(snapshot_at, ref.out.snapshot_at,
               snapshots_at_split * sizeof(*snapshot_at));
    node_handle(&ref, in, split, in->n, 0);
    size_t accepted = 0;
    for (size_t i = 0; i < ref.out.replies.n; i++)
        accepted += !strcmp(ref.out.replies.v[i].key, codec_err_name(CODEC_OK));
    if (getenv("PROPERTY_VERBOSE"))
        for (size_t i = 0; i < ref.out.replies.n; i++)
            fprintf(stderr, "%zu %s\n", i, ref.out.replies.v[i].key);
    if (getenv("PROPERTY_VERBOSE"))
        fprintf(stderr,
                "%zu records, %zu accepted, %zu change records (%zu before the "
                "split), %zu snapshot records (%zu)\n",
                in->n, accepted, ref.out.changes.n, changes_at_split, ref.out.snapshots.n,
                snapshots_at_split);
    cr_assert_gt(accepted, in->n / 20, "%zu of %zu records accepted", accepted, in->n);
    if (generated)
        cr_assert_gt(snapshots_at_split, 0, "no snapshot record to restore from");

    /* Reloaded: every model evicted after every step, the store restarted now and
     * then. The same replies, change and snapshot records, and stored bytes. */
    node_t reloaded;
    node_new(&reloaded, l, "reloaded", 1);
    node_handle(&reloaded, in, 0, in->n, 97);
    expect_same_records(&reloaded.out.replies, &ref.out.replies, 0, "reloaded: replies",
                        l->name);
    expect_same_records(&reloaded.out.changes, &ref.out.changes, 0,
                        "reloaded: change records", l->name);
    expect_same_records(&reloaded.out.snapshots, &ref.out.snapshots, 0,
                        "reloaded: snapshot records", l->name);
    expect_same_store(&reloaded, &ref, "oshcdk", "reloaded");
    expect_same_models(&reloaded, &ref, in, "reloaded");

    /* A restart: the reference closed and reopened reads back what it had cached. */
    msgpack_sbuffer cached;
    msgpack_sbuffer_init(&cached);
    pack_models(&ref, in, &cached);
    node_close(&ref);
    node_open(&ref);
    msgpack_sbuffer again;
    msgpack_sbuffer_init(&again);
    pack_models(&ref, in, &again);
    cr_assert(cached.size == again.size && !memcmp(cached.data, again.data, cached.size),
              "restart (%s limits): the models read back differently", l->name);
    msgpack_sbuffer_destroy(&cached);
    msgpack_sbuffer_destroy(&again);

    /* A catch-up: a fresh store applies the change records of the first part, then
     * handles the rest itself. Everything is the same, history included: change
     * records carry the commands as applied. */
    node_t caught_up;
    node_new(&caught_up, l, "caught-up", 256u << 20);
    node_catch_up(&caught_up, &ref.out.changes, 0, changes_at_split);
    node_handle(&caught_up, in, split, in->n, 0);
    expect_same_records(&caught_up.out.replies, &ref.out.replies, split,
                        "caught up: replies", l->name);
    expect_same_records(&caught_up.out.changes, &ref.out.changes, changes_at_split,
                        "caught up: change records", l->name);
    expect_same_store(&caught_up, &ref, "oshcdk", "caught up");
    expect_same_models(&caught_up, &ref, in, "caught up");

    /* A restore: a fresh store installs the latest snapshot record of each model from
     * the first part (the compacted snapshots topic), then the change records from
     * the oldest of those on (the ones it already reflects are skipped), then handles
     * the rest. Its history starts at the snapshots, so history requests and the
     * syncs in replies may legitimately differ, and so do the stored history and
     * snapshot rewrites; the models (document, command count, client records) and
     * every other outcome must not. */
    node_t restored;
    node_new(&restored, l, "restored", 256u << 20);
    char errstr[256];
    size_t changes_from = changes_at_split;
    for (size_t i = snapshots_at_split; i-- > 0;) {
        const record_t *s = &ref.out.snapshots.v[i];
        bool later = false; /* compaction keeps the latest record per model */
        for (size_t j = i + 1; j < snapshots_at_split && !later; j++)
            later = ref.out.snapshots.v[j].key_len == s->key_len &&
                    !memcmp(ref.out.snapshots.v[j].key, s->key, s->key_len);
        if (later)
            continue;
        cr_assert_eq(state_store_install_snapshot(restored.store, s->key, s->key_len,
                                                  s->value, s->value_len, errstr,
                                                  sizeof(errstr)),
                     1, "snapshot record %zu: %s", i, errstr);
        if (snapshot_at[i] < changes_from)
            changes_from = snapshot_at[i];
    }
    commit(&restored, -1);
    /* Models without a snapshot record need their change records from the start. */
    for (size_t i = 0; i < changes_at_split; i++) {
        bool has_snapshot = false;
        for (size_t j = 0; j < snapshots_at_split && !has_snapshot; j++)
            has_snapshot =
                ref.out.snapshots.v[j].key_len == ref.out.changes.v[i].key_len &&
                !memcmp(ref.out.snapshots.v[j].key, ref.out.changes.v[i].key,
                        ref.out.changes.v[i].key_len);
        if (!has_snapshot && i < changes_from)
            changes_from = i;
    }
    node_catch_up(&restored, &ref.out.changes, changes_from, changes_at_split);
    node_handle(&restored, in, split, in->n, 0);
    for (size_t i = split; i < in->n; i++) {
        const char *got = restored.out.replies.v[i - split].key;
        const char *want = ref.out.replies.v[i].key;
        const char *unavailable = codec_err_name(CODEC_ERR_HISTORY_UNAVAILABLE);
        if (strcmp(got, unavailable) && strcmp(want, unavailable))
            cr_assert_str_eq(got, want, "restored (%s limits): record %zu got %s",
                             l->name, i, got);
    }
    expect_same_models(&restored, &ref, in, "restored");
    expect_same_store(&restored, &ref, "oc", "restored");

    free(snapshot_at);
    node_destroy(&restored);
    node_destroy(&caught_up);
    node_destroy(&reloaded);
    node_destroy(&ref);
}

static void setup(void)
{
    cr_assert_not_null(mkdtemp(base_dir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base_dir);
    cr_assert_eq(system(cmd), 0);
    strcpy(base_dir, "/tmp/flushout-test-property-XXXXXX");
}

TestSuite(property, .init = setup, .fini = teardown, .timeout = 600);

static void check_generated(const limits_t *l)
{
    records_t in = {0};
    uint64_t seed = env_u64("PROPERTY_SEED", 1);
    generate(&in, seed, env_u64("PROPERTY_CASES", 3000));
    check_reads_back(&in, l, true);
    records_clear(&in);
}

Test(property, random_requests_read_back_under_the_default_limits)
{
    check_generated(&default_limits);
}

Test(property, random_requests_read_back_under_lowered_limits)
{
    check_generated(&lowered_limits);
}

Test(property, the_fuzz_and_bad_input_corpora_read_back_under_the_default_limits)
{
    records_t in = {0};
    add_corpora(&in);
    check_reads_back(&in, &default_limits, false);
    records_clear(&in);
}

Test(property, the_fuzz_and_bad_input_corpora_read_back_under_lowered_limits)
{
    records_t in = {0};
    add_corpora(&in);
    check_reads_back(&in, &lowered_limits, false);
    records_clear(&in);
}
