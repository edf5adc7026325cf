#!/usr/bin/env bash
# kNN-LM quality on the default model (docs/RESULTS.md):
#   (1) in-domain: datastore over (a prefix of) the LM's own GCIDE training text, GCIDE valid perplexity;
#   (2) domain adaptation: the GCIDE-trained LM with a datastore over FOLDOC train, FOLDOC test perplexity;
#   (3) k and lambda sweeps on the domain-adaptation setting;
#   (4) adaptive retrieval (skip the search where the LM is confident): speed vs perplexity.
# IVF-Flat with nprobe 8: Debian's FAISS 1.7.3 scans IVF lists with its scalar reference distance code,
# so nprobe sets the cost (docs/PERFORMANCE.md). The sweeps run on the first 60 KB of FOLDOC test.
# Every line printed is one `mnemo eval ppl --json` result, tagged. Usage: bench/knnlm-quality.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo=build/mnemo
model=data/models/default
corpus=data/corpus
out=${1:-data/bench-knnlm}
mkdir -p "$out"
[[ -f $model/.complete ]] || { echo "bench: run 'make default-model' first" >&2; exit 1; }

nprobe=${NPROBE:-8}
ppl() {  # tag, text file, extra args...
  local tag=$1 text=$2
  shift 2
  echo "{\"run\": \"$tag\", \"nprobe\": $nprobe, \"result\": $($mnemo eval ppl --model $model --text-file "$text" --nprobe $nprobe --json "$@")}"
}
build() {  # name, text file, index spec, extra args...
  local name=$1 text=$2 spec=$3
  shift 3
  [[ -f $out/$name/manifest.json ]] || $mnemo datastore build --model $model --text-file "$text" --out "$out/$name" \
    --index "$spec" --quiet --json "$@" > "$out/$name.build.json"
  echo "{\"run\": \"build $name\", \"result\": $(cat "$out/$name.build.json"), \"bytes\": $(du -sb "$out/$name" | cut -f1)}"
}

# (1) In-domain: the first ~3 MB of the training split (about 1M entries).
head -c 3000000 $corpus/gcide/train.txt > "$out/gcide-train-prefix.txt"
build gcide-ivf "$out/gcide-train-prefix.txt" "IVF1024,Flat"
ppl "in-domain gcide/valid k=1024 lambda=0.25" $corpus/gcide/valid.txt --datastore "$out/gcide-ivf" --k 1024 --lambda 0.25

# (2) Domain adaptation: FOLDOC train as the datastore, FOLDOC test as the evaluation.
build foldoc-ivf $corpus/foldoc/train.txt "IVF1024,Flat"
ppl "domain foldoc/test k=1024 lambda=0.65" $corpus/foldoc/test.txt --datastore "$out/foldoc-ivf" --k 1024 --lambda 0.65

# (3) Sweeps, on a 60 KB slice of FOLDOC test.
head -c 60000 $corpus/foldoc/test.txt > "$out/foldoc-test-60k.txt"
sweep="$out/foldoc-test-60k.txt"
for k in 1 8 64 256 1024; do
  ppl "sweep k=$k lambda=0.65" "$sweep" --datastore "$out/foldoc-ivf" --k $k --lambda 0.65
done
for lambda in 0.25 0.5 0.8; do
  ppl "sweep k=1024 lambda=$lambda" "$sweep" --datastore "$out/foldoc-ivf" --k 1024 --lambda $lambda
done
# (4) Adaptive retrieval: skip the search where the LM is confident.
for skip in 0.3 0.6 0.9; do
  ppl "adaptive skip>=$skip k=1024 lambda=0.65" "$sweep" --datastore "$out/foldoc-ivf" --k 1024 --lambda 0.65 \
    --skip-confidence $skip
done

# (5) Recall@64 of the indexes against exact search over their own keys.
for nprobe in 8 32; do
  echo "{\"run\": \"recall gcide-ivf nprobe=$nprobe\", \"result\": $($mnemo datastore recall --datastore "$out/gcide-ivf" --model $model --text-file $corpus/gcide/valid.txt --queries 1000 --k 64 --nprobe $nprobe)}"
done
