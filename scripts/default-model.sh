#!/usr/bin/env bash
# Prepares the default corpus and trains the default model the first time; later runs reuse them.
# An interrupted training run resumes from its last checkpoint.
# Usage: scripts/default-model.sh MNEMO_BINARY DATA_DIR
set -euo pipefail
mnemo=$1
data=$2
if [[ ! -f "$data/corpus/stats.json" ]]; then
  echo "mnemo: preparing the corpus (GCIDE and FOLDOC from Debian's dictionary packages) in $data/corpus" >&2
  "$mnemo" corpus prepare --out "$data/corpus" >/dev/null
fi
model="$data/models/default"
if [[ ! -f "$model/.complete" ]]; then
  echo "mnemo: training the default model in $model (about 10 minutes on 2 cores)" >&2
  "$mnemo" train --corpus "$data/corpus/gcide/train.txt" --valid "$data/corpus/gcide/valid.txt" \
    --out "$model" --config default
  touch "$model/.complete"
fi
