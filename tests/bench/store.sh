#!/usr/bin/env bash
# tests/bench/store.sh - the state store benchmark (issue 3's targets), one run:
# flushes/s against one model of 1 KB, 100 KB, 1 MB and 10 MB (the 10 MB figure must
# be at least 0.8x the 1 KB one), then one million small models with --cache-mb 256
# (peak RSS must stay under 256 MB + 150 MB of fixed overhead), then --steps steps
# shaped like `run`'s at full load (microseconds per flush, CPU too).
#
# Usage: tests/bench/store.sh [--build DIR] [--flushes N] [--models N] [--steps N]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=$top/build
flushes=100000
models=1000000
steps=400
while (($#)); do
    case $1 in
    --build) build=$2 ;;
    --flushes) flushes=$2 ;;
    --models) models=$2 ;;
    --steps) steps=$2 ;;
    *) echo "usage: $0 [--build DIR] [--flushes N] [--models N] [--steps N]" >&2; exit 2 ;;
    esac
    shift 2
done
cmake --build "$build" --target bench_store >&2
work=$(mktemp -d /tmp/flushout-bench-store.XXXXXX)
trap 'rm -rf "$work"' EXIT
rc=0
"$build/tests/bench_store" "$work" --flushes "$flushes" --sizes-kb 1,100,1024,10240 || rc=$?
# A process of its own, so that its peak RSS is the models' alone.
"$build/tests/bench_store" "$work" --sizes-kb "" --models "$models" --cache-mb 256 || rc=$?
"$build/tests/bench_store" "$work" --sizes-kb "" --steps "$steps" || rc=$?
exit "$rc"
