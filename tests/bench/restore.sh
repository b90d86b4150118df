#!/usr/bin/env bash
# tests/bench/restore.sh - how fast a partition's state is rebuilt from the changes
# topic, against live processing of the same flushes, on the embedded broker.
#
#   tests/bench/restore.sh [FLUSHES (60000)] [MODELS (500)] [PARTITIONS (4)]
#
# FLUSHES is bounded by the embedded broker, which keeps about 5 MiB per partition
# (60,000 flushes make about 3.5 MiB of change records per partition of 4): more
# partitions allow more flushes, and a longer, better resolved run (16 and 240,000).
#
# 1. fills the flushes topic with FLUSHES flushes (two commands each) for MODELS models;
# 2. live: `run` processes them all (from its first partition processing to the
#    timestamp of the last change record), producing replies and change records;
# 3. restore: `rebuild --from changes` applies the change records into an empty state
#    directory, the path a partition's new owner takes when it catches up;
# 4. for reference, `rebuild --from flushes` re-runs the flushes without producing.
# Prints records/s of each and the restore/live ratio (target: at least 5x).
# RESTORE_PERF=FILE profiles step 3 with perf; BIN=PATH runs another build, BROKER=PATH
# the embedded broker of another build.
#
# CHECKPOINT_TAIL=T also measures a restore from checkpoints: step 2 runs in two parts,
# the first FLUSHES-T flushes with `run --checkpoint-dir` (stopped: each partition's
# store is checkpointed as it is revoked), then the last T by a run that makes none
# (live is the first part's rate); `rebuild --from changes --checkpoint-dir` then starts
# each partition from its checkpoint and replays the T flushes' change records.
set -euo pipefail
flushes=${1:-60000}
models=${2:-500}
partitions=${3:-4}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
bin=${BIN:-$top/build/bin/flushout-processor}
[[ -x $bin ]] || { echo "restore.sh: build first (cmake --build build)" >&2; exit 1; }
work=$(mktemp -d /tmp/flushout-restore-XXXXXX)
dev_pid=
run_pid=
cleanup() {
  [[ -n $run_pid ]] && kill "$run_pid" 2>/dev/null
  [[ -n $dev_pid ]] && kill "$dev_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }

"${BROKER:-$bin}" dev --broker-only --partitions "$partitions" >"$work/dev.out" 2>"$work/dev.log" &
dev_pid=$!
for _ in $(seq 100); do [[ -s $work/dev.out ]] && break; sleep 0.1; done
bootstrap=$(sed -n 's/^bootstrap\.servers=//p' "$work/dev.out")
tail_flushes=${CHECKPOINT_TAIL:-}
first=$flushes
[[ -n $tail_flushes ]] && first=$((flushes - tail_flushes))
(cd "$here" && node produce_flushes.js "$bootstrap" "$first" "$models")

common=(--bootstrap-servers "$bootstrap" --ids sequential --log-level "${LOG_LEVEL:-warn}")
# live_run COUNT [OPTIONS...]: `run` on the live state until the changes topic holds
# COUNT records, then stopped; $elapsed is its time: from its first partition
# processing to the newest change record's timestamp (set by the processor's producer
# as it sends), not to when this script saw the count, which it polls every 0.5 s.
live_run() {
  local count=$1 start
  shift
  "$bin" run "${common[@]}" --state-dir "$work/live" -X fetch.wait.max.ms=10 \
    --log-level info "$@" 2>"$work/run.log" &
  run_pid=$!
  # The clock starts when the first partition starts processing, not before the group
  # join (which the mock cluster delays by 3 s).
  until grep -q "processing from offset" "$work/run.log"; do
    kill -0 "$run_pid" || { cat "$work/run.log" >&2; exit 1; }
    sleep 0.02
  done
  start=$(now)
  while (($(cd "$here" && node count_records.js "$bootstrap" flushout.changes) < count)); do
    kill -0 "$run_pid" || { cat "$work/run.log" >&2; exit 1; }
    if (($(echo "$(now) - $start > 300" | bc))); then
      echo "restore.sh: the changes topic never held $count records (trimmed by the broker at 5 MiB a partition?); use fewer flushes or more partitions" >&2
      exit 1
    fi
    sleep 0.5
  done
  local last_ms
  last_ms=$(kcat -C -b "$bootstrap" -t flushout.changes -e -q -f '%T\n' | sort -n | tail -1)
  elapsed=$(echo "$last_ms / 1000 - $start" | bc -l)
  kill -TERM "$run_pid"
  wait "$run_pid" || true
  run_pid=
}

live_run "$first" ${tail_flushes:+--checkpoint-dir "$work/checkpoints"}
live=$elapsed
if [[ -n $tail_flushes ]]; then
  # The rest by a second run, not timed: its start (taking over its stores, the group's
  # join in two rounds) would be most of its time.
  (cd "$here" && node produce_flushes.js "$bootstrap" "$flushes" "$models" "$first")
  live_run "$flushes"
fi
# The embedded broker keeps about 5 MiB per partition: a larger run would be trimmed.
stored=$(cd "$here" && node count_records.js "$bootstrap" flushout.flushes)
((stored == flushes)) || { echo "restore.sh: the broker kept $stored of $flushes flushes; use fewer" >&2; exit 1; }

# RESTORE_PERF=FILE profiles the restore (perf record --call-graph dwarf into FILE).
prof=()
[[ -n ${RESTORE_PERF:-} ]] && prof=(perf record --call-graph "dwarf,16384" -o "$RESTORE_PERF" --)
start=$(now)
"${prof[@]}" "$bin" rebuild "${common[@]}" --state-dir "$work/from-changes" --from changes
restore=$(echo "$(now) - $start" | bc -l)
start=$(now)
"$bin" rebuild "${common[@]}" --state-dir "$work/from-flushes" --from flushes
replay=$(echo "$(now) - $start" | bc -l)
if [[ -n $tail_flushes ]]; then
  start=$(now)
  "$bin" rebuild "${common[@]}" --state-dir "$work/from-checkpoints" --from changes \
    --checkpoint-dir "$work/checkpoints"
  from_checkpoints=$(echo "$(now) - $start" | bc -l)
fi

printf '%-44s %10s %14s\n' "restore benchmark ($flushes flushes, $models models)" seconds records/s
live_rate=$(echo "$first / $live" | bc -l)
printf '%-44s %10.2f %14.0f\n' "live: run (apply + produce, after the join)" "$live" "$live_rate"
printf '%-44s %10.2f %14.0f\n' "restore: rebuild --from changes" "$restore" "$(echo "$flushes / $restore" | bc -l)"
printf '%-44s %10.2f %14.0f\n' "replay: rebuild --from flushes" "$replay" "$(echo "$flushes / $replay" | bc -l)"
if [[ -n $tail_flushes ]]; then
  printf '%-44s %10.2f %14.0f\n' "restore: from checkpoints, $tail_flushes after" "$from_checkpoints" "$(echo "$flushes / $from_checkpoints" | bc -l)"
fi
printf 'restore is %.1fx live processing (target 5x); replay is %.1fx\n' \
  "$(echo "$flushes / $restore / $live_rate" | bc -l)" "$(echo "$flushes / $replay / $live_rate" | bc -l)"
if [[ -n $tail_flushes ]]; then
  printf 'restore from checkpoints is %.1fx live processing (%s of the %s flushes after them)\n' \
    "$(echo "$flushes / $from_checkpoints / $live_rate" | bc -l)" "$tail_flushes" "$flushes"
fi
