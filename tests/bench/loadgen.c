/* tests/bench/loadgen.c - the end-to-end load generator: produces flush requests to
 * the flushes topic, consumes the replies, and measures each flush's round trip.
 *
 * Clients edit todo-list models as a flushout proxy would batch it: each flush holds
 * --commands creates, updates and deletes of the client's own items (so every command
 * applies, whatever other clients do), and names the command count the client last
 * heard of as "from". Clients are (model, k) pairs; client ids and model ids encode
 * their indexes ("c<i>", "m<j>") so replies are matched without a lookup table.
 *
 * Closed loop (default): at most --outstanding flushes per client and --window in all.
 * Open loop (--rate R): one flush every 1/R s whatever the replies do; a flush's round
 * trip counts from when it was due, not when it went out, so a backlog shows in the
 * latency instead of hiding (coordinated omission).
 *
 * Every reply is checked: one per flush, in order per client, for the right client and
 * seq, and (against the processor) with every command applied and no errors. A run with
 * a lost or wrong reply exits 1 and says so; its numbers are not a result.
 *
 * --ping N measures the broker's own floor instead: one record produced to the replies
 * topic and consumed back, N times in a row. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "codec/alloc.h"
#include "codec/msgpack.h"
#include "processor/kafka.h"
#include "processor/metrics.h"

#define MAX_PIDS         8
#define MAX_PROPS        64
#define SEED_CHUNK_BYTES (256 * 1024)
#define LIVE_ITEMS_MAX   8

typedef struct inflight_s {
    uint64_t seq;
    double due; /* when it was sent (closed loop) or due (open loop) */
    uint32_t commands;
    bool measured;
} inflight_t;

typedef struct client_s {
    uint32_t model, k;
    uint64_t next_seq, known;
    uint32_t inflight, head;   /* ring of outstanding flushes, oldest at head */
    uint32_t item_lo, item_hi; /* live items [lo, hi) */
    uint64_t seeded_bytes;
} client_t;

typedef struct opts_s {
    const char *bootstrap, *flushes_topic, *replies_topic, *label, *json_path,
        *record_path;
    uint32_t models, clients_per_model, commands, props_bytes, outstanding, window;
    uint64_t doc_bytes, flushes;
    double rate, duration, warmup, drain_timeout, zipf;
    bool echo;
    uint32_t ping;
    uint32_t seed;
    int pids[MAX_PIDS];
    int pid_count;
    const char *props[MAX_PROPS];
    int prop_count;
} opts_t;

typedef struct stats_s {
    uint64_t sent, replies, window_replies, lost, wrong, warm_flushes;
    double *lat; /* ms, measured flushes */
    size_t lat_len, lat_cap;
    double last_reply, measure_from, measure_to, seed_s;
} stats_t;

static opts_t o;
static client_t *clients;
static inflight_t *rings;
static uint32_t client_count;
static uint32_t *ready; /* closed loop, uniform: FIFO of clients with a free slot */
static size_t ready_head, ready_len, ready_cap;
static double *zipf_cdf;
static stats_t st;
static rd_kafka_t *producer, *consumer;
static FILE *record_fp;
static uint64_t rng_state;
static uint32_t inflight_total;
static bool seeding;

