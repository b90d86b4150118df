/* processor/interceptor.c - Lua 5.4 interceptors: the sandbox, the budgets, the
 * values both ways and the lazy read-only document view. */
#include "interceptor.h"

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

/* The count hook runs every HOOK_EVERY VM instructions (fewer with a smaller budget):
 * often enough to stop a loop soon, rarely enough to cost nothing. */
#define HOOK_EVERY 1000
/* A message a script gives (a rejection, an error) is cut to this many bytes. */
#define MESSAGE_MAX 1024
/* Levels above a command's props in a request (request, completions, completion,
 * command): newProps may nest as deep as props could (codec/error.h, max_depth). */
#define PROPS_DEPTH_IN_REQUEST 4

/* Registry keys: the addresses of these are unique. */
static const char ENV_MT_KEY, SANDBOX_KEY, VIEW_MT_KEY, ARRAY_MT_KEY, CHUNK_KEY;

typedef enum over_e { OVER_NONE, OVER_INSTRUCTIONS, OVER_MEMORY, OVER_TIME } over_t;

/* One Lua state, used by one thread at a time. */
typedef struct worker_s {
    processor_interceptor_t *ic;
    lua_State *L;
    size_t mem_used, mem_cap;
    /* @locality the call in progress */
    bool charging;     /* a call is running: allocations count against it */
    size_t alloc_used; /* bytes allocated by this call */
    size_t alloc_limit;
    uint64_t steps; /* instructions and pattern steps charged to this call */
    uint64_t max_steps;
    struct timespec deadline; /* the wall-clock backstop (see INTERCEPTORS.md) */
    over_t over;
    uint64_t call_id; /* views of an earlier call refuse to be read */
    struct worker_s *next;
} worker_t;

struct processor_interceptor_s {
    processor_interceptor_conf_t conf;
    char *path;
    char *chunkname; /* "@" and the file's base name: messages do not depend on where
                      * the file is deployed */
    char *source;
    size_t source_len;
    char sha256[65];
    uint64_t generation;  /* tells a thread's cached worker from a freed one's */
    pthread_mutex_t lock; /* workers: taken once per thread, at its first call */
    worker_t *workers;
    _Atomic uint64_t calls, new_props, rejections, errors, over_instructions, over_memory;
};

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
            w->over = OVER_MEMORY;
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
    w->mem_used = w->mem_used - old + nsize;
    return p;
}

static worker_t *worker_of(lua_State *L)
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
    worker_t *w = worker_of(L);
    if (!w->charging)
        return;
    w->steps += steps;
    if (w->steps > w->max_steps) {
        w->over = OVER_INSTRUCTIONS;
        luaL_error(L, "the script ran out of its budget of %llu instructions",
                   (unsigned long long)w->max_steps);
    }
}

static void count_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    worker_t *w = worker_of(L);
    int every = w->max_steps < HOOK_EVERY ? (int)w->max_steps : HOOK_EVERY;
    processor_lua_charge(L, (size_t)(every ? every : 1));
    /* Work the VM does not count (comparing long strings) is bounded by time. */
    if (w->charging && past(&w->deadline)) {
        w->over = OVER_TIME;
        luaL_error(L, "the script ran for too long");
    }
}

/* ---- the sandbox's own functions ---- */

static int read_only(lua_State *L)
{
    return luaL_error(L, "this table is read-only");
}

/* tostring without addresses: "table", not "table: 0x55d...". */
static int sandbox_tostring(lua_State *L)
{
    luaL_checkany(L, 1);
    int t = lua_type(L, 1);
    if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA || t == LUA_TTHREAD ||
        t == LUA_TLIGHTUSERDATA) {
        if (luaL_callmeta(L, 1, "__tostring")) {
            if (!lua_isstring(L, -1))
                return luaL_error(L, "'__tostring' must return a string");
            return 1;
        }
        lua_pushstring(L, t == LUA_TUSERDATA && luaL_getmetafield(L, 1, "__name")
                              ? lua_tostring(L, -1)
                              : lua_typename(L, t));
        return 1;
    }
    luaL_tolstring(L, 1, NULL);
    return 1;
}

