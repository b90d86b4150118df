/* processor/interceptor.c - Lua 5.4 interceptors: loading a script, one Lua state per
 * thread, the budgets, and each call with its lazily made command, context and meta.
 * The sandbox is interceptor_sandbox.c's, the values and the document view
 * interceptor_values.c's. */
#include "interceptor.h"
#include "interceptor_int.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <msgpack.h>
#include <openssl/evp.h>

#include "codec/alloc.h"
#include "codec/msgpack.h"
#include "codec/utf8.h"
#include "log.h"
#include "lua_patterns.h"
#include "metrics.h"

/* The count hook runs every HOOK_EVERY VM instructions (fewer with a smaller budget):
 * often enough that the wall-clock backstop is checked soon even when each
 * instruction compares megabytes of string, rarely enough to cost little. */
#define HOOK_EVERY 250
/* A message a script gives (a rejection, an error) is cut to this many bytes. */
#define MESSAGE_MAX 1024
/* The loaded chunk's registry key. */
static const char CHUNK_KEY;

static _Atomic uint64_t next_generation = 1;
static _Thread_local struct {
    uint64_t generation;
    worker_t *worker;
} thread_worker;

/* ---- budgets ---- */

static void *worker_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    worker_t *w = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        w->mem_used -= old;
        return NULL;
    }
    if (nsize > old) {
        size_t grow = nsize - old;
        if (w->mem_used + grow > w->mem_cap) {
            /* Lua collects and asks again: a later success clears this */
            w->over = OVER_MEMORY;
            w->refused_net = true;
            return NULL;
        }
        if (w->charging) {
            if (w->alloc_used + grow > w->alloc_limit) {
                w->over = OVER_MEMORY;
                return NULL;
            }
            w->alloc_used += grow;
        }
    }
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    if (w->refused_net) { /* the emergency collection made room after all */
        w->refused_net = false;
        w->over = OVER_NONE;
    }
    w->mem_used = w->mem_used - old + nsize;
    return p;
}

worker_t *interceptor_worker(lua_State *L)
{
    return *(worker_t **)lua_getextraspace(L);
}

static bool past(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec > deadline->tv_nsec);
}

void processor_lua_charge(lua_State *L, size_t steps)
{
    worker_t *w = interceptor_worker(L);
    if (!w->charging)
        return;
    w->steps += steps;
    if (w->steps > w->max_steps) {
        w->over = OVER_INSTRUCTIONS;
        luaL_error(L, "the script ran out of its budget of %I instructions",
                   (lua_Integer)w->max_steps);
    }
}

/* The instructions between two runs of the count hook. */
static int hook_interval(const worker_t *w)
{
    return w->max_steps >= HOOK_EVERY ? HOOK_EVERY : w->max_steps ? (int)w->max_steps : 1;
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    worker_t *w = interceptor_worker(L);
    processor_lua_charge(L, (size_t)hook_interval(w));
    /* Work the VM does not count (comparing long strings) is bounded by time. */
    if (w->charging && past(&w->deadline)) {
        w->over = OVER_TIME;
        luaL_error(L, "the script ran for too long");
    }
}

/* Starts charging a run of the script: the instruction budget, the call's allocation
 * and the wall-clock backstop deadline_ms from now. */
static void budget_start(worker_t *w, uint64_t deadline_ms)
{
    w->steps = 0;
    w->max_steps = w->ic->conf.max_instructions;
    w->alloc_used = 0;
    w->over = OVER_NONE;
    w->refused_net = false;
    w->deadline = processor_clock_after_ms(CLOCK_MONOTONIC_COARSE, deadline_ms);
    lua_sethook(w->L, count_hook, LUA_MASKCOUNT, hook_interval(w));
    w->charging = true;
}

static void budget_end(worker_t *w)
{
    w->charging = false;
    lua_sethook(w->L, NULL, 0, 0);
}

/* A fresh global table and a fresh run of the script's top level in it, then its
 * intercept function on the stack. Raises Lua errors: call it protected.
 * @returns the index of the globals. */
