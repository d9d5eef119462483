#pragma once
/// \file
/// int8 linear layers (the language model's, on request): y = x W^T + b with W stored as int8, one fp32 scale per
/// output channel (symmetric: scale = max|W[n]| / 127), and x quantised per row at run time (symmetric, max|x[m]| /
/// 127), as torch.ao's dynamic quantisation does. The integer dot products run on AVX-512 VNNI (`vpdpbusd`: u8 x s8
/// in groups of 4, int32 sums), so activations are stored offset by 128 as u8 and the offset's contribution,
/// 128 sum_k W[n][k], is subtracted per channel:
///   y[m][n] = x_scale[m] w_scale[n] (sum_k (q_x[m][k] + 128) q_w[n][k] - 128 sum_k q_w[n][k]) + b[n]
/// Rows are stored padded to a multiple of 64 (zeros), so every load is whole.
///   GEMV (M <= 4, decode): each weight row streamed once, 64 per load: 1 byte per parameter from memory, half of
///   bf16's.
///   GEMM: the micro-tile of gemm_avx512.hpp (12 weight rows x 32 x rows, weights broadcast 4 at a time) over
///   panels of x quads, the whole depth in one block (int32 sums never leave the registers).
/// Without VNNI the same integer arithmetic runs in portable C++ (same results, slowly).

#include "../../core/context.hpp"
#include "../../core/error.hpp"
#include "gemm.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#ifdef QFORMER_HAVE_AVX512_KERNELS
#define QFORMER_TARGET_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512vnni")))
#endif

namespace qformer {

/// A Linear's weight (out, in) quantised to int8 per output channel.
struct int8_weights {
  index_t out = 0, in = 0, stride = 0;  // stride: in rounded up to 64
  std::vector<std::int8_t, host_allocator<std::int8_t>> values;  // (out, stride), zero past `in`; huge pages (streamed)
  std::vector<float> scale;             // (out): W[n][k] ~ scale[n] * values[n][k]
  std::vector<std::int32_t> offset;     // (out): 128 * sum_k values[n][k], the u8 offset's share of each dot product

  bool empty() const noexcept { return out == 0; }
  std::size_t bytes() const noexcept { return values.size() + scale.size() * 4 + offset.size() * 4; }

