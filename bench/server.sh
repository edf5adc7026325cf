#!/usr/bin/env bash
# HTTP server under load (wrk): /v1/completions with 16 tokens and kNN on at concurrency 1, 4 and 16; the
# same while facts are added and deleted at ~10/s each; /v1/score tokens/s; time from `mnemo serve` to
# ready. Uses the default model and datastore that `make serve` builds, on a state of its own.
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

start=$(date +%s.%N)
$mnemo serve --state $out/state --port $port --workers "$workers" --queue 64 --no-log --k 64 --nprobe 8 \
  2> $out/serve.log &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
until curl -sf localhost:$port/health >/dev/null; do sleep 0.05; done
echo "time to ready: $(awk "BEGIN{printf \"%.2f\", $(date +%s.%N) - $start}") s" | tee $out/ready.txt

cat > $out/completion.lua <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model": "default", "prompt": "Harbour, n. A place", "max_tokens": 16, "temperature": 0.8, "knn": {"k": 64, "lambda": 0.25}}'
LUA
cat > $out/score.lua <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"text": "Harbour, n. A place of security and comfort; a refuge; a shelter. A port or haven for ships; a bay or inlet of the sea, in which ships can moor, and be sheltered from the fury of winds and a heavy sea.", "knn": {"k": 64, "lambda": 0.25}}'
LUA

run() {  # name connections script path
  echo "== $1 (connections $2, workers $workers, ${seconds}s)" | tee $out/$1.txt
  wrk -t $(( $2 < 2 ? 1 : 2 )) -c "$2" -d "${seconds}s" --latency -s "$out/$3" "http://127.0.0.1:$port$4" 2>&1 |
    tee -a $out/$1.txt | grep -E "Requests/sec|Non-2xx|50%|99%|Socket errors" || true
}
run completions-c1 1 completion.lua /v1/completions
run completions-c4 4 completion.lua /v1/completions
run completions-c16 16 completion.lua /v1/completions

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