static uint64_t rnd(void) /* xorshift64*: fast, seeded, the same on every machine */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static void wrong(const char *fmt, ...)
{
    st.wrong++;
    if (st.wrong > 10)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("loadgen: wrong reply: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- Kafka clients ---- */

static rd_kafka_conf_t *conf_new(bool is_producer)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char err[512];
    const char *base[] = {
        "bootstrap.servers", o.bootstrap, "client.id", "flushout-loadgen",
        "socket.nagle.disable", "true", "log_level", "4",
        /* the processor checks that keys sit where murmur2 puts them; linger.ms as
         * the processor's producer (an open loop sends records one at a time) */
        is_producer ? "partitioner" : "fetch.wait.max.ms",
        is_producer ? "murmur2_random" : "10", is_producer ? "linger.ms" : "group.id",
        is_producer ? "5" : "flushout-loadgen",
        is_producer ? "acks" : "enable.auto.commit", is_producer ? "all" : "false"};
    for (size_t i = 0; i < sizeof(base) / sizeof(base[0]); i += 2)
        if (rd_kafka_conf_set(conf, base[i], base[i + 1], err, sizeof(err)))
            die("%s", err);
    for (int i = 0; i + 1 < o.prop_count; i += 2)
        if (rd_kafka_conf_set(conf, o.props[i], o.props[i + 1], err, sizeof(err)))
            die("-X %s: %s", o.props[i], err);
    return conf;
}

/* Assigns every partition of the replies topic at its current end: everything
 * answered from now on is read, nothing from before. */
static void start_reading_replies(void)
{
    char err[512];
    if (!(consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf_new(false), err, sizeof(err))))
        die("%s", err);
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(consumer, o.replies_topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(consumer, 0, rkt, &md, 10000);
    if (e || md->topic_cnt != 1 || md->topics[0].err)
        die("metadata of %s: %s", o.replies_topic,
            rd_kafka_err2str(e ? e : md->topics[0].err));
    int n = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) {
        int64_t lo, hi;
        if ((e = rd_kafka_query_watermark_offsets(consumer, o.replies_topic, i, &lo, &hi,
                                                  10000)))
            die("offsets of %s [%d]: %s", o.replies_topic, i, rd_kafka_err2str(e));
        rd_kafka_topic_partition_list_add(l, o.replies_topic, i)->offset = hi;
    }
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    if ((e = rd_kafka_assign(consumer, l)))
        die("assign: %s", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

static void produce(const char *topic, const char *key, size_t key_len, const void *value,
                    size_t len)
{
    processor_record_t rec = {
        topic, RD_KAFKA_PARTITION_UA, key, key_len, value, len, NULL, NULL};
    rd_kafka_resp_err_t e = processor_produce(producer, &rec, RD_KAFKA_MSG_F_COPY);
    if (e)
        die("produce: %s", rd_kafka_err2str(e));
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        die("a request was not delivered: %s", rd_kafka_err2str(m->err));
}

/* ---- the workload ---- */

static void pack_str(msgpack_packer *pk, const char *s)
{
    codec_msgpack_pack_str(pk, s, strlen(s));
}

static void random_text(char *buf, size_t len)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789 ";
    for (size_t i = 0; i < len; i++)
        buf[i] = alphabet[rnd() % (sizeof(alphabet) - 1)];
    buf[len] = 0;
}

/* One command, written to the request (msgpack) and to the record file (JSON). */
typedef struct command_s {
    char action; /* 'c' create, 'u' update, 'd' delete, 's' seed blob */
    char id[32];
    const char *text;
    bool done;
} command_t;

static void pack_command(msgpack_packer *pk, const command_t *c)
{
    bool create = c->action == 'c' || c->action == 's';
    msgpack_pack_map(pk, create ? 2 : 1);
    pack_str(pk, "command");
    msgpack_pack_map(pk, c->action == 'd' ? 2 : create ? 4 : 3);
    pack_str(pk, "action");
    pack_str(pk, create ? "create" : c->action == 'u' ? "update" : "detete");
    pack_str(pk, "path");
    const char *parent = c->action == 's' ? "blob" : "items";
    msgpack_pack_array(pk, create ? 1 : 2);
    pack_str(pk, parent);
    if (!create)
        pack_str(pk, c->id);
    if (c->action != 'd') {
        pack_str(pk, "props");
        msgpack_pack_map(pk, c->action == 's' ? 1 : 2);
        pack_str(pk, c->action == 's' ? "data" : "title");
        pack_str(pk, c->text);
        if (c->action != 's') {
            pack_str(pk, "done");
            c->done ? msgpack_pack_true(pk) : msgpack_pack_false(pk);
        }
    }
    if (create) {
        pack_str(pk, "parentDefault");
        msgpack_pack_map(pk, 0);
        pack_str(pk, "createdId");
        pack_str(pk, c->id);
    }
}

static void record_command(FILE *fp, const command_t *c, bool first)
{
    bool create = c->action == 'c' || c->action == 's';
    const char *parent = c->action == 's' ? "blob" : "items";
    fprintf(fp, "%s{\"command\":{\"action\":\"%s\",\"path\":[\"%s\"", first ? "" : ",",
            create             ? "create"
            : c->action == 'u' ? "update"
                               : "detete",
            parent);
    if (!create)
        fprintf(fp, ",\"%s\"", c->id);
    fputc(']', fp);
    if (c->action == 's')
        fprintf(fp, ",\"props\":{\"data\":\"%s\"}", c->text);
    else if (c->action != 'd')
        fprintf(fp, ",\"props\":{\"title\":\"%s\",\"done\":%s}", c->text,
                c->done ? "true" : "false");
    if (create)
        fprintf(fp, ",\"parentDefault\":{}},\"createdId\":\"%s\"}", c->id);
    else
        fputs("}}", fp);
}

/* The next command of client c: creates until it has a few items, then mostly updates,
 * deleting the oldest to keep the document's size steady. */
static void next_command(client_t *c, command_t *cmd, char *text)
{
    uint32_t live = c->item_hi - c->item_lo;
    uint64_t r = rnd() % 8;
    if (live < 2 || (r == 0 && live < LIVE_ITEMS_MAX))
        cmd->action = 'c';
    else if (r == 1 || live >= LIVE_ITEMS_MAX)
        cmd->action = 'd';
    else
        cmd->action = 'u';
    uint32_t item = cmd->action == 'c'   ? c->item_hi++
                    : cmd->action == 'd' ? c->item_lo++
                                         : c->item_lo + (uint32_t)(rnd() % live);
    snprintf(cmd->id, sizeof(cmd->id), "k%u-%u", c->k, item);
    random_text(text, o.props_bytes);
    cmd->text = text;
    cmd->done = rnd() & 1;
}

static void send_flush(client_t *c, double due, bool seed)
{
    static msgpack_sbuffer sb;
    static char *text;
    static size_t text_cap;
    size_t need = (seed ? SEED_CHUNK_BYTES : o.props_bytes) + 1;
    if (text_cap < need)
        text = codec_xrealloc(text, text_cap = need);
    msgpack_sbuffer_clear(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char client_id[24], model_id[24];
    snprintf(client_id, sizeof(client_id), "c%u", (unsigned)(c - clients));
    snprintf(model_id, sizeof(model_id), "m%u", c->model);
    uint64_t seq = c->next_seq++;
    uint32_t n = seed ? 1 : o.commands;

    msgpack_pack_map(&pk, 5);
    pack_str(&pk, "type");
    pack_str(&pk, "flush");
    pack_str(&pk, "client");
    pack_str(&pk, client_id);
    pack_str(&pk, "seq");
    msgpack_pack_uint64(&pk, seq);
    pack_str(&pk, "from");
    msgpack_pack_uint64(&pk, c->known);
    pack_str(&pk, "completions");
    msgpack_pack_array(&pk, n);
    if (record_fp)
        fprintf(record_fp,
                "{\"type\":\"flush\",\"model\":\"%s\",\"client\":\"%s\",\"seq\":%" PRIu64
                ",\"from\":%" PRIu64 ",\"completions\":[",
                model_id, client_id, seq, c->known);
    for (uint32_t i = 0; i < n; i++) {
        command_t cmd;
        if (seed) {
            uint64_t left = o.doc_bytes - c->seeded_bytes;
            size_t len = left < SEED_CHUNK_BYTES ? (size_t)left : SEED_CHUNK_BYTES;
            cmd.action = 's';
            snprintf(cmd.id, sizeof(cmd.id), "s%" PRIu64, c->seeded_bytes);
            random_text(text, len);
            cmd.text = text;
            c->seeded_bytes += len;
        } else {
            next_command(c, &cmd, text);
        }
        pack_command(&pk, &cmd);
        if (record_fp)
            record_command(record_fp, &cmd, i == 0);
    }
    if (record_fp)
        fputs("]}\n", record_fp);
    produce(o.flushes_topic, model_id, strlen(model_id), sb.data, sb.size);

    inflight_t *ring = rings + (size_t)(c - clients) * o.outstanding;
    ring[(c->head + c->inflight) % o.outstanding] =
        (inflight_t){seq, due, n, !seed && due >= st.measure_from};
    c->inflight++;
    inflight_total++;
    st.sent++;
}

/* ---- replies ---- */

static void release_slot(client_t *c);

/* What on_reply() checks of a reply, read in one pass over its bytes. Strings point
 * into the reply. */
typedef struct reply_view_s {
    bool framed; /* one well-formed msgpack map, nothing after it */
    const char *type, *client, *error_message;
    size_t type_len, client_len, error_message_len;
    bool has_seq, has_from, has_completions, has_errors, has_duplicate;
    uint64_t seq, from;
    uint32_t completions;
} reply_view_t;

static bool key_is(const char *key, size_t len, const char *want)
{
    return len == strlen(want) && !memcmp(key, want, len);
}

/* The map at *off (applied, or error): the fields of it that on_reply() reads. */
static bool view_inner(const char *buf, size_t len, size_t *off, bool applied,
                       reply_view_t *v)
{
    uint32_t n;
    if (!codec_msgpack_map_open(buf, len, off, &n))
        return codec_msgpack_skip(buf, len, off); /* not a map: nothing to read */
    for (; n > 0; n--) {
        const char *key;
        size_t key_len;
        if (!codec_msgpack_read_str(buf, len, off, &key, &key_len))
            return false;
        size_t at = *off;
        if (applied && key_is(key, key_len, "from"))
            v->has_from = codec_msgpack_read_uint(buf, len, &at, &v->from);
        else if (applied && key_is(key, key_len, "completions"))
            v->has_completions = codec_msgpack_array_open(buf, len, &at, &v->completions);
        else if (!applied && key_is(key, key_len, "message"))
            codec_msgpack_read_str(buf, len, &at, &v->error_message,
                                   &v->error_message_len);
        if (!codec_msgpack_skip(buf, len, off))
            return false;
    }
    return true;
}

static void reply_view(const char *buf, size_t len, reply_view_t *v)
{
    *v = (reply_view_t){0};
    size_t off = 0;
    uint32_t n;
    if (!codec_msgpack_map_open(buf, len, &off, &n))
        return;
    for (; n > 0; n--) {
        const char *key;
        size_t key_len;
        if (!codec_msgpack_read_str(buf, len, &off, &key, &key_len))
            return;
        size_t at = off;
        if (key_is(key, key_len, "type")) {
            codec_msgpack_read_str(buf, len, &at, &v->type, &v->type_len);
        } else if (key_is(key, key_len, "client")) {
            codec_msgpack_read_str(buf, len, &at, &v->client, &v->client_len);
        } else if (key_is(key, key_len, "seq")) {
            v->has_seq = codec_msgpack_read_uint(buf, len, &at, &v->seq) &&
                         v->seq <= CODEC_MAX_SAFE_INTEGER;
        } else if (key_is(key, key_len, "errors")) {
            v->has_errors = true;
        } else if (key_is(key, key_len, "duplicate")) {
            v->has_duplicate = true;
        } else if (key_is(key, key_len, "applied") || key_is(key, key_len, "error")) {
            if (!view_inner(buf, len, &off, key_is(key, key_len, "applied"), v))
                return;
            continue;
        }
        if (!codec_msgpack_skip(buf, len, &off))
            return;
    }
    v->framed = off == len;
}

static bool view_str_is(const char *s, size_t len, const char *want)
{
    return s && key_is(s, len, want);
}

static void on_reply(const rd_kafka_message_t *m, double t)
{
    /* Each reply is read where it lies, in one pass that checks its framing whole
     * and picks out the fields checked below: decoding it into a tree was a third
     * of this process's CPU at 4 commands a flush, taken from the two cores the
     * processor runs on. The conformance tests check the replies' contents. */
    reply_view_t v;
    reply_view(m->payload ? m->payload : "", m->len, &v);
    char *idx_end = NULL;
    unsigned long idx = v.client && v.client_len > 1 && v.client[0] == 'c'
                            ? strtoul(v.client + 1, &idx_end, 10)
                            : ULONG_MAX;
    if (idx >= client_count || idx_end != v.client + v.client_len || !v.has_seq) {
        wrong("partition %d offset %" PRId64 ": no known client and seq", m->partition,
              m->offset);
        return;
    }
    client_t *c = &clients[idx];
    inflight_t *ring = rings + idx * o.outstanding;
    if (!c->inflight || ring[c->head].seq != v.seq) {
        wrong("client c%lu: seq %" PRIu64 " answered, expected %s%" PRIu64, idx, v.seq,
              c->inflight ? "" : "nothing, ", c->inflight ? ring[c->head].seq : 0);
        return;
    }
    inflight_t f = ring[c->head];
    c->head = (c->head + 1) % o.outstanding;
    c->inflight--;
    inflight_total--;
    st.replies++;
    release_slot(c);
    if (t >= st.measure_from && t <= st.measure_to)
        st.window_replies++;
    if (f.measured) {
        if (st.lat_len == st.lat_cap)
            st.lat = codec_xrealloc(st.lat,
                                    (st.lat_cap = st.lat_cap ? st.lat_cap * 2 : 65536) *
                                        sizeof(*st.lat));
        st.lat[st.lat_len++] = (t - f.due) * 1e3;
    }

    if (!v.framed) {
        wrong("client c%lu seq %" PRIu64 ": not one well-formed msgpack map", idx, v.seq);
    } else if (o.echo) {
        if (!view_str_is(v.type, v.type_len, "flush"))
            wrong("client c%lu seq %" PRIu64 ": not the echoed request", idx, v.seq);
    } else if (!view_str_is(v.type, v.type_len, "flushResult")) {
        wrong("client c%lu seq %" PRIu64 ": %.*s", idx, v.seq,
              v.error_message ? (int)v.error_message_len : 17,
              v.error_message ? v.error_message : "not a flushResult");
    } else if (v.has_errors || v.has_duplicate || !v.has_from || !v.has_completions ||
               v.completions != f.commands) {
        wrong("client c%lu seq %" PRIu64 ": not every command applied", idx, v.seq);
    } else if (v.from + f.commands > c->known) {
        c->known = v.from + f.commands;
    }
}

/* ---- choosing who flushes next ---- */

static void release_slot(client_t *c)
{
    if (zipf_cdf || seeding)
        return;
    if (ready_len == ready_cap)
        die("ready queue overflow");
    ready[(ready_head + ready_len++) % ready_cap] = (uint32_t)(c - clients);
}

/* A client with a free slot, or NULL. Uniform: the longest-waiting one. Zipf: a random
 * client of a model drawn by popularity (a busy one is drawn again, a few times). */
static client_t *pick_client(void)
{
    if (!zipf_cdf) {
        if (!ready_len)
            return NULL;
        client_t *c = &clients[ready[ready_head]];
        ready_head = (ready_head + 1) % ready_cap;
        ready_len--;
        return c;
    }
    for (int tries = 0; tries < 64; tries++) {
        double u = (double)(rnd() >> 11) / 9007199254740992.0;
        uint32_t lo = 0, hi = o.models - 1;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (zipf_cdf[mid] < u)
                lo = mid + 1;
            else
                hi = mid;
        }
        client_t *c =
            &clients[lo * o.clients_per_model + (uint32_t)(rnd() % o.clients_per_model)];
        if (c->inflight < o.outstanding)
            return c;
    }
    return NULL;
}

/* ---- measuring the processor ---- */

typedef struct proc_sample_s {
    double cpu_s;
    double peak_rss_mb;
} proc_sample_t;

static proc_sample_t sample_pids(void)
{
    proc_sample_t s = {0, 0};
    long tick = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < o.pid_count; i++) {
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", o.pids[i]);
        FILE *fp = fopen(path, "r");
        if (fp) {
            size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
            buf[n] = 0;
            fclose(fp);
            char *p = strrchr(buf, ')');
            unsigned long ut = 0, stm = 0;
            /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt
             * majflt cmajflt utime stime */
            if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
                            &ut, &stm) == 2)
                s.cpu_s += (double)(ut + stm) / (double)tick;
        }
        snprintf(path, sizeof(path), "/proc/%d/status", o.pids[i]);
        if ((fp = fopen(path, "r"))) {
            unsigned long kb;
            while (fgets(buf, sizeof(buf), fp))
                if (sscanf(buf, "VmHWM: %lu kB", &kb) == 1)
                    s.peak_rss_mb += (double)kb / 1024;
            fclose(fp);
        }
    }
    return s;
}