/* string.format without %p and without addresses for %s of a table. */
static int sandbox_format(lua_State *L)
{
    size_t len;
    const char *fmt = luaL_checklstring(L, 1, &len);
    for (size_t i = 0; i + 1 < len; i++) {
        if (fmt[i] != '%')
            continue;
        size_t j = i + 1;
        while (j < len && strchr("-+ #0123456789.", fmt[j]))
            j++;
        if (j < len && fmt[j] == 'p')
            return luaL_error(L, "string.format: %%p is not available to interceptors");
        i = j;
    }
    int n = lua_gettop(L);
    for (int i = 2; i <= n; i++) {
        int t = lua_type(L, i);
        if (t != LUA_TNUMBER && t != LUA_TSTRING) {
            lua_pushcfunction(L, sandbox_tostring);
            lua_pushvalue(L, i);
            lua_call(L, 1, 1);
            lua_replace(L, i);
        }
    }
    lua_pushvalue(L, lua_upvalueindex(1)); /* Lua's string.format */
    lua_insert(L, 1);
    lua_call(L, n, 1);
    return 1;
}

/* Wraps a C function that scans its first (string) argument without allocating
 * (utf8.len, tonumber...): the scan is charged. */
static int charged_scan(lua_State *L)
{
    size_t len = 0;
    if (lua_type(L, 1) == LUA_TSTRING)
        lua_tolstring(L, 1, &len);
    processor_lua_charge(L, 1 + len / 16);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* pcall and xpcall that cannot catch a spent budget: a script that called pcall in a
 * loop could otherwise catch the budget's error for ever. */
static int protected_result(lua_State *L, int status, int base)
{
    if (status != LUA_OK && worker_of(L)->over != OVER_NONE)
        return lua_error(L);
    lua_pushboolean(L, status == LUA_OK);
    lua_insert(L, base);
    return lua_gettop(L) - base + 1;
}

static int sandbox_pcall(lua_State *L)
{
    luaL_checkany(L, 1);
    return protected_result(L, lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0), 1);
}

static int sandbox_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 1); /* f, handler, args..., f */
    lua_rotate(L, 3, 1); /* f, handler, f, args... */
    return protected_result(L, lua_pcall(L, n - 2, LUA_MULTRET, 2), 3);
}

/* Wraps a C function whose work is its results (string.byte, utf8.codepoint,
 * table.unpack): they are charged once counted (Lua bounds them by its stack). */
static int charged_results(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    processor_lua_charge(L, (size_t)lua_gettop(L));
    return lua_gettop(L);
}

/* table.move(a1, f, e, t): charged its length up front (moving nils allocates
 * nothing, so nothing else would count it). */
static int charged_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f)
        processor_lua_charge(L, (size_t)((lua_Unsigned)e - (lua_Unsigned)f) + 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* setmetatable, refusing what makes outcomes depend on when the collector runs. */
static int sandbox_setmetatable(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TTABLE) {
        if (lua_getfield(L, 2, "__gc") != LUA_TNIL)
            return luaL_error(L, "setmetatable: __gc is not available to interceptors");
        if (lua_getfield(L, 2, "__mode") != LUA_TNIL)
            return luaL_error(L, "setmetatable: weak tables (__mode) are not available "
                                 "to interceptors");
        lua_pop(L, 2);
    }
    lua_pushvalue(L, lua_upvalueindex(1)); /* Lua's setmetatable */
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

/* Keys in a deterministic order: Lua's own next() depends on a per-state hash seed. */
enum { KEY_NUMBER, KEY_STRING, KEY_BOOLEAN }; /* the order of kinds of key */
typedef struct sort_key_s {
    int type; /* KEY_* */
    lua_Number num;
    const char *str;
    size_t len;
    int idx; /* in the keys table */
} sort_key_t;

static int key_compare(const void *pa, const void *pb)
{
    const sort_key_t *a = pa, *b = pb;
    if (a->type != b->type)
        return a->type < b->type ? -1 : 1;
    if (a->type == KEY_STRING) {
        size_t n = a->len < b->len ? a->len : b->len;
        int c = memcmp(a->str, b->str, n);
        return c ? c : (a->len > b->len) - (a->len < b->len);
    }
    return (a->num > b->num) - (a->num < b->num); /* numbers, booleans */
}

static int ordered_next(lua_State *L)
{
    /* upvalues: the table, the sorted keys (a sequence), the position */
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(3)) + 1;
    if (lua_rawgeti(L, lua_upvalueindex(2), i) == LUA_TNIL)
        return 1;
    lua_pushinteger(L, i);
    lua_replace(L, lua_upvalueindex(3));
    lua_pushvalue(L, -1);
    lua_rawget(L, lua_upvalueindex(1));
    return 2;
}

