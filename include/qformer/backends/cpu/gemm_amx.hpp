#pragma once
/// \file
/// AMX linear-layer GEMMs: y (M, N) = x (M, K) · w (N, K)^T + b on the tile registers, in two element kinds:
///   bf16_tiles: `tdpbf16ps`, 16 x 16 fp32 sums of 16 x 32 bf16 by 32 x 16 bf16 products;
///   int8_tiles: `tdpbsud`,   16 x 16 int32 sums of 16 x 64 int8 (signed weights) by 64 x 16 u8 (x offset by 128,
///               gemm_int8.hpp) products.
/// Used where the CPU has AMX and Linux granted the tile state (cpu_features::has_amx_bf16 / has_amx_int8), for
/// M > amx_gemv_max_rows (gemm.hpp); everything else stays on gemm_avx512.hpp and gemm_int8.hpp's VNNI kernels.
///
/// The micro-tile is 32 rows of w by one packed panel of x (32 or 16 rows), computed transposed like the AVX-512
/// tiles: C[i][j] = sum_k w[n0 + i][k] x[m0 + j][k]. One tile step covers 64 bytes of depth (32 bf16 or 64 int8).
///   A tiles (tmm4, tmm5): 16 rows of w each, 64 bytes of k per row, loaded straight from the weights' own layout
///                         with their row stride: the big operand is never repacked.
///   B tiles (tmm6, tmm7): 16 k-groups x 16 rows of x from the packed panel, one 32-bit lane per row and group (a
///                         pair of bf16 or a quad of u8): exactly AMX's interleaved B layout.
///   C tiles (tmm0-3):     2 x 2 blocks of 16 x 16 sums, kept in the tiles over a depth block of 512 bytes (the
///                         tile's weights then fit L1 and serve every panel of x) and in memory between blocks.
/// The depth's tail (K mod the step) comes from a zero-padded copy of the 32 w rows' last elements and panel rows
/// padded with zero groups; an n-tile of fewer than 32 rows (N mod 32) from a zero-padded copy of its rows.

#include "gemm_avx512.hpp"

#ifdef QFORMER_HAVE_AVX512_KERNELS
#define QFORMER_HAVE_AMX_KERNELS 1
#define QFORMER_TARGET_AMX \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,avx512bf16,amx-tile,amx-bf16,amx-int8")))
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

/// Tiles 0-7 as 16 rows of 64 bytes. A constant in memory: GCC 12 does not see ldtilecfg read its operand, and
/// dropped the stores that filled a local configuration wherever configure_tiles was not inlined into code that
/// then used the tiles (tilezero then faulted: SIGILL).
inline constexpr tile_config all_tiles_16x64 = [] {
  tile_config config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = 16;
  }
  return config;
}();

QFORMER_TARGET_AMX inline void configure_tiles() { _tile_loadconfig(&all_tiles_16x64); }
QFORMER_TARGET_AMX inline void release_tiles() { _tile_release(); }

