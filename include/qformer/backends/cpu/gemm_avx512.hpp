#pragma once
/// \file
/// AVX-512 linear-layer kernels: y (M, N) = x (M, K) · w (N, K)^T + b, with w a torch Linear weight (out, in)
/// row-major, fp32 accumulation. Compiled with function target attributes, so they exist in every build and run
/// only where cpu_features says the CPU has the instructions (backends/cpu/gemm.hpp dispatches).
///
/// GEMM (M > gemv_max_rows): a micro-tile is 12 output columns (12 rows of w, broadcast one element at a time
/// straight from w, no packing of the big operand) by 32 or 16 output rows (x packed once per call, transposed,
/// into panels xp[k][j] = x[m0 + j][k], zero-padded). 24 (or 12) zmm accumulators stay in registers over a depth
/// block; each step is 2 vector loads of xp and 12 broadcast FMAs per 16 lanes. panel_gemm drives it: a panel's
/// depth block in L1, the weight block its n-tiles read in L2 (prefetched while the previous block computes),
/// the n-tiles split across OpenMP threads, w read from memory once per block of rows.
///   fp32: vfmadd231ps. bf16: vdpbf16ps (avx512_bf16) on k pairs: xp holds (x[m][k], x[m][k+1]) per 32-bit lane,
///   the broadcast is the pair (w[n][k], w[n][k+1]); products exact, sums in fp32, as oneDNN's bf16 GEMM.
///   blocked_gemm, the older driver (whole n-tiles over a block of x in L2), runs the int8 kernel (AMX: gemm_amx.hpp).
/// GEMV (M <= gemv_max_rows, the decode step): each w row streamed once against the few x rows, 16 (fp32) or 32
/// (bf16) elements per load, horizontal sums at the end: bound by memory bandwidth, as it must be. From 2 rows of x
/// on, the depth is cut into pieces whose x rows stay in L1 (gemv_depth_piece), and each block of weight rows pulls
/// the next one into L2 while it computes (prefetch_next_block).

#include "../../core/context.hpp"
#include "../../core/cpu_features.hpp"
#include "../../core/dtype.hpp"
#include "threads.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(QFORMER_X86) && (defined(__GNUC__) || defined(__clang__)) && !defined(__CUDACC__)  // nvcc TUs: Eigen
#include <immintrin.h>
#define QFORMER_HAVE_AVX512_KERNELS 1
#define QFORMER_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))
#define QFORMER_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16")))
#endif

namespace qformer::cpu_detail::avx512 {

/// Up to this many rows of x take the GEMV path.
inline constexpr index_t gemv_max_rows = 8;  // a decode step of 8 rows streams the weights once
/// A GEMV over fewer weights runs on the calling thread (waking a second costs more than it saves; e.g. the
/// decode step's per-head attention, 80 x the cache length).
inline constexpr index_t gemv_split_weights = index_t{1} << 15;
/// Output columns (rows of w) per GEMM micro-tile.
inline constexpr int tile_n = 12;

#ifdef QFORMER_HAVE_AVX512_KERNELS

/// x is packed in panels of 32 rows, the last one 16 or 32 wide (rows beyond M zero): padded_rows(M) in all.
inline index_t padded_rows(index_t M) { return (M + 15) / 16 * 16; }
inline index_t panel_width(index_t M, index_t m0) { return M - m0 > 16 ? 32 : 16; }

/// The sum of v's 16 lanes (GCC 12's _mm512_reduce_add_ps trips -Wuninitialized inside its own header).
QFORMER_TARGET_AVX512 inline float lane_sum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0.0f;
  for (float l : lanes) s += l;
  return s;
}

/// The lane sums of a, b, c and d as the 4 lanes of one vector. Within each 128-bit quarter the unpacks and adds
/// leave the 4 vectors' partial sums side by side; the quarters are then added: 13 instructions, where lane_sum
/// stores a vector and adds its 16 lanes one by one (at 8 rows of x that was a quarter of a GEMV block's
/// instructions). Written with __builtin_shufflevector, which compiles to the same vunpck / vextract
/// instructions: GCC 12's own _mm512_unpack* and _mm512_extract* intrinsics trip -Wuninitialized inside its header.
/// Any 16-lane vector of 32-bit elements (__m512, or int32 for the int8 kernels' lane_sums4_i32); returns 4 lanes.
template <class V>
QFORMER_TARGET_AVX512 inline auto lane_sums4(V a, V b, V c, V d) {
  // per quarter: [a0 + a2, b0 + b2, a1 + a3, b1 + b3] and the same for c, d
  const V ab = __builtin_shufflevector(a, b, 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29) +
               __builtin_shufflevector(a, b, 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31);
  const V cd = __builtin_shufflevector(c, d, 0, 16, 1, 17, 4, 20, 5, 21, 8, 24, 9, 25, 12, 28, 13, 29) +
               __builtin_shufflevector(c, d, 2, 18, 3, 19, 6, 22, 7, 23, 10, 26, 11, 27, 14, 30, 15, 31);
  // per quarter: [a, b, c, d]
  const V abcd = __builtin_shufflevector(ab, cd, 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
                 __builtin_shufflevector(ab, cd, 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  const auto halves = __builtin_shufflevector(abcd, abcd, 0, 1, 2, 3, 4, 5, 6, 7) +
                      __builtin_shufflevector(abcd, abcd, 8, 9, 10, 11, 12, 13, 14, 15);
  return __builtin_shufflevector(halves, halves, 0, 1, 2, 3) + __builtin_shufflevector(halves, halves, 4, 5, 6, 7);
}

/// A GEMV block's R x MM accumulators added to its sums: out[m * ld + r] += the lane sum of acc[r][m] (lane_sums4,
/// 4 weight rows at a time), so that each row of x gets its outputs side by side.
template <int R, int MM>
QFORMER_TARGET_AVX512 inline void add_lane_sums(const __m512 (&acc)[R][MM], float* out, index_t ld) {
  const __m512 zero = _mm512_setzero_ps();
  for (int m = 0; m < MM; ++m)
    for (int r = 0; r < R; r += 4) {
      const __m128 sums = lane_sums4<__m512>(acc[r][m], r + 1 < R ? acc[r + 1][m] : zero, r + 2 < R ? acc[r + 2][m] : zero,
                                     r + 3 < R ? acc[r + 3][m] : zero);
      const __mmask8 mask = static_cast<__mmask8>((1u << (R - r < 4 ? R - r : 4)) - 1u);
      float* at = out + m * ld + r;
      _mm_mask_storeu_ps(at, mask, _mm_add_ps(_mm_maskz_loadu_ps(mask, at), sums));
    }
}

/// 16 elements of a float, bf16 or fp16 row (masked) as floats (exact).
template <class T>
QFORMER_TARGET_AVX512 inline __m512 load_as_floats(const T* p, __mmask16 mask) {
  if constexpr (std::is_same_v<T, float>) return _mm512_maskz_loadu_ps(mask, p);
  else if constexpr (std::is_same_v<T, fp16>) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p));
  else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
}

// ---- fp32 ------------------------------------------------------------------------------------------------------

