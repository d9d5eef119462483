#pragma once
// Shared by the benchmark programs: BLIP-2 configurations at full size and result checks.

#include <qformer/models/presets.hpp>
#include <qformer/qformer.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <stdexcept>

namespace bench {

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
