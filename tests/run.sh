#!/usr/bin/env bash
# tests/run.sh - the one command that passes every test on a fresh Debian 12 machine:
# installs dependencies, checks formatting, builds with -Werror, runs ctest, then
# rebuilds under AddressSanitizer + UndefinedBehaviorSanitizer and runs ctest again.
#
#   tests/run.sh            everything CI runs
#   tests/run.sh -L unit    pass ctest arguments through (e.g. one label: the quick
#                           `unit` one takes well under a minute); with arguments,
#                           the bounded fuzzing at the end is left out
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
jobs=$(nproc 2>/dev/null || echo 2)

deploy/install-deps.sh

echo "== clang-format check"
git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror

passed=0
run_suite() { # build-dir, extra cmake flags...
    local dir=$1 log total
    shift
    cmake -S . -B "$dir" -DFLUSHOUT_WERROR=ON -DFLUSHOUT_TESTS=ON "$@" >/dev/null
    cmake --build "$dir" -j"$jobs"
    # Every test's output goes to the log (-V), the result lines to the console.
    log="$top/$dir/ctest.log"
    local status=0
    (cd "$dir" && ctest --output-on-failure -V -j"$jobs" "${ctest_args[@]}") >"$log" 2>&1 ||
        status=$?
    grep -E '^ *[0-9]+/[0-9]+ Test +#|tests passed|Total Test time' "$log" || true
    if ((status)); then
        echo "ctest failed: the whole output is in $log; the failures in it:"
        # Criterion's failed assertions and crashes, with the line before each.
        grep -nE -B1 '\[FAIL\]|\[----\].*(:[0-9]+:|Assertion|crash|signal)|Test #[0-9]+: .*\*\*\*|ERROR: AddressSanitizer|runtime error:' "$log" |
            head -n 80 || true
        # Each failed test's own output (ctest -V prefixes it with "N: "), which the
        # interleaved tail below may not hold: a Node test's error and its kept logs.
        sed -n 's/.*Test *#\([0-9]*\): .*\*\*\*.*/\1/p' "$log" | sort -u |
            while read -r n; do
                echo "the last lines of test #$n's output:"
                grep "^$n: " "$log" | tail -n 100 || true
            done
        echo "its last lines:"
        tail -n 120 "$log"
        exit "$status"
    fi
    # A sanitizer report in a test that still passed (Criterion's forked workers, a
    # child process) fails the run too.
    if grep -nE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log"; then
        echo "sanitizer reports in $log (above)"
        exit 1
    fi
    total=$(sed -n 's/.*tests passed, 0 tests failed out of \([0-9]*\).*/\1/p' "$log")
    passed=$((passed + ${total:-0}))
}
ctest_args=("$@")

echo "== build and test"
run_suite build -DCMAKE_BUILD_TYPE=Release

echo "== build and test under ASan + UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_suite build-asan -DCMAKE_BUILD_TYPE=Debug -DFLUSHOUT_SANITIZE=ON

if ((${#ctest_args[@]} == 0)); then
    echo "== fuzz for a bounded ${FUZZ_SECONDS:-60} s per target (tests/fuzz/run.sh for longer)"
    tests/fuzz/run.sh "${FUZZ_SECONDS:-60}" fuzz_request
    tests/fuzz/run.sh "${FUZZ_SECONDS:-60}" fuzz_store
else
    echo "== no fuzzing: ctest arguments were given (tests/fuzz/run.sh fuzzes alone)"
fi

echo "== all tests passed"
echo "tests: $passed passed, 0 failed"
