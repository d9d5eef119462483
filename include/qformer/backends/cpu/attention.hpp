#pragma once
/// \file
/// CPU multi-head attention: per (batch, head), scores = Q K^T * scale + mask in an arena buffer of
/// (Lq, Lk) floats, softmax by rows, then P V. (batch, head) pairs are split across OpenMP threads, each with
/// its own score buffer, so the largest temporary is threads x (Lq, Lk), never (heads, Lq, Lk).

#include "eigen_maps.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"
#include "threads.hpp"
#include "../../ops/ops.hpp"

#include <algorithm>

namespace qformer::cpu_detail {

/// scores (Lq, Lk) of head h of batch row b <- softmax(scores * scale + mask) by rows.
inline void softmax_rows(view<float> scores, view<const float> mask, const ops::mask_layout& m, index_t b, index_t h,
                         float scale) {
  for (index_t i = 0; i < scores.rows(); ++i) {
    float* s = scores.row(i);
    for (index_t j = 0; j < scores.cols(); ++j) s[j] *= scale;
    if (!mask.empty()) add_row(s, mask.row(m.row(b, h, i)), scores.cols(), s);
    softmax_row(s, scores.cols());
  }
}

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
    // (batch, head) pairs are independent: split across the threads, one score buffer each. With the AVX-512
    // kernels, Q K^T and P V are two matmul_nt calls (V transposed per head into scratch); otherwise Eigen.
    const int threads = Lq * Lk * dh >= 16384 ? kernel_threads(pairs) : 1;
    const bool kernels = use_avx512_kernels<float>();
#ifdef QFORMER_HAVE_AVX512_KERNELS
    const index_t extra = kernels ? dh * Lk + std::max(matmul_nt_scratch(Lq, Lk, dh), matmul_nt_scratch(Lq, dh, Lk)) : 0;
#else
    const index_t extra = 0;
#endif
    view<float> all_scratch = ctx.alloc<float>({threads, Lq * Lk + extra});
    parallel_for(pairs, threads, [&](index_t pair, index_t slot) {
      const index_t b = pair / heads, h = pair % heads;
      float* scratch = all_scratch.row(slot);
      view<float> scores(scratch, {Lq, Lk});
      const float* qh = q.row(b * Lq) + h * dh;
      const float* kh = k.row(b * Lk) + h * dh;
      const float* vh = v.row(b * Lk) + h * dh;
      float* oh = out.row(b * Lq) + h * dh;
#ifdef QFORMER_HAVE_AVX512_KERNELS
      if (kernels) {
        float* vt = scratch + Lq * Lk;  // (dh, Lk)
        float* packed = vt + dh * Lk;
        matmul_nt(qh, q.row_stride(), kh, k.row_stride(), nullptr, scratch, Lk, Lq, Lk, dh, packed);
        softmax_rows(scores, mask, m, b, h, scale);
        avx512::transpose_into_panel(vh, v.row_stride() * 4, Lk, Lk, dh, vt);
        matmul_nt(scratch, Lk, vt, Lk, nullptr, oh, out.row_stride(), Lq, dh, Lk, packed);
        return;
      }
#endif
      auto S = map(scores);
      auto Q = cmap(qh, Lq, dh, q.row_stride());
      auto K = cmap(kh, Lk, dh, k.row_stride());
      auto V = cmap(vh, Lk, dh, v.row_stride());
      S.noalias() = Q * K.transpose();
      softmax_rows(scores, mask, m, b, h, scale);
      map(oh, Lq, dh, out.row_stride()).noalias() = S * V;
    });
  }
}

}  // namespace qformer::cpu_detail
