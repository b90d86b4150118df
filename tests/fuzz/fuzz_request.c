/* tests/fuzz/fuzz_request.c - libFuzzer target: request bytes -> decode -> apply ->
 * reply bytes, with the reply re-read as msgpack.
 *
 * Every input goes through codec_request_decode (record key "m") and then through one
 * processor_handler_t, the same step the Kafka processor runs per record. Inputs that
 * fail to decode are handled too, because their error replies (which quote parts of
 * the hostile input) must be valid msgpack as much as flush replies. The handler lives
 * across inputs so that flushes meet documents built by earlier inputs; it is rebuilt
 * every FUZZ_HANDLER_INPUTS inputs to keep memory bounded. Every other handler has an
 * interceptor that reads the document and context and gives each create and update
 * its own props back as newProps, so that hostile props go into Lua and back
 * (processor/interceptor_values.c).
 *
 * Checked properties (abort() on violation, which libFuzzer reports as a crash):
 *  - every reply decodes with codec_msgpack_decode and is a map with a string "type";
 *  - a decoded request re-packs to msgpack that decodes to an equal value. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "codec/request.h"
#include "processor/handler.h"
#include "processor/interceptor.h"
#include "reply_check.h"

/* Inputs per handler: enough for documents to grow and histories to wrap (history is
 * 5 commands), few enough that models and documents stay small. */
#define FUZZ_HANDLER_INPUTS 1000

static const char fuzz_initial_document[] = FUZZ_INITIAL_DOCUMENT;

static processor_handler_t *fuzz_handler;
static unsigned fuzz_inputs, fuzz_handlers;

static const char fuzz_script[] =
    "function intercept(document, command, context, meta)\n"
    "  local n = 0\n"
    "  for k, v in pairs(document) do n = n + 1; if n > 4 then break end end\n"
    "  if context then for k, v in pairs(context) do n = n + 1 end end\n"
    "  if command.action == 'detete' then return nil end\n"
    "  if meta.seq % 5 == 0 then return {rejection = 'every fifth, ' .. n} end\n"
    "  return {newProps = command.props or {}}\n"
    "end\n";

/* The interceptor, loaded once from a script written to a temporary file. */
static processor_interceptor_t *fuzz_interceptor(void)
{
    static processor_interceptor_t *ic;
    if (ic)
        return ic;
    char path[] = "/tmp/fuzz_request_XXXXXX";
    int fd = mkstemp(path);
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!fp || fputs(fuzz_script, fp) < 0 || fclose(fp)) {
        fprintf(stderr, "fuzz_request: cannot write the interceptor\n");
        abort();
    }
    processor_interceptor_conf_t conf = {.path = path,
                                         .max_instructions = 100000,
                                         .max_memory_bytes = 16u << 20,
                                         .limits = codec_limits_default};
    char errstr[512];
    ic = processor_interceptor_load(&conf, errstr, sizeof(errstr));
    unlink(path);
    if (!ic) {
        fprintf(stderr, "fuzz_request: %s\n", errstr);
        abort();
    }
    return ic;
}

static processor_handler_t *handler_get(void)
{
    if (fuzz_handler && fuzz_inputs++ < FUZZ_HANDLER_INPUTS)
        return fuzz_handler;
    processor_handler_destroy(fuzz_handler);
    fuzz_inputs = 1;

    codec_value_t *doc = NULL;
    char errstr[256];
    if (codec_json_decode(fuzz_initial_document, sizeof(fuzz_initial_document) - 1,
                          &codec_limits_default, &doc, errstr, sizeof(errstr))) {
        fprintf(stderr, "fuzz_request: initial document: %s\n", errstr);
        abort();
    }
    bool intercepted = fuzz_handlers++ % 2;
    processor_handler_conf_t conf = {
        .master = {.ids = STATE_IDS_SEQUENTIAL,
                   .interceptor = intercepted ? processor_interceptor_call : NULL,
                   .interceptor_opaque = intercepted ? fuzz_interceptor() : NULL},
        .history = 5,
        .initial_document = doc,
        .limits = codec_limits_default,
    };
    fuzz_handler = processor_handler_new(&conf);
    codec_value_destroy(doc); /* the handler keeps a copy */
    return fuzz_handler;
}

/* The decoder accepts what the encoder writes: msgpack -> value -> msgpack -> value
 * gives the same value. */
static void check_round_trip(const codec_value_t *root)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    codec_msgpack_pack_value(&pk, root);

    codec_value_t *again = NULL;
    char errstr[512];
    codec_err_t err = codec_msgpack_decode(sb.data, sb.size, &codec_limits_default,
                                           &again, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "fuzz_request: re-packed request does not decode: %s: %s\n",
                codec_err_name(err), errstr);
        abort();
    }
    if (!codec_value_equal(root, again)) {
        fprintf(stderr, "fuzz_request: re-packed request decodes to a different value\n");
        abort();
    }
    codec_value_destroy(again);
    msgpack_sbuffer_destroy(&sb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static processor_output_t out;
    static int out_ready;
    codec_request_t req;
    char errstr[512];

    codec_err_t err =
        codec_request_decode((const char *)data, size, "m", 1, &codec_limits_default,
                             NULL, &req, errstr, sizeof(errstr));
    if (req.root)
        check_round_trip(req.root);
    codec_request_clear(&req);

    if (!out_ready) {
        processor_output_init(&out);
        out_ready = 1;
    }
    processor_output_reset(&out);
    processor_handler_handle(handler_get(), -1, -1, "m", 1, (const char *)data, size,
                             &out);
    fuzz_check_reply(&out);
    /* The handler decodes the same bytes, so it must reject exactly what the decoder
     * rejected (a request that decodes may still get an error reply, e.g. a history
     * range that is not kept). */
    if (err && out.error != err) {
        fprintf(stderr, "fuzz_request: decode said %s, the handler said %s\n",
                codec_err_name(err), codec_err_name(out.error));
        abort();
    }
    return 0;
}
