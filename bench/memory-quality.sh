#!/usr/bin/env bash
# The memorizing layer on long documents (docs/RESULTS.md, docs/PERFORMANCE.md):
#   data:  the Python standard library, one document per .py file (`mnemo corpus prepare --source python-stdlib`);
#   (a) scratch: the default preset trained from scratch with a memorizing layer (layer 2, joint mode) and a
#       training memory of TRAIN_MEMORY tokens per lane;
#   (b) finetuned: the default model (GCIDE) fine-tuned into a memorizing one on the same documents;
#   (c) nomemory: the default preset trained from scratch on the same documents, same steps, no memory layer;
#   then each memorizing model's memory index (`mnemo memory index` on its training documents), held-out
#   bits/byte at memory 0 / 1K / 4K / 16K / 64K tokens (IVF search from 16K, one exact 64K row), the copy
#   test (each test document read twice, the second copy scored), the tokens the memory helped most, the
#   cost of memory 64K against 0, training tokens/s with and without memory, and bench/memory_bench.cc.
# Every line printed is one JSON result, tagged. Usage: bench/memory-quality.sh [OUT_DIR]
# Environment: STEPS (scratch models, default 800), FT_STEPS (fine-tuning, default 400), TRAIN_MEMORY
# (default 2048), EVAL_TOKENS (scored tokens per evaluation, default 60000), SPEED_STEPS (default 40),
# RECIPE (what the memorizing models add to `train`, default: smeared keys with 2 induction heads by
# construction), CURRICULUM (what every model's training data adds, default: a third of the documents
# read as repeated 16..256-token chunks; empty for plain documents).
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo=build/mnemo
out=${1:-data/bench-memory}
steps=${STEPS:-800}
ft_steps=${FT_STEPS:-400}
train_memory=${TRAIN_MEMORY:-2048}
eval_tokens=${EVAL_TOKENS:-60000}
default=data/models/default
[[ -f $default/.complete ]] || { echo "bench: run 'make default-model' first" >&2; exit 1; }
mkdir -p "$out"
docs=$out/corpus/python-stdlib
[[ -f $docs/stats.json ]] || $mnemo corpus prepare --source python-stdlib --out "$out/corpus" --json > /dev/null
echo "{\"run\": \"corpus\", \"result\": $(tr -d '\n' < "$docs/stats.json")}"

train() {  # name, extra args...
  local name=$1
  shift
  if [[ ! -f $out/$name/.complete ]]; then
    $mnemo train --documents "$docs/train.jsonl" --valid-documents "$docs/valid.jsonl" --out "$out/$name" \
      --eval-tokens 8192 --quiet --json "$@" > "$out/$name.train.json"
    touch "$out/$name/.complete"
  fi
  echo "{\"run\": \"train $name\", \"result\": $(cat "$out/$name.train.json")}"
}
read -r -a recipe <<< "${RECIPE---memory-smear --induction-heads 2}"
read -r -a curriculum <<< "${CURRICULUM---repeat-chunk 256 --repeat-fraction 0.3}"
train scratch --tokenizer $default --config default --steps "$steps" --memory-layer 2 --memory-size "$train_memory" \
  "${recipe[@]}" "${curriculum[@]}"
train nomemory --tokenizer $default --config default --steps "$steps" "${curriculum[@]}"
train finetuned --init-from $default --steps "$ft_steps" --memory-layer 2 --memory-size "$train_memory" \
  "${recipe[@]}" "${curriculum[@]}"
for model in scratch finetuned; do
  [[ -f $out/$model/memory_index.safetensors ]] ||
    $mnemo memory index --model "$out/$model" --documents "$docs/train.jsonl" --json > "$out/$model.index.json"
  echo "{\"run\": \"memory index $model\", \"result\": $(cat "$out/$model.index.json")}"
done

ppl() {  # tag, model, extra args...
  local tag=$1 model=$2
  shift 2
  echo "{\"run\": \"$tag\", \"result\": $($mnemo eval ppl --model "$out/$model" --documents "$docs/test.jsonl" \
    --max-tokens "$eval_tokens" --json "$@")}"
}
for model in scratch finetuned; do
  for m in 0 1024 4096 16384 65536; do ppl "$model memory=$m" $model --memory-size $m; done
done
ppl "scratch memory=65536 exact" scratch --memory-size 65536 --memory-search exact
ppl "nomemory" nomemory
for model in scratch finetuned; do
  ppl "$model copy memory=65536" $model --copy --memory-size 65536 --examples 8
done
ppl "nomemory copy" nomemory --copy
ppl "scratch examples memory=16384" scratch --memory-size 16384 --examples 12

# Training speed, one after the other on an idle machine: the same steps with and without the memory.
speed_steps=${SPEED_STEPS:-40}
for m in 0 "$train_memory"; do
  rm -rf "$out/speed"
  args=(--memory-layer 2 --memory-size "$m" "${recipe[@]}")
  [[ $m == 0 ]] && args=()
  echo "{\"run\": \"train speed memory=$m\", \"result\": $($mnemo train --documents "$docs/train.jsonl" \
    --valid-documents "$docs/valid.jsonl" --out "$out/speed" --tokenizer $default --config default \
    --steps "$speed_steps" --eval-tokens 2048 --quiet --json "${args[@]}")}"
done
rm -rf "$out/speed"
build/bench/mnemo_memory_bench 262144 2>/dev/null | sed 's/^/{"run": "memory_bench", "result": /; s/$/}/'
