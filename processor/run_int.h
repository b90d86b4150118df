/* processor/run_int.h - the runner's types and the functions its files share (private).
 *
 * The runner (`flushout-processor run`, run.h) is one module in several files, one per
 * concept (processor/README.md has the map). They share the partition (part_t) and the
 * runner (runner_t) declared here, librdkafka's *_int.h habit: nothing outside the
 * run*.c files includes this header.
 *
 * Threads: the main thread polls the group consumer (rd_kafka_consumer_poll, never the
 * batch APIs), serves rebalances and hands each record to its partition's queue;
 * --threads workers take partitions with queued records and process them one step at
 * a time; one thread serves the producer's delivery reports; libmicrohttpd's thread
 * renders /metrics and the probes. A partition is in at most one worker at a time
 * (flags `scheduled` and `running` under its lock), so its store and handler need no
 * locking. Lock order: a partition's lock, then the run queue's. Each group of fields
 * below says who reads and writes it (@locality). */
#ifndef FLUSHOUT_PROCESSOR_RUN_INT_H
#define FLUSHOUT_PROCESSOR_RUN_INT_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <librdkafka/rdkafka.h>

#include "setup.h"
#include "handler.h"
#include "catch_up.h"
#include "http.h"
#include "kafka.h"
#include "metrics.h"
#include "options.h"
#include "run.h"

#define FLUSH_TIMEOUT_MS 30000 /* waiting for deliveries at a revoke or exit */

#define TAKEOVER_AGAIN 3 /* run_prepare() and its helpers: a transient error, retry */

#define REPARTITION_HINT PROCESSOR_REPARTITION_HINT /* catch_up.h */

typedef struct part_s part_t;
typedef struct runner_s runner_t;
typedef struct standby_s standby_t; /* run_standby.c */

/* A processing step whose records are produced: the input offset to commit once all
 * of them are delivered. @locality in part_t's steps, under its lock. */
typedef struct step_s {
    uint64_t seq;
    int64_t next_offset; /* -1: nothing to commit (a step of leftovers) */
    uint32_t pending;
    uint64_t outbox_first, outbox_last; /* the outbox ids its records came from */
} step_t;

/* Outbox ids whose records are all delivered, deleted by the next step. @locality in
 * part_t's done, under its lock. */
typedef struct outbox_range_s {
    uint64_t first, last;
} outbox_range_t;

/* What a delivery report's opaque points to: a delivery_t or a swept_t. */
typedef enum opaque_kind_e { OPAQUE_OUTBOX = 1, OPAQUE_SWEPT } opaque_kind_t;

/* One record on its way to Kafka: what the delivery report needs, and the bytes.
 * @locality built by the worker; once produced, owned by librdkafka until its delivery
 * report (the producer thread) frees it. */
typedef struct delivery_s {
    opaque_kind_t kind; /* OPAQUE_OUTBOX; first, like swept_t's */
    part_t *part;
    uint64_t generation; /* the partition's assignment it belongs to */
    uint64_t step_seq;
    uint64_t outbox_id;
    bool change; /* a change record: its offset moves the partition's changes position */
    int32_t partition;
    int64_t input_offset;
    /* topic, key and headers in the same allocation; the value there too (a leftover)
     * or in its step's bytes, referenced until the delivery is freed. */
    const char *topic, *key, *value;
    size_t key_len, value_len;
    state_outbox_bytes_t *step_bytes; /* NULL: the value is in the allocation */
    size_t value_at;                  /* in step_bytes, SIZE_MAX: copied */
    size_t header_count;
    state_header_t *headers;
} delivery_t;

/* A snapshot record published by the sweep: once Kafka confirms it, the model's
 * "changed" mark is deleted, unless the model changed since (state/store.h).
 * @locality built by the worker; the delivery report hands it to part_t's swept
 * (under its lock), and the worker's next step frees it. */
typedef struct swept_s {
    opaque_kind_t kind; /* OPAQUE_SWEPT */
    part_t *part;
    uint64_t generation;
    size_t model_len;
    char model[];
} swept_t;

/* A record waiting for its step, and when the consumer handed it over. @locality in
 * part_t's queue, under its lock; the worker's once taken for a step. */
typedef struct queued_s {
    rd_kafka_message_t *m;
    double consumed_at;
} queued_t;

