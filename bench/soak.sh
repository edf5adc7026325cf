#!/usr/bin/env bash
# Soak: one `mnemo serve` (default model, no datastore, a fresh state, --workers 1, niced) under an hour of
# mixed load from THREADS client threads: fact adds (unique texts) and deletes holding ~600-900 live facts
# after a ramp, completions (8-16 tokens; some with logprobs, n=2 or stream), scores of short texts, fact
# listings and lookups, verify-deleted now and then, /metrics, /tokenize, and a small audit every
# AUDIT_EVERY seconds (the first one inside the warm-up). Every 10 s the server's VmRSS, VmHWM, open fds
# (/proc/<pid>/fd), threads, live facts, requests and errors are sampled. Warm-up: the first 10% of the run
# (at most 5 min, at least 30 s). At the end the server gets SIGTERM and must exit 0; then every fact is
# listed and compared with the client's acknowledgements. Target: resident memory and fds flat after the
# warm-up (RSS growth < 5%), no unexpected error. The binary is copied to $OUT/mnemo first, so a rebuild
# of build/mnemo during the run does not touch the server under test.
# Usage: bench/soak.sh [SECONDS=3600] [PORT=8094]
#        Environment: THREADS=3 THINK=0.02 (s between a thread's requests) AUDIT_EVERY=600 SAMPLE_EVERY=10
#        FD_SLACK=5 (fds allowed above the warm-up's) SEED=<time> OUT=data/soak (emptied first; one run per
#        folder at a time: a second run on a busy folder exits 2)
# Output: $OUT/summary.txt (also printed), samples.csv (a row per sample), serve.log, progress.txt, errors.txt
# (every unexpected reply in full); exit 1 if RSS at the end is > 5% above the end of the warm-up, fds grew
# by more than FD_SLACK, the server died or did not exit 0 on SIGTERM, a fact was lost, or any unexpected
# (non-2xx or cut) reply; the max RSS after the warm-up > 5% above it is flagged (WARN) without failing.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-3600}
port=${2:-8094}
[ -x build/mnemo ] || { echo "soak: build/mnemo is missing (make)" >&2; exit 2; }
[ -f data/models/default/config.json ] || { echo "soak: data/models/default is missing" >&2; exit 2; }
args=(--seconds "$seconds" --port "$port" --threads "${THREADS:-3}" --think "${THINK:-0.02}"
      --audit-every "${AUDIT_EVERY:-600}" --sample-every "${SAMPLE_EVERY:-10}" --fd-slack "${FD_SLACK:-5}")
[ -n "${SEED:-}" ] && args+=(--seed "$SEED")
[ -n "${OUT:-}" ] && args+=(--out "$OUT")
exec python3 bench/soak.py "${args[@]}"  # soak.py nices itself, and so the server, by 5