  /// Quantises w (out, in) of any element type: round to nearest of W / scale, clamped to [-127, 127]. Rows are
  /// split across threads (AVX-512 where the CPU has it, the same bytes either way). A row that is not finite
  /// (inf or NaN) is an error that names it.
  template <class T>
  static int8_weights quantize(view<const T> w);
};

namespace cpu_detail {

/// x (M, K) quantised per row: u8 = round(x / scale) + 128 with scale = max|x[m]| / 127, rows `stride` long
/// (padded with 128, i.e. zero); scale[m] returned alongside.
template <class T>
void quantize_rows_u8(view<const T> x, index_t stride, std::uint8_t* q, float* scale) {
  const index_t M = x.rows(), K = x.cols();
  for (index_t m = 0; m < M; ++m) {
    const T* row = x.row(m);
    float max_abs = 0.0f;
    for (index_t k = 0; k < K; ++k) max_abs = std::max(max_abs, std::fabs(to_float(row[k])));
    const float s = max_abs > 0.0f && std::isfinite(max_abs) ? max_abs / 127.0f : 1.0f, inv = 1.0f / s;
    std::uint8_t* dst = q + m * stride;
    for (index_t k = 0; k < K; ++k) {
      const float v = std::nearbyint(to_float(row[k]) * inv);
      dst[k] = static_cast<std::uint8_t>((std::isnan(v) ? 0.0f : std::clamp(v, -127.0f, 127.0f)) + 128.0f);  // NaN: 0
    }
    std::fill(dst + K, dst + stride, std::uint8_t{128});
    scale[m] = s;
  }
}

/// One weight row quantised as int8_weights::quantize defines it: scale = max|w| / 127 (1 for a zero row), dst[k] =
/// clamp(nearbyint(w[k] / scale), -127, 127); returns false (dst unspecified) if the row holds inf or NaN.
template <class T>
bool quantize_weight_row(const T* row, index_t in, std::int8_t* dst, float& scale, std::int32_t& sum) {
  float max_abs = 0.0f;
  for (index_t k = 0; k < in; ++k) {
    const float v = std::fabs(to_float(row[k]));
    if (!(v <= std::numeric_limits<float>::max())) return false;  // inf or NaN
    max_abs = std::max(max_abs, v);
  }
  scale = max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
  sum = 0;
  for (index_t k = 0; k < in; ++k) {
    dst[k] = static_cast<std::int8_t>(std::clamp(std::nearbyint(to_float(row[k]) / scale), -127.0f, 127.0f));
    sum += dst[k];
  }
  return true;
}

/// y[m][n] from the integer dot product: the one formula every path shares.
inline float dequantize(std::int32_t dot, const int8_weights& w, index_t n, float x_scale, float bias) {
  return static_cast<float>(dot - w.offset[static_cast<std::size_t>(n)]) * (x_scale * w.scale[static_cast<std::size_t>(n)]) + bias;
}

#ifdef QFORMER_HAVE_AVX512_KERNELS
namespace avx512 {

/// quantize_rows_u8 16 elements at a time, to the same bytes and scales: max |x| (NaN skipped as std::max skips
/// it: vmaxps returns its second operand when one is NaN), x * (1 / scale) rounded to nearest even, NaN to 0,
/// clamped to [-127, 127], offset by 128.
template <class T>
QFORMER_TARGET_AVX512 void quantize_rows_u8(view<const T> x, index_t stride, std::uint8_t* q, float* scale) {
  const index_t M = x.rows(), K = x.cols();
  const __m512 magnitude = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512 low = _mm512_set1_ps(-127.0f), high = _mm512_set1_ps(127.0f), offset = _mm512_set1_ps(128.0f);
  const auto mask_at = [K](index_t k) {
    return K - k >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (K - k)) - 1u);
  };
  for (index_t m = 0; m < M; ++m) {
    const T* row = x.row(m);
    __m512 largest = _mm512_setzero_ps();
    for (index_t k = 0; k < K; k += 16)
      largest = _mm512_max_ps(_mm512_and_ps(load_as_floats(row + k, mask_at(k)), magnitude), largest);
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, largest);
    float max_abs = 0.0f;
    for (float l : lanes) max_abs = std::max(max_abs, l);
    const float s = max_abs > 0.0f && std::isfinite(max_abs) ? max_abs / 127.0f : 1.0f;
    const __m512 inv = _mm512_set1_ps(1.0f / s);
    std::uint8_t* dst = q + m * stride;
    for (index_t k = 0; k < K; k += 16) {
      const __mmask16 mask = mask_at(k);
      __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(load_as_floats(row + k, mask), inv),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_setzero_ps());
      v = _mm512_add_ps(_mm512_min_ps(_mm512_max_ps(v, low), high), offset);
      _mm_mask_storeu_epi8(dst + k, mask, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(v)));
    }
    std::fill(dst + K, dst + stride, std::uint8_t{128});
    scale[m] = s;
  }
}