/* pairs: a metatable's __pairs when there is one, else the keys in a fixed order:
 * numbers ascending, then strings bytewise, then false and true. */
static int sandbox_pairs(lua_State *L)
{
    luaL_checkany(L, 1);
    if (luaL_getmetafield(L, 1, "__pairs") != LUA_TNIL) {
        lua_pushvalue(L, 1);
        lua_call(L, 1, 3);
        return 3;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t n = 0;
    lua_createtable(L, 16, 0); /* the keys, in the order next() gives them */
    int keys = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        int t = lua_type(L, -1);
        if (t != LUA_TNUMBER && t != LUA_TSTRING && t != LUA_TBOOLEAN)
            return luaL_error(L, "pairs: a table with %s keys has no fixed order",
                              lua_typename(L, t));
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, (lua_Integer)++n);
    }
    processor_lua_charge(L, n * 4);
    sort_key_t *sorted = lua_newuserdatauv(L, n ? n * sizeof(*sorted) : 1, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, keys, (lua_Integer)i + 1);
        sort_key_t *k = &sorted[i];
        k->type = lua_type(L, -1) == LUA_TNUMBER   ? KEY_NUMBER
                  : lua_type(L, -1) == LUA_TSTRING ? KEY_STRING
                                                   : KEY_BOOLEAN;
        k->idx = (int)i + 1;
        if (k->type == KEY_NUMBER)
            k->num = lua_tonumber(L, -1);
        else if (k->type == KEY_STRING)
            k->str = lua_tolstring(L, -1, &k->len); /* kept alive by keys */
        else
            k->num = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    qsort(sorted, n, sizeof(*sorted), key_compare);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, keys, sorted[i].idx);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushvalue(L, 1);
    lua_insert(L, -2);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, ordered_next, 3);
    lua_pushnil(L);
    lua_pushnil(L);
    return 3;
}

/* flushout.array(t): marks t to be stored as an array, even when empty. */
static int sandbox_array(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ARRAY_MT_KEY);
    lua_setmetatable(L, 1);
    lua_settop(L, 1);
    return 1;
}

/* A read-only proxy of the table at idx: reads go through, writes fail. */
static void push_proxy(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, read_only);
    lua_setfield(L, -2, "__newindex");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

/* Copies the named fields of the table at from into the table at to. */
static void copy_fields(lua_State *L, int from, int to, const char *const *names)
{
    for (; *names; names++) {
        lua_getfield(L, from, *names);
        lua_setfield(L, to, *names);
    }
}

static void wrap(lua_State *L, int table, const char *name, lua_CFunction fn)
{
    lua_getfield(L, table, name);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, table, name);
}

/* ---- the document view: reads cost what they read ---- */

typedef struct view_s {
    const codec_value_t *v; /* a map or an array */
    uint64_t call_id;
} view_t;

static void push_value(lua_State *L, const codec_value_t *v, int depth);

static void push_view(lua_State *L, const codec_value_t *v)
{
    view_t *view = lua_newuserdatauv(L, sizeof(*view), 0);
    view->v = v;
    view->call_id = worker_of(L)->call_id;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &VIEW_MT_KEY);
    lua_setmetatable(L, -2);
}

static const codec_value_t *check_view(lua_State *L, int idx)
{
    view_t *view = luaL_checkudata(L, idx, "flushout.view");
    if (view->call_id != worker_of(L)->call_id)
        luaL_error(L, "a document view is only valid during the call it was given to");
    return view->v;
}

/* Scalars become Lua values; maps and arrays become views of their own. */
static void push_document_value(lua_State *L, const codec_value_t *v)
{
    if (v->type == CODEC_VALUE_MAP || v->type == CODEC_VALUE_ARRAY)
        push_view(L, v);
    else
        push_value(L, v, 0);
}

static int view_index(lua_State *L)
{
    const codec_value_t *v = check_view(L, 1);
    const codec_value_t *item = NULL;
    if (v->type == CODEC_VALUE_MAP) {
        size_t len;
        const char *key = lua_tolstring(L, 2, &len);
        if (key && lua_type(L, 2) == LUA_TSTRING)
            item = codec_map_get(v, key, len);
    } else {
        int isnum;
        lua_Integer i = lua_tointegerx(L, 2, &isnum);
        if (isnum && i >= 1 && (uint64_t)i <= v->u.array.len)
            item = v->u.array.items[i - 1];
    }
    if (item)
        push_document_value(L, item);
    else
        lua_pushnil(L);
    return 1;
}

