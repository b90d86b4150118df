/* processor/cmd_inspect.c - `flushout-processor inspect`: what a state store holds.
 *
 * Prints JSON lines: per partition its next input offset and totals, then a line per
 * model (command count, snapshot, history and client records); or one model's
 * snapshot (--model) or stored history (--history-of). Read-only use of the store. */
#include "cmd_inspect.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "codec/hash.h"
/* Seeded: model and client ids come from clients (hash flooding). */
#define HASH_FUNCTION CODEC_UTHASH_FUNCTION
#include <uthash.h>

#include "codec/alloc.h"
#include "codec/json.h"
#include "codec/msgpack.h"
#include "state/store.h"

typedef struct model_stats_s {
    char *key; /* partition (4 bytes) + model id */
    size_t key_len;
    int32_t partition;
    uint64_t command_count, snapshot_count;
    size_t snapshot_bytes, history_bytes;
    uint64_t history_entries, clients;
    bool has_snapshot;
    UT_hash_handle hh;
} model_stats_t;

typedef struct partition_stats_s {
    int32_t partition;
    int64_t next_offset;
    int64_t partition_count; /* the layout it was built for, -1: not recorded */
    char *settings;          /* the settings it was built with, NULL: not recorded */
    uint64_t models;
    uint64_t outbox;
    size_t bytes;
    UT_hash_handle hh;
} partition_stats_t;

typedef struct listing_s {
    model_stats_t *models;
    partition_stats_t *partitions;
    const char *only_model; /* --model / --history-of: the partitions holding it */
    size_t only_model_len;
    FILE *out;
} listing_t;

static void print_json(FILE *out, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    fprintf(out, "%s\n", s);
    free(s);
    json_decref(j);
}

static int collect(void *opaque, const state_store_item_t *item)
{
    listing_t *l = opaque;
    partition_stats_t *p = NULL;
    HASH_FIND(hh, l->partitions, &item->partition, sizeof(item->partition), p);
    if (!p) {
        p = codec_xcalloc(1, sizeof(*p));
        p->partition = item->partition;
        p->next_offset = -1;
        p->partition_count = -1;
        HASH_ADD(hh, l->partitions, partition, sizeof(p->partition), p);
    }
    p->bytes += item->value_len;
    if (item->kind == STATE_ITEM_OFFSET) {
        p->next_offset = (int64_t)item->count;
        return 0;
    }
    if (item->kind == STATE_ITEM_OUTBOX) {
        p->outbox++;
        return 0;
    }
    if (item->kind == STATE_ITEM_PARTITIONS) {
        p->partition_count = (int64_t)item->count;
        return 0;
    }
    if (item->kind == STATE_ITEM_SETTINGS) {
        free(p->settings);
        p->settings = codec_xmalloc(item->value_len + 1);
        memcpy(p->settings, item->value, item->value_len);
        p->settings[item->value_len] = '\0';
        return 0;
    }
    if (item->kind == STATE_ITEM_CHANGES || item->kind == STATE_ITEM_CHANGED)
        return 0;
    if (l->only_model && (item->model_len != l->only_model_len ||
                          memcmp(item->model, l->only_model, item->model_len) != 0))
        return 0;

    size_t key_len = 4 + item->model_len;
    char *key = codec_xmalloc(key_len);
    memcpy(key, &item->partition, 4);
    memcpy(key + 4, item->model, item->model_len);
    model_stats_t *m = NULL;
    HASH_FIND(hh, l->models, key, key_len, m);
    if (!m) {
        m = codec_xcalloc(1, sizeof(*m));
        m->key = key;
        m->key_len = key_len;
        m->partition = item->partition;
        HASH_ADD_KEYPTR(hh, l->models, m->key, m->key_len, m);
        p->models++;
    } else {
        free(key);
    }
    switch (item->kind) {
    case STATE_ITEM_SNAPSHOT: {
        codec_value_t *v = NULL;
        char err[128];
        if (codec_msgpack_decode(item->value, item->value_len, &codec_limits_trusted, &v,
                                 err, sizeof(err)) == 0 &&
            v->type == CODEC_VALUE_MAP) {
            const codec_value_t *c = codec_map_get(v, "commandCount", 12);
            if (c && c->type == CODEC_VALUE_INT)
                m->snapshot_count = (uint64_t)c->u.i;
        }
        codec_value_destroy(v);
        m->has_snapshot = true;
        m->snapshot_bytes = item->value_len;
        if (m->snapshot_count > m->command_count)
            m->command_count = m->snapshot_count;
        break;
    }
    case STATE_ITEM_HISTORY: {
        /* One key per flush: [completion...] from count on (a single completion in
         * stores written before). */
        codec_value_t *v = NULL;
        char err[128];
        if (codec_msgpack_decode(item->value, item->value_len, &codec_limits_trusted, &v,
                                 err, sizeof(err)))
            v = NULL;
        bool list = v && v->type == CODEC_VALUE_ARRAY;
        uint32_t n = list ? v->u.array.len : 1;
        m->history_entries += n;
        m->history_bytes += item->value_len;
        if (item->count + n > m->command_count)
            m->command_count = item->count + n;
        for (uint32_t i = 0; l->only_model && l->out && i < n; i++) { /* --history-of */
            json_t *completion = NULL;
            const codec_value_t *c = list ? v->u.array.items[i] : v;
            if (c) {
                char *text = codec_json_encode(c, NULL);
                completion = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
                free(text);
            }
            print_json(l->out,
                       json_pack("{s:i, s:s%, s:I, s:o*}", "partition", item->partition,
                                 "model", item->model, item->model_len, "count",
                                 (json_int_t)(item->count + i), "completion",
                                 completion));
        }
        codec_value_destroy(v);
        break;
    }
    case STATE_ITEM_CLIENT:
        m->clients++;
        break;
    }
    return 0;
}