static int run_top_level(lua_State *L)
{
    lua_createtable(L, 0, 4);
    int env = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &INTERCEPTOR_ENV_MT_KEY);
    lua_setmetatable(L, env);
    lua_pushvalue(L, env);
    lua_setfield(L, env, "_G");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CHUNK_KEY);
    lua_pushvalue(L, env);
    lua_setupvalue(L, -2, 1); /* a main chunk's only upvalue is _ENV */
    lua_call(L, 0, 0);
    if (lua_getfield(L, env, "intercept") != LUA_TFUNCTION)
        luaL_error(L, "the script defines no function intercept(document, command, "
                      "context, meta)");
    return env;
}

/* ---- one call ---- */

/* The tables made lazily for each call (below). */
enum { LAZY_COMMAND, LAZY_CONTEXT, LAZY_META, LAZY__COUNT };

typedef struct call_s {
    worker_t *w;
    const codec_value_t *document;
    const codec_command_t *command;
    const state_intercept_meta_t *meta;
    codec_value_t *new_props; /* the tree being built: freed by the caller on error */
    bool has_new_props;
    char *rejection;
    bool empty;                   /* a table with neither newProps nor rejection */
    uint64_t filled[LAZY__COUNT]; /* the lazy tables' fields read so far, by index */
} call_t;

/* command, context and meta are tables whose fields are made when first read: most
 * scripts read few of them (many only command.action). Until the script writes to
 * one, iterates it or takes its length, a metatable fills each field on its first
 * read and notes it in the call's bitmask, so that a field the script has since set
 * to nil stays nil; any of those other uses fills every field left and removes the
 * metatable, leaving a plain table. A table cannot outlive its call (nothing survives
 * one), so the call in progress is always its own. */
static const char LAZY_MT_KEYS[LAZY__COUNT];
static const char *const COMMAND_FIELDS[] = {"action", "path", "props", "parentDefault",
                                             NULL};
static const char *const META_FIELDS[] = {"model",        "client",    "seq",
                                          "commandCount", "timestamp", NULL};
/* A context with more entries is filled whole on its first read. */
#define LAZY_CONTEXT_ENTRIES 64

static int field_index(const char *const *names, const char *key, size_t len)
{
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == len && !memcmp(names[i], key, len))
            return i;
    return -1;
}

/* Pushes field i of the kind's table. @returns false (nothing pushed) when the call
 * has no such field. */
static bool push_field(lua_State *L, const call_t *c, int kind, int i)
{
    const codec_request_t *flush = c->meta->flush;
    switch (kind) {
    case LAZY_COMMAND:
        if (i == 0)
            lua_pushstring(L, codec_action_name(c->command->action));
        else if (i == 1)
            interceptor_push_path(L, c->command->path);
        else if (i == 2 && c->command->props)
            interceptor_push_value(L, c->command->props);
        else if (i == 3 && c->command->parent_default)
            interceptor_push_value(L, c->command->parent_default);
        else
            return false;
        return true;
    case LAZY_CONTEXT: {
        uint32_t pos = 0, n = 0;
        const codec_map_entry_t *e;
        while ((e = codec_map_next(flush->context, &pos)) && n++ < (uint32_t)i)
            ;
        if (!e)
            return false;
        interceptor_push_value(L, e->value);
        return true;
    }
    default:
        if (i == 0)
            lua_pushlstring(L, flush->model.ptr, flush->model.len);
        else if (i == 1)
            lua_pushlstring(L, flush->client.ptr, flush->client.len);
        else if (i == 2)
            lua_pushinteger(L, (lua_Integer)flush->seq);
        else if (i == 3)
            lua_pushinteger(L, (lua_Integer)c->meta->command_count);
        else if (i == 4 && flush->timestamp >= 0)
            lua_pushinteger(L, flush->timestamp);
        else
            return false;
        return true;
    }
}

