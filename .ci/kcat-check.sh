#!/usr/bin/env bash
# kcat round trip against a running broker: 100,000 distinct lines produced with `kcat -P` must come back
# byte-identical, in order, from `kcat -C`. Debian's kcat embeds librdkafka 2.0.2, an old client that trips over
# protocol details (tagged fields) newer clients forgive, which is why this check exists beside the Rust tests.
#
# Usage: .ci/kcat-check.sh HOST:PORT   (the broker's default partition count must be 1: order is per partition)
set -euo pipefail

brokers=${1:?usage: $0 HOST:PORT}
lines=100000
# A new topic each run, so a rerun against the same broker does not read the previous run's messages.
topic="kcat-check-$(date +%s%N)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Distinct lines of varied length and content: tabs, quotes, backslashes, UTF-8, and a long line every 1,000.
seq 1 "$lines" | awk '
  BEGIN { pad = ""; for (i = 0; i < 4000; i++) pad = pad sprintf("%c", 97 + i % 26) }
  {
    extra = ($1 % 1000 == 0) ? substr(pad, 1, 4000) : substr(pad, 1, $1 % 97)
    kind = ($1 % 5 == 0) ? "ünïcødé ✓ \"quoted\" back\\slash" : "plain"
    printf "%06d\t%s\t%s\n", $1, kind, extra
  }' > "$work/in"
test "$(sort -u "$work/in" | wc -l)" -eq "$lines"

fail() {
  echo "kcat: $*"
  echo "kcat: 0 passed, 1 failed"
  exit 1
}

echo "kcat: producing $lines lines ($(wc -c < "$work/in") bytes) to $topic at $brokers"
timeout 180 kcat -P -b "$brokers" -t "$topic" -X acks=all < "$work/in" || fail "kcat -P exited with $?"
echo "kcat: consuming them back"
timeout 180 kcat -C -b "$brokers" -t "$topic" -o beginning -e -q > "$work/out" || fail "kcat -C exited with $?"

cmp "$work/in" "$work/out" || fail "got $(wc -l < "$work/out") lines back, first difference above"
echo "kcat: 1 passed, 0 failed"
