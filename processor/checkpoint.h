/* processor/checkpoint.h - backups of the partitions' stores: `run --checkpoint-dir`
 * keeps each partition's latest checkpoint (the store as a flush point left it,
 * state_store_checkpoint()), and `rebuild --from changes --checkpoint-dir` starts a
 * partition from it, replaying only the change records after it.
 *
 * A checkpoint is the state a crash of its owner would have left: its input offset,
 * its changes position and the outbox records not delivered by then. So a store
 * started from one is brought forward by the rules of an owner restarted after a crash
 * (processor/catch_up.h), and produces those outbox records again when it is served.
 *
 * Names: <dir>/partition-N.<ms>, the wall-clock milliseconds when it was made (above
 * every older one of the partition). RocksDB makes it under a temporary name and
 * renames it when whole, so a name that is nothing but digits after the dot is
 * complete; once one is made, the partition's others are removed. */
#ifndef FLUSHOUT_PROCESSOR_CHECKPOINT_H
#define FLUSHOUT_PROCESSOR_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "state/store.h"

/** Checkpoints the store of partition into dir, unless *taken (the flush point of the
 *  last checkpoint) is its latest flush point already. On success *taken is the flush
 *  point held and path names the checkpoint.
 *  @returns 0 (made, or nothing new), 1 (the flush point is still being written: at
 *  a later step), or -1 and errstr. */
int processor_checkpoint_take(state_store_t *store, const char *dir, int32_t partition,
                              uint64_t *taken, char *path, size_t path_size, char *errstr,
                              size_t errstr_size);

/** The partition's latest complete checkpoint in dir, into path.
 *  @returns 1 (found), 0 (none), or -1 and errstr (dir cannot be read). */
int processor_checkpoint_latest(const char *dir, int32_t partition, char *path,
                                size_t path_size, char *errstr, size_t errstr_size);

/** Makes store_dir (which must not exist) a copy of the checkpoint: table and blob
 *  files hard-linked when on the same file system (they are never written again),
 *  everything else copied; all of it synced, in store_dir.installing, which is then
 *  renamed (a copy cut short is never taken for a store). @returns 0, or -1 and
 *  errstr. */
int processor_checkpoint_install(const char *checkpoint, const char *store_dir,
                                 char *errstr, size_t errstr_size);

/** The partition's latest checkpoint in dir installed as store_dir
 *  (processor_checkpoint_latest(), then processor_checkpoint_install()): how `rebuild`
 *  and a takeover start a partition they have no store for.
 *  @returns 1 (installed: checkpoint names it), 0 (dir holds none of the partition),
 *  or -1 and errstr. */
int processor_checkpoint_restore(const char *dir, int32_t partition,
                                 const char *store_dir, char *checkpoint,
                                 size_t checkpoint_size, char *errstr,
                                 size_t errstr_size);

#endif
