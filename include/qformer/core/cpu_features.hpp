#pragma once
/// \file
/// What the CPU running this process can execute, read once with CPUID (and XGETBV: the OS must save the
/// AVX-512 registers too). The CPU backend picks its kernels from it at run time, so one binary runs everywhere:
/// AVX-512 micro-kernels (fp32 FMA, avx512_bf16 dot products) where the CPU has them, Eigen elsewhere.
///
/// A binary compiled for more than the CPU has (-march=native on a newer machine, QFORMER_NATIVE) would die of
/// SIGILL somewhere inside Eigen; `require_compiled_cpu_features()` turns that into a clear error at start-up
/// (the qformer program and the benchmarks call it first thing).

#include "error.hpp"

#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QFORMER_X86 1
#endif

namespace qformer {

struct cpu_features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx512_fp16 = false;

  /// The AVX-512 fp32 kernels' needs.
  bool has_avx512() const noexcept { return avx512f && avx512bw && avx512vl && avx512dq && fma; }
  /// The bf16 kernels' needs (vdpbf16ps).
  bool has_avx512_bf16() const noexcept { return has_avx512() && avx512_bf16; }

  std::string describe() const {
    std::string s;
    auto add = [&](bool on, const char* name) {
      if (on) s += (s.empty() ? "" : " ") + std::string(name);
    };
    add(avx2, "avx2");
    add(fma, "fma");
    add(avx512f, "avx512f");
    add(avx512bw, "avx512bw");
    add(avx512vl, "avx512vl");
    add(avx512dq, "avx512dq");
    add(avx512_vnni, "avx512_vnni");
    add(avx512_bf16, "avx512_bf16");
    add(avx512_fp16, "avx512_fp16");
    return s.empty() ? "(no SIMD extensions beyond the baseline)" : s;
  }
};

namespace detail {

inline cpu_features detect_cpu_features() noexcept {
  cpu_features f;
#ifdef QFORMER_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  unsigned long long xcr0 = 0;  // the OS's enabled register state (XGETBV 0): only the low bits are read
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  }
  const bool os_avx = (xcr0 & 0x6) == 0x6;             // XMM and YMM state
  const bool os_avx512 = os_avx && (xcr0 & 0xE0) == 0xE0;  // opmask, ZMM_Hi256, Hi16_ZMM
  if (!os_avx) f.fma = f.f16c = false;
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  f.avx2 = os_avx && ((b >> 5) & 1);
  if (os_avx512) {
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512_vnni = (c >> 11) & 1;
    f.avx512_fp16 = (d >> 23) & 1;
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = (a >> 5) & 1;
  }
#endif
  return f;
}

}  // namespace detail

/// This CPU's features (detected once).
inline const cpu_features& host_cpu() noexcept {
  static const cpu_features features = detail::detect_cpu_features();
  return features;
}

/// Throws qformer::error naming each instruction set this translation unit was compiled to use (by -march or
/// -m flags) that the CPU lacks. Call it first thing in a program built with -march=native.
inline void require_compiled_cpu_features() {
  const cpu_features& cpu = host_cpu();
  std::string missing;
  auto need = [&](bool compiled, bool present, const char* name) {
    if (compiled && !present) missing += (missing.empty() ? "" : ", ") + std::string(name);
  };
  bool c = false;
#ifdef __AVX2__
  c = true;
#endif
  need(c, cpu.avx2, "avx2");
  c = false;
#ifdef __FMA__
  c = true;
#endif
  need(c, cpu.fma, "fma");
  c = false;
#ifdef __AVX512F__
  c = true;
#endif
  need(c, cpu.avx512f, "avx512f");
  c = false;
#ifdef __AVX512BW__
  c = true;
#endif
  need(c, cpu.avx512bw, "avx512bw");
  c = false;
#ifdef __AVX512BF16__
  c = true;
#endif
  need(c, cpu.avx512_bf16, "avx512_bf16");
  c = false;
#ifdef __AVX512VNNI__
  c = true;
#endif
  need(c, cpu.avx512_vnni, "avx512_vnni");
  if (!missing.empty())
    throw error("this program was compiled for instructions this CPU does not have (" + missing +
                "); rebuild without -march=native / QFORMER_NATIVE, or on this machine. The CPU has: " + cpu.describe());
}

}  // namespace qformer
