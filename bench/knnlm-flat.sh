#!/usr/bin/env bash
# Exact (Flat) kNN-LM scoring against a Python peer, in one run: the peer (bench/knnlm_peer.py: PyTorch +
# faiss.IndexFlatL2, Debian's python3-torch and python3-faiss) with one search call per window and with
# batches of 8 windows, and `mnemo eval ppl` with its defaults (automatic threads and search placement),
# with the searches forced beside the passes (--overlap), after them (--no-overlap), and with --threads 2;
# the base LM (no kNN) for reference. Same model, same datastore,
# same windows (128, stride 64), k 64, lambda 0.25; rounds interleaved, medians reported.
# Usage: bench/knnlm-flat.sh [REPEATS=3]
# The datastore: 165,644 entries (fp16 keys) from the first 2 MB of GCIDE train; the text: the first
# 42,300 bytes of GCIDE valid (15,790 scored tokens).
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-3}
py=/usr/bin/python3
if ! $py -c 'import torch, faiss' 2>/dev/null; then
  echo "the peer needs Debian's python3-torch and python3-faiss: apt-get install -y python3-torch python3-faiss" >&2
  exit 2
fi
model=data/models/default
[[ -f $model/.complete ]] || { echo "no default model: run make serve (or scripts/default-model.sh) first" >&2; exit 2; }
dir=data/bench-flat
ds=$dir/flat-165644
mkdir -p $dir
head -c 42300 data/corpus/gcide/valid.txt > $dir/valid.txt
if [[ ! -f $ds/manifest.json ]]; then
  head -c 2000000 data/corpus/gcide/train.txt > $dir/train-2m.txt
  build/mnemo datastore build --model $model --text-file $dir/train-2m.txt --out $ds --max-entries 165644 --index Flat --quiet
fi
field() { sed -E "s/.*\"$1\": ?([0-9.e+-]+).*/\1/"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
common="--model $model --text-file $dir/valid.txt"
knn="--datastore $ds --k 64 --lambda 0.25"
names=("peer, one search per window" "peer, 8 windows per search" "mnemo (defaults)" "mnemo --overlap"
       "mnemo --no-overlap" "mnemo --threads 2" "base LM (mnemo, no kNN)")
run() {
  case $1 in
    0) $py bench/knnlm_peer.py $common --datastore $ds --batch 1 ;;
    1) $py bench/knnlm_peer.py $common --datastore $ds --batch 8 ;;
    2) build/mnemo eval ppl $common $knn --json ;;
    3) build/mnemo eval ppl $common $knn --overlap --json ;;
    4) build/mnemo eval ppl $common $knn --no-overlap --json ;;
    5) build/mnemo --threads 2 eval ppl $common $knn --json ;;
    6) build/mnemo eval ppl $common --json ;;
  esac
}
declare -A rates ppl
for ((r = 0; r < repeats; r++)); do
  for i in "${!names[@]}"; do
    out=$(run "$i")
    rates[$i]+=" $(field tokens_per_second <<< "$out")"
    if [[ $i -le 1 ]]; then ppl[$i]=$(field knn_perplexity <<< "$out")
    elif [[ $i -le 5 ]]; then ppl[$i]=$(sed -E 's/.*"knn":\{[^}]*"perplexity":([0-9.]+).*/\1/' <<< "$out")
    else ppl[$i]=$(sed -E 's/.*"perplexity":([0-9.]+).*/\1/' <<< "$out"); fi
  done
done
peer=$(median <<< "${rates[0]}")
printf '%-56s %10s %9s %11s\n' config "tokens/s" "vs peer" perplexity
for i in "${!names[@]}"; do
  rate=$(median <<< "${rates[$i]}")
  printf '%-56s %10.0f %8.2fx %11.4f\n' "${names[$i]}" "$rate" "$(awk -v a="$rate" -v b="$peer" 'BEGIN {print a / b}')" "${ppl[$i]}"
done
echo "medians of $repeats interleaved rounds; 'vs peer': against the peer with one search per window"
