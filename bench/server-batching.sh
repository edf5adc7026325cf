#!/usr/bin/env bash
# Batched decoding against one completion per worker, for any model: `mnemo serve --workers 2` on a state
# without a datastore (base LM), completions of exactly 16 tokens (temperature 0.8, ignore_eos) at
# concurrency 1, 4 and 16, with --batch-slots 16 (the default) and --batch-slots 0 (each completion alone on
# a worker). Prints generated tokens/s and per-token latency (the request's over 16). The connections
# start within the first second, not all at once (the lua script's delay()).
# Usage: bench/server-batching.sh MODEL_DIR [SECONDS=15]      Output: data/bench-batching/<model>/
# (GPT-2 small's shape with random weights: /usr/bin/python3 bench/gpt2_small.py data/bench-gpt2-small/model)
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1
seconds=${2:-15}
out=data/bench-batching/$(basename "$(dirname "$model")")-$(basename "$model")
port=8096
mkdir -p "$out"
rm -rf "$out/state"
build/mnemo init --state "$out/state" --model "$model" >/dev/null
cat > "$out/completion.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "model", "prompt": "Harbour, n. A place of security and comfort", "max_tokens": 16, "temperature": 0.8, "ignore_eos": true}'
-- The connections' first requests spread over the first second (wrk's delay), as clients arrive, not
-- one synchronized burst of c requests; args[1]: this thread's connections.
local left = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) left = tonumber(args[1] or "0"); math.randomseed(1 + (tid or 0) * 7919) end
function delay() if left > 0 then left = left - 1; return math.random(0, 1000) end return 0 end
LUA
sed -i "s/\"model\": \"model\"/\"model\": \"$(basename "$model")\"/" "$out/completion.lua"
server=
trap '[ -n "$server" ] && kill -TERM $server 2>/dev/null; wait 2>/dev/null || true' EXIT
echo "| batch slots | concurrency | tokens/s | p50 ms/token | p99 ms/token | non-2xx |" | tee "$out/summary.md"
echo "|---|---|---|---|---|---|" | tee -a "$out/summary.md"
for slots in 0 16; do
  build/mnemo serve --state "$out/state" --port $port --workers 2 --queue 64 --no-log --batch-slots $slots \
    2> "$out/serve-$slots.log" &
  server=$!
  until curl -sf localhost:$port/health >/dev/null; do sleep 0.1; done
  for c in 1 4 16; do
    t=$(( c < 2 ? 1 : 2 ))
    wrk -t $t -c $c -d "${seconds}s" --timeout 60s --latency -s "$out/completion.lua" \
      "http://127.0.0.1:$port/v1/completions" -- $(( c / t )) > "$out/b$slots-c$c.txt" 2>&1
    awk -v s=$slots -v c=$c '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      /Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /Non-2xx/ { bad = $NF }
      END { printf "| %s | %s | %.1f | %.2f | %.2f | %d |\n", s, c, rps * 16, p50 / 16, p99 / 16, bad }' \
      "$out/b$slots-c$c.txt" | tee -a "$out/summary.md"
  done
  kill -TERM $server; wait $server || true
  server=
done
