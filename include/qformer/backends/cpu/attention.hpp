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

/// dst (cols, rows; row stride ld_dst) = src (rows, cols; row stride ld_src) transposed, in blocks of 16 x 16
/// (both sides' lines stay in L1 while a block moves). 16-bit elements: a head's V for attention_bf16.
inline void transpose_16bit(const std::uint16_t* src, index_t ld_src, index_t rows, index_t cols, std::uint16_t* dst,
                            index_t ld_dst) {
  for (index_t r0 = 0; r0 < rows; r0 += 16)
    for (index_t c0 = 0; c0 < cols; c0 += 16) {
      const index_t r1 = std::min(rows, r0 + 16), c1 = std::min(cols, c0 + 16);
      for (index_t c = c0; c < c1; ++c)
        for (index_t r = r0; r < r1; ++r) dst[c * ld_dst + r] = src[r * ld_src + c];
    }
}

#ifdef QFORMER_HAVE_AVX512_KERNELS
/// bf16 attention on the bf16 GEMM kernels (AMX tiles, else avx512_bf16), computed as transformers computes it
/// in bf16. Per (batch, head), on one thread of the team (pairs split across the threads):
///   scores (Lq, Lk) = Q K^T                     bf16 products, fp32 sums, kept in fp32
///   P = softmax(scores * scale + mask) by rows  fp32, then rounded to bf16 (softmax_row_to_bf16)
///   out (Lq, dh) = P V                          fp32 sums rounded to bf16 once (V transposed into scratch)
/// Shapes as attention(); callers check use_avx512_kernels<bf16>().
inline void attention_bf16(context<cpu>& ctx, view<const bf16> q, view<const bf16> k, view<const bf16> v,
                           view<const float> mask, index_t heads, float scale, view<bf16> out) {
  const index_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), dh = q.dim(2) / heads, pairs = B * heads;
  const ops::mask_layout m = mask.empty() ? ops::mask_layout{} : ops::mask_layout::of(mask);
  const int threads = kernel_threads(pairs);
  // A thread's scratch in 32-bit words, each piece 64-byte aligned: scores (Lq, Lk) fp32, P (Lq, Lk) bf16, V^T
  // (dh, Lk) bf16, then the two products' scratch.
  const auto whole_lines = [](index_t words) { return (words + 15) / 16 * 16; };
  const index_t score_words = whole_lines(Lq * Lk), p_words = whole_lines((Lq * Lk + 1) / 2),
                vt_words = whole_lines((dh * Lk + 1) / 2);
  const index_t gemm_words =
      whole_lines(std::max(bf16_gemm_scratch<float>(Lq, Lk, dh, 1), bf16_gemm_scratch<bf16>(Lq, dh, Lk, 1)));
  view<float> all_scratch = ctx.alloc<float>({threads, score_words + p_words + vt_words + gemm_words});
  parallel_for(pairs, threads, [&](index_t pair, index_t slot) {
    const index_t b = pair / heads, h = pair % heads;
    float* words = all_scratch.row(slot);
    const view<float> scores(words, {Lq, Lk});
    const view<bf16> p(reinterpret_cast<bf16*>(words + score_words), {Lq, Lk});
    const view<bf16> vt(reinterpret_cast<bf16*>(words + score_words + p_words), {dh, Lk});
    auto* gemm_scratch = reinterpret_cast<std::uint32_t*>(words + score_words + p_words + vt_words);
    const view<const bf16> vh = v[b].columns(h * dh, dh);
    bf16_gemm<float>(q[b].columns(h * dh, dh), k[b].columns(h * dh, dh), nullptr, scores, gemm_scratch, 1);
    for (index_t i = 0; i < Lq; ++i)
      avx512::softmax_row_to_bf16(scores.row(i), Lk, scale, mask.empty() ? nullptr : mask.row(m.row(b, h, i)), p.row(i));
    transpose_16bit(reinterpret_cast<const std::uint16_t*>(vh.data()), vh.row_stride(), Lk, dh,
                    reinterpret_cast<std::uint16_t*>(vt.data()), Lk);
    bf16_gemm<bf16>(p, vt, nullptr, out[b].columns(h * dh, dh), gemm_scratch, 1);
  });
}
#endif

