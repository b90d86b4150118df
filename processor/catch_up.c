/* processor/catch_up.c - one partition's store caught up from the changes and snapshots
 * topics; the rules are in catch_up.h. */
#include "catch_up.h"

#include <stdio.h>
#include <string.h>

#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "setup.h"

/* Codes of the reads, besides 0, -1 and the PROCESSOR_CATCH_UP_* ones. */
#define CATCH_UP_GAP 3 /* a change record starts above its model's count */
#define READ_FAILED  5 /* a visit failed for good (-1): not the reader's own -1 */

/* The level of a catch-up's routine lines (where it reads, what it applied). */
#define ROUTINE(conf) ((conf)->quiet ? PROCESSOR_LOG_DEBUG : PROCESSOR_LOG_INFO)

/* A catch-up in progress. */
typedef struct catch_up_s {
    const processor_catch_up_conf_t *conf;
    processor_catch_up_stats_t *st;
    char *why;
    size_t why_size;
    int (*visit)(struct catch_up_s *cu, const rd_kafka_message_t *m);
    const char *topic; /* of the read in progress */
    int64_t hi;        /* where it ends */
    int64_t from;      /* where it started */
    uint64_t uncommitted;
    bool hold_position; /* rule 3: a new store records no changes position yet */
    bool restoring;     /* installing says nothing about the changes position */
    bool fatal;         /* a record of another layout was met */
} catch_up_t;

static int read_visit(const rd_kafka_message_t *m, void *ctx)
{
    catch_up_t *cu = ctx;
    if (cu->conf->remaining)
        atomic_store(cu->conf->remaining, cu->hi - m->offset - 1);
    int rc = cu->visit(cu, m);
    return rc < 0 ? READ_FAILED : rc;
}

static bool read_stopped(void *ctx)
{
    const processor_catch_up_conf_t *conf = ((catch_up_t *)ctx)->conf;
    return conf->stopped && conf->stopped(conf->ctx);
}

/* Reads topic's partition from offset from to hi, handing each record to visit.
 * @returns 0, CATCH_UP_GAP, -1 (a visit failed for good, or stopped),
 * PROCESSOR_CATCH_UP_AGAIN (the reader failed, or retention overtook it: the next
 * attempt starts from the watermarks again) or PROCESSOR_CATCH_UP_FATAL. */
static int read_topic(catch_up_t *cu, const char *topic, int64_t from, int64_t hi,
                      int (*visit)(catch_up_t *cu, const rd_kafka_message_t *m))
{
    const processor_catch_up_conf_t *conf = cu->conf;
    /* From the first read on, commits skip the write-ahead log (processor_catch_up()
     * flushes them at the end); a catch-up with nothing to read writes as usual. */
    state_store_restore_begin(conf->store);
    cu->visit = visit;
    cu->topic = topic;
    cu->hi = hi;
    cu->from = from;
    processor_partition_read_t rd = {topic,      conf->partition, from, hi,
                                     read_visit, read_stopped,    cu};
    rd.contiguous = !strcmp(topic, conf->cfg->changes_topic);
    rd.settings = conf->settings;
    if (conf->remaining)
        atomic_store(conf->remaining, hi - from);
    int rc = processor_read_partition(conf->cfg, conf->bootstrap, &rd);
    if (conf->remaining)
        atomic_store(conf->remaining, 0);
    /* Written under other settings: every partition would diverge the same way. */
    if (rc == PROCESSOR_READ_SETTINGS || cu->fatal)
        return PROCESSOR_CATCH_UP_FATAL;
    if (rc == READ_FAILED || (rc == -1 && read_stopped(cu)))
        return -1; /* nothing to try again */
    if (rc == -1 || rc == PROCESSOR_READ_GAP) {
        snprintf(cu->why, cu->why_size, "reading %s failed", topic);
        return PROCESSOR_CATCH_UP_AGAIN;
    }
    return rc;
}

/* Checks that a record of the changes or snapshots topic belongs to the partition it
 * is in: one that does not was written under another partition count (rule 4).
 * @returns 0, or -1 (logged). */
static int check_record_layout(catch_up_t *cu, const rd_kafka_message_t *m)
{
    const processor_catch_up_conf_t *conf = cu->conf;
    int32_t owner = m->key && conf->partition_count > 0
                        ? processor_key_partition(conf->cfg->partitioner, m->key,
                                                  m->key_len, conf->partition_count)
                        : -1;
    if (owner < 0 || owner == conf->partition)
        return 0;
    LOG_ERROR("partition %d: the record at %s offset %lld is model " MODEL_FMT ", which "
              "belongs to partition %d of %d: the topic was written under another "
              "partition count (or --partitioner); " PROCESSOR_REPARTITION_HINT,
              conf->partition, cu->topic, (long long)m->offset,
              MODEL_ARG((const char *)m->key, m->key_len), owner, conf->partition_count);
    cu->fatal = true;
    return -1;
}

