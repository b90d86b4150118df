/* tests/processor/test_interceptor_safety.c - what keeps an interceptor from harming
 * the processor (processor/INTERCEPTORS.md, "The sandbox", "Determinism", "Bounds",
 * "Threads"): what scripts cannot see or change, outcomes that do not depend on the
 * Lua state, and hostile scripts (tests/processor/interceptors/hostile.lua) each
 * stopped with a clear message, the next call working normally. The budget is the
 * default (1,000,000) where the bound itself is tested, a smaller one elsewhere. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "interceptor_test.h"

/* ---- the sandbox ---- */

Test(processor_interceptor_sandbox, what_reaches_outside_is_absent)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "sandbox.lua", DEFAULT_INSTRUCTIONS);
    cr_assert_str_eq(outcome_of_case(ic, "absent"),
                     "reject present: getmetatable(''):false");
    processor_interceptor_destroy(ic);
}

/* The libraries are shared by every call of a state: a write would reach the next
 * call (and a state is per thread, so outcomes would depend on the thread). */
Test(processor_interceptor_sandbox,
     the_libraries_are_read_only_and_the_next_call_sees_them_intact)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "sandbox.lua", DEFAULT_INSTRUCTIONS);
    /* string.upper("b") is this call's own string table (its globals are its own),
     * ("a"):upper() the real one */
    cr_assert_str_eq(
        outcome_of_case(ic, "write_libraries"),
        "reject failed:string,table,math,utf8,flushout,string metatable Ahacked");
    cr_assert_str_eq(outcome_of_case(ic, "libraries_intact"), "reject AB12\xc3\xa9"
                                                              "3.14functionnil");
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor_sandbox, no_addresses_in_tostring_or_format)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "sandbox.lua", DEFAULT_INSTRUCTIONS);
    cr_assert_str_eq(
        outcome_of_case(ic, "addresses"),
        "reject table function table false string.format: %p is not available to "
        "interceptors");
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor_sandbox, table_sort_sorts)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "sandbox.lua", DEFAULT_INSTRUCTIONS);
    cr_assert_str_eq(outcome_of_case(ic, "sort"),
                     "reject 0,1,1,2,3,4,5,6,7,8,9 d,c,b,a 0");
    processor_interceptor_destroy(ic);
}

/* ---- determinism ---- */

static const char *PAIRS_ORDER =
    "function intercept()\n"
    "  local t = {b = 1, a = 1, B = 1, [3] = 1, [1] = 1, [-2] = 1, [2.5] = 1,\n"
    "             [true] = 1, [false] = 1, ['10'] = 1}\n"
    "  for i = 1, 50 do t['k' .. i] = i end\n"
    "  for i = 1, 50 do t['k' .. i] = nil end\n"
    "  local keys = {}\n"
    "  for k in pairs(t) do keys[#keys + 1] = tostring(k) end\n"
    "  return {rejection = table.concat(keys, ',')}\n"
    "end\n";

Test(processor_interceptor_determinism, pairs_gives_keys_sorted_numbers_strings_booleans)
{
    processor_interceptor_t *a = load_inline(PAIRS_ORDER, DEFAULT_INSTRUCTIONS);
    processor_interceptor_t *b = load_inline(PAIRS_ORDER, DEFAULT_INSTRUCTIONS);
    const char *want = "reject -2,1,2.5,3,10,B,a,b,false,true";
    cr_assert_str_eq(outcome(a, UPDATE_X), want);
    cr_assert_str_eq(outcome(b, UPDATE_X), want);
    cr_assert_str_eq(outcome(a, UPDATE_X), want);
    processor_interceptor_destroy(a);
    processor_interceptor_destroy(b);

    /* keys with no order: an error, not an order that depends on addresses */
    processor_interceptor_t *c = load_inline("function intercept()\n"
                                             "  for k in pairs({[{}] = 1}) do end\n"
                                             "end\n",
                                             DEFAULT_INSTRUCTIONS);
    expect_prefix(outcome(c, UPDATE_X), "reject interceptor error: ");
    expect_contains(outcome(c, UPDATE_X),
                    "pairs: a table with table keys has no fixed order");
    processor_interceptor_destroy(c);
}

Test(processor_interceptor_determinism, nothing_survives_a_call)
{
    processor_interceptor_t *ic =
        load_inline("local calls = 0\n"
                    "function intercept()\n"
                    "  calls = calls + 1\n"
                    "  seen = (seen or 0) + 1\n"
                    "  return {rejection = calls .. ' ' .. seen}\n"
                    "end\n",
                    DEFAULT_INSTRUCTIONS);
    for (int i = 0; i < 3; i++)
        cr_assert_str_eq(outcome(ic, UPDATE_X), "reject 1 1", "call %d", i);
    processor_interceptor_destroy(ic);
}

