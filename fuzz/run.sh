#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan) and runs each for a while.
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      (default 60 s, every target)
#   fuzz/run.sh ci                                    (CI: a fixed seed and a fixed number of executions per
#                                                     target, about a minute each, so a run is reproducible)
# Environment: FUZZ_BUILD (build folder, default build-fuzz). The growing corpus lives in $FUZZ_BUILD/corpus/<target> (seeded from fuzz/corpus/<target>),
# crashes in $FUZZ_BUILD/artifacts/<target>/. A crash fails the script: minimise it, fix the bug, and commit the
# input to fuzz/regressions/<target>/ (the ordinary test build replays that folder).
# Prints one line per target: executions, coverage (edges) and features, corpus size.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
declare -A ci_runs=([safetensors]=600000 [checkpoint_index]=60000 [config]=150000 [tokenizer]=10000 [image]=60000)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(safetensors checkpoint_index config tokenizer image)
build=${FUZZ_BUILD:-build-fuzz}

cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQFORMER_FUZZ=ON \
  -DQFORMER_BUILD_TESTS=OFF -DQFORMER_BUILD_TOOLS=OFF -DQFORMER_BUILD_EXAMPLES=OFF -DQFORMER_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" --target $(printf 'fuzz_%s ' "${targets[@]}")

status=0
printf '%-18s %12s %8s %8s %8s %s\n' target executions exec/s cov ft corpus
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  log="$build/fuzz_$t.log"
  if [ "$seconds" = ci ]; then
    rm -rf "$build/corpus/$t" && mkdir -p "$build/corpus/$t"
    budget=(-seed=1 -runs="${ci_runs[$t]}")
  else
    budget=(-max_total_time="$seconds")
  fi
  if ! "$build/fuzz/fuzz_$t" "$build/corpus/$t" "fuzz/corpus/$t" "${budget[@]}" -timeout=10 \
       -rss_limit_mb=3072 -max_len=65536 -print_final_stats=1 -artifact_prefix="$build/artifacts/$t/" >"$log" 2>&1; then
    status=1
    echo "fuzz_$t FAILED: see $log and $build/artifacts/$t/" >&2
    grep -E "ERROR|SUMMARY|runtime error" "$log" | head -5 >&2 || true
  fi
  execs=$(grep -oE 'stat::number_of_executed_units: +[0-9]+' "$log" | awk '{print $2}' | tail -1 || true)
  rate=$(grep -oE 'stat::average_exec_per_sec: +[0-9]+' "$log" | awk '{print $2}' | tail -1 || true)
  last=$(grep -E '(DONE|INITED|pulse|NEW|REDUCE) +cov' "$log" | tail -1 || true)
  cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$last")
  ft=$(sed -nE 's/.*ft: ([0-9]+).*/\1/p' <<<"$last")
  printf '%-18s %12s %8s %8s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$(ls "$build/corpus/$t" | wc -l) files"
done
exit $status
