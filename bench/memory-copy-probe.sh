#!/usr/bin/env bash
# Does a model copy, inside its window and through its memory? (docs/RESULTS.md, "The memorizing layer")
#   in-window:  30 random token ids, then the same 30 again (`mnemo score --ids`): the mean log-probability
#               of each copy's tokens (a model that copies scores the second copy far higher);
#   memory:     the first 900 characters of each test document written twice (about 500 tokens apart,
#               beyond the 128-token window), scored with a memory of 4,096 tokens and without
#               (`eval ppl --documents`): perplexity with and without the memory.
# One JSON line per model. Usage: bench/memory-copy-probe.sh MODEL_DIR...  (DOCS: test documents JSONL)
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo=build/mnemo
docs=${DOCS:-data/bench-memory/corpus/python-stdlib/test.jsonl}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$docs" "$tmp/doubled.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for line in f:
        text = json.loads(line)["text"][:900]
        out.write(json.dumps({"text": text + text}) + "\n")
PY
ids=$(python3 -c 'import random; random.seed(1); a = [random.randrange(100, 4000) for _ in range(30)]; print(",".join(map(str, a + a)))')
for model in "$@"; do
  in_window=$($mnemo score --model "$model" --ids "$ids" --json | python3 -c '
import json, sys
lp = json.load(sys.stdin)["logprobs"][1:]  # the first token has none
print(json.dumps({"first_copy": sum(lp[:29]) / 29, "second_copy": sum(lp[29:]) / 30}))')
  memory=null
  if grep -q mnemo_memory_layer "$model/config.json"; then
    memory=$($mnemo eval ppl --model "$model" --documents "$tmp/doubled.jsonl" --memory-size 4096 --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(json.dumps({"tokens": r["base"]["tokens"], "base_perplexity": r["base"]["perplexity"],
                  "memory_perplexity": r["memory"]["perplexity"]}))')
  fi
  echo "{\"model\": \"$model\", \"in_window_logprob\": $in_window, \"doubled_documents\": $memory}"
done