/// The bf16 element kind: a B-tile lane holds a pair of k, sums are fp32.
struct bf16_tiles {
  using element = std::uint16_t;  // bf16 bits
  using sum = float;
  static constexpr index_t per_lane = 2;
  /// tmm0 += tmm4 · tmm6, tmm2 += tmm5 · tmm6 (NV 2: and tmm1, tmm3 from tmm7).
  template <int NV>
  QFORMER_TARGET_AMX static inline __attribute__((always_inline)) void products() {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(2, 5, 6);
    if constexpr (NV == 2) {
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
};

/// The int8 element kind: a B-tile lane holds a quad of k (u8 x), A tiles signed weights, sums are int32.
struct int8_tiles {
  using element = std::int8_t;
  using sum = std::int32_t;
  static constexpr index_t per_lane = 4;
  template <int NV>
  QFORMER_TARGET_AMX static inline __attribute__((always_inline)) void products() {
    _tile_dpbsud(0, 4, 6);
    _tile_dpbsud(2, 5, 6);
    if constexpr (NV == 2) {
      _tile_dpbsud(1, 4, 7);
      _tile_dpbsud(3, 5, 7);
    }
  }
};

/// One 64-byte-deep step of the 32 x NV*16 tile: A tiles from the two halves of the weight rows (w_stride bytes
/// apart), B tiles from the panel's 16 lane rows, accumulated into tmm0-3.
template <class Kind, int NV>
QFORMER_TARGET_AMX inline __attribute__((always_inline)) void step(const void* w_top, const void* w_bottom,
                                                                   std::size_t w_stride, const std::uint32_t* panel) {
  constexpr std::size_t x_stride = NV * 16 * 4;
  _tile_loadd(4, w_top, w_stride);
  _tile_loadd(6, panel, x_stride);
  _tile_loadd(5, w_bottom, w_stride);
  if constexpr (NV == 2) _tile_loadd(7, panel + 16, x_stride);
  Kind::template products<NV>();
}

/// The accumulators tmm0-3 (32 x NV*16 sums, fp32 or int32 bits) from `sums` (row stride NV*16), or zero.
template <int NV>
QFORMER_TARGET_AMX inline void load_sums(const std::uint32_t* sums) {
  constexpr index_t width = NV * 16;
  constexpr std::size_t stride = width * 4;
  if (!sums) {
    _tile_zero(0);
    _tile_zero(2);
    if constexpr (NV == 2) {
      _tile_zero(1);
      _tile_zero(3);
    }
    return;
  }
  _tile_loadd(0, sums, stride);
  _tile_loadd(2, sums + 16 * width, stride);
  if constexpr (NV == 2) {
    _tile_loadd(1, sums + 16, stride);
    _tile_loadd(3, sums + 16 * width + 16, stride);
  }
}

template <int NV>
QFORMER_TARGET_AMX inline void store_sums(std::uint32_t* sums) {
  constexpr index_t width = NV * 16;
  constexpr std::size_t stride = width * 4;
  _tile_stored(0, sums, stride);
  _tile_stored(2, sums + 16 * width, stride);
  if constexpr (NV == 2) {
    _tile_stored(1, sums + 16, stride);
    _tile_stored(3, sums + 16 * width + 16, stride);
  }
}

/// Cache lines of weights a micro-tile prefetches into L2 while it computes: lines [begin, end) of the block
/// starting at w (row stride ldw), `lines_per_row` per row, row-major; spread over the tile's steps.
struct prefetch_lines {
  const char* w = nullptr;
  index_t ldw = 0, lines_per_row = 1, begin = 0, end = 0;  // ldw in bytes
};

/// Walks a prefetch_lines range line by line (no division per line).
class prefetch_cursor {
 public:
  explicit prefetch_cursor(const prefetch_lines& p)
      : row_(p.w ? p.w + p.begin / p.lines_per_row * p.ldw : nullptr), ldw_(p.ldw), lines_per_row_(p.lines_per_row),
        column_(p.begin % p.lines_per_row), left_(p.end - p.begin) {}
  index_t left() const { return left_; }
  /// Prefetches up to n more lines.
  void issue(index_t n) {
    for (; n > 0 && left_ > 0; --n, --left_) {
      _mm_prefetch(row_ + column_ * 64, _MM_HINT_T1);
      if (++column_ == lines_per_row_) {
        column_ = 0;
        row_ += ldw_;
      }
    }
  }

 private:
  const char* row_;
  index_t ldw_, lines_per_row_, column_, left_;
};

/// sums (32, NV*16) = (sums_in, or 0) + 32 rows of w (ldw elements apart) · one panel of x (NV*16 wide, zero
/// lane rows past the depth) over depth kc. The depth's last kc mod step columns of w come from `w_tail` (32 rows
/// of 64 bytes, zero padded). Runs on configured tiles (configure_tiles once per thread).
template <class Kind, int NV>
QFORMER_TARGET_AMX void tile_sums(const typename Kind::element* w, index_t ldw, const std::uint32_t* panel, index_t kc,
                                  const typename Kind::element* w_tail, const std::uint32_t* sums_in,
                                  std::uint32_t* sums_out, const prefetch_lines& prefetch) {
  constexpr index_t width = NV * 16, depth_step = 64 / sizeof(typename Kind::element);
  const std::size_t w_stride = static_cast<std::size_t>(ldw) * sizeof(typename Kind::element);
  load_sums<NV>(sums_in);
  const index_t whole = kc / depth_step;
  prefetch_cursor lines(prefetch);
  const index_t per_step = whole > 0 ? (lines.left() + whole - 1) / whole : 0;
  for (index_t kb = 0; kb < whole; ++kb) {
    lines.issue(per_step);
    step<Kind, NV>(w + kb * depth_step, w + 16 * ldw + kb * depth_step, w_stride, panel + kb * 16 * width);
  }
  if (whole * depth_step < kc) step<Kind, NV>(w_tail, w_tail + 16 * depth_step, 64, panel + whole * 16 * width);
  store_sums<NV>(sums_out);
}

/// Sizes of one AMX GEMM call: y (M, N) = x (M, K) · w (N, K)^T + b, K in elements of Kind.
template <class Kind>
struct gemm_plan {
  static constexpr index_t element_bytes = sizeof(typename Kind::element);
  static constexpr index_t tile_n = 32;    // rows of w per n-tile: two A tiles
  static constexpr index_t block_m = 320;  // rows of x per block, packed over the whole depth
  // Depth per block when several panels of x share an n-tile's weights: 32 rows of 512 bytes (16 KiB) stay in L1.
  static constexpr index_t block_k = 512 / element_bytes;
  // Packed x a depth group may span: the group's x stays in L2 while every n-tile of a thread passes over it.
  static constexpr index_t group_bytes = index_t{1} << 20;
  /// Lane rows of a panel over depth kc, whole B tiles (16 rows).
  static index_t units(index_t kc) { return ((kc + Kind::per_lane - 1) / Kind::per_lane + 15) / 16 * 16; }

  index_t M, N, K, tiles, row_block, panels_max, depth_block, depth_group;
  int threads;
  /// threads_: the team's size, or 0 for kernel_threads (1 inside a parallel region).
  gemm_plan(index_t M_, index_t N_, index_t K_, int threads_ = 0)
      : M(M_), N(N_), K(K_), tiles((N_ + tile_n - 1) / tile_n), row_block(avx512::balanced_row_block(M_, block_m)),
        panels_max((std::min(M_, row_block) + 31) / 32),
        // One or two panels reuse a tile's weights too little to pay for keeping sums between depth blocks.
        depth_block(panels_max <= 2 ? K_ : std::min(K_, block_k)),
        depth_group(std::max(depth_block, group_bytes / (padded_block() * element_bytes) / depth_block * depth_block)),
        threads(threads_ > 0 ? threads_ : kernel_threads(tiles)) {}
  index_t padded_block() const { return avx512::padded_rows(std::min(M, row_block)); }
  index_t last_k0() const { return (K - 1) / depth_block * depth_block; }
  /// Packed lanes of x per block of rows (every depth block, each padded to whole B tiles).
  index_t packed_units() const { return padded_block() * (units(last_k0()) + units(K - last_k0())); }
  index_t tiles_per_thread() const { return (tiles + threads - 1) / threads; }
  /// Sums a thread keeps between depth blocks: a 32 x 32 tile per panel, for every n-tile of the thread when the
  /// depth spans several groups (each n-tile then returns to its sums once per group).
  index_t sums_per_thread() const {
    if (depth_block >= K) return 0;
    return (depth_group >= K ? 1 : tiles_per_thread()) * panels_max * tile_n * 32;
  }
  /// Elements of a thread's zero-padded copy of an n-tile of fewer than 32 rows (N mod 32), one depth block.
  index_t short_tile_elements() const { return N % tile_n ? tile_n * depth_block : 0; }
  /// 32-bit words of scratch per thread: the kept sums, then the short tile's copy (64-byte aligned).
  index_t per_thread_words() const { return sums_per_thread() + (short_tile_elements() * element_bytes / 4 + 15) / 16 * 16; }
  /// 32-bit words of scratch for the whole call.
  index_t scratch_words() const { return packed_units() + per_thread_words() * threads; }
};

/// The GEMM on AMX tiles. Operands: `w` (const Kind::element*, row stride `ldw` elements), pack(m0, rows, width,
/// k0, kc, dst) writing a panel of x in the B layout (lanes of Kind::per_lane elements, whole groups only: the
/// driver zeroes the rest of the B tiles), emit(m0, valid, n0, r, sums, width) storing a finished tile (sums[i *
/// width + j] for y[m0 + j][n0 + i], bias and conversion to y's type its own).
///
/// For each block of up to block_m rows, x is packed once over the whole depth (panels in parallel). Each thread
/// then takes a contiguous share of the 32-row n-tiles and, per n-tile and depth block, passes every panel of x
/// over the tile's 32 weight rows (read in place as A tiles: from L1 after the first panel); a panel's sums wait in
/// the thread's scratch between depth blocks. Depth blocks come in groups whose packed x fits L2 (every n-tile of
/// the thread passes over a group before the next one). While it computes, each micro-tile prefetches its share of
/// the weight rows of the block that comes next. Tiles are configured once per thread and call. N mod 32 rows of w
/// and K mod step columns are read from zero-padded copies.
/// `scratch`: plan.scratch_words(), 64-byte aligned.
template <class Kind, class Operands>
void gemm(const Operands& op, const gemm_plan<Kind>& plan, std::uint32_t* scratch) {
  using element = typename Kind::element;
  using sum = typename Kind::sum;
  constexpr index_t tile_n = gemm_plan<Kind>::tile_n, element_bytes = gemm_plan<Kind>::element_bytes,
                    depth_step = 64 / element_bytes;
  const index_t M = plan.M, N = plan.N, K = plan.K, tiles = plan.tiles, kc_max = plan.depth_block;
  std::uint32_t* xp = scratch;
  const auto units = [](index_t kc) { return gemm_plan<Kind>::units(kc); };
  for (index_t mb = 0; mb < M; mb += plan.row_block) {
    const index_t rows_in_block = std::min(plan.row_block, M - mb), panels = (rows_in_block + 31) / 32;
    const index_t padded = avx512::padded_rows(rows_in_block);
    const auto panel_of = [&](index_t k0, index_t kc, index_t m0) { return xp + units(k0) * padded + m0 * units(kc); };
    parallel_for_then(
        plan.threads, panels,
        [&](index_t p) {
          const index_t m0 = p * 32, rows = std::min<index_t>(32, rows_in_block - m0), width = avx512::panel_width(rows_in_block, m0);
          for (index_t k0 = 0; k0 < K; k0 += kc_max) {
            const index_t kc = std::min(kc_max, K - k0), lanes = (kc + Kind::per_lane - 1) / Kind::per_lane;
            std::uint32_t* dst = panel_of(k0, kc, m0);
            op.pack(mb + m0, rows, width, k0, kc, dst);
            std::memset(dst + lanes * width, 0, static_cast<std::size_t>((units(kc) - lanes) * width) * 4);
          }
        },
        plan.threads,
        [&](index_t slice) {
          const index_t t_begin = tiles * slice / plan.threads, t_end = tiles * (slice + 1) / plan.threads;
          std::uint32_t* kept_base = scratch + plan.packed_units() + slice * plan.per_thread_words();
          auto* w_short = reinterpret_cast<element*>(kept_base + plan.sums_per_thread());
          alignas(64) sum out[tile_n * 32];  // a finished tile, written by the tiles
          alignas(64) element w_tail[32][depth_step];
          configure_tiles();
          for (index_t g0 = 0; g0 < K; g0 += plan.depth_group) {
            const index_t g1 = std::min(K, g0 + plan.depth_group);
            for (index_t t = t_begin; t < t_end; ++t) {
              const index_t n0 = t * tile_n, rows = std::min(tile_n, N - n0);
              std::uint32_t* kept = kept_base + (plan.depth_group >= K ? 0 : (t - t_begin) * panels * tile_n * 32);
              for (index_t k0 = g0; k0 < g1; k0 += kc_max) {
                const index_t kc = std::min(kc_max, K - k0);
                const bool first = k0 == 0, last = k0 + kc == K;
                const element* wt = op.w + n0 * op.ldw + k0;
                index_t ldw = op.ldw;
                if (rows < tile_n) {
                  std::fill_n(w_short, tile_n * kc, element{0});
                  for (index_t i = 0; i < rows; ++i)
                    std::memcpy(w_short + i * kc, wt + i * op.ldw, static_cast<std::size_t>(kc * element_bytes));
                  wt = w_short;
                  ldw = kc;
                }
                if (const index_t whole = kc / depth_step * depth_step; whole < kc) {
                  std::memset(w_tail, 0, sizeof w_tail);
                  for (int i = 0; i < 32; ++i)
                    std::memcpy(w_tail[i], wt + i * ldw + whole, static_cast<std::size_t>((kc - whole) * element_bytes));
                }
                // The block after this one (this tile's next depth block in the group, else the next tile's first
                // block of the group, else the next group's first tile), its lines shared out over the panels.
                index_t next_n0 = n0, next_k0 = k0 + kc;
                if (next_k0 >= g1) {
                  next_k0 = g0;
                  next_n0 = n0 + tile_n;
                  if (t + 1 >= t_end) next_n0 = t_begin * tile_n, next_k0 = g1;
                }
                prefetch_lines next;  // none for one or two panels: the hardware streams each weight block faster
                if (panels > 2 && next_k0 < K && next_n0 < N) {
                  const index_t next_kc = std::min(kc_max, K - next_k0);
                  next.w = reinterpret_cast<const char*>(op.w + next_n0 * op.ldw + next_k0);
                  next.ldw = op.ldw * element_bytes;
                  next.lines_per_row = (next_kc * element_bytes + 63) / 64;
                  next.end = std::min(tile_n, N - next_n0) * next.lines_per_row;
                }
                const index_t next_lines = next.end;
                for (index_t p = 0; p < panels; ++p) {
                  const index_t m0 = p * 32, width = avx512::panel_width(rows_in_block, m0);
                  next.begin = next_lines * p / panels;
                  next.end = next_lines * (p + 1) / panels;
                  std::uint32_t* panel_sums = kept + p * tile_n * 32;
                  std::uint32_t* dst = last ? reinterpret_cast<std::uint32_t*>(out) : panel_sums;
                  const std::uint32_t* src = first ? nullptr : panel_sums;
                  const std::uint32_t* panel = panel_of(k0, kc, m0);
                  if (width == 32) tile_sums<Kind, 2>(wt, ldw, panel, kc, w_tail[0], src, dst, next);
                  else tile_sums<Kind, 1>(wt, ldw, panel, kc, w_tail[0], src, dst, next);
                  if (last)
                    op.emit(mb + m0, std::min<index_t>(width, rows_in_block - m0), n0, static_cast<int>(rows),
                            out, width);
                }
              }
            }
          }
          release_tiles();
        });
  }
}

#endif  // QFORMER_HAVE_AMX_KERNELS

}  // namespace qformer::cpu_detail::amx
