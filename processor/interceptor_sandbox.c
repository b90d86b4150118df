/* processor/interceptor_sandbox.c - what an interceptor script can reach: pure
 * libraries, read-only, with the functions that could depend on the Lua state (next,
 * tostring of a table, %p) or run unbounded in C replaced by ones that cannot. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "interceptor_int.h"
#include "lua_patterns.h"

const char INTERCEPTOR_ENV_MT_KEY, INTERCEPTOR_VIEW_MT_KEY, INTERCEPTOR_ARRAY_MT_KEY;

/* ---- the sandbox's own functions ---- */

static int read_only(lua_State *L)
{
    return luaL_error(L, "this table is read-only");
}

/* Calls the function this closure wraps (its upvalue 1) with the closure's arguments.
 * @returns the number of results, left on the stack. */
static int call_wrapped(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
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
    return call_wrapped(L); /* Lua's string.format */
}

/* Wraps a C function that scans its first (string) argument without allocating
 * (utf8.len, tonumber...): the scan is charged. */
static int charged_scan(lua_State *L)
{
    size_t len = 0;
    if (lua_type(L, 1) == LUA_TSTRING)
        lua_tolstring(L, 1, &len);
    processor_lua_charge(L, 1 + len / 16);
    return call_wrapped(L);
}

/* pcall and xpcall that cannot catch a spent budget: a script that called pcall in a
 * loop could otherwise catch the budget's error for ever. */
static int protected_result(lua_State *L, int status, int base)
{
    if (status != LUA_OK && interceptor_worker(L)->over != OVER_NONE)
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

/* xpcall's handler, skipped once a bound is spent: the budget's error is raised in
 * the count hook, and hooks stay off until the error reaches a pcall, so a handler
 * that looped then would loop for ever. */
static int guarded_handler(lua_State *L)
{
    if (interceptor_worker(L)->over != OVER_NONE)
        return 1;
    return call_wrapped(L);
}

static int sandbox_xpcall(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, guarded_handler, 1);
    lua_replace(L, 2);
    lua_pushvalue(L, 1); /* f, handler, args..., f */
    lua_rotate(L, 3, 1); /* f, handler, f, args... */
    return protected_result(L, lua_pcall(L, n - 2, LUA_MULTRET, 2), 3);
}

/* Wraps a C function whose work is its results (string.byte, utf8.codepoint,
 * table.unpack): they are charged once counted (Lua bounds them by its stack). */
static int charged_results(lua_State *L)
{
    int results = call_wrapped(L);
    processor_lua_charge(L, (size_t)results);
    return results;
}

/* table.concat, table.insert and table.remove: charged the table's length up front
 * (they walk or shift it in C; concatenating empty strings allocates nothing). */
static int charged_length(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_Integer n = luaL_len(L, 1); /* what they will walk: __len's answer, if any */
    processor_lua_charge(L, 1 + (n > 0 ? (size_t)n : 0));
    return call_wrapped(L);
}

/* string.rep: Lua's loops n times even when it copies nothing (an empty string and
 * separator), with no allocation to stop it. */
static int sandbox_rep(lua_State *L)
{
    size_t l, lsep = 0;
    luaL_checklstring(L, 1, &l);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (l + lsep == 0 || n <= 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    return call_wrapped(L);
}

/* table.move(a1, f, e, t): charged its length up front (moving nils allocates
 * nothing, so nothing else would count it). */
static int charged_move(lua_State *L)
{
    lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
    if (e >= f)
        processor_lua_charge(L, (size_t)((lua_Unsigned)e - (lua_Unsigned)f) + 1);
    return call_wrapped(L);
}

/* a < b for table.sort: the comparator's answer, or Lua's own order. One step of the
 * budget each: Lua's < on numbers runs no instruction the count hook would see. */
static bool sort_less(lua_State *L, int values, lua_Integer a, lua_Integer b)
{
    processor_lua_charge(L, 1);
    lua_rawgeti(L, values, a);
    lua_rawgeti(L, values, b);
    if (lua_isnil(L, 2)) {
        bool less = lua_compare(L, -2, -1, LUA_OPLT);
        lua_pop(L, 2);
        return less;
    }
    lua_pushvalue(L, 2);
    lua_insert(L, -3);
    lua_call(L, 2, 1);
    bool less = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return less;
}

/* table.sort(t [, comp]) as a stable merge sort. Lua's own picks pivots from clock()
 * and time() for large arrays, so elements that compare equal (or a comparator that is
 * not a strict order) would end in an order that changes from run to run, and its C
 * loop runs uncounted between comparisons. */
static int sandbox_sort(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    if (n < 2)
        return 0;
    luaL_argcheck(L, n < INT32_MAX, 1, "array too big");
    processor_lua_charge(L, (size_t)n);
    lua_createtable(L, (int)n, 0); /* 3: the values */
    lua_createtable(L, (int)n, 0); /* 4: merged runs */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        lua_rawseti(L, 3, i);
    }
    int from = 3, to = 4;
    for (lua_Integer width = 1; width < n; width *= 2) {
        for (lua_Integer lo = 1; lo <= n; lo += 2 * width) {
            lua_Integer mid = lo + width, hi = lo + 2 * width;
            mid = mid > n + 1 ? n + 1 : mid;
            hi = hi > n + 1 ? n + 1 : hi;
            lua_Integer a = lo, b = mid;
            for (lua_Integer k = lo; k < hi; k++) {
                /* the left run's element first unless the right one is less: stable */
                bool right = a >= mid || (b < hi && sort_less(L, from, b, a));
                lua_rawgeti(L, from, right ? b++ : a++);
                lua_rawseti(L, to, k);
            }
        }
        int swap = from;
        from = to;
        to = swap;
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, from, i);
        lua_seti(L, 1, i);
    }
    return 0;
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
    return call_wrapped(L); /* Lua's setmetatable: the table */
}

