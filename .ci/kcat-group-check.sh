#!/usr/bin/env bash
# Two `kcat -G` members in one group balance a 4-partition topic between them: each gets some partitions, together
# they read every message exactly once. kcat embeds Debian's librdkafka 2.0.2, an independent client.
#
# Usage: .ci/kcat-group-check.sh HOST:PORT FERRY_BINARY
set -euo pipefail
brokers=${1:?usage: $0 HOST:PORT FERRY}
ferry=${2:?usage: $0 HOST:PORT FERRY}
topic="kcat-group-$(date +%s%N)"
group="kcat-group-$(date +%s%N)"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
fail() { echo "kcat -G: $*"; echo "kcat -G: 0 passed, 1 failed"; exit 1; }

"$ferry" topics create "$topic" --partitions 4 --brokers "$brokers" >/dev/null
for m in a b; do
  kcat -u -b "$brokers" -G "$group" -X auto.offset.reset=earliest -f '%p %s\n' "$topic" >"$work/$m" 2>"$work/$m.err" &
  pids+=($!)
done
# Give both members time to join before messages arrive, so both get partitions.
sleep 6
# Keyed, so the messages spread over the partitions: librdkafka's sticky partitioner sends a quick burst of
# keyless messages to one partition, which would leave one member with nothing to read.
seq 1 2000 | sed 's/.*/k&:&/' | kcat -P -K: -b "$brokers" -t "$topic" -X acks=all || fail "produce failed"
for _ in $(seq 1 60); do
  total=$(cat "$work/a" "$work/b" | wc -l)
  [ "$total" -ge 2000 ] && break
  sleep 0.5
done
sleep 1
total=$(cat "$work/a" "$work/b" | wc -l)
[ "$total" -eq 2000 ] || fail "read $total of 2000 messages"
[ "$(cut -d' ' -f2 "$work/a" "$work/b" | sort -u | wc -l)" -eq 2000 ] || fail "some message was read twice"
parts_a=$(cut -d' ' -f1 "$work/a" | sort -u | tr '\n' ' ')
parts_b=$(cut -d' ' -f1 "$work/b" | sort -u | tr '\n' ' ')
[ -n "$parts_a" ] && [ -n "$parts_b" ] || fail "one member got nothing: a=[$parts_a] b=[$parts_b]"
overlap=$(comm -12 <(cut -d' ' -f1 "$work/a" | sort -u) <(cut -d' ' -f1 "$work/b" | sort -u) | wc -l)
[ "$overlap" -eq 0 ] || fail "members share partitions: a=[$parts_a] b=[$parts_b]"
echo "kcat -G: 2000 messages split between two members: a=[$parts_a] b=[$parts_b]"
echo "kcat -G: 1 passed, 0 failed"