/* Two instances given the same records must write the same bytes. */
Test(processor_interceptor_determinism,
     two_loads_of_one_file_give_byte_identical_new_props)
{
    const char *path = EXAMPLES_DIR "/created_by.lua";
    const char *flush =
        "{\"type\":\"flush\",\"client\":\"c\",\"seq\":1,\"from\":0,\"timestamp\":5,"
        "\"context\":{\"user\":\"u\"},\"completions\":[{\"command\":{\"action\":"
        "\"create\",\"path\":[\"todos\"],\"props\":{\"z\":1,\"a\":[1,{\"y\":2,\"x\":1}],"
        "\"m\":\"s\",\"b\":true,\"f\":0.25}},\"createdId\":\"i\"}]}";
    processor_interceptor_t *ic[2];
    msgpack_sbuffer packed[2];
    for (int i = 0; i < 2; i++) {
        processor_interceptor_conf_t conf = conf_for(path, DEFAULT_INSTRUCTIONS);
        ic[i] = load_conf(&conf);
        /* a first call leaves garbage behind, and the second state's tables are
         * hashed with another seed */
        new_props_packed(ic[i], "{}", flush, &packed[i]);
        msgpack_sbuffer_destroy(&packed[i]);
        new_props_packed(ic[i], "{}", flush, &packed[i]);
    }
    cr_assert_eq(packed[0].size, packed[1].size);
    cr_assert(!memcmp(packed[0].data, packed[1].data, packed[0].size));
    char got[1024];
    outcome_into(ic[0], "{}", flush, 0, got, sizeof(got));
    cr_assert_str_eq(got, "props {\"a\":[1,{\"x\":1,\"y\":2}],\"b\":true,\"createdAt\":5,"
                          "\"createdBy\":\"u\",\"f\":0.25,\"m\":\"s\",\"z\":1}");
    cr_assert_str_eq(processor_interceptor_sha256(ic[0]),
                     processor_interceptor_sha256(ic[1]));
    for (int i = 0; i < 2; i++) {
        msgpack_sbuffer_destroy(&packed[i]);
        processor_interceptor_destroy(ic[i]);
    }
}

/* The same script and command must give the same outcome on every call.
 * BUG (fails on main at f41bece): Lua 5.4's table.sort is a quicksort that, when a
 * partition comes out too unbalanced, picks its pivots from clock() and time()
 * (ltablib.c, l_randomizePivot): elements that compare equal then come out in an
 * order that changes from call to call, so newProps built from a sorted list differ
 * between instances and replays. Fix: give the sandbox its own table.sort, a
 * deterministic (e.g. stable merge) sort, charged n*log2(n). */
Test(processor_interceptor_determinism, table_sort_orders_ties_the_same_on_every_call)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    char first[4096];
    snprintf(first, sizeof(first), "%s", outcome_of_case(ic, "sort_ties"));
    size_t len = strlen(first);
    cr_assert(len > 5 && !strcmp(first + len - 5, ",2000"), "the largest key last: %s",
              first);
    for (int i = 0; i < 10; i++) {
        const char *again = outcome_of_case(ic, "sort_ties");
        cr_assert_str_eq(again, first, "call %d: \"%s\", the first: \"%s\"", i + 2, again,
                         first);
    }
    processor_interceptor_destroy(ic);
}

/* ---- hostile scripts ---- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs hostile.lua's case: it must be rejected with an interceptor error containing
 * part, within max_seconds, and the next call must work normally. */
static void expect_contained(processor_interceptor_t *ic, const char *name,
                             const char *part, double max_seconds)
{
    double start = now_seconds();
    const char *got = outcome_of_case(ic, name);
    double took = now_seconds() - start;
    cr_expect(!strncmp(got, "reject interceptor error: ", 26) && strstr(got, part),
              "%s: got \"%.300s\", want an interceptor error with \"%s\"", name, got,
              part);
    cr_expect_lt(took, max_seconds, "%s took %.2f s", name, took);
    cr_assert_str_eq(outcome_of_case(ic, "ok"), "reject still serving", "after %s", name);
}

/* BUG (fails on main at f41bece): every budget case below gets "invalid option '%l'
 * to 'lua_pushfstring'" instead of this message (see test_interceptor.c,
 * an_error_at_the_top_level_fails_with_its_line). */
#define BUDGET_SPENT "the script ran out of its budget of "
#define OVER_MEMORY  "the script used more memory than allowed"

