#!/usr/bin/env bash
# What `datastore build --index auto` (the default) trades: at each size, a Flat (exact) datastore and the
# one auto builds (Flat below 10,000 entries, IVF-PQ above), scored by `eval ppl` with its defaults (k 1024,
# nprobe 32) and with k 64: tokens/s, cost against the base LM, and kNN perplexity. One run.
# Usage: bench/default-index.sh [SIZES="10000 25000 50000 100000 165644 300000"]
# Data: datastores from the first 2 MB of GCIDE train (741K tokens), text: the first 42,300 bytes of GCIDE
# valid (15,790 scored tokens), the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
model=data/models/default
[[ -f $model/.complete ]] || { echo "no default model: run make serve (or scripts/default-model.sh) first" >&2; exit 2; }
dir=data/bench-index
mkdir -p $dir
head -c 2000000 data/corpus/gcide/train.txt > $dir/train-2m.txt
head -c 42300 data/corpus/gcide/valid.txt > $dir/valid.txt
field() { sed -E "s/.*\"$1\":\"?([^\",}]+).*/\1/"; }
base=$(build/mnemo eval ppl --model $model --text-file $dir/valid.txt --json | field tokens_per_second)
printf '%-8s %-14s %5s %9s %7s %10s\n' entries index k tokens/s cost perplexity
for n in ${1:-10000 25000 50000 100000 165644 300000}; do
  for kind in Flat auto; do
    ds=$dir/$kind-$n
    if [[ ! -f $ds/manifest.json ]]; then
      build/mnemo datastore build --model $model --text-file $dir/train-2m.txt --out $ds --max-entries "$n" \
        --index $kind --quiet --json > $ds.build.json
    fi
    spec=$(sed -E 's/.*"index":"([^"]+)".*/\1/' $ds.build.json)
    for k in 1024 64; do
      out=$(build/mnemo eval ppl --model $model --text-file $dir/valid.txt --datastore $ds --k $k --json)
      rate=$(field tokens_per_second <<< "$out")
      ppl=$(sed -E 's/.*"knn":\{[^}]*"perplexity":([0-9.]+).*/\1/' <<< "$out")
      printf '%-8s %-14s %5s %9.0f %6.2fx %10.4f\n' "$n" "$spec" $k "$rate" "$(awk -v a="$base" -v b="$rate" 'BEGIN {print a / b}')" "$ppl"
    done
  done
done
echo "base LM: $(printf '%.0f' "$base") tokens/s"
