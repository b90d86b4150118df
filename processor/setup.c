/* processor/setup.c - the options turned into the libraries' configurations. */
#include "setup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "catch_up.h"
#include "codec/alloc.h"
#include "codec/json.h"
#include "codec/msgpack.h"
#include "interceptor.h"
#include "kafka.h"
#include "log.h"

int processor_make_dirs(const char *path, char *errstr, size_t errstr_size)
{
    char *p = codec_xmemdup(path, strlen(path));
    int rc = 0;
    for (char *s = p + 1;; s++) {
        char c = *s;
        if (c != '/' && c != '\0')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            snprintf(errstr, errstr_size, "cannot create %s: %s", p, strerror(errno));
            rc = -1;
            break;
        }
        *s = c;
        if (!c)
            break;
    }
    free(p);
    return rc;
}

void processor_partition_dir(char *out, size_t out_size, const char *state_dir,
                             int32_t partition)
{
    snprintf(out, out_size, "%s/" PROCESSOR_PARTITION_DIR "%d", state_dir,
             (int)partition);
}

bool processor_partition_dir_parse(const char *name, int32_t *partition)
{
    int n;
    char rest;
    if (sscanf(name, PROCESSOR_PARTITION_DIR "%d%c", &n, &rest) != 1 || n < 0)
        return false;
    *partition = n;
    return true;
}

codec_value_t *processor_read_document(const char *path, const codec_limits_t *limits,
                                       char *errstr, size_t errstr_size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(errstr, errstr_size, "--initial-document %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, n;
    do {
        if (len + 65536 > cap)
            buf = codec_xrealloc(buf, cap = (cap + 65536) * 2);
        n = fread(buf + len, 1, cap - len, fp);
        len += n;
    } while (n > 0);
    fclose(fp);

    codec_value_t *doc = NULL;
    char err[400];
    if (codec_json_decode(buf, len, limits, &doc, err, sizeof(err)))
        snprintf(errstr, errstr_size, "--initial-document %s: %s", path, err);
    else if (doc->type != CODEC_VALUE_MAP) {
        snprintf(errstr, errstr_size, "--initial-document %s: expected a JSON object",
                 path);
        codec_value_destroy(doc);
        doc = NULL;
    }
    free(buf);
    return doc;
}

codec_limits_t processor_limits(const processor_config_t *cfg)
{
    return (codec_limits_t){
        .max_depth = (uint32_t)cfg->max_depth,
        .max_string_bytes = (uint32_t)cfg->max_string_bytes,
        .max_completions = (uint32_t)cfg->max_completions,
        .max_path_length = (uint32_t)cfg->max_path_length,
        .max_id_bytes = (uint32_t)cfg->max_id_bytes,
    };
}

state_master_conf_t processor_master_conf(const processor_config_t *cfg)
{
    return (state_master_conf_t){
        .ids = !strcmp(cfg->ids, "sequential") ? STATE_IDS_SEQUENTIAL : STATE_IDS_HASH,
        .interceptor = cfg->interceptor_loaded ? processor_interceptor_call : NULL,
        .interceptor_opaque = cfg->interceptor_loaded};
}

int processor_interceptor_setup(processor_config_t *cfg, char *errstr, size_t errstr_size)
{
    if (!cfg->interceptor)
        return 0;
    processor_interceptor_conf_t ic = {
        .path = cfg->interceptor,
        .max_instructions = cfg->interceptor_max_instructions,
        .max_memory_bytes = cfg->interceptor_max_memory_mb << 20,
        .limits = processor_limits(cfg),
    };
    cfg->interceptor_loaded = processor_interceptor_load(&ic, errstr, errstr_size);
    if (!cfg->interceptor_loaded)
        return -1;
    LOG_INFO("interceptor %s: sha256 %s, at most %llu instructions and %llu MB per "
             "command",
             cfg->interceptor, processor_interceptor_sha256(cfg->interceptor_loaded),
             (unsigned long long)cfg->interceptor_max_instructions,
             (unsigned long long)cfg->interceptor_max_memory_mb / 4);
    return 0;
}

processor_handler_conf_t processor_partition_handler_conf(const processor_config_t *cfg,
                                                          state_store_t *store,
                                                          codec_limits_t limits)
{
    return (processor_handler_conf_t){
        .store = store,
        .master = processor_master_conf(cfg),
        .history = cfg->history,
        .limits = limits,
        .max_document_bytes = cfg->max_document_bytes,
        .max_output_bytes = processor_max_output_bytes(cfg),
        .changes = true,
    };
}

state_store_conf_t processor_store_conf(const processor_config_t *cfg, const char *dir,
                                        int32_t partition, size_t cache_bytes,
                                        const codec_value_t *initial_document)
{
    return (state_store_conf_t){
        .dir = dir,
        .partition = partition,
        .fsync = cfg->fsync,
        .history = cfg->history,
        .snapshot_every = cfg->snapshot_every,
        .cache_bytes = cache_bytes,
        .clients_per_model = cfg->clients_per_model,
        .master = processor_master_conf(cfg),
        .initial_document = initial_document,
    };
}

char *processor_settings(const processor_config_t *cfg,
                         const codec_value_t *initial_document)
{
    /* The document as msgpack, hashed: equal files give equal settings. */
    unsigned long long doc_hash = 0;
    if (initial_document) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        codec_msgpack_pack_value(&pk, initial_document);
        doc_hash = (unsigned long long)XXH64(sb.data, sb.size, 0);
        msgpack_sbuffer_destroy(&sb);
    }
    char doc[32] = "{}";
    if (initial_document)
        snprintf(doc, sizeof(doc), "xxh64:%016llx", doc_hash);
    char *out = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&out, &len);
    if (!fp)
        abort(); /* out of memory, as codec_xmalloc() would */
    fprintf(fp,
            "ids=%s;history=%llu;snapshot-every=%llu;clients-per-model=%llu;"
            "max-depth=%llu;max-string-bytes=%llu;max-completions=%llu;"
            "max-path-length=%llu;max-id-bytes=%llu;max-document-bytes=%llu;"
            "max-record-bytes=%llu;partitioner=%s;initial-document=%s;reply-topics=%s;"
            "message.max.bytes=%zu",
            cfg->ids, (unsigned long long)cfg->history,
            (unsigned long long)cfg->snapshot_every,
            (unsigned long long)cfg->clients_per_model,
            (unsigned long long)cfg->max_depth, (unsigned long long)cfg->max_string_bytes,
            (unsigned long long)cfg->max_completions,
            (unsigned long long)cfg->max_path_length,
            (unsigned long long)cfg->max_id_bytes,
            (unsigned long long)cfg->max_document_bytes,
            (unsigned long long)cfg->max_record_bytes,
            cfg->partitioner ? cfg->partitioner : "any", doc,
            cfg->reply_topics ? cfg->reply_topics : "", processor_max_message_bytes(cfg));
    if (cfg->interceptor_loaded) /* last: processor_settings_id() stops before it */
        fprintf(fp, ";" INTERCEPTOR_SETTING "sha256:%s",
                processor_interceptor_sha256(cfg->interceptor_loaded));
    fclose(fp);
    return out;
}

