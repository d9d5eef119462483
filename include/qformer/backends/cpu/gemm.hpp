#pragma once
/// \file
/// CPU linear layer: y = x W^T + b through Eigen's GEMM, fp32 accumulation for every dtype.

#include "eigen_maps.hpp"

#include <algorithm>

namespace qformer::cpu_detail {

/// x (N, in), w (out, in), b (out) or empty, y (N, out).
/// Non-float weights are widened to float in panels of output rows so the scratch stays small.
template <class T>
void linear(context<cpu>& ctx, view<const T> x, view<const T> w, view<const T> b, view<T> y) {
  const index_t N = x.rows(), in = x.cols(), out = w.rows();
  typename context<cpu>::scope scope(ctx);
  if constexpr (std::is_same_v<T, float>) {
    auto Y = map(y);
    Y.noalias() = cmap(x) * cmap(w).transpose();
    if (!b.empty()) Y.rowwise() += const_row_vector_map(b.data(), out);
  } else {
    view<const float> xf = as_float(ctx, x);
    view<float> yf = ctx.alloc<float>({N, out});
    const index_t panel = std::max<index_t>(1, std::min<index_t>(out, (index_t{1} << 18) / std::max<index_t>(in, 1)));
    view<float> wf = ctx.alloc<float>({panel, in});
    for (index_t o0 = 0; o0 < out; o0 += panel) {
      const index_t n = std::min(panel, out - o0);
      for (index_t r = 0; r < n; ++r)
        for (index_t c = 0; c < in; ++c) wf.row(r)[c] = to_float(w.row(o0 + r)[c]);
      map(yf).middleCols(o0, n).noalias() = cmap(xf) * cmap(wf.data(), n, in, in).transpose();
    }
    if (!b.empty())
      for (index_t r = 0; r < N; ++r)
        for (index_t o = 0; o < out; ++o) yf.row(r)[o] += to_float(b.data()[o]);
    store<T>(yf, y);
  }
}

}  // namespace qformer::cpu_detail
