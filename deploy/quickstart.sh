#!/usr/bin/env bash
# deploy/quickstart.sh - the README's "run it" command on a fresh Debian 12 machine:
# installs dependencies, builds the processor and the demo web app (deploy/demo), and
# starts `flushout-processor dev`: the embedded development broker, the processor
# (stamping who created each todo: deploy/interceptors/created_by.lua) and its gateway,
# which serves the demo's collaborative todo list at http://localhost:8080/ (port:
# FLUSHOUT_GATEWAY_PORT). For a terminal-only look it sends two clients' requests on a
# todo list (deploy/sample-flushes.ndjson, or the file given) with
# `flushout-processor send` and prints the replies. Then it keeps running until Ctrl-C.
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
node deploy/demo/build.js >/dev/null # the web app, bundled into deploy/demo/dist
bin=build/bin/flushout-processor
port=${FLUSHOUT_GATEWAY_PORT:-8080} # dev reads FLUSHOUT_GATEWAY_PORT itself (--gateway-port)

out=$(mktemp /tmp/flushout-quickstart.XXXXXX)
log=$out.log
dev_pid=
stop() {
  [[ -n $dev_pid ]] && kill -TERM "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null
  rm -f "$out" "$log"
}
trap stop EXIT
trap 'exit 0' INT TERM

# Every model starts as {"todos":{}}: the interceptor's creates have no parentDefault.
dev_args=(--static-dir deploy/demo/dist --interceptor deploy/interceptors/created_by.lua
  --initial-document deploy/demo/initial-document.json)
echo "== $bin dev ${dev_args[*]}   (embedded broker, processor, gateway on port $port; log in $log)" >&2
"$bin" dev "${dev_args[@]}" >"$out" 2>"$log" &
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
  # The gateway answers once it owns a reply partition (a second or two).
  for _ in $(seq 150); do
    curl -sf "localhost:$port/healthz" >/dev/null 2>&1 && break
    kill -0 "$dev_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.2
  done
  cat >&2 <<EOF
== the collaborative todo list, as two users side by side (Ctrl-C stops everything):
   open http://localhost:$port/?model=todo&user=alice
   open http://localhost:$port/?model=todo&user=bob
   (?model=todo-list is the list the sample above edited)
== serving Kafka clients on $bootstrap too; try
   $bin send --bootstrap-servers $bootstrap --model todo-list --client you '{"type":"snapshot"}'
   kcat -b $bootstrap -C -t flushout.changes -o beginning -f '%k %p %o\n'
   curl -s localhost:$port/v1/models/todo-list        # the gateway
   curl -s -N localhost:$port/v1/models/todo-list/events
EOF
  wait "$dev_pid"
fi
