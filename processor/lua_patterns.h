/* processor/lua_patterns.h - Lua's pattern functions with a step budget, for the
 * interceptor sandbox (processor/lua_patterns.c says why). */
#ifndef FLUSHOUT_PROCESSOR_LUA_PATTERNS_H
#define FLUSHOUT_PROCESSOR_LUA_PATTERNS_H

#include <stddef.h>

#include <lua.h>

/* string.find, string.match, string.gmatch and string.gsub. */
int processor_lua_find(lua_State *L);
int processor_lua_match(lua_State *L);
int processor_lua_gmatch(lua_State *L);
int processor_lua_gsub(lua_State *L);

/** Charges steps to the running call's budget; raises a Lua error once it is spent.
 *  Defined by processor/interceptor.c. */
void processor_lua_charge(lua_State *L, size_t steps);

#endif
