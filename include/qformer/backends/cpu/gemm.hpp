#pragma once
/// \file
/// CPU linear layer: y = x W^T + b, fp32 accumulation for every dtype.
/// fp32 and bf16 take the AVX-512 kernels of gemm_avx512.hpp where the CPU has them (checked at run time), bf16
/// GEMMs the AMX tiles of gemm_amx.hpp where it has those; everything else -- fp16, CPUs without AVX-512, or `set_cpu_kernels(cpu_kernels::portable)` -- goes through
/// Eigen's GEMM (non-float weights widened to float in panels of output rows so the scratch stays small).

#include "eigen_maps.hpp"
#include "gemm_amx.hpp"
#include "gemm_avx512.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string_view>

namespace qformer {

/// Which CPU kernels linear layers use: `automatic` (the fastest this CPU runs), `avx512` (the AVX-512 kernels but
/// not AMX) or `portable` (Eigen only). Tests compare them; a user can rule the hand-written kernels out.
enum class cpu_kernels { automatic, avx512, portable };

namespace cpu_detail {
/// Starts as the environment says: QFORMER_CPU_KERNELS=portable or =avx512 rules kernels out (to compare).
inline std::atomic<cpu_kernels>& kernel_choice() {
  static std::atomic<cpu_kernels> choice{[] {
    const char* env = std::getenv("QFORMER_CPU_KERNELS");
    const std::string_view v = env ? env : "";
    return v == "portable" ? cpu_kernels::portable : v == "avx512" ? cpu_kernels::avx512 : cpu_kernels::automatic;
  }()};
  return choice;
}
}  // namespace cpu_detail

inline void set_cpu_kernels(cpu_kernels choice) { cpu_detail::kernel_choice().store(choice); }
inline cpu_kernels get_cpu_kernels() { return cpu_detail::kernel_choice().load(); }

namespace cpu_detail {

/// Whether the AVX-512 kernels handle T on this CPU now.
template <class T>
bool use_avx512_kernels() {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (get_cpu_kernels() == cpu_kernels::portable) return false;
  if constexpr (std::is_same_v<T, float>) return host_cpu().has_avx512();
  else if constexpr (std::is_same_v<T, bf16>) return host_cpu().has_avx512_bf16();
  else return false;
#else
  return false;
#endif
}

/// Whether bf16 GEMMs run on the AMX tiles now.
inline bool use_amx_kernels() {
#ifdef QFORMER_HAVE_AMX_KERNELS
  return get_cpu_kernels() == cpu_kernels::automatic && host_cpu().has_amx_bf16();
#else
  return false;
#endif
}

#ifdef QFORMER_HAVE_AVX512_KERNELS
/// Floats of scratch matmul_nt needs for M rows, N columns, depth K (the same thread count as the call).
inline index_t matmul_nt_scratch(index_t M, index_t N, index_t K) {
  if (M <= avx512::gemv_max_rows) return 1;
  const avx512::panel_gemm_plan<avx512::gemm_f32_kernel> plan(M, N, K);
  return plan.packed_units() + plan.partial_floats();
}

/// y (M, N; ldy) = x (M, K; ldx) · w (N, K; ldw)^T (+ b) in fp32 with the AVX-512 kernels (callers check
/// use_avx512_kernels<float>()): GEMV up to gemv_max_rows rows, the panel GEMM above. `scratch` holds
/// matmul_nt_scratch(M, N, K) floats. Inside an OpenMP parallel region it runs on the calling thread alone.
inline void matmul_nt(const float* x, index_t ldx, const float* w, index_t ldw, const float* b, float* y, index_t ldy,
                      index_t M, index_t N, index_t K, float* scratch) {
  if (M <= avx512::gemv_max_rows) {
    avx512::gemv_f32(x, ldx, w, ldw, b, y, ldy, M, N, K);
  } else {
    const avx512::gemm_f32_kernel kernel{x, w, b, y, ldx, ldw, ldy};
    const avx512::panel_gemm_plan<avx512::gemm_f32_kernel> plan(M, N, K);
    avx512::panel_gemm(kernel, plan, scratch, scratch + plan.packed_units());
  }
}

/// Rows of bf16 x up to which the GEMV runs where AMX tiles exist (gemv_max_rows elsewhere): this CPU runs
/// avx512_bf16 dot products at half its FMA rate, so a GEMV of 5-8 rows is compute-bound and the AMX GEMM is
/// faster (an OPT-2.7b decode step of 8 rows: 351 ms on AMX, 372 ms as a GEMV).
inline constexpr index_t amx_gemv_max_rows = 4;

/// The bf16 kernel's operands for x (N, in) · w (out, in)^T + bias -> y (bf16 or float).
template <class Kernel, class Y>
Kernel bf16_kernel(view<const bf16> x, view<const bf16> w, const bf16* bias, view<Y> y) {
  Kernel kernel;
  kernel.x = reinterpret_cast<const std::uint16_t*>(x.data());
  kernel.w = reinterpret_cast<const std::uint16_t*>(w.data());
  kernel.b = bias;
  kernel.y = y.data();
  kernel.ldx = x.row_stride();
  kernel.ldw = w.row_stride();
  kernel.ldy = y.row_stride();
  return kernel;
}

/// 32-bit words of scratch bf16_gemm<Y> needs for M rows, N columns, depth K on `threads` threads (as there).
template <class Y>
index_t bf16_gemm_scratch(index_t M, index_t N, index_t K, int threads = 0) {
#ifdef QFORMER_HAVE_AMX_KERNELS
  if (use_amx_kernels()) return amx::gemm_plan<amx::bf16_tiles>(M, N, K, threads).scratch_words();
#endif
  const avx512::panel_gemm_plan<avx512::gemm_bf16_kernel_into<Y>> plan(M, N, K, threads);
  return plan.packed_units() + plan.partial_floats();
}

/// y (M, N) = x (M, K) · w (N, K)^T (+ bias) for bf16 x and w, fp32 sums, y bf16 (bias added and rounded once) or
/// float: AMX tiles (amx::gemm) where use_amx_kernels(), else avx512_bf16 micro-tiles (panel_gemm); callers check
/// use_avx512_kernels<bf16>(). threads: 0 for kernel_threads, 1 for the calling thread alone (an attention's
/// per-head products, which its team runs side by side). `scratch`: bf16_gemm_scratch<Y>(M, N, K, threads)
/// words, 64-byte aligned.
template <class Y>
void bf16_gemm(view<const bf16> x, view<const bf16> w, const bf16* bias, view<Y> y, std::uint32_t* scratch,
               int threads = 0) {
  const index_t M = x.rows(), N = w.rows(), K = x.cols();
#ifdef QFORMER_HAVE_AMX_KERNELS
  if (use_amx_kernels()) {
    const amx::gemm_plan<amx::bf16_tiles> plan(M, N, K, threads);
    amx::gemm(bf16_kernel<avx512::bf16_operands_into<Y>>(x, w, bias, y), plan, scratch);
    return;
  }
#endif
  const avx512::panel_gemm_plan<avx512::gemm_bf16_kernel_into<Y>> plan(M, N, K, threads);
  avx512::panel_gemm(bf16_kernel<avx512::gemm_bf16_kernel_into<Y>>(x, w, bias, y), plan, scratch,
                     reinterpret_cast<float*>(scratch + plan.packed_units()));
}
#endif

/// x (N, in), w (out, in), b (out) or empty, y (N, out).
template <class T>
void linear(context<cpu>& ctx, view<const T> x, view<const T> w, view<const T> b, view<T> y) {
  const index_t N = x.rows(), in = x.cols(), out = w.rows();
  typename context<cpu>::scope scope(ctx);
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (N > 0 && out > 0 && in > 0 && use_avx512_kernels<T>()) {
    const T* bias = b.empty() ? nullptr : b.data();
    if constexpr (std::is_same_v<T, float>) {
      view<float> xp = ctx.alloc<float>({matmul_nt_scratch(N, out, in)});
      matmul_nt(x.data(), x.row_stride(), w.data(), w.row_stride(), bias, y.data(), y.row_stride(), N, out, in, xp.data());
      return;
    } else if constexpr (std::is_same_v<T, bf16>) {
      if (N <= (use_amx_kernels() ? amx_gemv_max_rows : avx512::gemv_max_rows)) {
        avx512::gemv_bf16(x.data(), x.row_stride(), w.data(), w.row_stride(), bias, y.data(), y.row_stride(), N, out, in);
      } else {
        view<float> scratch = ctx.alloc<float>({bf16_gemm_scratch<bf16>(N, out, in)});
        bf16_gemm<bf16>(x, w, bias, y, reinterpret_cast<std::uint32_t*>(scratch.data()));
      }
      return;
    }
  }
#endif
  if constexpr (std::is_same_v<T, float>) {
    auto Y = map(y);
    Y.noalias() = cmap(x) * cmap(w).transpose();
    if (!b.empty()) Y.rowwise() += const_row_vector_map(b.data(), out);
  } else {
    view<const float> xf = as_float(ctx, x);
    view<float> yf = ctx.alloc<float>({N, out});
    const index_t panel = std::max<index_t>(1, std::min<index_t>(out, (index_t{1} << 18) / std::max<index_t>(in, 1)));
    view<float> wf = ctx.alloc<float>({panel, in});
    for (index_t o0 = 0; o0 < out; o0 += panel) {
      const index_t n = std::min(panel, out - o0);
      for (index_t r = 0; r < n; ++r)
        for (index_t c = 0; c < in; ++c) wf.row(r)[c] = to_float(w.row(o0 + r)[c]);
      map(yf).middleCols(o0, n).noalias() = cmap(xf) * cmap(wf.data(), n, in, in).transpose();
    }
    if (!b.empty())
      for (index_t r = 0; r < N; ++r)
        for (index_t o = 0; o < out; ++o) yf.row(r)[o] += to_float(b.data()[o]);
    store<T>(yf, y);
  }
}

}  // namespace cpu_detail
}  // namespace qformer
