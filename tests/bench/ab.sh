#!/usr/bin/env bash
# tests/bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS] [RATE]: the processor's
# maximum throughput (1,000 models, 2 commands per flush, 4,000 flushes in flight, as
# run.sh's processor-2cmd) for two builds, alternating OLD and NEW ROUNDS times (3) for
# SECONDS each (20), each run on a fresh embedded broker and state directory: a
# change's cost, measured in one sitting on a machine whose speed drifts. Ends with the
# means and the new/old ratios of throughput and of CPU time per flush. With RATE, both
# run open loop at RATE flushes/s instead, and each line also gives the processor's own
# latency (a record consumed to its outputs produced, from its exit stats line).
#
# DOC_BYTES=N runs run.sh's document row instead: 8 models of N bytes each (10000000
# is the 10 MB row, 1000 its 1 KB baseline), 64 flushes in flight per client, with
# run.sh's options for that row. MODELS=N spreads the usual load over N models instead
# of 1,000 (100000: many models, each edited now and then), COMMANDS=N sends N commands
# per flush instead of 2 (4: run.sh's processor-4cmd row). PERF=DIR records `perf record --call-graph dwarf` of
# each run's processor for 4 s, from SECONDS/2 + 6 s after its start (loadgen joins,
# seeds the models and warms up for 2 s before its measured window), into
# DIR/LABEL.data, perf's messages into DIR/LABEL.perf.log; profiled runs are slower,
# so compare them only with each other. Pass the same binary twice to measure one
# build. Both run on NEW_BINARY's embedded broker, or BROKER=PATH's.
#
#   git worktree add /tmp/old REV && cmake -S /tmp/old -B /tmp/old/build && \
#     cmake --build /tmp/old/build -j && \
#     tests/bench/ab.sh /tmp/old/build/bin/flushout-processor build/bin/flushout-processor
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
usage="usage: ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS] [RATE]"
old=${1:?$usage}
new=${2:?$usage}
rounds=${3:-3}
seconds=${4:-20}
rate=${5:-}
if [[ -n ${DOC_BYTES:-} ]]; then
  workload=(--models 8 --doc-bytes "$DOC_BYTES" --commands 2)
  load=(--outstanding 64 --window 512)
  options=(--log-level info --max-document-bytes 67108864 -X message.max.bytes=100000000)
else
  workload=(--models "${MODELS:-1000}" --commands "${COMMANDS:-2}")
  load=(--outstanding 4 --window 4000)
  options=()
fi
# Open loop as run.sh's half-load pair: 64 in flight per client, so that the rate is reached.
[[ -z $rate ]] || load=(--rate "$rate" --outstanding 64)
if [[ -n ${PERF:-} ]]; then
  command -v perf >/dev/null || { echo "ab.sh: PERF needs perf on PATH" >&2; exit 1; }
  mkdir -p "$PERF"
fi
loadgen=$top/build/tests/loadgen
[[ -x $loadgen ]] || { echo "ab.sh: build first (no $loadgen)" >&2; exit 1; }
work=$(mktemp -d /tmp/flushout-ab-XXXXXX)
trap 'rm -rf "$work"' EXIT

run_one() { # LABEL BINARY
  local label=$1 bin=$2 bs broker target
  "${BROKER:-$new}" dev --broker-only --partitions 8 >"$work/dev.out" 2>"$work/dev.log" &
  broker=$!
  for _ in $(seq 100); do [[ -s $work/dev.out ]] && break; sleep 0.05; done
  bs=$(sed -n 's/^bootstrap\.servers=//p' "$work/dev.out")
  rm -rf "$work/state"
  "$bin" run --bootstrap-servers "$bs" --state-dir "$work/state" --group-id bench \
    -X fetch.wait.max.ms=10 "${options[@]+"${options[@]}"}" 2>"$work/$label.log" &
  target=$!
  if [[ -n ${PERF:-} ]]; then
    (sleep $((seconds / 2 + 6)); perf record --call-graph dwarf,16384 -p "$target" \
      -o "$PERF/$label.data" -- sleep 4 >"$PERF/$label.perf.log" 2>&1) &
  fi
  line=$("$loadgen" --bootstrap-servers "$bs" --label "$label" --pid "$target" \
    "${workload[@]}" "${load[@]}" --duration "$seconds" 2>&1 | tail -1)
  # The processor first: it delivers and commits while the broker is still there.
  kill -TERM "$target"
  wait "$target" || true
  kill -TERM "$broker"
  wait "$broker" || true
  # "total: ... consumed to produced: p50 X ms, p99 Y ms, ..." -> "own p50 X ms, p99 Y ms"
  own=$(sed -n 's/.*total:.*consumed to produced: \(p50 [0-9.]* ms\), \(p99 [0-9.]* ms\).*/own \1, \2/p' \
    "$work/$label.log")
  echo "$line${own:+; $own}" | tee -a "$work/lines"
  rm -f "$work/dev.out"
}

for i in $(seq "$rounds"); do
  run_one "old-$i" "$old"
  run_one "new-$i" "$new"
done

# The summary: means over the rounds, and new/old as ratios. CPU per flush is the
# processor's CPU time over the flushes it answered, which the machine's drift moves
# less than throughput does.
awk '
  /^(old|new)-[0-9]+: / {
    side = substr($1, 1, 3); rate = $2; own = 0; rt = ""; ownp99 = 0
    for (i = 1; i <= NF; i++) {
      if ($(i + 1) == "cores,") cores = $i
      if ($i == "p99" && $(i - 1) == "ms," && rt == "") rt = $(i + 1)
      if ($i == "own") own = 1
      if (own && $i == "p99") { ownp99 = $(i + 1); own = 0 }
    }
    n[side]++; r[side] += rate; us[side] += cores / rate * 1e6
    rtp99[side] += rt
    if (ownp99) { o[side]++; op99[side] += ownp99 }
  }
  END {
    if (!n["old"] || !n["new"]) { print "ab.sh: no complete round"; exit 1 }
    for (s in n)
      printf "%s: mean %.0f flushes/s, %.1f us of CPU per flush, round-trip p99 %.1f ms, own p99 %.1f ms (%d rounds)\n",
        s, r[s] / n[s], us[s] / n[s], rtp99[s] / n[s], o[s] ? op99[s] / o[s] : 0, n[s]
    printf "new/old: throughput %.2fx, CPU per flush %.2fx, own p99 %.2fx\n",
      (r["new"] / n["new"]) / (r["old"] / n["old"]), (us["new"] / n["new"]) / (us["old"] / n["old"]),
      o["new"] && o["old"] ? (op99["new"] / o["new"]) / (op99["old"] / o["old"]) : 0
  }' "$work/lines"
