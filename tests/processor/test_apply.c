/* tests/processor/test_apply.c - `flushout-processor apply`: NDJSON in, one reply per
 * request out, options from the table. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/json.h"
#include "processor/cmd_apply.h"
#include "processor/cmd_inspect.h"
#include "processor/options.h"

static char state_dir[] = "/tmp/flushout-test-apply-XXXXXX";
static processor_config_t cfg;

static void setup(void)
{
    cr_assert_not_null(mkdtemp(state_dir));
}

static void teardown(void)
{
    processor_config_clear(&cfg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", state_dir);
    cr_assert_eq(system(cmd), 0);
    strcpy(state_dir, "/tmp/flushout-test-apply-XXXXXX");
}

TestSuite(processor_apply, .init = setup, .fini = teardown);

static void load(const char *extra_flag, const char *extra_value)
{
    char *argv[] = {"--state-dir", state_dir,          "--ids",
                    "sequential",  (char *)extra_flag, (char *)extra_value};
    char errstr[256];
    int argc = extra_flag ? 6 : 4;
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", argc, argv,
                                       errstr, sizeof(errstr)),
                 0, "%s", errstr);
}

/* Runs apply over input and returns its output (caller frees). */
static char *run(const char *input)
{
    FILE *in = fmemopen((void *)input, strlen(input), "r");
    char *output = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&output, &size);
    cr_assert_eq(processor_cmd_apply(&cfg, in, out), 0);
    fclose(in);
    fclose(out);
    return output;
}

/* The n-th line of text (0-based), as a value. */
static codec_value_t *line(const char *text, int n)
{
    for (int i = 0; i < n; i++) {
        text = strchr(text, '\n');
        cr_assert_not_null(text, "fewer than %d lines", n + 1);
        text++;
    }
    const char *end = strchr(text, '\n');
    cr_assert_not_null(end);
    codec_value_t *v;
    char errstr[256];
    cr_assert_eq(
        codec_json_decode(text, (size_t)(end - text), NULL, &v, errstr, sizeof(errstr)),
        CODEC_OK, "%s", errstr);
    return v;
}

static int count_lines(const char *text)
{
    int n = 0;
    for (; *text; text++)
        n += *text == '\n';
    return n;
}

static void expect_line(const char *output, int n, const char *expected_json)
{
    codec_value_t *got = line(output, n);
    codec_value_t *expected;
    char errstr[256];
    cr_assert_eq(codec_json_decode(expected_json, strlen(expected_json), NULL, &expected,
                                   errstr, sizeof(errstr)),
                 CODEC_OK);
    char *got_json = codec_json_encode(got, NULL);
    cr_assert(codec_value_equal(got, expected), "line %d: expected %s\n got %s", n,
              expected_json, got_json);
    free(got_json);
    codec_value_destroy(got);
    codec_value_destroy(expected);
}

static const char *error_code(const codec_value_t *reply)
{
    const codec_value_t *type = codec_map_get(reply, "type", 4);
    cr_assert_str_eq(type->u.str.ptr, "error");
    return codec_map_get(codec_map_get(reply, "error", 5), "code", 4)->u.str.ptr;
}

Test(processor_apply, answers_every_request_in_order_and_keeps_going_after_bad_lines)
{
    load(NULL, NULL);
    char *out = run(
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"c\",\"seq\":1,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}\n"
        "this is not json\n"
        "\n"
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"c\",\"seq\":2,\"from\":1,"
        "\"completions\":[{\"command\":{\"action\":\"smash\"}}]}\n"
        "{\"type\":\"flush\",\"client\":\"c\",\"seq\":3,\"from\":0,\"completions\":[]}\n"
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"c\",\"seq\":4}\n"
        "{\"type\":\"snapshot\",\"model\":\"b\",\"client\":\"c\",\"seq\":5}\n");
    cr_assert_eq(count_lines(out), 6, "one reply per request, blank lines skipped:\n%s",
                 out);
    expect_line(
        out, 0,
        "{\"type\":\"flushResult\",\"model\":\"a\",\"client\":\"c\",\"seq\":1,"
        "\"applied\":{\"from\":0,\"completions\":[{\"command\":{\"action\":\"create\"},"
        "\"createdId\":\"1\"}]}}");
    codec_value_t *v = line(out, 1);
    cr_assert_str_eq(error_code(v), "invalid_json");
    codec_value_destroy(v);
    v = line(out, 2);
    cr_assert_str_eq(error_code(v), "unknown_action");
    cr_assert_str_eq(codec_map_get(v, "client", 6)->u.str.ptr, "c");
    cr_assert_eq(codec_map_get(v, "seq", 3)->u.i, 2);
    codec_value_destroy(v);
    v = line(out, 3);
    cr_assert_str_eq(error_code(v), "missing_field");
    codec_value_destroy(v);
    expect_line(out, 4,
                "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"c\",\"seq\":4,"
                "\"snapshot\":{\"commandCount\":1,\"document\":{\"1\":{}}}}");
    expect_line(out, 5,
                "{\"type\":\"snapshot\",\"model\":\"b\",\"client\":\"c\",\"seq\":5,"
                "\"snapshot\":{\"commandCount\":0,\"document\":{}}}");
    free(out);
}