/// cpu_detail::quantize_weight_row 16 elements at a time, to the same bytes: the division, not a multiplication by
/// its inverse, rounded to nearest even as nearbyint does.
template <class T>
QFORMER_TARGET_AVX512 bool quantize_weight_row(const T* row, index_t in, std::int8_t* dst, float& scale, std::int32_t& sum) {
  const __m512 magnitude = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const __m512 largest_finite = _mm512_set1_ps(std::numeric_limits<float>::max());
  const __m512 low = _mm512_set1_ps(-127.0f), high = _mm512_set1_ps(127.0f);
  const auto mask_at = [in](index_t k) {
    return in - k >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (in - k)) - 1u);
  };
  __m512 largest = _mm512_setzero_ps();
  __mmask16 not_finite = 0;
  for (index_t k = 0; k < in; k += 16) {
    const __mmask16 mask = mask_at(k);
    const __m512 v = _mm512_and_ps(load_as_floats(row + k, mask), magnitude);
    not_finite |= _mm512_mask_cmp_ps_mask(mask, v, largest_finite, _CMP_NLE_UQ);  // > max or unordered
    largest = _mm512_max_ps(v, largest);
  }
  if (not_finite) return false;
  const float max_abs = _mm512_reduce_max_ps(largest);
  scale = max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
  const __m512 divisor = _mm512_set1_ps(scale);
  __m512i sums = _mm512_setzero_si512();
  for (index_t k = 0; k < in; k += 16) {
    const __mmask16 mask = mask_at(k);
    __m512 v = _mm512_roundscale_ps(_mm512_div_ps(load_as_floats(row + k, mask), divisor),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512i q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, low), high));  // masked lanes: 0
    sums = _mm512_add_epi32(sums, q);
    _mm_mask_storeu_epi8(dst + k, mask, _mm512_cvtepi32_epi8(q));
  }
  sum = _mm512_reduce_add_epi32(sums);
  return true;
}

/// The lane sums of a, b, c and d as the 4 lanes of one vector (lane_sums4 on int32 lanes).
QFORMER_TARGET_AVX512 inline __m128i lane_sums4_i32(__m512i a, __m512i b, __m512i c, __m512i d) {
  using v16si = std::int32_t __attribute__((vector_size(64)));
  return reinterpret_cast<__m128i>(lane_sums4(reinterpret_cast<v16si>(a), reinterpret_cast<v16si>(b),
                                              reinterpret_cast<v16si>(c), reinterpret_cast<v16si>(d)));
}

/// add_lane_sums for int32 accumulators: out[m * ld + r] += the lane sum of acc[r][m].
template <int R, int MM>
QFORMER_TARGET_AVX512 inline void add_lane_sums(const __m512i (&acc)[R][MM], std::int32_t* out, index_t ld) {
  const __m512i zero = _mm512_setzero_si512();
  for (int m = 0; m < MM; ++m)
    for (int r = 0; r < R; r += 4) {
      const __m128i sums = lane_sums4_i32(acc[r][m], r + 1 < R ? acc[r + 1][m] : zero, r + 2 < R ? acc[r + 2][m] : zero,
                                          r + 3 < R ? acc[r + 3][m] : zero);
      const __mmask8 mask = static_cast<__mmask8>((1u << (R - r < 4 ? R - r : 4)) - 1u);
      std::int32_t* at = out + m * ld + r;
      _mm_mask_storeu_epi32(at, mask, _mm_add_epi32(_mm_maskz_loadu_epi32(mask, at), sums));
    }
}

/// acc + the dot products of u's unsigned and w's signed bytes in groups of 4 (vpdpbusd). GCC 12 does not keep
/// _mm512_dpbusd_epi32's accumulator in one register: in the GEMV blocks of 3 and 4 weight rows it copied each
/// accumulator out and back around every vpdpbusd, or kept them in a stack array stored every step (2-4 extra
/// instructions per dot product), so GCC gets the instruction with the accumulator tied to its register. At 8 rows
/// of x that took the in-cache rate from 335 to 550-567 GOP/s (machine C) and a batch-8 decoding step from
/// ~200 to ~170 ms; up to 4 rows the blocks keep the intrinsic (the step's times at 4 rows moved 136-174 ms either
/// way, within the VM's noise).
QFORMER_TARGET_AVX512_VNNI inline __m512i dot_u8s8(__m512i acc, __m512i u, __m512i w) {
#if defined(__GNUC__) && !defined(__clang__)
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u), "vm"(w));
  return acc;
#else
  return _mm512_dpbusd_epi32(acc, u, w);
#endif
}