/* Fills every field not read yet and leaves a plain table. */
static void fill_all(lua_State *L, int t, int kind)
{
    call_t *c = interceptor_worker(L)->call;
    luaL_checkstack(L, 4, NULL);
    if (kind == LAZY_CONTEXT) {
        uint32_t pos = 0, i = 0;
        const codec_map_entry_t *e;
        while ((e = codec_map_next(c->meta->flush->context, &pos))) {
            if (i >= LAZY_CONTEXT_ENTRIES || !(c->filled[kind] & (1ull << i))) {
                lua_pushlstring(L, codec_map_entry_key(e), e->key_len);
                interceptor_push_value(L, e->value);
                lua_rawset(L, t);
            }
            i++;
        }
    } else {
        const char *const *names = kind == LAZY_COMMAND ? COMMAND_FIELDS : META_FIELDS;
        for (int i = 0; names[i]; i++)
            if (!(c->filled[kind] & (1ull << i)) && push_field(L, c, kind, i)) {
                lua_pushstring(L, names[i]);
                lua_insert(L, -2);
                lua_rawset(L, t);
            }
    }
    lua_pushnil(L);
    lua_setmetatable(L, t);
}

static int lazy_kind(lua_State *L)
{
    return (int)lua_tointeger(L, lua_upvalueindex(1));
}

static int lazy_index(lua_State *L)
{
    int kind = lazy_kind(L);
    call_t *c = interceptor_worker(L)->call;
    size_t len;
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tolstring(L, 2, &len) : NULL;
    int i = -1;
    if (key && kind == LAZY_CONTEXT) {
        const codec_value_t *ctx = c->meta->flush->context;
        const codec_value_t *v = codec_map_get(ctx, key, len);
        if (v && ctx->u.map.count > LAZY_CONTEXT_ENTRIES) {
            fill_all(L, 1, kind);
            lua_settop(L, 2);
            lua_rawget(L, 1);
            return 1;
        }
        uint32_t pos = 0;
        const codec_map_entry_t *e;
        for (int n = 0; v && (e = codec_map_next(ctx, &pos)); n++)
            if (e->value == v)
                i = n;
    } else if (key) {
        i = field_index(kind == LAZY_COMMAND ? COMMAND_FIELDS : META_FIELDS, key, len);
    }
    if (i < 0 || (c->filled[kind] & (1ull << i)) || !push_field(L, c, kind, i)) {
        lua_pushnil(L);
        return 1;
    }
    c->filled[kind] |= 1ull << i;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

static int lazy_newindex(lua_State *L)
{
    fill_all(L, 1, lazy_kind(L));
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 0;
}

static int lazy_pairs(lua_State *L)
{
    fill_all(L, 1, lazy_kind(L));
    return interceptor_pairs(L);
}

static int lazy_len(lua_State *L)
{
    fill_all(L, 1, lazy_kind(L));
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
    return 1;
}

static void push_lazy(lua_State *L, int kind, int fields)
{
    lua_createtable(L, 0, fields); /* room for them all: no resize when filled */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LAZY_MT_KEYS[kind]);
    lua_setmetatable(L, -2);
}

static void lazy_open(lua_State *L)
{
    for (int kind = 0; kind < LAZY__COUNT; kind++) {
        lua_createtable(L, 0, 5);
        static const luaL_Reg methods[] = {{"__index", lazy_index},
                                           {"__newindex", lazy_newindex},
                                           {"__pairs", lazy_pairs},
                                           {"__len", lazy_len},
                                           {NULL, NULL}};
        lua_pushinteger(L, kind);
        luaL_setfuncs(L, methods, 1);
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
        lua_rawsetp(L, LUA_REGISTRYINDEX, &LAZY_MT_KEYS[kind]);
    }
}

/* Runs in a protected call: everything that may raise a Lua error (memory, budget,
 * the script's own errors) happens here. */
