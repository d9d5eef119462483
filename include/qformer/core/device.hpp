#pragma once
/// \file
/// Device tags. The memory space is part of every tensor's type, so a host view handed to a CUDA op does not compile.

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

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
  static void* allocate(std::size_t bytes) {
    if (bytes == 0) bytes = alignment;
    return ::operator new(bytes, std::align_val_t{alignment});
  }
  static void deallocate(void* p) noexcept { ::operator delete(p, std::align_val_t{alignment}); }
  static void copy(void* dst, const void* src, std::size_t bytes) noexcept {
    if (bytes) std::memcpy(dst, src, bytes);
  }
};

}  // namespace qformer
