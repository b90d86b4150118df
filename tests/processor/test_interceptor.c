/* tests/processor/test_interceptor.c - Lua interceptors (processor/interceptor.h)
 * against processor/INTERCEPTORS.md: loading, outcomes, values both ways, the
 * document view and meta. The sandbox, determinism, hostile scripts and threads are in
 * test_interceptor_safety.c, the examples in test_interceptor_examples.c; the helpers
 * in interceptor_test.h. Expected values are written out from the documentation and
 * flushout@1.1.1's functions.ts, not copied from our output. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "interceptor_test.h"

/* ---- loading ---- */

/* A script that does not load stops startup (processor/setup.c): the message must
 * name the file and the line, for the operator to fix it. */
Test(processor_interceptor, a_syntax_error_fails_with_the_file_and_line)
{
    char err[1024] = "", path[64];
    processor_interceptor_t *ic =
        try_load("function intercept()\n  return {\nend\n",
                 conf_for(NULL, DEFAULT_INSTRUCTIONS), err, sizeof(err), path, sizeof(path));
    cr_assert_null(ic);
    const char *base = strrchr(path, '/') + 1;
    char where[128];
    snprintf(where, sizeof(where), "%s:3:", base); /* the '}' expected at line 3 */
    expect_contains(err, where);
}

Test(processor_interceptor, a_script_without_intercept_fails)
{
    char err[1024] = "", path[64];
    processor_interceptor_t *ic =
        try_load("function intercpt() end\n", conf_for(NULL, DEFAULT_INSTRUCTIONS), err,
                 sizeof(err), path, sizeof(path));
    cr_assert_null(ic);
    expect_contains(err, path);
    expect_contains(err, "defines no function intercept");
    /* intercept defined as something else than a function */
    ic = try_load("intercept = 1\n", conf_for(NULL, DEFAULT_INSTRUCTIONS), err,
                  sizeof(err), path, sizeof(path));
    cr_assert_null(ic);
    expect_contains(err, "defines no function intercept");
}

Test(processor_interceptor, an_error_at_the_top_level_fails_with_its_line)
{
    char err[1024] = "", path[64];
    processor_interceptor_t *ic =
        try_load("function intercept() end\n\nerror('bad setup')\n",
                 conf_for(NULL, DEFAULT_INSTRUCTIONS), err, sizeof(err), path, sizeof(path));
    cr_assert_null(ic);
    char where[128];
    snprintf(where, sizeof(where), "%s:3: bad setup", strrchr(path, '/') + 1);
    expect_contains(err, where);
    /* a top level that never ends is stopped by the budget too */
    ic = try_load("function intercept() end\nwhile true do end\n",
                  conf_for(NULL, FEW_INSTRUCTIONS), err, sizeof(err), path, sizeof(path));
    cr_assert_null(ic);
    expect_contains(err, "budget");
}

Test(processor_interceptor, a_missing_file_fails)
{
    char err[1024] = "";
    processor_interceptor_conf_t conf =
        conf_for("/nonexistent/interceptor.lua", DEFAULT_INSTRUCTIONS);
    cr_assert_null(processor_interceptor_load(&conf, err, sizeof(err)));
    expect_contains(err, "/nonexistent/interceptor.lua");
    expect_contains(err, "No such file");
}

/* ---- outcomes, through the master ---- */

Test(processor_interceptor, nil_accepts_the_command_as_sent)
{
    processor_interceptor_t *ic = load_inline("function intercept() return nil end\n",
                                              DEFAULT_INSTRUCTIONS);
    model_t m;
    model_open(&m, ic, NULL);
    const char *create = "{\"command\":{\"action\":\"create\",\"path\":[\"todos\"],"
                         "\"props\":{\"title\":\"t\"},\"parentDefault\":{}},"
                         "\"createdId\":\"a\"}";
    char want[1024];
    snprintf(want, sizeof(want),
             "{\"type\":\"flushResult\",\"model\":\"m\",\"client\":\"c\",\"seq\":1,"
             "\"applied\":{\"from\":0,\"completions\":[%s]}}",
             create);
    cr_assert_str_eq(model_flush(&m, "", create), want, "no sync: nothing intercepted");
    cr_assert_str_eq(model_document(&m), "{\"todos\":{\"a\":{\"title\":\"t\"}}}");
    model_close(&m);
    processor_interceptor_destroy(ic);
}

