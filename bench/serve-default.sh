#!/usr/bin/env bash
# What `make serve` serves, per datastore given: the kNN-LM's cost per generated token against the base LM
# through `mnemo serve` (bench/serve_cost.py: greedy completions of 64 tokens, kNN on and off alternating,
# one request at a time), and the perplexity it buys on the first 100 KB of GCIDE valid (`eval ppl` with the
# same k, lambda and nprobe). Run on the datastores to compare in one run.
# Usage: bench/serve-default.sh DATASTORE...    (env SERVE_FLAGS, default scripts/serve.sh's kNN flags)
# Output: data/bench-serve-default/result.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo=build/mnemo
model=data/models/default
out=data/bench-serve-default
flags=${SERVE_FLAGS:-$(sed -n 's/^knn_flags="\(.*\)"$/\1/p' scripts/serve.sh)}
[ -n "$flags" ] || { echo "no kNN flags found in scripts/serve.sh" >&2; exit 2; }
mkdir -p $out
head -c 100000 data/corpus/gcide/valid.txt > $out/valid-100k.txt
: > $out/result.jsonl
for ds in "$@"; do
  rm -rf $out/state
  $mnemo init --state $out/state --model $model --datastore "$ds" > /dev/null
  port=$((18000 + RANDOM % 1000))
  # shellcheck disable=SC2086
  $mnemo serve --state $out/state --port $port --no-log $flags 2> $out/serve.log &
  server=$!
  for _ in $(seq 600); do curl -sf localhost:$port/health > /dev/null 2>&1 && break; sleep 0.2; done
  cost=$(/usr/bin/python3 bench/serve_cost.py $port data/corpus/gcide/valid.txt)
  kill -INT $server; wait $server
  k=$(echo "$flags" | sed -n 's/.*--k \([0-9]*\).*/\1/p')
  lambda=$(echo "$flags" | sed -n 's/.*--lambda \([0-9.]*\).*/\1/p')
  nprobe=$(echo "$flags" | sed -n 's/.*--nprobe \([0-9]*\).*/\1/p')
  ppl=$($mnemo eval ppl --model $model --text-file $out/valid-100k.txt --datastore "$ds" --k "$k" --lambda "$lambda" \
        --nprobe "$nprobe" --json)
  line=$(/usr/bin/python3 -c 'import json, sys; print(json.dumps({"datastore": sys.argv[1], "flags": sys.argv[2],
    "serve": json.loads(sys.argv[3]), "eval_ppl": json.loads(sys.argv[4])}))' "$ds" "$flags" "$cost" "$ppl")
  echo "$line" | tee -a $out/result.jsonl
done
rm -rf $out/state
