#pragma once
/// \file
/// device_traits<cuda>: device memory through the CUDA runtime's C API (compiles under g++ as well as nvcc).
/// Allocation failures and runtime errors become qformer::error with the CUDA error string.

#include "../../core/device.hpp"
#include "../../core/error.hpp"
#include "../../core/tensor.hpp"

#include <cuda_runtime_api.h>

#include <string>

namespace qformer {

namespace cuda_detail {
inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(status));
}
}  // namespace cuda_detail

template <>
struct device_traits<cuda> {
  static void* allocate(std::size_t bytes) {
    void* p = nullptr;
    cuda_detail::check(cudaMalloc(&p, bytes ? bytes : 256), "cudaMalloc");
    return p;
  }
  static void deallocate(void* p) noexcept { cudaFree(p); }
  static void copy(void* dst, const void* src, std::size_t bytes) {
    cuda_detail::check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice), "device copy");
  }
  static void copy_to_device(void* dst, const void* src, std::size_t bytes) {
    cuda_detail::check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "host to device copy");
  }
  static void copy_to_host(void* dst, const void* src, std::size_t bytes) {
    cuda_detail::check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "device to host copy");
  }
};

/// Whether a usable CUDA device is present (tests exit 77 when not).
inline bool cuda_available() noexcept {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

/// Copies a contiguous device tensor back to the host.
template <class T>
tensor<T, cpu> to_host(const tensor<T, cuda>& dev) {
  tensor<T, cpu> out(dev.shape());
  device_traits<cuda>::copy_to_host(out.data(), dev.data(), dev.size_bytes());
  return out;
}

}  // namespace qformer
