#pragma once
/// \file
/// CPU multi-head attention: per (batch, head), scores = Q K^T * scale + mask in an arena buffer of
/// (Lq, Lk) floats, softmax by rows, then P V. (batch, head) pairs are split across OpenMP threads, each with
/// its own score buffer, so the largest temporary is threads x (Lq, Lk), never (heads, Lq, Lk).

#include "eigen_maps.hpp"
#include "elementwise.hpp"
#include "../../ops/ops.hpp"

#include <algorithm>
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace qformer::cpu_detail {

/// q (B, Lq, H*dh), k / v (B, Lk, H*dh), mask additive (see ops::mask_layout) or empty, out (B, Lq, H*dh).
template <class T>
void attention(context<cpu>& ctx, view<const T> q, view<const T> k, view<const T> v, view<const float> mask,
               index_t heads, float scale, view<T> out) {
  typename context<cpu>::scope scope(ctx);
  if constexpr (!std::is_same_v<T, float>) {
    view<float> of = ctx.alloc<float>(out.shape());
    attention<float>(ctx, as_float(ctx, q), as_float(ctx, k), as_float(ctx, v), mask, heads, scale, of);
    store<T>(of, out);
  } else {
    const index_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), dh = q.dim(2) / heads, pairs = B * heads;
    const ops::mask_layout m = mask.empty() ? ops::mask_layout{} : ops::mask_layout::of(mask);
    // (batch, head) pairs are independent: split across the threads, one score buffer each.
    const int threads = static_cast<int>(std::max<index_t>(1, std::min<index_t>(Eigen::nbThreads(), pairs)));
    view<float> all_scores = ctx.alloc<float>({threads * Lq, Lk});
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1 && Lq * Lk * dh >= 16384)
#endif
    for (index_t pair = 0; pair < pairs; ++pair) {
      const index_t b = pair / heads, h = pair % heads;
#if defined(_OPENMP)
      const index_t slot = omp_get_thread_num();
#else
      const index_t slot = 0;
#endif
      view<float> scores = all_scores.slice(slot * Lq, Lq);
      auto S = map(scores);
      auto Q = cmap(q.row(b * Lq) + h * dh, Lq, dh, q.row_stride());
      auto K = cmap(k.row(b * Lk) + h * dh, Lk, dh, k.row_stride());
      auto V = cmap(v.row(b * Lk) + h * dh, Lk, dh, v.row_stride());
      S.noalias() = (Q * K.transpose()) * scale;
      for (index_t i = 0; i < Lq; ++i) {
        float* s = scores.row(i);
        if (!mask.empty()) add_row(s, mask.row(m.row(b, h, i)), Lk, s);
        softmax_row(s, Lk);
      }
      map(out.row(b * Lq) + h * dh, Lq, dh, out.row_stride()).noalias() = S * V;
    }
  }
}

}  // namespace qformer::cpu_detail
