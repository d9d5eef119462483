#pragma once
// Shared by the benchmark programs: BLIP-2 configurations at full size and result checks.

#include <qformer/qformer.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <stdexcept>

namespace bench {

/// The vision tower and Q-Former of Salesforce/blip2-opt-2.7b: transformers' defaults are exactly its sizes.
inline qformer::Blip2Config blip2_opt_2_7b() {
  qformer::Blip2Config c = qformer::parse_blip2_config(R"({"text_config": {"model_type": "opt", "hidden_size": 2560, "num_attention_heads": 32, "ffn_dim": 10240, "num_hidden_layers": 32, "vocab_size": 50304}})", "blip2-opt-2.7b");
  return c;
}

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

/// FLOPs of one linear (N, in) -> (N, out).
inline double linear_flops(double n, double in, double out) { return 2.0 * n * in * out; }
/// FLOPs of attention scores and weighted sum for L_q queries over L_k keys of width C.
inline double attention_flops(double lq, double lk, double c) { return 4.0 * lq * lk * c; }

}  // namespace bench
