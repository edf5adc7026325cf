#!/usr/bin/env bash
# A datastore larger than one process keeps comfortably, served over 4 shards (issue: sharded datastores).
# Keys are the make-serve datastore's real keys plus Gaussian noise (0.1 of each dimension's standard
# deviation; bench/synth_datastore.cc), so this measures index scale (build, split, resident memory,
# latency), not perplexity. Needs `make serve`'s data and about 3 x ENTRIES x 300 bytes of disk.
# Usage: bench/shards-scale.sh [ENTRIES] [SHARDS] [REQUESTS]   (defaults 20000000, 4, 100)
set -euo pipefail
ENTRIES=${1:-20000000}
SHARDS=${2:-4}
REQUESTS=${3:-100}
SRC=data/datastores/gcide-1m-ivf4096pq32
MODEL=data/models/default
MNEMO=${MNEMO:-build/mnemo}
OUT=${OUT:-/tmp/mnemo-bench-scale}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # ranks share the cores: no spinning (bench/shards.sh)
TEXT='{"text": "A small boat with sails, used for pleasure or racing on a river or lake.", "knn": {"k": 1024}}'
mkdir -p "$OUT"
if [ ! -f "$OUT/synth/manifest.json" ]; then
  rm -rf "$OUT/synth"
  /usr/bin/time -f "build %e s, max RSS %M KiB" build/bench/mnemo_synth_datastore "$SRC" "$OUT/synth" "$ENTRIES" 0.1
fi
if [ ! -f "$OUT/set/shards.json" ]; then
  rm -rf "$OUT/set"
  /usr/bin/time -f "split %e s, max RSS %M KiB" $MNEMO datastore split --datastore "$OUT/synth" --shards "$SHARDS" --out "$OUT/set" --quiet
fi
rm -rf "$OUT/state-1p" "$OUT/state-set"
$MNEMO init --state "$OUT/state-1p" --model "$MODEL" --datastore "$OUT/synth" > /dev/null
$MNEMO init --state "$OUT/state-set" --model "$MODEL" --datastore "$OUT/set" > /dev/null

serve() {  # $1: launcher prefix ("" or mpirun ...), $2: state
  local log="$OUT/serve.log" port=""
  local start=$(date +%s.%N)
  $1 $MNEMO serve --state "$2" --port 0 --no-log 2> "$log" & local job=$!
  for i in $(seq 3000); do
    port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log")
    [ -n "$port" ] && curl -sf "localhost:$port/health" >/dev/null && break
    sleep 0.2
  done
  echo "ready after $(echo "$(date +%s.%N) - $start" | bc) s"
  for i in $(seq 10); do curl -s -X POST "localhost:$port/v1/score" -d "$TEXT" > /dev/null; done
  for i in $(seq "$REQUESTS"); do
    curl -s -o /dev/null -w '%{time_total}\n' -X POST "localhost:$port/v1/score" -d "$TEXT"
  done > "$OUT/times.txt"
  curl -s -X POST "localhost:$port/v1/score" -d "$TEXT" | python3 -c 'import json,sys; print("perplexity_knn", json.load(sys.stdin)["perplexity_knn"])'
  for p in $(pgrep -f "serve --state $2"); do
    grep -q "^$MNEMO" /proc/$p/cmdline 2>/dev/null || grep -q "/mnemo$" /proc/$p/cmdline 2>/dev/null || true
    tr '\0' ' ' < /proc/$p/cmdline | grep -q "^mpirun" && continue
    tr '\0' ' ' < /proc/$p/cmdline | grep -q "^bash" && continue
    rank=$(tr '\0' '\n' < /proc/$p/environ | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    echo "rank ${rank:-single}: $(awk '/VmRSS/ {printf "%d MiB", $2/1024}' /proc/$p/status) resident"
  done
  kill -TERM $job; wait $job 2>/dev/null || true
  python3 - "$OUT/times.txt" <<'PY'
import sys
t = sorted(float(x) * 1000 for x in open(sys.argv[1]))
print("latency mean %.2f ms p50 %.2f p99 %.2f (%d requests)" % (sum(t) / len(t), t[len(t) // 2], t[int(len(t) * 0.99) - 1], len(t)))
PY
}
echo "== one process, unsplit ($ENTRIES entries)"; serve "" "$OUT/state-1p"
echo "== mpirun -np $((SHARDS + 1))"; serve "mpirun --oversubscribe --bind-to none -np $((SHARDS + 1))" "$OUT/state-set"
du -sh "$OUT/synth" "$OUT"/set/shard-* | sed 's/^/disk: /'