static int view_len(lua_State *L)
{
    const codec_value_t *v = check_view(L, 1);
    lua_pushinteger(L, v->type == CODEC_VALUE_ARRAY ? (lua_Integer)v->u.array.len : 0);
    return 1;
}

static int view_next(lua_State *L)
{
    const codec_value_t *v = check_view(L, 1);
    lua_Integer pos = lua_tointeger(L, lua_upvalueindex(1));
    if (v->type == CODEC_VALUE_ARRAY) {
        if ((uint64_t)pos >= v->u.array.len)
            return 0;
        lua_pushinteger(L, pos + 1);
        lua_replace(L, lua_upvalueindex(1));
        lua_pushinteger(L, pos + 1);
        push_document_value(L, v->u.array.items[pos]);
        return 2;
    }
    uint32_t p = (uint32_t)pos;
    const codec_map_entry_t *e = codec_map_next(v, &p);
    if (!e)
        return 0;
    lua_pushinteger(L, p);
    lua_replace(L, lua_upvalueindex(1));
    lua_pushlstring(L, codec_map_entry_key(e), e->key_len);
    push_document_value(L, e->value);
    return 2;
}

/* pairs(view): entries in the document's order (arrays: 1..n). */
static int view_pairs(lua_State *L)
{
    check_view(L, 1);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, view_next, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static int view_tostring(lua_State *L)
{
    const codec_value_t *v = check_view(L, 1);
    lua_pushstring(L, v->type == CODEC_VALUE_MAP ? "document view (map)"
                                                 : "document view (array)");
    return 1;
}

static int view_newindex(lua_State *L)
{
    return luaL_error(L, "the document is read-only: return newProps instead");
}

/* ---- values: codec to Lua ---- */

/* Maps become tables with string keys, arrays sequences marked with the array
 * metatable (so that an empty one stays an array), nil absent, binaries strings. */
static void push_value(lua_State *L, const codec_value_t *v, int depth)
{
    luaL_checkstack(L, 4, "a value nested too deep");
    switch (v->type) {
    case CODEC_VALUE_NIL:
        lua_pushnil(L);
        break;
    case CODEC_VALUE_BOOL:
        lua_pushboolean(L, v->u.b);
        break;
    case CODEC_VALUE_INT:
        lua_pushinteger(L, v->u.i);
        break;
    case CODEC_VALUE_FLOAT:
        lua_pushnumber(L, v->u.f);
        break;
    case CODEC_VALUE_STR:
    case CODEC_VALUE_BIN:
        lua_pushlstring(L, v->u.str.ptr, v->u.str.len);
        break;
    case CODEC_VALUE_ARRAY:
        lua_createtable(L, (int)v->u.array.len, 0);
        for (uint32_t i = 0; i < v->u.array.len; i++) {
            push_value(L, v->u.array.items[i], depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_rawgetp(L, LUA_REGISTRYINDEX, &ARRAY_MT_KEY);
        lua_setmetatable(L, -2);
        break;
    case CODEC_VALUE_MAP: {
        lua_createtable(L, 0, (int)v->u.map.count);
        uint32_t pos = 0;
        const codec_map_entry_t *e;
        while ((e = codec_map_next(v, &pos))) {
            lua_pushlstring(L, codec_map_entry_key(e), e->key_len);
            push_value(L, e->value, depth + 1);
            lua_rawset(L, -3);
        }
        break;
    }
    }
}

static void push_path(lua_State *L, const codec_value_t *path)
{
    if (path)
        push_value(L, path, 0);
    else
        lua_createtable(L, 0, 0);
}

/* ---- values: Lua to codec, for newProps ---- */

typedef struct to_codec_s {
    lua_State *L;
    const codec_limits_t *limits;
    uint32_t max_depth;
    size_t bytes, max_bytes; /* packed size so far, and the most allowed */
} to_codec_t;

static void charge_bytes(to_codec_t *tc, size_t n)
{
    tc->bytes += n;
    if (tc->bytes > tc->max_bytes)
        luaL_error(tc->L,
                   "newProps would be more than %zu bytes, %d more than the props it "
                   "replaces",
                   tc->max_bytes, PROCESSOR_INTERCEPTOR_GROWTH_BYTES);
}

static void check_string(to_codec_t *tc, const char *s, size_t len, const char *what)
{
    if (len > tc->limits->max_string_bytes)
        luaL_error(tc->L, "newProps: a %s of %zu bytes is over --max-string-bytes %u",
                   what, len, tc->limits->max_string_bytes);
    if (!codec_utf8_valid(s, len))
        luaL_error(tc->L, "newProps: a %s is not valid UTF-8", what);
    charge_bytes(tc, len + 5);
}

static codec_value_t *string_value(to_codec_t *tc, int idx, const char *what)
{
    size_t len;
    const char *s = lua_tolstring(tc->L, idx, &len);
    check_string(tc, s, len, what);
    return codec_value_str(s, len);
}

/* The table at idx as an array: a sequence 1..n with no other keys, or anything
 * marked by flushout.array(). @returns its length, or -1 when it is a map. */
static lua_Integer array_length(lua_State *L, int idx)
{
    bool marked = false;
    if (lua_getmetatable(L, idx)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &ARRAY_MT_KEY);
        marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
    }
    lua_Integer n = 0, count = 0;
    bool strings = false, others = false;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        count++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            strings = true;
        } else if (lua_isinteger(L, -1)) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k > n)
                n = k;
        } else {
            others = true;
        }
    }
    if (others)
        luaL_error(L, "newProps: a table key must be a string (or a sequence's index)");
    if (strings && count != (lua_Integer)0 && (n > 0 || marked))
        luaL_error(L, "newProps: a table mixes string keys with array items");
    if (strings)
        return -1;
    if (n != count)
        luaL_error(L,
                   "newProps: an array has holes (nil items): %lld items up to "
                   "index %lld",
                   (long long)count, (long long)n);
    return count == 0 && !marked ? -1 : n; /* {} is an empty map */
}