static int call_protected(lua_State *L)
{
    call_t *c = lua_touserdata(L, 1);
    const codec_request_t *flush = c->meta->flush;
    lua_settop(L, 0);
    run_top_level(L); /* for each call: nothing survives one */

    interceptor_push_view(L, c->document);
    push_lazy(L, LAZY_COMMAND, 4);
    if (flush->context)
        push_lazy(L, LAZY_CONTEXT, (int)flush->context->u.map.count);
    else
        lua_pushnil(L);
    push_lazy(L, LAZY_META, 5);
    lua_call(L, 4, 1);

    int result = lua_gettop(L);
    if (lua_isnil(L, result))
        return 0;
    if (!lua_istable(L, result))
        return luaL_error(L, "intercept returned a %s: expected nil or a table",
                          luaL_typename(L, result));
    lua_getfield(L, result, "newProps");
    lua_getfield(L, result, "rejection");
    int new_props = result + 1, rejection = result + 2;
    if (!lua_isnil(L, rejection)) {
        if (lua_type(L, rejection) != LUA_TSTRING)
            return luaL_error(L,
                              "intercept returned a rejection that is a %s, not a "
                              "string",
                              luaL_typename(L, rejection));
        size_t len;
        const char *msg = lua_tolstring(L, rejection, &len);
        if (len > MESSAGE_MAX)
            len = MESSAGE_MAX;
        c->rejection = codec_xmemdup(msg, len);
        codec_utf8_sanitize(c->rejection, len); /* cut inside a character, or not UTF-8 */
    }
    if (!lua_isnil(L, new_props)) {
        if (!lua_istable(L, new_props) && !luaL_testudata(L, new_props, "flushout.view"))
            return luaL_error(L, "intercept returned newProps that is a %s, not a table",
                              luaL_typename(L, new_props));
        /* flushout ignores newProps on a delete (the command fails with the rejection):
         * they are not converted then. */
        if (c->command->action != CODEC_ACTION_DELETE)
            interceptor_to_codec(L, new_props, &c->w->ic->conf.limits,
                                 codec_msgpack_packed_size(c->command->props) +
                                     PROCESSOR_INTERCEPTOR_GROWTH_BYTES,
                                 &c->new_props);
        c->has_new_props = true;
    }
    c->empty = !c->has_new_props && !c->rejection;
    return 0;
}

static void log_failure(const state_intercept_meta_t *meta, const char *message)
{
    const codec_request_t *f = meta->flush;
    if (f->offset >= 0)
        LOG_WARN("interceptor: model " MODEL_FMT " offset %lld: %s",
                 MODEL_ARG(f->model.ptr, f->model.len), (long long)f->offset, message);
    else
        LOG_WARN("interceptor: model " MODEL_FMT " client " MODEL_FMT " seq %llu: %s",
                 MODEL_ARG(f->model.ptr, f->model.len),
                 MODEL_ARG(f->client.ptr, f->client.len), (unsigned long long)f->seq,
                 message);
}

static void reject_with(state_interception_t *out, const char *fmt, const char *detail)
{
    char buf[MESSAGE_MAX + 64];
    snprintf(buf, sizeof(buf), fmt, detail);
    size_t len = strlen(buf);
    codec_utf8_sanitize(buf, len);
    out->kind = STATE_INTERCEPT_REJECT;
    out->message = codec_xmemdup(buf, len);
}

/* ---- workers ---- */

static int setup_protected(lua_State *L);

