#pragma once
// Shared by the benchmark programs: BLIP-2 configurations at full size and result checks.

#include <qformer/backends/cpu/peak_probe.hpp>
#include <qformer/models/presets.hpp>
#include <qformer/qformer.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <stdexcept>

namespace bench {

/// A clear error instead of SIGILL when the binary was built for instructions this CPU lacks (QFORMER_NATIVE).
inline const bool cpu_checked = (qformer::require_compiled_cpu_features(), true);

/// This machine's peaks at Eigen's thread count, probed once (about a second) in the same run as the benchmarks.
inline const qformer::probe::machine_peaks& peaks() {
  static const qformer::probe::machine_peaks p = qformer::probe::measure(Eigen::nbThreads());
  return p;
}

/// Counters for `flops` per iteration: GFLOP/s and the fraction of the probed peak of the dtype's instruction.
template <class T>
void report_flops(benchmark::State& state, double flops) {
  const double peak = std::is_same_v<T, float> ? peaks().fp32_gflops : peaks().bf16_gflops;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (peak > 0) state.counters["of_peak"] = benchmark::Counter(flops * 1e-9 / peak, benchmark::Counter::kIsIterationInvariantRate);
}

/// Salesforce/blip2-opt-2.7b at full size.
inline qformer::Blip2Config blip2_opt_2_7b() { return qformer::presets::blip2_opt_2_7b(); }

/// Every benchmark checks its output before timing: finite and not all zero.
template <class T>
void require_sane(qformer::view<const T> v, const char* what) {
  bool nonzero = false;
  for (qformer::index_t r = 0; r < v.rows(); ++r)
    for (qformer::index_t c = 0; c < v.cols(); ++c) {
      const float x = qformer::to_float(v.row(r)[c]);
      if (!std::isfinite(x)) throw std::runtime_error(std::string(what) + ": non-finite output");
      nonzero |= x != 0.0f;
    }
  if (!nonzero) throw std::runtime_error(std::string(what) + ": all-zero output");
}

}  // namespace bench
