#!/usr/bin/env bash
# kNN-LM cost relative to the base LM, measured in one run: batch scoring (eval ppl on the first 100 KB of
# GCIDE valid) and single-stream generation (128 greedy tokens), base LM and kNN-LM runs interleaved,
# REPEATS rounds (default 3), medians reported with the ratio to the base LM's median.
# Usage: bench/knnlm-speed.sh DATASTORE [DATASTORE...]   (e.g. data/bench-scale/gcide-ivf4096pq32-1000000)
# Knobs (environment): KS="1024 64" k values; NPROBES="8" IVF lists probed; NO_OVERLAP=1 adds runs with
# --no-overlap (searches after each batch's forward pass instead of beside the next one); THREADS=N sets
# mnemo's --threads for every run (default 1: OpenMP threads; OpenBLAS keeps its own pool).
set -euo pipefail
cd "$(dirname "$0")/.."
mnemo="build/mnemo --threads ${THREADS:-1}"
model=data/models/default
text=/tmp/mnemo-bench-valid-100k.txt
head -c 100000 data/corpus/gcide/valid.txt > $text
field() { sed -E "s/.*\"$1\":([0-9.e+-]+).*/\1/"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

names=(base) ; args=("")
for ds in "$@"; do
  for k in ${KS:-1024 64}; do
    for np in ${NPROBES:-8}; do
      names+=("$(basename "$ds") k=$k nprobe=$np"); args+=("--datastore $ds --k $k --lambda 0.25 --nprobe $np")
      if [[ -n "${NO_OVERLAP:-}" ]]; then
        names+=("$(basename "$ds") k=$k nprobe=$np --no-overlap"); args+=("--datastore $ds --k $k --lambda 0.25 --nprobe $np --no-overlap")
      fi
    done
  done
done
declare -A rates ppls gens
for ((r = 0; r < ${REPEATS:-3}; r++)); do
  for i in "${!names[@]}"; do
    # shellcheck disable=SC2086  # args[i] is a word list
    out=$($mnemo eval ppl --model $model --text-file $text --json ${args[i]})
    rates[$i]+=" $(field tokens_per_second <<< "$out")"
    ppls[$i]=$(sed -E 's/.*"knn":\{[^}]*"perplexity":([0-9.]+).*/\1/; s/.*"perplexity":([0-9.]+).*/\1/' <<< "$out")
    if [[ "${args[i]}" != *--no-overlap* ]]; then
      # shellcheck disable=SC2086
      gens[$i]+=" $($mnemo generate --model $model --prompt "Harbour, n. A place" --max-tokens 128 --temperature 0 \
                    --json ${args[i]} | field ms_per_token)"
    fi
  done
done
base_rate=$(median <<< "${rates[0]}"); base_gen=$(median <<< "${gens[0]}")
printf '%-52s %9s %6s %10s %13s %6s\n' config "tokens/s" cost perplexity "gen ms/token" cost
for i in "${!names[@]}"; do
  rate=$(median <<< "${rates[$i]}"); gen=-; gen_cost=-
  if [[ -n "${gens[$i]:-}" ]]; then
    gen=$(median <<< "${gens[$i]}")
    gen_cost=$(awk -v a="$gen" -v b="$base_gen" 'BEGIN {printf "%.2fx", a / b}')
    gen=$(awk -v a="$gen" 'BEGIN {printf "%.3f", a}')
  fi
  printf '%-52s %9.0f %5.2fx %10.3f %13s %6s\n' "${names[$i]}" "$rate" "$(awk -v a="$base_rate" -v b="$rate" 'BEGIN {print a / b}')" \
    "${ppls[$i]}" "$gen" "$gen_cost"
done
echo "medians of ${REPEATS:-3} interleaved runs each; base scoring runs: ${rates[0]# }; base generation runs: ${gens[0]# }"
