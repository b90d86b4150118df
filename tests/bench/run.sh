#!/usr/bin/env bash
# tests/bench/run.sh - the end-to-end benchmark: the processor through Kafka against a
# passthrough ceiling, flushout's JS Master and the blog post's PostgreSQL backend, all
# in one run on this machine. Prints one table (Markdown) and writes every result as
# JSON to build/bench/e2e/.
#
#   tests/bench/run.sh [--duration S (10)] [--rounds N (3; 1 with --quick)] [--quick] [--keep]
#
# --quick is the smoke test (ctest -L bench): every scenario, 2 s each, smaller sizes,
# one round. The passthrough and processor rows at 1, 2 and 4 commands, and the pair
# at half load, run --rounds times, alternating (a single 10 s run on this shared
# machine varies by up to 20%): the table shows the pair whose ratio (or added p99) is
# the median, and the range.
# Each scenario gets a fresh embedded broker (`dev --broker-only`, 3 brokers, 8
# partitions) and a fresh state directory; loadgen (tests/bench/loadgen.c) drives it
# and checks every reply. Every Kafka client here uses fetch.wait.max.ms=10, as `dev`
# and `send` do: the embedded broker holds each fetch for that long (see the ping).
# Exit status: 1 if any run lost or got a wrong reply (its numbers are then void).
set -euo pipefail

duration=10
rounds=
quick=0
keep=0
while (($#)); do
  case $1 in
    --duration) duration=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --quick) quick=1 ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--duration S] [--rounds N] [--quick] [--keep]" >&2; exit 2 ;;
  esac
  shift
done
((quick)) && duration=2
rounds=${rounds:-$((quick ? 1 : 3))}
((rounds >= 1)) || { echo "run.sh: --rounds must be at least 1" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$top/build}
bin=$build/bin/flushout-processor
loadgen=$build/tests/loadgen
passthrough=$build/tests/passthrough
for b in "$bin" "$loadgen" "$passthrough"; do
  [[ -x $b ]] || { echo "run.sh: $b is missing; build first (cmake --build build)" >&2; exit 1; }
done
out=$build/bench/e2e
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d /tmp/flushout-bench-XXXXXX)
pids=()
pg_dir=
# shellcheck disable=SC2317 # reached through the EXIT trap, which shellcheck 0.9 does not follow
cleanup() {
  for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n $pg_dir ]] && { pg_stop; rm -rf "$pg_dir"; }
  ((keep)) || rm -rf "$work"
}
trap cleanup EXIT
failed=0
fast=(-X fetch.wait.max.ms=10)

# ---- helpers ----

start_broker() { # sets $bs
  "$bin" dev --broker-only --partitions 8 >"$work/dev.out" 2>"$work/dev.log" &
  broker_pid=$!
  pids+=("$broker_pid")
  for _ in $(seq 100); do [[ -s $work/dev.out ]] && break; sleep 0.05; done
  bs=$(sed -n 's/^bootstrap\.servers=//p' "$work/dev.out")
  [[ -n $bs ]] || { cat "$work/dev.log" >&2; exit 1; }
}

stop() { # PID...: SIGTERM, wait
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# drop_state NAME...: a stopped target's state directory goes at once (unless --keep):
# each holds 150-200 MB, and the kernel writing 20 of them back to disk during the later
# scenarios was noise in those.
drop_state() {
  ((keep)) && return
  for name in "$@"; do rm -rf "$work/$name.state"; done
}

# start_target NAME processor|passthrough [extra options]: sets $target_pid
start_target() {
  local name=$1 kind=$2
  shift 2
  local exe=$bin
  local cmd=(run)
  [[ $kind == passthrough ]] && exe=$passthrough cmd=()
  "$exe" "${cmd[@]}" --bootstrap-servers "$bs" --state-dir "$work/$name.state" \
    --group-id bench "${fast[@]}" --log-level info "$@" 2>"$work/$name.log" &
  target_pid=$!
  pids+=("$target_pid")
}

# The processor's own share (its final stats line): "p50 X ms, p99 Y ms".
own_time() {
  sed -n 's/.*consumed to produced: p50 \([0-9.]*\) ms, p99 \([0-9.]*\) ms.*/\1 \2/p' "$1" | tail -1
}

# median_round BASE TARGET ratio|p99: the round of BASE-rI and TARGET-rI whose ratio (or
# added p99) is the median (rounds.js) becomes BASE and TARGET.
median_round() {
  local i
  i=$(node "$here/rounds.js" "$out" "$1" "$2" "$3")
  for name in "$1" "$2"; do
    cp "$out/$name-r$i.json" "$out/$name.json"
    cp "$out/$name-r$i.own" "$out/$name.own"
  done
}

json() { # FILE KEY (a dotted path into the JSON object)
  node -e 'let v=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));
    for (const k of process.argv[2].split(".")) v=v[k]; console.log(v)' "$1" "$2"
}

# load NAME [loadgen options]: loadgen against the running target; JSON in $out/NAME.json
load() {
  local name=$1
  shift
  local pidargs=()
  for p in "${target_pids[@]}"; do pidargs+=(--pid "$p"); done
  if ! "$loadgen" --bootstrap-servers "$bs" --label "$name" --json "$out/$name.json" \
    "${pidargs[@]}" "$@" >"$work/$name.loadgen" 2>&1; then
    failed=1
    echo "run.sh: $name FAILED:" >&2
    cat "$work/$name.loadgen" >&2
  fi
  cat "$work/$name.loadgen" >&2
}

# scenario NAME KIND "TARGET OPTIONS" LOADGEN OPTIONS...: broker, target, load, stop.
scenario() {
  local name=$1 kind=$2 topts=$3
  shift 3
  start_broker
  # shellcheck disable=SC2086 # topts is a word list
  start_target "$name" "$kind" $topts
  target_pids=("$target_pid")
  load "$name" "$@"
  stop "$target_pid"
  own_time "$work/$name.log" >"$out/$name.own"
  stop "$broker_pid"
  drop_state "$name"
}

pg_stop() {
  local ctl
  # shellcheck disable=SC2012 # /usr/lib/postgresql/VERSION/bin: plain names, newest last
  ctl=$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | tail -1)
  as_pg "$ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1 || true
}

