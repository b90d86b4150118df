/* codec/request.c - protocol v1 requests: validation of decoded trees into typed
 * requests. */
#include "request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "msgpack.h"
#include "utf8.h"
#include "print.h"

const char *codec_action_name(codec_action_t action)
{
    switch (action) {
    case CODEC_ACTION_CREATE:
        return "create";
    case CODEC_ACTION_UPDATE:
        return "update";
    case CODEC_ACTION_DELETE:
        return "detete";
    }
    return "unknown";
}

typedef struct validator_s {
    const codec_limits_t *limits;
    char *errstr;
    size_t errstr_size;
} validator_t;

/* The fields of one map, collected in a single pass over its entries (looking each
 * name up would scan the map once per name). nil counts as absent, as JavaScript
 * encoders send undefined as nil. */
typedef struct fields_s {
    const codec_value_t *v[10];
    uint32_t known; /* entries that are known fields, nil ones included */
} fields_t;

typedef struct name_s {
    const char *s;
    size_t len;
} name_t;
#define NAME(lit)            \
    {                        \
        lit, sizeof(lit) - 1 \
    }

static void collect(const codec_value_t *map, const name_t *names, size_t n, fields_t *f)
{
    memset(f, 0, sizeof(*f));
    uint32_t pos = 0;
    const codec_map_entry_t *e;
    while ((e = codec_map_next(map, &pos))) {
        const char *key = codec_map_entry_key(e);
        for (size_t i = 0; i < n; i++) {
            if (names[i].len == e->key_len && names[i].s[0] == key[0] &&
                memcmp(names[i].s, key, e->key_len) == 0) {
                f->known++;
                if (e->value->type != CODEC_VALUE_NIL)
                    f->v[i] = e->value;
                break;
            }
        }
    }
}

static codec_err_t wrong_type(validator_t *vd, const char *name, const char *expected,
                              const codec_value_t *got)
{
    return codec_errf(CODEC_ERR_WRONG_TYPE, vd->errstr, vd->errstr_size,
                      "%s: expected %s, got %s", name, expected,
                      codec_value_type_name(got->type));
}

static codec_err_t missing(validator_t *vd, const char *name)
{
    return codec_errf(CODEC_ERR_MISSING_FIELD, vd->errstr, vd->errstr_size,
                      "%s: required field is missing", name);
}

/* v may be NULL (absent). */
static codec_err_t get_uint(validator_t *vd, const codec_value_t *v, const char *name,
                            bool required, uint64_t *out)
{
    if (!v)
        return required ? missing(vd, name) : CODEC_OK;
    if (v->type != CODEC_VALUE_INT)
        return wrong_type(vd, name, "an unsigned integer", v);
    if (v->u.i < 0 || (uint64_t)v->u.i > CODEC_MAX_SAFE_INTEGER)
        return codec_errf(CODEC_ERR_OUT_OF_RANGE, vd->errstr, vd->errstr_size,
                          "%s: %lld is outside 0..2^53-1", name, (long long)v->u.i);
    *out = (uint64_t)v->u.i;
    return CODEC_OK;
}

static codec_err_t get_str(validator_t *vd, const codec_value_t *v, const char *name,
                           bool required, codec_str_t *out)
{
    if (!v)
        return required ? missing(vd, name) : CODEC_OK;
    if (v->type != CODEC_VALUE_STR)
        return wrong_type(vd, name, "a string", v);
    out->ptr = v->u.str.ptr;
    out->len = v->u.str.len;
    return CODEC_OK;
}

static codec_err_t get_map(validator_t *vd, const codec_value_t *v, const char *name,
                           const codec_value_t **out)
{
    if (v && v->type != CODEC_VALUE_MAP)
        return wrong_type(vd, name, "a map", v);
    *out = v;
    return CODEC_OK;
}

static bool is_proto(const codec_value_t *s)
{
    return s->u.str.len == 9 && memcmp(s->u.str.ptr, "__proto__", 9) == 0;
}