/* Commits the store, with the changes position reached unless it is held (rule 3) or
 * snapshots are being installed, and the input offset reached when tracked.
 * @returns 0, or -1 (logged). */
static int commit(catch_up_t *cu)
{
    const processor_catch_up_conf_t *conf = cu->conf;
    char errstr[512];
    if (cu->st->position >= 0 && !cu->hold_position && !cu->restoring)
        state_store_set_changes_offset(conf->store, cu->st->position);
    int64_t next_input = conf->track_input ? cu->st->next_input : -1;
    if (state_store_commit(conf->store, next_input, errstr, sizeof(errstr))) {
        LOG_ERROR("partition %d: the state store failed: %s", conf->partition, errstr);
        return -1;
    }
    cu->uncommitted = 0;
    return 0;
}

static int apply_change(catch_up_t *cu, const rd_kafka_message_t *m)
{
    const processor_catch_up_conf_t *conf = cu->conf;
    processor_catch_up_stats_t *st = cu->st;
    char errstr[512];
    int64_t input = -1;
    if (check_record_layout(cu, m))
        return -1;
    st->records++;
    switch (state_store_apply_change(conf->store, m->key, m->key_len,
                                     m->payload ? m->payload : "", m->len, &input, errstr,
                                     sizeof(errstr))) {
    case STATE_CHANGE_APPLIED:
        st->applied++;
        if (conf->applied)
            conf->applied(conf->ctx);
        break;
    case STATE_CHANGE_SKIPPED:
        st->skipped++;
        break;
    case STATE_CHANGE_GAP:
        LOG_WARN("partition %d: change record at %s offset %lld: %s", conf->partition,
                 cu->topic, (long long)m->offset, errstr);
        return commit(cu) ? -1 : CATCH_UP_GAP;
    case STATE_CHANGE_FAILED:
        LOG_ERROR("partition %d: change record at %s offset %lld: %s; the partition is "
                  "refused (its state would be wrong)",
                  conf->partition, cu->topic, (long long)m->offset, errstr);
        return -1;
    }
    if (input + 1 > st->next_input)
        st->next_input = input + 1;
    st->position = m->offset + 1;
    return ++cu->uncommitted >= PROCESSOR_RESTORE_COMMIT_EVERY ? commit(cu) : 0;
}

static int install_snapshot(catch_up_t *cu, const rd_kafka_message_t *m)
{
    const processor_catch_up_conf_t *conf = cu->conf;
    char errstr[512];
    if (check_record_layout(cu, m))
        return -1;
    int rc = state_store_install_snapshot(conf->store, m->key, m->key_len,
                                          m->payload ? m->payload : "", m->len, errstr,
                                          sizeof(errstr));
    if (rc < 0) { /* skipping it would serve the model rolled back */
        LOG_ERROR("partition %d: snapshot record at %s offset %lld: %s; the partition is "
                  "refused (its state would be wrong)",
                  conf->partition, cu->topic, (long long)m->offset, errstr);
        return -1;
    }
    cu->st->installed += (uint64_t)rc;
    /* Each install is committed: a later record of the same model reads it back. */
    return rc ? commit(cu) : 0;
}

/* The first and next offsets of topic's partition. @returns 0, or
 * PROCESSOR_CATCH_UP_AGAIN (a timeout, no leader, ...: why says which). */
static int partition_ends(catch_up_t *cu, const char *topic, int64_t *lo, int64_t *hi)
{
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
        cu->conf->rk, topic, cu->conf->partition, lo, hi, PROCESSOR_KAFKA_TIMEOUT_MS);
    if (err)
        snprintf(cu->why, cu->why_size, "cannot read the offsets of %s: %s", topic,
                 rd_kafka_err2str(err));
    return err ? PROCESSOR_CATCH_UP_AGAIN : 0;
}

/* Installs the latest snapshot of every model of the partition that is ahead of the
 * store. @returns 0, -1 (logged), PROCESSOR_CATCH_UP_AGAIN or PROCESSOR_CATCH_UP_FATAL.
 */