as_pg() { # initdb and postgres refuse to run as root
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# ---- the scenarios ----

models=1000
big_models=100000
record_flushes=60000
doc_models=8
doc_sizes=(1000 1000000 10000000)
if ((quick)); then
  big_models=20000
  record_flushes=6000
  doc_sizes=(1000 1000000)
fi
echo "== end-to-end benchmark, ${duration} s per run; work in $work" >&2

start_broker
"$loadgen" --bootstrap-servers "$bs" --label ping --ping 200 \
  --json "$out/ping.json" >&2
stop "$broker_pid"

# Throughput: enough flushes in flight (4 per client, 4,000 in all) that the machine,
# not the round trip, is the limit for both sides.
saturate=(--outstanding 4 --window 4000)
for k in 1 2 4; do
  for i in $(seq "$rounds"); do
    scenario "passthrough-${k}cmd-r$i" passthrough "" --echo --models $models \
      --commands $k "${saturate[@]}" --duration "$duration"
    scenario "processor-${k}cmd-r$i" processor "" --models $models --commands $k \
      "${saturate[@]}" --duration "$duration"
  done
  median_round "passthrough-${k}cmd" "processor-${k}cmd" ratio
done
scenario processor-100k processor "" --models $big_models --commands 2 --window 4000 \
  --duration "$duration"

# Latency at half the processor's maximum, the same offered load for both.
rate=$(json "$out/processor-2cmd.json" flushes_per_s | awk '{printf "%d", $1 / 2}')
for i in $(seq "$rounds"); do
  scenario "latency-passthrough-r$i" passthrough "" --echo --models $models --commands 2 \
    --rate "$rate" --outstanding 64 --duration "$duration"
  scenario "latency-processor-r$i" processor "" --models $models --commands 2 \
    --rate "$rate" --outstanding 64 --duration "$duration"
done
median_round latency-passthrough latency-processor p99

for size in "${doc_sizes[@]}"; do
  scenario "doc-$size" processor "--max-document-bytes 67108864 -X message.max.bytes=100000000" \
    --models $doc_models \
    --doc-bytes "$size" --commands 2 --outstanding 64 --window 512 --duration "$duration"
done

scenario threads-1 processor "--threads 1" --models $models --commands 2 "${saturate[@]}" \
  --duration "$duration"

# Two instances in one group: measured once both have partitions.
start_broker
start_target two-a processor --group-instance-id a
a=$target_pid
start_target two-b processor --group-instance-id b
b=$target_pid
target_pids=("$a" "$b")
for _ in $(seq 300); do
  grep -q "processing from offset" "$work/two-a.log" && grep -q "processing from offset" "$work/two-b.log" && break
  sleep 0.1
done
load instances-2 --models $models --commands 2 "${saturate[@]}" --duration "$duration" \
  --warmup 4
stop "$a" "$b"
own_time "$work/two-a.log" >"$out/instances-2.own"
stop "$broker_pid"
drop_state two-a two-b

# A fixed workload of 3 clients per model, recorded for the JS Master and PostgreSQL,
# then restored from its changes topic.
start_broker
start_target recorded processor
target_pids=("$target_pid")
load recorded --models $models --clients-per-model 3 --commands 2 "${saturate[@]}" \
  --flushes $record_flushes --record "$work/recorded.ndjson"
stop "$target_pid"
own_time "$work/recorded.log" >"$out/recorded.own"
start=$(date +%s.%N)
"$bin" rebuild --bootstrap-servers "$bs" "${fast[@]}" --state-dir "$work/restored" \
  --from changes --log-level warn
restore_s=$(printf '%.3f' "$(echo "$(date +%s.%N) - $start" | bc -l)")
stop "$broker_pid"
drop_state recorded
((keep)) || rm -rf "$work/restored"
echo "{\"records\":$record_flushes,\"seconds\":$restore_s}" >"$out/restore.json"

(cd "$here" && node js_master.js "$work/recorded.ndjson" --runs 3) >"$out/js-master.json"

# Its own directory: the server runs as user postgres when this script runs as root.
pg_dir=$(mktemp -d /tmp/flushout-bench-pg-XXXXXX)
chmod 755 "$pg_dir"
mkdir -p "$pg_dir/data"
[[ $(id -u) -eq 0 ]] && chown -R postgres "$pg_dir"
# shellcheck disable=SC2012 # as in pg_stop
pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | tail -1)")
as_pg "$pgbin/initdb" -D "$pg_dir/data" -U postgres --auth=trust >"$work/pg.log" 2>&1
as_pg "$pgbin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
  -o "-k $pg_dir -p 55432 -c listen_addresses='' -c synchronous_commit=off" start >>"$work/pg.log"
(cd "$here" && node pg_backend.js "$work/recorded.ndjson" --host "$pg_dir" --port 55432 \
  --workers 8 --max-seconds $((quick ? 5 : 30))) >"$out/postgresql.json" || failed=1
pg_stop
rm -rf "$pg_dir"
pg_dir=

# ---- the table ----
node "$here/table.js" "$out" "$duration" "$(nproc)"
exit $failed
