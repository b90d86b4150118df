/* state/master.c - applies flushes to a model with flushout@1.1.1's Master semantics.
 *
 * Mirrors flushout's master.js, functions.js (applyCompletions) and inner.js line by
 * line; comments name the JavaScript behaviour each branch reproduces. */
#include "master.h"

#include <stdio.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "codec/alloc.h"

struct state_master_s {
    char *model;
    size_t model_len;
    uint64_t count;
    codec_value_t *document;
    state_master_conf_t conf;
};

state_master_t *state_master_new(const char *model, size_t model_len,
                                 uint64_t command_count, codec_value_t *document,
                                 const state_master_conf_t *conf)
{
    state_master_t *m = codec_xcalloc(1, sizeof(*m));
    m->model = codec_xmemdup(model, model_len);
    m->model_len = model_len;
    m->count = command_count;
    m->document = document;
    m->conf = *conf;
    return m;
}

void state_master_destroy(state_master_t *m)
{
    if (!m)
        return;
    codec_value_destroy(m->document);
    free(m->model);
    free(m);
}

uint64_t state_master_command_count(const state_master_t *m)
{
    return m->count;
}

const codec_value_t *state_master_document(const state_master_t *m)
{
    return m->document;
}

void state_apply_init(state_apply_t *a)
{
    codec_flush_result_init(&a->result);
    state_path_mapper_init(&a->mapper);
}

void state_apply_reset(state_apply_t *a)
{
    codec_flush_result_t *r = &a->result;
    codec_packed_reset(&r->applied);
    codec_packed_reset(&r->errors);
    codec_packed_reset(&r->diff_history);
    r->applied_from = r->diff_from = r->latest_count = 0;
    r->sync = CODEC_SYNC_NONE;
    r->latest_document = r->mapped_paths = NULL;
    r->duplicate = false;
    r->mapped_paths_raw = NULL;
    r->mapped_paths_raw_len = 0;
    codec_map_clear(a->mapper.mappings);
}

void state_apply_destroy(state_apply_t *a)
{
    codec_flush_result_destroy(&a->result);
    state_path_mapper_clear(&a->mapper);
}

/* ---- inner.js ---- */

/* Names every JavaScript object has through its prototype: inner.js tests
 * `newId in node`, so a proposed ID like "toString" always counts as taken. */
static bool is_prototype_name(const char *s, size_t len)
{
#define PROTO(lit)           \
    {                        \
        lit, sizeof(lit) - 1 \
    }
    static const struct {
        const char *name;
        size_t len;
    } names[] = {
        PROTO("constructor"),      PROTO("__defineGetter__"),
        PROTO("__defineSetter__"), PROTO("hasOwnProperty"),
        PROTO("__lookupGetter__"), PROTO("__lookupSetter__"),
        PROTO("isPrototypeOf"),    PROTO("propertyIsEnumerable"),
        PROTO("toString"),         PROTO("valueOf"),
        PROTO("__proto__"),        PROTO("toLocaleString"),
    };
#undef PROTO
    if (len < 7 || len > 20) /* "valueOf" .. "propertyIsEnumerable" */
        return false;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (names[i].len == len && memcmp(names[i].name, s, len) == 0)
            return true;
    return false;
}

#define DELETE_NEEDS_PATH "Delete needs a path that ends with the key to delete"

typedef enum nav_e {
    NAV_FOUND,
    NAV_MISSING, /* absent, or not an object: inner.js's `typeof n !== 'object'` */
    NAV_NULL,    /* JavaScript would throw on the next step (or misbehave) */
    NAV_ARRAY,   /* JavaScript would set properties that JSON then drops */
} nav_t;

typedef struct navigation_s {
    nav_t status;
    codec_value_t *node;   /* FOUND: the map at the path */
    codec_value_t *parent; /* the last map reached */
    uint32_t fail_len;     /* not FOUND: elements up to and including the failing one */
} navigation_t;

static navigation_t navigate(codec_value_t *doc, const codec_value_t *path, uint32_t n)
{
    navigation_t nav = {NAV_FOUND, doc, doc, 0};
    for (uint32_t i = 0; i < n; i++) {
        const codec_value_t *key = path->u.array.items[i];
        codec_value_t *child = codec_map_get(nav.node, key->u.str.ptr, key->u.str.len);
        nav.parent = nav.node;
        nav.fail_len = i + 1;
        if (!child) {
            nav.status = NAV_MISSING;
            return nav;
        }
        switch (child->type) {
        case CODEC_VALUE_MAP:
            nav.node = child;
            continue;
        case CODEC_VALUE_NIL:
            nav.status = NAV_NULL;
            return nav;
        case CODEC_VALUE_ARRAY:
            nav.status = NAV_ARRAY;
            return nav;
        default:
            nav.status = NAV_MISSING;
            return nav;
        }
    }
    nav.fail_len = 0;
    return nav;
}