/// Integer dot products of R weight rows with MM quantised x rows, 64 k per step (stride a multiple of 64);
/// `Streamed`: the weights come from memory (gemv_driver), so the block prefetches the next one's rows at `next`.
template <int R, int MM, bool Streamed = false>
QFORMER_TARGET_AVX512_VNNI inline void gemv_block_int8(const std::uint8_t* x, index_t ldx, const std::int8_t* w, index_t ldw,
                                                       index_t stride, std::int32_t* sums /* += [m * ld + r] */,
                                                       index_t ld, const std::int8_t* next = nullptr) {
  __m512i acc[R][MM];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_setzero_si512();
  for (index_t k = 0; k < stride; k += 64) {
    gemv_prefetch<R, Streamed>(w, next, ldw, k, stride);
    if constexpr (MM <= 4) {  // as gemv_block_f32
      __m512i xv[MM];
      for (int m = 0; m < MM; ++m) xv[m] = _mm512_loadu_si512(x + m * ldx + k);
      for (int r = 0; r < R; ++r) {
        const __m512i wv = _mm512_loadu_si512(w + r * ldw + k);
        for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_dpbusd_epi32(acc[r][m], xv[m], wv);
      }
    } else {
      __m512i wv[R];
      for (int r = 0; r < R; ++r) wv[r] = _mm512_loadu_si512(w + r * ldw + k);
      for (int m = 0; m < MM; ++m) {
        const __m512i xv = _mm512_loadu_si512(x + m * ldx + k);
        for (int r = 0; r < R; ++r) acc[r][m] = dot_u8s8(acc[r][m], xv, wv[r]);  // 5-8 rows of x
      }
    }
  }
  add_lane_sums<R, MM>(acc, sums, ld);
}

/// 16 dequantised outputs of one row of x: (dots - offset) * (x_scale * w_scale) + bias, rounded as dequantize()
/// rounds (the product is not fused into the add: _mm512_mul_round_ps is not contracted).
QFORMER_TARGET_AVX512 inline __m512 dequantize16(__m512i dots, __m512i offset, __m512 w_scale, float x_scale,
                                                 __m512 bias) {
  const __m512 dot = _mm512_cvtepi32_ps(_mm512_sub_epi32(dots, offset));
  const __m512 scale = _mm512_mul_round_ps(_mm512_set1_ps(x_scale), w_scale, _MM_FROUND_CUR_DIRECTION);
  return _mm512_add_ps(_mm512_mul_round_ps(dot, scale, _MM_FROUND_CUR_DIRECTION), bias);
}

/// The float outputs y[m][n0 + i] = dequantize(dots[m * ld + i], w, n0 + i, x_scale[m], b[n0 + i]), i < count, 16
/// at a time (dequantize16), passed to store(m, i, values, mask).
template <class T, class Store>
QFORMER_TARGET_AVX512 inline void for_dequantized(index_t M, index_t n0, index_t count, const std::int32_t* dots,
                                                  index_t ld, const int8_weights& w, const float* x_scale, const T* b,
                                                  Store&& store) {
  for (index_t i = 0; i < count; i += 16) {
    const __mmask16 mask = static_cast<__mmask16>(count - i >= 16 ? 0xffffu : (1u << (count - i)) - 1u);
    const index_t n = n0 + i;
    const __m512i offset = _mm512_maskz_loadu_epi32(mask, w.offset.data() + n);
    const __m512 w_scale = _mm512_maskz_loadu_ps(mask, w.scale.data() + n);
    const __m512 bias = b ? load_as_floats(b + n, mask) : _mm512_setzero_ps();
    for (index_t m = 0; m < M; ++m)
      store(m, i, dequantize16(_mm512_maskz_loadu_epi32(mask, dots + m * ld + i), offset, w_scale, x_scale[m], bias),
            mask);
  }
}

/// y[m][n0, n0 + count) = the dequantised dots rounded to bf16 (vcvtneps2bf16: nearest even, as bf16(float)).
QFORMER_TARGET_AVX512_BF16 inline void store_dequantized_bf16(index_t M, index_t n0, index_t count,
                                                              const std::int32_t* dots, index_t ld,
                                                              const int8_weights& w, const float* x_scale,
                                                              const bf16* b, bf16* y, index_t ldy) {
  for_dequantized(M, n0, count, dots, ld, w, x_scale, b, [&](index_t m, index_t i, __m512 v, __mmask16 mask)
                                                             QFORMER_TARGET_AVX512_BF16 {
    _mm256_mask_storeu_epi16(y + m * ldy + n0 + i, mask, (__m256i)_mm512_cvtneps_pbh(v));
  });
}