static int key_compare(const void *pa, const void *pb)
{
    const interceptor_key_t *a = pa, *b = pb;
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->kind == KEY_STRING) {
        size_t n = a->len < b->len ? a->len : b->len;
        int c = memcmp(a->str, b->str, n);
        return c ? c : (a->len > b->len) - (a->len < b->len);
    }
    return (a->num > b->num) - (a->num < b->num); /* numbers, booleans */
}

static void key_read(lua_State *L, interceptor_key_t *key)
{
    switch (lua_type(L, -1)) {
    case LUA_TNUMBER:
        key->kind = KEY_NUMBER;
        key->num = lua_tonumber(L, -1);
        key->is_integer = lua_isinteger(L, -1);
        key->integer = lua_tointeger(L, -1);
        break;
    case LUA_TSTRING:
        key->kind = KEY_STRING;
        key->str = lua_tolstring(L, -1, &key->len); /* alive: a key of the table */
        break;
    case LUA_TBOOLEAN:
        key->kind = KEY_BOOLEAN;
        key->num = lua_toboolean(L, -1);
        break;
    default:
        luaL_error(L, "pairs: a table with %s keys has no fixed order",
                   luaL_typename(L, -1));
    }
}

/* Reads the keys of the table at idx into k[0..max). @returns their count, which may
 * be more than max (the rest are counted, not read). */
static size_t keys_read(lua_State *L, int idx, interceptor_key_t *k, size_t max)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (n < max)
            key_read(L, &k[n]);
        n++;
    }
    return n;
}

size_t interceptor_sorted_keys(lua_State *L, int idx, interceptor_key_t *small,
                               interceptor_key_t **keys, bool *pushed)
{
    idx = lua_absindex(L, idx);
    interceptor_key_t *k = small;
    size_t n = keys_read(L, idx, small, INTERCEPTOR_SMALL_KEYS);
    processor_lua_charge(L, n * 4);
    *pushed = n > INTERCEPTOR_SMALL_KEYS;
    if (*pushed) {
        k = lua_newuserdatauv(L, n * sizeof(*k), 0);
        keys_read(L, idx, k, n);
    }
    if (n > 8) {
        qsort(k, n, sizeof(*k), key_compare);
    } else { /* most tables: an insertion sort is cheaper than a call to qsort */
        for (size_t a = 1; a < n; a++) {
            interceptor_key_t key = k[a];
            size_t b = a;
            for (; b > 0 && key_compare(&k[b - 1], &key) > 0; b--)
                k[b] = k[b - 1];
            k[b] = key;
        }
    }
    *keys = k;
    return n;
}

