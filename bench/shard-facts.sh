#!/usr/bin/env bash
# What placing facts on shards costs (issue: a sharded datastore and fact store on Open MPI). For the
# unsplit datastore in one process, and the same datastore split into 2 shards both in one process and under
# mpirun -np 3, on fresh states: N sequential POST /v1/facts of one fact each (the LM encodes it on rank 0;
# on shards the owning shard's durable prepare and its commit are two more exchanges), then N DELETE
# /v1/facts/{id} (the catalogue commit, then the shard's drop and scrub), mean and p99 ms; and the kNN
# log-probs of a text that uses the facts, which must be the same in every run (their hash is printed).
# Usage: bench/shard-facts.sh [DATASTORE] [MODEL] [N]   (defaults: the make-serve datastore and model, 50)
set -euo pipefail
DS=${1:-data/datastores/gcide-1m-ivf4096pq32}
MODEL=${2:-data/models/default}
N=${3:-50}
MNEMO=${MNEMO:-build/mnemo}
OUT=${OUT:-/tmp/mnemo-bench-shard-facts}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # ranks share the cores (bench/shards.sh)
MPIRUN="mpirun --oversubscribe --bind-to none"
source "$(dirname "$0")/serve_lib.sh"
rm -rf "$OUT" && mkdir -p "$OUT"
$MNEMO datastore split --datastore "$DS" --shards 2 --out "$OUT/set-2" --quiet > /dev/null
SCORE='{"text": "Fact 7: the harbour of Zenda keeps 7 red boats and a lighthouse.", "knn": {"k": 64}}'

run() {  # $1: label, $2: command prefix, $3: datastore
  local state="$OUT/state-$1" log="$OUT/serve-$1.log"
  $MNEMO init --state "$state" --model "$MODEL" --datastore "$3" > /dev/null
  start_server "$2" "$state" "$log"
  local job=$SERVER_JOB port=$SERVER_PORT
  for i in $(seq "$N"); do
    curl -s -o /dev/null -w '%{time_total}\n' -X POST "localhost:$port/v1/facts" \
      -d "{\"text\": \"Fact $i: the harbour of Zenda keeps $i red boats and a lighthouse.\"}"
  done > "$OUT/add-$1.txt"
  local hash
  hash=$(curl -s -X POST "localhost:$port/v1/score" -d "$SCORE" |
         python3 -c 'import json,sys,hashlib; print(hashlib.sha256(json.dumps(json.load(sys.stdin)["logprobs_knn"]).encode()).hexdigest()[:16])')
  for i in $(seq "$N"); do
    curl -s -o /dev/null -w '%{time_total}\n' -X DELETE "localhost:$port/v1/facts/$i"
  done > "$OUT/delete-$1.txt"
  kill -TERM $job; wait $job 2>/dev/null || true
  python3 - "$1" "$OUT/add-$1.txt" "$OUT/delete-$1.txt" "$hash" <<'PY'
import sys
def stats(path):
    t = sorted(float(x) * 1000 for x in open(path))
    return "mean %.2f ms p99 %.2f" % (sum(t) / len(t), t[int(len(t) * 0.99) - 1])
print("%-22s add %s | delete %s | knn logprobs %s" % (sys.argv[1], stats(sys.argv[2]), stats(sys.argv[3]), sys.argv[4]))
PY
}

run unsplit "" "$DS"
run shards-2-one-process "" "$OUT/set-2"
run shards-2-mpirun "$MPIRUN -np 3" "$OUT/set-2"