/// The GEMV's int8 outputs stored (gemv_driver's put): y[m][n0, n0 + count) dequantised from dots[m * ld + i] (float
/// outputs stored as they are; bf16 rounded to nearest even: vcvtneps2bf16 where the CPU has avx512_bf16, which
/// rounds as bf16(float), else one by one).
template <class T>
QFORMER_TARGET_AVX512 inline void store_dequantized(index_t M, index_t n0, index_t count, const std::int32_t* dots,
                                                    index_t ld, const int8_weights& w, const float* x_scale, const T* b,
                                                    T* y, index_t ldy) {
  if constexpr (std::is_same_v<T, float>) {
    for_dequantized(M, n0, count, dots, ld, w, x_scale, b, [&](index_t m, index_t i, __m512 v, __mmask16 mask)
                                                               QFORMER_TARGET_AVX512 {
      _mm512_mask_storeu_ps(y + m * ldy + n0 + i, mask, v);
    });
  } else {
    if constexpr (std::is_same_v<T, bf16>)
      if (host_cpu().has_avx512_bf16()) return store_dequantized_bf16(M, n0, count, dots, ld, w, x_scale, b, y, ldy);
    for_dequantized(M, n0, count, dots, ld, w, x_scale, b, [&](index_t m, index_t i, __m512 v, __mmask16 mask)
                                                               QFORMER_TARGET_AVX512 {
      alignas(64) float values[16];
      _mm512_store_ps(values, v);
      for (int j = 0; j < 16; ++j)
        if (mask >> j & 1) y[m * ldy + n0 + i + j] = from_float<T>(values[j]);
    });
  }
}

/// One x panel of quads: dst[k4 * width + j] = x[j][4 k4 .. 4 k4 + 3] (rows past `rows`: 128, i.e. zero).
inline void pack_panel_u8(const std::uint8_t* x, index_t ldx, index_t rows, index_t width, index_t quads, std::uint32_t* dst) {
  for (index_t j = 0; j < width; ++j) {
    if (j < rows) {
      const std::uint8_t* src = x + j * ldx;
      for (index_t k4 = 0; k4 < quads; ++k4) std::memcpy(dst + k4 * width + j, src + 4 * k4, 4);
    } else {
      for (index_t k4 = 0; k4 < quads; ++k4) dst[k4 * width + j] = 0x80808080u;
    }
  }
}

