#!/usr/bin/env bash
# The main job: serve the default model over HTTP with a kNN-LM datastore and runtime facts.
# First run: builds the default datastore (1M entries of GCIDE train, IVF4096,PQ32; a few minutes) and a
# state directory; later runs reuse them (a state made by an earlier version keeps the datastore it names).
# The index and kNN settings are the point where the kNN-LM costs at most 1.5x the base LM per generated
# token (docs/PERFORMANCE.md, "What make serve serves"). Prints ready-to-paste curl commands once the server is up;
# Ctrl-C stops it gracefully (in-flight requests finish, the state is snapshotted).
# Usage: scripts/serve.sh MNEMO_BINARY DATA_DIR [PORT]
set -euo pipefail
mnemo=$1
data=$2
port=${3:-${PORT:-8080}}
model="$data/models/default"
datastore="$data/datastores/gcide-1m-ivf4096pq32"
state="$data/state"
knn_flags="--k 64 --lambda 0.25 --nprobe 8"

if [ ! -f "$state/state.json" ]; then
  if [ ! -f "$datastore/manifest.json" ]; then
    echo "== building the default datastore (first run only): 1M entries of GCIDE train, IVF4096,PQ32" >&2
    rm -rf "$datastore"
    mkdir -p "$(dirname "$datastore")"
    "$mnemo" datastore build --model "$model" --text-file "$data/corpus/gcide/train.txt" --out "$datastore" \
      --index IVF4096,PQ32 --max-entries 1000000
  fi
  "$mnemo" init --state "$state" --model "$model" --datastore "$datastore"
fi
datastore=$(sed -n 's/.*"datastore": *"\([^"]*\)".*/\1/p' "$state/state.json")

# shellcheck disable=SC2086
"$mnemo" serve --state "$state" --port "$port" $knn_flags &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server' INT TERM
for _ in $(seq 600); do
  curl -sf "localhost:$port/health" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || { wait $server; exit 1; }
  sleep 0.2
done
cat >&2 <<MSG

mnemo is serving $model (datastore $datastore, state $state) on http://127.0.0.1:$port
Try:
  curl -s localhost:$port/v1/completions -H 'Content-Type: application/json' \\
    -d '{"model": "default", "prompt": "Harbour, n. A place", "max_tokens": 24, "temperature": 0}'
  curl -s localhost:$port/v1/facts -H 'Content-Type: application/json' \\
    -d '{"text": "Quillon, n. The harbour town where Ada Brandt is harbour master."}'
  curl -s localhost:$port/v1/completions -H 'Content-Type: application/json' \\
    -d '{"model": "default", "prompt": "Quillon, n. The harbour town where", "max_tokens": 12, "temperature": 0, "knn": {"k": 8, "lambda": 0.5}, "return_neighbors": 2}'
  curl -s -X DELETE localhost:$port/v1/facts/1
  curl -s -X POST localhost:$port/v1/audits -d '{}'        # leakage audit (about 3 minutes); then:
  curl -s localhost:$port/v1/audits                        # its status, and report.json / report.html links
Ctrl-C stops the server.
MSG
wait $server