/* The settings before the interceptor's entry: what records must agree on. */
static size_t settings_core_len(const char *settings)
{
    const char *at = strstr(settings, ";" INTERCEPTOR_SETTING);
    return at ? (size_t)(at - settings) : strlen(settings);
}

void processor_settings_id(const char *settings, char id[PROCESSOR_SETTINGS_ID_LEN + 1])
{
    snprintf(id, PROCESSOR_SETTINGS_ID_LEN + 1, "%016llx",
             (unsigned long long)XXH64(settings, settings_core_len(settings), 0));
}

/* The value of name in a settings string, or NULL; *len set. */
static const char *setting(const char *settings, const char *name, size_t name_len,
                           size_t *len)
{
    for (const char *s = settings; s && *s;) {
        size_t item = strcspn(s, ";");
        const char *eq = memchr(s, '=', item);
        if (eq && (size_t)(eq - s) == name_len && !memcmp(s, name, name_len)) {
            *len = item - name_len - 1;
            return eq + 1;
        }
        s += item + (s[item] == ';');
    }
    return NULL;
}

int processor_settings_diff(const char *recorded, const char *now, char *out,
                            size_t out_size)
{
    int differ = 0;
    size_t used = 0;
    out[0] = '\0';
    /* Every name of either string, each once: those of now, then any only recorded. */
    for (int pass = 0; pass < 2; pass++) {
        const char *names = pass ? recorded : now;
        for (const char *s = names; s && *s;) {
            size_t item = strcspn(s, ";");
            const char *eq = memchr(s, '=', item);
            size_t name_len = eq ? (size_t)(eq - s) : item, a_len = 0, b_len = 0;
            if (name_len == strlen(INTERCEPTOR_SETTING) - 1 &&
                !memcmp(s, INTERCEPTOR_SETTING, name_len)) {
                s += item + (s[item] == ';');
                continue; /* recorded, not enforced: see processor_settings() */
            }
            const char *a = setting(recorded, s, name_len, &a_len);
            const char *b = setting(now, s, name_len, &b_len);
            if ((pass == 0 || !b) &&
                (!a || !b || a_len != b_len || memcmp(a, b, a_len))) {
                differ++;
                int n = snprintf(out + used, out_size - used,
                                 "%s--%.*s %.*s when the state was built, %.*s now",
                                 used ? "; " : "", (int)name_len, s, a ? (int)a_len : 5,
                                 a ? a : "unset", b ? (int)b_len : 5, b ? b : "unset");
                if (n > 0)
                    used = used + (size_t)n < out_size ? used + (size_t)n : out_size - 1;
            }
            s += item + (s[item] == ';');
        }
    }
    return differ;
}

int processor_state_check(state_store_t *store, const char *dir,
                          const char *flushes_topic, int32_t partition_count,
                          const char *settings_now, bool *count_recorded, char **recorded,
                          char *errstr, size_t errstr_size)
{
    int32_t built_for = state_store_partition_count(store);
    char *settings = state_store_settings(store);
    char differ[1024];
    int rc = 0;
    if (built_for > 0 && built_for != partition_count) {
        snprintf(errstr, errstr_size,
                 "the state in %.200s was built for %d partitions of %s, which has %d: "
                 "" PROCESSOR_REPARTITION_HINT,
                 dir, built_for, flushes_topic, partition_count);
        rc = -1;
    } else if (settings &&
               processor_settings_diff(settings, settings_now, differ, sizeof(differ))) {
        snprintf(errstr, errstr_size,
                 "the state in %.200s was built with other settings: "
                 "%s; " PROCESSOR_SETTINGS_HINT,
                 dir, differ);
        rc = -1;
    }
    if (count_recorded)
        *count_recorded = built_for > 0;
    if (recorded && rc == 0) {
        *recorded = settings;
        settings = NULL;
    } else if (recorded) {
        *recorded = NULL;
    }
    free(settings);
    return rc;
}
