#pragma once
/// \file
/// layer_norm (block per row, or warp per row where the row fits a warp's registers) and rms_norm.

#include "common.cuh"

namespace qformer::cuda_kernels {

// ---------------------------------------------------------------------------------------------------------------
// layer_norm, rms_norm: one block per row. Rows of up to 256 x 16 elements (every BLIP-2 width) are read once
// into registers, all loads issued before the first use (a row's latency paid once, not once per element);
// mean, then squared deviations from the registers, as the CPU's two passes. Wider rows read global memory
// in each pass.

namespace detail {
constexpr int norm_per_thread = 16;

/// The row's elements c = threadIdx.x + k * blockDim.x, k < norm_per_thread, as floats (0 past the end).
template <class S>
__device__ __forceinline__ void load_row(const S* row, index cols, float (&v)[norm_per_thread]) {
#pragma unroll
  for (int k = 0; k < norm_per_thread; ++k) {
    const int c = threadIdx.x + k * blockDim.x;
    v[k] = c < cols ? to_float(row[c]) : 0.0f;
  }
}
}  // namespace detail

template <class S>
__global__ void __launch_bounds__(detail::row_threads, 2) layer_norm_kernel(matrix<const S> x, const S* w, const S* b, float eps, matrix<S> y) {
  __shared__ float scratch[32];
  const bool in_registers = x.cols <= static_cast<index>(blockDim.x) * detail::norm_per_thread;
  for (index r = blockIdx.x; r < x.rows; r += gridDim.x) {
    const S* xr = x.data + r * x.stride;
    S* yr = y.data + r * y.stride;
    if (in_registers) {
      // Row, weight and bias all loaded before the first store: y may alias x, so a load after a store would
      // wait for it, and the row's latency would be paid once per element.
      float v[detail::norm_per_thread], wv[detail::norm_per_thread], bv[detail::norm_per_thread];
      detail::load_row(xr, x.cols, v);
      detail::load_row(w, x.cols, wv);
      detail::load_row(b, x.cols, bv);
      float sum = 0.0f;
#pragma unroll
      for (int k = 0; k < detail::norm_per_thread; ++k) sum += v[k];
      const float mean = detail::block_sum(sum, scratch) / float(x.cols);
      float squares = 0.0f;
#pragma unroll
      for (int k = 0; k < detail::norm_per_thread; ++k) {
        const int c = threadIdx.x + k * blockDim.x;
        const float d = c < x.cols ? v[k] - mean : 0.0f;
        squares += d * d;
      }
      const float inv = 1.0f / sqrtf(detail::block_sum(squares, scratch) / float(x.cols) + eps);
#pragma unroll
      for (int k = 0; k < detail::norm_per_thread; ++k) {
        const int c = threadIdx.x + k * blockDim.x;
        if (c < x.cols) yr[c] = detail::from_float<S>((v[k] - mean) * inv * wv[k] + bv[k]);
      }
      continue;
    }
    float sum = 0.0f;
    for (index c = threadIdx.x; c < x.cols; c += blockDim.x) sum += detail::to_float(xr[c]);
    const float mean = detail::block_sum(sum, scratch) / float(x.cols);
    float squares = 0.0f;
    for (index c = threadIdx.x; c < x.cols; c += blockDim.x) {
      const float d = detail::to_float(xr[c]) - mean;
      squares += d * d;
    }
    const float inv = 1.0f / sqrtf(detail::block_sum(squares, scratch) / float(x.cols) + eps);
    for (index c = threadIdx.x; c < x.cols; c += blockDim.x)
      yr[c] = detail::from_float<S>((detail::to_float(xr[c]) - mean) * inv * detail::to_float(w[c]) + detail::to_float(b[c]));
  }
}

template <class S>
__global__ void __launch_bounds__(detail::row_threads, 2) rms_norm_kernel(matrix<const S> x, const S* w, float eps, matrix<S> y) {
  __shared__ float scratch[32];
  const bool in_registers = x.cols <= static_cast<index>(blockDim.x) * detail::norm_per_thread;
  for (index r = blockIdx.x; r < x.rows; r += gridDim.x) {
    const S* xr = x.data + r * x.stride;
    S* yr = y.data + r * y.stride;
    if (in_registers) {  // as layer_norm_kernel: every load before the first store
      float v[detail::norm_per_thread], wv[detail::norm_per_thread];
      detail::load_row(xr, x.cols, v);
      detail::load_row(w, x.cols, wv);
      float squares = 0.0f;
#pragma unroll
      for (int k = 0; k < detail::norm_per_thread; ++k) squares += v[k] * v[k];
      const float inv = 1.0f / sqrtf(detail::block_sum(squares, scratch) / float(x.cols) + eps);
#pragma unroll
      for (int k = 0; k < detail::norm_per_thread; ++k) {
        const int c = threadIdx.x + k * blockDim.x;
        if (c < x.cols) yr[c] = detail::from_float<S>(v[k] * inv * wv[k]);
      }
      continue;
    }
    float squares = 0.0f;
    for (index c = threadIdx.x; c < x.cols; c += blockDim.x) {
      const float v = detail::to_float(xr[c]);
      squares += v * v;
    }
    const float inv = 1.0f / sqrtf(detail::block_sum(squares, scratch) / float(x.cols) + eps);
    for (index c = threadIdx.x; c < x.cols; c += blockDim.x)
      yr[c] = detail::from_float<S>(detail::to_float(xr[c]) * inv * detail::to_float(w[c]));
  }
}

template <class T>
void rms_norm(cudaStream_t stream, matrix<const T> x, const T* w, float eps, matrix<T> y) {
  using S = detail::storage_t<T>;
  if (x.rows == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<index>(x.rows, 65535));
  rms_norm_kernel<S><<<blocks, detail::row_threads, 0, stream>>>(detail::device(x), reinterpret_cast<const S*>(w), eps,
                                                                  detail::device(y));
  detail::check_launch("rms_norm_kernel");
}

// layer_norm_warp_kernel: one warp per row for rows of up to 2048 elements that can be read 16 bytes at a time
// (every BLIP-2 layer norm but OPT-2.7b's 2560): the row in registers, mean and variance by warp shuffles, no
// block barriers; eight rows per block. layer_norm() picks it over the block-per-row kernel where it applies.
namespace detail {
constexpr int norm_warp_values = 64;  // per lane: cols <= 32 * 64
}

template <class S>
__global__ void layer_norm_warp_kernel(matrix<const S> x, const S* __restrict__ w, const S* __restrict__ b, float eps, matrix<S> y) {
  using vec = detail::vec16<S>;
  constexpr int chunks_per_lane = detail::norm_warp_values / vec::size;
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32, chunks = static_cast<int>(x.cols / vec::size);
  for (index r = static_cast<index>(blockIdx.x) * warps + threadIdx.x / 32; r < x.rows; r += static_cast<index>(gridDim.x) * warps) {
    const S* xr = x.data + r * x.stride;
    S* yr = y.data + r * y.stride;
    float v[chunks_per_lane][vec::size];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < chunks_per_lane; ++k) {
      const int c = lane + 32 * k;
      vec in;
      if (c < chunks) in.bits = *reinterpret_cast<const uint4*>(xr + c * vec::size);
#pragma unroll
      for (int e = 0; e < vec::size; ++e) {
        v[k][e] = c < chunks ? detail::to_float(in.values[e]) : 0.0f;
        sum += v[k][e];
      }
    }
    const float mean = detail::warp_sum(sum) / float(x.cols);
    float squares = 0.0f;
#pragma unroll
    for (int k = 0; k < chunks_per_lane; ++k)
      if (lane + 32 * k < chunks)
#pragma unroll
        for (int e = 0; e < vec::size; ++e) squares += (v[k][e] - mean) * (v[k][e] - mean);
    const float inv = 1.0f / sqrtf(detail::warp_sum(squares) / float(x.cols) + eps);
#pragma unroll
    for (int k = 0; k < chunks_per_lane; ++k) {
      const int c = lane + 32 * k;
      if (c >= chunks) break;
      vec wv, bv, result;
      wv.bits = *reinterpret_cast<const uint4*>(w + c * vec::size);
      bv.bits = *reinterpret_cast<const uint4*>(b + c * vec::size);
#pragma unroll
      for (int e = 0; e < vec::size; ++e)
        result.values[e] = detail::from_float<S>((v[k][e] - mean) * inv * detail::to_float(wv.values[e]) + detail::to_float(bv.values[e]));
      *reinterpret_cast<uint4*>(yr + c * vec::size) = result.bits;
    }
  }
}

