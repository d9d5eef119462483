#pragma once
/// \file
/// Device tags. The memory space is part of every tensor's type, so a host view handed to a CUDA op does not compile.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace qformer {

/// Host memory, SIMD CPU kernels.
struct cpu {
  static constexpr const char* name = "cpu";
};
/// NVIDIA GPU memory, cuBLAS / CUDA kernels (backends/cuda; never reached from qformer.hpp).
struct cuda {
  static constexpr const char* name = "cuda";
};

/// allocate / deallocate / copy for a device. The cuda specialisation lives in backends/cuda/device.hpp.
template <class D>
struct device_traits;

template <>
struct device_traits<cpu> {
  static constexpr std::size_t alignment = 64;  // one cache line, one AVX-512 register
  /// From this size on, the 2 MiB-aligned interior of a block asks Linux for transparent huge pages (Debian's
  /// default THP mode is "madvise"): a GEMM reading 12 weight rows 5-24 KiB apart touches a new 4 KiB page per
  /// row per micro-tile, and huge pages spare it those TLB misses.
  static constexpr std::size_t huge_page_from = std::size_t{4} << 20;
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) bytes = alignment;
    void* p = ::operator new(bytes, std::align_val_t{alignment});
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (bytes >= huge_page_from) {  // before the first touch, so the page faults themselves map huge pages
      constexpr std::uintptr_t huge = std::uintptr_t{2} << 20;
      const std::uintptr_t begin = (reinterpret_cast<std::uintptr_t>(p) + huge - 1) & ~(huge - 1);
      const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(p) + bytes) & ~(huge - 1);
      if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint: errors ignored
    }
#endif
    return p;
  }
  static void deallocate(void* p) noexcept { ::operator delete(p, std::align_val_t{alignment}); }
  static void copy(void* dst, const void* src, std::size_t bytes) noexcept {
    if (bytes) std::memcpy(dst, src, bytes);
  }
};

/// A standard allocator over device_traits<cpu> (64-byte aligned, huge pages from 4 MiB on), for host buffers that
/// kernels stream and that are not tensors (int8 weights).
template <class T>
struct host_allocator {
  using value_type = T;
  host_allocator() noexcept = default;
  template <class U>
  host_allocator(const host_allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(device_traits<cpu>::allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t) noexcept { device_traits<cpu>::deallocate(p); }
  template <class U>
  bool operator==(const host_allocator<U>&) const noexcept { return true; }
};

}  // namespace qformer
