#!/usr/bin/env bash
# What placing facts on shards costs (issue: a sharded datastore and fact store on Open MPI). For the
# unsplit datastore in one process, and the same datastore split into 2 shards both in one process and under
# mpirun -np 3, on fresh states: N sequential POST /v1/facts of one fact each (the LM encodes it on rank 0;
# on shards the owning shard's durable prepare and its commit are two more exchanges), then N DELETE
# /v1/facts/{id} (the catalogue commit, then the shard's drop and scrub), mean and p99 ms; and the kNN
# log-probs of a text that uses the facts, which must be the same in every run (their hash is printed).
# Then what opening a state with MANY facts costs (the `seconds` fsck reports: the open, with its recovery):
# the unsplit state loads its snapshot chunks, a shard indexes its facts again from entries.db and rank 0
# syncs every shard against the catalogue.
# Usage: bench/shard-facts.sh [DATASTORE] [MODEL] [N] [MANY]   (defaults: the make-serve datastore and
# model, 50, 5000)
set -euo pipefail
DS=${1:-data/datastores/gcide-1m-ivf4096pq32}
MODEL=${2:-data/models/default}
N=${3:-50}
MANY=${4:-5000}
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

python3 - "$MANY" > "$OUT/many.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"text": "Record %d: the harbour of Zenda keeps %d red boats, %d sails and a lighthouse." % (i, i % 97, i % 13)}))
PY
open_seconds() {  # $1: label, $2: command prefix, $3: state
  $2 $MNEMO fsck --json --state "$3" |
    python3 -c 'import json,sys; j=json.load(sys.stdin); print("%-22s open %.2f s (%d facts, %d entries, consistent %s)" % (sys.argv[1], j["seconds"], j["facts"], j["fact_entries"], j["consistent"]))' "$1"
}
for which in unsplit:$DS sharded:$OUT/set-2; do
  $MNEMO init --state "$OUT/many-${which%%:*}" --model "$MODEL" --datastore "${which#*:}" > /dev/null
  /usr/bin/time -f "${which%%:*}: facts add of $MANY facts %e s" $MNEMO facts add --state "$OUT/many-${which%%:*}" --jsonl "$OUT/many.jsonl" > /dev/null
done
open_seconds unsplit "" "$OUT/many-unsplit"
open_seconds shards-2-one-process "" "$OUT/many-sharded"
open_seconds shards-2-mpirun "$MPIRUN -np 3" "$OUT/many-sharded"