/* ---- the run ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double q)
{
    if (!st.lat_len)
        return 0;
    size_t i = (size_t)ceil(q * (double)st.lat_len);
    return st.lat[i ? i - 1 : 0];
}

static bool more_to_send(double t)
{
    return o.flushes ? st.sent - st.warm_flushes < o.flushes : t < st.measure_to;
}

/* Sends what is allowed now; returns how long (ms) to wait for replies. */
static int send_some(double t, double *next_due, bool *more)
{
    client_t *c;
    if (o.rate > 0) {
        while (*next_due <= t && (*more = more_to_send(t)) && (c = pick_client())) {
            send_flush(c, *next_due, false);
            *next_due += 1 / o.rate;
        }
        /* At least 1 ms: waits shorter than that made the loop poll without sleeping,
         * which took a whole core from the processor under test. The flushes due
         * meanwhile go together, each timed from when it was due. */
        double wait = *next_due - t;
        return !*more ? 5 : wait < 0.001 ? 1 : wait > 0.005 ? 5 : (int)(wait * 1e3);
    }
    while ((*more = more_to_send(t)) && inflight_total < o.window && (c = pick_client()))
        send_flush(c, t, false);
    return 1;
}

static bool seeding_done(void)
{
    for (uint32_t i = 0; i < client_count; i++)
        if (clients[i].seeded_bytes < o.doc_bytes || clients[i].inflight)
            return false;
    return true;
}

