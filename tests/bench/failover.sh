#!/usr/bin/env bash
# tests/bench/failover.sh - a new owner's catch-up when its partitions' owner dies, cold
# and with a warm standby (--standby-interval-ms), on the embedded broker.
#
#   tests/bench/failover.sh [FLUSHES (160000)] [MODELS (1000)] [PARTITIONS (16)]
#
# For each case, on a fresh broker:
# 1. fills the flushes topic with FLUSHES flushes (two commands each) for MODELS models;
# 2. instance a processes them all (live: from its first partition processed until the
#    changes topic holds one record per flush, as restore.sh times it);
# 3. instance b joins the group and a hands it half the partitions; once a's offsets
#    are committed (and, with the standby, b's /metrics show two more standby passes),
# 4. a is killed (SIGKILL); once the group notices (session.timeout.ms, 6 s here), b
#    takes a's partitions over. Timed: each partition's takeover, from its assignment
#    to "processing from offset", and the change records its catch-up replayed.
# Prints both cases and the records a's partitions held over the takeover's time, as
# a multiple of the live rate (the issue's target for a new owner's catch-up: 5x),
# and the CPU b had used before the kill: the difference between the cases is what
# its standby's passes over a's partitions cost.
# BIN=PATH runs another build; KEEP=1 keeps the logs (printed where).
set -euo pipefail
flushes=${1:-160000}
models=${2:-1000}
partitions=${3:-16}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
bin=${BIN:-$top/build/bin/flushout-processor}
[[ -x $bin ]] || { echo "failover.sh: build first (cmake --build build)" >&2; exit 1; }
work=$(mktemp -d /tmp/flushout-failover-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n ${KEEP:-} ]]; then echo "failover.sh: logs in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The value of one /metrics sample of the instance on port $1.
metric() {
  # shellcheck disable=SC2016 # JavaScript's template strings, not the shell's
  node -e '
require("http").get({ host: "127.0.0.1", port: process.argv[1], path: "/metrics" }, (res) => {
  let body = ""; res.on("data", (d) => (body += d));
  res.on("end", () => { const m = new RegExp(`^${process.argv[2]} (\\d+)$`, "m").exec(body); console.log(m ? m[1] : -1); });
}).on("error", () => console.log(-1));' "$1" "$2"
}

count() { (cd "$here" && node count_records.js "$bootstrap" flushout.changes "${1:-}"); }

