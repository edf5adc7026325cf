#!/usr/bin/env bash
# The main job on the default model. Until the HTTP server lands this is a command-line demo:
# held-out perplexity, then generations from a few prompts.
# Usage: scripts/serve.sh MNEMO_BINARY DATA_DIR
set -euo pipefail
mnemo=$1
data=$2
model="$data/models/default"
echo "== held-out GCIDE test perplexity" >&2
"$mnemo" eval ppl --model "$model" --text-file "$data/corpus/gcide/test.txt"
for prompt in "Abdicate, v. t. To give up" "Harbour, n. A place of" "Computer, n."; do
  echo "== generate --prompt \"$prompt\"" >&2
  "$mnemo" generate --model "$model" --prompt "$prompt" --max-tokens 48 --temperature 0.8 --top-p 0.95 --seed 1
done
cat >&2 <<MSG

Try it yourself:
  $mnemo generate --model $model --prompt "Lantern, n." --max-tokens 40
  $mnemo score --model $model --text "The act of abdicating." --json
  $mnemo eval ppl --model $model --text-file $data/corpus/foldoc/test.txt
MSG