static codec_value_t *to_codec(to_codec_t *tc, int idx, int depth, codec_value_t **slot);

/* Fills the container *slot (already linked into the tree) from the table at idx. */
static void table_to_codec(to_codec_t *tc, int idx, int depth, lua_Integer n,
                           codec_value_t *c)
{
    lua_State *L = tc->L;
    if (c->type == CODEC_VALUE_ARRAY) {
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            codec_array_push(c, codec_value_nil());
            to_codec(tc, lua_gettop(L), depth + 1, &c->u.array.items[i - 1]);
            lua_pop(L, 1);
        }
        return;
    }
    /* Map keys in a fixed order (Lua's own is per state): sorted bytewise. */
    lua_pushcfunction(L, sandbox_pairs);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 3);
    int iter = lua_gettop(L) - 2;
    for (;;) {
        lua_pushvalue(L, iter);
        lua_pushvalue(L, iter + 1);
        lua_pushvalue(L, iter + 2);
        lua_call(L, 2, 2);
        if (lua_isnil(L, -2)) {
            lua_pop(L, 2);
            break;
        }
        lua_pushvalue(L, -2);
        lua_replace(L, iter + 2);
        size_t len;
        const char *key = lua_tolstring(L, -2, &len);
        check_string(tc, key, len, "key");
        codec_map_set(c, key, len, codec_value_nil());
        to_codec(tc, lua_gettop(L), depth + 1,
                 &c->u.map.entries[c->u.map.used - 1].value);
        lua_pop(L, 2);
    }
    lua_pop(L, 3);
}

/* Converts the value at idx into *slot (which holds a placeholder owned by the tree,
 * so that an error half-way leaves a tree the caller can free). */
