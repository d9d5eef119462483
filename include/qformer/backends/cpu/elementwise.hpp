#pragma once
/// \file
/// CPU row kernels: layer norm, GELU (exact erf), ReLU, residual add, softmax, and a decoding step's attention
/// (dot_segments, add_scaled_segments). xsimd for float rows (the compiler's target: SSE2 in a portable build); GELU,
/// softmax and the attention rows take rows_avx512.hpp's AVX-512 versions where the CPU has them.

#include "../../core/cpu_features.hpp"
#include "../../core/tensor.hpp"
#include "rows_avx512.hpp"

#include <xsimd/xsimd.hpp>

#include <cmath>
#include <type_traits>

namespace qformer::cpu_detail {

using fbatch = xsimd::batch<float>;
inline constexpr index_t simd_width = static_cast<index_t>(fbatch::size);

inline float sum_row(const float* x, index_t n) {
  fbatch acc(0.0f);
  index_t i = 0;
  for (; i + simd_width <= n; i += simd_width) acc += fbatch::load_unaligned(x + i);
  float s = xsimd::hadd(acc);
  for (; i < n; ++i) s += x[i];
  return s;
}

/// One row of nn.LayerNorm: two passes (mean, then centred variance) for accuracy.
inline void layer_norm_row(const float* x, const float* w, const float* b, float eps, index_t n, float* y) {
  const float mean = sum_row(x, n) / float(n);
  fbatch acc(0.0f);
  const fbatch m(mean);
  index_t i = 0;
  for (; i + simd_width <= n; i += simd_width) {
    fbatch d = fbatch::load_unaligned(x + i) - m;
    acc = xsimd::fma(d, d, acc);
  }
  float var = xsimd::hadd(acc);
  for (; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.0f / std::sqrt(var / float(n) + eps);
  const fbatch vinv(inv);
  i = 0;
  for (; i + simd_width <= n; i += simd_width) {
    fbatch v = (fbatch::load_unaligned(x + i) - m) * vinv;
    xsimd::fma(v, fbatch::load_unaligned(w + i), fbatch::load_unaligned(b + i)).store_unaligned(y + i);
  }
  for (; i < n; ++i) y[i] = (x[i] - mean) * inv * w[i] + b[i];
}

/// Whether the AVX-512 row kernels run here (the choice of backends/cpu/gemm.hpp's kernels does not apply).
inline bool use_avx512_rows() {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  static const bool on = host_cpu().has_avx512_bf16();
  return on;
#else
  return false;
#endif
}

inline void gelu_erf_row(const float* x, index_t n, float* y) {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (use_avx512_rows()) return avx512::gelu_erf_row(x, n, y);
#endif
  const fbatch half(0.5f), one(1.0f), rsqrt2(0.70710678118654752440f);
  index_t i = 0;
  for (; i + simd_width <= n; i += simd_width) {
    fbatch v = fbatch::load_unaligned(x + i);
    (half * v * (one + xsimd::erf(v * rsqrt2))).store_unaligned(y + i);
  }
  for (; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752440f));
}

/// One row of T5LayerNorm: mean of squares in float, then w * x / sqrt(ms + eps).
inline void rms_norm_row(const float* x, const float* w, float eps, index_t n, float* y) {
  fbatch acc(0.0f);
  index_t i = 0;
  for (; i + simd_width <= n; i += simd_width) {
    fbatch v = fbatch::load_unaligned(x + i);
    acc = xsimd::fma(v, v, acc);
  }
  float ms = xsimd::hadd(acc);
  for (; i < n; ++i) ms += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ms / float(n) + eps);
  for (i = 0; i + simd_width <= n; i += simd_width)
    (fbatch::load_unaligned(x + i) * fbatch(inv) * fbatch::load_unaligned(w + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = x[i] * inv * w[i];
}

inline void gelu_tanh_row(const float* x, index_t n, float* y) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  const fbatch half(0.5f), one(1.0f), vk(k), c(0.044715f);
  index_t i = 0;
  for (; i + simd_width <= n; i += simd_width) {
    fbatch v = fbatch::load_unaligned(x + i);
    (half * v * (one + xsimd::tanh(vk * (v + c * v * v * v)))).store_unaligned(y + i);
  }
  for (; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + std::tanh(k * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
}

inline void mul_row(const float* a, const float* b, index_t n, float* y) {
  index_t i = 0;
  for (; i + simd_width <= n; i += simd_width)
    (fbatch::load_unaligned(a + i) * fbatch::load_unaligned(b + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = a[i] * b[i];
}

inline void relu_row(const float* x, index_t n, float* y) {
  const fbatch zero(0.0f);
  index_t i = 0;
  for (; i + simd_width <= n; i += simd_width) xsimd::max(fbatch::load_unaligned(x + i), zero).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

inline void add_row(const float* a, const float* b, index_t n, float* y) {
  index_t i = 0;
  for (; i + simd_width <= n; i += simd_width)
    (fbatch::load_unaligned(a + i) + fbatch::load_unaligned(b + i)).store_unaligned(y + i);
  for (; i < n; ++i) y[i] = a[i] + b[i];
}

/// In-place softmax of one row: exp(x - max) / sum.
inline void softmax_row(float* x, index_t n) {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (use_avx512_rows()) return avx512::softmax_row(x, n);
#endif
  index_t i = 0;
  fbatch vmax(-INFINITY);
  for (; i + simd_width <= n; i += simd_width) vmax = xsimd::max(vmax, fbatch::load_unaligned(x + i));
  float mx = -INFINITY;
  alignas(64) float lanes[fbatch::size];
  vmax.store_aligned(lanes);
  for (float l : lanes) mx = std::max(mx, l);
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  const fbatch m(mx);
  fbatch acc(0.0f);
  for (i = 0; i + simd_width <= n; i += simd_width) {
    fbatch e = xsimd::exp(fbatch::load_unaligned(x + i) - m);
    e.store_unaligned(x + i);
    acc += e;
  }
  float sum = xsimd::hadd(acc);
  for (; i < n; ++i) sum += (x[i] = std::exp(x[i] - mx));
  const fbatch inv(1.0f / sum);
  for (i = 0; i + simd_width <= n; i += simd_width) (fbatch::load_unaligned(x + i) * inv).store_unaligned(x + i);
  for (; i < n; ++i) x[i] *= 1.0f / sum;
}

namespace portable {

/// out[s * out_stride] = a[s n, s n + n) · b[s n, s n + n) for s < segments (b: float, bf16 or fp16).
template <class T>
void dot_segments(const float* a, const T* b, index_t segments, index_t n, float* out, index_t out_stride) {
  for (index_t s = 0; s < segments; ++s) {
    const float* as = a + s * n;
    const T* bs = b + s * n;
    float sum = 0.0f;
    index_t i = 0;
    if constexpr (std::is_same_v<T, float>) {
      fbatch acc(0.0f);
      for (; i + simd_width <= n; i += simd_width) acc = xsimd::fma(fbatch::load_unaligned(as + i), fbatch::load_unaligned(bs + i), acc);
      sum = xsimd::hadd(acc);
    }
    for (; i < n; ++i) sum += as[i] * to_float(bs[i]);
    out[s * out_stride] = sum;
  }
}

/// y[s n, s n + n) += p[s * p_stride] * b[s n, s n + n) for s < segments (b: float, bf16 or fp16).
template <class T>
void add_scaled_segments(const float* p, index_t p_stride, const T* b, index_t segments, index_t n, float* y) {
  for (index_t s = 0; s < segments; ++s) {
    const float ps = p[s * p_stride];
    const T* bs = b + s * n;
    float* ys = y + s * n;
    index_t i = 0;
    if constexpr (std::is_same_v<T, float>) {
      for (; i + simd_width <= n; i += simd_width)
        xsimd::fma(fbatch(ps), fbatch::load_unaligned(bs + i), fbatch::load_unaligned(ys + i)).store_unaligned(ys + i);
    }
    for (; i < n; ++i) ys[i] += ps * to_float(bs[i]);
  }
}

}  // namespace portable

/// out[s * out_stride] = a[s n, s n + n) · b[s n, s n + n) for s < segments, in fp32 (b: float, bf16 or fp16).
template <class T>
void dot_segments(const float* a, const T* b, index_t segments, index_t n, float* out, index_t out_stride) {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (use_avx512_rows()) return avx512::dot_segments<T>(a, b, segments, n, out, out_stride);
#endif
  portable::dot_segments<T>(a, b, segments, n, out, out_stride);
}

/// y[s n, s n + n) += p[s * p_stride] * b[s n, s n + n) for s < segments, in fp32 (b: float, bf16 or fp16).
template <class T>
void add_scaled_segments(const float* p, index_t p_stride, const T* b, index_t segments, index_t n, float* y) {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (use_avx512_rows()) return avx512::add_scaled_segments<T>(p, p_stride, b, segments, n, y);
#endif
  portable::add_scaled_segments<T>(p, p_stride, b, segments, n, y);
}

}  // namespace qformer::cpu_detail