/* The fast check; check_path() explains what is wrong. */
static bool path_elements_ok(const codec_value_t *path)
{
    for (uint32_t i = 0; i < path->u.array.len; i++)
        if (path->u.array.items[i]->type != CODEC_VALUE_STR ||
            is_proto(path->u.array.items[i]))
            return false;
    return true;
}

static codec_err_t check_path(validator_t *vd, const char *name,
                              const codec_value_t *path)
{
    if (path->type != CODEC_VALUE_ARRAY)
        return wrong_type(vd, name, "an array of strings", path);
    if (path->u.array.len > vd->limits->max_path_length)
        return codec_errf(CODEC_ERR_TOO_LARGE, vd->errstr, vd->errstr_size,
                          "%s: %u elements exceed the path length limit of %u", name,
                          path->u.array.len, vd->limits->max_path_length);
    for (uint32_t i = 0; i < path->u.array.len; i++) {
        const codec_value_t *e = path->u.array.items[i];
        if (e->type != CODEC_VALUE_STR)
            return codec_errf(CODEC_ERR_WRONG_TYPE, vd->errstr, vd->errstr_size,
                              "%s[%u]: expected a string, got %s", name, i,
                              codec_value_type_name(e->type));
        if (is_proto(e))
            return codec_errf(CODEC_ERR_FORBIDDEN_KEY, vd->errstr, vd->errstr_size,
                              "%s[%u]: __proto__ is not allowed in a path", name, i);
    }
    return CODEC_OK;
}

/* "completions[3].command.path": built only on error, as formatting it for every
 * completion would cost more than validating it. */
static const char *cname(char *buf, size_t size, uint32_t idx, const char *suffix)
{
    snprintf(buf, size, "completions[%u]%s", idx, suffix);
    return buf;
}

enum { C_COMMAND, C_CREATED_ID };
static const name_t completion_fields[] = {NAME("command"), NAME("createdId")};
enum { K_ACTION, K_PATH, K_PROPS, K_PARENT_DEFAULT };
static const name_t command_fields[] = {NAME("action"), NAME("path"), NAME("props"),
                                        NAME("parentDefault")};

