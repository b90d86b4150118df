#!/usr/bin/env bash
# deploy/quickstart.sh - the README's "run it" command on a fresh Debian 12 machine:
# installs dependencies, builds, starts the processor on the embedded development
# broker (`flushout-processor dev`), sends it two clients' requests on a todo list
# (deploy/sample-flushes.ndjson, or the file given) with `flushout-processor send`,
# prints the replies, and keeps serving Kafka clients until Ctrl-C.
#
#   deploy/quickstart.sh [requests.ndjson] [--exit]   --exit: stop after the sample
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
input=deploy/sample-flushes.ndjson
stay=1
for arg in "$@"; do
  case $arg in
    --exit) stay=0 ;;
    *) input=$arg ;;
  esac
done

deploy/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build --target flushout-processor -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
bin=build/bin/flushout-processor

out=$(mktemp /tmp/flushout-quickstart.XXXXXX)
log=$out.log
dev_pid=
stop() {
  [[ -n $dev_pid ]] && kill -TERM "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null
  rm -f "$out" "$log"
}
trap stop EXIT
trap 'exit 0' INT TERM

echo "== $bin dev   (embedded broker + processor; log in $log)" >&2
"$bin" dev >"$out" 2>"$log" &
dev_pid=$!
for _ in $(seq 300); do
  grep -q "processing from offset" "$log" 2>/dev/null && break
  kill -0 "$dev_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.1
done
bootstrap=$(sed -n 's/^bootstrap\.servers=//p' "$out")
echo "== bootstrap.servers=$bootstrap" >&2
echo "== $bin send --bootstrap-servers $bootstrap - < $input" >&2
"$bin" send --bootstrap-servers "$bootstrap" - <"$input"

if ((stay)); then
  cat >&2 <<EOF
== serving on $bootstrap until Ctrl-C; try
   $bin send --bootstrap-servers $bootstrap --model todo-list --client you '{"type":"snapshot"}'
   kcat -b $bootstrap -C -t flushout.changes -o beginning -f '%k %p %o\n'
   curl -s localhost:${FLUSHOUT_GATEWAY_PORT:-8080}/v1/models/todo-list        # the gateway
   curl -s -N localhost:${FLUSHOUT_GATEWAY_PORT:-8080}/v1/models/todo-list/events
EOF
  wait "$dev_pid"
fi