/// Transposes the 16 x 16 matrix held in r (row i in r[i]) in place: unpack pairs, then quadruples, then 128-bit
/// lanes twice.
QFORMER_TARGET_AVX512 inline void transpose_16x16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const int a = 4 * i;
    const __m512d t0 = _mm512_castps_pd(t[a]), t1 = _mm512_castps_pd(t[a + 1]), t2 = _mm512_castps_pd(t[a + 2]),
                  t3 = _mm512_castps_pd(t[a + 3]);
    r[a] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    r[a + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    r[a + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    r[a + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int g = 0; g < 2; ++g)  // r[4 g + j]: column j of each 128-bit lane of rows 4 g .. 4 g + 3 (and + 8)
    for (int j = 0; j < 4; ++j) {
      t[8 * g + j] = _mm512_shuffle_f32x4(r[8 * g + j], r[8 * g + 4 + j], 0x88);
      t[8 * g + 4 + j] = _mm512_shuffle_f32x4(r[8 * g + j], r[8 * g + 4 + j], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
  }
}

/// dst[c * width + j] = element c of row j for j < rows (row j at src + j * row_bytes, 32-bit elements, any
/// alignment), 0 for rows <= j < width; c in [0, columns). 16 x 16 blocks transposed in registers.
QFORMER_TARGET_AVX512 inline void transpose_into_panel(const void* src, index_t row_bytes, index_t rows, index_t width,
                                                       index_t columns, float* dst) {
  const char* base = static_cast<const char*>(src);
  for (index_t c0 = 0; c0 < columns; c0 += 16) {
    const index_t n = std::min<index_t>(16, columns - c0);
    const __mmask16 mask = static_cast<__mmask16>((1u << n) - 1u);
    for (index_t g = 0; g < width; g += 16) {
      __m512 block[16];
      for (index_t i = 0; i < 16; ++i)
        block[i] = g + i < rows ? _mm512_maskz_loadu_ps(mask, base + (g + i) * row_bytes + c0 * 4) : _mm512_setzero_ps();
      transpose_16x16(block);
      const __mmask16 lanes = static_cast<__mmask16>((1u << std::min<index_t>(16, width - g)) - 1u);
      for (index_t c = 0; c < n; ++c) _mm512_mask_storeu_ps(dst + (c0 + c) * width + g, lanes, block[c]);
    }
  }
}

/// One packed panel: dst[k * width + j] = x[j][k] for j < rows, 0 for rows <= j < width; k in [0, kc).
inline void pack_panel_f32(const float* x, index_t ldx, index_t rows, index_t width, index_t kc, float* dst) {
  transpose_into_panel(x, ldx * 4, rows, width, kc, dst);
}

/// Rows of w a micro-tile pulls into L2 while it computes: row r at `next + r * ldw` for each bit r of `rows`, one
/// cache line per 64 bytes of the tile's depth. The driver names the next depth block's rows, a few per panel, so
/// that block streams in behind the arithmetic instead of stalling the first panel that reads it.
struct prefetch_rows_plan {
  const void* next = nullptr;
  unsigned rows = 0;
};

/// Issues, for depth offset `byte` of a tile, the plan's prefetch of that cache line in each of its rows.
template <int R>
inline __attribute__((always_inline)) void prefetch_plan_line(const prefetch_rows_plan& plan, index_t row_bytes, index_t byte) {
  const char* base = static_cast<const char*>(plan.next) + byte;
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
    if (plan.rows >> r & 1u) _mm_prefetch(base + r * row_bytes, _MM_HINT_T1);
}

/// out (R, NV*16) = w rows [0, R) (ldw) · xp panel (K, NV*16), plus out's own values when `accumulate`.
template <int R, int NV>
QFORMER_TARGET_AVX512 inline void tile_f32(const float* w, index_t ldw, const float* xp, index_t K, float* out,
                                           bool accumulate, const prefetch_rows_plan& prefetch = {}) {
  __m512 acc[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = accumulate ? _mm512_loadu_ps(out + r * (NV * 16) + v * 16) : _mm512_setzero_ps();
  for (index_t k0 = 0; k0 < K; k0 += 16) {
    if (prefetch.rows) prefetch_plan_line<R>(prefetch, ldw * 4, k0 * 4);
    const index_t k1 = std::min(K, k0 + 16);
    for (index_t k = k0; k < k1; ++k) {
      __m512 xv[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) xv[v] = _mm512_loadu_ps(xp + k * (NV * 16) + v * 16);
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) {
        const __m512 wb = _mm512_set1_ps(w[r * ldw + k]);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(wb, xv[v], acc[r][v]);
      }
    }
  }
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + r * (NV * 16) + v * 16, acc[r][v]);
}

// ---- GEMV (decode: at most gemv_max_rows rows of x) -----------------------------------------------------------

/// Calls fn.template operator()<MM>() for MM = M in [1, gemv_max_rows] (8).
template <class Fn>
inline void dispatch_gemv_rows(index_t M, Fn&& fn) {
  switch (M) {
    case 1: fn.template operator()<1>(); break;
    case 2: fn.template operator()<2>(); break;
    case 3: fn.template operator()<3>(); break;
    case 4: fn.template operator()<4>(); break;
    case 5: fn.template operator()<5>(); break;
    case 6: fn.template operator()<6>(); break;
    case 7: fn.template operator()<7>(); break;
    default: fn.template operator()<8>(); break;
  }
}

/// Rows of w per GEMV block for MM rows of x, weights in cache (a panel GEMM's tail rows): R x MM accumulators, the
/// R weight vectors of a step and one x vector fit the 32 registers (8, 8, 4, 4, 4, 4, 3, 3). Every x vector is
/// loaded once per block and step, so more weight rows per block read x (beyond L1 from 5 rows of 2560 fp32) less
/// often, and R x MM chains of dot products hide their latency.
template <int MM>
inline constexpr int gemv_block_rows = MM <= 2 ? 8 : MM <= 6 ? 4 : 3;

/// Rows of w per GEMV block when the weights stream from memory (gemv_driver): at 8 rows of x, blocks of 3 stream
/// OPT-2.7b's weights 11-16 % faster than blocks of 2 (machine A's Xeon). One row of x is bound by memory alone,
/// and there one weight row at a time is best: each thread then reads one sequential stream, where a block of 8
/// rows reads 8 streams a row apart. On the AMD EPYC VM (machine C) that streams int8 weights 1.3-1.9x faster (27
/// -> 36-54 GB/s from 420 MB, 2 threads) and bf16 1.2-1.4x, without software prefetch, which the hardware's stream
/// prefetcher makes redundant there.
template <int MM>
inline constexpr int gemv_stream_rows = MM == 1 ? 1 : gemv_block_rows<MM>;

/// Where one streamed GEMV block reads (gemv_driver): weight rows [n0, n0 + R) over depth [k0, k0 + kc), and where
/// the block the same thread computes next starts (row next_n, depth next_k; the block itself when none follows),
/// which it prefetches while it computes.
struct gemv_piece {
  index_t n0, k0, kc, next_n, next_k;
};

/// Bytes of each weight row a streamed GEMV block reads at a time, from 2 rows of x on: the depth is cut into
/// pieces of at least this many bytes, so that the rows of x a piece reads (8 rows: 20 KiB of bf16 or int8, as
/// much fp32) stay in L1 beside the weights. At 8 rows of bf16 x over the whole depth of 2560 (40 KiB, more
/// than Zen 4's 32 KiB L1), the blocks' loads from memory and their dot products did not overlap: 24-25 GB/s
/// streamed where the plain read ran 36-65 and the same blocks over cached weights 46; in pieces of 2560 bytes,
/// 33-37 GB/s in the same runs (machine C, 420 MB of weights, 2 threads). Pieces of 2048 bytes were slower
/// (30 GB/s): each block is then too short for its prefetch of the next to arrive in time.
inline constexpr index_t gemv_piece_bytes = 2560;

/// The depth of one piece for K elements of `element_bytes` each at MM rows of x: K itself for one row of x (one
/// sequential stream a thread, which the hardware prefetcher keeps at the read rate) and for rows shorter than two
/// pieces; else K in equal pieces of at least gemv_piece_bytes, rounded up to whole 64-byte vectors of weights
/// (every GEMV kernel's step: 16 fp32, 32 bf16 or 64 int8 elements).
template <int MM>
inline index_t gemv_depth_piece(index_t K, index_t element_bytes) {
  const index_t pieces = MM == 1 ? 1 : std::max<index_t>(1, K * element_bytes / gemv_piece_bytes);
  if (pieces == 1) return K;
  const index_t step = 64 / element_bytes;
  return ((K + pieces - 1) / pieces + step - 1) / step * step;
}

/// Weight rows a thread finishes before it moves on (a multiple of every block height: 1, 2, 3, 4, 8): each
/// depth piece of these rows in turn, their partial sums (8 x 96) kept on the stack.
inline constexpr index_t gemv_group_rows = 96;

/// The GEMV loop every element type shares: output columns in blocks of R = gemv_stream_rows<MM> rows of w, the
/// blocks split across threads in contiguous shares (one stream of weights a thread), the last N mod R rows one
/// at a time. A thread walks its share in groups of gemv_group_rows rows and, within a group, the depth in pieces
/// of `piece` (gemv_depth_piece): all the group's blocks over [0, piece), then over [piece, 2 piece), ...,
/// adding the pieces' sums. block.template operator()<R>(gemv_piece, sums, ld) adds the dot products of w rows
/// [n0, n0 + R) over [k0, k0 + kc) to sums[m * ld + r] (of type Sum) and prefetches the next piece;
/// put(n0, count, sums, ld) stores outputs [n0, n0 + count) of every row m of x from sums[m * ld + i]. Split across
/// threads from gemv_split_weights weights (N x K) on, with at least 8 blocks a thread. The sums of a group lie
/// one row of x after the other (MM x 96), so that put reads each row's outputs side by side, 16 at a time.
template <int MM, class Sum = float, class Block, class Put>
inline void gemv_driver(index_t N, index_t K, index_t piece, Block&& block, Put&& put) {
  constexpr int R = gemv_stream_rows<MM>;
  constexpr index_t group_blocks = gemv_group_rows / R;
  static_assert(gemv_group_rows % R == 0);
  const index_t blocks = N / R;
  const int threads = N * K >= gemv_split_weights ? kernel_threads(blocks / 8 + 1) : 1;
  parallel_for(threads, threads, [&](index_t t, index_t) {
    const index_t b0 = blocks * t / threads, b1 = blocks * (t + 1) / threads;
    Sum sums[MM * gemv_group_rows];  // the group's outputs, one row of x after the other
    for (index_t g0 = b0; g0 < b1; g0 += group_blocks) {
      const index_t g1 = std::min(b1, g0 + group_blocks);
      std::fill(sums, sums + MM * gemv_group_rows, Sum(0));
      for (index_t k0 = 0; k0 < K; k0 += piece) {
        for (index_t b = g0; b < g1; ++b) {
          gemv_piece at{b * R, k0, std::min(piece, K - k0), b * R, k0};
          if (b + 1 < g1) at.next_n = (b + 1) * R;  // the next block, same piece
          else if (k0 + piece < K) at.next_n = g0 * R, at.next_k = k0 + piece;  // the group's first, next piece
          else if (g1 < b1) at.next_n = g1 * R, at.next_k = 0;  // the next group's first
          block.template operator()<R>(at, sums + (b - g0) * R, gemv_group_rows);
        }
      }
      put(g0 * R, (g1 - g0) * R, static_cast<const Sum*>(sums), gemv_group_rows);
    }
    if (t == threads - 1)
      for (index_t n = blocks * R; n < N; ++n) {
        std::fill(sums, sums + MM, Sum(0));
        block.template operator()<1>(gemv_piece{n, 0, K, n, 0}, sums, 1);
        put(n, 1, static_cast<const Sum*>(sums), 1);
      }
  });
}

/// How far ahead (bytes) the GEMV kernels prefetch each weight row they stream, in blocks of more than one row.
inline constexpr index_t gemv_prefetch_bytes = 512;  // measured: +2-10 % GB/s over none, 1024, 2048 (machine A)

/// Prefetches the cache line `ahead` bytes past p in each of R rows (row stride in bytes).
template <int R>
inline void prefetch_rows(const void* p, index_t row_bytes, index_t ahead) {
  const char* c = static_cast<const char*>(p) + ahead;
  for (int r = 0; r < R; ++r) _mm_prefetch(c + r * row_bytes, _MM_HINT_T0);
}

/// A streamed GEMV block (gemv_driver) pulls the next block into L2 while it computes: at the step that reads byte
/// `row_byte` of each of its R rows, it prefetches the same byte of each of the next block's R rows (`next`, rows
/// `row_bytes` apart), so that by its end the whole next piece has been asked for. Without it, at 5-8 rows of x
/// (where a block computes about as long as memory takes to deliver it) the loads and the arithmetic did not
/// overlap: int8 at 8 rows streamed 15.7 GB/s of a 35.1 GB/s read rate on machine C, 34.5 with it (T1: into L2;
/// T0 or NTA 22 GB/s, two blocks ahead no better; a standalone probe over 420 MB).
template <int R>
inline __attribute__((always_inline)) void prefetch_next_block(const void* next, index_t row_bytes, index_t row_byte) {
  const char* c = static_cast<const char*>(next) + row_byte;
  for (int r = 0; r < R; ++r) _mm_prefetch(c + r * row_bytes, _MM_HINT_T1);
}

/// Whether gemv_driver's blocks prefetch the next block (prefetch_next_block) at MM rows of x: from 2 rows on. One
/// row of x is bound by memory alone, and the hardware's stream prefetcher already keeps its one sequential stream
/// per thread at the read rate (bench_linear, 1 x 2560 -> 81920: 33-44 GB/s with or without, within the VM's noise).
template <int MM>
inline constexpr bool gemv_prefetch_next = MM > 1;

/// The prefetch a GEMV block issues at the step that reads byte `row_byte` of its R rows (row_bytes apart, K_bytes
/// of each read): streamed blocks the next block's rows at `next` (prefetch_next_block), blocks over cached weights
/// (a panel GEMM's tail rows) gemv_prefetch_bytes ahead in their own rows.
template <int R, bool Streamed>
inline __attribute__((always_inline)) void gemv_prefetch(const void* w, const void* next, index_t row_bytes, index_t row_byte,
                                                         index_t K_bytes) {
  if constexpr (Streamed) prefetch_next_block<R>(next, row_bytes, row_byte);
  else if (R > 1 && row_byte + gemv_prefetch_bytes < K_bytes)
    prefetch_rows<R>(static_cast<const char*>(w) + row_byte, row_bytes, gemv_prefetch_bytes);
}

/// y rows [0, MM) of columns [n0, n0 + R): R rows of w against MM rows of x, 16 k at a time: up to 4 rows of x
/// with the x vectors held in registers (as measured best), more with the R weight vectors held instead.
/// `Streamed`: gemv_driver's blocks, which prefetch the next block's rows at `next` (the same depth range).
template <int R, int MM, bool Streamed = false>
QFORMER_TARGET_AVX512 inline void gemv_block_f32(const float* x, index_t ldx, const float* w, index_t ldw, index_t K,
                                                 float* sums /* += [m * ld + r] */, index_t ld,
                                                 const float* next = nullptr) {
  __m512 acc[R][MM];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_setzero_ps();
  index_t k = 0;
  for (; k + 16 <= K; k += 16) {
    gemv_prefetch<R, Streamed>(w, next, ldw * 4, k * 4, K * 4);
    if constexpr (MM <= 4) {  // the x vectors held, each weight vector loaded once
      __m512 xv[MM];
      for (int m = 0; m < MM; ++m) xv[m] = _mm512_loadu_ps(x + m * ldx + k);
      for (int r = 0; r < R; ++r) {
        const __m512 wv = _mm512_loadu_ps(w + r * ldw + k);
        for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_fmadd_ps(wv, xv[m], acc[r][m]);
      }
    } else {  // the weight vectors held, each x vector loaded once
      __m512 wv[R];
      for (int r = 0; r < R; ++r) wv[r] = _mm512_loadu_ps(w + r * ldw + k);
      for (int m = 0; m < MM; ++m) {
        const __m512 xv = _mm512_loadu_ps(x + m * ldx + k);
        for (int r = 0; r < R; ++r) acc[r][m] = _mm512_fmadd_ps(wv[r], xv, acc[r][m]);
      }
    }
  }
  if (k < K) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (K - k)) - 1u);
    __m512 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm512_maskz_loadu_ps(mask, w + r * ldw + k);
    for (int m = 0; m < MM; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + m * ldx + k);
      for (int r = 0; r < R; ++r) acc[r][m] = _mm512_fmadd_ps(wv[r], xv, acc[r][m]);
    }
  }
  add_lane_sums<R, MM>(acc, sums, ld);
}