/// q (B, Lq, H*dh), k / v (B, Lk, H*dh), mask additive (see ops::mask_layout) or empty, out (B, Lq, H*dh).
/// fp32, fp16 and short bf16 queries compute in fp32 (bf16 and fp16 widened); bf16 queries of more than
/// gemv_max_rows positions go to attention_bf16 where the CPU has avx512_bf16.
template <class T>
void attention(context<cpu>& ctx, view<const T> q, view<const T> k, view<const T> v, view<const float> mask,
               index_t heads, float scale, view<T> out) {
  typename context<cpu>::scope scope(ctx);
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if constexpr (std::is_same_v<T, bf16>)
    if (q.dim(1) > avx512::gemv_max_rows && use_avx512_kernels<bf16>())
      return attention_bf16(ctx, q, k, v, mask, heads, scale, out);
#endif
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

/// Queries of at most this many positions per batch row attend over a KV cache with attention_over_cache's
/// row kernels (a decoding step has one); longer ones (a prompt's prefill) with attention()'s GEMMs.
inline constexpr index_t few_queries = 4;

/// q (B, Lq, H*dh) with Lq <= few_queries over the first `keys` rows of each batch row's caches k_cache, v_cache
/// (B, capacity, H*dh); mask as in attention() with its rows `mask.cols()` long (the first `keys` read); out (B,
/// Lq, H*dh). The cache is read in place, in the order it lies in memory: one unit of work is a batch row and a
/// contiguous group of its heads (all of them once there are at least as many rows as threads), and walks the
/// cached rows one after the other, each row's heads side by side. In fp32 (bf16 / fp16 widened in registers):
///   scores[g][i][j] = q_i,g · k_j,g   (dot_segments over key row j)
///   softmax of scores * scale + mask  (softmax_rows, as attention())
///   out_i,g = sum_j p[g][i][j] v_j,g  (add_scaled_segments over value row j, in j order)
template <class T>
void attention_over_cache(context<cpu>& ctx, view<const T> q, view<const T> k_cache, view<const T> v_cache, index_t keys,
                          view<const float> mask, index_t heads, float scale, view<T> out) {
  typename context<cpu>::scope scope(ctx);
  const index_t B = q.dim(0), Lq = q.dim(1), C = q.dim(2), dh = C / heads, capacity = k_cache.dim(1);
  const ops::mask_layout m = mask.empty() ? ops::mask_layout{} : ops::mask_layout::of(mask);
  const int threads = B * heads * Lq * keys * dh >= 16384 ? kernel_threads(B * heads) : 1;
  const index_t groups = std::min<index_t>(heads, (threads + B - 1) / B), units = B * groups;
  const index_t group_heads_max = (heads + groups - 1) / groups;
  // Per thread: the group's queries and outputs (Lq, group heads * dh) and scores (group heads, Lq, keys), floats.
  const index_t per_thread = 2 * Lq * group_heads_max * dh + group_heads_max * Lq * keys;
  view<float> all_scratch = ctx.alloc<float>({std::min<index_t>(threads, units), per_thread});
  parallel_for(units, std::min<index_t>(threads, units), [&](index_t unit, index_t slot) {
    const index_t b = unit / groups, g = unit % groups;
    const index_t h0 = heads * g / groups, group_heads = heads * (g + 1) / groups - h0, width = group_heads * dh;
    float* queries = all_scratch.row(slot);     // (Lq, width)
    float* outputs = queries + Lq * width;      // (Lq, width)
    float* scores = outputs + Lq * width;       // (group_heads, Lq, keys)
    const T* k_rows = k_cache.data() + b * capacity * C + h0 * dh;  // key row j at k_rows + j * C
    const T* v_rows = v_cache.data() + b * capacity * C + h0 * dh;
    for (index_t i = 0; i < Lq; ++i) widen_row(q.row(b * Lq + i) + h0 * dh, width, queries + i * width);
    for (index_t j = 0; j < keys; ++j)
      for (index_t i = 0; i < Lq; ++i)
        dot_segments<T>(queries + i * width, k_rows + j * C, group_heads, dh, scores + i * keys + j, Lq * keys);
    for (index_t h = 0; h < group_heads; ++h)
      softmax_rows(view<float>(scores + h * Lq * keys, {Lq, keys}), mask, m, b, h0 + h, scale);
    std::fill_n(outputs, Lq * width, 0.0f);
    for (index_t j = 0; j < keys; ++j)
      for (index_t i = 0; i < Lq; ++i)
        add_scaled_segments<T>(scores + i * keys + j, Lq * keys, v_rows + j * C, group_heads, dh, outputs + i * width);
    for (index_t i = 0; i < Lq; ++i) narrow_row(outputs + i * width, width, out.row(b * Lq + i) + h0 * dh);
  });
}

}  // namespace qformer::cpu_detail
