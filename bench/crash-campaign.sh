#!/usr/bin/env bash
# Kill campaign through HTTP: kills `mnemo serve` N times with SIGKILL under mixed load (THREADS client
# threads adding facts, deleting acknowledged ones and asking for completions; an audit every 20 rounds)
# and after each restart checks the acknowledgements against GET /v1/facts: an acknowledged add whose delete
# was never attempted must be listed, an acknowledged delete never again; requests the kill cut are counted
# as unknown and resolved by the listing. `mnemo fsck` every FSCK_EVERY kills and at the end, the action log
# against the listing, verify-deleted on a few deleted facts, a SIGTERM stop. Target: 1,000 kills, 0 lost,
# 0 resurrected. A fresh state each run (the default model, no datastore); about 2.5 s per kill on 2 cores.
# Usage: bench/crash-campaign.sh [N=1000] [PORT=8093]      Environment: THREADS=3 FSCK_EVERY=50 SEED=<time>
# Output: data/crash-campaign/summary.txt (also printed), rounds.txt (a line per kill), ledger.jsonl (every
# acknowledgement, flushed before it counts), serve.log; exit 1 on a lost, resurrected or phantom fact, a
# failed fsck, check or verify-deleted, or a server that does not come back.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000}
port=${2:-8093}
args=(--rounds "$n" --port "$port" --threads "${THREADS:-3}" --fsck-every "${FSCK_EVERY:-50}")
[ -n "${SEED:-}" ] && args+=(--seed "$SEED")
[ -x build/mnemo ] || { echo "crash-campaign: build/mnemo is missing (make)" >&2; exit 2; }
# The campaign runs a copy: a rebuild of build/ while it runs must not be exec'd half-linked.
mkdir -p data
cp build/mnemo data/crash-campaign.mnemo
MNEMO_BINARY=$PWD/data/crash-campaign.mnemo exec python3 bench/crash-campaign.py "${args[@]}"