/// y[m][n0, n0 + count) = sums[m * ld + i] + b[n0 + i], i < count, for the M rows of x, 16 outputs at a time.
QFORMER_TARGET_AVX512 inline void store_gemv_outputs(index_t M, index_t n0, index_t count, const float* sums,
                                                     index_t ld, const float* b, float* y, index_t ldy) {
  for (index_t i = 0; i < count; i += 16) {
    const __mmask16 mask = static_cast<__mmask16>(count - i >= 16 ? 0xffffu : (1u << (count - i)) - 1u);
    const __m512 bias = b ? _mm512_maskz_loadu_ps(mask, b + n0 + i) : _mm512_setzero_ps();
    for (index_t m = 0; m < M; ++m)
      _mm512_mask_storeu_ps(y + m * ldy + n0 + i, mask, _mm512_add_ps(_mm512_maskz_loadu_ps(mask, sums + m * ld + i), bias));
  }
}

QFORMER_TARGET_AVX512 inline void gemv_f32(const float* x, index_t ldx, const float* w, index_t ldw, const float* b,
                                           float* y, index_t ldy, index_t M, index_t N, index_t K) {
  dispatch_gemv_rows(M, [&]<int MM>() {
    gemv_driver<MM>(
        N, K, gemv_depth_piece<MM>(K, 4),
        [&]<int R>(const gemv_piece& at, float* sums, index_t ld) {
          gemv_block_f32<R, MM, gemv_prefetch_next<MM>>(x + at.k0, ldx, w + at.n0 * ldw + at.k0, ldw, at.kc, sums,
                                                        ld, w + at.next_n * ldw + at.next_k);
        },
        [&](index_t n0, index_t count, const float* sums, index_t ld) {
          store_gemv_outputs(MM, n0, count, sums, ld, b, y, ldy);
        });
  });
}

