/* processor/interceptor_int.h - what the interceptor's files share: a worker (one Lua
 * state), the registry keys and the functions between the sandbox, the values and
 * the calls. Not for use outside processor/interceptor*.c. */
#ifndef FLUSHOUT_PROCESSOR_INTERCEPTOR_INT_H
#define FLUSHOUT_PROCESSOR_INTERCEPTOR_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include <lua.h>

#include "interceptor.h"

/* Levels above a command's props in a request (request, completions, completion,
 * command): newProps may nest as deep as props could (codec/error.h, max_depth). */
#define PROPS_DEPTH_IN_REQUEST 4

/* Registry keys: their addresses are unique (interceptor_sandbox.c). */
extern const char INTERCEPTOR_ENV_MT_KEY, INTERCEPTOR_VIEW_MT_KEY,
    INTERCEPTOR_ARRAY_MT_KEY;

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
    bool refused_net; /* over is OVER_MEMORY for the state's cap, not the call's */
    uint64_t call_id; /* views of an earlier call refuse to be read */
    void *call;       /* the call in progress (interceptor.c's call_t) */
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

/** The worker whose Lua state L is (lua_getextraspace()). */
worker_t *interceptor_worker(lua_State *L);

/** Opens the sandbox's libraries in L and sets the globals every call reads through
 *  (INTERCEPTOR_ENV_MT_KEY). Raises Lua errors: call it protected. */
void interceptor_sandbox_open(lua_State *L);
/** pairs() as scripts get it: keys in a fixed order (see INTERCEPTORS.md). */
int interceptor_pairs(lua_State *L);

/* A table's key, for sorting: Lua's own next() depends on a per-state hash seed. */
enum { KEY_NUMBER, KEY_STRING, KEY_BOOLEAN }; /* the order of kinds of key */
typedef struct interceptor_key_s {
    int kind; /* KEY_* */
    bool is_integer;
    lua_Integer integer;
    lua_Number num; /* numbers, and booleans as 0 and 1 */
    const char *str;
    size_t len;
} interceptor_key_t;

/* Tables with at most this many keys are sorted in a caller's array: no allocation. */
#define INTERCEPTOR_SMALL_KEYS 16

/** The keys of the table at idx, sorted (numbers, strings bytewise, booleans): in
 *  small[INTERCEPTOR_SMALL_KEYS] when they fit, else in a userdata pushed on the stack
 *  (*pushed then true). *keys points to them, valid while the table is unchanged.
 *  Raises a Lua error for keys of other types. @returns their count. */
size_t interceptor_sorted_keys(lua_State *L, int idx, interceptor_key_t *small,
                               interceptor_key_t **keys, bool *pushed);
void interceptor_push_key(lua_State *L, const interceptor_key_t *key);

/** Registers the document view's metatable. Raises Lua errors. */
void interceptor_values_open(lua_State *L);
/** Pushes a read-only view of v (a map or an array), valid during this call. */
void interceptor_push_view(lua_State *L, const codec_value_t *v);
/** Pushes v as Lua values: maps as tables, arrays as marked sequences. */
void interceptor_push_value(lua_State *L, const codec_value_t *v);
/** Sets each entry of map in the table at t, as interceptor_push_value() would
 *  convert it, unless the table has that key already. */
void interceptor_set_fields(lua_State *L, int t, const codec_value_t *map);
/** Pushes a command's path (an empty sequence for none). */
void interceptor_push_path(lua_State *L, const codec_value_t *path);
/** Converts the newProps at idx into *slot (which the caller frees, even after a Lua
 *  error half-way); at most max_bytes packed. Raises Lua errors. */
void interceptor_to_codec(lua_State *L, int idx, const codec_limits_t *limits,
                          size_t max_bytes, codec_value_t **slot);

#endif
