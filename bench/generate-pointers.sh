#!/usr/bin/env bash
# RetoMaton pointers in generation: `mnemo serve` on the datastore `make serve` builds (1M entries of GCIDE
# train, IVF4096,PQ32; its k 64, lambda 0.25, nprobe 8), greedy completions of 64 tokens from 16 entries of
# GCIDE valid (in domain) and FOLDOC valid (domain shift), base LM / kNN-LM searching every position /
# following pointers 1, 2, 4 (bench/generate_pointers.py). Output: data/bench-pointers/generation.md
# Usage: bench/generate-pointers.sh [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
ds=data/datastores/gcide-1m-ivf4096pq32
[[ -f $ds/manifest.json ]] || { echo "no default datastore: run make serve first" >&2; exit 2; }
out=data/bench-pointers
mkdir -p $out
rm -rf $out/state
build/mnemo init --state $out/state --model data/models/default --datastore $ds > /dev/null
port=$((18000 + RANDOM % 1000))
build/mnemo serve --state $out/state --port $port --no-log --k 64 --lambda 0.25 --nprobe 8 2> $out/serve.log &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 600); do curl -sf localhost:$port/health > /dev/null 2>&1 && break; sleep 0.2; done
/usr/bin/python3 bench/generate_pointers.py $port data/corpus/gcide/valid.txt data/corpus/foldoc/valid.txt \
  --rounds "${1:-3}" | tee $out/generation.md