// ---- bf16 (avx512_bf16) --------------------------------------------------------------------------------------

/// The 32-bit pair (lo = a[k], hi = a[k + 1]) of a bf16 row, with a[K] read as 0.
inline std::uint32_t pair_at(const std::uint16_t* row, index_t k, index_t K) {
  const std::uint32_t lo = row[k], hi = k + 1 < K ? row[k + 1] : 0u;
  return lo | (hi << 16);
}

/// One packed panel of k pairs: dst[k2 * width + j] = (x[j][2 k2], x[j][2 k2 + 1]) for j < rows (x[j][kc] read as
/// 0), 0 for rows <= j < width; k2 in [0, ceil(kc / 2)). The whole pairs are 32-bit elements of each row, transposed.
inline void pack_panel_bf16(const std::uint16_t* x, index_t ldx, index_t rows, index_t width, index_t kc, std::uint32_t* dst) {
  const index_t whole = kc / 2;
  transpose_into_panel(x, ldx * 2, rows, width, whole, reinterpret_cast<float*>(dst));
  if (kc % 2)  // the last pair: (x[j][kc - 1], 0)
    for (index_t j = 0; j < width; ++j) dst[whole * width + j] = j < rows ? pair_at(x + j * ldx, kc - 1, kc) : 0u;
}

/// One k pair of a bf16 tile: acc[r][v] += xp pair row · (w[r][2 k2], w[r][2 k2 + 1]); `Whole`: both in the row.
template <int R, int NV, bool Whole>
QFORMER_TARGET_AVX512_BF16 inline __attribute__((always_inline)) void tile_bf16_step(
    __m512 (&acc)[R][NV], const std::uint32_t* xrow, const std::uint16_t* w, index_t ldw, index_t k2, index_t K) {
  __m512bh xv[NV];
#pragma GCC unroll 2
  for (int v = 0; v < NV; ++v) xv[v] = (__m512bh)_mm512_loadu_si512(xrow + v * 16);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r) {
    std::uint32_t pair;
    if constexpr (Whole) std::memcpy(&pair, w + r * ldw + 2 * k2, 4);
    else pair = pair_at(w + r * ldw, 2 * k2, K);  // odd K: (w[K - 1], 0)
    const __m512bh wb = (__m512bh)_mm512_set1_epi32(static_cast<int>(pair));
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], xv[v], wb);
  }
}

