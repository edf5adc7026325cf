#!/usr/bin/env bash
# Fact store speed on the default model: add/delete latency, batched ingest, search latency with 0, 10K
# and 100K facts, start-up of a 100K-fact state. Builds a 300K-entry IVF1024,Flat base datastore over
# the GCIDE training text first (cached in data/bench-facts/base).
# Usage: bench/facts.sh [FACTS=100000]     Output: data/bench-facts/result.json
set -euo pipefail
cd "$(dirname "$0")/.."
facts=${1:-100000}
model=data/models/default
text=data/corpus/gcide/train.txt
out=data/bench-facts
mkdir -p $out
if [ ! -f $out/base/manifest.json ]; then
  rm -rf $out/base
  build/mnemo datastore build --model $model --text-file $text --out $out/base --index IVF1024,Flat \
    --max-entries 300000 --json | tee $out/base.build.json
fi
/usr/bin/time -v build/bench/mnemo_facts_bench $model $out/base $text $out/work "$facts" 30 \
  > $out/result.json 2> >(tee $out/stderr.log >&2)
grep -E "Maximum resident" $out/stderr.log || true
cat $out/result.json