static codec_err_t parse_completion(validator_t *vd, uint32_t idx, const codec_value_t *v,
                                    codec_completion_t *c)
{
    char name[96];
    codec_err_t err;
    const codec_value_t *f;
    fields_t cf, kf;

    if (v->type != CODEC_VALUE_MAP)
        return wrong_type(vd, cname(name, sizeof(name), idx, ""), "a map", v);
    collect(v, completion_fields, 2, &cf);

    if ((f = cf.v[C_CREATED_ID])) {
        if (f->type != CODEC_VALUE_STR)
            return wrong_type(vd, cname(name, sizeof(name), idx, ".createdId"),
                              "a string", f);
        if (is_proto(f))
            return codec_errf(CODEC_ERR_FORBIDDEN_KEY, vd->errstr, vd->errstr_size,
                              "%s: __proto__ is not allowed as an ID",
                              cname(name, sizeof(name), idx, ".createdId"));
        c->created_id = f;
    }

    const codec_value_t *cmd = cf.v[C_COMMAND];
    if (!cmd)
        return missing(vd, cname(name, sizeof(name), idx, ".command"));
    if (cmd->type != CODEC_VALUE_MAP)
        return wrong_type(vd, cname(name, sizeof(name), idx, ".command"), "a map", cmd);
    collect(cmd, command_fields, 4, &kf);

    if (!(f = kf.v[K_ACTION]))
        return missing(vd, cname(name, sizeof(name), idx, ".command.action"));
    if (f->type != CODEC_VALUE_STR)
        return wrong_type(vd, cname(name, sizeof(name), idx, ".command.action"),
                          "a string", f);
    bool alias = false;
    if (f->u.str.len == 6 && !memcmp(f->u.str.ptr, "create", 6))
        c->command.action = CODEC_ACTION_CREATE;
    else if (f->u.str.len == 6 && !memcmp(f->u.str.ptr, "update", 6))
        c->command.action = CODEC_ACTION_UPDATE;
    else if (f->u.str.len == 6 && !memcmp(f->u.str.ptr, "detete", 6))
        c->command.action = CODEC_ACTION_DELETE;
    else if (f->u.str.len == 6 && !memcmp(f->u.str.ptr, "delete", 6))
        c->command.action = CODEC_ACTION_DELETE, alias = true;
    else
        return codec_errf(CODEC_ERR_UNKNOWN_ACTION, vd->errstr, vd->errstr_size,
                          "%s: unknown action \"%.40s\"",
                          cname(name, sizeof(name), idx, ".command.action"),
                          f->u.str.ptr);

    if ((f = kf.v[K_PATH])) {
        if (f->type != CODEC_VALUE_ARRAY ||
            f->u.array.len > vd->limits->max_path_length || !path_elements_ok(f)) {
            if ((err =
                     check_path(vd, cname(name, sizeof(name), idx, ".command.path"), f)))
                return err;
        }
        c->command.path = f;
    }
    if ((f = kf.v[K_PROPS])) {
        if (f->type != CODEC_VALUE_MAP)
            return wrong_type(vd, cname(name, sizeof(name), idx, ".command.props"),
                              "a map", f);
        c->command.props = f;
    }
    if ((f = kf.v[K_PARENT_DEFAULT])) {
        if (f->type != CODEC_VALUE_MAP)
            return wrong_type(
                vd, cname(name, sizeof(name), idx, ".command.parentDefault"), "a map", f);
        c->command.parent_default = f;
    }

    /* Canonical: holds exactly the fields above, none nil, none unknown, "detete"
     * spelled so; its bytes can then be echoed. A non-NULL raw marks it, and
     * find_raw_completions() points raw at the bytes. */
    bool canonical = v->u.map.count == 1u + !!c->created_id &&
                     cmd->u.map.count == 1u + !!c->command.path + !!c->command.props +
                                             !!c->command.parent_default &&
                     !alias;
    c->raw = canonical ? "" : NULL;
    return CODEC_OK;
}

/* Points each canonical completion's raw at its bytes, found while decoding. */
static void set_raw_completions(const char *buf, const codec_spans_t *spans,
                                codec_request_t *req)
{
    for (uint32_t i = 0; i < req->n_completions; i++) {
        codec_completion_t *c = &req->completions[i];
        if (!c->raw)
            continue;
        if (spans->count != req->n_completions) {
            c->raw = NULL;
            continue;
        }
        c->raw = buf + spans->offsets[i];
        c->raw_len = spans->offsets[i + 1] - spans->offsets[i];
    }
}

enum {
    E_TYPE,
    E_MODEL,
    E_CLIENT,
    E_SEQ,
    E_FROM,
    E_TO,
    E_CONTEXT,
    E_COMPLETIONS,
    E_TIMESTAMP,
    E_AT,
    E__COUNT
};
static const name_t envelope_fields[E__COUNT] = {
    NAME("type"), NAME("model"),   NAME("client"),      NAME("seq"),       NAME("from"),
    NAME("to"),   NAME("context"), NAME("completions"), NAME("timestamp"), NAME("at")};

codec_err_t codec_id_check(const char *what, const char *id, size_t len, bool model,
                           const codec_limits_t *limits, char *errstr, size_t errstr_size)
{
    uint32_t max = limits ? limits->max_id_bytes : CODEC_DEFAULT_MAX_ID_BYTES;
    if (len > max)
        return codec_errf(CODEC_ERR_TOO_LARGE, errstr, errstr_size,
                          "%s: an id of %zu bytes exceeds the limit of %u", what, len,
                          max);
    if (model && len == 0)
        return codec_errf(CODEC_ERR_OUT_OF_RANGE, errstr, errstr_size,
                          "%s: the model id is empty", what);
    if (!codec_utf8_valid(id, len))
        return codec_errf(CODEC_ERR_INVALID_UTF8, errstr, errstr_size,
                          "%s: the id is not valid UTF-8", what);
    return CODEC_OK;
}

