#!/usr/bin/env bash
# tests/kafka/kcat.sh - the processor with kcat as the client: requests produced as
# raw msgpack bytes, replies, change records and dead letters read back with kcat.
#
#   tests/kafka/kcat.sh [path/to/flushout-processor]
set -euo pipefail
export LC_ALL=C # replies are msgpack: bytes, not UTF-8 text
bin=${1:-$(dirname "$0")/../../build/bin/flushout-processor}
work=$(mktemp -d /tmp/flushout-kcat-XXXXXX)
dev_pid=
cleanup() {
  [[ -n $dev_pid ]] && kill "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "kcat.sh: FAILED: $*" >&2
  echo "--- processor log" >&2
  tail -20 "$work/dev.log" >&2
  exit 1
}

"$bin" dev --partitions 2 --gateway-port 0 >"$work/dev.out" 2>"$work/dev.log" &
dev_pid=$!
for _ in $(seq 100); do
  [[ -s $work/dev.out ]] && break
  sleep 0.1
done
bootstrap=$(sed -n 's/^bootstrap\.servers=//p' "$work/dev.out")
[[ -n $bootstrap ]] || fail "dev printed no bootstrap.servers line"
for _ in $(seq 200); do # the processor is ready once it processes its partitions
  grep -q "processing from offset" "$work/dev.log" && break
  sleep 0.1
done

k() { kcat -b "$bootstrap" -X partitioner=murmur2_random "$@"; }

# {"type":"flush","client":"k","seq":1,"from":0,"completions":[{"command":
#   {"action":"create","path":["todo"],"parentDefault":{},"props":{"t":"milk"}},
#   "createdId":"a"}]} as msgpack, byte by byte.
flush='\x85\xa4type\xa5flush\xa6client\xa1k\xa3seq\x01\xa4from\x00\xabcompletions\x91'
flush+='\x82\xa7command\x84\xa6action\xa6create\xa4path\x91\xa4todo\xadparentDefault\x80'
flush+='\xa5props\x81\xa1t\xa4milk\xa9createdId\xa1a'
snapshot='\x83\xa4type\xa8snapshot\xa6client\xa1k\xa3seq\x02'
printf '%b' "$flush" | k -P -t flushout.flushes -k list-1
printf '%b' "$snapshot" | k -P -t flushout.flushes -k list-1
printf '\xc1' | k -P -t flushout.flushes -k list-1 -H origin=kcat-test

# Consumes topic from the beginning until it holds at least n records.
read_topic() { # topic n format
  local out
  for _ in $(seq 100); do
    out=$(k -C -t "$1" -o beginning -e -q -f "$3" 2>/dev/null | tr -d '\0' || true)
    if (($(printf '%s' "$out" | grep -c .) >= $2)); then
      printf '%s\n' "$out"
      return 0
    fi
    sleep 0.2
  done
  fail "fewer than $2 records on $1"
}

replies=$(read_topic flushout.replies 2 '%k %s\n')
grep -q '^k .*flushResult' <<<"$replies" || fail "no flushResult reply keyed by the client: $replies"
grep -q '^k .*snapshot.*commandCount' <<<"$replies" || fail "no snapshot reply: $replies"
grep -q 'milk' <<<"$replies" || fail "the snapshot misses the created item: $replies"

changes=$(read_topic flushout.changes 1 '%k %s\n')
grep -q '^list-1 .*applied' <<<"$changes" || fail "no change record keyed by the model: $changes"

dlq=$(read_topic flushout.dlq 1 '%k|%h\n')
grep -q '^list-1|' <<<"$dlq" || fail "the dead letter lost its key: $dlq"
grep -q 'origin=kcat-test' <<<"$dlq" || fail "the dead letter lost its headers: $dlq"
grep -q 'kafka_dlt-original-topic=flushout.flushes' <<<"$dlq" || fail "no Spring DLT headers: $dlq"
grep -q 'flushout_error_code=reserved_byte' <<<"$dlq" || fail "no error code header: $dlq"

kill -TERM "$dev_pid"
wait "$dev_pid" || fail "dev did not exit cleanly on SIGTERM"
dev_pid=
echo "kcat.sh: a flush, a snapshot and a bad record through kcat: replies, change record and dead letter as expected"