/// out (R, NV * 16) int32 = R weight rows (ldw) · the quad panel over `quads` groups of 4.
template <int R, int NV>
QFORMER_TARGET_AVX512_VNNI inline void tile_int8(const std::int8_t* w, index_t ldw, const std::uint32_t* xp, index_t quads,
                                                 std::int32_t* out) {
  __m512i acc[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_si512();
  for (index_t k4 = 0; k4 < quads; ++k4) {
    __m512i xv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_si512(xp + k4 * (NV * 16) + v * 16);
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      std::int32_t quad;
      std::memcpy(&quad, w + r * ldw + 4 * k4, 4);
      const __m512i wb = _mm512_set1_epi32(quad);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbusd_epi32(acc[r][v], xv[v], wb);
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm512_storeu_si512(out + r * (NV * 16) + v * 16, acc[r][v]);
}

/// The blocked GEMM's kernel for int8 (gemm_avx512.hpp's blocked_gemm): the whole padded depth in one block.
template <class T>
struct gemm_int8_kernel {
  using packed = std::uint32_t;
  using sum = std::int32_t;
  static constexpr index_t tile_n = avx512::tile_n, block_m = 128, block_k = index_t{1} << 40;
  static index_t units(index_t kc) { return kc / 4; }
  const std::uint8_t* x;  // quantised (M, w->stride)
  const float* x_scale;
  const int8_weights* w;
  const T* b;
  T* y;
  index_t ldy;

  void pack(index_t m0, index_t rows, index_t width, index_t, index_t kc, std::uint32_t* dst) const {
    pack_panel_u8(x + m0 * w->stride, w->stride, rows, width, kc / 4, dst);
  }
  template <class Fn>
  static void split(index_t rows, Fn&& fn) { for_tile_rows(rows, fn); }
  void tile(int r, int nv, index_t n0, index_t, index_t kc, const std::uint32_t* panel, std::int32_t* sums) const {
    const std::int8_t* wr = w->values.data() + n0 * w->stride;
    dispatch_tile(r, nv, [&]<int R, int NV>() { tile_int8<R, NV>(wr, w->stride, panel, kc / 4, sums); });
  }
  void emit(index_t m0, index_t valid, index_t n0, int r, const std::int32_t* sums, index_t width, bool, bool) const {
    for (index_t j = 0; j < valid; ++j)
      for (int i = 0; i < r; ++i)
        y[(m0 + j) * ldy + n0 + i] = from_float<T>(
            dequantize(sums[i * width + j], *w, n0 + i, x_scale[m0 + j], b ? to_float(b[n0 + i]) : 0.0f));
  }
};

}  // namespace avx512
#endif

#ifdef QFORMER_HAVE_AMX_KERNELS
namespace amx {

/// The int8 GEMM's operands for amx::gemm<int8_tiles>: x quantised per row (u8 offset by 128, rows `ldw` long),
/// the weights read in place (signed A tiles), the int32 sums dequantised as dequantize() does.
template <class T>
struct int8_operands {
  const std::int8_t* w = nullptr;  // weights.values (N, ldw)
  index_t ldw = 0;                 // weights.stride: a multiple of 64
  const std::uint8_t* x = nullptr;  // (M, ldw)
  const float* x_scale = nullptr;   // (M)
  const int8_weights* weights = nullptr;
  const T* b = nullptr;
  T* y = nullptr;
  index_t ldy = 0;

  /// The quads of x's rows [m0, m0 + rows) over [k0, k0 + kc) as a B panel (kc a multiple of 4: the depth is
  /// the stride, blocks are of 512).
  QFORMER_TARGET_AVX512 void pack(index_t m0, index_t rows, index_t width, index_t k0, index_t kc, std::uint32_t* dst) const {
    avx512::transpose_into_panel(x + m0 * ldw + k0, ldw, rows, width, kc / 4, reinterpret_cast<float*>(dst));
  }

  /// y[m0 + j][n0 + i] for j < valid, i < r from the finished tile's sums (out[i * width + j]), 16 x 16 blocks
  /// transposed in registers: (dot - offset) * (x_scale * w_scale) + bias, rounded as dequantize() rounds (the
  /// product is not fused into the add: _mm512_mul_round_ps is not contracted).
  QFORMER_TARGET_AVX512_BF16 void emit(index_t m0, index_t valid, index_t n0, int r, const std::int32_t* out,
                                       index_t width) const {
    for (int i0 = 0; i0 < r; i0 += 16) {
      const int columns = std::min(16, r - i0);
      const index_t n = n0 + i0;
      const __mmask16 mask = static_cast<__mmask16>((1u << columns) - 1u);
      const __m512i offset = _mm512_maskz_loadu_epi32(mask, weights->offset.data() + n);
      const __m512 w_scale = _mm512_maskz_loadu_ps(mask, weights->scale.data() + n);
      __m512 bias = _mm512_setzero_ps();
      if (b) {
        if constexpr (std::is_same_v<T, float>) bias = _mm512_maskz_loadu_ps(mask, b + n);
        else bias = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, b + n)), 16));
      }
      for (index_t j0 = 0; j0 < valid; j0 += 16) {
        __m512 block[16];
        for (int i = 0; i < 16; ++i)
          block[i] = i < columns ? _mm512_castsi512_ps(_mm512_loadu_si512(out + (i0 + i) * width + j0)) : _mm512_setzero_ps();
        avx512::transpose_16x16(block);
        const index_t rows = std::min<index_t>(16, valid - j0);
        for (index_t j = 0; j < rows; ++j) {
          const index_t m = m0 + j0 + j;
          const __m512 value = avx512::dequantize16(_mm512_castps_si512(block[j]), offset, w_scale, x_scale[m], bias);
          if constexpr (std::is_same_v<T, float>) _mm512_mask_storeu_ps(y + m * ldy + n, mask, value);
          else _mm256_mask_storeu_epi16(y + m * ldy + n, mask, (__m256i)_mm512_cvtneps_pbh(value));
        }
      }
    }
  }
};

}  // namespace amx
#endif

