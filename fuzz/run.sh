#!/usr/bin/env bash
# `make fuzz`: configures and builds the libFuzzer targets in build-fuzz/ (clang-14, fuzz/CMakeLists.txt),
# then runs each for FUZZ_SECONDS (default 60) on a copy of its seed corpus, one after the other, one process
# each, after the regression tests (build-fuzz/fuzz_regression_test) and, per target, a replay of its past
# findings (fuzz/regressions/<target>/*). Prints per target the executions, exec/s, coverage and new corpus
# units; exits non-zero when a regression test or replay fails or a target finds a crash (the input is kept
# under build-fuzz/artifacts/<target>/, the report in build-fuzz/logs/<target>.log).
#
#   FUZZ_SECONDS=10 make fuzz              every target, 10 s each
#   FUZZ_TARGETS="http_front parse" make fuzz
#   FUZZ_TARGETS=index_file_crafted make fuzz   the on-demand target (docs/FUZZING.md), not in the default list
#   FUZZ_ARGS="-runs=1000000" make fuzz    extra libFuzzer flags for every target
#   FUZZ_BUILD=build-fuzz                  the build directory
#   MNEMO_MAIN_BUILD=build                 the main build whose libraries the `routes` target links
#
# `routes` (every HTTP route handler, fuzz/routes_fuzz.cc) is a CMake project of its own, fuzz/routes/, built
# in build-fuzz/routes/ only when it is asked for (the default list has it): api/ compiled by clang with
# LibTorch's headers, the rest linked from the main build's static libraries (`make fuzz` builds build/ first).
#
# New inputs found during a run go to build-fuzz/corpus/<target>/, never into fuzz/corpus/ (the committed
# seeds); copy interesting ones there by hand (keep them small).
set -uo pipefail
cd "$(dirname "$0")/.."

build=${FUZZ_BUILD:-build-fuzz}
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"api_keys datastore_manifest datastore_open documents gpt_config http_front index_file index_spec json_fields parse routes safetensors state_json tokenizer_encode tokenizer_files"}
extra=${FUZZ_ARGS:-}

command -v clang++-14 >/dev/null || { echo "fuzz: clang++-14 not found (scripts/install-deps.sh installs it)" >&2; exit 1; }
build_start=$(date +%s)
cmake -S fuzz -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14 >/dev/null || exit 1
cmake --build "$build" -j "${JOBS:-$(nproc)}" || exit 1
echo "fuzz: $build built in $(( $(date +%s) - build_start )) s"
if [[ " $targets " == *" routes "* ]]; then
  main_build=${MNEMO_MAIN_BUILD:-build}
  for lib in eval retriever lm memory indexes util; do
    [[ -f "$main_build/$lib/libmnemo_$lib.a" ]] && continue
    echo "fuzz: routes: $main_build/$lib/libmnemo_$lib.a is missing; building $main_build/ (make build)" >&2
    cmake -S . -B "$main_build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
    cmake --build "$main_build" -j "${JOBS:-$(nproc)}" || exit 1
    break
  done
  routes_start=$(date +%s)
  cmake -S fuzz/routes -B "$build/routes" -G Ninja -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14 \
    -DMNEMO_MAIN_BUILD="$(realpath "$main_build")" >/dev/null || exit 1
  cmake --build "$build/routes" -j "${JOBS:-$(nproc)}" || exit 1
  echo "fuzz: $build/routes built in $(( $(date +%s) - routes_start )) s"
fi

# Dictionaries: the JSON one for every target whose input is JSON or holds JSON.
dict_for() {
  case "$1" in
    http_front) echo fuzz/http_front.dict ;;
    index_spec|index_file|index_file_crafted) echo fuzz/index.dict ;;
    api_keys) echo fuzz/api_keys.dict ;;
    json_fields|state_json|datastore_manifest|datastore_open|documents|gpt_config|safetensors|tokenizer_files) echo fuzz/json.dict ;;
    routes) cat fuzz/json.dict fuzz/routes.dict > "$build/routes.dict" && echo "$build/routes.dict" ;;  # bodies and targets
  esac
}

