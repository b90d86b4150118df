#!/usr/bin/env bash
# tests/bench/doc.sh - run.sh's document scenario alone, for A/B runs of one row:
#
#   tests/bench/doc.sh [--bin PROCESSOR] [--size BYTES (10000000)] [--duration S (10)]
#                      [-- extra processor options]
#
# A fresh embedded broker (8 partitions), `run` with run.sh's options for this row and
# a fresh state directory, and loadgen with 8 models of BYTES each; prints loadgen's
# line (flushes/s, round trip, the processor's cores and peak RSS). PERF=1 also records
# 4 s of `perf record -g` from the middle of the run into the kept work directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$top/build}
bin=$build/bin/flushout-processor size=10000000 duration=10
while (($#)); do
  case $1 in
    --bin) bin=$2; shift ;;
    --size) size=$2; shift ;;
    --duration) duration=$2; shift ;;
    --) shift; break ;;
    *) echo "usage: $0 [--bin B] [--size BYTES] [--duration S] [-- options]" >&2; exit 2 ;;
  esac
  shift
done
work=$(mktemp -d /tmp/flushout-doc-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${PERF:-} ]] || rm -rf "$work"
}
trap cleanup EXIT
"$build/bin/flushout-processor" dev --broker-only --partitions 8 >"$work/dev.out" 2>"$work/dev.log" &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/dev.out ]] && break; sleep 0.05; done
bs=$(sed -n 's/^bootstrap\.servers=//p' "$work/dev.out")
"$bin" run --bootstrap-servers "$bs" --state-dir "$work/state" --group-id bench \
  -X fetch.wait.max.ms=10 --log-level info --max-document-bytes 67108864 \
  -X message.max.bytes=100000000 "$@" 2>"$work/run.log" &
pid=$!
pids+=("$pid")
if [[ -n ${PERF:-} ]]; then
  (sleep $((duration / 2 + 6)); perf record -g -p "$pid" -o "$work/perf.data" -- sleep 4 >/dev/null 2>&1) &
  echo "perf data: $work/perf.data" >&2
fi
"$build/tests/loadgen" --bootstrap-servers "$bs" --label doc --json "$work/doc.json" --pid "$pid" \
  --models 8 --doc-bytes "$size" --commands 2 --outstanding 64 --window 512 \
  --duration "$duration" 2>&1 | grep -E 'flushes/s|FAIL|error'
