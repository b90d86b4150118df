#!/usr/bin/env bash
# tests/bench/master.sh - the master benchmark: C handler vs flushout's JS Master, one run.
#
# Records a workload with workload.js (cached in the work folder per parameters),
# times it through bench_master (C: msgpack decode -> apply -> msgpack reply) and
# js_master.js (Node: JSON.parse -> Master.apply -> JSON.stringify), checks that both
# saw the same replies (counts of applied commands, errors, syncs, mapped paths),
# prints a table and the ratio of C to JS flushes per second. The two sides run in
# alternating pairs (C, JS, C, JS, ...) and the pair whose ratio is the median counts:
# this machine's speed changes by a fifth from one minute to the next, and timing all
# of C and then all of JS put such a change on one side only (the same build read
# 10.48x and 6.00x within three minutes).
#
# Usage: tests/bench/master.sh [--build DIR] [--bin PATH] [--workdir DIR] [--models N]
#          [--clients N] [--flushes N] [--seed S] [--runs N] [--pairs N]
#          [--min-ratio R] [--interceptors]
#   --build DIR     CMake build folder holding tests/bench_master (default build/)
#   --bin PATH      bench_master to use instead (then nothing is built)
#   --workdir DIR   workload cache and results (default <build>/bench)
#   --models, --clients, --flushes, --seed   workload (default 1000, 3, 100000, 1)
#   --runs N        timed runs per side in each process, best one counts (default 3)
#   --pairs N       alternating C and JS processes; the median pair counts (default 3)
#   --min-ratio R   target C/JS ratio (default 10; 0 = report only)
#   --interceptors  also time what interceptors add per command (bench_interceptor,
#                   next to bench_master): a trivial script, createdBy/createdAt
#                   stamps, a one-field read of a 10 MB document; with a target
#                   (--min-ratio > 0) a missed one exits 3 too
# Exit: 0 at or above target, 3 below it, 1 if a side failed or the replies disagree,
# 2 on usage errors.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

build=$top/build
bin=
workdir=
models=1000
clients=3
flushes=100000
seed=1
runs=3
pairs=3
min_ratio=10
interceptors=0

usage() {
    sed -n '/^# Usage:/,/^# 2 on usage/s/^# \{0,1\}//p' "$0" >&2
    exit 2
}
while (($#)); do
    if [[ $1 == --interceptors ]]; then
        interceptors=1
        shift
        continue
    fi
    [[ $1 == -h || $1 == --help || $# -ge 2 ]] || { echo "master.sh: $1 needs a value" >&2; usage; }
    case $1 in
    --build) build=$2 ;;
    --bin) bin=$2 ;;
    --workdir) workdir=$2 ;;
    --models) models=$2 ;;
    --clients) clients=$2 ;;
    --flushes) flushes=$2 ;;
    --seed) seed=$2 ;;
    --runs) runs=$2 ;;
    --pairs) pairs=$2 ;;
    --min-ratio) min_ratio=$2 ;;
    -h | --help) usage ;;
    *) echo "master.sh: unknown argument $1" >&2; usage ;;
    esac
    shift 2
done
workdir=${workdir:-$build/bench}

if [[ -z $bin ]]; then
    bin=$build/tests/bench_master
    cmake --build "$build" --target bench_master >&2 || {
        echo "master.sh: cannot build bench_master in $build (configure it first:" \
             "cmake -S $top -B $build)" >&2
        exit 1
    }
fi
[[ -x $bin ]] || { echo "master.sh: no bench_master at $bin" >&2; exit 1; }

if [[ ! -d $here/node_modules/flushout ]]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) >&2
fi

# The workload depends on the generator and on the reference master it drives.
mkdir -p "$workdir"
workload=$workdir/workload-m$models-c$clients-f$flushes-s$seed.ndjson
if [[ ! -s $workload || $here/workload.js -nt $workload || $here/js_master.js -nt $workload ]]; then
    echo "master.sh: recording $flushes flushes ($models models x $clients clients, seed $seed)" >&2
    node "$here/workload.js" --models "$models" --clients "$clients" --flushes "$flushes" \
        --seed "$seed" --out "$workload.tmp"
    mv "$workload.tmp" "$workload"
fi

((pairs >= 1)) || { echo "master.sh: --pairs must be at least 1" >&2; exit 2; }
for ((i = 1; i <= pairs; i++)); do
    echo "master.sh: pair $i of $pairs: timing C ($bin)" >&2
    "$bin" "$workload" --runs "$runs" --history 1000 >"$workdir/c-$i.json"
    echo "master.sh: pair $i of $pairs: timing JS (flushout Master, node $(node --version))" >&2
    node --expose-gc "$here/js_master.js" "$workload" --runs "$runs" --history 1000 \
        >"$workdir/js-$i.json"