/* An input partition: its queue, its store, its outbox in flight, its takeover. Created
 * by the main thread at its first assignment (run_part_get()) and kept until exit. */
struct part_s {
    /* @locality set once at creation, read by any thread. */
    int32_t id;
    runner_t *r;
    pthread_mutex_t lock;
    pthread_cond_t idle; /* broadcast when a step ends */
    /* @locality any thread, under lock: the main thread (dispatch, assignments,
     * revokes, housekeeping), the worker, the delivery reports, /metrics. */
    queued_t *queue;
    size_t queue_len, queue_cap, queue_bytes;
    bool assigned, ready, scheduled, running, paused, failed, abort;
    int64_t expected;    /* next input offset the dispatcher accepts */
    uint64_t generation; /* one more with every assignment */
    step_t *steps;       /* produced steps not yet fully delivered, oldest first */
    size_t steps_len, steps_cap;
    uint64_t next_step_seq;
    outbox_range_t *done; /* delivered outbox ids, deleted by the next step */
    size_t done_len, done_cap;
    swept_t **swept; /* delivered sweep records, their marks cleared by the next step */
    size_t swept_len, swept_cap;
    int64_t committable;  /* every record before it is applied and its output delivered */
    int64_t committed;    /* what was last committed to Kafka */
    int64_t changes_next; /* after the newest change record delivered */
    /* Taking the partition over: a transient failure is retried at retry_at (> 0),
     * after retry_delay; failing_since > 0 since the first failure; why: the last
     * failure (transient or, with failed, for good), for /healthz and /readyz. */
    double retry_at, retry_delay, failing_since;
    char why[192];
    /* @locality the worker's, while running (and the main thread's while not
     * assigned: a revoke waits for the step in flight, then closes the store): */
    _Atomic int64_t changes_stored; /* written by the worker, read by housekeeping */
    state_store_t *store;
    processor_handler_t *handler;
    part_t *next_ready;      /* under the runner's runq_lock */
    bool leftovers_produced; /* this store's outbox, once per store opened */
    uint64_t checkpointed;   /* the store's flush point last checkpointed (0: none) */
    _Atomic double checkpoint_at; /* monotonic s of the last checkpoint made (0: none) */
    char attempt_why[192];        /* why the takeover in progress failed */
    size_t cache_bytes;           /* the store's share of --cache-mb */
    /* @locality for /metrics: written by the worker, read by the HTTP thread. */
    atomic_int_fast64_t catch_up_remaining; /* records left to read while catching up */
    state_store_stats_t stats;              /* under lock; refreshed by the worker */
    double stats_at;                        /* the worker's, like store */
    uint64_t cache_hits_counted, cache_misses_counted; /* the worker's */
    /* @locality the snapshot sweep: the worker's; sweep_at is also read by the main
     * thread's housekeeping. When the next pass starts, where this one is. */
    _Atomic double sweep_at;
    double sweep_started_at;
    char *sweep_after; /* the last model visited by the pass in progress */
    size_t sweep_after_len;
    uint64_t sweep_published;
};

/* The runner: one per processor_run(). */
struct runner_s {
    /* @locality set by the main thread before the other threads start, then read
     * only (by every thread). */
    const processor_config_t *cfg;
    const char *state_dir;
    const char *bootstrap;
    volatile sig_atomic_t *stop;
    rd_kafka_t *consumer, *producer;
    codec_limits_t limits;
    codec_value_t *initial_document;
    int32_t partition_count;  /* of the flushes topic */
    size_t max_message_bytes; /* the producer's message.max.bytes */
    char *settings;           /* processor_settings(): recorded with each store */
    /* processor_settings_id(): a header of every change and snapshot record */
    char settings_id[PROCESSOR_SETTINGS_ID_LEN + 1];
    /* @locality the partitions: grown by the main thread under parts_lock (the HTTP
     * thread reads them under it); each part_t has its own lock. */
    part_t **parts; /* by partition id; created by the main thread */
    size_t parts_cap;
    pthread_mutex_t parts_lock; /* parts' growth vs. the HTTP thread */
    /* @locality atomics, any thread. */
    atomic_long snapshot_too_large_logged; /* when, in seconds (one line a minute) */
    atomic_int assigned_count;
    atomic_size_t cache_share; /* --cache-mb divided among the assigned partitions */
    atomic_size_t cache_pool;  /* what the stores' caches hold together (their pool) */