/* "No object at document path a,b" (inner.js's wording), or our own wording for the
 * cases where JavaScript is incoherent. */
static char *nav_error(const navigation_t *nav, const codec_value_t *path)
{
    const char *prefix = nav->status == NAV_NULL    ? "Cannot navigate through null at "
                                                      "document path "
                         : nav->status == NAV_ARRAY ? "Cannot navigate into an array at "
                                                      "document path "
                                                    : "No object at document path ";
    char *joined;
    size_t len = codec_path_join(path, nav->fail_len, &joined);
    size_t plen = strlen(prefix);
    char *msg = codec_xmalloc(plen + len + 1);
    memcpy(msg, prefix, plen);
    memcpy(msg + plen, joined, len + 1);
    free(joined);
    return msg;
}

static codec_value_t *generate_id(const state_master_t *m, uint64_t attempt)
{
    char buf[32];
    uint64_t id;
    if (m->conf.ids == STATE_IDS_SEQUENTIAL) {
        id = m->count + 1 + attempt;
    } else {
        uint64_t salt[2] = {m->count, attempt};
        uint64_t seed = XXH3_64bits(m->model, m->model_len);
        /* The low 53 bits (CODEC_MAX_SAFE_INTEGER is 2^53 - 1): a safe integer. */
        id = XXH3_64bits_withSeed(salt, sizeof(salt), seed) & CODEC_MAX_SAFE_INTEGER;
    }
    /* Decimal digits from the end of buf: snprintf was 2% of a flush's handling. */
    char *at = buf + sizeof(buf);
    do
        *--at = (char)('0' + id % 10);
    while (id /= 10);
    return codec_value_str(at, (size_t)(buf + sizeof(buf) - at));
}

/* Inner.apply: @returns NULL on success (with *created_id for a create), or a
 * malloc'ed error message. */
static char *apply_command(state_master_t *m, const codec_command_t *cmd,
                           const codec_value_t *proposed_id, codec_value_t **created_id)
{
    const codec_value_t *path = cmd->path;
    uint32_t n = path ? path->u.array.len : 0;
    *created_id = NULL;

    switch (cmd->action) {
    case CODEC_ACTION_CREATE: {
        navigation_t nav = navigate(m->document, path, n);
        codec_value_t *node = NULL;
        if (nav.status == NAV_FOUND) {
            node = nav.node;
        } else if (nav.status == NAV_MISSING && cmd->parent_default && n > 0 &&
                   nav.fail_len == n) {
            /* The parent is missing (or a scalar) but its own parent exists:
             * put parentDefault there, replacing a scalar as JavaScript does. */
            const codec_value_t *last = path->u.array.items[n - 1];
            node = codec_value_copy(cmd->parent_default);
            codec_map_set(nav.parent, last->u.str.ptr, last->u.str.len, node);
        } else {
            return nav_error(&nav, path);
        }
        codec_value_t *id = NULL;
        for (uint64_t attempt = 0;; attempt++) {
            id = proposed_id && attempt == 0 ? codec_value_copy(proposed_id)
                                             : generate_id(m, attempt);
            if (!codec_map_get(node, id->u.str.ptr, id->u.str.len) &&
                !is_prototype_name(id->u.str.ptr, id->u.str.len))
                break;
            codec_value_destroy(id);
        }
        codec_map_set(node, id->u.str.ptr, id->u.str.len,
                      cmd->props ? codec_value_copy(cmd->props) : codec_value_map(0));
        m->count++;
        *created_id = id;
        return NULL;
    }
    case CODEC_ACTION_UPDATE: {
        navigation_t nav = navigate(m->document, path, n);
        if (nav.status != NAV_FOUND)
            return nav_error(&nav, path);
        if (cmd->props) {
            uint32_t pos = 0;
            const codec_map_entry_t *e;
            while ((e = codec_map_next(cmd->props, &pos)))
                codec_map_set(nav.node, codec_map_entry_key(e), e->key_len,
                              codec_value_copy(e->value));
        }
        m->count++;
        return NULL;
    }
    case CODEC_ACTION_DELETE: {
        if (n == 0) /* JavaScript would delete the key "undefined" */
            return codec_xmemdup(DELETE_NEEDS_PATH, strlen(DELETE_NEEDS_PATH));
        navigation_t nav = navigate(m->document, path, n - 1);
        if (nav.status != NAV_FOUND)
            return nav_error(&nav, path);
        const codec_value_t *last = path->u.array.items[n - 1];
        codec_value_destroy(codec_map_take(nav.node, last->u.str.ptr, last->u.str.len));
        m->count++; /* deleting a missing key still counts */
        return NULL;
    }
    }
    return codec_xmemdup("Unknown command", 15);
}

