/* tests/processor/test_interceptor_examples.c - the example interceptors of
 * deploy/interceptors/ (see its README.md), run through a handler's master as
 * `apply`, `run` and `dev` run them: the replies clients get and the documents. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "interceptor_test.h"

/* ---- created_by.lua ---- */

Test(processor_interceptor_examples, created_by_stamps_the_user_and_the_time_on_creates)
{
    processor_interceptor_t *ic =
        load_file(EXAMPLES_DIR, "created_by.lua", DEFAULT_INSTRUCTIONS);
    model_t m;
    model_open(&m, ic, "{\"todos\":{}}");
    /* a forged createdBy is overwritten; the update passes as sent */
    const char *forged =
        CREATE_TODO("a", "{\"title\":\"milk\",\"createdBy\":\"mallory\"}");
    const char *update = UPDATE_TODO("a", "{\"done\":true}");
    char completions[512];
    snprintf(completions, sizeof(completions), "%s,%s", forged, update);
    const char *reply =
        model_flush(&m, "\"timestamp\":1700000000000," USER("alice"), completions);
    cr_assert_null(strstr(reply, "\"errors\""), "%s", reply);
    cr_assert_str_eq(
        model_document(&m),
        "{\"todos\":{\"a\":{\"createdAt\":1700000000000,\"createdBy\":\"alice\","
        "\"title\":\"milk\",\"done\":true}}}");

    /* no user: refused; no timestamp: no createdAt */
    reply = model_flush(&m, "", CREATE_TODO("b", "{\"title\":\"x\"}"));
    cr_assert_str_eq(
        reply, "{\"type\":\"flushResult\",\"model\":\"m\",\"client\":\"c\",\"seq\":2,"
               "\"applied\":{\"from\":2,\"completions\":[]},\"sync\":{\"isPartial\":"
               "true,\"diff\":{\"from\":2,\"completions\":[]},\"mappedPaths\":{}},"
               "\"errors\":[{\"action\":\"create\",\"path\":[\"todos\"],"
               "\"errorMessage\":\"only a signed-in user can create items\"}]}");
    reply = model_flush(
        &m, USER("bob"),
        CREATE_TODO("b", "{\"title\":\"x\"}") ",{\"command\":{\"action\":"
                                              "\"detete\",\"path\":[\"todos\","
                                              "\"a\"]}}");
    cr_assert_null(strstr(reply, "\"errors\""), "%s", reply);
    cr_assert_str_eq(model_document(&m),
                     "{\"todos\":{\"b\":{\"createdBy\":\"bob\",\"title\":\"x\"}}}");
    model_close(&m);
    processor_interceptor_destroy(ic);
}

/* ---- todo_limit.lua (MAX_TODOS = 3) ---- */

Test(processor_interceptor_examples, todo_limit_refuses_a_users_fourth_todo)
{
    processor_interceptor_t *ic =
        load_file(EXAMPLES_DIR, "todo_limit.lua", DEFAULT_INSTRUCTIONS);
    model_t m;
    model_open(&m, ic,
               "{\"todos\":{\"b1\":{\"title\":\"bob's\",\"createdBy\":\"bob\"}}}");
    /* within one flush, each create sees the ones before it */
    const char *reply = model_flush(
        &m, USER("alice"),
        CREATE_TODO("a1", "{\"title\":\"1\"}") "," CREATE_TODO(
            "a2",
            "{\"title\":\"2\"}") "," CREATE_TODO("a3",
                                                 "{\"title\":\"3\"}") "," CREATE_TODO("a"
                                                                                      "4",
                                                                                      "{"
                                                                                      "\""
                                                                                      "ti"
                                                                                      "tl"
                                                                                      "e"
                                                                                      "\""
                                                                                      ":"
                                                                                      "\""
                                                                                      "4"
                                                                                      "\""
                                                                                      "}"));
    expect_contains(reply, "\"errors\":[{\"action\":\"create\",\"path\":[\"todos\"],"
                           "\"errorMessage\":\"alice already has 3 todos, the most "
                           "allowed\"}]");
    cr_assert_eq(model_count(&m), 3);
    cr_assert_str_eq(model_document(&m),
                     "{\"todos\":{\"b1\":{\"title\":\"bob's\",\"createdBy\":\"bob\"},"
                     "\"a1\":{\"createdBy\":\"alice\",\"title\":\"1\"},"
                     "\"a2\":{\"createdBy\":\"alice\",\"title\":\"2\"},"
                     "\"a3\":{\"createdBy\":\"alice\",\"title\":\"3\"}}}");

    /* in a later flush too; bob's own count is his */
    reply = model_flush(&m, USER("alice"), CREATE_TODO("a5", "{\"title\":\"5\"}"));
    expect_contains(reply, "alice already has 3 todos");
    reply = model_flush(&m, USER("bob"), CREATE_TODO("b2", "{\"title\":\"b\"}"));
    cr_assert_null(strstr(reply, "\"errors\""), "%s", reply);

    /* one deleted: one more allowed; no user: refused; elsewhere: not counted */
    reply = model_flush(
        &m, USER("alice"),
        "{\"command\":{\"action\":\"detete\",\"path\":[\"todos\",\"a1\"]}}," CREATE_TODO(
            "a6", "{\"title\":\"6\"}") "," CREATE_TODO("a7", "{\"title\":\"7\"}"));
    expect_contains(reply, "\"errors\":[{\"action\":\"create\",\"path\":[\"todos\"],"
                           "\"errorMessage\":\"alice already has 3 todos, the most "
                           "allowed\"}]");
    reply = model_flush(&m, "", CREATE_TODO("n", "{\"title\":\"n\"}"));
    expect_contains(reply, "\"errorMessage\":\"only a signed-in user can create todos\"");
    reply = model_flush(&m, "",
                        "{\"command\":{\"action\":\"create\",\"path\":[],\"props\":{}},"
                        "\"createdId\":\"notes\"}");
    cr_assert_null(strstr(reply, "\"errors\""), "%s", reply);
    cr_assert_eq(model_count(&m), 7);
    model_close(&m);
    processor_interceptor_destroy(ic);
}