/* Handles the replies that arrive within wait_ms (then whatever else is there). */
static void receive(int wait_ms)
{
    for (rd_kafka_message_t *m; (m = rd_kafka_consumer_poll(consumer, wait_ms));
         wait_ms = 0) {
        if (!m->err) {
            st.last_reply = processor_monotonic_s();
            on_reply(m, st.last_reply);
        }
        rd_kafka_message_destroy(m);
    }
}

/* A few flushes answered before anything is measured: the processor may still be
 * joining its group, and an open loop would pile its first seconds up meanwhile. */
static void wait_ready(void)
{
    double t0 = processor_monotonic_s();
    client_t *c;
    for (uint32_t i = 0; i < 64 && (c = pick_client()); i++) {
        send_flush(c, t0, false);
        st.warm_flushes++;
    }
    while (inflight_total && processor_monotonic_s() - t0 < 120) {
        rd_kafka_poll(producer, 0);
        receive(10);
    }
    if (inflight_total)
        die("no reply within 120 s: is the processor running?");
}

static int run_ping(void)
{
    st.lat = codec_xcalloc(o.ping, sizeof(*st.lat));
    for (uint32_t i = 0; i < o.ping; i++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "ping-%u", i);
        double t0 = processor_monotonic_s();
        produce(o.replies_topic, key, (size_t)len, key, (size_t)len);
        rd_kafka_poll(producer, 0);
        for (;;) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
            if (!m) {
                if (processor_monotonic_s() - t0 > 10)
                    die("ping %u: no record back in 10 s", i);
                continue;
            }
            bool mine = !m->err && m->key_len == (size_t)len && !memcmp(m->key, key, len);
            rd_kafka_message_destroy(m);
            if (mine)
                break;
        }
        st.lat[st.lat_len++] = (processor_monotonic_s() - t0) * 1e3;
    }
    qsort(st.lat, st.lat_len, sizeof(*st.lat), cmp_double);
    printf("%s: broker round trip (produce -> consume) over %u pings: p50 %.2f ms, p99 "
           "%.2f ms, max %.2f ms\n",
           o.label, o.ping, pct(0.5), pct(0.99), st.lat[st.lat_len - 1]);
    if (o.json_path) {
        FILE *fp = fopen(o.json_path, "w");
        if (!fp)
            die("%s: %s", o.json_path, strerror(errno));
        fprintf(
            fp,
            "{\"label\":\"%s\",\"mode\":\"ping\",\"pings\":%u,\"latency_ms\":{\"p50\":"
            "%.3f,\"p99\":%.3f,\"max\":%.3f},\"ok\":true}\n",
            o.label, o.ping, pct(0.5), pct(0.99), st.lat[st.lat_len - 1]);
        fclose(fp);
    }
    return 0;
}

