#!/usr/bin/env bash
# HTTP server under load (wrk): /v1/completions of 16 tokens at concurrency 1, 4 and 16, kNN on and off,
# each completion alone on a worker (--batch-slots 0) and decoded together (the default); then, batched,
# completions while facts are added and deleted at ~10/s each; /v1/score tokens/s; time from `mnemo
# serve` to ready. Uses the default model and datastore that `make serve` builds, on a state of its own.
# Completions' connections start within the first second, not all at once (the lua scripts' delay()).
# Usage: bench/server.sh [WORKERS=2] [SECONDS=20]      Output: data/bench-server/*.txt
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-2}
seconds=${2:-20}
mnemo=build/mnemo
out=data/bench-server
port=8091
mkdir -p $out
rm -rf $out/state
$mnemo init --state $out/state --model data/models/default --datastore data/datastores/gcide-1m-ivf4096pq32 >/dev/null

serve() {  # batch-slots: starts the server and waits for it
  local start
  start=$(date +%s.%N)
  $mnemo serve --state $out/state --port $port --workers "$workers" --queue 64 --no-log --k 64 --nprobe 8 \
    --batch-slots "$1" 2> $out/serve-$1.log &
  server=$!
  until curl -sf localhost:$port/health >/dev/null; do sleep 0.05; done
  echo "time to ready: $(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $start}") s" | tee $out/ready.txt
}
stop() { kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true; }
trap stop EXIT

# Completions of exactly 16 tokens (ignore_eos), temperature 0.8, kNN on (k 64, lambda 0.25) or off.
for knn in on off; do
  enabled=$([ $knn = on ] && echo true || echo false)
  cat > $out/completion-knn-$knn.lua <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "default", "prompt": "Harbour, n. A place", "max_tokens": 16, "temperature": 0.8, "ignore_eos": true, "knn": {"enabled": $enabled, "k": 64, "lambda": 0.25}}'
-- The connections' first requests spread over the first second (wrk's delay), as clients arrive, not
-- one synchronized burst; args[1]: this thread's connections.
local left = 0
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
function init(args) left = tonumber(args[1] or "0"); math.randomseed(1 + (tid or 0) * 7919) end
function delay() if left > 0 then left = left - 1; return math.random(0, 1000) end return 0 end
LUA
done
cp $out/completion-knn-on.lua $out/completion.lua
cat > $out/score.lua <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"text": "Harbour, n. A place of security and comfort; a refuge; a shelter. A port or haven for ships; a bay or inlet of the sea, in which ships can moor, and be sheltered from the fury of winds and a heavy sea.", "knn": {"k": 64, "lambda": 0.25}}'
LUA

run() {  # name connections script path
  echo "== $1 (connections $2, workers $workers, ${seconds}s)" | tee $out/$1.txt
  local t=$(( $2 < 2 ? 1 : 2 ))
  wrk -t $t -c "$2" -d "${seconds}s" --latency -s "$out/$3" "http://127.0.0.1:$port$4" -- $(( $2 / t )) 2>&1 |
    tee -a $out/$1.txt | grep -E "Requests/sec|Non-2xx|50%|99%|Socket errors" || true
}

# Each completion alone on a worker (--batch-slots 0), then decoded together (the default, 16 slots).
for slots in 0 16; do
  serve $slots
  for knn in on off; do
    for c in 1 4 16; do run completions-b$slots-knn-$knn-c$c $c completion-knn-$knn.lua /v1/completions; done
  done
  [ $slots = 16 ] || stop
done
# Generated tokens/s (16 per request) and per-token latency (the request's over 16) per row.
{
  echo "| batch slots | kNN | concurrency | tokens/s | p50 ms/token | p99 ms/token | non-2xx |"
  echo "|---|---|---|---|---|---|---|"
  for slots in 0 16; do for knn in on off; do for c in 1 4 16; do
    f=$out/completions-b$slots-knn-$knn-c$c.txt
    awk -v s=$slots -v k=$knn -v c=$c '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      /Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /Non-2xx/ { bad = $NF }
      END { printf "| %s | %s | %s | %.0f | %.2f | %.2f | %d |\n", s, k, c, rps * 16, p50 / 16, p99 / 16, bad }' "$f"
  done; done; done
} | tee $out/completions-summary.md

# Fact churn while c=4 runs: every 0.1 s one fact is added and then deleted (an open loop: 10 adds/s and
# 10 deletes/s whatever their latency).
rm -f $out/churn.count $out/churn.errors
(
  while true; do
    (
      id=$(curl -sf localhost:$port/v1/facts -H 'Content-Type: application/json' \
           -d "{\"text\": \"Churn fact $RANDOM: the harbour of Quillon opens at dawn.\"}" | sed -E 's/.*"id":([0-9]+).*/\1/')
      if [ -n "$id" ] && curl -sf -X DELETE localhost:$port/v1/facts/$id >/dev/null; then
        echo x >> $out/churn.count
      else
        echo x >> $out/churn.errors
      fi
    ) &
    sleep 0.1
  done
) &
churn=$!
rm -f $out/churn.count
run completions-c4-churn 4 completion.lua /v1/completions
kill $churn
sleep 2
echo "churn: $(cat $out/churn.count 2>/dev/null | wc -l) facts added and deleted in ${seconds}s, $(cat $out/churn.errors 2>/dev/null | wc -l) failed" |
  tee -a $out/completions-c4-churn.txt

run score-c2 2 score.lua /v1/score
tokens=$(curl -sf localhost:$port/v1/score -H 'Content-Type: application/json' -d @<(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" $out/score.lua) |
         sed -E 's/.*"tokens_scored":([0-9]+).*/\1/')
echo "tokens scored per request: $tokens" | tee -a $out/score-c2.txt
