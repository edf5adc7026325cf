#!/usr/bin/env bash
# Language-model speed on this machine: batch scoring throughput (eval ppl, windows of n_positions,
# stride n_positions/2, 8 windows per forward) and single-stream generation latency with the KV cache.
# Usage: bench/lm-speed.sh [MODEL_DIR] [TEXT_FILE]   (defaults: the default model, GCIDE test split)
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo=build/mnemo
model=${1:-data/models/default}
text=${2:-data/corpus/gcide/test.txt}
[[ -x $mnemo && -f $model/config.json ]] || { echo "bench: build mnemo and the default model first (make default-model)" >&2; exit 1; }

score=$($mnemo eval ppl --model "$model" --text-file "$text" --json)
echo "scoring (batch 8 windows): $score"
for run in 1 2 3; do
  gen=$($mnemo generate --model "$model" --prompt "Harbour, n. A place" --max-tokens 128 --temperature 0 --json)
  echo "generation run $run (batch 1, KV cache, 128 tokens): ms_per_token=$(echo "$gen" | sed -E 's/.*"ms_per_token":([0-9.]+).*/\1/')"
done