Test(processor_apply, serves_history_within_what_is_kept)
{
    load("--history", "2");
    char *out = run(
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"c\",\"seq\":1,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"x\"},"
        "{\"command\":{\"action\":\"update\",\"path\":[\"x\"],\"props\":{\"n\":1}}},"
        "{\"command\":{\"action\":\"detete\",\"path\":[\"x\"]}}]}\n"
        "{\"type\":\"history\",\"model\":\"a\",\"client\":\"c\",\"seq\":2,\"from\":1,"
        "\"to\":2}\n"
        "{\"type\":\"history\",\"model\":\"a\",\"client\":\"c\",\"seq\":3,\"from\":0}\n"
        "{\"type\":\"history\",\"model\":\"a\",\"client\":\"c\",\"seq\":4,\"from\":2,"
        "\"to\":9}\n");
    expect_line(
        out, 1,
        "{\"type\":\"history\",\"model\":\"a\",\"client\":\"c\",\"seq\":2,\"from\":1,"
        "\"completions\":[{\"command\":{\"action\":\"update\",\"path\":[\"x\"],"
        "\"props\":{\"n\":1}}}]}");
    codec_value_t *v = line(out, 2);
    cr_assert_str_eq(error_code(v), "history_unavailable");
    codec_value_destroy(v);
    v = line(out, 3);
    cr_assert_str_eq(error_code(v), "bad_range");
    codec_value_destroy(v);
    free(out);
}

Test(processor_apply, new_models_start_from_the_initial_document)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/initial.json", state_dir);
    FILE *fp = fopen(path, "w");
    fputs("{\"todos\":{},\"title\":\"list\"}", fp);
    fclose(fp);
    load("--initial-document", path);
    char *out =
        run("{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"c\",\"seq\":1}\n");
    expect_line(out, 0,
                "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"c\",\"seq\":1,"
                "\"snapshot\":{\"commandCount\":0,\"document\":{\"todos\":{},\"title\":"
                "\"list\"}}}");
    free(out);
}

Test(processor_apply, options_come_from_the_table_with_clear_errors)
{
    char errstr[256];
    char *bad_enum[] = {"--state-dir", "x", "--ids", "random"};
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", 4, bad_enum,
                                       errstr, sizeof(errstr)),
                 -1);
    cr_assert(strstr(errstr, "hash|sequential"), "%s", errstr);
    processor_config_clear(&cfg);

    char *missing[] = {"--history", "3"};
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", 2, missing,
                                       errstr, sizeof(errstr)),
                 -1);
    cr_assert(strstr(errstr, "--state-dir is required"), "%s", errstr);
    processor_config_clear(&cfg);

    char *negative[] = {"--state-dir", "x", "--history=-1"};
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", 3, negative,
                                       errstr, sizeof(errstr)),
                 -1);
    processor_config_clear(&cfg);

    setenv("FLUSHOUT_HISTORY", "7", 1);
    char *ok[] = {"--state-dir=x"};
    cr_assert_eq(processor_config_load(&cfg, PROCESSOR_CMD_APPLY, "apply", 1, ok, errstr,
                                       sizeof(errstr)),
                 0, "%s", errstr);
    unsetenv("FLUSHOUT_HISTORY");
    cr_assert_eq(cfg.history, 7);
    cr_assert_str_eq(cfg.ids, "hash");
}

Test(processor_apply, a_second_run_continues_and_recognises_retries)
{
    load(NULL, NULL);
    const char *flushes =
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"alice\",\"seq\":1,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}\n"
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"bob\",\"seq\":7,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}\n";
    char *out = run(flushes);
    free(out);

    /* A new process on the same directory: bob's reply was lost and he retries. */
    out = run(
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"bob\",\"seq\":7,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"}]}\n"
        "{\"type\":\"flush\",\"model\":\"a\",\"client\":\"bob\",\"seq\":6,\"from\":0,"
        "\"completions\":[]}\n"
        "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"bob\",\"seq\":8}\n");
    expect_line(out, 0,
                "{\"type\":\"flushResult\",\"model\":\"a\",\"client\":\"bob\",\"seq\":7,"
                "\"duplicate\":true,\"applied\":{\"from\":2,\"completions\":[]},"
                "\"sync\":{\"isPartial\":true,\"diff\":{\"from\":0,\"completions\":["
                "{\"command\":{\"action\":\"create\"},\"createdId\":\"1\"},"
                "{\"command\":{\"action\":\"create\"},\"createdId\":\"3\"}]},"
                "\"mappedPaths\":{\"1\":[\"3\"]}}}");
    codec_value_t *v = line(out, 1);
    cr_assert_str_eq(error_code(v), "stale_seq");
    codec_value_destroy(v);
    expect_line(out, 2,
                "{\"type\":\"snapshot\",\"model\":\"a\",\"client\":\"bob\",\"seq\":8,"
                "\"snapshot\":{\"commandCount\":2,\"document\":{\"1\":{},\"3\":{}}}}");
    free(out);
}

