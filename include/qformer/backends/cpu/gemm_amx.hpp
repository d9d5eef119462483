#pragma once
/// \file
/// AMX bf16 linear-layer GEMM: y (M, N) = x (M, K) · w (N, K)^T + b, on the tile registers (`tdpbf16ps`, 16 x 16
/// fp32 accumulators of 16 x 32 bf16 by 32 x 16 bf16 products). Used where the CPU has AMX and Linux granted the
/// tile state (cpu_features::has_amx_bf16), for M > amx_gemv_max_rows (gemm.hpp); everything else stays on
/// gemm_avx512.hpp.
///
/// The micro-tile is 32 rows of w by one packed panel of x (32 or 16 rows), computed transposed like the AVX-512
/// tiles: C[i][j] = sum_k w[n0 + i][k] x[m0 + j][k].
///   A tiles (tmm4, tmm5): 16 rows of w each, 32 bf16 of k per row, loaded straight from the torch layout with the
///                         row stride of w: the big operand is never repacked.
///   B tiles (tmm6, tmm7): 16 k pairs x 16 rows of x from the packed panel, whose layout (x[j][2 k2], x[j][2 k2+1])
///                         per 32-bit lane is exactly AMX's pair-interleaved B layout.
///   C tiles (tmm0-3):     2 x 2 blocks of 16 x 16 fp32, kept in the tiles over the whole depth block.
/// The depth's tail (K mod 32) comes from a zero-padded copy of the 32 w rows' last elements and panel rows padded
/// with zero pairs. n-tiles of fewer than 32 rows (N mod 32) use the avx512_bf16 micro-tiles on the same panel.

#include "gemm_avx512.hpp"

#ifdef QFORMER_HAVE_AVX512_KERNELS
#define QFORMER_HAVE_AMX_KERNELS 1
#define QFORMER_TARGET_AMX \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16,amx-tile,amx-bf16")))
#endif

namespace qformer::cpu_detail::amx {

#ifdef QFORMER_HAVE_AMX_KERNELS

/// The 64-byte operand of ldtilecfg (palette 1): every tile used here is 16 rows of 64 bytes.
struct alignas(64) tile_config {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t bytes_per_row[16] = {};
  std::uint8_t rows[16] = {};
};

QFORMER_TARGET_AMX inline void configure_tiles() {
  tile_config config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
}

/// How many 32-element steps ahead the tile prefetches its weight rows.
inline constexpr index_t prefetch_distance = 8;

/// One 32-deep step of the 32 x NV*16 tile: A tiles from the two halves of the weight rows (a_stride bytes apart),
/// B tiles from the panel's 16 pair rows, accumulated into tmm0-3.
template <int NV>
QFORMER_TARGET_AMX inline __attribute__((always_inline)) void step(const void* w_top, const void* w_bottom,
                                                                   std::size_t w_stride, const std::uint32_t* panel) {
  constexpr std::size_t x_stride = NV * 16 * 4;
  _tile_loadd(4, w_top, w_stride);
  _tile_loadd(6, panel, x_stride);
  _tile_loadd(5, w_bottom, w_stride);
  _tile_dpbf16ps(0, 4, 6);
  _tile_dpbf16ps(2, 5, 6);
  if constexpr (NV == 2) {
    _tile_loadd(7, panel + 16, x_stride);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(3, 5, 7);
  }
}

/// out (32, NV * 16) = 32 rows of w (ldw) · the panel of x (pairs, NV * 16 wide, `units` pair rows, zero past
/// ceil(kc / 2)) over depth kc.
template <int NV>
QFORMER_TARGET_AMX void tile(const std::uint16_t* w, index_t ldw, const std::uint32_t* xp, index_t kc, float* out) {
  constexpr index_t width = NV * 16;
  const std::size_t w_stride = static_cast<std::size_t>(ldw) * 2, x_stride = width * 4;
  configure_tiles();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const index_t whole = kc / 32;
  for (index_t kb = 0; kb < whole; ++kb) {
    if (kb + prefetch_distance < whole)  // 32 weight rows are 32 streams: too many for the hardware prefetcher
      for (int i = 0; i < 32; ++i) _mm_prefetch(reinterpret_cast<const char*>(w + i * ldw + (kb + prefetch_distance) * 32), _MM_HINT_T0);
    step<NV>(w + kb * 32, w + 16 * ldw + kb * 32, w_stride, xp + kb * 16 * width);
  }
  if (const index_t left = kc - whole * 32; left > 0) {
    alignas(64) std::uint16_t tail[32][32] = {};
    for (int i = 0; i < 32; ++i) std::memcpy(tail[i], w + i * ldw + whole * 32, static_cast<std::size_t>(left) * 2);
    step<NV>(tail[0], tail[16], 64, xp + whole * 16 * width);
  }
  _tile_stored(0, out, x_stride);
  _tile_stored(2, out + 16 * width, x_stride);
  if constexpr (NV == 2) {
    _tile_stored(1, out + 16, x_stride);
    _tile_stored(3, out + 16 * width + 16, x_stride);
  }
  _tile_release();
}

/// The bf16 GEMM on AMX, driven by gemm_avx512.hpp's blocked_gemm: 32-row n-tiles, x packed as for the
/// avx512_bf16 kernel (padded to whole 16-pair tiles), the avx512_bf16 micro-tiles for the last N mod 32 rows of
/// w. fp32 sums across depth blocks in `acc` (M, N; only when K spans several blocks), bias added and rounded to
/// bf16 at the last block.
struct gemm_bf16_kernel : avx512::bf16_operands {
  static constexpr index_t tile_n = 32;
  static constexpr index_t block_m = 320;   // packed x block: up to 320 rows x block_k bf16 = 1.25 MiB, in L2
  static constexpr index_t block_k = 2048;  // (measured best of 128-512 x 1024-4096 at ViT-g shapes)
  static index_t units(index_t kc) { return ((kc + 1) / 2 + 15) / 16 * 16; }
  float* acc = nullptr;  // (M, N) scratch, or null when K <= block_k
  index_t N = 0;