static codec_err_t validate(codec_value_t *root, msgpack_zone *zone, const char *key,
                            size_t key_len, const codec_limits_t *limits,
                            codec_request_t *req, char *errstr, size_t errstr_size)
{
    validator_t vd = {limits ? limits : &codec_limits_default, errstr, errstr_size};
    codec_err_t err;
    codec_str_t type = {0}, model = {0};

    memset(req, 0, sizeof(*req));
    req->timestamp = -1;
    req->offset = -1;
    req->root = root;
    req->zone = zone;
    if (key) {
        req->model = (codec_str_t){key, key_len};
        req->has_model = true;
    }
    if (root->type != CODEC_VALUE_MAP)
        return codec_errf(CODEC_ERR_WRONG_TYPE, errstr, errstr_size,
                          "request: expected a map, got %s",
                          codec_value_type_name(root->type));

    fields_t ef;
    collect(root, envelope_fields, E__COUNT, &ef);

    /* Identify the sender first so that even a rejection can be answered. */
    if (get_str(&vd, ef.v[E_MODEL], "model", false, &model) == CODEC_OK &&
        ef.v[E_MODEL] && !key) {
        req->model = model;
        req->has_model = true;
    }
    if (get_str(&vd, ef.v[E_CLIENT], "client", false, &req->client) == CODEC_OK &&
        ef.v[E_CLIENT])
        req->has_client = true;
    if (get_uint(&vd, ef.v[E_SEQ], "seq", false, &req->seq) == CODEC_OK && ef.v[E_SEQ])
        req->has_seq = true;

    if ((err = get_str(&vd, ef.v[E_TYPE], "type", true, &type)))
        return err;
    if (type.len == 5 && !memcmp(type.ptr, "flush", 5))
        req->type = CODEC_REQUEST_FLUSH;
    else if (type.len == 8 && !memcmp(type.ptr, "snapshot", 8))
        req->type = CODEC_REQUEST_SNAPSHOT;
    else if (type.len == 7 && !memcmp(type.ptr, "history", 7))
        req->type = CODEC_REQUEST_HISTORY;
    else
        return codec_errf(CODEC_ERR_UNKNOWN_TYPE, errstr, errstr_size,
                          "type: unknown request type \"%.40s\"", type.ptr);

    if ((err = get_str(&vd, ef.v[E_MODEL], "model", !key, &model)))
        return err;
    if (key && ef.v[E_MODEL] && (model.len != key_len || memcmp(model.ptr, key, key_len)))
        return codec_errf(CODEC_ERR_MODEL_MISMATCH, errstr, errstr_size,
                          "model: " MODEL_FMT " differs from the record key " MODEL_FMT,
                          MODEL_ARG(model.ptr, model.len), MODEL_ARG(key, key_len));
    if ((err = codec_id_check(key ? "the record key" : "model", req->model.ptr,
                              req->model.len, true, vd.limits, errstr, errstr_size)))
        return err;
    if ((err = get_str(&vd, ef.v[E_CLIENT], "client", true, &req->client)) ||
        (err = codec_id_check("client", req->client.ptr, req->client.len, false,
                              vd.limits, errstr, errstr_size)) ||
        (err = get_uint(&vd, ef.v[E_SEQ], "seq", true, &req->seq)))
        return err;

    if (req->type == CODEC_REQUEST_SNAPSHOT) { /* "at" elsewhere is ignored, unknown */
        req->has_at = ef.v[E_AT] != NULL;
        return get_uint(&vd, ef.v[E_AT], "at", false, &req->at);
    }
    if ((err = get_uint(&vd, ef.v[E_FROM], "from", true, &req->from)))
        return err;
    if (req->type == CODEC_REQUEST_HISTORY) {
        req->has_to = ef.v[E_TO] != NULL;
        return get_uint(&vd, ef.v[E_TO], "to", false, &req->to);
    }

    if ((err = get_map(&vd, ef.v[E_CONTEXT], "context", &req->context)))
        return err;
    uint64_t timestamp;
    if ((err = get_uint(&vd, ef.v[E_TIMESTAMP], "timestamp", false, &timestamp)))
        return err;
    if (ef.v[E_TIMESTAMP])
        req->timestamp = (int64_t)timestamp;
    const codec_value_t *list = ef.v[E_COMPLETIONS];
    if (!list)
        return missing(&vd, "completions");
    if (list->type != CODEC_VALUE_ARRAY)
        return wrong_type(&vd, "completions", "an array", list);
    if (list->u.array.len > vd.limits->max_completions)
        return codec_errf(CODEC_ERR_TOO_LARGE, errstr, errstr_size,
                          "completions: %u commands exceed the limit of %u per flush",
                          list->u.array.len, vd.limits->max_completions);
    size_t size = list->u.array.len * sizeof(*req->completions);
    req->completions =
        zone ? msgpack_zone_malloc(zone, size ? size : 1) : codec_xmalloc(size);
    if (!req->completions) {
        fprintf(stderr, "flushout: out of memory allocating %zu bytes\n", size);
        abort();
    }
    memset(req->completions, 0, size);
    req->n_completions = list->u.array.len;
    for (uint32_t i = 0; i < list->u.array.len; i++)
        if ((err =
                 parse_completion(&vd, i, list->u.array.items[i], &req->completions[i])))
            return err;
    return CODEC_OK;
}

