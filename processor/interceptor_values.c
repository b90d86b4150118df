/* processor/interceptor_values.c - values between the master and Lua: the lazy
 * read-only document view (a read costs what it reads), props and context as tables,
 * and newProps back, checked against the same limits as a request. */
#include <math.h>
#include <string.h>

#include <lauxlib.h>
#include <msgpack.h>

#include "codec/msgpack.h"
#include "codec/utf8.h"
#include "interceptor_int.h"

/* ---- the document view: reads cost what they read ---- */

typedef struct view_s {
    const codec_value_t *v; /* a map or an array */
    uint64_t call_id;
} view_t;

void interceptor_push_view(lua_State *L, const codec_value_t *v)
{
    view_t *view = lua_newuserdatauv(L, sizeof(*view), 0);
    view->v = v;
    view->call_id = interceptor_worker(L)->call_id;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &INTERCEPTOR_VIEW_MT_KEY);
    lua_setmetatable(L, -2);
}

static const codec_value_t *check_view(lua_State *L, int idx)
{
    view_t *view = luaL_checkudata(L, idx, "flushout.view");
    if (view->call_id != interceptor_worker(L)->call_id)
        luaL_error(L, "a document view is only valid during the call it was given to");
    return view->v;
}

/* Scalars become Lua values; maps and arrays become views of their own. */
static void push_document_value(lua_State *L, const codec_value_t *v)
{
    if (v->type == CODEC_VALUE_MAP || v->type == CODEC_VALUE_ARRAY)
        interceptor_push_view(L, v);
    else
        interceptor_push_value(L, v);
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
    } else if (lua_type(L, 2) == LUA_TNUMBER) { /* 1-based, as a Lua sequence; the
                                                 * string "3" is no index here */
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
void interceptor_push_value(lua_State *L, const codec_value_t *v)
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
            interceptor_push_value(L, v->u.array.items[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_rawgetp(L, LUA_REGISTRYINDEX, &INTERCEPTOR_ARRAY_MT_KEY);
        lua_setmetatable(L, -2);
        break;
    case CODEC_VALUE_MAP: {
        lua_createtable(L, 0, (int)v->u.map.count);
        uint32_t pos = 0;
        const codec_map_entry_t *e;
        while ((e = codec_map_next(v, &pos))) {
            lua_pushlstring(L, codec_map_entry_key(e), e->key_len);
            interceptor_push_value(L, e->value);
            lua_rawset(L, -3);
        }
        break;
    }
    }
}

void interceptor_push_path(lua_State *L, const codec_value_t *path)
{
    if (path) {
        interceptor_push_value(L, path);
    } else { /* flushout passes undefined at the root: an empty sequence is kinder */
        lua_createtable(L, 0, 0);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &INTERCEPTOR_ARRAY_MT_KEY);
        lua_setmetatable(L, -2);
    }
}

void interceptor_set_fields(lua_State *L, int t, const codec_value_t *map)
{
    uint32_t pos = 0;
    const codec_map_entry_t *e;
    while ((e = codec_map_next(map, &pos))) {
        lua_pushlstring(L, codec_map_entry_key(e), e->key_len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, t) != LUA_TNIL) {
            lua_pop(L, 2);
            continue;
        }
        lua_pop(L, 1);
        interceptor_push_value(L, e->value);
        lua_rawset(L, t);
    }
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
                   "newProps would be more than %I bytes, %d more than the props it "
                   "replaces",
                   (lua_Integer)tc->max_bytes, PROCESSOR_INTERCEPTOR_GROWTH_BYTES);
}

static void check_string(to_codec_t *tc, const char *s, size_t len, const char *what)
{
    if (len > tc->limits->max_string_bytes)
        luaL_error(tc->L, "newProps: a %s of %I bytes is over --max-string-bytes %I",
                   what, (lua_Integer)len, (lua_Integer)tc->limits->max_string_bytes);
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
static lua_Integer array_length(lua_State *L, int idx, lua_Integer *entries)
{
    bool marked = false;
    if (lua_getmetatable(L, idx)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &INTERCEPTOR_ARRAY_MT_KEY);
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
    *entries = count;
    if (strings)
        return -1;
    if (n != count)
        luaL_error(L,
                   "newProps: an array has holes (nil items): %I items up to "
                   "index %I",
                   count, n);
    *entries = count;
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
    /* Map keys in a fixed order (Lua's own is per state): sorted bytewise. No script
     * runs here, so the table and its keys stay as they are. */
    interceptor_key_t small[INTERCEPTOR_SMALL_KEYS], *keys;
    bool pushed;
    size_t count = interceptor_sorted_keys(L, idx, small, &keys, &pushed);
    for (size_t i = 0; i < count; i++) {
        const interceptor_key_t *k = &keys[i];
        if (k->kind != KEY_STRING)
            luaL_error(L, "newProps: a table key must be a string (or a sequence's "
                          "index)");
        check_string(tc, k->str, k->len, "key");
        codec_map_set(c, k->str, k->len, codec_value_nil());
        interceptor_push_key(L, k);
        lua_rawget(L, idx);
        to_codec(tc, lua_gettop(L), depth + 1,
                 &c->u.map.entries[c->u.map.used - 1].value);
        lua_pop(L, 1);
    }
    if (pushed)
        lua_pop(L, 1);
}

/* Converts the value at idx into *slot (which holds a placeholder owned by the tree,
 * so that an error half-way leaves a tree the caller can free). */
static codec_value_t *to_codec(to_codec_t *tc, int idx, int depth, codec_value_t **slot)
{
    lua_State *L = tc->L;
    luaL_checkstack(L, 8, "newProps nested too deep");
    if (depth > (int)tc->max_depth)
        luaL_error(L, "newProps: nested deeper than --max-depth allows (%I levels)",
                   (lua_Integer)tc->max_depth);
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
        /* measured before copying: a 10 MB document is refused without a copy */
        charge_bytes(tc, codec_msgpack_packed_size(src));
        codec_value_t *copy = codec_value_copy(src);
        codec_value_destroy(*slot);
        *slot = copy;
        return copy;
    }
    case LUA_TTABLE: {
        lua_Integer entries, n = array_length(L, idx, &entries);
        charge_bytes(tc, 5);
        v = n >= 0 ? codec_value_array((uint32_t)n) : codec_value_map((uint32_t)entries);
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

void interceptor_values_open(lua_State *L)
{
    luaL_newmetatable(L, "flushout.view");
    static const luaL_Reg view_methods[] = {
        {"__index", view_index}, {"__newindex", view_newindex}, {"__len", view_len},
        {"__pairs", view_pairs}, {"__tostring", view_tostring}, {NULL, NULL}};
    luaL_setfuncs(L, view_methods, 0);
    lua_pushliteral(L, "flushout.view");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &INTERCEPTOR_VIEW_MT_KEY);
}

void interceptor_to_codec(lua_State *L, int idx, const codec_limits_t *limits,
                          size_t max_bytes, codec_value_t **slot)
{
    to_codec_t tc = {L, limits, 0, 0, max_bytes};
    /* props sit at level PROPS_DEPTH_IN_REQUEST + 1 of a request */
    tc.max_depth = limits->max_depth > PROPS_DEPTH_IN_REQUEST + 1
                       ? limits->max_depth - PROPS_DEPTH_IN_REQUEST - 1
                       : 0;
    *slot = codec_value_nil();
    to_codec(&tc, idx, 0, slot);
    if ((*slot)->type != CODEC_VALUE_MAP)
        luaL_error(L, "intercept returned newProps that is an array, not a map");
}
