#pragma once
/// \file
/// What every kernel of backends/cuda shares: host types as device types (float, __half, __nv_bfloat16), float
/// conversions, warp and block reductions, 16-byte vectors, launch checks.

#ifndef __CUDACC__
#error "CUDA C++: include <qformer/cuda.hpp> from a .cu file compiled by nvcc"
#endif

#include "../../../core/dtype.hpp"
#include "../../../core/error.hpp"
#include "../launch.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

namespace qformer::cuda_kernels {

namespace detail {

/// The device type with the bits of host type T.
template <class T>
struct storage {
  using type = T;
};
template <>
struct storage<fp16> {
  using type = __half;
};
template <>
struct storage<bf16> {
  using type = __nv_bfloat16;
};
template <class T>
using storage_t = typename storage<T>::type;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class S>
__device__ __forceinline__ S from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

/// The host-typed matrix as its device-typed twin.
template <class T>
matrix<storage_t<T>> device(matrix<T> m) {
  return {reinterpret_cast<storage_t<T>*>(m.data), m.rows, m.cols, m.stride};
}
template <class T>
matrix<const storage_t<T>> device(matrix<const T> m) {
  return {reinterpret_cast<const storage_t<T>*>(m.data), m.rows, m.cols, m.stride};
}

/// Throws qformer::error when the last launch failed (bad configuration, missing kernel image).
inline void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) throw error(std::string("CUDA: launching ") + kernel + ": " + cudaGetErrorString(status));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}
/// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v, float* scratch /* [32] */) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

constexpr int row_threads = 256;
/// Grid for the elementwise kernels: x covers columns, y rows (grid-stride beyond 65535).
inline dim3 elementwise_grid(index rows, index cols) {
  const index x = std::min<index>((cols + row_threads - 1) / row_threads, 64);
  const index y = std::min<index>(rows, 65535);
  return dim3(static_cast<unsigned>(std::max<index>(x, 1)), static_cast<unsigned>(std::max<index>(y, 1)));
}

}  // namespace detail

namespace detail {
/// 16 bytes of S: the unit of the vectorised elementwise path.
template <class S>
struct vec16 {
  static constexpr int size = 16 / sizeof(S);
  union {
    uint4 bits;
    S values[size];
  };
  __device__ vec16() : bits(make_uint4(0, 0, 0, 0)) {}
};
/// Whether rows of these matrices can be read and written 16 bytes at a time.
template <class T>
bool vectorisable(index cols, std::initializer_list<std::pair<const void*, index>> data_and_strides) {
  constexpr index per = 16 / sizeof(T);
  if (cols % per) return false;
  for (const auto& [data, stride] : data_and_strides)
    if (reinterpret_cast<std::uintptr_t>(data) % 16 || stride % per) return false;
  return true;
}
}  // namespace detail

}  // namespace qformer::cuda_kernels