Test(processor_interceptor_hostile, an_infinite_loop_is_stopped_by_the_budget)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    expect_contained(ic, "loop", BUDGET_SPENT "1000000 instructions", 2.0);
    processor_interceptor_stats_t stats;
    processor_interceptor_stats(ic, &stats);
    cr_assert_eq(stats.calls, 2);
    cr_assert_eq(stats.errors, 1);
    cr_assert_eq(stats.over_instructions, 1);
    cr_assert_eq(stats.over_memory, 0);
    cr_assert_eq(stats.rejections, 1, "the ok case");
    processor_interceptor_destroy(ic);
}

/* With the default memory limits (16 MB per call of a 64 MB state), and a budget
 * large enough for the memory to run out first. */
Test(processor_interceptor_hostile, unbounded_allocation_is_stopped_by_the_memory_cap)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", 100 * DEFAULT_INSTRUCTIONS);
    expect_contained(ic, "table_growth", OVER_MEMORY, 5.0);
    expect_contained(ic, "concat", OVER_MEMORY, 5.0);
    expect_contained(ic, "rep", OVER_MEMORY, 5.0);
    expect_contained(ic, "rep_huge", "resulting string too large", 5.0);
    processor_interceptor_stats_t stats;
    processor_interceptor_stats(ic, &stats);
    cr_assert_eq(stats.over_memory, 3);
    cr_assert_eq(stats.over_instructions, 0);
    cr_assert_eq(stats.errors, 4);
    cr_assert_eq(stats.calls, 8);
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor_hostile, deep_recursion_is_stopped)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    /* the stack overflows, or its memory or the budget runs out first: any is fine */
    double start = now_seconds();
    const char *got = outcome_of_case(ic, "recursion");
    cr_expect(!strncmp(got, "reject interceptor error: ", 26), "%s", got);
    cr_expect(strstr(got, "stack overflow") || strstr(got, OVER_MEMORY) ||
                  strstr(got, BUDGET_SPENT),
              "%s", got);
    cr_expect_lt(now_seconds() - start, 2.0);
    cr_assert_str_eq(outcome_of_case(ic, "ok"), "reject still serving");
    processor_interceptor_destroy(ic);
}

/* Pattern matching runs in C: without its steps charged, this would take hours. */
Test(processor_interceptor_hostile, a_catastrophic_pattern_is_stopped_quickly)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    expect_contained(ic, "pattern", BUDGET_SPENT, 2.0);
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor_hostile, pcall_cannot_swallow_the_budget)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", FEW_INSTRUCTIONS);
    expect_contained(ic, "pcall_loop", BUDGET_SPENT "100000 instructions", 2.0);
    expect_contained(ic, "pcall_error_loop", BUDGET_SPENT "100000 instructions", 2.0);
    expect_contained(ic, "close_loop", BUDGET_SPENT "100000 instructions", 2.0);
    processor_interceptor_destroy(ic);
}

/* table.sort's comparisons are C work: 100,000 sorted numbers take milliseconds, and
 * the loop runs some 200 sorts between two count hooks, where the wall-clock
 * backstop (1 s by default) is checked.
 * BUG (fails on main at f41bece): this call takes about 4 s (10 s with 150,000
 * numbers), over the 1 s the backstop promises: a flush of such commands stalls its
 * partition. Fix: charge table.sort n*log2(n) steps (as table.move is charged), and
 * check the deadline in processor_lua_charge() too. */
Test(processor_interceptor_hostile, table_sort_in_a_loop_is_stopped_in_time)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    expect_contained(ic, "sort_loop", "the script ran", 2.0);
    processor_interceptor_destroy(ic);
}

/* BUG (fails on main at f41bece: the call never returns, the test times out): the
 * count hook is the only place the budget and the wall-clock backstop are checked,
 * and these run without it:
 * - string.rep("", n) copies nothing n times (Lua's str_rep loops n - 1 times even
 *   when the string and separator are empty): no instruction, no allocation;
 * - table.insert(t, 1, v) and table.remove(t, 1) shift #t items, and #t comes from
 *   __len: with a lying __len they loop for ever over absent items (lua_geti and
 *   lua_seti of nil allocate nothing);
 * - xpcall's message handler: when the budget's error is raised inside the count
 *   hook, Lua has cleared L->allowhook (ldo.c, luaD_hook) and restores it only when
 *   the error reaches a pcall, after the handler ran: a handler that loops is never
 *   stopped.
 * Fixes: string.rep returning "" when the string and separator are empty (or charged
 * n); table.insert and table.remove charged the items they shift (as table.move is);
 * the sandbox's xpcall giving Lua a C handler that returns the error untouched when
 * the call is over a bound (w->over) and calls the script's handler otherwise. */