/* flushout's applyCommandWithInterception: the command is applied with newProps and
 * without parentDefault, and shows so in applied and in the sync. */
Test(processor_interceptor, new_props_replace_props_on_create_and_update)
{
    processor_interceptor_t *ic =
        load_inline("function intercept(d, c)\n"
                    "  if c.action == 'detete' then return nil end\n"
                    "  return {newProps = {n = c.props.n * 10}, rejection = 'ignored'}\n"
                    "end\n",
                    DEFAULT_INSTRUCTIONS);
    model_t m;
    model_open(&m, ic, "{\"todos\":{}}");
    const char *reply = model_flush(
        &m, "",
        "{\"command\":{\"action\":\"create\",\"path\":[\"todos\"],\"props\":{\"n\":1},"
        "\"parentDefault\":{\"x\":1}},\"createdId\":\"a\"}," UPDATE_TODO("a", "{\"n\":2}"));
    const char *applied = "[{\"command\":{\"action\":\"create\",\"path\":[\"todos\"],"
                          "\"props\":{\"n\":10}},\"createdId\":\"a\"},"
                          "{\"command\":{\"action\":\"update\",\"path\":[\"todos\","
                          "\"a\"],\"props\":{\"n\":20}}}]";
    char want[2048];
    snprintf(want, sizeof(want),
             "{\"type\":\"flushResult\",\"model\":\"m\",\"client\":\"c\",\"seq\":1,"
             "\"applied\":{\"from\":0,\"completions\":%s},\"sync\":{\"isPartial\":true,"
             "\"diff\":{\"from\":0,\"completions\":%s},\"mappedPaths\":{}}}",
             applied, applied);
    cr_assert_str_eq(reply, want);
    cr_assert_str_eq(model_document(&m), "{\"todos\":{\"a\":{\"n\":20}}}");

    /* parentDefault is dropped: a create below a missing parent fails */
    reply = model_flush(&m, "",
                        "{\"command\":{\"action\":\"create\",\"path\":[\"lists\"],"
                        "\"props\":{\"n\":1},\"parentDefault\":{}},\"createdId\":\"b\"}");
    expect_contains(reply, "\"errors\":[{\"action\":\"create\",\"path\":[\"lists\"],"
                           "\"errorMessage\":\"No object at document path lists\"}]");
    model_close(&m);
    processor_interceptor_destroy(ic);
}