static void usage(void)
{
    fputs(
        "usage: loadgen --bootstrap-servers B [options]\n"
        "  --flushes-topic T, --replies-topic T   (flushout.flushes, flushout.replies)\n"
        "  --models N (1000), --clients-per-model N (1), --commands N per flush (2)\n"
        "  --props-bytes N: title length (40); --doc-bytes N: seed each model first\n"
        "  --skew uniform|zipf:S (uniform)\n"
        "  --rate R: open loop, R flushes/s; else closed loop with\n"
        "  --outstanding N per client (1) and --window N in all (1000)\n"
        "  --duration S (10) after --warmup S (2), or --flushes N (all measured)\n"
        "  --drain-timeout S (30): replies still missing then are lost\n"
        "  --echo: the other side echoes requests (the passthrough baseline)\n"
        "  --pid P (repeatable): report its CPU time and peak RSS\n"
        "  --json FILE, --record FILE (requests as NDJSON), --label L, --seed N\n"
        "  --ping N: measure the broker's produce -> consume floor instead\n"
        "  -X prop=value: librdkafka property for both clients\n",
        stderr);
    exit(2);
}

/* The options with a plain value: parsed and range-checked from one table. */
typedef enum opt_kind_e { OPT_STR, OPT_U32, OPT_U64, OPT_SECONDS, OPT_FLAG } opt_kind_t;
static const struct {
    const char *name;
    opt_kind_t kind;
    size_t offset;
} opt_table[] = {
    {"bootstrap-servers", OPT_STR, offsetof(opts_t, bootstrap)},
    {"flushes-topic", OPT_STR, offsetof(opts_t, flushes_topic)},
    {"replies-topic", OPT_STR, offsetof(opts_t, replies_topic)},
    {"models", OPT_U32, offsetof(opts_t, models)},
    {"clients-per-model", OPT_U32, offsetof(opts_t, clients_per_model)},
    {"commands", OPT_U32, offsetof(opts_t, commands)},
    {"props-bytes", OPT_U32, offsetof(opts_t, props_bytes)},
    {"doc-bytes", OPT_U64, offsetof(opts_t, doc_bytes)},
    {"rate", OPT_SECONDS, offsetof(opts_t, rate)},
    {"outstanding", OPT_U32, offsetof(opts_t, outstanding)},
    {"window", OPT_U32, offsetof(opts_t, window)},
    {"duration", OPT_SECONDS, offsetof(opts_t, duration)},
    {"warmup", OPT_SECONDS, offsetof(opts_t, warmup)},
    {"flushes", OPT_U64, offsetof(opts_t, flushes)},
    {"drain-timeout", OPT_SECONDS, offsetof(opts_t, drain_timeout)},
    {"echo", OPT_FLAG, offsetof(opts_t, echo)},
    {"json", OPT_STR, offsetof(opts_t, json_path)},
    {"record", OPT_STR, offsetof(opts_t, record_path)},
    {"label", OPT_STR, offsetof(opts_t, label)},
    {"seed", OPT_U32, offsetof(opts_t, seed)},
    {"ping", OPT_U32, offsetof(opts_t, ping)},
};
#define OPT_TABLE_LEN (sizeof(opt_table) / sizeof(opt_table[0]))
enum { OPT_SKEW = 1000, OPT_PID, OPT_HELP };