/* Runs inspect with the current cfg and returns its output (caller frees). */
static char *inspect(void)
{
    char *text = NULL;
    size_t size;
    FILE *fp = open_memstream(&text, &size);
    cr_assert_eq(processor_cmd_inspect(&cfg, fp), 0);
    fclose(fp);
    return text;
}

static int64_t int_field(const codec_value_t *v, const char *name)
{
    const codec_value_t *f = codec_map_get(v, name, strlen(name));
    cr_assert_not_null(f, "no field %s", name);
    cr_assert_eq(f->type, CODEC_VALUE_INT, "%s is not an integer", name);
    return f->u.i;
}

Test(processor_apply, inspect_lists_and_prints_what_apply_stored)
{
    load(NULL, NULL);
    char *out = run(
        "{\"type\":\"flush\",\"model\":\"m1\",\"client\":\"c\",\"seq\":1,\"from\":0,"
        "\"completions\":[{\"command\":{\"action\":\"create\",\"props\":{\"t\":\"x\"}},"
        "\"createdId\":\"1\"},{\"command\":{\"action\":\"update\",\"path\":[\"1\"],"
        "\"props\":{\"t\":\"y\"}}}]}\n");
    free(out);

    char *listing = inspect();
    cr_assert_eq(count_lines(listing), 2, "%s", listing);
    codec_value_t *partition = line(listing, 0);
    cr_assert_eq(int_field(partition, "partition"), 0);
    cr_assert_eq(int_field(partition, "models"), 1);
    cr_assert_gt(int_field(partition, "storedBytes"), 0);
    codec_value_t *model = line(listing, 1);
    cr_assert_str_eq(codec_map_get(model, "model", 5)->u.str.ptr, "m1");
    cr_assert_eq(int_field(model, "commandCount"), 2);
    cr_assert_eq(int_field(model, "clients"), 1);
    codec_value_destroy(partition);
    codec_value_destroy(model);
    free(listing);

    cfg.model = strdup("m1");
    char *snapshot = inspect();
    expect_line(
        snapshot, 0,
        "{\"partition\":0,\"model\":\"m1\",\"commandCount\":2,\"document\":{\"1\":{"
        "\"t\":\"y\"}}}");
    free(snapshot);
    free(cfg.model);
    cfg.model = NULL;

    cfg.history_of = strdup("m1");
    char *history = inspect();
    cr_assert_eq(count_lines(history), 2, "%s", history);
    expect_line(
        history, 1,
        "{\"partition\":0,\"model\":\"m1\",\"count\":1,\"completion\":{\"command\":{"
        "\"action\":\"update\",\"path\":[\"1\"],\"props\":{\"t\":\"y\"}}}}");
    free(history);
}

Test(processor_apply, a_document_stops_growing_at_its_limit_but_can_shrink)
{
    load("--max-document-bytes", "1100");
    /* Each flush creates an item of ~400 bytes: two fit, the third could not. */
    char input[4096] = "";
    size_t off = 0;
    for (int i = 0; i < 3; i++)
        off += (size_t)snprintf(
            input + off, sizeof(input) - off,
            "{\"type\":\"flush\",\"model\":\"m\",\"client\":\"c\",\"seq\":%d,"
            "\"from\":%d,\"completions\":[{\"command\":{\"action\":"
            "\"create\",\"props\":{\"text\":\"%0400d\"}},\"createdId\":"
            "\"i%d\"}]}\n",
            i + 1, i, i, i);
    snprintf(
        input + off, sizeof(input) - off,
        "{\"type\":\"flush\",\"model\":\"m\",\"client\":\"c\",\"seq\":4,\"from\":2,"
        "\"completions\":[{\"command\":{\"action\":\"detete\",\"path\":[\"i0\"]}}]}\n");
    char *out = run(input);
    codec_value_t *third = line(out, 2);
    cr_assert_str_eq(error_code(third), "too_large");
    codec_value_destroy(third);
    codec_value_t *shrink = line(out, 3);
    cr_assert_str_eq(codec_map_get(shrink, "type", 4)->u.str.ptr, "flushResult",
                     "a delete passes when the document is full");
    codec_value_destroy(shrink);
    free(out);
}
