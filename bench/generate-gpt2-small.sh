#!/usr/bin/env bash
# Generation at GPT-2 small's size (124M parameters, random weights: bench/gpt2_small.py; needs ../shared/gpt2
# and Debian's python3-torch), batch 1, greedy: `mnemo generate` ms per token against a Python peer
# (bench/generate_peer.py) that decodes the same prompt ids the nanoGPT way (the whole context through the
# model at every step) and with a key/value cache (as Hugging Face's generate does), with torch's default
# threads. Also the machine's memory read rate, since a batch-1 step reads every weight once: the bound is
# the model's bytes over that rate. Rounds interleaved, medians.
# Usage: bench/generate-gpt2-small.sh [ROUNDS=3] [TOKENS=64]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
tokens=${2:-64}
py=/usr/bin/python3
model=data/bench-gpt2-small/model
[ -f $model/model.safetensors ] || $py bench/gpt2_small.py $model
prompt="The quick brown fox jumps over the lazy dog because it was in a hurry to get home before the rain started falling on the"
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
full="" cached="" ours="" same=1
for ((r = 0; r < rounds; r++)); do
  peer=$($py bench/generate_peer.py --model $model --prompt "$prompt" --max-tokens "$tokens")
  mnemo=$(build/mnemo generate --model $model --prompt "$prompt" --max-tokens "$tokens" --temperature 0 --json)
  read -r f c m s < <($py -c 'import json, sys
p, m = json.loads(sys.argv[1]), json.loads(sys.argv[2])
ours = m["ids"][-len(p["ids_cached"]):]
print(p["ms_per_token_full"], p["ms_per_token_cached"], m["ms_per_token"], int(ours == p["ids_cached"] == p["ids_full"]))' "$peer" "$mnemo")
  full+=" $f" cached+=" $c" ours+=" $m"
  [[ $s == 1 ]] || same=0
done
read -r bytes rate < <($py -c 'import os, time, torch
n = os.path.getsize("'$model'/model.safetensors")
a = torch.ones(256 * 1024 * 1024 // 4)
best = min((lambda t: (a.sum(), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(5))
print(n, a.numel() * 4 / best / 1e9)')
$py - "$(median <<< "$full")" "$(median <<< "$cached")" "$(median <<< "$ours")" "$bytes" "$rate" "$same" "$tokens" <<'PY'
import sys
full, cached, ours, size, rate, same, tokens = map(float, sys.argv[1:])
bound = size / (rate * 1e9) * 1000
print(f"{int(tokens)} greedy tokens, batch 1; medians of the rounds; same ids everywhere: {'yes' if same else 'NO'}")
print(f"peer, nanoGPT generate (whole context each step) {full:8.2f} ms/token  {full / ours:5.2f}x mnemo's time")
print(f"peer, key/value cache                            {cached:8.2f} ms/token  {cached / ours:5.2f}x mnemo's time")
print(f"mnemo generate                                   {ours:8.2f} ms/token")
print(f"memory bound: {size / 1e6:.0f} MB of weights at {rate:.1f} GB/s read = {bound:.2f} ms/token; mnemo at {ours / bound:.2f}x it")
PY