    /* @locality the run queue, under runq_lock: the main thread and workers. */
    pthread_mutex_t runq_lock;
    pthread_cond_t runq_cond;
    part_t *runq_head, *runq_tail;
    bool stopping;
    /* @locality the threads: the main thread's. */
    pthread_t *workers;
    size_t worker_count;
    pthread_t producer_thread;
    atomic_bool producer_stop;
    atomic_bool fatal;    /* any thread sets it; the main loop stops */
    atomic_bool joined;   /* the group gave this instance an assignment (maybe empty) */
    bool consumer_leaked; /* not destroyed: see runner_leave() (run_loop.c) */

    /* @locality counters, atomic: written by workers and delivery reports, read by the
     * main thread's stats line and the HTTP thread. */
    atomic_uint_fast64_t records, errors, dead_letters;
    atomic_uint_fast64_t delivery_failures; /* outbox records Kafka never took */
    /* @locality under reply_topics_lock, workers: partition counts of the topics
     * replies were addressed to (run_reply_topic_partitions()). */
    pthread_mutex_t reply_topics_lock;
    struct {
        char name[STATE_OUTBOX_NAME_BYTES];
        int count; /* -1: no such topic */
        double at;
    } reply_topics[256];
    size_t reply_topics_len;
    /* @locality for /metrics (run_status.c): atomic, written by workers. */
    processor_histogram_t record_latency; /* consumed -> its outputs produced */
    atomic_uint_fast64_t flushes_applied, commands_applied;
    atomic_uint_fast64_t errors_by_code[CODEC_ERR__COUNT];
    atomic_uint_fast64_t dead_letters_by_code[CODEC_ERR__COUNT];
    atomic_uint_fast64_t cache_hits, cache_misses;
    atomic_uint_fast64_t snapshot_records; /* handed to the producer, both kinds */
    atomic_uint_fast64_t takeover_retries; /* takeovers failed on a transient error */
    atomic_uint_fast64_t checkpoints, checkpoint_failures; /* --checkpoint-dir */
    processor_histogram_t step_duration; /* apply, store commit, hand to the producer */
    _Atomic double loop_at;              /* the main loop's last turn (liveness) */
    processor_http_t *http;              /* the main thread's */
    /* NULL without --standby-interval-ms; set by the main thread once its thread runs,
     * read by the workers' claims and the HTTP thread (started before it). */
    _Atomic(standby_t *) standby;
};

/* A model id with its length (ids may hold NUL bytes: lengths, not strlen). */
typedef struct model_ref_s {
    char *ptr;
    size_t len;
} model_ref_t;

/* Output records of one step, not yet produced. @locality the step's worker. */
typedef struct step_out_s {
    delivery_t **items;
    size_t len, cap;
    size_t bytes;               /* of the items' keys, values and headers */
    model_ref_t *snapshots_due; /* models whose snapshot record is due, once each */
    size_t due_len, due_cap;
} step_out_t;

/* ---- failpoints (tests only): run_failpoint.c ---- */

typedef enum failpoint_e {
    FAILPOINT_NONE,
    FAILPOINT_AFTER_COMMIT,
    FAILPOINT_CATCH_UP,
    FAILPOINT_CATCH_UP_SLOW,
    FAILPOINT_STEP_OUTPUT_BYTES,
    FAILPOINT_ASSIGN_SLOW,
    FAILPOINT_REVOKE_WAIT,
} failpoint_t;

/** Arms the failpoint FLUSHOUT_FAILPOINT names, if any. @locality main thread, before
 *  the other threads start. */
void failpoint_init(void);

/** Dies (as kill -9 would) when the armed failpoint of this kind is reached; the slow
 *  catch-up and assignment failpoints sleep instead. @locality any thread. */
void failpoint(failpoint_t kind);

/** The output bytes after which a step ends: normal, or N when step-output-bytes:N is
 *  armed. */
size_t failpoint_step_output_bytes(size_t normal);

/** How long a revoke waits for its partitions' records: normal, or MS when
 *  revoke-wait:MS is armed. */
long failpoint_revoke_wait_ms(long normal);