static codec_value_t *to_codec(to_codec_t *tc, int idx, int depth, codec_value_t **slot)
{
    lua_State *L = tc->L;
    luaL_checkstack(L, 8, "newProps nested too deep");
    if (depth > (int)tc->max_depth)
        luaL_error(L, "newProps: nested deeper than --max-depth allows (%u levels)",
                   tc->max_depth);
    codec_value_t *v = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        v = codec_value_bool(lua_toboolean(L, idx));
        charge_bytes(tc, 1);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v = codec_value_int(lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            if (!isfinite(d))
                luaL_error(L, "newProps: a number is not finite (%f)", d);
            /* As JavaScript's msgpack encoders write an integral number. */
            if (d == floor(d) && fabs(d) <= 9007199254740991.0 && !(d == 0 && signbit(d)))
                v = codec_value_int((int64_t)d);
            else
                v = codec_value_float(d);
        }
        charge_bytes(tc, 9);
        break;
    case LUA_TSTRING:
        v = string_value(tc, idx, "string");
        break;
    case LUA_TUSERDATA: {
        view_t *view = luaL_testudata(L, idx, "flushout.view");
        if (!view)
            luaL_error(L, "newProps: a userdata cannot be stored");
        const codec_value_t *src = check_view(L, idx);
        size_t size = 0;
        codec_value_t *copy = codec_value_copy(src);
        codec_value_destroy(*slot);
        *slot = copy; /* linked before measuring: an error frees it with the tree */
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        codec_msgpack_pack_value(&pk, copy);
        size = sb.size;
        msgpack_sbuffer_destroy(&sb);
        charge_bytes(tc, size);
        return copy;
    }
    case LUA_TTABLE: {
        lua_Integer n = array_length(L, idx);
        charge_bytes(tc, 5);
        v = n >= 0 ? codec_value_array((uint32_t)n) : codec_value_map(0);
        codec_value_destroy(*slot);
        *slot = v;
        table_to_codec(tc, idx, depth, n, v);
        return v;
    }
    case LUA_TNIL:
        v = codec_value_nil();
        charge_bytes(tc, 1);
        break;
    default:
        luaL_error(L, "newProps: a %s cannot be stored", luaL_typename(L, idx));
    }
    codec_value_destroy(*slot);
    *slot = v;
    return v;
}

/* ---- one call ---- */

typedef struct call_s {
    worker_t *w;
    const codec_value_t *document;
    const codec_command_t *command;
    const state_intercept_meta_t *meta;
    codec_value_t *new_props; /* the tree being built: freed by the caller on error */
    bool has_new_props;
    char *rejection;
    bool empty; /* a table with neither newProps nor rejection */
} call_t;

static const char *action_name(codec_action_t action)
{
    switch (action) {
    case CODEC_ACTION_CREATE:
        return "create";
    case CODEC_ACTION_UPDATE:
        return "update";
    case CODEC_ACTION_DELETE:
        return "detete"; /* flushout@1.1.1's CommandAction.Delete, as on the wire */
    }
    return "unknown";
}

static size_t packed_size(const codec_value_t *v)
{
    if (!v)
        return 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, v);
    size_t size = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return size;
}

/* Runs in a protected call: everything that may raise a Lua error (memory, budget,
 * the script's own errors) happens here. */
static int call_protected(lua_State *L)
{
    call_t *c = lua_touserdata(L, 1);
    const codec_request_t *flush = c->meta->flush;
    lua_settop(L, 0);

    /* A fresh global table and a fresh run of the chunk's top level for each call. */
    lua_createtable(L, 0, 4);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ENV_MT_KEY);
    lua_setmetatable(L, 1);
    lua_pushvalue(L, 1);
    lua_setfield(L, 1, "_G");
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CHUNK_KEY);
    lua_pushvalue(L, 1);
    lua_setupvalue(L, 2, 1); /* a main chunk's only upvalue is _ENV */
    lua_call(L, 0, 0);
    if (lua_getfield(L, 1, "intercept") != LUA_TFUNCTION)
        return luaL_error(L, "the script defines no function intercept");

    push_view(L, c->document);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, action_name(c->command->action));
    lua_setfield(L, -2, "action");
    push_path(L, c->command->path);
    lua_setfield(L, -2, "path");
    if (c->command->props) {
        push_value(L, c->command->props, 0);
        lua_setfield(L, -2, "props");
    }
    if (c->command->parent_default) {
        push_value(L, c->command->parent_default, 0);
        lua_setfield(L, -2, "parentDefault");
    }
    if (flush->context)
        push_value(L, flush->context, 0);
    else
        lua_pushnil(L);
    lua_createtable(L, 0, 5);
    lua_pushlstring(L, flush->model.ptr, flush->model.len);
    lua_setfield(L, -2, "model");
    lua_pushlstring(L, flush->client.ptr, flush->client.len);
    lua_setfield(L, -2, "client");
    lua_pushinteger(L, (lua_Integer)flush->seq);
    lua_setfield(L, -2, "seq");
    lua_pushinteger(L, (lua_Integer)c->meta->command_count);
    lua_setfield(L, -2, "commandCount");
    if (flush->timestamp >= 0) {
        lua_pushinteger(L, flush->timestamp);
        lua_setfield(L, -2, "timestamp");
    }
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
        if (c->command->action != CODEC_ACTION_DELETE) {
            to_codec_t tc = {L, &c->w->ic->conf.limits, 0, 0, 0};
            uint32_t max_depth = c->w->ic->conf.limits.max_depth;
            tc.max_depth = max_depth > PROPS_DEPTH_IN_REQUEST
                               ? max_depth - PROPS_DEPTH_IN_REQUEST - 1
                               : 0;
            tc.max_bytes =
                packed_size(c->command->props) + PROCESSOR_INTERCEPTOR_GROWTH_BYTES;
            c->new_props = codec_value_nil();
            to_codec(&tc, new_props, 0, &c->new_props);
            if (c->new_props->type != CODEC_VALUE_MAP)
                return luaL_error(L, "intercept returned newProps that is an array, not "
                                     "a map");
        }
        c->has_new_props = true;
    }
    c->empty = !c->has_new_props && !c->rejection;
    return 0;
}

