#pragma once
/// \file
/// backend<cpu>: the CPU implementation of every op in ops/ops.hpp. Shapes are already checked by ops.hpp.

#include "../../core/context.hpp"
#include "attention.hpp"
#include "eigen_maps.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"
#include "threads.hpp"

#include <algorithm>
#include <cstdint>
#include <span>

namespace qformer {

template <class D>
struct backend;

template <>
struct backend<cpu> {
  template <class T>
  static void linear(context<cpu>& ctx, view<const T> x, view<const T> w, view<const T> b, view<T> y) {
    cpu_detail::linear<T>(ctx, x, w, b, y);
  }

  template <class T>
  static void layer_norm(context<cpu>& ctx, view<const T> x, view<const T> w, view<const T> b, float eps, view<T> y) {
    typename context<cpu>::scope scope(ctx);
    const float* wf = cpu_detail::as_float(ctx, w).data();
    const float* bf = cpu_detail::as_float(ctx, b).data();
    unary(ctx, x, y, [&](const float* in, index_t n, float* out) { cpu_detail::layer_norm_row(in, wf, bf, eps, n, out); });
  }

  template <class T>
  static void rms_norm(context<cpu>& ctx, view<const T> x, view<const T> w, float eps, view<T> y) {
    typename context<cpu>::scope scope(ctx);
    const float* wf = cpu_detail::as_float(ctx, w).data();
    unary(ctx, x, y, [&](const float* in, index_t n, float* out) { cpu_detail::rms_norm_row(in, wf, eps, n, out); });
  }

  template <class T>
  static void gelu_tanh(context<cpu>& ctx, view<const T> x, view<T> y) {
    unary(ctx, x, y, cpu_detail::gelu_tanh_row);
  }

  template <class T>
  static void scale(context<cpu>& ctx, view<const T> x, float factor, view<T> y) {
    unary(ctx, x, y, [factor](const float* in, index_t n, float* out) {
      for (index_t i = 0; i < n; ++i) out[i] = in[i] * factor;
    });
  }

  template <class T>
  static void mul(context<cpu>& ctx, view<const T> a, view<const T> b, view<T> y) {
    binary(ctx, a, b, y, cpu_detail::mul_row);
  }

  template <class T>
  static void gelu_erf(context<cpu>& ctx, view<const T> x, view<T> y) {
    unary(ctx, x, y, cpu_detail::gelu_erf_row);
  }
  template <class T>
  static void relu(context<cpu>& ctx, view<const T> x, view<T> y) {
    unary(ctx, x, y, cpu_detail::relu_row);
  }

  template <class T>
  static void add(context<cpu>& ctx, view<const T> a, view<const T> b, view<T> y) {
    binary(ctx, a, b, y, cpu_detail::add_row);
  }

  template <class T>
  static void copy(context<cpu>&, view<const T> src, view<T> dst) {
    for (index_t r = 0; r < src.rows(); ++r) std::copy_n(src.row(r), src.cols(), dst.row(r));
  }

  template <class S, class T>
  static void cast(context<cpu>&, view<const S> src, view<T> dst) {
    for (index_t r = 0; r < src.rows(); ++r)
      for (index_t c = 0; c < src.cols(); ++c) dst.row(r)[c] = from_float<T>(to_float(src.row(r)[c]));
  }

  template <class T>
  static void upload(context<cpu>&, std::span<const T> host, view<T> dst) {
    std::copy(host.begin(), host.end(), dst.data());
  }

  template <class T>
  static void download(context<cpu>& ctx, view<const T> src, view<T> host) {
    copy<T>(ctx, src, host);
  }

  template <class T>
  static void embedding(context<cpu>&, view<const T> table, std::span<const std::int64_t> ids, view<T> out) {
    for (std::size_t n = 0; n < ids.size(); ++n) std::copy_n(table.row(ids[n]), table.cols(), out.row(static_cast<index_t>(n)));
  }

  template <class T>
  static void embedding_of_device_ids(context<cpu>& ctx, view<const T> table, view<const std::int64_t> ids, view<T> out) {
    embedding<T>(ctx, table, std::span<const std::int64_t>(ids.data(), static_cast<std::size_t>(ids.numel())), out);
  }

  template <class T>
  static void write_cache_rows(context<cpu>&, view<const T> k_rows, view<const T> v_rows, view<T> cache_k, view<T> cache_v,
                               view<const std::int64_t> past) {
    const index_t at = static_cast<index_t>(*past.data());
    for (index_t b = 0; b < k_rows.rows(); ++b) {
      std::copy_n(k_rows.row(b), k_rows.cols(), cache_k[b].row(at));
      std::copy_n(v_rows.row(b), v_rows.cols(), cache_v[b].row(at));
    }
  }

  /// No fused epilogue on the CPU: linear, then the activation and the add.
  template <class T>
  static void linear_fused(context<cpu>& ctx, view<const T> x, view<const T> w, view<const T> b, std::optional<activation> act,
                           view<const T> residual, view<T> y) {
    ops::detail::linear_then_epilogue<T, cpu>(ctx, x, w, b, act, residual, y);
  }