/// out (R, NV*16) (+)= w rows [0, R) (ldw, bf16) · xp panel of pairs, as tile_f32.
template <int R, int NV>
QFORMER_TARGET_AVX512_BF16 inline void tile_bf16(const std::uint16_t* w, index_t ldw, const std::uint32_t* xp, index_t K,
                                                 float* out, bool accumulate, const prefetch_rows_plan& prefetch = {}) {
  const index_t K2 = (K + 1) / 2, full = K / 2;  // pairs; the last one half-filled when K is odd
  __m512 acc[R][NV];
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[r][v] = accumulate ? _mm512_loadu_ps(out + r * (NV * 16) + v * 16) : _mm512_setzero_ps();
  if (!prefetch.rows) {
    for (index_t k2 = 0; k2 < full; ++k2) tile_bf16_step<R, NV, true>(acc, xp + k2 * (NV * 16), w, ldw, k2, K);
  } else {
    for (index_t c0 = 0; c0 < full; c0 += 16) {  // 16 pairs: one cache line of each weight row
      prefetch_plan_line<R>(prefetch, ldw * 2, c0 * 4);
      const index_t c1 = std::min(full, c0 + 16);
      for (index_t k2 = c0; k2 < c1; ++k2) tile_bf16_step<R, NV, true>(acc, xp + k2 * (NV * 16), w, ldw, k2, K);
    }
  }
  if (K2 > full) tile_bf16_step<R, NV, false>(acc, xp + full * (NV * 16), w, ldw, full, K);
#pragma GCC unroll 12
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(out + r * (NV * 16) + v * 16, acc[r][v]);
}

/// gemv_block_f32 for bf16 x and w, 32 k at a time (vdpbf16ps on pairs).
template <int R, int MM, bool Streamed = false>
QFORMER_TARGET_AVX512_BF16 inline void gemv_block_bf16(const std::uint16_t* x, index_t ldx, const std::uint16_t* w,
                                                       index_t ldw, index_t K, float* sums /* += [m * ld + r] */,
                                                       index_t ld, const std::uint16_t* next = nullptr) {
  __m512 acc[R][MM];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_setzero_ps();
  index_t k = 0;
  for (; k + 32 <= K; k += 32) {
    gemv_prefetch<R, Streamed>(w, next, ldw * 2, k * 2, K * 2);
    if constexpr (MM <= 4) {  // as gemv_block_f32
      __m512bh xv[MM];
      for (int m = 0; m < MM; ++m) xv[m] = (__m512bh)_mm512_loadu_si512(x + m * ldx + k);
      for (int r = 0; r < R; ++r) {
        const __m512bh wv = (__m512bh)_mm512_loadu_si512(w + r * ldw + k);
        for (int m = 0; m < MM; ++m) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], wv, xv[m]);
      }
    } else {
      __m512bh wv[R];
      for (int r = 0; r < R; ++r) wv[r] = (__m512bh)_mm512_loadu_si512(w + r * ldw + k);
      for (int m = 0; m < MM; ++m) {
        const __m512bh xv = (__m512bh)_mm512_loadu_si512(x + m * ldx + k);
        for (int r = 0; r < R; ++r) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], wv[r], xv);
      }
    }
  }
  if (k < K) {
    const __mmask32 mask = static_cast<__mmask32>((std::uint64_t{1} << (K - k)) - 1u);
    __m512bh wv[R];
    for (int r = 0; r < R; ++r) wv[r] = (__m512bh)_mm512_maskz_loadu_epi16(mask, w + r * ldw + k);
    for (int m = 0; m < MM; ++m) {
      const __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(mask, x + m * ldx + k);
      for (int r = 0; r < R; ++r) acc[r][m] = _mm512_dpbf16_ps(acc[r][m], wv[r], xv);
    }
  }
  add_lane_sums<R, MM>(acc, sums, ld);
}

/// store_gemv_outputs for bf16 outputs, rounded to nearest even (vcvtneps2bf16, as bf16(float)).
QFORMER_TARGET_AVX512_BF16 inline void store_gemv_outputs(index_t M, index_t n0, index_t count, const float* sums,
                                                          index_t ld, const bf16* b, bf16* y, index_t ldy) {
  for (index_t i = 0; i < count; i += 16) {
    const __mmask16 mask = static_cast<__mmask16>(count - i >= 16 ? 0xffffu : (1u << (count - i)) - 1u);
    const __m512 bias = b ? load_as_floats(b + n0 + i, mask) : _mm512_setzero_ps();
    for (index_t m = 0; m < M; ++m) {
      const __m512 out = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, sums + m * ld + i), bias);
      _mm256_mask_storeu_epi16(y + m * ldy + n0 + i, mask, (__m256i)_mm512_cvtneps_pbh(out));
    }
  }
}

QFORMER_TARGET_AVX512_BF16 inline void gemv_bf16(const bf16* x, index_t ldx, const bf16* w, index_t ldw, const bf16* b,
                                                 bf16* y, index_t ldy, index_t M, index_t N, index_t K) {
  const auto* x16 = reinterpret_cast<const std::uint16_t*>(x);
  const auto* w16 = reinterpret_cast<const std::uint16_t*>(w);
  dispatch_gemv_rows(M, [&]<int MM>() {
    gemv_driver<MM>(
        N, K, gemv_depth_piece<MM>(K, 2),
        [&]<int R>(const gemv_piece& at, float* sums, index_t ld) {
          gemv_block_bf16<R, MM, gemv_prefetch_next<MM>>(x16 + at.k0, ldx, w16 + at.n0 * ldw + at.k0, ldw, at.kc, sums,
                                                         ld, w16 + at.next_n * ldw + at.next_k);
        },
        [&](index_t n0, index_t count, const float* sums, index_t ld) {
          store_gemv_outputs(MM, n0, count, sums, ld, b, y, ldy);
        });
  });
}

// ---- the GEMM drivers ---------------------------------------------------------------------------------------------

/// Rows per block for M rows and blocks of at most max_rows (a multiple of 16): as few blocks as that allows, of
/// equal size (rounded up to 16), so that no block is a sliver that streams all of w for a handful of rows
/// (257 = 256 + 1 would read the weights twice, the second time for one row).
inline index_t balanced_row_block(index_t M, index_t max_rows) {
  const index_t blocks = (M + max_rows - 1) / max_rows;
  return ((M + blocks - 1) / blocks + 15) / 16 * 16;
}

/// Calls tile(r0, r) over [0, rows) in micro-tiles of 12, 8, 4, 2, 1 rows of w.
template <class Tile>
inline void for_tile_rows(index_t rows, Tile&& tile) {
  index_t r0 = 0;
  while (r0 < rows) {
    const index_t left = rows - r0;
    const int r = left >= 12 ? 12 : left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1;
    tile(r0, r);
    r0 += r;
  }
}