void interceptor_push_key(lua_State *L, const interceptor_key_t *key)
{
    if (key->kind == KEY_STRING)
        lua_pushlstring(L, key->str, key->len);
    else if (key->kind == KEY_BOOLEAN)
        lua_pushboolean(L, key->num != 0);
    else if (key->is_integer)
        lua_pushinteger(L, key->integer);
    else
        lua_pushnumber(L, key->num);
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

static int no_next(lua_State *L)
{
    lua_pushnil(L);
    return 1;
}

/* pairs: a metatable's __pairs when there is one, else the keys in a fixed order:
 * numbers ascending, then strings bytewise, then false and true. */
int interceptor_pairs(lua_State *L)
{
    luaL_checkany(L, 1);
    if (luaL_getmetafield(L, 1, "__pairs") != LUA_TNIL) {
        lua_pushvalue(L, 1);
        lua_call(L, 1, 3);
        return 3;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    interceptor_key_t small[INTERCEPTOR_SMALL_KEYS], *keys;
    bool pushed;
    size_t n = interceptor_sorted_keys(L, 1, small, &keys, &pushed);
    if (n == 0) {
        lua_pushcfunction(L, no_next);
    } else {
        lua_createtable(L, (int)n, 0); /* the keys in order: they stay alive */
        for (size_t i = 0; i < n; i++) {
            interceptor_push_key(L, &keys[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_pushvalue(L, 1);
        lua_insert(L, -2);
        lua_pushinteger(L, 0);
        lua_pushcclosure(L, ordered_next, 3);
    }
    lua_pushnil(L);
    lua_pushnil(L);
    return 3;
}

/* flushout.array(t): marks t to be stored as an array, even when empty. */
static int sandbox_array(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &INTERCEPTOR_ARRAY_MT_KEY);
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

/* A new library table holding the named fields of the table at from. @returns its
 * index. */
static int library_new(lua_State *L, int from, const char *const *names)
{
    lua_newtable(L);
    int t = lua_gettop(L);
    copy_fields(L, from, t, names);
    return t;
}

static void set_function(lua_State *L, int t, const char *name, lua_CFunction fn)
{
    lua_pushcfunction(L, fn);
    lua_setfield(L, t, name);
}

/* Publishes the library table t (at the top) in the sandbox as name, read-only. */
static void library_publish(lua_State *L, int sandbox, int t, const char *name)
{
    push_proxy(L, t);
    lua_setfield(L, sandbox, name);
    lua_pop(L, 1);
}

void interceptor_sandbox_open(lua_State *L)
{
    luaL_requiref(L, "_G", luaopen_base, 0);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 0);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 0);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 0);
    luaL_requiref(L, LUA_UTF8LIBNAME, luaopen_utf8, 0);
    int base = 2, str = 3, tab = 4, math = 5, utf8 = 6;

    int sandbox = library_new(L, base, BASE_FUNCTIONS); /* the sandbox's globals */
    set_function(L, sandbox, "pairs", interceptor_pairs);
    set_function(L, sandbox, "tostring", sandbox_tostring);
    set_function(L, sandbox, "pcall", sandbox_pcall);
    set_function(L, sandbox, "xpcall", sandbox_xpcall);
    lua_getfield(L, base, "setmetatable");
    lua_pushcclosure(L, sandbox_setmetatable, 1);
    lua_setfield(L, sandbox, "setmetatable");
    lua_getfield(L, base, "tonumber");
    lua_pushcclosure(L, charged_scan, 1);
    lua_setfield(L, sandbox, "tonumber");

    int s = library_new(L, str, STRING_FUNCTIONS);
    wrap(L, s, "format", sandbox_format);
    wrap(L, s, "byte", charged_results);
    wrap(L, s, "rep", sandbox_rep);
    set_function(L, s, "find", processor_lua_find);
    set_function(L, s, "match", processor_lua_match);
    set_function(L, s, "gmatch", processor_lua_gmatch);
    set_function(L, s, "gsub", processor_lua_gsub);
    /* ("x"):upper() reaches the same read-only table, and getmetatable("") hides it. */
    push_proxy(L, s);
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 3);
    library_publish(L, sandbox, s, "string");

    int t = library_new(L, tab, TABLE_FUNCTIONS);
    wrap(L, t, "unpack", charged_results);
    wrap(L, t, "move", charged_move);
    wrap(L, t, "concat", charged_length);
    wrap(L, t, "insert", charged_length);
    wrap(L, t, "remove", charged_length);
    set_function(L, t, "sort", sandbox_sort);
    library_publish(L, sandbox, t, "table");

    library_publish(L, sandbox, library_new(L, math, MATH_FUNCTIONS), "math");

    int u = library_new(L, utf8, UTF8_FUNCTIONS);
    wrap(L, u, "len", charged_scan);
    wrap(L, u, "offset", charged_scan);
    wrap(L, u, "codepoint", charged_results);
    library_publish(L, sandbox, u, "utf8");

    int f = library_new(L, base, (const char *const[]){NULL});
    set_function(L, f, "array", sandbox_array);
    library_publish(L, sandbox, f, "flushout");

    lua_createtable(L, 0, 2); /* each call's globals read the sandbox through this */
    lua_pushvalue(L, sandbox);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &INTERCEPTOR_ENV_MT_KEY);

    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "flushout.array");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &INTERCEPTOR_ARRAY_MT_KEY);
}