  template <class T>
  static void attention(context<cpu>& ctx, view<const T> q, view<const T> k, view<const T> v, view<const float> mask,
                        index_t heads, float scale, view<T> out) {
    cpu_detail::attention<T>(ctx, q, k, v, mask, heads, scale, out);
  }

  template <class T>
  static void attention_over_cache(context<cpu>& ctx, view<const T> q, view<const T> k_cache, view<const T> v_cache, index_t keys,
                                   view<const float> mask, index_t heads, float scale, view<T> out,
                                   view<const std::int64_t> past_on_device) {
    const index_t bound = keys;
    if (!past_on_device.empty()) keys = static_cast<index_t>(*past_on_device.data()) + 1;  // one query row
    if (q.dim(1) <= cpu_detail::few_queries)  // decoding steps: all batch rows and heads in one team
      return cpu_detail::attention_over_cache<T>(ctx, q, k_cache, v_cache, keys, mask, heads, scale, out);
    for (index_t b = 0; b < q.dim(0); ++b) {
      view<const float> mask_b;
      if (!mask.empty()) mask_b = mask.dim(0) == 1 ? mask : mask.slice(b, 1);
      if (!mask_b.empty() && keys != bound)  // one mask row per batch row (ops checked): its first `keys`
        mask_b = view<const float>(mask_b.data(), mask_b.rank() == 3 ? shape{1, 1, keys} : shape{1, 1, 1, keys});
      cpu_detail::attention<T>(ctx, q[b].unsqueeze(), k_cache[b].slice(0, keys).unsqueeze(), v_cache[b].slice(0, keys).unsqueeze(),
                               mask_b, heads, scale, out[b].unsqueeze());
    }
  }

  template <class T>
  static void patchify(context<cpu>&, view<const float> pixels, index_t patch, view<T> patches) {
    const index_t B = pixels.dim(0), C = pixels.dim(1), H = pixels.dim(2), W = pixels.dim(3);
    const index_t gh = H / patch, gw = W / patch;
    for (index_t b = 0; b < B; ++b)
      for (index_t py = 0; py < gh; ++py)
        for (index_t px = 0; px < gw; ++px) {
          T* dst = patches.row((b * gh + py) * gw + px);
          for (index_t c = 0; c < C; ++c)
            for (index_t ky = 0; ky < patch; ++ky) {
              const float* src = pixels.data() + ((b * C + c) * H + py * patch + ky) * W + px * patch;
              for (index_t kx = 0; kx < patch; ++kx) dst[(c * patch + ky) * patch + kx] = from_float<T>(src[kx]);
            }
        }
  }

 private:
  /// Threads for a row-wise op over rows x cols elements: all of Eigen's setting once there is enough work.
  static int row_threads(index_t rows, index_t cols) {
    return rows * cols >= (index_t{1} << 15) ? cpu_detail::kernel_threads(rows) : 1;
  }

  /// y = row_fn(a, b) by rows; bf16 / fp16 rows widened to float one row at a time in per-thread scratch.
  template <class T, class RowFn>
  static void binary(context<cpu>& ctx, view<const T> a, view<const T> b, view<T> y, RowFn row_fn) {
    const index_t n = a.cols();
    const int threads = row_threads(a.rows(), n);
    if constexpr (std::is_same_v<T, float>) {
      cpu_detail::parallel_for(a.rows(), threads, [&](index_t r, index_t) { row_fn(a.row(r), b.row(r), n, y.row(r)); });
    } else {
      typename context<cpu>::scope scope(ctx);
      view<float> scratch = ctx.alloc<float>({threads, 3 * n});
      cpu_detail::parallel_for(a.rows(), threads, [&](index_t r, index_t slot) {
        float* af = scratch.row(slot);
        float* bf = af + n;
        float* yf = bf + n;
        cpu_detail::widen_row(a.row(r), n, af);
        cpu_detail::widen_row(b.row(r), n, bf);
        row_fn(af, bf, n, yf);
        cpu_detail::narrow_row(yf, n, y.row(r));
      });
    }
  }

  /// y = row_fn(x) by rows, as binary().
  template <class T, class RowFn>
  static void unary(context<cpu>& ctx, view<const T> x, view<T> y, RowFn row_fn) {
    const index_t n = x.cols();
    const int threads = row_threads(x.rows(), n);
    if constexpr (std::is_same_v<T, float>) {
      cpu_detail::parallel_for(x.rows(), threads, [&](index_t r, index_t) { row_fn(x.row(r), n, y.row(r)); });
    } else {
      typename context<cpu>::scope scope(ctx);
      view<float> scratch = ctx.alloc<float>({threads, 2 * n});
      cpu_detail::parallel_for(x.rows(), threads, [&](index_t r, index_t slot) {
        float* xf = scratch.row(slot);
        float* yf = xf + n;
        cpu_detail::widen_row(x.row(r), n, xf);
        row_fn(xf, n, yf);
        cpu_detail::narrow_row(yf, n, y.row(r));
      });
    }
  }
};

}  // namespace qformer
