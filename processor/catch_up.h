/* processor/catch_up.h - brings one partition's store up to date from the changes and
 * snapshots topics: how a partition's new owner catches up (run), and how `rebuild
 * --from changes` and `repartition` rebuild a state directory offline.
 *
 * The rules, stated here once (state/README.md points here):
 *  1. Changes from the store's position. The change records are applied from the
 *     store's changes position (the changes-topic offset after the newest record it
 *     reflects; none: the beginning) to the end of the changes partition as it was
 *     when the catch-up started. Each record is applied as the flush was
 *     (state_store_apply_change()); one the model already reflects is skipped.
 *  2. When they do not reach back, restore and re-read. When the changes partition
 *     starts after the store's position (retention), the snapshots ahead of the store
 *     are installed first (each model's latest snapshot record whose count is above
 *     the model's) and the changes are read from the partition's start. When a change
 *     record starts above its model's count (a gap), the snapshots ahead are
 *     installed and the changes read again from where this catch-up started (what was
 *     applied is kept; the records it reflects are skipped). When that still leaves a
 *     gap, or there is no snapshots topic, the partition is refused: a model served
 *     without some of its commands would be served wrong.
 *  3. A new store holds its changes position until it is complete. A store with no
 *     changes position also installs, at the end, the snapshots ahead of what the
 *     change records gave it: a model moved by `repartition` and not changed since is
 *     in the snapshots topic alone. Until all of this is done its changes position is
 *     not recorded, so an interrupted first catch-up starts again as new, snapshots
 *     included. Installing only what is ahead keeps the history the change records
 *     gave the other models.
 *  4. Records of another layout or settings stop everything. A change or snapshot
 *     record whose key maps to another partition (--partitioner, partition count) was
 *     written under another partition count; one whose settings header names other
 *     settings (and not one of --accept-settings) was written by processors that
 *     answer differently. Both are fatal: every partition would diverge the same
 *     way. A snapshot record that cannot be read refuses the partition (skipping it
 *     would serve the model rolled back).
 *  5. Commits. The store is committed every PROCESSOR_RESTORE_COMMIT_EVERY change
 *     records (setup.h), after each snapshot installed (a later record of the same model
 * reads it back), and at the end. A catch-up that stops on a transient error keeps what
 *     it applied; the next attempt goes on from the store's position. The commits skip
 *     the write-ahead log and are flushed once at the end (state_store_restore_end()):
 *     a crash leaves the store at one of them, each holding its position.
 *
 * The input offset: the live processor starts consuming the flushes from Kafka's
 * committed offset, so a flush applied by the old owner but not yet committed there is
 * answered again (as a duplicate). An owner restarted after a crash is a new owner of
 * its own store: that store has no write-ahead log (state_store_conf_t.changelog), so
 * it is as its last memtable flush left it, and these rules bring it forward. Offline,
 * there is no committed offset to start from: `rebuild` records the input offset that the
 * change records reached (track_input) as the store's next offset. */
#ifndef FLUSHOUT_PROCESSOR_CATCH_UP_H
#define FLUSHOUT_PROCESSOR_CATCH_UP_H

#include <librdkafka/rdkafka.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "options.h"
#include "state/store.h"

/* What to do about state or records of another layout (partition count). */
#define PROCESSOR_REPARTITION_HINT                                                      \
    "keys map to partitions by the partition count, so this state belongs to another "  \
    "layout; move the models with `flushout-processor repartition` (deploy/README.md, " \
    "\"Repartitioning\") and start on empty state directories"

/* processor_catch_up(): a transient error (a timeout, no leader, the reader failed or
 * retention overtook it): try again later; the store keeps what was applied. */
#define PROCESSOR_CATCH_UP_AGAIN 1
/* processor_catch_up(): a record of another layout or settings (rule 4, logged): every
 * partition would fail the same way, so the caller stops. */
#define PROCESSOR_CATCH_UP_FATAL 2

typedef struct processor_catch_up_conf_s {
    const processor_config_t *cfg; /* the changes topic, -X properties, partitioner */
    const char *bootstrap;         /* the brokers to read from */
    rd_kafka_t *rk;                /* any client of that cluster: watermark queries */
    state_store_t *store;          /* the caller's; committed as the rules say */
    int32_t partition;
    /* NULL: none (then a catch-up that does not reach back is refused). */
    const char *snapshots_topic;
    const char *settings; /* processor_settings(): records under others are fatal */
    /* The flushes topic's partition count: every record's key must map to partition
     * (rule 4). 0: no check. */
    int32_t partition_count;
    bool track_input; /* record the input offset the change records reach (rebuild) */
    bool quiet;       /* its routine lines at debug level (a standby's frequent passes) */
    /* Polled between records: true stops the catch-up (-1). NULL: never. */
    bool (*stopped)(void *ctx);
    /* Called after each change record applied (the tests' failpoints). NULL: none. */
    void (*applied)(void *ctx);
    void *ctx;                      /* for stopped and applied */
    atomic_int_fast64_t *remaining; /* NULL, or records left to read (/metrics) */
} processor_catch_up_conf_t;

/* What a catch-up did (also when it failed: what it got to). */
typedef struct processor_catch_up_stats_s {
    uint64_t records;   /* change records read */
    uint64_t applied;   /* ... applied */
    uint64_t skipped;   /* ... already reflected */
    uint64_t installed; /* snapshot records installed */
    int64_t position;   /* the changes position reached (-1: no change record read) */
    int64_t next_input; /* track_input: the input offset reached (-1: none) */
} processor_catch_up_stats_t;

/** Catches conf->store up (the rules above) and commits it.
 *  @returns 0, -1 (failed for good: logged), PROCESSOR_CATCH_UP_AGAIN (why says what
 *  failed; nothing logged), or PROCESSOR_CATCH_UP_FATAL (logged). */
int processor_catch_up(const processor_catch_up_conf_t *conf,
                       processor_catch_up_stats_t *stats, char *why, size_t why_size);

#endif