run_case() { # LABEL STANDBY_MS
  local label=$1 standby=$2 dir=$work/$1
  mkdir -p "$dir"
  "$bin" dev --broker-only --partitions "$partitions" >"$dir/dev.out" 2>"$dir/dev.log" &
  pids+=($!)
  for _ in $(seq 100); do [[ -s $dir/dev.out ]] && break; sleep 0.1; done
  bootstrap=$(sed -n 's/^bootstrap\.servers=//p' "$dir/dev.out")
  (cd "$here" && node produce_flushes.js "$bootstrap" "$flushes" "$models")
  local common=(--bootstrap-servers "$bootstrap" --ids sequential --group-id failover
    -X fetch.wait.max.ms=10 -X session.timeout.ms=6000 --log-level info)
  local port=$((20000 + RANDOM % 20000)) extra=()
  ((standby)) && extra=(--standby-interval-ms "$standby")
  # Live: a alone processes every flush (as restore.sh times it).
  "$bin" run "${common[@]}" --state-dir "$dir/a" 2>"$dir/a.log" &
  local a=$!
  pids+=("$a")
  until grep -q "processing from offset" "$dir/a.log" 2>/dev/null; do sleep 0.02; done
  local start end
  start=$(date +%s.%N)
  while (($(count) < flushes)); do sleep 0.2; done
  end=$(date +%s.%N)
  live=$(echo "$flushes / ($end - $start)" | bc -l)
  # b joins: a hands it half the partitions (b's first takeovers are cold either way).
  "$bin" run "${common[@]}" --state-dir "$dir/b" --http-port "$port" \
    --http-address 127.0.0.1 "${extra[@]+"${extra[@]}"}" 2>"$dir/b.log" &
  local b=$!
  pids+=("$b")
  until grep -q "processing from offset" "$dir/b.log" 2>/dev/null; do sleep 0.1; done
  # a's partitions: assigned and not revoked since.
  a_parts=$(node -e '
const owned = new Set();
for (const m of require("fs").readFileSync(process.argv[1], "utf8").matchAll(/partition (\d+) (assigned|revoked|lost)$/gm))
  m[2] === "assigned" ? owned.add(m[1]) : owned.delete(m[1]);
console.log([...owned].join(","));' "$dir/a.log")
  # a's offsets committed (else b would answer every flush since the last commit
  # again: a cost of the kill's timing, not of the takeover).
  until (cd "$here" && node -e '
const { Kafka, logLevel } = require("kafkajs");
(async () => {
  const admin = new Kafka({ clientId: "bench-committed", brokers: process.argv[1].split(","), logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  const ends = await admin.fetchTopicOffsets("flushout.flushes");
  const [{ partitions }] = await admin.fetchOffsets({ groupId: "failover", topics: ["flushout.flushes"] });
  await admin.disconnect();
  const parts = process.argv[2].split(",").map(Number);
  process.exit(parts.every((n) => Number(partitions.find((p) => p.partition === n).offset) ===
    Number(ends.find((e) => e.partition === n).high)) ? 0 : 1);
})().catch(() => process.exit(1));' "$bootstrap" "$a_parts"); do sleep 0.5; done
  if ((standby)); then
    local passes
    passes=$(metric "$port" flushout_standby_passes_total)
    while (($(metric "$port" flushout_standby_passes_total) < passes + 2)); do sleep 0.1; done
  fi
  held=$(count "$a_parts")
  # b's CPU so far (its own takeovers, and with the standby its passes over a's).
  local ticks cpu
  ticks=$(awk '{print $14 + $15}' "/proc/$b/stat")
  cpu=$(echo "$ticks / $(getconf CLK_TCK)" | bc -l)
  local before
  before=$(wc -c <"$dir/b.log")
  kill -9 "$a"
  wait "$a" 2>/dev/null || true
  # shellcheck disable=SC2016 # JavaScript's template strings, not the shell's
  until node -e '
const text = require("fs").readFileSync(process.argv[1], "utf8").slice(Number(process.argv[2]));
process.exit(process.argv[3].split(",").every((n) => new RegExp(`partition ${n}: processing from offset`).test(text)) ? 0 : 1);' \
    "$dir/b.log" "$before" "$a_parts"; do sleep 0.2; done
  # The takeover of each of a's partitions: assigned -> processing, replayed records.
  # shellcheck disable=SC2016 # JavaScript's template strings, not the shell's
  takeover=$(node -e '
const text = require("fs").readFileSync(process.argv[1], "utf8").slice(Number(process.argv[2]));
const at = (re) => Date.parse(new RegExp(`^(\\S+) .*${re}`, "m").exec(text)[1]);
let longest = 0, replayed = 0;
for (const n of process.argv[3].split(",")) {
  longest = Math.max(longest, at(`partition ${n}: processing from offset`) - at(`partition ${n} assigned`));
  const m = new RegExp(`partition ${n}: caught up: (\\d+) change records applied`).exec(text);
  replayed += m ? Number(m[1]) : 0;
}
console.log(`${longest} ${replayed}`);' "$dir/b.log" "$before" "$a_parts")
  read -r ms replayed <<<"$takeover"
  printf '%-22s live %7.0f flushes/s; a held %s partitions, %d change records; b had used %.2f s of CPU; b replayed %d, its takeover took %d ms (longest partition): %.1fx live\n' \
    "$label" "$live" "$(tr ',' '\n' <<<"$a_parts" | wc -l)" "$held" "$cpu" "$replayed" "$ms" \
    "$(echo "$held / (($ms + 1) / 1000) / $live" | bc -l)"
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

echo "failover benchmark ($flushes flushes, $models models, $partitions partitions)"
run_case "cold (no standby)" 0
run_case "warm standby, 500 ms" 500
