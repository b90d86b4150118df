/* processor/cmd_apply.c - `flushout-processor apply`: NDJSON requests in, replies out.
 *
 * Each line goes the way a Kafka record will: JSON -> value -> msgpack bytes ->
 * the record handler (the model id is the record key) -> msgpack reply -> JSON, so *
 * `apply` exercises the same decoder and encoder as the processor. State lives in the
 * RocksDB store in --state-dir; each request is one processing step, committed before
 * its reply is written, so a reply is never seen for a change that is not stored.
 * Running apply again on the same directory continues from the stored state, and a
 * flush whose client and seq were already applied gets a "duplicate" reply. */
#include "cmd_apply.h"

#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "codec/msgpack.h"
#include "codec/reply.h"
#include "handler.h"
#include "setup.h"

void processor_print_json(FILE *out, const codec_value_t *v)
{
    size_t len;
    char *json = codec_json_encode(v, &len);
    fwrite(json, 1, len, out);
    fputc('\n', out);
    free(json);
}

static void write_json(FILE *out, const char *msgpack, size_t len)
{
    codec_value_t *v = NULL;
    char err[256];
    /* Replies are ours, so this decode cannot fail short of a bug; say so if it does. */
    if (codec_msgpack_decode(msgpack, len, &codec_limits_trusted, &v, err, sizeof(err))) {
        fprintf(stderr, "apply: internal error re-reading a reply: %s\n", err);
        abort();
    }
    processor_print_json(out, v);
    codec_value_destroy(v);
}

int processor_cmd_apply(const processor_config_t *cfg, FILE *in, FILE *out)
{
    char errstr[512];
    codec_limits_t limits = processor_limits(cfg);
    if (processor_make_dirs(cfg->state_dir, errstr, sizeof(errstr))) {
        fprintf(stderr, "apply: %s\n", errstr);
        return 1;
    }
    codec_value_t *initial = NULL;
    if (cfg->initial_document &&
        !(initial = processor_read_document(cfg->initial_document, &limits, errstr,
                                            sizeof(errstr)))) {
        fprintf(stderr, "apply: %s\n", errstr);
        return 1;
    }
    state_master_conf_t master = processor_master_conf(cfg);
    state_store_conf_t store_conf = processor_store_conf(
        cfg, cfg->state_dir, 0, (size_t)cfg->cache_mb << 20, initial);
    state_store_t *store = state_store_open(&store_conf, errstr, sizeof(errstr));
    codec_value_destroy(initial);
    if (!store) {
        fprintf(stderr, "apply: %s\n", errstr);
        return 1;
    }
    processor_handler_conf_t conf = {
        .store = store,
        .master = master,
        .history = cfg->history,
        .limits = limits,
        .max_document_bytes = cfg->max_document_bytes,
    };
    processor_handler_t *h = processor_handler_new(&conf);
    int rc = 0;

    processor_output_t result;
    processor_output_init(&result);
    msgpack_sbuffer record;
    msgpack_sbuffer_init(&record);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &record, msgpack_sbuffer_write);

    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) != -1) {
        if (strspn(line, " \t\r\n") == (size_t)n)
            continue; /* blank lines are not requests */
        codec_value_t *v = NULL;
        codec_err_t err =
            codec_json_decode(line, (size_t)n, &limits, &v, errstr, sizeof(errstr));
        processor_output_reset(&result);
        if (err) {
            codec_reply_to_t nobody = {0};
            msgpack_packer rpk;
            msgpack_packer_init(&rpk, &result.reply, msgpack_sbuffer_write);
            codec_reply_pack_error(&rpk, &nobody, err, errstr);
        } else {
            /* The "model" field plays the record key. */
            const codec_value_t *model =
                v->type == CODEC_VALUE_MAP ? codec_map_get(v, "model", 5) : NULL;
            bool keyed = model && model->type == CODEC_VALUE_STR;
            msgpack_sbuffer_clear(&record);
            codec_msgpack_pack_value(&pk, v);
            processor_handler_handle(h, -1, -1, keyed ? model->u.str.ptr : NULL,
                                     keyed ? model->u.str.len : 0, record.data,
                                     record.size, &result);
            codec_value_destroy(v);
            if (processor_handler_commit(h, -1, errstr, sizeof(errstr))) {
                fprintf(stderr, "apply: %s\n", errstr);
                rc = 1;
                break;
            }
        }
        write_json(out, result.reply.data, result.reply.size);
    }
    free(line);
    fflush(out);

    msgpack_sbuffer_destroy(&record);
    processor_output_destroy(&result);
    processor_handler_destroy(h);
    state_store_close(store);
    return rc || ferror(out) ? 1 : 0;
}