/// Whether int8 GEMMs (more than amx_gemv_max_rows rows) run on the AMX tiles now.
inline bool use_amx_int8_kernels() {
#ifdef QFORMER_HAVE_AMX_KERNELS
  return get_cpu_kernels() == cpu_kernels::automatic && host_cpu().has_amx_int8();
#else
  return false;
#endif
}

/// The int8 GEMM on AMX tiles (amx::gemm<int8_tiles>) for x quantised into q / x_scale, if this CPU has them and T
/// is float or bf16; false (nothing done) otherwise.
template <class T>
bool int8_gemm_amx([[maybe_unused]] context<cpu>& ctx, [[maybe_unused]] const std::uint8_t* q,
                   [[maybe_unused]] const float* x_scale, [[maybe_unused]] const int8_weights& w,
                   [[maybe_unused]] const T* bias, [[maybe_unused]] view<T> y) {
#ifdef QFORMER_HAVE_AMX_KERNELS
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bf16>) {
    if (!use_amx_int8_kernels()) return false;
    amx::int8_operands<T> operands;
    operands.w = w.values.data();
    operands.ldw = w.stride;
    operands.x = q;
    operands.x_scale = x_scale;
    operands.weights = &w;
    operands.b = bias;
    operands.y = y.data();
    operands.ldy = y.row_stride();
    const amx::gemm_plan<amx::int8_tiles> plan(y.rows(), w.out, w.stride);
    amx::gemm(operands, plan, reinterpret_cast<std::uint32_t*>(ctx.alloc<float>({plan.scratch_words()}).data()));
    return true;
  }
#endif
  return false;
}

/// Whether the int8 kernels run on VNNI here (otherwise portable integer C++).
inline bool use_vnni_kernels() {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  return get_cpu_kernels() != cpu_kernels::portable && host_cpu().has_avx512() && host_cpu().avx512_vnni;
#else
  return false;
#endif
}

/// y (M, w.out) = x (M, w.in) · dequantised W^T + b, with x quantised per row.
template <class T>
void linear_int8(context<cpu>& ctx, view<const T> x, const int8_weights& w, const T* bias, view<T> y) {
  const index_t M = x.rows(), N = w.out;
  if (x.cols() != w.in || y.rows() != M || y.cols() != N)
    throw shape_error("linear (int8): input " + x.shape().str() + ", output " + y.shape().str() + " for weight [" +
                      std::to_string(N) + ", " + std::to_string(w.in) + "]");
  if (M == 0 || N == 0) return;
  typename context<cpu>::scope scope(ctx);
  auto* q = reinterpret_cast<std::uint8_t*>(ctx.alloc<float>({M * w.stride / 4}).data());
  float* x_scale = ctx.alloc<float>({M}).data();
  bool quantized = false;
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bf16>) {
    if (use_vnni_kernels()) {
      avx512::quantize_rows_u8<T>(x, w.stride, q, x_scale);
      quantized = true;
    }
  }