codec_err_t codec_request_from_value(codec_value_t *root, const char *key, size_t key_len,
                                     const codec_limits_t *limits, codec_request_t *req,
                                     char *errstr, size_t errstr_size)
{
    codec_err_t err =
        validate(root, NULL, key, key_len, limits, req, errstr, errstr_size);
    for (uint32_t i = 0; i < req->n_completions; i++)
        req->completions[i].raw = NULL; /* no record bytes to echo */
    return err;
}

void codec_request_identify(const char *buf, size_t len, const char *key, size_t key_len,
                            codec_request_t *req)
{
    memset(req, 0, sizeof(*req));
    codec_identity_t id;
    codec_msgpack_identify(buf, len, &id);
    if (key) {
        req->model = (codec_str_t){key, key_len};
        req->has_model = true;
    } else if (id.model) {
        req->model = (codec_str_t){id.model, id.model_len};
        req->has_model = true;
    }
    if (id.client) {
        req->client = (codec_str_t){id.client, id.client_len};
        req->has_client = true;
    }
    req->has_seq = id.has_seq;
    req->seq = id.seq;
}

codec_err_t codec_request_decode(const char *buf, size_t len, const char *key,
                                 size_t key_len, const codec_limits_t *limits,
                                 msgpack_zone *zone, codec_request_t *req, char *errstr,
                                 size_t errstr_size)
{
    codec_value_t *root;
    codec_spans_t spans = {.field = "completions", .field_len = 11};
    codec_err_t err =
        zone ? codec_msgpack_decode_zone(zone, &spans, buf, len, limits, &root, errstr,
                                         errstr_size)
             : codec_msgpack_decode(buf, len, limits, &root, errstr, errstr_size);
    if (err) {
        codec_request_identify(buf, len, key, key_len, req);
        return err;
    }
    err = validate(root, zone, key, key_len, limits, req, errstr, errstr_size);
    if (!err && req->type == CODEC_REQUEST_FLUSH)
        set_raw_completions(buf, &spans, req);
    return err;
}

