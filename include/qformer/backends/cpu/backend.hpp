#pragma once
/// \file
/// backend<cpu>: the CPU implementation of every op in ops/ops.hpp. Shapes are already checked by ops.hpp.

#include "../../core/context.hpp"
#include "attention.hpp"
#include "eigen_maps.hpp"
#include "elementwise.hpp"
#include "gemm.hpp"

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
    if constexpr (std::is_same_v<T, float>) {
      for (index_t r = 0; r < x.rows(); ++r) cpu_detail::layer_norm_row(x.row(r), w.data(), b.data(), eps, x.cols(), y.row(r));
    } else {
      typename context<cpu>::scope scope(ctx);
      view<float> yf = ctx.alloc<float>(y.shape());
      layer_norm<float>(ctx, cpu_detail::as_float(ctx, x), cpu_detail::as_float(ctx, w), cpu_detail::as_float(ctx, b),
                        eps, yf);
      cpu_detail::store<T>(yf, y);
    }
  }

  template <class T>
  static void rms_norm(context<cpu>& ctx, view<const T> x, view<const T> w, float eps, view<T> y) {
    if constexpr (std::is_same_v<T, float>) {
      for (index_t r = 0; r < x.rows(); ++r) cpu_detail::rms_norm_row(x.row(r), w.data(), eps, x.cols(), y.row(r));
    } else {
      typename context<cpu>::scope scope(ctx);
      view<float> yf = ctx.alloc<float>(y.shape());
      rms_norm<float>(ctx, cpu_detail::as_float(ctx, x), cpu_detail::as_float(ctx, w), eps, yf);
      cpu_detail::store<T>(yf, y);
    }
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
  static void embedding(context<cpu>&, view<const T> table, std::span<const std::int64_t> ids, view<T> out) {
    for (std::size_t n = 0; n < ids.size(); ++n) std::copy_n(table.row(ids[n]), table.cols(), out.row(static_cast<index_t>(n)));
  }

  template <class T>
  static void attention(context<cpu>& ctx, view<const T> q, view<const T> k, view<const T> v, view<const float> mask,
                        index_t heads, float scale, view<T> out) {
    cpu_detail::attention<T>(ctx, q, k, v, mask, heads, scale, out);
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
  template <class T, class RowFn>
  static void binary(context<cpu>& ctx, view<const T> a, view<const T> b, view<T> y, RowFn row_fn) {
    if constexpr (std::is_same_v<T, float>) {
      for (index_t r = 0; r < a.rows(); ++r) row_fn(a.row(r), b.row(r), a.cols(), y.row(r));
    } else {
      typename context<cpu>::scope scope(ctx);
      view<const float> af = cpu_detail::as_float(ctx, a), bf = cpu_detail::as_float(ctx, b);
      view<float> yf = ctx.alloc<float>(y.shape());
      for (index_t r = 0; r < a.rows(); ++r) row_fn(af.row(r), bf.row(r), a.cols(), yf.row(r));
      cpu_detail::store<T>(yf, y);
    }
  }

  template <class T, class RowFn>
  static void unary(context<cpu>& ctx, view<const T> x, view<T> y, RowFn row_fn) {
    if constexpr (std::is_same_v<T, float>) {
      for (index_t r = 0; r < x.rows(); ++r) row_fn(x.row(r), x.cols(), y.row(r));
    } else {
      typename context<cpu>::scope scope(ctx);
      view<const float> xf = cpu_detail::as_float(ctx, x);
      view<float> yf = ctx.alloc<float>(y.shape());
      for (index_t r = 0; r < x.rows(); ++r) row_fn(xf.row(r), x.cols(), yf.row(r));
      cpu_detail::store<T>(yf, y);
    }
  }
};

}  // namespace qformer
