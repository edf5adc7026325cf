#!/usr/bin/env bash
# kNN-LM cost relative to the base LM, measured in one run: batch scoring (eval ppl on GCIDE valid) and
# single-stream generation (128 greedy tokens), without and with each datastore given.
# Usage: bench/knnlm-speed.sh DATASTORE [DATASTORE...]   (e.g. data/bench-scale/gcide-pq32-1000000)
# THREADS=N sets mnemo's --threads (OpenMP: LibTorch element-wise ops and FAISS searches) for every run;
# KS="1024 64" the k values scored. The base LM is scored with 1 and 2 threads, the kNN-LM with its searches
# overlapping the next batch's forward pass (the default; a second thread) and without (--no-overlap).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-1}
mnemo="build/mnemo --threads $threads"
model=data/models/default
text=data/corpus/gcide/valid.txt
rate() { sed -E 's/.*"tokens_per_second":([0-9.]+).*/\1/'; }
ppl() { sed -E 's/.*"knn":\{[^}]*"perplexity":([0-9.]+).*/\1/'; }
ms() { sed -E 's/.*"ms_per_token":([0-9.]+).*/\1/'; }
gen() { $mnemo generate --model $model --prompt "Harbour, n. A place" --max-tokens 128 --temperature 0 --json "$@" | ms; }
score() { build/mnemo --threads "$1" eval ppl --model $model --text-file $text --json "${@:2}"; }
echo "base: scoring $(score 1 | rate) tokens/s (1 thread), $(score 2 | rate) tokens/s (2 threads);" \
     "generation $(gen) ms/token"
for ds in "$@"; do
  for k in ${KS:-1024 64}; do
    knn=(--datastore "$ds" --k "$k" --lambda 0.25 --nprobe 8)
    overlapped=$(score "$threads" "${knn[@]}")
    echo "$ds k=$k: scoring $(rate <<< "$overlapped") tokens/s overlapped (perplexity $(ppl <<< "$overlapped")," \
         "$(score "$threads" "${knn[@]}" --no-overlap | rate) tokens/s not; generation $(gen "${knn[@]}") ms/token"
  done
done