static void set_option(size_t i, const char *arg)
{
    char *end = NULL, *field = (char *)&o + opt_table[i].offset;
    errno = 0;
    if (opt_table[i].kind == OPT_STR) {
        *(const char **)field = arg;
    } else if (opt_table[i].kind == OPT_FLAG) {
        *(bool *)field = true;
    } else if (opt_table[i].kind == OPT_SECONDS) {
        double v = strtod(arg, &end);
        if (end == arg || *end || errno || !(v >= 0))
            die("--%s: not a number >= 0: %s", opt_table[i].name, arg);
        *(double *)field = v;
    } else {
        unsigned long long v = strtoull(arg, &end, 10);
        if (end == arg || *end || errno || arg[0] == '-' ||
            (opt_table[i].kind == OPT_U32 && v > UINT32_MAX))
            die("--%s: not an unsigned integer in range: %s", opt_table[i].name, arg);
        if (opt_table[i].kind == OPT_U32)
            *(uint32_t *)field = (uint32_t)v;
        else
            *(uint64_t *)field = v;
    }
}

static void parse(int argc, char **argv)
{
    o = (opts_t){.flushes_topic = "flushout.flushes",
                 .replies_topic = "flushout.replies",
                 .label = "loadgen",
                 .models = 1000,
                 .clients_per_model = 1,
                 .commands = 2,
                 .props_bytes = 40,
                 .outstanding = 1,
                 .window = 1000,
                 .duration = 10,
                 .warmup = 2,
                 .drain_timeout = 30,
                 .seed = 1};
    struct option longs[OPT_TABLE_LEN + 4];
    for (size_t i = 0; i < OPT_TABLE_LEN; i++)
        longs[i] = (struct option){opt_table[i].name, opt_table[i].kind != OPT_FLAG, NULL,
                                   (int)i};
    longs[OPT_TABLE_LEN] = (struct option){"skew", 1, NULL, OPT_SKEW};
    longs[OPT_TABLE_LEN + 1] = (struct option){"pid", 1, NULL, OPT_PID};
    longs[OPT_TABLE_LEN + 2] = (struct option){"help", 0, NULL, OPT_HELP};
    longs[OPT_TABLE_LEN + 3] = (struct option){0, 0, 0, 0};
    int ch;
    while ((ch = getopt_long(argc, argv, "X:", longs, NULL)) != -1) {
        if (ch >= 0 && (size_t)ch < OPT_TABLE_LEN) {
            set_option((size_t)ch, optarg);
        } else if (ch == OPT_SKEW) {
            if (!strncmp(optarg, "zipf:", 5))
                o.zipf = strtod(optarg + 5, NULL);
            else if (strcmp(optarg, "uniform"))
                die("--skew: uniform or zipf:S, not %s", optarg);
        } else if (ch == OPT_PID && o.pid_count < MAX_PIDS) {
            o.pids[o.pid_count++] = atoi(optarg);
        } else if (ch == 'X' && strchr(optarg, '=') && o.prop_count + 2 <= MAX_PROPS) {
            char *eq = strchr(optarg, '=');
            *eq = 0;
            o.props[o.prop_count++] = optarg;
            o.props[o.prop_count++] = eq + 1;
        } else {
            usage();
        }
    }
    if (!o.bootstrap || !o.models || !o.clients_per_model || !o.commands ||
        !o.outstanding || !o.window || o.duration <= 0 || o.zipf < 0 || optind != argc)
        usage();
    if ((uint64_t)o.models * o.clients_per_model * o.outstanding > UINT32_MAX)
        die("--models x --clients-per-model x --outstanding is too large");
    if (o.doc_bytes && o.clients_per_model != 1) /* the seed would reach the others */
        die("--doc-bytes needs --clients-per-model 1");
}