/// The AMX and int8 kernels' driver: runs Kernel's micro-tiles over y (M, N): for each block of rows and of depth,
/// x's block is packed (panels in parallel) and held in L2, then the n-tiles are split across threads, each
/// n-tile passing over every panel of the block. Kernel provides: `packed` (element of xp), `sum` (of a tile's
/// outputs), tile_n (rows of w per n-tile), block_m, block_k, units(kc) (packed elements per row of a panel for depth kc),
/// pack(m0, rows, width, k0, kc, dst), split(rows, fn) (calls fn(r0, r) over the micro-tiles of an n-tile),
/// tile(r, nv, n0, k0, kc, panel, out) (out[i * nv * 16 + j] = y[m0 + j][n0 + i] summed over the depth block)
/// and emit(m0, valid, n0, r, out, width, first_k_block, last_k_block) (stores the tile's `valid` x rows).
template <class Kernel>
void blocked_gemm(const Kernel& kernel, index_t M, index_t N, index_t K, typename Kernel::packed* xp) {
  constexpr index_t tile_n = Kernel::tile_n;
  const index_t tiles = (N + tile_n - 1) / tile_n, row_block = balanced_row_block(M, Kernel::block_m);
  for (index_t mb = 0; mb < M; mb += row_block) {
    const index_t rows_in_block = std::min(row_block, M - mb), panels = (rows_in_block + 31) / 32;
    for (index_t k0 = 0; k0 < K; k0 += Kernel::block_k) {
      const index_t kc = std::min(Kernel::block_k, K - k0), units = Kernel::units(kc);
      const bool first = k0 == 0, last = k0 + kc == K;
      parallel_for_then(
          kernel_threads(tiles), panels,
          [&](index_t p) {
            const index_t m0 = p * 32;
            kernel.pack(mb + m0, std::min<index_t>(32, rows_in_block - m0), panel_width(rows_in_block, m0), k0, kc,
                        xp + m0 * units);
          },
          tiles,
          [&](index_t t) {
            alignas(64) typename Kernel::sum out[tile_n * 32];
            const index_t n0 = t * tile_n, rows = std::min<index_t>(tile_n, N - n0);
            for (index_t m0 = 0; m0 < rows_in_block; m0 += 32) {
              const index_t width = panel_width(rows_in_block, m0), valid = std::min<index_t>(width, rows_in_block - m0);
              kernel.split(rows, [&](index_t r0, int r) {
                kernel.tile(r, static_cast<int>(width / 16), n0 + r0, k0, kc, xp + m0 * units, out);
                kernel.emit(mb + m0, valid, n0 + r0, r, out, width, first, last);
              });
            }
          });
    }
  }
}

/// Calls fn.template operator()<R, NV>() for the runtime (r, nv) of a micro-tile.
template <class Fn>
inline void dispatch_tile(int r, int nv, Fn&& fn) {
  if (nv == 2) {
    switch (r) {
      case 12: fn.template operator()<12, 2>(); break;
      case 8: fn.template operator()<8, 2>(); break;
      case 4: fn.template operator()<4, 2>(); break;
      case 2: fn.template operator()<2, 2>(); break;
      default: fn.template operator()<1, 2>(); break;
    }
  } else {
    switch (r) {
      case 12: fn.template operator()<12, 1>(); break;
      case 8: fn.template operator()<8, 1>(); break;
      case 4: fn.template operator()<4, 1>(); break;
      case 2: fn.template operator()<2, 1>(); break;
      default: fn.template operator()<1, 1>(); break;
    }
  }
}

/// Depth per block for K and blocks of at most max_k: as few blocks as that allows, of equal size rounded up to 16
/// (K = 1408 with 256: five of 240 and one of 208), so that no block is a sliver.
inline index_t balanced_depth_block(index_t K, index_t max_k) {
  const index_t blocks = (K + max_k - 1) / max_k;
  return std::min(K, ((K + blocks - 1) / blocks + 15) / 16 * 16);
}

/// The rows of w (from n0, depth from k0; bit r of `rows` for row n0 + r) a micro-tile prefetches.
struct next_rows {
  index_t n0 = 0, k0 = 0;
  unsigned rows = 0;

  /// The micro-tile's prefetch plan for weights w (row stride ldw elements).
  template <class E>
  prefetch_rows_plan in(const E* w, index_t ldw) const { return {rows ? w + n0 * ldw + k0 : nullptr, rows}; }
};

/// Block sizes, thread count and scratch sizes of one panel_gemm call (the caller allocates from them).
template <class Kernel>
struct panel_gemm_plan {
  index_t M, N, K, tiles, row_block, depth_block;
  int threads;
  /// threads_: the team's size, or 0 for kernel_threads (1 inside a parallel region).
  panel_gemm_plan(index_t M_, index_t N_, index_t K_, int threads_ = 0)
      : M(M_), N(N_), K(K_), tiles((N_ + Kernel::tile_n - 1) / Kernel::tile_n),
        row_block(balanced_row_block(M_, Kernel::block_m)),
        // One panel of x (up to 32 rows: the Q-Former's queries) is read by every n-tile whatever its depth, and
        // each weight block only once: the whole depth in one block then (no sums wait between blocks).
        depth_block(M_ <= 32 ? K_ : balanced_depth_block(K_, Kernel::block_k)),
        threads(threads_ > 0 ? threads_ : kernel_threads(tiles)) {}
  index_t padded_block() const { return padded_rows(std::min(M, row_block)); }
  /// Packed elements of x per block of rows.
  index_t packed_units() const { return padded_block() * Kernel::units(K); }
  /// Partial sums per thread (none when one depth block covers K).
  index_t partial_per_thread() const {
    return depth_block >= K ? 0 : (padded_block() + 31) / 32 * std::min(tiles, Kernel::block_n_tiles) * Kernel::tile_n * 32;
  }
  index_t partial_floats() const { return partial_per_thread() * threads; }
};

