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
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#ifdef QFORMER_HAVE_AVX512_KERNELS
#define QFORMER_TARGET_AVX512_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512vnni")))
#endif

namespace qformer {

/// A Linear's weight (out, in) quantised to int8 per output channel.
struct int8_weights {
  index_t out = 0, in = 0, stride = 0;  // stride: in rounded up to 64
  std::vector<std::int8_t> values;      // (out, stride), zero past `in`
  std::vector<float> scale;             // (out): W[n][k] ~ scale[n] * values[n][k]
  std::vector<std::int32_t> offset;     // (out): 128 * sum_k values[n][k], the u8 offset's share of each dot product

  bool empty() const noexcept { return out == 0; }
  std::size_t bytes() const noexcept { return values.size() + scale.size() * 4 + offset.size() * 4; }

  /// Quantises w (out, in) of any element type: round to nearest of W / scale, clamped to [-127, 127].
  template <class T>
  static int8_weights quantize(view<const T> w) {
    int8_weights q;
    q.out = w.rows();
    q.in = w.cols();
    q.stride = (q.in + 63) / 64 * 64;
    q.values.assign(static_cast<std::size_t>(q.out * q.stride), 0);
    q.scale.resize(static_cast<std::size_t>(q.out));
    q.offset.resize(static_cast<std::size_t>(q.out));
    for (index_t n = 0; n < q.out; ++n) {
      const T* row = w.row(n);
      float max_abs = 0.0f;
      for (index_t k = 0; k < q.in; ++k) max_abs = std::max(max_abs, std::fabs(to_float(row[k])));
      if (!std::isfinite(max_abs)) throw error("int8 quantisation: weight row " + std::to_string(n) + " is not finite");
      const float scale = max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
      std::int32_t sum = 0;
      std::int8_t* dst = q.values.data() + n * q.stride;
      for (index_t k = 0; k < q.in; ++k) {
        const float v = std::nearbyint(to_float(row[k]) / scale);
        dst[k] = static_cast<std::int8_t>(std::clamp(v, -127.0f, 127.0f));
        sum += dst[k];
      }
      q.scale[static_cast<std::size_t>(n)] = scale;
      q.offset[static_cast<std::size_t>(n)] = 128 * sum;
    }
    return q;
  }
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
    for (index_t k = 0; k < K; ++k)
      dst[k] = static_cast<std::uint8_t>(std::clamp(std::nearbyint(to_float(row[k]) * inv), -127.0f, 127.0f) + 128.0f);
    std::fill(dst + K, dst + stride, std::uint8_t{128});
    scale[m] = s;
  }
}

/// y[m][n] from the integer dot product: the one formula every path shares.
inline float dequantize(std::int32_t dot, const int8_weights& w, index_t n, float x_scale, float bias) {
  return static_cast<float>(dot - w.offset[static_cast<std::size_t>(n)]) * (x_scale * w.scale[static_cast<std::size_t>(n)]) + bias;
}

#ifdef QFORMER_HAVE_AVX512_KERNELS
namespace avx512 {

/// The sum of v's 16 int32 lanes.
QFORMER_TARGET_AVX512 inline std::int32_t lane_sum_i32(__m512i v) {
  alignas(64) std::int32_t lanes[16];
  _mm512_store_si512(lanes, v);
  std::int32_t s = 0;
  for (std::int32_t l : lanes) s += l;
  return s;
}

/// Integer dot products of R weight rows with MM quantised x rows, 64 k per step (stride a multiple of 64).
template <int R, int MM>
QFORMER_TARGET_AVX512_VNNI inline void gemv_block_int8(const std::uint8_t* x, index_t ldx, const std::int8_t* w, index_t ldw,
                                                       index_t stride, std::int32_t* sums /* R x MM */) {
  __m512i acc[R][MM];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_setzero_si512();
  for (index_t k = 0; k < stride; k += 64) {
    if (k + gemv_prefetch_bytes < stride) prefetch_rows<R>(w + k, ldw, gemv_prefetch_bytes);
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
        for (int r = 0; r < R; ++r) acc[r][m] = _mm512_dpbusd_epi32(acc[r][m], xv, wv[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) sums[r * MM + m] = lane_sum_i32(acc[r][m]);
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
  quantize_rows_u8<T>(x, w.stride, q, x_scale);
  auto put = [&](index_t m, index_t n, std::int32_t dot) {
    y.row(m)[n] = from_float<T>(dequantize(dot, w, n, x_scale[m], bias ? to_float(bias[n]) : 0.0f));
  };
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (use_vnni_kernels()) {
    if (M <= avx512::gemv_max_rows) {
      avx512::dispatch_gemv_rows(M, [&]<int MM>() {
        avx512::gemv_driver<MM, std::int32_t>(
            N, w.stride,
            [&]<int R>(index_t n0, std::int32_t* dots) {
              avx512::gemv_block_int8<R, MM>(q, w.stride, w.values.data() + n0 * w.stride, w.stride, w.stride, dots);
            },
            put);
      });
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
}  // namespace qformer
