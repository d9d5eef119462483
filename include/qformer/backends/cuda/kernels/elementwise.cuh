#pragma once
/// \file
/// Elementwise ops over strided matrices (GELU erf / tanh, ReLU, scale, add, mul; 16-byte vector kernels where
/// aligned), casts, embedding rows, and im2col of the patch embedding.

#include "common.cuh"

namespace qformer::cuda_kernels {

// ---------------------------------------------------------------------------------------------------------------
// Elementwise ops over strided matrices.

__device__ __forceinline__ float apply(unary_op op, float factor, float v) {
  switch (op) {
    case unary_op::gelu_erf: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case unary_op::gelu_tanh: return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case unary_op::relu: return v > 0.0f ? v : 0.0f;
    case unary_op::scale: return v * factor;
  }
  return v;
}


template <class S>
__global__ void unary_kernel(unary_op op, float factor, matrix<const S> x, matrix<S> y) {
  for (index r = blockIdx.y; r < x.rows; r += gridDim.y)
    for (index c = blockIdx.x * blockDim.x + threadIdx.x; c < x.cols; c += gridDim.x * blockDim.x)
      y.data[r * y.stride + c] = detail::from_float<S>(apply(op, factor, detail::to_float(x.data[r * x.stride + c])));
}

/// unary_kernel 16 bytes per thread (cols, strides and pointers aligned).
template <class S>
__global__ void unary_vector_kernel(unary_op op, float factor, matrix<const S> x, matrix<S> y) {
  using vec = detail::vec16<S>;
  const index vectors = x.cols / vec::size;
  for (index r = blockIdx.y; r < x.rows; r += gridDim.y)
    for (index c = blockIdx.x * blockDim.x + threadIdx.x; c < vectors; c += gridDim.x * blockDim.x) {
      vec in, result;
      in.bits = *reinterpret_cast<const uint4*>(x.data + r * x.stride + c * vec::size);
#pragma unroll
      for (int e = 0; e < vec::size; ++e) result.values[e] = detail::from_float<S>(apply(op, factor, detail::to_float(in.values[e])));
      *reinterpret_cast<uint4*>(y.data + r * y.stride + c * vec::size) = result.bits;
    }
}

template <class T>
void unary(cudaStream_t stream, unary_op op, float factor, matrix<const T> x, matrix<T> y) {
  if (x.rows == 0 || x.cols == 0) return;
  using S = detail::storage_t<T>;
  if (detail::vectorisable<T>(x.cols, {{x.data, x.stride}, {y.data, y.stride}})) {
    unary_vector_kernel<S><<<detail::elementwise_grid(x.rows, x.cols / detail::vec16<S>::size), detail::row_threads, 0, stream>>>(
        op, factor, detail::device(x), detail::device(y));
  } else {
    unary_kernel<S><<<detail::elementwise_grid(x.rows, x.cols), detail::row_threads, 0, stream>>>(op, factor, detail::device(x),
                                                                                                   detail::device(y));
  }
  detail::check_launch("unary_kernel");
}

__device__ __forceinline__ float combine(binary_op op, float u, float v) { return op == binary_op::add ? u + v : u * v; }

template <class S>
__global__ void binary_kernel(binary_op op, matrix<const S> a, matrix<const S> b, matrix<S> y) {
  for (index r = blockIdx.y; r < a.rows; r += gridDim.y)
    for (index c = blockIdx.x * blockDim.x + threadIdx.x; c < a.cols; c += gridDim.x * blockDim.x)
      y.data[r * y.stride + c] =
          detail::from_float<S>(combine(op, detail::to_float(a.data[r * a.stride + c]), detail::to_float(b.data[r * b.stride + c])));
}

/// binary_kernel 16 bytes per thread.
template <class S>
__global__ void binary_vector_kernel(binary_op op, matrix<const S> a, matrix<const S> b, matrix<S> y) {
  using vec = detail::vec16<S>;
  const index vectors = a.cols / vec::size;
  for (index r = blockIdx.y; r < a.rows; r += gridDim.y)
    for (index c = blockIdx.x * blockDim.x + threadIdx.x; c < vectors; c += gridDim.x * blockDim.x) {
      vec u, v, result;
      u.bits = *reinterpret_cast<const uint4*>(a.data + r * a.stride + c * vec::size);
      v.bits = *reinterpret_cast<const uint4*>(b.data + r * b.stride + c * vec::size);
#pragma unroll
      for (int e = 0; e < vec::size; ++e)
        result.values[e] = detail::from_float<S>(combine(op, detail::to_float(u.values[e]), detail::to_float(v.values[e])));
      *reinterpret_cast<uint4*>(y.data + r * y.stride + c * vec::size) = result.bits;
    }
}

template <class T>
void binary(cudaStream_t stream, binary_op op, matrix<const T> a, matrix<const T> b, matrix<T> y) {
  if (a.rows == 0 || a.cols == 0) return;
  using S = detail::storage_t<T>;
  if (detail::vectorisable<T>(a.cols, {{a.data, a.stride}, {b.data, b.stride}, {y.data, y.stride}})) {
    binary_vector_kernel<S><<<detail::elementwise_grid(a.rows, a.cols / detail::vec16<S>::size), detail::row_threads, 0, stream>>>(
        op, detail::device(a), detail::device(b), detail::device(y));
  } else {
    binary_kernel<S><<<detail::elementwise_grid(a.rows, a.cols), detail::row_threads, 0, stream>>>(op, detail::device(a), detail::device(b),
                                                                                                    detail::device(y));
  }
  detail::check_launch("binary_kernel");
}

template <class SS, class ST>
__global__ void cast_kernel(matrix<const SS> src, matrix<ST> dst) {
  for (index r = blockIdx.y; r < src.rows; r += gridDim.y)
    for (index c = blockIdx.x * blockDim.x + threadIdx.x; c < src.cols; c += gridDim.x * blockDim.x)
      dst.data[r * dst.stride + c] = detail::from_float<ST>(detail::to_float(src.data[r * src.stride + c]));
}

template <class S, class T>
void cast(cudaStream_t stream, matrix<const S> src, matrix<T> dst) {
  if (src.rows == 0 || src.cols == 0) return;
  cast_kernel<detail::storage_t<S>, detail::storage_t<T>>
      <<<detail::elementwise_grid(src.rows, src.cols), detail::row_threads, 0, stream>>>(detail::device(src), detail::device(dst));
  detail::check_launch("cast_kernel");
}

template <class S>
__global__ void embedding_kernel(matrix<const S> table, const std::int64_t* ids, matrix<S> out) {
  for (index n = blockIdx.x; n < out.rows; n += gridDim.x) {
    const S* src = table.data + ids[n] * table.stride;
    for (index c = threadIdx.x; c < out.cols; c += blockDim.x) out.data[n * out.stride + c] = src[c];
  }
}

template <class T>
void embedding(cudaStream_t stream, matrix<const T> table, const std::int64_t* ids, matrix<T> out) {
  if (out.rows == 0) return;
  embedding_kernel<detail::storage_t<T>><<<static_cast<unsigned>(std::min<index>(out.rows, 65535)), detail::row_threads, 0, stream>>>(
      detail::device(table), ids, detail::device(out));
  detail::check_launch("embedding_kernel");
}

// write_cache_rows: block (b, 0) copies row b of k_rows, block (b, 1) row b of v_rows, to row *past of batch row
// b of its cache (a recorded decoding step reads past when it runs); 16-byte vectors where the rows allow.
template <class S>
__global__ void write_cache_rows_kernel(matrix<const S> k_rows, matrix<const S> v_rows, S* cache_k, S* cache_v, index capacity,
                                        const std::int64_t* past, bool vector_ok) {
  const index at = *past;
  const matrix<const S> rows = blockIdx.y == 0 ? k_rows : v_rows;
  S* cache = blockIdx.y == 0 ? cache_k : cache_v;
  for (index b = blockIdx.x; b < rows.rows; b += gridDim.x) {
    const S* src = rows.data + b * rows.stride;
    S* dst = cache + (b * capacity + at) * rows.cols;
    if (vector_ok) {
      constexpr int per = 16 / sizeof(S);
      for (index c = threadIdx.x; c < rows.cols / per; c += blockDim.x)
        reinterpret_cast<uint4*>(dst)[c] = reinterpret_cast<const uint4*>(src)[c];
    } else {
      for (index c = threadIdx.x; c < rows.cols; c += blockDim.x) dst[c] = src[c];
    }
  }
}

template <class T>
void write_cache_rows(cudaStream_t stream, matrix<const T> k_rows, matrix<const T> v_rows, T* cache_k, T* cache_v, index capacity,
                      const std::int64_t* past) {
  if (k_rows.rows == 0) return;
  using S = detail::storage_t<T>;
  // Destination rows start (b * capacity + at) * cols elements in: 16-byte aligned when cols is a multiple of the
  // vector and the caches are (allocations are).
  const bool vector_ok = detail::vectorisable<T>(k_rows.cols, {{k_rows.data, k_rows.stride}, {v_rows.data, v_rows.stride},
                                                               {cache_k, k_rows.cols}, {cache_v, k_rows.cols}});
  const dim3 grid(static_cast<unsigned>(std::min<index>(k_rows.rows, 65535)), 2);
  write_cache_rows_kernel<S><<<grid, detail::row_threads, 0, stream>>>(detail::device(k_rows), detail::device(v_rows),
                                                                       reinterpret_cast<S*>(cache_k), reinterpret_cast<S*>(cache_v),
                                                                       capacity, past, vector_ok);
  detail::check_launch("write_cache_rows_kernel");
}

template <class S>
__global__ void patchify_kernel(const float* pixels, index batch, index channels, index height, index width, index patch,
                                matrix<S> patches) {
  const index gw = width / patch, per_patch = channels * patch * patch, total = patches.rows * per_patch;
  for (index e = blockIdx.x * static_cast<index>(blockDim.x) + threadIdx.x; e < total; e += static_cast<index>(gridDim.x) * blockDim.x) {
    const index row = e / per_patch, f = e % per_patch;  // row = (b, py, px); f = (c, ky, kx)
    const index per_image = patches.rows / batch;
    const index b = row / per_image, cell = row % per_image, py = cell / gw, px = cell % gw;
    const index c = f / (patch * patch), ky = (f / patch) % patch, kx = f % patch;
    const float value = pixels[((b * channels + c) * height + py * patch + ky) * width + px * patch + kx];
    patches.data[row * patches.stride + f] = detail::from_float<S>(value);
  }
}

template <class T>
void patchify(cudaStream_t stream, const float* pixels, index batch, index channels, index height, index width, index patch,
              matrix<T> patches) {
  const index total = patches.rows * patches.cols;
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<index>((total + 255) / 256, 4096));
  patchify_kernel<detail::storage_t<T>><<<blocks, 256, 0, stream>>>(pixels, batch, channels, height, width, patch, detail::device(patches));
  detail::check_launch("patchify_kernel");
}

}  // namespace qformer::cuda_kernels