/// The GEMM driver, "panel in L1, weights in L2". For each block of up to Kernel::block_m rows of x, the whole
/// block is packed once (panels in parallel: for each depth block k0, panel m0 at xp + units(k0) * padded +
/// m0 * units(kc)). The n-tiles are then cut into one contiguous share per thread; a thread walks its share in
/// blocks of block_n_tiles n-tiles (block_n_tiles x tile_n rows of w by kc: a few hundred KB, held in L2), for
/// each depth block of at most block_k (a 32 x kc panel of x: 32 KB, held in L1) and each panel, over the
/// n-tiles of the block: each micro-tile reads its panel from L1 and its 12 rows of w from L2.
/// Sums of a tile over the depth blocks wait in `partial` (tile layout, per thread; only when K spans blocks) and
/// Kernel::emit stores each finished tile once (transposed, with the bias).
/// Kernel provides: `packed`, `sum`, tile_n, block_m, block_k, block_n_tiles, units(kc), pack(m0, rows, width,
/// k0, kc, dst), split(rows, fn) (fn(r0, r) over an n-tile's micro-tiles), tile(r, nv, n0, k0, kc, panel, out,
/// accumulate, prefetch) (out[i * nv * 16 + j] (+)= the depth block's y[m0 + j][n0 + i]), emit(m0, valid, n0, r,
/// out, width), gemv_tail_rows, gemv(m0, rows, n0, count, k0, kc, sums) (sums[m * count + n] += the depth block's
/// y[m0 + m][n0 + n]) and emit_rows(m0, rows, n0, count, sums).
template <class Kernel>
void panel_gemm(const Kernel& kernel, const panel_gemm_plan<Kernel>& plan, typename Kernel::packed* xp,
                typename Kernel::sum* partial) {
  constexpr index_t tile_n = Kernel::tile_n, tile_sums = tile_n * 32;
  const index_t M = plan.M, N = plan.N, K = plan.K, tiles = plan.tiles, kc_max = plan.depth_block;
  for (index_t mb = 0; mb < M; mb += plan.row_block) {
    const index_t rows_in_block = std::min(plan.row_block, M - mb), panels = (rows_in_block + 31) / 32;
    const index_t padded = padded_rows(rows_in_block);
    // A last panel of at most Kernel::gemv_tail_rows rows (the 257th token of one image) is no micro-tile's
    // work: a 16-wide tile for it would be mostly padding; a GEMV reads those rows of x against the weight block
    // while it is in L2.
    const index_t tail_m0 = (panels - 1) * 32, tail_rows = rows_in_block - tail_m0;
    const bool gemv_tail = tail_rows <= Kernel::gemv_tail_rows;
    const index_t tile_panels = gemv_tail ? panels - 1 : panels;
    const bool one_pass = tile_panels == 1;  // every tile a first read of its weights
    parallel_for_then(
        plan.threads, tile_panels,
        [&](index_t p) {
          const index_t m0 = p * 32, rows = std::min<index_t>(32, rows_in_block - m0);
          for (index_t k0 = 0; k0 < K; k0 += kc_max) {
            const index_t kc = std::min(kc_max, K - k0);
            kernel.pack(mb + m0, rows, panel_width(rows_in_block, m0), k0, kc,
                        xp + Kernel::units(k0) * padded + m0 * Kernel::units(kc));
          }
        },
        plan.threads,
        [&](index_t slice) {
          const index_t t_begin = tiles * slice / plan.threads, t_end = tiles * (slice + 1) / plan.threads;
          typename Kernel::sum* part = partial + slice * plan.partial_per_thread();
          alignas(64) typename Kernel::sum single[tile_sums];
          typename Kernel::sum tail[std::max<index_t>(1, Kernel::gemv_tail_rows * Kernel::block_n_tiles * tile_n)];  // (tail rows, n-block columns)
          for (index_t nb = t_begin; nb < t_end; nb += Kernel::block_n_tiles) {
            const index_t nb_end = std::min(t_end, nb + Kernel::block_n_tiles);
            const index_t nb_n0 = nb * tile_n, nb_columns = std::min(N, nb_end * tile_n) - nb_n0;
            if (gemv_tail) std::fill_n(tail, tail_rows * nb_columns, typename Kernel::sum{});
            for (index_t k0 = 0; k0 < K; k0 += kc_max) {
              const index_t kc = std::min(kc_max, K - k0);
              const bool first = k0 == 0, last = k0 + kc == K;
              const typename Kernel::packed* xk = xp + Kernel::units(k0) * padded;
              if (gemv_tail) kernel.gemv(mb + tail_m0, tail_rows, nb_n0, nb_columns, k0, kc, tail);
              for (index_t p = 0; p < tile_panels; ++p) {
                const index_t m0 = p * 32, width = panel_width(rows_in_block, m0);
                const index_t valid = std::min<index_t>(width, rows_in_block - m0);
                // Each pass over the panels prefetches its share of the rows of the block that comes next
                // (the next depth block of these n-tiles, or the next n-block's first), row r in pass r % panels.
                // With one panel every tile is a first read: each prefetches the next tile's rows instead.
                unsigned share = 0;
                for (index_t r = p; r < tile_n; r += tile_panels) share |= 1u << r;
                const index_t next_k0 = last && !one_pass ? 0 : k0 + (one_pass ? 0 : kc);
                const index_t next_shift = one_pass ? tile_n : last ? Kernel::block_n_tiles * tile_n : 0;
                for (index_t t = nb; t < nb_end; ++t) {
                  const index_t n0 = t * tile_n, rows = std::min<index_t>(tile_n, N - n0);
                  typename Kernel::sum* out =
                      first && last ? single : part + (p * std::min(tiles, Kernel::block_n_tiles) + (t - nb)) * tile_sums;
                  const index_t next_n0 = n0 + next_shift;
                  const bool next_exists = one_pass ? t + 1 < nb_end : next_shift == 0 || t + Kernel::block_n_tiles < t_end;
                  const bool next_whole = next_exists && next_n0 + tile_n <= std::min(N, t_end * tile_n);
                  const next_rows prefetch{next_n0, next_k0, next_whole ? share : 0u};
                  kernel.split(rows, [&](index_t r0, int r) {
                    typename Kernel::sum* sub = out + r0 * width;
                    kernel.tile(r, static_cast<int>(width / 16), n0 + r0, k0, kc, xk + m0 * Kernel::units(kc), sub, !first,
                                r0 == 0 && r == tile_n ? prefetch : next_rows{});
                    if (last) kernel.emit(mb + m0, valid, n0 + r0, r, sub, width);
                  });
                }
              }
            }
            if (gemv_tail) kernel.emit_rows(mb + tail_m0, tail_rows, nb_n0, nb_columns, tail);
          }
        });
  }
}

/// The GEMV of a panel GEMM's last few rows (1 to 4) over one block of weights: block.template operator()<R,
/// MM>(n, sums + n, count) adds the dot products of w rows [n, n + R) of the block to sums (rows, count).
template <class Block>
inline void gemv_tail(index_t rows, index_t count, float* sums, Block&& block) {
  dispatch_gemv_rows(rows, [&]<int MM>() {
    constexpr int R = gemv_block_rows<MM>;
    index_t n = 0;
    for (; n + R <= count; n += R) block.template operator()<R, MM>(n, sums + n, count);
    for (; n < count; ++n) block.template operator()<1, MM>(n, sums + n, count);
  });
}

/// fp32: y (M, N) = x · w^T + b.
struct gemm_f32_kernel {
  using packed = float;
  using sum = float;
  static constexpr index_t tile_n = avx512::tile_n, block_m = 384, block_k = 256, block_n_tiles = 32, gemv_tail_rows = 4;
  static index_t units(index_t kc) { return kc; }
  const float *x, *w, *b;
  float* y;
  index_t ldx, ldw, ldy;