/* ---- the run queue and the workers: run_worker.c ---- */

/** The partition id, created at its first assignment. @locality main thread. */
part_t *run_part_get(runner_t *r, int32_t id);

/** The partition's state, or NULL if it was never assigned here. @locality main
 *  thread. */
part_t *run_part_find(const runner_t *r, int32_t id);

/** Drops the records queued for the partition. Caller holds p->lock. */
void run_part_drop_queue(part_t *p);

/** Marks the partition failed: it is paused and no longer processed until it is
 *  assigned again (a restart, or a rebalance). @locality any thread, p->lock not
 *  held. */
void run_part_fail(part_t *p);

/** Queues p for a worker unless it is queued or running. Caller holds p->lock. */
void run_schedule(part_t *p);

/** Appends a record of the consumer to its partition's queue (ownership of m passes
 *  on), consumed at consumed_at (monotonic seconds). @locality main thread. */
void run_dispatch(runner_t *r, rd_kafka_message_t *m, double consumed_at);

/** A worker thread: runs steps of the partitions in the run queue until stopping. */
void *run_worker_main(void *opaque);

/** A list holding one partition of topic, at offset. @returns a list the caller
 *  destroys. */
rd_kafka_topic_partition_list_t *run_one_partition(const char *topic, int32_t partition,
                                                   int64_t offset);

/* ---- a record -> its outputs: run_step.c ---- */

/** Applies one record; output records go to so (and to the store's outbox).
 *  @returns false when the partition must stop (the store failed). @locality the
 *  partition's worker. */
bool run_process_record(part_t *p, const rd_kafka_message_t *m, processor_output_t *out,
                        step_out_t *so);

/* ---- delivery of the outbox: run_delivery.c ---- */

/** One outbox record on its way to Kafka (a copy of rec; input_offset -1: a leftover).
 *  value_at (NULL: the value is copied too) is where the value lies in its committed
 *  step's bytes, which run_delivery_attach() gives it.
 *  @returns a delivery run_produce_step() takes, or run_delivery_free() frees. */
delivery_t *run_delivery_new(part_t *p, uint64_t outbox_id, const state_outbox_rec_t *rec,
                             int64_t input_offset, bool change, const size_t *value_at);

/** Points ds[0..n)'s values (those made with a value_at) into b, the bytes of their
 *  committed step id, each with a reference of its own; the caller's reference to b
 *  is dropped. @returns 0, or -1 when b is not the step they were added to (then
 *  they are not produced). */
int run_delivery_attach(delivery_t **ds, size_t n, state_outbox_bytes_t *b, uint64_t id);

void run_delivery_free(delivery_t *d);

/** Produces a step's records (ownership of ds[0..n) passes on, not of ds): the input
 *  offset next_offset (-1: none) is committable once they are all delivered.
 *  @locality the partition's worker. */
void run_produce_step(part_t *p, delivery_t **ds, size_t n, int64_t next_offset);

/** The producer's delivery report callback (rd_kafka_conf_set_dr_msg_cb). */
void run_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

/** The thread that serves the producer's delivery reports until producer_stop. */
void *run_producer_main(void *opaque);

/** Adds the delivered outbox ids, the changes position and the confirmed sweep records
 *  to the store's batch. @locality the partition's worker (or the main thread at a
 *  revoke). */
void run_take_done(part_t *p);

/** --checkpoint-dir: checkpoints p's store when a flush point came since the last one
 *  (now: makes one first, as a revoke does). A failure is logged; the last checkpoint
 *  stays, and the next flush point tries again. */
void run_checkpoint(part_t *p, bool now);

/** The partition count of a topic a reply is addressed to (cached for a minute).
 *  @returns the count, or -1 and why. @locality any worker. */
int run_reply_topic_partitions(runner_t *r, const char *topic, char *why,
                               size_t why_size);

/* ---- snapshot records and the sweep: run_sweep.c ---- */

/** Publishes the snapshot records due in a step, as committed. @locality the
 *  partition's worker, after the step's commit. */
void run_snapshots_produce(part_t *p, const step_out_t *so);

/** Runs one chunk of the sweep when it is due. @returns true when the pass has more to
 *  do. @locality the partition's worker, between steps. */
bool run_sweep_chunk(part_t *p);