done

node - "$workdir" "$pairs" "$min_ratio" <<'EOF'
const fs = require('fs');
const [workdir, pairCount, minRatio] = process.argv.slice(2);
const read = (f) => JSON.parse(fs.readFileSync(`${workdir}/${f}`, 'utf8'));
const pairs = [];
for (let i = 1; i <= Number(pairCount); i++) {
  const c = read(`c-${i}.json`), js = read(`js-${i}.json`);
  pairs.push({ c, js, ratio: c.flushes_per_s / js.flushes_per_s });
}
const sorted = [...pairs].sort((a, b) => a.ratio - b.ratio);
const { c, js } = sorted[(sorted.length - 1) >> 1];
const n = (x) => Math.round(x).toLocaleString('en-US');
const row = (a, b, d) => console.log(a.padEnd(26) + b.padStart(16) + d.padStart(18));

console.log(`workload: ${c.flushes} flushes, ${c.models} models; replies: ${JSON.stringify(js.stats)}`);
console.log(`the median of ${pairs.length} alternating pairs (C then JS):`);
row('', 'C', 'JS flushout ' + js.flushout);
row('flushes/s (best run)', n(c.flushes_per_s), n(js.flushes_per_s));
row(`best of ${c.runs_s.length} / ${js.runs_s.length} (s)`, c.best_s.toFixed(3), js.best_s.toFixed(3));
// Node's GC runs partly on helper threads, so CPU time can exceed wall time there.
row('  CPU time of that run (s)', c.best_cpu_s.toFixed(3), js.best_cpu_s.toFixed(3));
row('memory/model (bytes)', `${n(c.rss_bytes_per_model)} RSS`, `${n(js.heap_bytes_per_model)} heap`);
row('  documents alone', n(c.doc_bytes_per_model), '');
const ratio = c.flushes_per_s / js.flushes_per_s;
const range = pairs.length > 1
  ? ` (pairs: ${pairs.map((p) => p.ratio.toFixed(2)).join(', ')})` : '';
console.log(`ratio C/JS flushes per second: ${ratio.toFixed(2)}${range}` +
  (Number(minRatio) > 0 ? ` (target >= ${minRatio})` : ''));

// Both sides applied the same requests, so their replies must say the same things,
// in every pair.
for (const p of pairs) {
  const keys = Object.keys(p.js.stats);
  const differ = keys.filter((k) => p.c.stats[k] !== p.js.stats[k]);
  if (p.c.final_command_count !== p.js.final_command_count) differ.push('final_command_count');
  if (differ.length) {
    console.error(`master.sh: C and JS replies disagree on ${differ.join(', ')}: ` +
      `C ${JSON.stringify(p.c.stats)} vs JS ${JSON.stringify(p.js.stats)}`);
    process.exit(1);
  }
  if (p.c.error_replies) {
    console.error(`master.sh: ${p.c.error_replies} C error replies on a valid workload`);
    process.exit(1);
  }
}
if (Number(minRatio) > 0 && ratio < Number(minRatio)) {
  console.error(`master.sh: BELOW TARGET: C is ${ratio.toFixed(2)}x the JS master, target ${minRatio}x`);
  process.exit(3);
}
EOF

if ((interceptors)); then
    ibin=$(dirname "$bin")/bench_interceptor
    [[ -x $ibin ]] || cmake --build "$build" --target bench_interceptor >&2
    echo "master.sh: timing interceptors ($ibin)" >&2
    check=()
    [[ $min_ratio == 0 ]] || check=(--check)
    # shellcheck disable=SC2016 # the JavaScript's template strings are not the shell's
    "$ibin" "$workdir" --runs "$runs" "${check[@]}" | tee "$workdir/interceptor.json" |
        node -e '
const lines = require("fs").readFileSync(0, "utf8").trim().split("\n").map(JSON.parse);
const by = Object.fromEntries(lines.map((l) => [l.bench, l]));
const t = by.trivial, c = by.created_by, r = by.read_field;
console.log(`interceptor, trivial (returns nil): +${t.added_us_per_command.toFixed(2)} us per command ` +
  `(target <= 1; ${t.base_us_per_command.toFixed(2)} us without one)`);
console.log(`interceptor, createdBy/createdAt: +${c.added_us_per_create.toFixed(2)} us per create (target <= 3)`);
console.log(`interceptor, one field of a ${r.doc_mb} MB document: +${r.added_us_large.toFixed(2)} us ` +
  `per command, +${r.added_us_1kb.toFixed(2)} on 1 KB (${r.large_over_small.toFixed(2)}x; target ~1x)`);'
fi