/* The rejected command fails with the message; the flush goes on with the next. */
Test(processor_interceptor, a_rejection_fails_the_command_with_its_message)
{
    processor_interceptor_t *ic =
        load_inline("function intercept(d, c)\n"
                    "  if c.props.n == 1 then return {rejection = 'no ones here'} end\n"
                    "end\n",
                    DEFAULT_INSTRUCTIONS);
    model_t m;
    model_open(&m, ic, "{\"todos\":{}}");
    const char *reply =
        model_flush(&m, "", CREATE_TODO("a", "{\"n\":1}") "," CREATE_TODO("b", "{\"n\":2}"));
    expect_contains(reply, "\"applied\":{\"from\":0,\"completions\":[" CREATE_TODO(
                               "b", "{\"n\":2}") "]}");
    expect_contains(reply, "\"errors\":[{\"action\":\"create\",\"path\":[\"todos\"],"
                           "\"errorMessage\":\"no ones here\"}]");
    cr_assert_str_eq(model_document(&m), "{\"todos\":{\"b\":{\"n\":2}}}");
    model_close(&m);
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor, new_props_on_a_delete_fail_it_with_the_rejection_or_a_message)
{
    processor_interceptor_t *ic =
        load_inline("function intercept(d, c)\n"
                    "  if c.path[2] == 'a' then return {newProps = {}, rejection = 'keep a'}\n"
                    "  else return {newProps = {x = function() end}} end\n"
                    "end\n",
                    DEFAULT_INSTRUCTIONS);
    /* flushout ignores newProps on a delete: not even converted (the function in them
     * is no error) */
    cr_assert_str_eq(outcome(ic, "{\"action\":\"detete\",\"path\":[\"todos\",\"a\"]}"),
                     "reject keep a");
    cr_assert_str_eq(outcome(ic, "{\"action\":\"detete\",\"path\":[\"todos\",\"b\"]}"),
                     "reject the interceptor gave newProps to a delete");
    processor_interceptor_stats_t stats;
    processor_interceptor_stats(ic, &stats);
    cr_assert_eq(stats.rejections, 2);
    cr_assert_eq(stats.new_props, 0);
    cr_assert_eq(stats.errors, 0);
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor, an_empty_result_gets_the_documented_message)
{
    processor_interceptor_t *ic =
        load_inline("function intercept() return {} end\n", DEFAULT_INSTRUCTIONS);
    cr_assert_str_eq(outcome(ic, UPDATE_X),
                     "reject the interceptor returned neither newProps nor rejection");
    processor_interceptor_destroy(ic);
}

Test(processor_interceptor, a_result_that_is_not_a_table_is_an_interceptor_error)
{
    processor_interceptor_t *ic =
        load_inline("function intercept(d, c) return c.props.r end\n", DEFAULT_INSTRUCTIONS);
    cr_assert_str_eq(
        outcome(ic, "{\"action\":\"update\",\"path\":[],\"props\":{\"r\":\"yes\"}}"),
        "reject interceptor error: intercept returned a string: expected nil or a table");
    cr_assert_str_eq(outcome(ic, "{\"action\":\"update\",\"path\":[],\"props\":{\"r\":1}}"),
                     "reject interceptor error: intercept returned a number: expected nil "
                     "or a table");
    processor_interceptor_stats_t stats;
    processor_interceptor_stats(ic, &stats);
    cr_assert_eq(stats.errors, 2);
    processor_interceptor_destroy(ic);
}

/* A rejection becomes a reply string: it must be valid UTF-8 and bounded. */
Test(processor_interceptor, a_rejection_is_cut_to_1_KiB_of_valid_utf8)
{
    processor_interceptor_t *ic =
        load_inline("function intercept(d, c)\n"
                    "  if c.props.x == 1 then return {rejection = 'ok\\xff\\xfe!'} end\n"
                    "  return {rejection = string.rep('\\u{e9}', 2000)}\n"
                    "end\n",
                    DEFAULT_INSTRUCTIONS);
    const char *got = outcome(ic, UPDATE_X);
    expect_prefix(got, "reject ok");
    cr_assert_null(strchr(got, '\xff'));
    cr_assert_null(strchr(got, '\xfe'));
    cr_assert(got[strlen(got) - 1] == '!', "the rest is kept: %s", got);

    got = outcome(ic, "{\"action\":\"update\",\"path\":[],\"props\":{\"x\":2}}");
    const char *msg = got + strlen("reject ");
    size_t len = strlen(msg);
    cr_assert_leq(len, 1024);
    cr_assert_geq(len, 1020);
    /* 2-byte characters cut at 1024 bytes: whole characters, or the cut one fixed up */
    codec_value_t *v = NULL;
    char json[2100];
    snprintf(json, sizeof(json), "\"%s\"", msg);
    char err[128];
    cr_assert_eq(codec_json_decode(json, strlen(json), NULL, &v, err, sizeof(err)),
                 CODEC_OK, "valid UTF-8: %s", err);
    codec_value_destroy(v);
    processor_interceptor_destroy(ic);
}