#endif
  if (!quantized) quantize_rows_u8<T>(x, w.stride, q, x_scale);
  auto put = [&](index_t m, index_t n, std::int32_t dot) {
    y.row(m)[n] = from_float<T>(dequantize(dot, w, n, x_scale[m], bias ? to_float(bias[n]) : 0.0f));
  };
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (use_vnni_kernels()) {
    if (M <= (use_amx_int8_kernels() ? amx_gemv_max_rows : avx512::gemv_max_rows)) {
      avx512::dispatch_gemv_rows(M, [&]<int MM>() {
        const std::int8_t* values = w.values.data();
        avx512::gemv_driver<MM, std::int32_t>(
            N, w.stride, avx512::gemv_depth_piece<MM>(w.stride, 1),
            [&]<int R>(const avx512::gemv_piece& at, std::int32_t* dots, index_t ld) {
              avx512::gemv_block_int8<R, MM, avx512::gemv_prefetch_next<MM>>(
                  q + at.k0, w.stride, values + at.n0 * w.stride + at.k0, w.stride, at.kc, dots, ld,
                  values + at.next_n * w.stride + at.next_k);
            },
            [&](index_t n0, index_t count, const std::int32_t* dots, index_t ld) {
              avx512::store_dequantized<T>(MM, n0, count, dots, ld, w, x_scale, bias, y.data(), y.row_stride());
            });
      });
    } else if (int8_gemm_amx<T>(ctx, q, x_scale, w, bias, y)) {
    } else {
      const index_t rows = avx512::balanced_row_block(M, avx512::gemm_int8_kernel<T>::block_m);
      auto* panels = reinterpret_cast<std::uint32_t*>(ctx.alloc<float>({avx512::padded_rows(rows) * w.stride / 4}).data());
      const avx512::gemm_int8_kernel<T> kernel{q, x_scale, &w, bias, y.data(), y.row_stride()};
      avx512::blocked_gemm(kernel, M, N, w.stride, panels);
    }
    return;
  }
#endif
  for (index_t m = 0; m < M; ++m)
    for (index_t n = 0; n < N; ++n) {
      const std::uint8_t* xq = q + m * w.stride;
      const std::int8_t* wq = w.values.data() + n * w.stride;
      std::int32_t dot = 0;
      for (index_t k = 0; k < w.stride; ++k) dot += static_cast<std::int32_t>(xq[k]) * wq[k];
      put(m, n, dot);
    }
}

}  // namespace cpu_detail

template <class T>
int8_weights int8_weights::quantize(view<const T> w) {
  int8_weights q;
  q.out = w.rows();
  q.in = w.cols();
  q.stride = (q.in + 63) / 64 * 64;
  q.values.assign(static_cast<std::size_t>(q.out * q.stride), 0);
  q.scale.resize(static_cast<std::size_t>(q.out));
  q.offset.resize(static_cast<std::size_t>(q.out));
  bool vectorised = false;
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bf16>) vectorised = cpu_detail::use_vnni_kernels();
#endif
  std::atomic<index_t> first_bad{q.out};  // no exception may leave an OpenMP region: the row is reported after it
  cpu_detail::parallel_for(q.out, cpu_detail::kernel_threads(q.out / 64 + 1), [&](index_t n, index_t) {
    float scale = 1.0f;
    std::int32_t sum = 0;
    std::int8_t* dst = q.values.data() + n * q.stride;
    bool finite;
#ifdef QFORMER_HAVE_AVX512_KERNELS
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bf16>)
      finite = vectorised ? cpu_detail::avx512::quantize_weight_row(w.row(n), q.in, dst, scale, sum)
                          : cpu_detail::quantize_weight_row(w.row(n), q.in, dst, scale, sum);
    else
#endif
      finite = cpu_detail::quantize_weight_row(w.row(n), q.in, dst, scale, sum);
    if (!finite) {
      index_t seen = first_bad.load();
      while (n < seen && !first_bad.compare_exchange_weak(seen, n)) {
      }
    }
    q.scale[static_cast<std::size_t>(n)] = scale;
    q.offset[static_cast<std::size_t>(n)] = 128 * sum;
  });
  (void)vectorised;
  if (first_bad.load() < q.out)
    throw error("int8 quantisation: weight row " + std::to_string(first_bad.load()) + " is not finite");
  return q;
}

}  // namespace qformer