/* ---- fields.lua ---- */

static const char *create_with(processor_interceptor_t *ic, const char *props)
{
    char command[2048];
    snprintf(command, sizeof(command),
             "{\"action\":\"create\",\"path\":[\"todos\"],\"props\":%s}", props);
    return outcome_on(ic, "{\"todos\":{}}", command);
}

static const char *update_with(processor_interceptor_t *ic, const char *props)
{
    char command[2048];
    snprintf(command, sizeof(command),
             "{\"action\":\"update\",\"path\":[\"todos\",\"a\"],\"props\":%s}", props);
    return outcome_on(ic, "{\"todos\":{\"a\":{\"title\":\"t\"}}}", command);
}

Test(processor_interceptor_examples, fields_accepts_only_valid_todos)
{
    processor_interceptor_t *ic =
        load_file(EXAMPLES_DIR, "fields.lua", DEFAULT_INSTRUCTIONS);
    cr_assert_str_eq(create_with(ic, "{\"title\":\"milk\",\"done\":false}"), "accept");
    cr_assert_str_eq(create_with(ic, "{\"title\":\"milk\"}"), "accept");
    cr_assert_str_eq(create_with(ic, "{\"done\":false}"), "reject a todo needs a title");
    cr_assert_str_eq(create_with(ic, "{\"title\":\"\"}"),
                     "reject title must have 1 to 200 characters, not 0");
    cr_assert_str_eq(create_with(ic, "{\"title\":5}"),
                     "reject title must be a string, not a number");
    cr_assert_str_eq(create_with(ic, "{\"title\":\"t\",\"done\":\"yes\"}"),
                     "reject done must be a boolean, not a string");
    cr_assert_str_eq(create_with(ic, "{\"title\":\"t\",\"color\":\"red\"}"),
                     "reject unknown field \"color\" (a todo has title and done)");
    /* keys are checked in sorted order: the same problem is reported every time */
    cr_assert_str_eq(create_with(ic, "{\"title\":\"\",\"color\":\"red\"}"),
                     "reject unknown field \"color\" (a todo has title and done)");

    /* lengths in characters: 200 two-byte characters are fine, 201 ASCII are not */
    char title[1024], props[1100];
    title[0] = '\0';
    for (int i = 0; i < 200; i++)
        strcat(title, "\xc3\xa9");
    snprintf(props, sizeof(props), "{\"title\":\"%s\"}", title);
    cr_assert_str_eq(create_with(ic, props), "accept");
    memset(title, 'x', 201);
    title[201] = '\0';
    snprintf(props, sizeof(props), "{\"title\":\"%s\"}", title);
    cr_assert_str_eq(create_with(ic, props),
                     "reject title must have 1 to 200 characters, not 201");

    cr_assert_str_eq(update_with(ic, "{\"done\":true}"), "accept");
    cr_assert_str_eq(update_with(ic, "{\"done\":1}"),
                     "reject done must be a boolean, not a number");
    cr_assert_str_eq(update_with(ic, "{\"owner\":\"me\"}"),
                     "reject unknown field \"owner\" (a todo has title and done)");
    /* elsewhere in the document: not a todo */
    cr_assert_str_eq(
        outcome(ic, "{\"action\":\"update\",\"path\":[],\"props\":{\"any\":1}}"),
        "accept");
    processor_interceptor_destroy(ic);
}

/* Through the master: the valid commands of a flush are applied, the others fail. */
Test(processor_interceptor_examples, fields_through_the_master)
{
    processor_interceptor_t *ic =
        load_file(EXAMPLES_DIR, "fields.lua", DEFAULT_INSTRUCTIONS);
    model_t m;
    model_open(&m, ic, "{\"todos\":{}}");
    const char *reply = model_flush(
        &m, "",
        CREATE_TODO("a", "{\"title\":\"milk\",\"done\":false}") "," CREATE_TODO(
            "b", "{\"title\":\"eggs\",\"due\":1}") "," UPDATE_TODO("a",
                                                                   "{\"done\":true}"));
    expect_contains(reply,
                    "\"errors\":[{\"action\":\"create\",\"path\":[\"todos\"],"
                    "\"errorMessage\":\"unknown field \\\"due\\\" (a todo has title "
                    "and done)\"}]");
    cr_assert_str_eq(model_document(&m),
                     "{\"todos\":{\"a\":{\"title\":\"milk\",\"done\":true}}}");
    model_close(&m);
    processor_interceptor_destroy(ic);
}