codec_err_t codec_completion_decode(const char *buf, size_t len, msgpack_zone *zone,
                                    codec_completion_t *c, char *errstr,
                                    size_t errstr_size)
{
    /* History holds what this build wrote: its depth is bounded by the document's. */
    codec_value_t *v;
    memset(c, 0, sizeof(*c));
    codec_err_t err = codec_msgpack_decode_zone(
        zone, NULL, buf, len, &codec_limits_trusted, &v, errstr, errstr_size);
    return err ? err : codec_completion_from_value(v, buf, len, c, errstr, errstr_size);
}

codec_err_t codec_completion_from_value(const codec_value_t *v, const char *buf,
                                        size_t len, codec_completion_t *c, char *errstr,
                                        size_t errstr_size)
{
    validator_t vd = {&codec_limits_trusted, errstr, errstr_size};
    memset(c, 0, sizeof(*c));
    codec_err_t err = parse_completion(&vd, 0, v, c);
    if (err)
        return err;
    if (c->raw) { /* canonical: the stored bytes are its echo */
        c->raw = buf;
        c->raw_len = (uint32_t)len;
    }
    return CODEC_OK;
}

void codec_request_clear(codec_request_t *req)
{
    if (!req->zone) { /* a zone's caller frees everything at once */
        free(req->completions);
        codec_value_destroy(req->root);
    }
    memset(req, 0, sizeof(*req));
}

void codec_path_pack(msgpack_packer *pk, const codec_value_t *path)
{
    uint32_t n = path ? path->u.array.len : 0;
    msgpack_pack_array(pk, n);
    for (uint32_t i = 0; i < n; i++)
        msgpack_pack_str_with_body(pk, path->u.array.items[i]->u.str.ptr,
                                   path->u.array.items[i]->u.str.len);
}

void codec_completion_pack(msgpack_packer *pk, const codec_completion_t *c)
{
    if (c->raw) {
        codec_msgpack_pack_raw(pk, c->raw, c->raw_len);
        return;
    }
    const codec_command_t *cmd = &c->command;
    msgpack_pack_map(pk, c->created_id ? 2 : 1);
    msgpack_pack_str_with_body(pk, "command", 7);
    msgpack_pack_map(pk, 1 + !!cmd->path + !!cmd->props + !!cmd->parent_default);
    msgpack_pack_str_with_body(pk, "action", 6);
    msgpack_pack_str_with_body(pk, codec_action_name(cmd->action), 6);
    if (cmd->path) {
        msgpack_pack_str_with_body(pk, "path", 4);
        codec_path_pack(pk, cmd->path);
    }
    if (cmd->props) {
        msgpack_pack_str_with_body(pk, "props", 5);
        codec_msgpack_pack_value(pk, cmd->props);
    }
    if (cmd->parent_default) {
        msgpack_pack_str_with_body(pk, "parentDefault", 13);
        codec_msgpack_pack_value(pk, cmd->parent_default);
    }
    if (c->created_id) {
        msgpack_pack_str_with_body(pk, "createdId", 9);
        msgpack_pack_str_with_body(pk, c->created_id->u.str.ptr,
                                   c->created_id->u.str.len);
    }
}

size_t codec_path_join(const codec_value_t *path, uint32_t n_elems, char **out)
{
    size_t len = n_elems ? n_elems - 1 : 0;
    for (uint32_t i = 0; i < n_elems; i++)
        len += path->u.array.items[i]->u.str.len;
    char *buf = codec_xmalloc(len + 1);
    size_t off = 0;
    for (uint32_t i = 0; i < n_elems; i++) {
        if (i)
            buf[off++] = ',';
        memcpy(buf + off, path->u.array.items[i]->u.str.ptr,
               path->u.array.items[i]->u.str.len);
        off += path->u.array.items[i]->u.str.len;
    }
    buf[len] = '\0';
    *out = buf;
    return len;
}
