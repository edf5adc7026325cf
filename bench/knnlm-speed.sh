#!/usr/bin/env bash
# kNN-LM cost relative to the base LM, measured in one run: batch scoring (eval ppl on GCIDE valid) and
# single-stream generation (128 greedy tokens), without and with each datastore given.
# Usage: bench/knnlm-speed.sh DATASTORE [DATASTORE...]   (e.g. data/bench-knnlm/gcide-pq32)
# THREADS=N sets mnemo's --threads (OpenMP: LibTorch element-wise ops and FAISS searches) for every run.
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo="build/mnemo --threads ${THREADS:-1}"
model=data/models/default
text=data/corpus/gcide/valid.txt
knn=(--k 1024 --lambda 0.25 --nprobe 8)
rate() { sed -E 's/.*"tokens_per_second":([0-9.]+).*/\1/'; }
ms() { sed -E 's/.*"ms_per_token":([0-9.]+).*/\1/'; }
gen() { $mnemo generate --model $model --prompt "Harbour, n. A place" --max-tokens 128 --temperature 0 --json "$@" | ms; }
echo "base: scoring $($mnemo eval ppl --model $model --text-file $text --json | rate) tokens/s, generation $(gen) ms/token"
for ds in "$@"; do
  echo "$ds: scoring $($mnemo eval ppl --model $model --text-file $text --datastore "$ds" "${knn[@]}" --json | rate) tokens/s," \
       "generation $(gen --datastore "$ds" "${knn[@]}") ms/token"
done
