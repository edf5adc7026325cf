#!/usr/bin/env bash
# Fact ingest with a memorizing model against the same-shape model without the layer: with a memory layer
# every fact is also read into the state's facts memory (its pairs at the layer computed and stored in
# memories.db). Two fresh states, the same facts, `mnemo facts add --jsonl` timed alternately ROUNDS times.
#
#   bench/memory-ingest.sh [MEMORY_MODEL] [PLAIN_MODEL] [FACTS] [ROUNDS]
# Defaults: data/bench-memory/finetuned, data/bench-memory/nomemory (both 4 layers, d = 128), 1,000 facts,
# 2 rounds. Prints facts/s per model and round and the ratio (plain / memory) of the summed times.
set -euo pipefail
cd "$(dirname "$0")/.."
MEMORY_MODEL=${1:-data/bench-memory/finetuned}
PLAIN_MODEL=${2:-data/bench-memory/nomemory}
FACTS=${3:-1000}
ROUNDS=${4:-2}
MNEMO=${MNEMO:-build/mnemo}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

python3 - "$FACTS" > "$WORK/facts.jsonl" <<'EOF'
import json, random, sys
random.seed(3)
first = ["anna", "ben", "carla", "dirk", "eva", "finn", "greta", "hugo", "ines", "jon"]
last = ["falk", "meyer", "stone", "berg", "lind", "holt", "kraus", "vogel"]
city = ["lindau", "bremen", "paris", "oslo", "lyon", "graz", "turin", "porto"]
job = ["baker", "pilot", "nurse", "painter", "teacher", "lawyer"]
for i in range(int(sys.argv[1])):
    print(json.dumps({"text": f"{random.choice(first)} {random.choice(last)} was born in {random.choice(city)} "
                              f"in {random.randint(1900, 2000)} and works as a {random.choice(job)}, record {i}."}))
EOF

declare -A total=([memory]=0 [plain]=0)
for round in $(seq 1 "$ROUNDS"); do
  for kind in memory plain; do
    model=$MEMORY_MODEL
    [ "$kind" = plain ] && model=$PLAIN_MODEL
    state="$WORK/state-$kind-$round"
    "$MNEMO" init --state "$state" --model "$model" > /dev/null
    start=$(date +%s.%N)
    "$MNEMO" facts add --state "$state" --jsonl "$WORK/facts.jsonl" > /dev/null
    end=$(date +%s.%N)
    seconds=$(python3 -c "print(f'{$end - $start:.3f}')")
    total[$kind]=$(python3 -c "print(${total[$kind]} + $seconds)")
    memories=$( [ -f "$state/memories.db" ] && du -k "$state/memories.db" | cut -f1 || echo 0)
    echo "round $round $kind: $FACTS facts in $seconds s = $(python3 -c "print(f'{$FACTS / $seconds:.1f}')") facts/s" \
         "(facts.db $(du -k "$state/facts.db" | cut -f1) KiB, memories.db $memories KiB)"
  done
done
python3 -c "print(f'memory model / plain model time: {${total[memory]} / ${total[plain]}:.2f}x')"