static void write_json(double secs, double tput, proc_sample_t cpu0, proc_sample_t cpu1,
                       bool ok)
{
    FILE *fp = fopen(o.json_path, "w");
    if (!fp)
        die("%s: %s", o.json_path, strerror(errno));
    fprintf(fp,
            "{\"label\":\"%s\",\"mode\":\"%s\",\"models\":%u,\"clients_per_model\":%u,"
            "\"commands\":%u,\"props_bytes\":%u,\"doc_bytes\":%" PRIu64
            ",\"rate\":%.1f,\"outstanding\":%u,\"window\":%u,\"sent\":%" PRIu64
            ",\"replies\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"wrong\":%" PRIu64
            ",\"seed_s\":%.3f,\"measured_s\":%.3f,\"flushes_per_s\":%.1f,\"latency_ms\":{"
            "\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f},\"cpu_cores\":%.3f,"
            "\"peak_rss_mb\":%.1f,\"ok\":%s}\n",
            o.label, o.rate > 0 ? "open" : "closed", o.models, o.clients_per_model,
            o.commands, o.props_bytes, o.doc_bytes, o.rate, o.outstanding, o.window,
            st.sent, st.replies, st.lost, st.wrong, st.seed_s, secs, tput, pct(0.5),
            pct(0.99), pct(0.999), st.lat_len ? st.lat[st.lat_len - 1] : 0,
            secs > 0 ? (cpu1.cpu_s - cpu0.cpu_s) / secs : 0, cpu1.peak_rss_mb,
            ok ? "true" : "false");
    fclose(fp);
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    rng_state = 0x9e3779b97f4a7c15ull ^ o.seed;
    char err[512];
    rd_kafka_conf_t *pconf = conf_new(true);
    rd_kafka_conf_set_dr_msg_cb(pconf, on_delivery);
    if (!(producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err))))
        die("%s", err);
    start_reading_replies();
    if (o.ping)
        return run_ping();

    client_count = o.models * o.clients_per_model;
    clients = codec_xcalloc(client_count, sizeof(*clients));
    rings = codec_xcalloc((size_t)client_count * o.outstanding, sizeof(*rings));
    for (uint32_t i = 0; i < client_count; i++)
        clients[i] = (client_t){.model = i / o.clients_per_model,
                                .k = i % o.clients_per_model,
                                .next_seq = 1};
    ready_cap = (size_t)client_count * o.outstanding + 1;
    ready = codec_xcalloc(ready_cap, sizeof(*ready));
    for (uint32_t slot = 0; slot < o.outstanding; slot++)
        for (uint32_t i = 0; i < client_count; i++)
            ready[ready_len++] = i;
    if (o.record_path && !(record_fp = fopen(o.record_path, "w")))
        die("%s: %s", o.record_path, strerror(errno));

    /* Seeding: each model's client grows its document to --doc-bytes, unmeasured. */
    st.measure_from = st.measure_to = INFINITY;
    double t = processor_monotonic_s(), seed_start = t;
    if (o.doc_bytes) {
        seeding = true;
        for (uint32_t cursor = 0; !seeding_done();) {
            for (uint32_t scanned = 0;
                 scanned < client_count && inflight_total < o.window;
                 scanned++, cursor = (cursor + 1) % client_count) {
                client_t *c = &clients[cursor];
                if (!c->inflight && c->seeded_bytes < o.doc_bytes) {
                    send_flush(c, t, true);
                    st.warm_flushes++;
                }
            }
            rd_kafka_poll(producer, 0);
            receive(1);
            if ((t = processor_monotonic_s()) - seed_start > 600)
                die("seeding took over 10 minutes");
        }
        seeding = false;
        st.seed_s = t - seed_start;
    }
    if (o.zipf > 0) { /* P(model i) ~ 1 / (i + 1)^s */
        zipf_cdf = codec_xcalloc(o.models, sizeof(*zipf_cdf));
        double sum = 0;
        for (uint32_t i = 0; i < o.models; i++)
            zipf_cdf[i] = sum += 1 / pow(i + 1, o.zipf);
        for (uint32_t i = 0; i < o.models; i++)
            zipf_cdf[i] /= sum;
    }

    /* The clock starts --warmup after the processor answers (it may still be joining
     * its group); --flushes measures them all, from then on. */
    wait_ready();
    uint64_t warm_replies = st.replies;
    st.measure_from = o.flushes ? 0 : processor_monotonic_s() + o.warmup;
    st.measure_to = o.flushes ? INFINITY : st.measure_from + o.duration;
    proc_sample_t cpu0 = {0, 0}, cpu1 = {0, 0};
    bool cpu_started = false, cpu_ended = false;
    double next_due = processor_monotonic_s(), t_start = next_due, t_stopped = 0;
    bool more = true;
    while (more || inflight_total) {
        t = processor_monotonic_s();
        if (!cpu_started && (o.flushes || t >= st.measure_from)) {
            cpu0 = sample_pids();
            cpu_started = true;
        }
        if (!cpu_ended && !o.flushes && t >= st.measure_to) {
            cpu1 = sample_pids();
            cpu_ended = true;
        }
        int wait = more ? send_some(t, &next_due, &more) : 5;
        if (!more && !t_stopped)
            t_stopped = t;
        rd_kafka_poll(producer, 0);
        receive(wait);
        if (!more && inflight_total &&
            processor_monotonic_s() -
                    (st.last_reply > t_stopped ? st.last_reply : t_stopped) >
                o.drain_timeout)
            break;
    }
    st.lost = inflight_total;
    if (o.flushes) {
        st.measure_from = t_start;
        st.measure_to = st.last_reply;
        st.window_replies = st.replies - warm_replies;
    }
    if (!cpu_ended)
        cpu1 = sample_pids();
    if (record_fp)
        fclose(record_fp);
    double secs = st.measure_to - st.measure_from;
    uint64_t counted = st.window_replies;
    double tput = secs > 0 ? (double)counted / secs : 0;
    qsort(st.lat, st.lat_len, sizeof(*st.lat), cmp_double);
    bool ok = !st.lost && !st.wrong && counted > 0;
    printf("%s: %.0f flushes/s over %.1f s (%" PRIu64
           " flushes), round trip p50 %.2f ms, "
           "p99 %.2f ms, p99.9 %.2f ms, max %.2f ms; processor %.2f cores, peak RSS %.0f "
           "MB; %s\n",
           o.label, tput, secs, counted, pct(0.5), pct(0.99), pct(0.999),
           st.lat_len ? st.lat[st.lat_len - 1] : 0,
           secs > 0 ? (cpu1.cpu_s - cpu0.cpu_s) / secs : 0, cpu1.peak_rss_mb,
           ok ? "all replies correct" : "FAILED");
    if (!ok)
        fprintf(stderr, "loadgen: %" PRIu64 " replies lost, %" PRIu64 " wrong\n", st.lost,
                st.wrong);
    if (o.json_path)
        write_json(secs, tput, cpu0, cpu1, ok);
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    rd_kafka_flush(producer, 5000);
    rd_kafka_destroy(producer);
    free(clients);
    free(rings);
    free(ready);
    free(zipf_cdf);
    free(st.lat);
    return ok ? 0 : 1;
}
