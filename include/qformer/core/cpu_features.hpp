#pragma once
/// \file
/// What the CPU running this process can execute, read once with CPUID (and XGETBV: the OS must save the
/// AVX-512 registers too). The CPU backend picks its kernels from it at run time, so one binary runs everywhere:
/// AVX-512 micro-kernels (fp32 FMA, avx512_bf16 dot products) where the CPU has them, Eigen elsewhere.
///
/// A binary compiled for more than the CPU has (-march=native on a newer machine, QFORMER_NATIVE) would die of
/// SIGILL somewhere inside Eigen; `require_compiled_cpu_features()` turns that into a clear error at start-up
/// (the qformer program and the benchmarks call it first thing).
///
/// AMX (tile registers, `tdpbf16ps`) needs one more thing than CPUID: Linux hands the 8 KiB tile state to a
/// process only on request (arch_prctl ARCH_REQ_XCOMP_PERM), so detection asks once and reports AMX only if the
/// kernel granted it.

#include "error.hpp"

#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QFORMER_X86 1
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace qformer {

struct cpu_features {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx512_fp16 = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;  // usable: the OS granted the tile state

  /// The AVX-512 fp32 kernels' needs.
  bool has_avx512() const noexcept { return avx512f && avx512bw && avx512vl && avx512dq && fma; }
  /// The bf16 kernels' needs (vdpbf16ps).
  bool has_avx512_bf16() const noexcept { return has_avx512() && avx512_bf16; }
  /// The AMX bf16 GEMM's needs (tile registers and tdpbf16ps, plus the bf16 kernels for the edges).
  bool has_amx_bf16() const noexcept { return has_avx512_bf16() && amx_tile && amx_bf16; }
  bool has_amx_int8() const noexcept { return has_amx_bf16() && avx512_vnni && amx_int8; }  // the int8 GEMM's tiles

  std::string describe() const {
    std::string s;
    auto add = [&](bool on, const char* name) {
      if (!on) return;
      if (!s.empty()) s += ' ';
      s += name;
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
    add(amx_tile, "amx_tile");
    add(amx_bf16, "amx_bf16");
    add(amx_int8, "amx_int8");
    return s.empty() ? "(no SIMD extensions beyond the baseline)" : s;
  }
};

namespace detail {

/// Asks Linux for the AMX tile data state (XFEATURE_XTILEDATA = 18) for the whole process; false elsewhere.
inline bool request_amx_permission() noexcept {
#if defined(__linux__) && defined(__x86_64__)
  constexpr long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
  return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
#else
  return false;
#endif
}

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
    const bool amx_tile = (d >> 24) & 1, amx_bf16 = (d >> 22) & 1, amx_int8 = (d >> 25) & 1;
    const bool os_amx = (xcr0 & 0x60000) == 0x60000;  // XTILECFG and XTILEDATA
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = (a >> 5) & 1;
    if (amx_tile && os_amx && request_amx_permission()) {
      f.amx_tile = true;
      f.amx_bf16 = amx_bf16;
      f.amx_int8 = amx_int8;
    }
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