  void pack(index_t m0, index_t rows, index_t width, index_t k0, index_t kc, std::uint32_t* dst) const {
    avx512::bf16_operands::pack(m0, rows, width, k0, kc, dst);
    const index_t pairs = (kc + 1) / 2;
    std::memset(dst + pairs * width, 0, static_cast<std::size_t>((units(kc) - pairs) * width) * 4);
  }
  template <class Fn>
  static void split(index_t rows, Fn&& fn) {
    if (rows == tile_n) fn(index_t{0}, static_cast<int>(tile_n));
    else avx512::for_tile_rows(rows, fn);
  }
  void tile(int r, int nv, index_t n0, index_t k0, index_t kc, const std::uint32_t* panel, float* out) const {
    const std::uint16_t* wr = w + n0 * ldw + k0;
    if (r != tile_n) {
      avx512::dispatch_tile(r, nv, [&]<int R, int NV>() { avx512::tile_bf16<R, NV>(wr, ldw, panel, kc, out, false); });
    } else if (nv == 2) {
      amx::tile<2>(wr, ldw, panel, kc, out);
    } else {
      amx::tile<1>(wr, ldw, panel, kc, out);
    }
  }
  /// The tile's sums added to acc (when K spans blocks); at the last block, with the bias, rounded into y.
  QFORMER_TARGET_AVX512_BF16 void emit(index_t m0, index_t valid, index_t n0, int r, const float* out, index_t width,
                                       bool first, bool last) const {
    for_tile_outputs(m0, valid, n0, r, out, width, [&](index_t m, index_t n, __m512 sums, __m512 bias, __mmask16 mask)
                                                       QFORMER_TARGET_AVX512_BF16 {
      if (acc) {
        float* a = acc + m * N + n;
        if (!first) sums = _mm512_add_ps(sums, _mm512_maskz_loadu_ps(mask, a));
        _mm512_mask_storeu_ps(a, mask, sums);
      }
      if (last) store_rounded(m, n, sums, bias, mask);
    });
  }
};

/// Packed-x scratch of the AMX GEMM for M rows and depth K, in bytes.
inline std::size_t gemm_bf16_scratch_bytes(index_t M, index_t K) {
  return static_cast<std::size_t>(avx512::padded_rows(std::min(M, gemm_bf16_kernel::block_m)) *
                                  gemm_bf16_kernel::units(std::min(K, gemm_bf16_kernel::block_k))) * 4;
}

#endif  // QFORMER_HAVE_AMX_KERNELS

}  // namespace qformer::cpu_detail::amx
