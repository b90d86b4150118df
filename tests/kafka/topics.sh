#!/usr/bin/env bash
# tests/kafka/topics.sh - `flushout-processor topics` against `dev --broker-only`
# (librdkafka's mock cluster: it has the five topics, but neither CreateTopics nor
# DescribeConfigs), and against a cluster that is not there.
#
#   tests/kafka/topics.sh [path/to/flushout-processor]
set -euo pipefail
bin=${1:-$(dirname "$0")/../../build/bin/flushout-processor}
work=$(mktemp -d /tmp/flushout-topics-XXXXXX)
dev_pid=
cleanup() {
  if [[ -n $dev_pid ]]; then
    kill "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "topics.sh: FAILED: $*" >&2
  for f in "$work"/out "$work"/err; do
    [[ -s $f ]] && { echo "--- $(basename "$f")" >&2; cat "$f" >&2; }
  done
  exit 1
}

"$bin" dev --broker-only --partitions 4 >"$work/dev.out" 2>"$work/dev.log" &
dev_pid=$!
for _ in $(seq 100); do
  [[ -s $work/dev.out ]] && break
  sleep 0.1
done
bootstrap=$(sed -n '1s/^bootstrap\.servers=//p' "$work/dev.out")
[[ -n $bootstrap ]] || fail "dev printed no bootstrap.servers line: $(cat "$work/dev.log")"

# Runs `topics ARGS...` against dev; its exit code in $rc, stdout and stderr in
# $work/out and $work/err.
topics() {
  rc=0
  "$bin" topics "$@" --bootstrap-servers "$bootstrap" >"$work/out" 2>"$work/err" || rc=$?
}
out_has() { grep -qF -- "$1" "$work/out" || fail "stdout lacks \"$1\""; }
err_has() { grep -qF -- "$1" "$work/err" || fail "stderr lacks \"$1\""; }

# Every topic as dev made it: 4 partitions, 3 replicas. The mock cannot describe
# configs, which is said and is not a failure.
topics describe --partitions 4 --replication-factor 3
((rc == 0)) || fail "describe --partitions 4 exited $rc"
out_has "configs not checked: DescribeConfigs"
for role in flushes replies changes snapshots dlq; do
  out_has "flushout.$role ($role): 4 partitions, replication factor 3: ok"
done

# Another partition count is a mismatch, named per co-partitioned topic; replies and
# dead letters may have any count (a new layout keeps them).
topics describe --partitions 8
((rc == 1)) || fail "describe --partitions 8 exited $rc, expected 1"
out_has "flushout.flushes (flushes): 4 partitions, replication factor 3: differs: 4 partitions, expected 8"
out_has "flushout.snapshots (snapshots): 4 partitions, replication factor 3: differs: 4 partitions, expected 8"
out_has "flushout.dlq (dlq): 4 partitions, replication factor 3: ok"
out_has "flushout.replies (replies): 4 partitions, replication factor 3: ok"
err_has "3 of 5 topics missing or different"

# A missing topic is named, and describing it does not create it.
for _ in 1 2; do
  topics describe --partitions 4 --dlq-topic not.there
  ((rc == 1)) || fail "describe with a missing topic exited $rc, expected 1"
  out_has "not.there (dlq): missing"
  out_has "flushout.changes (changes): 4 partitions, replication factor 3: ok"
done

# Two options naming one topic, and min.insync.replicas above the replication.
topics describe --dlq-topic flushout.changes
((rc == 1)) || fail "describe with one topic named twice exited $rc, expected 1"
err_has '--changes-topic and --dlq-topic both name "flushout.changes"'
topics create --partitions 4 --replication-factor 2 --min-insync-replicas 3
((rc == 1)) || fail "create with min.insync.replicas 3 > 2 exited $rc, expected 1"
err_has "--min-insync-replicas 3 is more than --replication-factor 2"
topics create
((rc == 1)) || fail "create without --partitions exited $rc, expected 1"
err_has "--partitions is required to create topics"

# create: the existing topics match; the missing one cannot be created on the mock,
# which has no CreateTopics, and the error says so (at once: no waiting for a
# controller the mock does not have).
start=$SECONDS
topics create --partitions 4 --dlq-topic new.dlq
((rc == 1)) || fail "create on the mock exited $rc, expected 1"
((SECONDS - start <= 10)) || fail "create took $((SECONDS - start)) s"
out_has "flushout.flushes (flushes): exists"
out_has "new.dlq (dlq): not created: CreateTopics request: Topic Admin API (KIP-4) not supported by broker"
err_has "creating new.dlq: CreateTopics request:"

# Every topic exists as asked: create has nothing to do and succeeds.
topics create --partitions 4
((rc == 0)) || fail "create of existing matching topics exited $rc"
out_has "flushout.snapshots (snapshots): exists"

# A cluster that is not there fails within the timeout, naming the broker's error.
kill "$dev_pid"
wait "$dev_pid" 2>/dev/null || true
dev_pid=
start=$SECONDS
rc=0
"$bin" topics describe --bootstrap-servers 127.0.0.1:1 --timeout-ms 3000 \
  >"$work/out" 2>"$work/err" || rc=$?
((rc == 1)) || fail "describe of an unreachable cluster exited $rc, expected 1"
((SECONDS - start <= 10)) || fail "the unreachable cluster took $((SECONDS - start)) s"
err_has "cannot read the metadata of flushout.flushes and the other topics from 127.0.0.1:1"
err_has "Connection refused"

echo "topics.sh: describe and create against dev's mock cluster and an unreachable one: as expected"
