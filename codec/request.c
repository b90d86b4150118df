/* codec/request.c - protocol v1 requests: validation of decoded trees into typed
 * requests. */
#include "request.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "msgpack.h"

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

/* Looks a field up; nil counts as absent, as JavaScript encoders send undefined as nil.
 */
static const codec_value_t *field(const codec_value_t *map, const char *name)
{
    const codec_value_t *v = codec_map_get(map, name, strlen(name));
    return v && v->type != CODEC_VALUE_NIL ? v : NULL;
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

static codec_err_t get_uint(validator_t *vd, const codec_value_t *map, const char *name,
                            bool required, uint64_t *out, bool *present)
{
    const codec_value_t *v = field(map, name);
    if (present)
        *present = v != NULL;
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

static codec_err_t get_str(validator_t *vd, const codec_value_t *map, const char *name,
                           bool required, codec_str_t *out, bool *present)
{
    const codec_value_t *v = field(map, name);
    if (present)
        *present = v != NULL;
    if (!v)
        return required ? missing(vd, name) : CODEC_OK;
    if (v->type != CODEC_VALUE_STR)
        return wrong_type(vd, name, "a string", v);
    out->ptr = v->u.str.ptr;
    out->len = v->u.str.len;
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

static codec_err_t optional_map(validator_t *vd, const codec_value_t *map,
                                const char *key, const char *name,
                                const codec_value_t **out)
{
    const codec_value_t *v = field(map, key);
    *out = NULL;
    if (!v)
        return CODEC_OK;
    if (v->type != CODEC_VALUE_MAP)
        return wrong_type(vd, name, "a map", v);
    *out = v;
    return CODEC_OK;
}

/* "completions[3].command.path": built only on error, as formatting it for every
 * completion would cost more than validating it. */
static const char *cname(char *buf, size_t size, uint32_t idx, const char *suffix)
{
    snprintf(buf, size, "completions[%u]%s", idx, suffix);
    return buf;
}

static codec_err_t parse_completion(validator_t *vd, uint32_t idx, const codec_value_t *v,
                                    codec_completion_t *c)
{
    char name[96];
    codec_err_t err;
    const codec_value_t *f;

    if (v->type != CODEC_VALUE_MAP)
        return wrong_type(vd, cname(name, sizeof(name), idx, ""), "a map", v);

    if ((f = field(v, "createdId"))) {
        if (f->type != CODEC_VALUE_STR)
            return wrong_type(vd, cname(name, sizeof(name), idx, ".createdId"),
                              "a string", f);
        if (is_proto(f))
            return codec_errf(CODEC_ERR_FORBIDDEN_KEY, vd->errstr, vd->errstr_size,
                              "%s: __proto__ is not allowed as an ID",
                              cname(name, sizeof(name), idx, ".createdId"));
        c->created_id = f;
    }

    const codec_value_t *cmd = field(v, "command");
    if (!cmd)
        return missing(vd, cname(name, sizeof(name), idx, ".command"));
    if (cmd->type != CODEC_VALUE_MAP)
        return wrong_type(vd, cname(name, sizeof(name), idx, ".command"), "a map", cmd);

    if (!(f = field(cmd, "action")))
        return missing(vd, cname(name, sizeof(name), idx, ".command.action"));
    if (f->type != CODEC_VALUE_STR)
        return wrong_type(vd, cname(name, sizeof(name), idx, ".command.action"),
                          "a string", f);
    if (f->u.str.len == 6 && !memcmp(f->u.str.ptr, "create", 6))
        c->command.action = CODEC_ACTION_CREATE;
    else if (f->u.str.len == 6 && !memcmp(f->u.str.ptr, "update", 6))
        c->command.action = CODEC_ACTION_UPDATE;
    else if (f->u.str.len == 6 &&
             (!memcmp(f->u.str.ptr, "detete", 6) || !memcmp(f->u.str.ptr, "delete", 6)))
        c->command.action = CODEC_ACTION_DELETE;
    else
        return codec_errf(CODEC_ERR_UNKNOWN_ACTION, vd->errstr, vd->errstr_size,
                          "%s: unknown action \"%.40s\"",
                          cname(name, sizeof(name), idx, ".command.action"),
                          f->u.str.ptr);

    if ((f = field(cmd, "path"))) {
        if (f->type != CODEC_VALUE_ARRAY ||
            f->u.array.len > vd->limits->max_path_length || !path_elements_ok(f)) {
            if ((err =
                     check_path(vd, cname(name, sizeof(name), idx, ".command.path"), f)))
                return err;
        }
        c->command.path = f;
    }
    if ((f = field(cmd, "props"))) {
        if (f->type != CODEC_VALUE_MAP)
            return wrong_type(vd, cname(name, sizeof(name), idx, ".command.props"),
                              "a map", f);
        c->command.props = f;
    }
    if ((f = field(cmd, "parentDefault"))) {
        if (f->type != CODEC_VALUE_MAP)
            return wrong_type(
                vd, cname(name, sizeof(name), idx, ".command.parentDefault"), "a map", f);
        c->command.parent_default = f;
    }
    /* Marks the completion canonical (its bytes can be echoed) with a non-NULL raw;
     * find_raw_completions() then points raw at the bytes. */
    bool canonical = v->u.map.count == 1u + !!c->created_id &&
                     cmd->u.map.count == 1u + !!c->command.path + !!c->command.props +
                                             !!c->command.parent_default &&
                     memcmp(field(cmd, "action")->u.str.ptr, "delete", 6) != 0;
    c->raw = canonical ? "" : NULL;
    return CODEC_OK;
}

/* Points each canonical completion's raw at its bytes inside buf, the record that
 * decoded into req. */
static void find_raw_completions(const char *buf, size_t len, codec_request_t *req)
{
    size_t pos = 0;
    bool is_map;
    uint32_t n;
    if (!codec_msgpack_read_container(buf, len, &pos, &is_map, &n) || !is_map)
        return;
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        uint32_t key_len;
        if (!codec_msgpack_read_str(buf, len, &pos, &key, &key_len))
            return;
        if (key_len != 11 || memcmp(key, "completions", 11) != 0) {
            if (!codec_msgpack_skip(buf, len, &pos))
                return;
            continue;
        }
        uint32_t items;
        if (!codec_msgpack_read_container(buf, len, &pos, &is_map, &items) || is_map ||
            items != req->n_completions)
            return;
        for (uint32_t j = 0; j < items; j++) {
            size_t start = pos;
            if (!codec_msgpack_skip(buf, len, &pos))
                return;
            codec_completion_t *c = &req->completions[j];
            if (c->raw) {
                c->raw = buf + start;
                c->raw_len = (uint32_t)(pos - start);
            }
        }
        return;
    }
}

static codec_err_t validate(codec_value_t *root, msgpack_zone *zone, const char *key,
                            size_t key_len, const codec_limits_t *limits,
                            codec_request_t *req, char *errstr, size_t errstr_size)
{
    validator_t vd = {limits ? limits : &codec_limits_default, errstr, errstr_size};
    codec_err_t err;
    codec_str_t type, model = {0};
    bool has_model_field = false;

    memset(req, 0, sizeof(*req));
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

    /* Identify the sender first so that even a rejection can be answered. */
    if (get_str(&vd, root, "model", false, &model, &has_model_field) == CODEC_OK &&
        has_model_field && !key) {
        req->model = model;
        req->has_model = true;
    }
    codec_str_t client;
    bool present;
    if (get_str(&vd, root, "client", false, &client, &present) == CODEC_OK && present) {
        req->client = client;
        req->has_client = true;
    }
    uint64_t seq;
    if (get_uint(&vd, root, "seq", false, &seq, &present) == CODEC_OK && present) {
        req->seq = seq;
        req->has_seq = true;
    }

    if ((err = get_str(&vd, root, "type", true, &type, NULL)))
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

    if ((err = get_str(&vd, root, "model", !key, &model, NULL)))
        return err;
    if (key && has_model_field &&
        (model.len != key_len || memcmp(model.ptr, key, key_len)))
        return codec_errf(CODEC_ERR_MODEL_MISMATCH, errstr, errstr_size,
                          "model: \"%.40s\" differs from the record key \"%.*s\"",
                          model.ptr, (int)(key_len > 40 ? 40 : key_len), key);
    if ((err = get_str(&vd, root, "client", true, &req->client, NULL)) ||
        (err = get_uint(&vd, root, "seq", true, &req->seq, NULL)))
        return err;

    if (req->type == CODEC_REQUEST_SNAPSHOT)
        return CODEC_OK;
    if ((err = get_uint(&vd, root, "from", true, &req->from, NULL)))
        return err;
    if (req->type == CODEC_REQUEST_HISTORY)
        return get_uint(&vd, root, "to", false, &req->to, &req->has_to);

    if ((err = optional_map(&vd, root, "context", "context", &req->context)))
        return err;
    const codec_value_t *list = field(root, "completions");
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

codec_err_t codec_request_decode(const char *buf, size_t len, const char *key,
                                 size_t key_len, const codec_limits_t *limits,
                                 msgpack_zone *zone, codec_request_t *req, char *errstr,
                                 size_t errstr_size)
{
    codec_value_t *root;
    codec_err_t err =
        zone ? codec_msgpack_decode_zone(zone, buf, len, limits, &root, errstr,
                                         errstr_size)
             : codec_msgpack_decode(buf, len, limits, &root, errstr, errstr_size);
    if (err) {
        memset(req, 0, sizeof(*req));
        if (key) {
            req->model = (codec_str_t){key, key_len};
            req->has_model = true;
        }
        return err;
    }
    err = validate(root, zone, key, key_len, limits, req, errstr, errstr_size);
    if (!err && req->type == CODEC_REQUEST_FLUSH)
        find_raw_completions(buf, len, req);
    return err;
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