template <class T>
void layer_norm(cudaStream_t stream, matrix<const T> x, const T* w, const T* b, float eps, matrix<T> y) {
  using S = detail::storage_t<T>;
  if (x.rows == 0) return;
  if (x.cols <= 32 * detail::norm_warp_values &&
      detail::vectorisable<T>(x.cols, {{x.data, x.stride}, {y.data, y.stride}, {w, x.cols}, {b, x.cols}})) {
    constexpr int warps = detail::row_threads / 32;
    const unsigned blocks = static_cast<unsigned>(std::min<index>((x.rows + warps - 1) / warps, 65535));
    layer_norm_warp_kernel<S><<<blocks, detail::row_threads, 0, stream>>>(detail::device(x), reinterpret_cast<const S*>(w),
                                                                          reinterpret_cast<const S*>(b), eps, detail::device(y));
    detail::check_launch("layer_norm_warp_kernel");
    return;
  }
  const unsigned blocks = static_cast<unsigned>(std::min<index>(x.rows, 65535));
  layer_norm_kernel<S><<<blocks, detail::row_threads, 0, stream>>>(detail::device(x), reinterpret_cast<const S*>(w),
                                                                    reinterpret_cast<const S*>(b), eps, detail::device(y));
  detail::check_launch("layer_norm_kernel");
}

}  // namespace qformer::cuda_kernels