static void log_failure(const worker_t *w, const state_intercept_meta_t *meta,
                        const char *message)
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
    (void)w;
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
    return w;
}

static void worker_destroy(worker_t *w)
{
    lua_close(w->L);
    free(w);
}

/* The base library functions a script may use; next() is left out (its order
 * depends on the state), and so is everything that reaches outside (print, load,
 * dofile, require, collectgarbage) or changes tables behind metatables (rawset). */
static const char *const BASE_FUNCTIONS[] = {
    "assert", "error", "ipairs",       "rawequal", "rawget", "rawlen",
    "select", "type",  "getmetatable", "_VERSION", NULL};
static const char *const STRING_FUNCTIONS[] = {
    "byte",    "char", "len",    "lower", "pack",   "packsize", "rep",
    "reverse", "sub",  "unpack", "upper", "format", NULL};
static const char *const TABLE_FUNCTIONS[] = {"concat", "insert", "move",   "pack",
                                              "remove", "sort",   "unpack", NULL};
static const char *const MATH_FUNCTIONS[] = {
    "abs", "ceil",       "cos",  "deg",        "exp",  "floor", "fmod", "huge", "log",
    "max", "maxinteger", "min",  "mininteger", "modf", "pi",    "rad",  "sin",  "sqrt",
    "tan", "tointeger",  "type", "ult",        "acos", "asin",  "atan", NULL};
static const char *const UTF8_FUNCTIONS[] = {"char", "charpattern", "codes", "codepoint",
                                             "len",  "offset",      NULL};

