#!/usr/bin/env bash
# The LM at GPT-2 small's size (124M parameters, random weights: bench/gpt2_small.py; needs ../shared/gpt2
# and Debian's python3-torch): `eval ppl` tokens/s on the first 20 KB of GCIDE valid (windows of 1,024,
# stride 512) against a Python nanoGPT peer (bench/lm_peer.py, one window per pass; torch's default threads,
# which is 1 with Debian's python3-torch here, and 2)
# and against what the linear layers' FLOPs allow at the sgemm rate the peer measures, in one run.
# "before" is this session's predecessor's behaviour (full T x T attention, 8 windows per pass).
# Usage: bench/lm-gpt2-small.sh [ROUNDS=1]     Output: data/bench-gpt2-small/result.txt
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
out=data/bench-gpt2-small
model=$out/model
[ -f $model/model.safetensors ] || /usr/bin/python3 bench/gpt2_small.py $model
head -c 20000 data/corpus/gcide/valid.txt > $out/text.txt
run() {  # name, then the command; prints "name tokens/s"
  local name=$1
  shift
  local json
  json=$("$@")
  echo "$name $(echo "$json" | /usr/bin/python3 -c 'import json, sys; j = json.loads(sys.stdin.read()); print(j["tokens_per_second"], j.get("perplexity", ""), j.get("sgemm_gflops", ""), j["tokens"])')"
}
{
  for _ in $(seq "$rounds"); do
    run peer /usr/bin/python3 bench/lm_peer.py --model $model --text-file $out/text.txt
    run peer-threads2 /usr/bin/python3 bench/lm_peer.py --model $model --text-file $out/text.txt --threads 2
    run mnemo build/mnemo eval ppl --model $model --text-file $out/text.txt --json
    run mnemo-threads2 build/mnemo --threads 2 eval ppl --model $model --text-file $out/text.txt --json
    run before env MNEMO_ATTENTION_TILE=0 build/mnemo eval ppl --model $model --text-file $out/text.txt --batch-size 8 --json
  done
} | tee $out/runs.txt
# The FLOP bound: the blocks' linear layers run on every position of every window, the head (tied
# embedding) on the scored positions only; attention and everything else is left out.
/usr/bin/python3 - $out/runs.txt <<'PY' | tee $out/result.txt
import sys
sys.path.insert(0, "bench")
from knnlm_peer import windows
runs = [line.split() for line in open(sys.argv[1])]
scored = int(runs[0][4])
plan = windows(scored + 1, 1024)
processed = sum(e - b for b, e, _ in plan)
C, L, V = 768, 12, 50257
flops = 2 * (processed * L * (C * 3 * C + C * C + 2 * C * 4 * C) + scored * C * V)
gflops = max(float(r[3]) for r in runs if r[0].startswith("peer"))
bound = scored / (flops / (gflops * 1e9))
rates = {}
for r in runs:
    rates.setdefault(r[0], []).append(float(r[1]))
best = lambda name: sorted(rates[name])[len(rates[name]) // 2]
print(f"{scored} scored tokens, {processed} processed; sgemm {gflops:.1f} GFLOP/s -> linear-layer bound {bound:.1f} tokens/s")
for name in rates:
    print(f"{name:16s} {best(name):8.1f} tokens/s  {best(name) / best('peer'):5.2f}x peer  {best(name) / bound:5.2f} of the bound")
PY
