#!/usr/bin/env bash
# Bulk ingest of a file of facts as users meet it, interleaved rounds in one run:
# - `mnemo facts add --jsonl`: one forward pass at a time (--encode-threads 1) against the default (one
#   pass per core, each on one BLAS thread);
# - `mnemo serve` (default --workers 2): bench/facts_http.py posting batches of 256 from 1 and 2 clients. Facts are those of bench/facts.sh (30-token spans of GCIDE train). Each round
# adds the whole file to a fresh state over the bench/facts.sh base datastore; the time includes loading
# the model and opening the state, as a user's command does.
# Usage: bench/facts-ingest.sh [FACTS=20000] [ROUNDS=2]     Output: data/bench-facts/ingest.json
set -euo pipefail
cd "$(dirname "$0")/.."
facts=${1:-20000}
rounds=${2:-2}
model=data/models/default
out=data/bench-facts
base=$out/base
[ -f $base/manifest.json ] || { echo "run bench/facts.sh first (it builds $base)" >&2; exit 2; }
jsonl=$out/cli-facts.jsonl
# The facts of bench/facts.sh: consecutive 30-token spans of GCIDE train, decoded back to text.
head -c $((facts * 200)) data/corpus/gcide/train.txt | /usr/bin/python3 -c 'import json, sys; print(json.dumps({"text": sys.stdin.read()}))' |
  build/mnemo tokenize --tokenizer $model |
  /usr/bin/python3 -c '
import json, sys
ids, n = json.loads(sys.stdin.readline())["ids"], int(sys.argv[1])
assert len(ids) >= 30 * n, "not enough text"
for i in range(n): print(json.dumps({"ids": ids[30 * i:30 * i + 30]}))' "$facts" |
  build/mnemo detokenize --tokenizer $model > $jsonl
results=()
for round in $(seq "$rounds"); do
  for threads in 1 0; do
    rm -rf $out/cli-state
    build/mnemo init --state $out/cli-state --model $model --datastore $base > /dev/null
    start=$(date +%s.%N)
    build/mnemo facts add --state $out/cli-state --jsonl $jsonl --encode-threads $threads > /dev/null
    end=$(date +%s.%N)
    seconds=$(awk "BEGIN { print $end - $start }")
    rate=$(awk "BEGIN { print $facts / ($end - $start) }")
    printf 'round %d, --encode-threads %d: %.1f s, %.0f facts/s\n' "$round" "$threads" "$seconds" "$rate" >&2
    results+=("{\"round\": $round, \"cli_encode_threads\": $threads, \"seconds\": $seconds, \"facts_per_second\": $rate}")
  done
  for clients in 1 2; do
    rm -rf $out/cli-state
    build/mnemo init --state $out/cli-state --model $model --datastore $base > /dev/null
    port=$((18000 + RANDOM % 1000))
    build/mnemo serve --state $out/cli-state --port $port 2> $out/serve.log &
    server=$!
    for _ in $(seq 300); do curl -sf localhost:$port/health > /dev/null 2>&1 && break; sleep 0.2; done
    line=$(/usr/bin/python3 bench/facts_http.py $port $jsonl $clients)
    kill -INT $server; wait $server
    echo "round $round, HTTP: $line" >&2
    results+=("{\"round\": $round, \"http\": $line}")
  done
done
rm -rf $out/cli-state
(IFS=,; echo "{\"facts\": $facts, \"runs\": [${results[*]}]}") | /usr/bin/python3 -m json.tool > $out/ingest.json
cat $out/ingest.json