Test(processor_interceptor_hostile, empty_string_rep_is_stopped, .timeout = 5)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    const char *got = outcome_of_case(ic, "rep_empty");
    /* an empty string, or an error: either is fine, as long as it returns */
    cr_assert(!strcmp(got, "reject ") || !strncmp(got, "reject interceptor error: ", 26),
              "%s", got);
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor_hostile,
     table_insert_and_remove_with_a_lying_length_are_stopped, .timeout = 5)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    expect_contained(ic, "insert_lying_length", "the script ran", 2.0);
    expect_contained(ic, "remove_lying_length", "the script ran", 2.0);
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor_hostile, an_xpcall_handler_that_loops_is_stopped, .timeout = 5)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    expect_contained(ic, "xpcall_handler_loop", BUDGET_SPENT, 2.0);
    processor_interceptor_destroy(ic);
}

/* C functions whose work is not instructions are charged for it. */
Test(processor_interceptor_hostile, work_done_in_c_is_charged)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", FEW_INSTRUCTIONS);
    expect_contained(ic, "table_move", BUDGET_SPENT, 2.0);
    expect_contained(ic, "utf8_len", BUDGET_SPENT, 2.0);
    processor_interceptor_stats_t stats;
    processor_interceptor_stats(ic, &stats);
    cr_assert_eq(stats.over_instructions, 2);
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor_hostile, nothing_outside_the_sandbox_can_be_reached)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    cr_assert_str_eq(outcome_of_case(ic, "escape"), "reject reached:");
    cr_assert_str_eq(outcome_of_case(ic, "ok"), "reject still serving");
    processor_interceptor_destroy(ic);
}

/* Finalizers and weak tables would make outcomes depend on when the collector runs. */
Test(processor_interceptor_hostile, gc_and_weak_metatables_are_refused)
{
    processor_interceptor_t *ic =
        load_file(INTERCEPTORS_DIR, "hostile.lua", DEFAULT_INSTRUCTIONS);
    expect_contained(ic, "gc", "setmetatable: __gc is not available to interceptors",
                     2.0);
    expect_contained(ic, "mode", "setmetatable: weak tables (__mode) are not available",
                     2.0);
    processor_interceptor_destroy(ic);
}

/* ---- threads ---- */

typedef struct thread_arg_s {
    processor_interceptor_t *ic;
    int id;
    int wrong; /* outcomes that were not the expected one */
} thread_arg_t;

static void *thread_calls(void *opaque)
{
    thread_arg_t *arg = opaque;
    for (int i = 0; i < 200; i++) {
        char flush[512], want[128], got[512];
        snprintf(flush, sizeof(flush),
                 "{\"type\":\"flush\",\"client\":\"c%d\",\"seq\":%d,\"from\":0,"
                 "\"context\":{\"user\":\"u%d\"},\"completions\":[{\"command\":{"
                 "\"action\":\"create\",\"path\":[\"todos\"],\"props\":{\"i\":%d}},"
                 "\"createdId\":\"x\"}]}",
                 arg->id, i + 1, arg->id, i);
        snprintf(want, sizeof(want),
                 "props {\"createdAt\":%d,\"createdBy\":\"u%d\",\"i\":%d}", i, arg->id,
                 i);
        char ts[600];
        /* meta.timestamp: the flush's own field */
        snprintf(ts, sizeof(ts), "%.*s\"timestamp\":%d,%s", 1, flush, i, flush + 1);
        outcome_into(arg->ic, "{\"todos\":{}}", ts, (uint64_t)i, got, sizeof(got));
        if (strcmp(got, want) != 0)
            arg->wrong++;
    }
    return NULL;
}

Test(processor_interceptor_threads, two_threads_calling_at_once_get_their_own_results)
{
    processor_interceptor_t *ic =
        load_file(EXAMPLES_DIR, "created_by.lua", FEW_INSTRUCTIONS);
    pthread_t threads[2];
    thread_arg_t args[2];
    for (int t = 0; t < 2; t++) {
        args[t] = (thread_arg_t){.ic = ic, .id = t};
        cr_assert_eq(pthread_create(&threads[t], NULL, thread_calls, &args[t]), 0);
    }
    for (int t = 0; t < 2; t++) {
        pthread_join(threads[t], NULL);
        cr_assert_eq(args[t].wrong, 0, "thread %d", t);
    }
    processor_interceptor_stats_t stats;
    processor_interceptor_stats(ic, &stats);
    cr_assert_eq(stats.calls, 400);
    cr_assert_eq(stats.new_props, 400);
    processor_interceptor_destroy(ic);
}