static worker_t *worker_new(processor_interceptor_t *ic, char *errstr, size_t errstr_size)
{
    worker_t *w = codec_xcalloc(1, sizeof(*w));
    w->ic = ic;
    w->mem_cap = ic->conf.max_memory_bytes;
    w->alloc_limit = ic->conf.max_memory_bytes / 4;
    w->L = lua_newstate(worker_alloc, w);
    if (!w->L) {
        snprintf(errstr, errstr_size, "%s: cannot create a Lua state", ic->path);
        free(w);
        return NULL;
    }
    *(worker_t **)lua_getextraspace(w->L) = w;
    lua_pushcfunction(w->L, setup_protected);
    lua_pushlightuserdata(w->L, ic);
    if (lua_pcall(w->L, 1, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(w->L, -1);
        snprintf(errstr, errstr_size, "%s", msg ? msg : "cannot set the sandbox up");
        lua_close(w->L);
        free(w);
        return NULL;
    }
    lua_gc(w->L, LUA_GCCOLLECT);
    /* Nearly all a call allocates dies with it, and what lives (the libraries) is
     * small and the same from call to call: a cycle once the heap has grown tenfold
     * traverses it rarely (Lua's default is a cycle per doubling). */
    lua_gc(w->L, LUA_GCINC, 1000, 0, 0);
    return w;
}

static void worker_destroy(worker_t *w)
{
    lua_close(w->L);
    free(w);
}

/* A new state's sandbox, metatables and compiled script, in a protected call. */
static int setup_protected(lua_State *L)
{
    processor_interceptor_t *ic = lua_touserdata(L, 1);
    interceptor_sandbox_open(L);
    interceptor_values_open(L);
    lazy_open(L);
    /* The loaded libraries stay reachable only from here. */
    lua_pushnil(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);

    /* Text only: bytecode could break the VM's assumptions. */
    int rc = luaL_loadbufferx(L, ic->source, ic->source_len, ic->chunkname, "t");
    if (rc != LUA_OK)
        return lua_error(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &CHUNK_KEY);
    return 0;
}

static worker_t *thread_worker_get(processor_interceptor_t *ic)
{
    if (thread_worker.generation == ic->generation)
        return thread_worker.worker;
    char errstr[512];
    worker_t *w = worker_new(ic, errstr, sizeof(errstr));
    if (!w)
        return NULL;
    pthread_mutex_lock(&ic->lock);
    w->next = ic->workers;
    ic->workers = w;
    pthread_mutex_unlock(&ic->lock);
    thread_worker.generation = ic->generation;
    thread_worker.worker = w;
    return w;
}

void processor_interceptor_thread_start(processor_interceptor_t *ic)
{
    if (!thread_worker_get(ic))
        LOG_WARN("interceptor %s: no Lua state for this thread (out of memory?); its "
                 "commands will be rejected until one can be made",
                 ic->path);
}

/* ---- the interceptor ---- */

void processor_interceptor_call(void *opaque, const codec_value_t *document,
                                const codec_command_t *command,
                                const state_intercept_meta_t *meta,
                                state_interception_t *out)
{
    processor_interceptor_t *ic = opaque;
    atomic_fetch_add_explicit(&ic->calls, 1, memory_order_relaxed);
    worker_t *w = thread_worker_get(ic);
    if (!w) { /* only if memory ran out: fail closed */
        atomic_fetch_add_explicit(&ic->errors, 1, memory_order_relaxed);
        reject_with(out, "interceptor error: %s", "no Lua state could be created");
        log_failure(meta, "no Lua state could be created");
        return;
    }
    lua_State *L = w->L;
    call_t c = {.w = w, .document = document, .command = command, .meta = meta};
    w->call = &c;
    w->call_id++;
    uint64_t ms = ic->conf.max_instructions / 1000; /* one µs per instruction */
    budget_start(w, ms < 100 ? 100 : ms);
    lua_pushcfunction(L, call_protected);
    lua_pushlightuserdata(L, &c);
    int rc = lua_pcall(L, 1, 0, 0);
    w->call = NULL;
    budget_end(w);

    if (rc != LUA_OK) {
        char msg[MESSAGE_MAX];
        const char *detail;
        if (w->over == OVER_MEMORY) {
            snprintf(msg, sizeof(msg),
                     "the script used more memory than allowed (%zu bytes per call, "
                     "%zu per state)",
                     w->alloc_limit, w->mem_cap);
            detail = msg;
            atomic_fetch_add_explicit(&ic->over_memory, 1, memory_order_relaxed);
        } else {
            detail = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                    : "an error value that is not a "
                                                      "string";
            snprintf(msg, sizeof(msg), "%s", detail);
            detail = msg;
            if (w->over == OVER_INSTRUCTIONS || w->over == OVER_TIME)
                atomic_fetch_add_explicit(&ic->over_instructions, 1,
                                          memory_order_relaxed);
        }
        atomic_fetch_add_explicit(&ic->errors, 1, memory_order_relaxed);
        codec_value_destroy(c.new_props);
        free(c.rejection);
        reject_with(out, "interceptor error: %s", detail);
        log_failure(meta, out->message);
    } else if (c.has_new_props && command->action != CODEC_ACTION_DELETE) {
        atomic_fetch_add_explicit(&ic->new_props, 1, memory_order_relaxed);
        out->kind = STATE_INTERCEPT_REPLACE_PROPS;
        out->new_props = c.new_props;
        free(c.rejection);
    } else if (c.rejection) {
        atomic_fetch_add_explicit(&ic->rejections, 1, memory_order_relaxed);
        out->kind = STATE_INTERCEPT_REJECT;
        out->message = c.rejection;
    } else if (c.has_new_props || c.empty) {
        /* flushout fails the command with an undefined message here */
        atomic_fetch_add_explicit(&ic->rejections, 1, memory_order_relaxed);
        reject_with(out, "%s",
                    c.has_new_props ? "the interceptor gave newProps to a delete"
                                    : "the interceptor returned neither newProps nor "
                                      "rejection");
    }
    lua_settop(L, 0);
}

static int load_protected(lua_State *L)
{
    run_top_level(L);
    return 0;
}

processor_interceptor_t *
processor_interceptor_load(const processor_interceptor_conf_t *conf, char *errstr,
                           size_t errstr_size)
{
    FILE *fp = fopen(conf->path, "rb");
    if (!fp) {
        snprintf(errstr, errstr_size, "%s: %s", conf->path, strerror(errno));
        return NULL;
    }
    processor_interceptor_t *ic = codec_xcalloc(1, sizeof(*ic));
    ic->conf = *conf;
    ic->path = codec_xmemdup(conf->path, strlen(conf->path));
    ic->conf.path = ic->path;
    const char *base = strrchr(conf->path, '/');
    base = base ? base + 1 : conf->path;
    ic->chunkname = codec_xmalloc(strlen(base) + 2);
    sprintf(ic->chunkname, "@%s", base);
    size_t cap = 4096;
    ic->source = codec_xmalloc(cap);
    size_t n;
    while ((n = fread(ic->source + ic->source_len, 1, cap - ic->source_len, fp)) > 0) {
        ic->source_len += n;
        if (ic->source_len == cap)
            ic->source = codec_xrealloc(ic->source, cap *= 2);
    }
    bool failed = ferror(fp);
    fclose(fp);
    if (failed) {
        snprintf(errstr, errstr_size, "%s: cannot be read", conf->path);
        processor_interceptor_destroy(ic);
        return NULL;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_Digest(ic->source, ic->source_len, md, &md_len, EVP_sha256(), NULL);
    for (unsigned i = 0; i < md_len && i < 32; i++)
        sprintf(ic->sha256 + 2 * i, "%02x", md[i]);
    ic->generation = atomic_fetch_add(&next_generation, 1);
    pthread_mutex_init(&ic->lock, NULL);

    /* A first state proves the script loads and defines intercept. */
    char why[512];
    worker_t *w = worker_new(ic, why, sizeof(why));
    if (!w) {
        snprintf(errstr, errstr_size, "interceptor %s", why);
        processor_interceptor_destroy(ic);
        return NULL;
    }
    w->next = ic->workers;
    ic->workers = w;
    /* The top level runs once here, within a call's budget (and 10 s of clock). */
    lua_State *L = w->L;
    lua_settop(L, 0);
    budget_start(w, 10000);
    lua_pushcfunction(L, load_protected);
    int rc = lua_pcall(L, 0, 0, 0);
    budget_end(w);
    if (rc != LUA_OK) {
        snprintf(errstr, errstr_size, "interceptor %s: %s", conf->path,
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                : "the script raised an error");
        processor_interceptor_destroy(ic);
        return NULL;
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    thread_worker.generation = ic->generation; /* the loading thread keeps this one */
    thread_worker.worker = w;
    return ic;
}

void processor_interceptor_destroy(processor_interceptor_t *ic)
{
    if (!ic)
        return;
    worker_t *w = ic->workers;
    while (w) {
        worker_t *next = w->next;
        worker_destroy(w);
        w = next;
    }
    if (ic->generation)
        pthread_mutex_destroy(&ic->lock);
    free(ic->path);
    free(ic->chunkname);
    free(ic->source);
    free(ic);
}

const char *processor_interceptor_sha256(const processor_interceptor_t *ic)
{
    return ic->sha256;
}

void processor_interceptor_stats(const processor_interceptor_t *ic,
                                 processor_interceptor_stats_t *stats)
{
    processor_interceptor_t *m = (processor_interceptor_t *)ic;
    stats->calls = atomic_load(&m->calls);
    stats->new_props = atomic_load(&m->new_props);
    stats->rejections = atomic_load(&m->rejections);
    stats->errors = atomic_load(&m->errors);
    stats->over_instructions = atomic_load(&m->over_instructions);
    stats->over_memory = atomic_load(&m->over_memory);
}