  void pack(index_t m0, index_t rows, index_t width, index_t k0, index_t kc, float* dst) const {
    pack_panel_f32(x + m0 * ldx + k0, ldx, rows, width, kc, dst);
  }
  void tile(int r, int nv, index_t n0, index_t k0, index_t kc, const float* panel, float* out, bool accumulate,
            const next_rows& prefetch) const {
    const float* wr = w + n0 * ldw + k0;
    dispatch_tile(r, nv, [&]<int R, int NV>() {
      tile_f32<R, NV>(wr, ldw, panel, kc, out, accumulate, prefetch.in(w, ldw));
    });
  }
  template <class Fn>
  static void split(index_t rows, Fn&& fn) { for_tile_rows(rows, fn); }
  /// y rows [m0, m0 + valid), columns [n0, n0 + r) = the finished tile (out[i * width + j], transposed 16 x 16 in
  /// registers) + b.
  QFORMER_TARGET_AVX512 void emit(index_t m0, index_t valid, index_t n0, int r, const float* out, index_t width) const {
    const __mmask16 mask = static_cast<__mmask16>((1u << r) - 1u);
    const __m512 bias = b ? _mm512_maskz_loadu_ps(mask, b + n0) : _mm512_setzero_ps();
    for (index_t j0 = 0; j0 < valid; j0 += 16) {
      __m512 block[16];
      for (int i = 0; i < 16; ++i) block[i] = i < r ? _mm512_loadu_ps(out + i * width + j0) : _mm512_setzero_ps();
      transpose_16x16(block);
      const index_t rows = std::min<index_t>(16, valid - j0);
      for (index_t j = 0; j < rows; ++j) _mm512_mask_storeu_ps(y + (m0 + j0 + j) * ldy + n0, mask, _mm512_add_ps(block[j], bias));
    }
  }
  void gemv(index_t m0, index_t rows, index_t n0, index_t count, index_t k0, index_t kc, float* sums) const {
    gemv_tail(rows, count, sums, [&]<int R, int MM>(index_t n, float* block, index_t ld) {
      gemv_block_f32<R, MM>(x + m0 * ldx + k0, ldx, w + (n0 + n) * ldw + k0, ldw, kc, block, ld);
    });
  }
  void emit_rows(index_t m0, index_t rows, index_t n0, index_t count, const float* sums) const {
    for (index_t m = 0; m < rows; ++m)
      for (index_t n = 0; n < count; ++n) y[(m0 + m) * ldy + n0 + n] = sums[m * count + n] + (b ? b[n0 + n] : 0.0f);
  }
};

/// What the bf16 GEMM kernels share (this file's, for panel_gemm, and AMX's, amx::gemm): x packed in k
/// pairs, the weights read in place, fp32 sums. Y is the output's type: bf16 (a linear layer: bias added and
/// rounded once, when a tile is finished) or float (an attention's scores, kept in fp32 for the softmax).
template <class Y>
struct bf16_operands_into {
  static_assert(std::is_same_v<Y, bf16> || std::is_same_v<Y, float>);
  using packed = std::uint32_t;
  using sum = float;
  static index_t units(index_t kc) { return (kc + 1) / 2; }
  const std::uint16_t *x = nullptr, *w = nullptr;
  const bf16* b = nullptr;
  Y* y = nullptr;
  index_t ldx = 0, ldw = 0, ldy = 0;

  void pack(index_t m0, index_t rows, index_t width, index_t k0, index_t kc, std::uint32_t* dst) const {
    pack_panel_bf16(x + m0 * ldx + k0, ldx, rows, width, kc, dst);
  }
  template <class Fn>
  static void split(index_t rows, Fn&& fn) { for_tile_rows(rows, fn); }

  /// A finished tile (r columns of y from n0, `valid` rows from m0; out[i * width + j]) in 16 x 16 blocks, each
  /// transposed in registers: column j of a block becomes 16 consecutive outputs of y's row m0 + j, handed with
  /// the bias of those columns to store(m, n, sums, bias, mask).
  template <class Store>
  QFORMER_TARGET_AVX512_BF16 void for_tile_outputs(index_t m0, index_t valid, index_t n0, int r, const float* out,
                                                   index_t width, Store&& store) const {
    for (int i0 = 0; i0 < r; i0 += 16) {
      const int columns = std::min(16, r - i0);
      const __mmask16 mask = static_cast<__mmask16>((1u << columns) - 1u);
      const __m512 bias = b ? _mm512_castsi512_ps(_mm512_slli_epi32(
                                  _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, b + n0 + i0)), 16))
                            : _mm512_setzero_ps();
      for (index_t j0 = 0; j0 < valid; j0 += 16) {
        __m512 block[16];
        for (int i = 0; i < 16; ++i)
          block[i] = i < columns ? _mm512_loadu_ps(out + (i0 + i) * width + j0) : _mm512_setzero_ps();
        transpose_16x16(block);
        const index_t rows = std::min<index_t>(16, valid - j0);
        for (index_t j = 0; j < rows; ++j) store(m0 + j0 + j, n0 + i0, block[j], bias, mask);
      }
    }
  }
  /// y[m][n, n + 16) (masked) = sums + bias, rounded to bf16 (vcvtneps2bf16: nearest even) or stored as fp32.
  QFORMER_TARGET_AVX512_BF16 void store_outputs(index_t m, index_t n, __m512 sums, __m512 bias, __mmask16 mask) const {
    if constexpr (std::is_same_v<Y, bf16>)
      _mm256_mask_storeu_epi16(y + m * ldy + n, mask, (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(sums, bias)));
    else
      _mm512_mask_storeu_ps(y + m * ldy + n, mask, _mm512_add_ps(sums, bias));
  }
  /// y rows [m0, m0 + valid), columns [n0, n0 + r) = the finished tile (out[i * width + j]) + b.
  QFORMER_TARGET_AVX512_BF16 void emit(index_t m0, index_t valid, index_t n0, int r, const float* out, index_t width) const {
    for_tile_outputs(m0, valid, n0, r, out, width,
                     [&](index_t m, index_t n, __m512 sums, __m512 bias, __mmask16 mask)
                         QFORMER_TARGET_AVX512_BF16 { store_outputs(m, n, sums, bias, mask); });
  }
};
using bf16_operands = bf16_operands_into<bf16>;

/// bf16 (avx512_bf16) for panel_gemm: sums of a tile across depth blocks in fp32, bias added and rounded (bf16
/// outputs) once, when the tile is finished.
template <class Y>
struct gemm_bf16_kernel_into : bf16_operands_into<Y> {
  using base = bf16_operands_into<Y>;
  // A 32 x 256-pair panel (32 KiB) in L1, as fp32's 32 x 256 floats.
  static constexpr index_t tile_n = avx512::tile_n, block_m = 384, block_k = 512, block_n_tiles = 32, gemv_tail_rows = 4;

  void tile(int r, int nv, index_t n0, index_t k0, index_t kc, const std::uint32_t* panel, float* out, bool accumulate,
            const next_rows& prefetch) const {
    const std::uint16_t* wr = base::w + n0 * base::ldw + k0;
    dispatch_tile(r, nv, [&]<int R, int NV>() {
      tile_bf16<R, NV>(wr, base::ldw, panel, kc, out, accumulate, prefetch.in(base::w, base::ldw));
    });
  }
  void gemv(index_t m0, index_t rows, index_t n0, index_t count, index_t k0, index_t kc, float* sums) const {
    gemv_tail(rows, count, sums, [&]<int R, int MM>(index_t n, float* block, index_t ld) {
      gemv_block_bf16<R, MM>(base::x + m0 * base::ldx + k0, base::ldx, base::w + (n0 + n) * base::ldw + k0, base::ldw, kc,
                             block, ld);
    });
  }
  void emit_rows(index_t m0, index_t rows, index_t n0, index_t count, const float* sums) const {
    for (index_t m = 0; m < rows; ++m)
      for (index_t n = 0; n < count; ++n)
        base::y[(m0 + m) * base::ldy + n0 + n] =
            Y(sums[m * count + n] + (base::b ? static_cast<float>(base::b[n0 + n]) : 0.0f));
  }
};
using gemm_bf16_kernel = gemm_bf16_kernel_into<bf16>;

#endif  // QFORMER_HAVE_AVX512_KERNELS

}  // namespace qformer::cpu_detail::avx512