static int restore_snapshots(catch_up_t *cu)
{
    const processor_catch_up_conf_t *conf = cu->conf;
    const char *topic = conf->snapshots_topic;
    int64_t lo, hi;
    int rc = partition_ends(cu, topic, &lo, &hi);
    if (rc)
        return rc;
    processor_log(ROUTINE(conf), "partition %d: restoring from %s offsets %lld..%lld",
                  conf->partition, topic, (long long)lo, (long long)hi);
    cu->restoring = true;
    rc = lo < hi ? read_topic(cu, topic, lo, hi, install_snapshot) : 0;
    cu->restoring = false;
    if (!rc)
        processor_log(ROUTINE(conf),
                      "partition %d: %llu snapshot records installed (models restored)",
                      conf->partition, (unsigned long long)cu->st->installed);
    return rc;
}

/* Rules 1 to 3: the reads, in their order. @returns as processor_catch_up(), or
 * CATCH_UP_GAP (logged). */
static int catch_up(catch_up_t *cu)
{
    const processor_catch_up_conf_t *conf = cu->conf;
    const char *topic = conf->cfg->changes_topic;
    int64_t from = state_store_changes_offset(conf->store);
    int64_t lo, hi;
    int rc = partition_ends(cu, topic, &lo, &hi);
    if (rc)
        return rc;
    bool restored = false, fresh = from < 0;
    cu->hold_position = fresh && conf->snapshots_topic;
    if (from < lo && lo > 0) {
        LOG_WARN("partition %d: %s starts at %lld (retention), after this store's "
                 "position %lld",
                 conf->partition, topic, (long long)lo, (long long)from);
        if (!conf->snapshots_topic) {
            LOG_ERROR("partition %d: there is no snapshots topic to restore its models "
                      "from; the partition is refused rather than rebuilt wrong",
                      conf->partition);
            return -1;
        }
        if ((rc = restore_snapshots(cu)))
            return rc;
        restored = true;
    }
    if (from < lo)
        from = lo;
    if (from < hi) {
        processor_log(ROUTINE(conf),
                      "partition %d: catching up from %s offsets %lld..%lld",
                      conf->partition, topic, (long long)from, (long long)hi);
        rc = read_topic(cu, topic, from, hi, apply_change);
        if (rc == CATCH_UP_GAP && !restored && conf->snapshots_topic) {
            restored = true;
            rc = restore_snapshots(cu);
            if (!rc)
                rc = read_topic(cu, topic, from, hi, apply_change);
        }
        if (rc == CATCH_UP_GAP)
            LOG_ERROR("partition %d: neither %s nor %s reaches back far enough to "
                      "rebuild its models; the partition is refused rather than rebuilt "
                      "wrong (restore the topics, or rebuild it from the flushes topic)",
                      conf->partition, topic,
                      conf->snapshots_topic ? conf->snapshots_topic
                                            : "a snapshots topic");
    }
    /* Rule 3: what is in the snapshots topic alone. */
    if (!rc && fresh && !restored && conf->snapshots_topic)
        rc = restore_snapshots(cu);
    return rc;
}

/* The reads and the last commit. @returns as processor_catch_up(). */
static int catch_up_commit(catch_up_t *cu)
{
    int rc = catch_up(cu);
    /* Tried again later: what was applied is kept, the rest comes next time. */
    if (rc == PROCESSOR_CATCH_UP_AGAIN)
        return commit(cu) ? -1 : rc;
    if (rc == PROCESSOR_CATCH_UP_FATAL)
        return rc;
    cu->hold_position = false;
    return rc || commit(cu) ? -1 : 0;
}

int processor_catch_up(const processor_catch_up_conf_t *conf,
                       processor_catch_up_stats_t *stats, char *why, size_t why_size)
{
    *stats = (processor_catch_up_stats_t){.position = -1, .next_input = -1};
    catch_up_t cu = {.conf = conf, .st = stats, .why = why, .why_size = why_size};
    double start = processor_monotonic_s();
    /* The reads' commits skip the write-ahead log and are flushed once here: a crash
     * loses at most the commits since RocksDB's last memtable flush, and every commit
     * holds the position its state reflects (rules 3 and 5), so the next attempt goes
     * on from an earlier one. */
    int rc = catch_up_commit(&cu);
    char errstr[512];
    if (state_store_restore_end(conf->store, errstr, sizeof(errstr))) {
        LOG_ERROR("partition %d: the state store failed: %s", conf->partition, errstr);
        return -1;
    }
    if (rc)
        return rc;
    processor_log(ROUTINE(conf),
                  "partition %d: caught up: %llu change records applied, %llu already "
                  "reflected, in %.1f s",
                  conf->partition, (unsigned long long)stats->applied,
                  (unsigned long long)stats->skipped, processor_monotonic_s() - start);
    return 0;
}
