#!/usr/bin/env bash
# The GPU path end to end, for a machine with an NVIDIA GPU. The development machine has none, and Debian's
# libtorch-dev and libfaiss-dev are CPU-only, so this is where the GPU code is built and run for real.
#
# Usage: bench/gpu-check.sh [DATASTORE]        (e.g. data/bench-knnlm/gcide-pq32)
#   TORCH_DIR=/opt/libtorch   a CUDA build of LibTorch (prepended to CMAKE_PREFIX_PATH)
#   CMAKE_PREFIX_PATH=...     where a FAISS built with FAISS_ENABLE_GPU=ON (and other packages) are installed
#   BUILD_DIR=build-gpu  THREADS=1  TOLERANCE=1e-3 (relative, on perplexities)  TEXT=data/corpus/gcide/valid.txt
#   MODEL=data/models/default  the model of the real-data comparison
#   TESTS=0                   build mnemo only, and skip the tests
#   DS_TEXT=FILE              build DATASTORE (Flat) from FILE first when it does not exist
# bench/gpu-device.sh runs this on a machine whose only GPU library is PyTorch's CUDA LibTorch.
#
# Steps: print the GPU; configure BUILD_DIR with -DMNEMO_FAISS_GPU=AUTO and build mnemo and its tests; say
# which GPU parts the build has (CUDA LibTorch for --device cuda, and --gpu-index: FAISS GPU, or LibTorch's
# exact search for Flat indexes); run the
# device and GPU tests; then eval ppl, base LM and kNN-LM, on the CPU and on the GPU (--device cuda
# --gpu-index 0, whichever parts exist) for a tiny model trained here on docs/ and, when DATASTORE and
# data/models/default exist, for the real ones, printing tokens/s and perplexities. Exits non-zero when a
# test fails or a GPU perplexity differs from the CPU one by more than TOLERANCE.
set -euo pipefail
cd "$(dirname "$0")/.."

gpu=""
if command -v nvidia-smi >/dev/null; then
  gpu=$(nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1 || true)
fi
if [ -z "$gpu" ]; then
  echo "gpu-check: no NVIDIA GPU (nvidia-smi is missing or lists none); run this on a machine with one" >&2
  exit 1
fi
echo "GPU: $gpu"

build=${BUILD_DIR:-build-gpu}
prefix=${CMAKE_PREFIX_PATH:-}
[ -n "${TORCH_DIR:-}" ] && prefix="$TORCH_DIR${prefix:+;$prefix}"
mkdir -p "$build"
echo "configuring $build (MNEMO_FAISS_GPU=AUTO${prefix:+, CMAKE_PREFIX_PATH=$prefix}); log: $build/gpu-check-configure.log"
cmake -S . -B "$build" -G Ninja -DMNEMO_FAISS_GPU=AUTO ${prefix:+"-DCMAKE_PREFIX_PATH=$prefix"} \
  > "$build/gpu-check-configure.log" 2>&1 || { tail -30 "$build/gpu-check-configure.log"; exit 1; }
grep -h "FAISS GPU search:" "$build/gpu-check-configure.log" || true
echo "building ${TESTS:+(TESTS=$TESTS) }mnemo and its tests; log: $build/gpu-check-build.log"
targets=(mnemo mnemo_tests)
[ "${TESTS:-1}" = 0 ] && targets=(mnemo)
ninja -C "$build" -k 0 "${targets[@]}" > "$build/gpu-check-build.log" 2>&1 || {
  grep -E "error|FAILED" "$build/gpu-check-build.log" | head -60; tail -20 "$build/gpu-check-build.log"; exit 1; }
mnemo=("$build/mnemo" --threads "${THREADS:-1}")

# What this build can do on the GPU. Both flags are checked before anything is loaded, so probing with a
# model that does not exist answers at once: an error naming the flag means the part is absent.
probe=$("${mnemo[@]}" score --model /nonexistent --text x --device cuda 2>&1 || true)
if grep -q -- "--device" <<<"$probe"; then
  torch_cuda=0; echo "not available: CUDA LibTorch (${probe#mnemo: }); the LM runs on the CPU below"
else
  torch_cuda=1; echo "available: CUDA LibTorch (--device cuda)"
fi
probe=$("${mnemo[@]}" score --model /nonexistent --text x --datastore /nonexistent --gpu-index 0 2>&1 || true)
if grep -q -- "--gpu-index" <<<"$probe"; then
  faiss_gpu=0; echo "not available: GPU search (${probe#mnemo: }); the index is searched on the CPU below"
else
  faiss_gpu=1; echo "available: GPU search (--gpu-index 0: FAISS GPU, or LibTorch's exact search for Flat indexes)"
