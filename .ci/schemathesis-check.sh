#!/usr/bin/env bash
# schemathesis against every service's OpenAPI document under `ferry up --free-ports`: fails on
# any 5xx, any status the document does not declare, and any answer that breaks its declared
# schema (or content type, or headers). Examples and time are bounded so CI stays short.
#
# Excluded for now: positive_data_acceptance and negative_data_rejection, which need every
# request schema to carry the exact bounds the handlers check (required fields, lengths, id
# formats); see issue 14's item 2 for what remains.
# Usage: .ci/schemathesis-check.sh PATH/TO/ferry PATH/TO/schemathesis
set -euo pipefail
ferry=$1
st=$2
data=$(mktemp -d)
out=$data/up.out
"$ferry" up --free-ports --data "$data" >"$out" 2>"$data/up.err" &
up_pid=$!
trap 'kill -INT $up_pid 2>/dev/null; wait $up_pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 1 300); do
  grep -q '^  dashboard ' "$out" && break
  sleep 0.2
done
failed=0
while read -r name addr _; do
  case "$name" in SERVICE | broker | "") continue ;; esac
  echo "--- schemathesis: $name ($addr)"
  if ! timeout 180 "$st" run "http://$addr/openapi.json" \
    --checks all --exclude-checks positive_data_acceptance,negative_data_rejection \
    --max-examples 25 --generation-deterministic --request-timeout 10 \
    --no-color; then
    failed=1
  fi
done < <(sed -n '/^  SERVICE/,/^$/p' "$out")
exit $failed
