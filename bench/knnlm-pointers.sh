#!/usr/bin/env bash
# RetoMaton pointers (eval ppl --pointers N): searches saved against perplexity, in one run. The default
# model on the datastore `make serve` builds (1M entries of GCIDE train, IVF4096,PQ32; k 64, nprobe 8,
# lambda 0.25), at --pointers 0 (search every position), 1, 2, 4, 8 and 16, on the first 30,000 bytes of
# GCIDE valid (in domain: dictionary text like the datastore's, but not in it) and of FOLDOC valid
# (domain shift: a computing dictionary). Output: a markdown table on stdout and in data/bench-pointers/.
# Usage: bench/knnlm-pointers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
model=data/models/default
ds=data/datastores/gcide-1m-ivf4096pq32
[[ -f $ds/manifest.json ]] || { echo "no default datastore: run make serve first" >&2; exit 2; }
out=data/bench-pointers
mkdir -p $out
head -c 30000 data/corpus/gcide/valid.txt > $out/gcide-valid.txt
head -c 30000 data/corpus/foldoc/valid.txt > $out/foldoc-valid.txt
field() { sed -E "s/.*\"$1\": ?([0-9.e+-]+).*/\1/"; }
{
  echo "| text | pointers | searched | kNN-LM ppl | base ppl | tokens/s |"
  echo "|---|---|---|---|---|---|"
  for text in gcide-valid foldoc-valid; do
    for p in 0 1 2 4 8 16; do
      build/mnemo eval ppl --model $model --datastore $ds --text-file $out/$text.txt --k 64 --nprobe 8 \
        --lambda 0.25 --pointers $p --json > $out/$text-p$p.json
      j=$(tr -d '\n ' < $out/$text-p$p.json)
      knn=$(echo "$j" | sed -E 's/.*"knn":\{([^}]*)\}.*/\1/')
      base=$(echo "$j" | sed -E 's/.*"base":\{([^}]*)\}.*/\1/')
      printf "| %s | %s | %.1f%% | %.3f | %.3f | %.0f |\n" $text $p \
        "$(echo "$knn" | field searched_fraction | awk '{print $1 * 100}')" "$(echo "$knn" | field perplexity)" \
        "$(echo "$base" | field perplexity)" "$(echo "$j" | field tokens_per_second)"
    done
  done
} | tee $out/table.md