static void listing_clear(listing_t *l)
{
    model_stats_t *m, *mt;
    HASH_ITER(hh, l->models, m, mt)
    {
        HASH_DEL(l->models, m);
        free(m->key);
        free(m);
    }
    partition_stats_t *p, *pt;
    HASH_ITER(hh, l->partitions, p, pt)
    {
        HASH_DEL(l->partitions, p);
        free(p->settings);
        free(p);
    }
}

static void print_listing(const listing_t *l, FILE *out)
{
    for (partition_stats_t *p = l->partitions; p; p = p->hh.next) {
        print_json(
            out,
            json_pack("{s:i, s:o, s:o, s:o, s:I, s:I, s:I}", "partition", p->partition,
                      "nextOffset",
                      p->next_offset < 0 ? json_null() : json_integer(p->next_offset),
                      "partitionCount",
                      p->partition_count < 0 ? json_null()
                                             : json_integer(p->partition_count),
                      "settings", p->settings ? json_string(p->settings) : json_null(),
                      "models", (json_int_t)p->models, "outbox", (json_int_t)p->outbox,
                      "storedBytes", (json_int_t)p->bytes));
        for (model_stats_t *m = l->models; m; m = m->hh.next) {
            if (m->partition != p->partition)
                continue;
            print_json(out,
                       json_pack("{s:i, s:s%, s:I, s:I, s:I, s:I, s:I, s:I}", "partition",
                                 m->partition, "model", m->key + 4, m->key_len - 4,
                                 "commandCount", (json_int_t)m->command_count,
                                 "snapshotCount", (json_int_t)m->snapshot_count,
                                 "snapshotBytes", (json_int_t)m->snapshot_bytes,
                                 "historyEntries", (json_int_t)m->history_entries,
                                 "historyBytes", (json_int_t)m->history_bytes, "clients",
                                 (json_int_t)m->clients));
        }
    }
}

/* Prints the model's snapshot in every partition that holds it. */
static int print_models(state_store_t *s, const listing_t *l, FILE *out)
{
    char errstr[512];
    int found = 0;
    for (model_stats_t *m = l->models; m; m = m->hh.next) {
        state_model_t *sm =
            state_store_model(s, m->key + 4, m->key_len - 4, errstr, sizeof(errstr));
        if (!sm) {
            fprintf(stderr, "inspect: %s\n", errstr);
            return 1;
        }
        state_master_t *master = state_model_master(sm);
        char *doc = codec_json_encode(state_master_document(master), NULL);
        json_t *d = json_loads(doc, JSON_ALLOW_NUL, NULL);
        free(doc);
        print_json(out, json_pack("{s:i, s:s%, s:I, s:o*}", "partition", m->partition,
                                  "model", m->key + 4, m->key_len - 4, "commandCount",
                                  (json_int_t)state_master_command_count(master),
                                  "document", d));
        found++;
    }
    if (!found) {
        fprintf(stderr, "inspect: no model \"%s\" in the store\n", l->only_model);
        return 1;
    }
    return 0;
}

int processor_cmd_inspect(const processor_config_t *cfg, FILE *out)
{
    char errstr[512];
    struct stat st;
    if (stat(cfg->state_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "inspect: %s is not a state directory\n", cfg->state_dir);
        return 1;
    }
    state_store_conf_t conf = {
        .dir = cfg->state_dir,
        .history = UINT64_MAX, /* show what is stored, not what a window would keep */
        .cache_bytes = (size_t)cfg->cache_mb << 20,
        .partition = STATE_STORE_PARTITION_STORED, /* what the directory holds */
    };
    state_store_t *s = state_store_open(&conf, errstr, sizeof(errstr));
    if (!s) {
        fprintf(stderr, "inspect: %s\n", errstr);
        return 1;
    }
    listing_t l = {0};
    const char *only = cfg->model ? cfg->model : cfg->history_of;
    if (only) {
        l.only_model = only;
        l.only_model_len = strlen(only);
    }
    l.out = cfg->history_of ? out : NULL;
    int rc = 0;
    if (state_store_scan(s, collect, &l, errstr, sizeof(errstr))) {
        fprintf(stderr, "inspect: %s\n", errstr);
        rc = 1;
    } else if (cfg->model) {
        rc = print_models(s, &l, out);
    } else if (!cfg->history_of) {
        print_listing(&l, out);
    }
    listing_clear(&l);
    state_store_close(s);
    return rc;
}
