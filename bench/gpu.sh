#!/usr/bin/env bash
# The CUDA backend's checks that need a GPU, as one run: build for sm_90, the CUDA tests (every op and every
# fixture on the GPU), then `qformer bench --device cuda` and transformers' BLIP-2 on the same card in the same
# run (bench/compare_transformers.py --device cuda). Logs and JSON go to $OUT (default ./gpu-results); the last
# lines printed are the test summary and the ratio table.
#
#   bench/gpu.sh prepare   on a Debian 12 machine with the packages of .ci/run and nvcc: copies the header-only
#                          dependencies into .vendor/ (for a GPU machine without them) and builds build-cuda/
#   bench/gpu.sh run       on the GPU machine: reuses build-cuda/'s programs when they start there, else builds
#                          them with the headers of .vendor/; then tests and benchmarks
#
# Environment: OUT (results folder), GPU_BATCHES (default 1,32), GPU_REPEATS (default 20), GPU_DTYPES (bf16),
# GPU_COMPARE=0 (qformer alone, no transformers), GPU_PROFILE=1 (per-kernel times from Nsight Compute; the
# cases "stage batch passes;..." in GPU_PROFILE_CASES).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=build-cuda
export PATH="$PATH:/usr/local/cuda/bin"

configure_and_build() {
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DQFORMER_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DQFORMER_BUILD_TESTS=ON -DQFORMER_BUILD_BENCH=OFF -DQFORMER_BUILD_EXAMPLES=ON "$@" >/dev/null &&
    cmake --build "$BUILD" --target qformer_cuda_tests qformer_cli
}

case "${1:-run}" in
prepare)
  set -e
  rm -rf .vendor && mkdir -p .vendor/include .vendor/lib/cmake
  cp -r /usr/include/eigen3 /usr/include/xsimd /usr/include/nlohmann /usr/include/stb /usr/include/doctest .vendor/include/
  cp -r /usr/lib/cmake/doctest .vendor/lib/cmake/
  # Debian's doctest package names /usr as its prefix; the copy finds its headers relative to itself.
  sed -i 's|^set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
    .vendor/lib/cmake/doctest/doctestTargets.cmake
  configure_and_build
  echo "prepared: .vendor/ and $BUILD/ (carry both to the GPU machine)"
  ;;
run)
  OUT="${OUT:-$PWD/gpu-results}"
  mkdir -p "$OUT"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv >"$OUT/gpu.txt" 2>&1
  cat "$OUT/gpu.txt"
  "$BUILD/tests/qformer_cuda_tests" --list-test-cases >/dev/null 2>&1
  listed=$?  # 0, or 77 where no GPU is visible; 126 / 127 when the program cannot start here
  if { [ "$listed" != 0 ] && [ "$listed" != 77 ]; } || ! "$BUILD/tools/qformer" --help >/dev/null 2>&1; then
    echo "gpu.sh: the carried programs do not start here: building"
    rm -rf "$BUILD"
    configure_and_build -DQFORMER_VENDOR_DIR="$PWD/.vendor" -Ddoctest_DIR="$PWD/.vendor/lib/cmake/doctest" \
      >"$OUT/build.txt" 2>&1 || { tail -30 "$OUT/build.txt"; exit 1; }
  fi
  QFORMER_TEST_DATA="$PWD/tests/data" QFORMER_MODELS_DIR="$PWD/models" "$BUILD/tests/qformer_cuda_tests" --duration=true >"$OUT/tests.txt" 2>&1
  tests_status=$?
  tail -4 "$OUT/tests.txt"
  if [ "${GPU_COMPARE:-1}" = 1 ]; then  # qformer and transformers on this card, in this run
    python3 bench/compare_transformers.py --device cuda --qformer "$BUILD/tools/qformer" --dtypes "${GPU_DTYPES:-bf16}" \
      --batches "${GPU_BATCHES:-1,32}" --repeats "${GPU_REPEATS:-20}" --out "$OUT/compare.json" >"$OUT/compare.txt" 2>"$OUT/compare-log.txt"
    bench_status=$?
    grep -v "^transformers: blip2" "$OUT/compare-log.txt" | tail -25 || true
    cat "$OUT/compare.txt"
  else  # qformer alone
    "$BUILD/tools/qformer" bench --device cuda --dtypes "${GPU_DTYPES:-bf16}" --batches "${GPU_BATCHES:-1,32}" \
      --repeats "${GPU_REPEATS:-20}" >"$OUT/bench.txt" 2>"$OUT/bench-log.txt"
    bench_status=$?
    cat "$OUT/bench.txt"
  fi
  if [ "${GPU_PROFILE:-0}" = 1 ] && command -v ncu >/dev/null; then  # per-kernel time (Nsight Compute), one stage each
    IFS=';' read -ra cases <<<"${GPU_PROFILE_CASES:-vision 32 4;vision 1 4;qformer 1 7;decode 1 3}"
    for case in "${cases[@]}"; do
      set -- $case
      ncu --csv --metrics gpu__time_duration.sum --log-file "$OUT/ncu-$1-$2.csv" "$BUILD/tools/qformer" bench --device cuda \
        --dtypes bf16 --stages "$1" --batches "$2" --repeats 1 >/dev/null 2>&1
      echo "== $1 batch $2: kernel time per pass (ncu; passes: $3)"
      python3 bench/ncu_summary.py "$OUT/ncu-$1-$2.csv" --passes "$3" --top 14 | tee "$OUT/ncu-$1-$2.txt"
      rm -f "$OUT/ncu-$1-$2.csv"
    done
  fi
  echo "tests: exit $tests_status, benchmark: exit $bench_status"
  [ "$tests_status" = 0 ] && [ "$bench_status" = 0 ]
  ;;
*)
  echo "usage: bench/gpu.sh prepare|run" >&2
  exit 2
  ;;
esac