/* path + [id] as a new array. */
static codec_value_t *path_append(const codec_value_t *path, const codec_value_t *id)
{
    codec_value_t *p = path ? codec_value_copy(path) : codec_value_array(1);
    codec_array_push(p, codec_value_copy(id));
    return p;
}

static bool str_equal(const codec_value_t *a, const codec_value_t *b)
{
    return a->u.str.len == b->u.str.len &&
           memcmp(a->u.str.ptr, b->u.str.ptr, a->u.str.len) == 0;
}

/* ---- functions.js applyCompletions and master.js apply ---- */

void state_master_apply(state_master_t *m, const codec_request_t *flush,
                        const state_history_t *history, state_apply_t *a)
{
    codec_flush_result_t *r = &a->result;
    const uint64_t start = m->count;
    bool modified = false; /* applyCompletions' modifiedBatch exists */

    r->applied_from = start;
    for (uint32_t idx = 0; idx < flush->n_completions; idx++) {
        const codec_completion_t *c = &flush->completions[idx];
        codec_command_t command = c->command;
        codec_value_t *mapped = state_path_mapper_get(&a->mapper, c->command.path);
        if (mapped)
            command.path = mapped;

        state_interception_t icpt = {.kind = STATE_INTERCEPT_ACCEPT};
        if (m->conf.interceptor) {
            state_intercept_meta_t meta = {flush, m->count};
            m->conf.interceptor(m->conf.interceptor_opaque, m->document, &command, &meta,
                                &icpt);
        }
        bool is_modified = mapped != NULL || icpt.kind != STATE_INTERCEPT_ACCEPT;

        codec_value_t *created_id = NULL;
        char *error = NULL;
        if (icpt.kind == STATE_INTERCEPT_ACCEPT) {
            error = apply_command(m, &command, c->created_id, &created_id);
        } else if (icpt.kind == STATE_INTERCEPT_REPLACE_PROPS &&
                   command.action != CODEC_ACTION_DELETE && icpt.new_props) {
            /* functions.js rebuilds the command from path, action and the new props:
             * parentDefault is dropped. */
            command =
                (codec_command_t){command.action, command.path, icpt.new_props, NULL};
            error = apply_command(m, &command, c->created_id, &created_id);
        } else if (icpt.kind == STATE_INTERCEPT_REJECT && icpt.message) {
            error = icpt.message;
            icpt.message = NULL;
        } else { /* flushout would send an error without a message here */
            const char *msg = "Interceptor gave no props that this command can take";
            error = codec_xmemdup(msg, strlen(msg));
        }

        if (!error) {
            if (created_id && c->created_id && !str_equal(created_id, c->created_id)) {
                is_modified = true;
                codec_value_t *from_path = path_append(command.path, c->created_id);
                state_path_mapper_put(&a->mapper, from_path,
                                      path_append(command.path, created_id));
                codec_value_destroy(from_path);
            }
            if (modified || is_modified) {
                modified = true;
                codec_completion_t applied = {command, created_id};
                codec_completion_pack(&r->applied.pk, &applied);
            } else {
                codec_completion_pack(&r->applied.pk, c); /* as sent */
            }
            codec_packed_end_item(&r->applied);
        } else {
            modified = true;
            codec_flush_result_add_error(r, c->command.action, command.path, error);
            free(error);
        }
        codec_value_destroy(created_id);
        codec_value_destroy(mapped);
        codec_value_destroy(icpt.new_props);
        free(icpt.message);
    }

    /* master.js: a sync is due when the proxy is behind or anything changed. */
    r->sync = CODEC_SYNC_NONE;
    if (flush->from != start || modified) {
        r->mapped_paths = a->mapper.mappings;
        r->sync = CODEC_SYNC_PARTIAL;
        r->diff_from = flush->from;
        if (flush->from != start &&
            (!history || history->range(history->opaque, flush->from, start,
                                        &r->diff_history) != 0)) {
            codec_packed_reset(&r->diff_history);
            r->sync = CODEC_SYNC_FULL;
            r->latest_count = m->count;
            r->latest_document = m->document;
        }
    }
}

int state_master_replay(state_master_t *m, const codec_completion_t *c, char *errstr,
                        size_t errstr_size)
{
    codec_value_t *created_id = NULL;
    char *error = apply_command(m, &c->command, c->created_id, &created_id);
    int rc = 0;
    if (error) {
        snprintf(errstr, errstr_size, "%s", error);
        rc = -1;
    } else if (c->created_id && created_id && !str_equal(c->created_id, created_id)) {
        snprintf(errstr, errstr_size, "created ID %s instead of %s",
                 created_id->u.str.ptr, c->created_id->u.str.ptr);
        rc = -1;
    }
    free(error);
    codec_value_destroy(created_id);
    return rc;
}
