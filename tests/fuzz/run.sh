#!/usr/bin/env bash
# tests/fuzz/run.sh - builds a libFuzzer target with clang and fuzzes for SECONDS.
#
# Usage: tests/fuzz/run.sh [SECONDS] [TARGET]   (defaults: 60, fuzz_request; the other
#        target is fuzz_store: the same bytes through the RocksDB store, reopened often)
# Build: build-fuzz/ (clang, -DFLUSHOUT_FUZZ=ON). The seed corpus tests/fuzz/corpus/
# is only read; new inputs go to tests/fuzz/corpus-run/ (gitignored), crashing inputs
# to build-fuzz/artifacts/. Exits non-zero if the fuzzer finds a crash, leak or
# timeout, or cannot be built.
set -euo pipefail

seconds=${1:-60}
target=${2:-fuzz_request}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=$top/build-fuzz
bin=$build/tests/fuzz/$target

mkdir -p "$build"
CC=clang cmake -S "$top" -B "$build" -DFLUSHOUT_FUZZ=ON -DFLUSHOUT_TESTS=ON \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/configure.log"
cmake --build "$build" -j2 --target "$target"

[[ -d $here/corpus ]] || node "$here/make_corpus.js" "$here/corpus"
work=$here/corpus-run/$target
mkdir -p "$work" "$build/artifacts"

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/lsan.supp}
# The first corpus folder receives new inputs; the seed folder after it is only read.
# Inputs stay within 4 KB (libFuzzer's default, which a larger seed would raise, at a
# tenth of the speed): a larger seed is cut short here, and replayed whole by
# tests/processor/test_property.c.
"$bin" "$work" "$here/corpus" \
    -dict="$here/request.dict" \
    -max_len=4096 \
    -max_total_time="$seconds" \
    -rss_limit_mb=2048 \
    -timeout=25 \
    -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$target-"
