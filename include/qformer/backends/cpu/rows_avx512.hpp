#pragma once
/// \file
/// AVX-512 versions of the row kernels that cost the most outside the GEMMs: GELU (erf), softmax, the bf16 <->
/// float conversions around every bf16 row op, and a decoding step's attention (dot_segments,
/// add_scaled_segments). Compiled with function target attributes like the GEMM
/// kernels, so the default (portable) build has them too; elementwise.hpp and backend.hpp call them where
/// cpu_features says the CPU runs them, the xsimd / scalar code elsewhere.
///   exp: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial), 2^n by vscalefps; within
///        2 ulp on [-87, 88], 0 below, +inf above.
///   erf: Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), the form PyTorch's vectorised CPU erf uses.

#include "gemm_avx512.hpp"

#include <algorithm>
#include <cmath>

namespace qformer::cpu_detail::avx512 {

#ifdef QFORMER_HAVE_AVX512_KERNELS

QFORMER_TARGET_AVX512 inline __m512 exp_ps(__m512 x) {
  const __m512 hi = _mm512_set1_ps(88.3762626647949f), lo = _mm512_set1_ps(-88.3762626647949f);
  const __mmask16 over = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // x - n ln2, ln2 in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  __m512 e = _mm512_scalef_ps(p, n);
  e = _mm512_mask_mov_ps(e, over, _mm512_set1_ps(INFINITY));
  return _mm512_mask_mov_ps(e, under, _mm512_setzero_ps());
}

QFORMER_TARGET_AVX512 inline __m512 erf_ps(__m512 x) {
  const __m512 sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0f));
  const __m512 a = _mm512_andnot_ps(_mm512_set1_ps(-0.0f), x);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), a, _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
  const __m512 r = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));  // 1 - p e^{-a^2}
  return _mm512_or_ps(r, sign);
}

/// y = 0.5 x (1 + erf(x / sqrt 2)) over a row.
QFORMER_TARGET_AVX512 inline void gelu_erf_row(const float* x, index_t n, float* y) {
  for (index_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    const __m512 g = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v),
                                   _mm512_add_ps(_mm512_set1_ps(1.0f), erf_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752440f)))));
    _mm512_mask_storeu_ps(y + i, m, g);
  }
}

/// The lanes of a row's 16-element step from i on: all 16, or the n - i left at its end.
inline __mmask16 row_lanes(index_t n, index_t i) {
  return n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
}

/// The largest of v's 16 lanes.
QFORMER_TARGET_AVX512 inline float lane_max(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float largest = lanes[0];
  for (float l : lanes) largest = std::max(largest, l);
  return largest;
}

/// x[i] = exp(x[i] - max) over a row (softmax's middle pass); returns their sum.
QFORMER_TARGET_AVX512 inline float exp_shifted_row(float* x, index_t n, float max) {
  const __m512 mx = _mm512_set1_ps(max);
  __m512 acc = _mm512_setzero_ps();
  for (index_t i = 0; i < n; i += 16) {
    const __mmask16 m = row_lanes(n, i);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), mx));
    _mm512_mask_storeu_ps(x + i, m, e);
    acc = _mm512_mask_add_ps(acc, m, acc, e);
  }
  return lane_sum(acc);
}

/// In-place softmax of one row: exp(x - max) / sum.
QFORMER_TARGET_AVX512 inline void softmax_row(float* x, index_t n) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (index_t i = 0; i < n; i += 16) {
    const __mmask16 m = row_lanes(n, i);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, x + i));
  }
  const __m512 inv = _mm512_set1_ps(1.0f / exp_shifted_row(x, n, lane_max(vmax)));
  for (index_t i = 0; i < n; i += 16) {
    const __mmask16 m = row_lanes(n, i);
    _mm512_mask_storeu_ps(x + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), inv));
  }
}

/// p = softmax(s * scale + mask) of one row of attention scores, rounded to bf16 (mask: an additive row, or null),
/// in three passes instead of softmax_row's three after a scaling and a mask pass:
///   s * scale (+ mask) -> s, and the row's max;  exp(s - max) -> s, and its sum;  s / sum -> p, rounded.
QFORMER_TARGET_AVX512_BF16 inline void softmax_row_to_bf16(float* s, index_t n, float scale, const float* mask, bf16* p) {
  const __m512 scale_v = _mm512_set1_ps(scale);
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  for (index_t i = 0; i < n; i += 16) {
    const __mmask16 m = row_lanes(n, i);
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + i), scale_v);
    if (mask) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, mask + i));
    _mm512_mask_storeu_ps(s + i, m, v);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, v);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / exp_shifted_row(s, n, lane_max(vmax)));
  for (index_t i = 0; i < n; i += 16) {
    const __mmask16 m = row_lanes(n, i);
    _mm256_mask_storeu_epi16(p + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, s + i), inv)));
  }
}

/// out[s * out_stride] = a[s n, s n + n) · b[s n, s n + n) for s < segments: the dot products of a decoding
/// step's heads (segments) of one query (a, floats) with one cached key row (b: float, bf16 or fp16, widened in
/// registers).
template <class T>
QFORMER_TARGET_AVX512 inline void dot_segments(const float* a, const T* b, index_t segments, index_t n, float* out,
                                               index_t out_stride) {
  for (index_t s = 0; s < segments; ++s) {
    const float* as = a + s * n;
    const T* bs = b + s * n;
    __m512 acc = _mm512_setzero_ps();
    for (index_t i = 0; i < n; i += 16) {
      const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, as + i), load_as_floats(bs + i, m), acc);
    }
    out[s * out_stride] = lane_sum(acc);
  }
}

/// y[s n, s n + n) += p[s * p_stride] * b[s n, s n + n) for s < segments: a decoding step's heads (segments) of
/// one output row (y, floats) gain one cached value row (b: float, bf16 or fp16) times each head's probability.
template <class T>
QFORMER_TARGET_AVX512 inline void add_scaled_segments(const float* p, index_t p_stride, const T* b, index_t segments,
                                                      index_t n, float* y) {
  for (index_t s = 0; s < segments; ++s) {
    const __m512 ps = _mm512_set1_ps(p[s * p_stride]);
    for (index_t i = 0; i < n; i += 16) {
      const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
      float* ys = y + s * n + i;
      _mm512_mask_storeu_ps(ys, m, _mm512_fmadd_ps(ps, load_as_floats(b + s * n + i, m), _mm512_maskz_loadu_ps(m, ys)));
    }
  }
}

/// bf16 row -> float (exact: the bits shifted up).
QFORMER_TARGET_AVX512 inline void widen_bf16_row(const bf16* x, index_t n, float* y) {
  for (index_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512i bits = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x + i)), 16);
    _mm512_mask_storeu_ps(y + i, m, _mm512_castsi512_ps(bits));
  }
}

/// float row -> bf16, round to nearest even (vcvtneps2bf16).
QFORMER_TARGET_AVX512_BF16 inline void narrow_bf16_row(const float* x, index_t n, bf16* y) {
  for (index_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm256_mask_storeu_epi16(y + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

#endif  // QFORMER_HAVE_AVX512_KERNELS

}  // namespace qformer::cpu_detail::avx512
