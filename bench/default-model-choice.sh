#!/usr/bin/env bash
# Reproduces the choice of the default model (docs/RESULTS.md): the same 10-minute budget spent on two
# sizes, each evaluated on the GCIDE test split. Steps per size come from each size's measured
# throughput on 2 cores (docs/PERFORMANCE.md). Takes about 25 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo=build/mnemo
out=${1:-data/bench-default-choice}
corpus=data/corpus
[[ -f $corpus/stats.json ]] || $mnemo corpus prepare --out $corpus >/dev/null
for config in default medium; do
  $mnemo train --corpus $corpus/gcide/train.txt --valid $corpus/gcide/valid.txt --out "$out/$config" \
    --config $config --json > "$out.$config.train.json"
  echo "{\"config\": \"$config\", \"train\": $(cat "$out.$config.train.json"), \"gcide_test\": $($mnemo eval ppl --model "$out/$config" --text-file $corpus/gcide/test.txt --json)}"
done
