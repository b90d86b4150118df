#!/usr/bin/env bash
# deploy/quickstart.sh - the README's "run it" command on a fresh Debian 12 machine:
# installs dependencies, builds, and runs the processor's main job. Until the Kafka
# processor lands, the main job is `apply`: two clients' flushes of a todo list
# (deploy/sample-flushes.ndjson, or the file given) in, one reply per request out.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
input=${1:-deploy/sample-flushes.ndjson}

deploy/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build --target flushout-processor -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

state_dir=$(mktemp -d /tmp/flushout-quickstart.XXXXXX)
trap 'rm -rf "$state_dir"' EXIT
echo "== flushout-processor apply --state-dir $state_dir --ids sequential < $input" >&2
build/bin/flushout-processor apply --state-dir "$state_dir" --ids sequential <"$input"
