#pragma once
/// \file
/// Small probes of this machine's limits, run in the same process as a benchmark so that results can be stated
/// as a fraction of them: fp32 FMA throughput, bf16 dot-product throughput (vdpbf16ps, and AMX tdpbf16ps where
/// the CPU has it) and memory read bandwidth, each with `threads` OpenMP threads, best of a few runs.

#include "gemm_amx.hpp"
#include "gemm_avx512.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

namespace qformer::probe {

struct machine_peaks {
  int threads = 1;
  double fp32_gflops = 0;  // 0: not measured (no AVX-512)
  double bf16_gflops = 0;  // 0: no avx512_bf16
  double amx_bf16_gflops = 0;  // 0: no AMX
  double read_gbps = 0;
};

namespace detail {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

#ifdef QFORMER_HAVE_AVX512_KERNELS
/// 24 independent FMA chains (latency 4, two ports) of `iterations` steps: 24 * 16 * 2 FLOP per step.
QFORMER_TARGET_AVX512 inline float fma_chains(std::int64_t iterations) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (std::int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, acc[i]);
  return cpu_detail::avx512::lane_sum(s);
}

/// The same with vdpbf16ps: 24 * 16 * 4 FLOP per step (two products and two sums per lane).
QFORMER_TARGET_AVX512_BF16 inline float bf16_chains(std::int64_t iterations) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  for (std::int64_t it = 0; it < iterations; ++it)
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, acc[i]);
  return cpu_detail::avx512::lane_sum(s);
}

#endif
#ifdef QFORMER_HAVE_AMX_KERNELS
/// 4 independent tdpbf16ps accumulators on tiles already loaded: 4 * 16 * 16 * 32 * 2 FLOP per step.
QFORMER_TARGET_AMX inline float amx_chains(std::int64_t iterations) {
  alignas(64) std::uint16_t ones[16 * 32];
  std::fill(std::begin(ones), std::end(ones), std::uint16_t{0x3c00});  // bf16 2^-7: sums stay finite
  alignas(64) float out[16 * 16];
  cpu_detail::amx::configure_tiles();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, ones, 64);
  _tile_loadd(5, ones, 64);
  _tile_loadd(6, ones, 64);
  _tile_loadd(7, ones, 64);
  for (std::int64_t it = 0; it < iterations; ++it) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, out, 64);
  _tile_release();
  return out[0];
}
#endif
#ifdef QFORMER_HAVE_AVX512_KERNELS
/// Sum of [begin, end) 64 bytes per load, four loads in flight.
QFORMER_TARGET_AVX512 inline std::uint64_t read_avx512(const std::uint64_t* begin, const std::uint64_t* end) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  const std::uint64_t* p = begin;
  for (; p + 32 <= end; p += 32) {
    a0 = _mm512_add_epi64(a0, _mm512_loadu_si512(p));
    a1 = _mm512_add_epi64(a1, _mm512_loadu_si512(p + 8));
    a2 = _mm512_add_epi64(a2, _mm512_loadu_si512(p + 16));
    a3 = _mm512_add_epi64(a3, _mm512_loadu_si512(p + 24));
  }
  alignas(64) std::uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)));
  std::uint64_t s = 0;
  for (auto v : lanes) s += v;
  for (; p < end; ++p) s += *p;
  return s;
}
#endif

/// Sum of [begin, end): what the bandwidth probe reads.
inline std::uint64_t read_all(const std::uint64_t* begin, const std::uint64_t* end) {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if (host_cpu().has_avx512()) return read_avx512(begin, end);
#endif
  std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  const std::uint64_t* p = begin;
  for (; p + 4 <= end; p += 4) a0 += p[0], a1 += p[1], a2 += p[2], a3 += p[3];
  for (; p < end; ++p) a0 += *p;
  return a0 + a1 + a2 + a3;
}

/// Runs body(thread) on `threads` threads at once; returns the wall time.
template <class Body>
double timed_parallel(int threads, Body&& body) {
  const auto t0 = std::chrono::steady_clock::now();
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
  body(omp_get_thread_num());
#else
  for (int t = 0; t < threads; ++t) body(t);
#endif
  return seconds_since(t0);
}

}  // namespace detail

/// Measures the peaks with `threads` threads (about a second in all).
inline machine_peaks measure(int threads) {
  machine_peaks p;
  p.threads = threads;
  volatile float sink = 0;
#ifdef QFORMER_HAVE_AVX512_KERNELS
  constexpr std::int64_t steps = 20'000'000;
  if (host_cpu().has_avx512())
    for (int rep = 0; rep < 3; ++rep) {
      const double s = detail::timed_parallel(threads, [&](int) { sink = sink + detail::fma_chains(steps); });
      p.fp32_gflops = std::max(p.fp32_gflops, threads * double(steps) * 24 * 16 * 2 / s * 1e-9);
    }
  if (host_cpu().has_avx512_bf16())
    for (int rep = 0; rep < 3; ++rep) {
      const double s = detail::timed_parallel(threads, [&](int) { sink = sink + detail::bf16_chains(steps); });
      p.bf16_gflops = std::max(p.bf16_gflops, threads * double(steps) * 24 * 16 * 4 / s * 1e-9);
    }
#endif
#ifdef QFORMER_HAVE_AMX_KERNELS
  if (host_cpu().has_amx_bf16())
    for (int rep = 0; rep < 3; ++rep) {
      constexpr std::int64_t amx_steps = 1'000'000;
      const double s = detail::timed_parallel(threads, [&](int) { sink = sink + detail::amx_chains(amx_steps); });
      p.amx_bf16_gflops = std::max(p.amx_bf16_gflops, threads * double(amx_steps) * 4 * 16 * 16 * 32 * 2 / s * 1e-9);
    }
#endif
  // Read bandwidth: each thread sums its part of a 512 MiB buffer (far larger than any cache), on huge pages as the
  // weights are (on 4 KiB pages a VM's two-level page walks cut what this AMD EPYC VM reads by a third or more).
  const std::size_t n = (std::size_t{512} << 20) / sizeof(std::uint64_t);
  std::vector<std::uint64_t, host_allocator<std::uint64_t>> buffer(n);
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
  for (std::size_t i = 0; i < n; ++i) buffer[i] = i;  // touched by the threads that read it
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<std::uint64_t> sums(static_cast<std::size_t>(threads));
    const double s = detail::timed_parallel(threads, [&](int t) {
      const std::size_t begin = n * static_cast<std::size_t>(t) / threads, end = n * static_cast<std::size_t>(t + 1) / threads;
      sums[static_cast<std::size_t>(t)] = detail::read_all(buffer.data() + begin, buffer.data() + end);
    });
    for (auto v : sums) sink = sink + static_cast<float>(v & 1);
    p.read_gbps = std::max(p.read_gbps, double(n * sizeof(std::uint64_t)) / s * 1e-9);
  }
  (void)sink;
  return p;
}

}  // namespace qformer::probe
