#!/usr/bin/env bash
# Datastore scale: build time and peak resident memory of `datastore build` (IVF1024,PQ32) at N entries
# of GCIDE train followed by FOLDOC train (about 10.5M tokens together), and the resident memory of kNN-LM scoring with the index memory-mapped (keys stay on
# disk) against the base LM alone. Usage: bench/knnlm-scale.sh N [N...]   (e.g. 100000 1000000)
# EVAL_ONLY=1 skips the builds and measures the scoring of datastores an earlier run built.
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo=build/mnemo
model=data/models/default
out=data/bench-scale
mkdir -p $out
head -c 30000 data/corpus/gcide/valid.txt > $out/valid-30k.txt
cat data/corpus/gcide/train.txt data/corpus/foldoc/train.txt > $out/train-all.txt
rss() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
wall() { sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$1"; }
/usr/bin/time -v $mnemo eval ppl --model $model --text-file $out/valid-30k.txt --json > /dev/null 2> $out/base.time
echo "base LM scoring: peak RSS $(rss $out/base.time) KB"
for n in "$@"; do
  ds=$out/gcide-pq32-$n
  if [[ -z "${EVAL_ONLY:-}" ]]; then
    rm -rf "$ds"
    /usr/bin/time -v $mnemo datastore build --model $model --text-file $out/train-all.txt --out "$ds" \
      --index IVF1024,PQ32 --max-entries "$n" --quiet --json > $out/build-$n.json 2> $out/build-$n.time
  fi
  /usr/bin/time -v $mnemo eval ppl --model $model --text-file $out/valid-30k.txt --datastore "$ds" --mmap-index \
    --k 1024 --nprobe 8 --json > /dev/null 2> $out/eval-$n.time
  echo "$n entries: build $(wall $out/build-$n.time) (peak RSS $(rss $out/build-$n.time) KB), $(cat $out/build-$n.json);" \
       "scoring with --mmap-index peak RSS $(rss $out/eval-$n.time) KB"
done
