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
# 2. live: `run` processes them all (time from its start until the changes topic holds
#    one record per flush), producing replies and change records;
# 3. restore: `rebuild --from changes` applies the change records into an empty state
#    directory, the path a partition's new owner takes when it catches up;
# 4. for reference, `rebuild --from flushes` re-runs the flushes without producing.
# Prints records/s of each and the restore/live ratio (target: at least 5x).
# RESTORE_PERF=FILE profiles step 3 with perf; BIN=PATH runs another build, BROKER=PATH
# the embedded broker of another build.
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
(cd "$here" && node produce_flushes.js "$bootstrap" "$flushes" "$models")
# The embedded broker keeps about 5 MiB per partition: a larger run would be trimmed.
stored=$(cd "$here" && node count_records.js "$bootstrap" flushout.flushes)
((stored == flushes)) || { echo "restore.sh: the broker kept $stored of $flushes flushes; use fewer" >&2; exit 1; }

common=(--bootstrap-servers "$bootstrap" --ids sequential --log-level "${LOG_LEVEL:-warn}")
"$bin" run "${common[@]}" --state-dir "$work/live" -X fetch.wait.max.ms=10 \
  --log-level info 2>"$work/run.log" &
run_pid=$!
# The clock starts when the first partition starts processing, not before the group
# join (which the mock cluster delays by 3 s).
until grep -q "processing from offset" "$work/run.log"; do
  kill -0 "$run_pid" || { cat "$work/run.log" >&2; exit 1; }
  sleep 0.02
done
start=$(now)
while (($(cd "$here" && node count_records.js "$bootstrap" flushout.changes) < flushes)); do
  kill -0 "$run_pid" || { cat "$work/run.log" >&2; exit 1; }
  if (($(echo "$(now) - $start > 300" | bc))); then
    echo "restore.sh: the changes topic never held $flushes records (trimmed by the broker at 5 MiB a partition?); use fewer flushes or more partitions" >&2
    exit 1
  fi
  sleep 0.5
done
live=$(echo "$(now) - $start" | bc -l)
kill -TERM "$run_pid"
wait "$run_pid" || true
run_pid=

# RESTORE_PERF=FILE profiles the restore (perf record --call-graph dwarf into FILE).
prof=()
[[ -n ${RESTORE_PERF:-} ]] && prof=(perf record --call-graph "dwarf,16384" -o "$RESTORE_PERF" --)
start=$(now)
"${prof[@]}" "$bin" rebuild "${common[@]}" --state-dir "$work/from-changes" --from changes
restore=$(echo "$(now) - $start" | bc -l)
start=$(now)
"$bin" rebuild "${common[@]}" --state-dir "$work/from-flushes" --from flushes
replay=$(echo "$(now) - $start" | bc -l)

printf '%-44s %10s %14s\n' "restore benchmark ($flushes flushes, $models models)" seconds records/s
printf '%-44s %10.2f %14.0f\n' "live: run (apply + produce, after the join)" "$live" "$(echo "$flushes / $live" | bc -l)"
printf '%-44s %10.2f %14.0f\n' "restore: rebuild --from changes" "$restore" "$(echo "$flushes / $restore" | bc -l)"
printf '%-44s %10.2f %14.0f\n' "replay: rebuild --from flushes" "$replay" "$(echo "$flushes / $replay" | bc -l)"
printf 'restore is %.1fx live processing (target 5x); replay is %.1fx\n' \
  "$(echo "$live / $restore" | bc -l)" "$(echo "$live / $replay" | bc -l)"