/** Starts the sweep over: no pass in progress, the next one at (monotonic seconds).
 *  @locality the partition's worker. */
void run_sweep_plan(part_t *p, double at);

/* ---- handoff: run_handoff.c (taking a partition over: run_takeover.c) ---- */

/** Divides --cache-mb among the assigned partitions. @locality main thread. */
void run_cache_share(runner_t *r);

/** Applies the partition's share of --cache-mb to its store. @locality the partition's
 *  worker, between steps. */
void run_cache_share_apply(part_t *p);

/** Hands the committable offsets (of every assigned partition, or of only) to
 *  librdkafka's commits. @locality main thread. */
void run_offsets_commit(runner_t *r, const rd_kafka_topic_partition_list_t *only);

/** The consumer's rebalance callback (rd_kafka_conf_set_rebalance_cb). @locality main
 *  thread (inside rd_kafka_consumer_poll and _close). */
void run_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *parts, void *opaque);

/** Takes the partition over: opens its store, produces its outbox leftovers, catches up
 *  and starts consuming (run_takeover.c). @locality the partition's worker. */
void run_prepare(part_t *p);

/** How this runner catches a partition's store up (catch_up.h): its topics, clients and
 *  settings; the caller adds its stop check and progress. Shared by a takeover and the
 *  standby. */
processor_catch_up_conf_t run_catch_up_conf(const runner_t *r, state_store_t *store,
                                            int32_t partition);
/** Whether the store in dir was built for the flushes topic's partition count and under
 *  r's settings (what it has not recorded yet is not checked; the interceptor's hash
 *  never is); *count_recorded says whether it recorded a count, and *recorded gets
 *  its recorded settings (caller frees; NULL for none, or on a mismatch). Either may
 *  be NULL. Shared by the start (every store in the state directory) and each
 *  takeover. @returns 0, or -1 and errstr. */
int run_state_check(const runner_t *r, state_store_t *store, const char *dir,
                    bool *count_recorded, char **recorded, char *errstr,
                    size_t errstr_size);

/* ---- warm standbys: run_standby.c ---- */

/** Starts the standby thread (with --standby-interval-ms; else nothing). @locality main
 *  thread, after the workers start. */
void run_standby_start(runner_t *r);

/** Stops and joins the standby thread (safe without one, or twice). @locality main
 *  thread, before the consumer is closed: its revokes would hand partitions back. */
void run_standby_stop(runner_t *r);

/** Stops the standby and frees it. @locality main thread, once the workers and the
 *  HTTP thread (which read it) are stopped. */
void run_standby_free(runner_t *r);

/** Takes the partition from the standby before its store is opened: from now on the
 *  standby leaves it alone, and a catch-up of it in progress stops after its record
 *  (what was committed stays). Waits for the standby to close the store. @locality the
 *  partition's worker (run_prepare()). */
void run_standby_claim(runner_t *r, int32_t partition);

/** Tells the standby that the partition was assigned here, without waiting: it closes
 *  the partition's store in the background while the workers take the partitions of
 *  the assignment over one by one. @locality main thread (an assignment). */
void run_standby_own(runner_t *r, int32_t partition);

/** Gives a revoked partition back to the standby, once its store is closed. @locality
 *  main thread. */
void run_standby_return(runner_t *r, int32_t partition);

/** What the standby did, for /metrics. */
typedef struct standby_view_s {
    uint64_t passes;  /* over every partition not owned */
    uint64_t applied; /* change records applied */
    int kept;         /* partitions not owned here (kept warm) */
    int refused;      /* of another layout or settings: left alone */
} standby_view_t;

/** @returns false without a standby. @locality any thread. */
bool run_standby_view(runner_t *r, standby_view_t *out);

/* ---- status: run_status.c ---- */

/** Refreshes the partition's store figures for /metrics, at most once a second unless
 *  forced. @locality the partition's worker. */
void run_stats_refresh(part_t *p, bool force);

/** The stats line; rate < 0: the final line. @locality main thread. */
void run_stats_log(runner_t *r, double rate);

/** Renders /metrics, /healthz and /readyz (processor_http_start()'s callback).
 *  @returns the HTTP status. @locality the HTTP thread. */
int run_status_render(void *ctx, const char *path, FILE *fp);

#endif
