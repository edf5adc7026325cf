#!/usr/bin/env bash
# Clean and incremental build times. Clean: empty build directory, ccache disabled (a worst case for a
# new checkout). Incremental: one touched .cc file in lm/ (relinks the library, the binary and tests).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build-timing
rm -rf "$dir"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
start=$(date +%s%N)
CCACHE_DISABLE=1 cmake --build "$dir" -j "$(nproc)" >/dev/null
clean=$(( ($(date +%s%N) - start) / 1000000 ))
touch lm/sampler.cc
start=$(date +%s%N)
CCACHE_DISABLE=1 cmake --build "$dir" -j "$(nproc)" >/dev/null
incremental=$(( ($(date +%s%N) - start) / 1000000 ))
echo "clean build: ${clean} ms  incremental (touch lm/sampler.cc): ${incremental} ms  cores: $(nproc)"
rm -rf "$dir"
