#!/usr/bin/env bash
# What sharding costs on one machine (issue: a sharded datastore on Open MPI). Splits a datastore into 1, 2
# and 4 shards, then measures against the unsplit datastore in one process:
#   - batch scoring: `eval ppl --json` tokens/s (a search per batch of windows: many queries per message);
#   - request latency: sequential /v1/score requests of a short text with kNN on (one search of ~16
#     queries per request), mean and p99 over REQUESTS requests, single process vs mpirun -np N+1;
#   - split time and resident memory (VmRSS) of rank 0 and the shard ranks.
# Results must agree: the perplexities of every run are printed and must be equal.
# Usage: bench/shards.sh [DATASTORE] [MODEL] [REQUESTS]   (defaults: the make-serve datastore and model, 200)
set -euo pipefail
DS=${1:-data/datastores/gcide-1m-ivf4096pq32}
MODEL=${2:-data/models/default}
REQUESTS=${3:-200}
MNEMO=${MNEMO:-build/mnemo}
OUT=${OUT:-/tmp/mnemo-bench-shards}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
# Ranks share this machine's cores: OpenMP threads that spin after a parallel region (the default) take the
# core another rank needs. Passive for every run, the single process included, so the comparison is fair.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
MPIRUN="mpirun --oversubscribe --bind-to none"
source "$(dirname "$0")/serve_lib.sh"
rm -rf "$OUT" && mkdir -p "$OUT"
head -c 60000 data/corpus/gcide/valid.txt > "$OUT/valid.txt"
TEXT='{"text": "A small boat with sails, used for pleasure or racing on a river or lake.", "knn": {"k": 1024}}'

ppl() {  # $1: command prefix, $2: datastore
  $1 $MNEMO eval ppl --model "$MODEL" --datastore "$2" --text-file "$OUT/valid.txt" --json |
    python3 -c 'import json,sys; j=json.load(sys.stdin); k=j["knn"]; print("knn_ppl %.6f tokens/s %.0f" % (k["perplexity"], j["tokens_per_second"]))'
}

latency() {  # $1: command prefix, $2: state; prints mean and p99 ms of REQUESTS /v1/score requests
  start_server "$1" "$2" "$OUT/serve.log"
  local job=$SERVER_JOB port=$SERVER_PORT
  for i in $(seq 20); do curl -s -X POST "localhost:$port/v1/score" -d "$TEXT" > /dev/null; done  # warm
  for i in $(seq "$REQUESTS"); do
    curl -s -o /dev/null -w '%{time_total}\n' -X POST "localhost:$port/v1/score" -d "$TEXT"
  done > "$OUT/times.txt"
  local rss=""
  for p in $(pgrep -f "serve --state $2"); do
    [ -r /proc/$p/status ] || continue
    tr '\0' ' ' < /proc/$p/cmdline | grep -q "^$MNEMO serve" || continue  # not mpirun, not this shell
    r=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$p/status); rank=$(tr '\0' '\n' < /proc/$p/environ | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    rss="$rss rank${rank:-0}=${r}MiB"
  done
  kill -TERM $job; wait $job 2>/dev/null || true
  python3 - "$OUT/times.txt" "$rss" <<'PY'
import sys
t = sorted(float(x) * 1000 for x in open(sys.argv[1]))
print("latency mean %.2f ms p50 %.2f p99 %.2f (%d requests) rss%s" % (sum(t) / len(t), t[len(t) // 2], t[int(len(t) * 0.99) - 1], len(t), sys.argv[2]))
PY
}

echo "== one process, unsplit: $DS"
ppl "" "$DS"
$MNEMO init --state "$OUT/state-1p" --model "$MODEL" --datastore "$DS" > /dev/null
latency "" "$OUT/state-1p"
for n in 1 2 4; do
  echo "== $n shard(s)"
  /usr/bin/time -f "split %e s, max RSS %M KiB" $MNEMO datastore split --datastore "$DS" --shards $n --out "$OUT/set-$n" --quiet > /dev/null
  $MNEMO init --state "$OUT/state-$n" --model "$MODEL" --datastore "$OUT/set-$n" > /dev/null
  echo -n "one process over the shards: "; ppl "" "$OUT/set-$n"
  echo -n "mpirun -np $((n + 1)):          "; ppl "$MPIRUN -np $((n + 1))" "$OUT/set-$n"
  echo -n "mpirun -np $((n + 1)) serve:    "; latency "$MPIRUN -np $((n + 1))" "$OUT/state-$n"
  rm -rf "$OUT/set-$n"/shard-*/keys.f16.unused 2>/dev/null || true
done
du -sh "$OUT"/set-* | sed 's/^/disk: /'