static int setup_protected(lua_State *L)
{
    processor_interceptor_t *ic = lua_touserdata(L, 1);
    luaL_requiref(L, "_G", luaopen_base, 0);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 0);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 0);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 0);
    int base = 2, str = 3, tab = 4, math = 5, utf8 = 6;

    lua_newtable(L); /* the sandbox's globals */
    int sandbox = lua_gettop(L);
    copy_fields(L, base, sandbox, BASE_FUNCTIONS);
    lua_pushcfunction(L, sandbox_pairs);
    lua_setfield(L, sandbox, "pairs");
    lua_pushcfunction(L, sandbox_tostring);
    lua_setfield(L, sandbox, "tostring");
    lua_pushcfunction(L, sandbox_pcall);
    lua_setfield(L, sandbox, "pcall");
    lua_pushcfunction(L, sandbox_xpcall);
    lua_setfield(L, sandbox, "xpcall");
    lua_getfield(L, base, "setmetatable");
    lua_pushcclosure(L, sandbox_setmetatable, 1);
    lua_setfield(L, sandbox, "setmetatable");
    lua_getfield(L, base, "tonumber");
    lua_pushcclosure(L, charged_scan, 1);
    lua_setfield(L, sandbox, "tonumber");

    lua_newtable(L);
    int s = lua_gettop(L);
    copy_fields(L, str, s, STRING_FUNCTIONS);
    wrap(L, s, "format", sandbox_format);
    wrap(L, s, "byte", charged_results);
    lua_pushcfunction(L, processor_lua_find);
    lua_setfield(L, s, "find");
    lua_pushcfunction(L, processor_lua_match);
    lua_setfield(L, s, "match");
    lua_pushcfunction(L, processor_lua_gmatch);
    lua_setfield(L, s, "gmatch");
    lua_pushcfunction(L, processor_lua_gsub);
    lua_setfield(L, s, "gsub");
    push_proxy(L, s);
    /* ("x"):upper() reaches the same read-only table, and getmetatable("") hides it. */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    lua_setfield(L, sandbox, "string");
    lua_pop(L, 1);

    lua_newtable(L);
    copy_fields(L, tab, lua_gettop(L), TABLE_FUNCTIONS);
    wrap(L, lua_gettop(L), "unpack", charged_results);
    wrap(L, lua_gettop(L), "move", charged_move);
    push_proxy(L, -1);
    lua_setfield(L, sandbox, "table");
    lua_pop(L, 1);

    lua_newtable(L);
    copy_fields(L, math, lua_gettop(L), MATH_FUNCTIONS);
    push_proxy(L, -1);
    lua_setfield(L, sandbox, "math");
    lua_pop(L, 1);

    lua_newtable(L);
    int u = lua_gettop(L);
    copy_fields(L, utf8, u, UTF8_FUNCTIONS);
    wrap(L, u, "len", charged_scan);
    wrap(L, u, "offset", charged_scan);
    wrap(L, u, "codepoint", charged_results);
    push_proxy(L, u);
    lua_setfield(L, sandbox, "utf8");
    lua_pop(L, 1);

    lua_newtable(L);
    lua_pushcfunction(L, sandbox_array);
    lua_setfield(L, -2, "array");
    push_proxy(L, -1);
    lua_setfield(L, sandbox, "flushout");
    lua_pop(L, 1);

    lua_pushvalue(L, sandbox);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &SANDBOX_KEY);
    lua_createtable(L, 0, 2); /* each call's globals read the sandbox through this */
    lua_pushvalue(L, sandbox);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ENV_MT_KEY);

    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "flushout.array");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &ARRAY_MT_KEY);

    luaL_newmetatable(L, "flushout.view");
    static const luaL_Reg view_methods[] = {
        {"__index", view_index}, {"__newindex", view_newindex}, {"__len", view_len},
        {"__pairs", view_pairs}, {"__tostring", view_tostring}, {NULL, NULL}};
    luaL_setfuncs(L, view_methods, 0);
    lua_pushliteral(L, "flushout.view");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &VIEW_MT_KEY);

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
        log_failure(NULL, meta, "no Lua state could be created");
        return;
    }
    lua_State *L = w->L;
    call_t c = {.w = w, .document = document, .command = command, .meta = meta};
    w->call_id++;
    w->steps = 0;
    w->max_steps = ic->conf.max_instructions;
    w->alloc_used = 0;
    w->over = OVER_NONE;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &w->deadline);
    uint64_t ms = ic->conf.max_instructions / 1000;
    ms = ms < 100 ? 100 : ms;
    w->deadline.tv_sec += (time_t)(ms / 1000);
    w->deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (w->deadline.tv_nsec >= 1000000000L) {
        w->deadline.tv_sec++;
        w->deadline.tv_nsec -= 1000000000L;
    }
    int every = w->max_steps < HOOK_EVERY ? (int)w->max_steps : HOOK_EVERY;
    lua_sethook(L, count_hook, LUA_MASKCOUNT, every ? every : 1);
    w->charging = true;
    lua_pushcfunction(L, call_protected);
    lua_pushlightuserdata(L, &c);
    int rc = lua_pcall(L, 1, 0, 0);
    w->charging = false;
    lua_sethook(L, NULL, 0, 0);

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
        log_failure(w, meta, out->message);
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
    lua_State *L = w->L;
    lua_settop(L, 0);
    lua_newtable(L); /* the top level runs once here, in the budget of a call */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &ENV_MT_KEY);
    lua_setmetatable(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &CHUNK_KEY);
    lua_pushvalue(L, 1);
    lua_setupvalue(L, 2, 1);
    w->steps = 0;
    w->max_steps = conf->max_instructions;
    w->alloc_used = 0;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &w->deadline);
    w->deadline.tv_sec += 10;
    w->charging = true;
    lua_sethook(L, count_hook, LUA_MASKCOUNT,
                w->max_steps < HOOK_EVERY ? (int)w->max_steps : HOOK_EVERY);
    int rc = lua_pcall(L, 0, 0, 0);
    w->charging = false;
    lua_sethook(L, NULL, 0, 0);
    if (rc != LUA_OK) {
        snprintf(errstr, errstr_size, "interceptor %s: %s", conf->path,
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1)
                                                : "the script raised an error");
        processor_interceptor_destroy(ic);
        return NULL;
    }
    if (lua_getfield(L, 1, "intercept") != LUA_TFUNCTION) {
        snprintf(errstr, errstr_size,
                 "interceptor %s: the script defines no function intercept(document, "
                 "command, context, meta)",
                 conf->path);
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