scratch=$(mktemp -d /dev/shm/mnemo-fuzz-run.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export MNEMO_FUZZ_SCRATCH=$scratch
# FAISS (OpenMP) on one thread: the inputs are tiny, and threads would only add noise.
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
# A hostile size field may ask for more memory than exists: malloc then returns null as in production
# instead of ASan aborting (ASan's operator new still aborts; the index targets replace it with one that
# throws bad_alloc, as production's does: fuzz/index_file_fuzz.cc).
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
# The regression tests of past findings first, under the same sanitizers (tests/fuzz_regression_test.cc).
if [[ -x "$build/fuzz_regression_test" ]]; then
  if "$build/fuzz_regression_test" --gtest_brief=1 > "$build/fuzz_regression_test.log" 2>&1; then
    echo "fuzz: regression tests passed: $(grep -oE 'PASSED[^0-9]*[0-9]+' "$build/fuzz_regression_test.log" | grep -oE '[0-9]+$' | tail -1)"
  else
    grep -E 'FAILED|Failure|ERROR|runtime error' "$build/fuzz_regression_test.log" | head -20 >&2
    echo "fuzz: regression tests FAILED (see $build/fuzz_regression_test.log)" >&2
    failed+=(fuzz_regression_test)
  fi
fi
printf '%-20s %12s %8s %10s %8s %8s %6s  %s\n' target executions seconds exec/s cov ft new result > "$build/fuzz-summary.txt"
for t in $targets; do
  bin="$build/${t}_fuzz"
  [[ $t == routes ]] && bin="$build/routes/routes_fuzz"  # its own project (fuzz/routes/)
  [[ -x "$bin" ]] || { echo "fuzz: no target $t" >&2; failed+=("$t"); continue; }
  corpus="$build/corpus/$t"
  artifacts="$build/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  seeds=$t
  [[ $t == index_file_crafted ]] && seeds=index_file  # the same files, checksums rewritten by the target
  cp -n fuzz/corpus/"$seeds"/* "$corpus"/ 2>/dev/null
  log="$build/logs/$t.log"
  mkdir -p "$(dirname "$log")"
  # Past findings first (fuzz/regressions/<target>/*; unfixed-faiss/ below it holds FAISS's own crashes).
  if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
    mapfile -t replay < <(find "fuzz/regressions/$t" -maxdepth 1 -type f | sort)
    if ! "$bin" "${replay[@]}" > "$build/logs/$t.regressions.log" 2>&1; then
      echo "fuzz: $t: a past finding fails again (see $build/logs/$t.regressions.log)" >&2
      failed+=("$t")
      continue
    fi
  fi
  dict=$(dict_for "$t")
  args=(-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" -timeout=25 -rss_limit_mb=4096)
  [[ -n "$dict" ]] && args+=(-dict="$dict")
  echo "== $t: ${seconds} s"
  start=$(date +%s%N)
  # shellcheck disable=SC2086
  "$bin" "${args[@]}" $extra "$corpus" > "$log" 2>&1
  rc=$?
  wall=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  runs=$(grep -oE 'stat::number_of_executed_(runs|units): *[0-9]+' "$log" | grep -o '[0-9]*$' | tail -1)
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  units=$(grep -o 'stat::new_units_added: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*')
  ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*')
  if [[ $rc -eq 0 ]]; then result=ok; else result="CRASH (rc $rc, see $log)"; failed+=("$t"); fi
  line=$(printf '%-20s %12s %8s %10s %8s %8s %6s  %s' "$t" "${runs:-?}" "$wall" "${eps:-?}" "${cov:-?}" "${ft:-?}" "${units:-?}" "$result")
  echo "$line"
  echo "$line" >> "$build/fuzz-summary.txt"
  if [[ $rc -ne 0 ]]; then
    grep -E 'ERROR|FUZZ_CHECK|runtime error|SUMMARY|Test unit written' "$log" | head -8 >&2
  fi
  rm -rf "${scratch:?}"/*
done
echo
cat "$build/fuzz-summary.txt"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
