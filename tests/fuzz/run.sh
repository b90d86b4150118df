#!/usr/bin/env bash
# tests/fuzz/run.sh - builds the libFuzzer target with clang and fuzzes for SECONDS.
#
# Usage: tests/fuzz/run.sh [SECONDS]   (default 60)
# Build: build-fuzz/ (clang, -DFLUSHOUT_FUZZ=ON). The seed corpus tests/fuzz/corpus/
# is only read; new inputs go to tests/fuzz/corpus-run/ (gitignored), crashing inputs
# to build-fuzz/artifacts/. Exits non-zero if the fuzzer finds a crash, leak or
# timeout, or cannot be built.
set -euo pipefail

seconds=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=$top/build-fuzz
bin=$build/tests/fuzz/fuzz_request

# UBSan findings must stop the run like ASan's do, not scroll past.
cflags="-fno-sanitize-recover=undefined -fno-omit-frame-pointer"

mkdir -p "$build"
if CC=clang cmake -S "$top" -B "$build" -DFLUSHOUT_FUZZ=ON -DFLUSHOUT_TESTS=ON \
       -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$cflags" >"$build/configure.log" 2>&1; then
    cmake --build "$build" -j2 --target fuzz_request
else
    # The fuzz folder is reached through tests/, whose configure needs every unit test
    # source; while one is missing, build the instrumented libraries alone and link the
    # target by hand with the same flags as tests/fuzz/CMakeLists.txt.
    echo "run.sh: configuring with tests failed (see $build/configure.log);" \
         "building the fuzz target without CMake's tests/" >&2
    CC=clang cmake -S "$top" -B "$build" -DFLUSHOUT_FUZZ=ON -DFLUSHOUT_TESTS=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$cflags" >/dev/null
    cmake --build "$build" -j2 --target processor
    mkdir -p "$(dirname "$bin")"
    # shellcheck disable=SC2046,SC2086 # cflags and pkg-config output are lists of flags
    clang -O2 -g $cflags -fsanitize=fuzzer,address,undefined -I"$top" \
        "$here/fuzz_request.c" "$build/libprocessor.a" "$build/libstate.a" \
        "$build/libcodec.a" $(pkg-config --libs msgpack jansson libxxhash) -lm -o "$bin"
fi

[[ -d $here/corpus ]] || node "$here/make_corpus.js" "$here/corpus"
mkdir -p "$here/corpus-run" "$build/artifacts"

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# The first corpus folder receives new inputs; the seed folder after it is only read.
"$bin" "$here/corpus-run" "$here/corpus" \
    -dict="$here/request.dict" \
    -max_total_time="$seconds" \
    -rss_limit_mb=2048 \
    -timeout=25 \
    -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/"