fi
lm_flags=() gpu_flags=()
if [ "$torch_cuda" = 1 ]; then lm_flags=(--device cuda); fi
if [ "$faiss_gpu" = 1 ]; then gpu_flags=(--gpu-index 0); fi
gpu_flags+=("${lm_flags[@]}")

if [ "${TESTS:-1}" != 0 ]; then
  echo "== device and GPU tests"
  ctest --test-dir "$build" -R 'Device|Gpu|Cuda|Unavailable|TorchFlat' --output-on-failure | tail -60
fi

# compare LABEL MODEL TEXT DATASTORE KNN_FLAGS...: eval ppl on the CPU and with gpu_flags; prints tokens/s and
# perplexities, and fails when the GPU run's perplexities are not within TOLERANCE of the CPU run's.
compare() {
  local label=$1 model=$2 text=$3 ds=$4
  shift 4
  echo "== $label: eval ppl, CPU vs ${gpu_flags[*]}"
  local cpu gpu cpu_base gpu_base
  cpu=$("${mnemo[@]}" eval ppl --model "$model" --text-file "$text" --datastore "$ds" "$@" --json)
  gpu=$("${mnemo[@]}" eval ppl --model "$model" --text-file "$text" --datastore "$ds" "$@" "${gpu_flags[@]}" --json)
  cpu_base=$("${mnemo[@]}" eval ppl --model "$model" --text-file "$text" --json)
  gpu_base=$("${mnemo[@]}" eval ppl --model "$model" --text-file "$text" "${lm_flags[@]}" --json)
  python3 - "$cpu" "$gpu" "$cpu_base" "$gpu_base" "${TOLERANCE:-1e-3}" <<'PY'
import json, sys
cpu, gpu, cpu_base, gpu_base = (json.loads(a) for a in sys.argv[1:5])
tolerance = float(sys.argv[5])
print(f"  base LM alone   CPU {cpu_base['tokens_per_second']:10.0f} tokens/s   GPU {gpu_base['tokens_per_second']:10.0f} tokens/s")
print(f"  base + kNN-LM   CPU {cpu['tokens_per_second']:10.0f} tokens/s   GPU {gpu['tokens_per_second']:10.0f} tokens/s")
bad = []
for name in ("base", "knn"):
    a, b = cpu[name]["perplexity"], gpu[name]["perplexity"]
    rel = abs(a - b) / a
    print(f"  {name:6} perplexity CPU {a:.6f}  GPU {b:.6f}  relative difference {rel:.2e}")
    if rel > tolerance: bad.append(name)
if bad:
    print(f"gpu-check: {', '.join(bad)} perplexity differs between CPU and GPU by more than {tolerance}", file=sys.stderr)
    sys.exit(1)
PY
}

if [ ${#gpu_flags[@]} -eq 0 ]; then
  echo "not available: no GPU part in this build (see above); skipping the CPU/GPU comparisons"
  exit 0
fi

# A tiny model trained here (seconds, on the CPU: training has no GPU path) on docs/, with a Flat datastore
# of the same text: needs nothing from data/.
tiny="$build/gpu-check-tiny"
rm -rf "$tiny" && mkdir -p "$tiny"
cat docs/*.md README.md > "$tiny/text.txt"
"${mnemo[@]}" train --corpus "$tiny/text.txt" --valid "$tiny/text.txt" --out "$tiny/model" --config tiny \
  --vocab-size 400 --steps 60 --batch-size 8 --seq-len 64 --quiet --json > /dev/null
"${mnemo[@]}" datastore build --model "$tiny/model" --text-file "$tiny/text.txt" --out "$tiny/ds" --index Flat --quiet \
  "${lm_flags[@]}" --json > /dev/null
compare "tiny model, Flat datastore of its own text" "$tiny/model" "$tiny/text.txt" "$tiny/ds" --k 64 --lambda 0.25

ds=${1:-}
model=${MODEL:-data/models/default}
text=${TEXT:-data/corpus/gcide/valid.txt}
# DS_TEXT: build DATASTORE (Flat) from this text first, running the LM where the comparisons do.
if [ -n "${DS_TEXT:-}" ] && [ -n "$ds" ] && [ ! -d "$ds" ]; then
  echo "== building a Flat datastore of $DS_TEXT at $ds (${lm_flags[*]:-CPU})"
  "${mnemo[@]}" datastore build --model "$model" --text-file "$DS_TEXT" --out "$ds" --index Flat --quiet \
    "${lm_flags[@]}" --json
fi
if [ -n "$ds" ] && [ -d "$ds" ] && [ -d "$model" ] && [ -f "$text" ]; then
  compare "$model over $text with $ds" "$model" "$text" "$ds" --k 1024 --lambda 0.25 --nprobe 8
else
  echo "not available: the real-data comparison needs DATASTORE (given: '${ds}'), $model and $text"
fi
echo "gpu-check: done"
