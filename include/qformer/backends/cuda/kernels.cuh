#pragma once
/// \file
/// qformer's own CUDA kernels (nvcc only; included by <qformer/cuda.hpp> under __CUDACC__). One kernel per op,
/// each launched by the function of the same name declared in launch.hpp. Arithmetic is in float whatever the
/// storage type, as the CPU backend does, so fp32 results agree with it to rounding.

#ifndef __CUDACC__
#error "kernels.cuh is CUDA C++: include <qformer/cuda.hpp> from a .cu file compiled by nvcc"
#endif

#include "../../core/dtype.hpp"
#include "../../core/error.hpp"
#include "launch.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <string>

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

// ---------------------------------------------------------------------------------------------------------------
// layer_norm, rms_norm: one block per row; two passes over the row (mean, then squared deviations) as the CPU.

template <class S>
__global__ void layer_norm_kernel(matrix<const S> x, const S* w, const S* b, float eps, matrix<S> y) {
  __shared__ float scratch[32];
  for (index r = blockIdx.x; r < x.rows; r += gridDim.x) {
    const S* xr = x.data + r * x.stride;
    float sum = 0.0f;
    for (index c = threadIdx.x; c < x.cols; c += blockDim.x) sum += detail::to_float(xr[c]);
    const float mean = detail::block_sum(sum, scratch) / float(x.cols);
    float squares = 0.0f;
    for (index c = threadIdx.x; c < x.cols; c += blockDim.x) {
      const float d = detail::to_float(xr[c]) - mean;
      squares += d * d;
    }
    const float inv = 1.0f / sqrtf(detail::block_sum(squares, scratch) / float(x.cols) + eps);
    S* yr = y.data + r * y.stride;
    for (index c = threadIdx.x; c < x.cols; c += blockDim.x)
      yr[c] = detail::from_float<S>((detail::to_float(xr[c]) - mean) * inv * detail::to_float(w[c]) + detail::to_float(b[c]));
  }
}

template <class T>
void layer_norm(cudaStream_t stream, matrix<const T> x, const T* w, const T* b, float eps, matrix<T> y) {
  using S = detail::storage_t<T>;
  if (x.rows == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<index>(x.rows, 65535));
  layer_norm_kernel<S><<<blocks, detail::row_threads, 0, stream>>>(detail::device(x), reinterpret_cast<const S*>(w),
                                                                    reinterpret_cast<const S*>(b), eps, detail::device(y));
  detail::check_launch("layer_norm_kernel");
}

template <class S>
__global__ void rms_norm_kernel(matrix<const S> x, const S* w, float eps, matrix<S> y) {
  __shared__ float scratch[32];
  for (index r = blockIdx.x; r < x.rows; r += gridDim.x) {
    const S* xr = x.data + r * x.stride;
    float squares = 0.0f;
    for (index c = threadIdx.x; c < x.cols; c += blockDim.x) {
      const float v = detail::to_float(xr[c]);
      squares += v * v;
    }
    const float inv = 1.0f / sqrtf(detail::block_sum(squares, scratch) / float(x.cols) + eps);
    S* yr = y.data + r * y.stride;
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

template <class T>
void unary(cudaStream_t stream, unary_op op, float factor, matrix<const T> x, matrix<T> y) {
  if (x.rows == 0 || x.cols == 0) return;
  unary_kernel<detail::storage_t<T>><<<detail::elementwise_grid(x.rows, x.cols), detail::row_threads, 0, stream>>>(
      op, factor, detail::device(x), detail::device(y));
  detail::check_launch("unary_kernel");
}

template <class S>
__global__ void binary_kernel(binary_op op, matrix<const S> a, matrix<const S> b, matrix<S> y) {
  for (index r = blockIdx.y; r < a.rows; r += gridDim.y)
    for (index c = blockIdx.x * blockDim.x + threadIdx.x; c < a.cols; c += gridDim.x * blockDim.x) {
      const float u = detail::to_float(a.data[r * a.stride + c]), v = detail::to_float(b.data[r * b.stride + c]);
      y.data[r * y.stride + c] = detail::from_float<S>(op == binary_op::add ? u + v : u * v);
    }
}

template <class T>
void binary(cudaStream_t stream, binary_op op, matrix<const T> a, matrix<const T> b, matrix<T> y) {
  if (a.rows == 0 || a.cols == 0) return;
  binary_kernel<detail::storage_t<T>><<<detail::elementwise_grid(a.rows, a.cols), detail::row_threads, 0, stream>>>(
      op, detail::device(a), detail::device(b), detail::device(y));
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

// ---------------------------------------------------------------------------------------------------------------
// attention: one warp per query row, eight query rows per block sharing tiles of 32 keys and values in shared
// memory, softmax computed online over the key tiles (running max m, running sum l, output rescaled by
// exp(m_old - m_new)): one pass over the keys, no (Lq, Lk) score matrix in memory. Lane j scores key j of the
// tile against the query; lanes then split the head dimension to accumulate p_j v_j.

namespace detail {
constexpr int attention_warps = 8, attention_key_tile = 32, attention_max_head_dim = 128;

inline std::size_t attention_shared_bytes(index head_dim) {
  // keys (tile, dh + 1) padded against bank conflicts, values (tile, dh), queries (warps, dh), p (warps, tile)
  return sizeof(float) * static_cast<std::size_t>(attention_key_tile * (2 * head_dim + 1) + attention_warps * head_dim +
                                                  attention_warps * attention_key_tile);
}
}  // namespace detail

template <class S, int Chunks /* ceil(head_dim / 32) */>
__global__ void attention_kernel(matrix<const S> q, matrix<const S> k, matrix<const S> v, mask_arg mask, index queries,
                                 index keys, index head_dim, float scale, matrix<S> out) {
  extern __shared__ float shared[];
  constexpr int tile = detail::attention_key_tile;
  const index dh = head_dim, b = blockIdx.z, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const index i = static_cast<index>(blockIdx.x) * detail::attention_warps + warp;
  const bool active = i < queries;
  float* k_tile = shared;                         // (tile, dh + 1)
  float* v_tile = k_tile + tile * (dh + 1);       // (tile, dh)
  float* q_row = v_tile + tile * dh + warp * dh;  // (dh) of this warp
  float* p = v_tile + tile * dh + detail::attention_warps * dh + warp * tile;

  if (active)
    for (index d = lane; d < dh; d += 32) q_row[d] = detail::to_float(q.data[(b * queries + i) * q.stride + h * dh + d]);
  const float* mask_row = nullptr;
  if (active && mask.data)
    mask_row = mask.data + (((mask.batch == 1 ? 0 : b) * mask.heads + (mask.heads == 1 ? 0 : h)) * mask.queries +
                            (mask.queries == 1 ? 0 : i)) * keys;

  float running_max = -INFINITY, running_sum = 0.0f, acc[Chunks];
#pragma unroll
  for (int c = 0; c < Chunks; ++c) acc[c] = 0.0f;

  for (index k0 = 0; k0 < keys; k0 += tile) {
    const index n = keys - k0 < tile ? keys - k0 : tile;
    __syncthreads();  // the previous tile is no longer read
    for (index e = threadIdx.x; e < n * dh; e += blockDim.x) {
      const index j = e / dh, d = e % dh;
      const index row = (b * keys + k0 + j);
      k_tile[j * (dh + 1) + d] = detail::to_float(k.data[row * k.stride + h * dh + d]);
      v_tile[j * dh + d] = detail::to_float(v.data[row * v.stride + h * dh + d]);
    }
    __syncthreads();
    if (!active) continue;
    float score = -INFINITY;
    if (lane < n) {
      float dot = 0.0f;
      const float* kj = k_tile + lane * (dh + 1);
      for (index d = 0; d < dh; ++d) dot += q_row[d] * kj[d];
      score = dot * scale + (mask_row ? mask_row[k0 + lane] : 0.0f);
    }
    const float new_max = fmaxf(running_max, detail::warp_max(score));
    // exp(-inf - -inf) would be NaN: with every score so far -inf (impossible with finite masks) keep zeros.
    const float correction = running_max == -INFINITY ? 0.0f : __expf(running_max - new_max);
    const float pj = lane < n ? expf(score - new_max) : 0.0f;
    running_sum = running_sum * correction + detail::warp_sum(pj);
    running_max = new_max;
    p[lane] = pj;
    __syncwarp();
#pragma unroll
    for (int c = 0; c < Chunks; ++c) acc[c] *= correction;
    for (index j = 0; j < n; ++j) {
      const float w = p[j];
#pragma unroll
      for (int c = 0; c < Chunks; ++c) {
        const index d = lane + 32 * c;
        if (d < dh) acc[c] += w * v_tile[j * dh + d];
      }
    }
    __syncwarp();
  }
  if (!active) return;
  const float inv = 1.0f / running_sum;
#pragma unroll
  for (int c = 0; c < Chunks; ++c) {
    const index d = lane + 32 * c;
    if (d < dh) out.data[(b * queries + i) * out.stride + h * dh + d] = detail::from_float<S>(acc[c] * inv);
  }
}

// flash_attention: the bf16 / fp16 attention on tensor cores (WMMA 16 x 16 x 16, fp32 accumulation). A block of
// four warps takes 64 query rows of one (batch, head), 16 rows per warp, and walks the keys in tiles of 64:
//   S (16, 64) = Q_w K^T  -> shared memory; online softmax per row (running max, sum, correction), P rounded to
//   the storage type as torch's SDPA rounds it; O (16, dp) = O * correction + P V, kept in shared memory.
// The head dimension is zero-padded to dp, a multiple of 16 (ViT-g's 88 -> 96): zeros change no dot product.

namespace detail {
constexpr int flash_warps = 4, flash_rows = 16, flash_queries = flash_warps * flash_rows, flash_keys = 64;

inline index padded_head_dim(index head_dim) { return (head_dim + 15) / 16 * 16; }
/// Floats of one warp's area: S (16, 64) float, P (16, 64) 2-byte, O (16, dp) float, max / sum / correction (16).
__host__ __device__ inline index flash_warp_floats(index dp) {
  return flash_rows * flash_keys + flash_rows * flash_keys / 2 + flash_rows * dp + 3 * flash_rows;
}
inline std::size_t flash_shared_bytes(index dp) {
  return sizeof(std::uint16_t) * static_cast<std::size_t>(3 * flash_queries * dp) +
         sizeof(float) * static_cast<std::size_t>(flash_warps * flash_warp_floats(dp));
}
}  // namespace detail

template <class S>
__global__ void flash_attention_kernel(matrix<const S> q, matrix<const S> k, matrix<const S> v, mask_arg mask, index queries,
                                       index keys, index head_dim, index dp, float scale, matrix<S> out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  constexpr int rows = detail::flash_rows, tile = detail::flash_keys;
  extern __shared__ __align__(128) unsigned char shared_bytes[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const index b = blockIdx.z, h = blockIdx.y, q0 = static_cast<index>(blockIdx.x) * detail::flash_queries, dh = head_dim;
  const S zero = detail::from_float<S>(0.0f);
  S* q_tile = reinterpret_cast<S*>(shared_bytes);  // (64, dp)
  S* k_tile = q_tile + detail::flash_queries * dp;  // (64, dp)
  S* v_tile = k_tile + tile * dp;                   // (64, dp)
  float* s_w = reinterpret_cast<float*>(v_tile + tile * dp) + warp * detail::flash_warp_floats(dp);  // (16, 64)
  S* p_w = reinterpret_cast<S*>(s_w + rows * tile);                                                   // (16, 64)
  float* o_w = s_w + rows * tile + rows * tile / 2;                                                   // (16, dp)
  float* row_max = o_w + rows * dp;
  float* row_sum = row_max + rows;
  float* row_correction = row_sum + rows;

  for (index e = threadIdx.x; e < detail::flash_queries * dp; e += blockDim.x) {
    const index r = e / dp, d = e % dp, i = q0 + r;
    q_tile[e] = (i < queries && d < dh) ? q.data[(b * queries + i) * q.stride + h * dh + d] : zero;
  }
  for (index e = lane; e < rows * dp; e += 32) o_w[e] = 0.0f;
  if (lane < rows) row_max[lane] = -INFINITY, row_sum[lane] = 0.0f;

  // Softmax rows: lane pair (2r, 2r + 1) owns row r, 32 columns each.
  const int my_row = lane / 2, half = lane % 2;
  const index my_query = q0 + warp * rows + my_row;
  const float* mask_row = nullptr;
  if (mask.data && my_query < queries)
    mask_row = mask.data + (((mask.batch == 1 ? 0 : b) * mask.heads + (mask.heads == 1 ? 0 : h)) * mask.queries +
                            (mask.queries == 1 ? 0 : my_query)) * keys;

  for (index k0 = 0; k0 < keys; k0 += tile) {
    const index n = keys - k0 < tile ? keys - k0 : tile;
    __syncthreads();  // the previous K / V tile is no longer read (and the Q tile is complete)
    for (index e = threadIdx.x; e < tile * dp; e += blockDim.x) {
      const index j = e / dp, d = e % dp;
      const bool inside = j < n && d < dh;
      const index at = (b * keys + k0 + j);
      k_tile[e] = inside ? k.data[at * k.stride + h * dh + d] : zero;
      v_tile[e] = inside ? v.data[at * v.stride + h * dh + d] : zero;
    }
    __syncthreads();

    for (int nb = 0; nb < tile / 16; ++nb) {  // S = Q_w K^T, 16 keys at a time
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (index kk = 0; kk < dp; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, S, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, S, wmma::col_major> kt;
        wmma::load_matrix_sync(a, q_tile + warp * rows * dp + kk, static_cast<unsigned>(dp));
        wmma::load_matrix_sync(kt, k_tile + nb * 16 * dp + kk, static_cast<unsigned>(dp));
        wmma::mma_sync(acc, a, kt, acc);
      }
      wmma::store_matrix_sync(s_w + nb * 16, acc, tile, wmma::mem_row_major);
    }
    __syncwarp();

    {
      float* srow = s_w + my_row * tile + half * 32;
      float tile_max = -INFINITY;
      for (int c = 0; c < 32; ++c) {
        const index j = half * 32 + c;
        const float value = j < n ? srow[c] * scale + (mask_row ? mask_row[k0 + j] : 0.0f) : -INFINITY;
        srow[c] = value;
        tile_max = fmaxf(tile_max, value);
      }
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
      const float old_max = row_max[my_row], new_max = fmaxf(old_max, tile_max);
      const float correction = old_max == -INFINITY ? 0.0f : __expf(old_max - new_max);
      float sum = 0.0f;
      S* prow = p_w + my_row * tile + half * 32;
      for (int c = 0; c < 32; ++c) {
        const float p = srow[c] == -INFINITY ? 0.0f : __expf(srow[c] - new_max);
        sum += p;
        prow[c] = detail::from_float<S>(p);
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      if (half == 0) {
        row_max[my_row] = new_max;
        row_sum[my_row] = row_sum[my_row] * correction + sum;
        row_correction[my_row] = correction;
      }
    }
    __syncwarp();
    for (index e = lane; e < rows * dp; e += 32) o_w[e] *= row_correction[e / dp];
    __syncwarp();
    for (index jb = 0; jb < dp; jb += 16) {  // O += P V, 16 output columns at a time
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o;
      wmma::load_matrix_sync(o, o_w + jb, static_cast<unsigned>(dp), wmma::mem_row_major);
      for (int kk = 0; kk < tile; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, S, wmma::row_major> p;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, S, wmma::row_major> vt;
        wmma::load_matrix_sync(p, p_w + kk, tile);
        wmma::load_matrix_sync(vt, v_tile + kk * dp + jb, static_cast<unsigned>(dp));
        wmma::mma_sync(o, p, vt, o);
      }
      wmma::store_matrix_sync(o_w + jb, o, static_cast<unsigned>(dp), wmma::mem_row_major);
    }
    __syncwarp();
  }
  for (index e = lane; e < rows * dh; e += 32) {
    const index r = e / dh, d = e % dh, i = q0 + warp * rows + r;
    if (i < queries) out.data[(b * queries + i) * out.stride + h * dh + d] = detail::from_float<S>(o_w[r * dp + d] / row_sum[r]);
  }
#else
  __trap();  // flash_attention needs sm_80 or newer; attention() picks attention_kernel there
#endif
}

namespace detail {
/// Whether the current device has bf16 / fp16 WMMA (compute capability 8.0 or newer).
inline bool device_has_wmma_bf16() {
  int device = 0, major = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
    return false;
  return major >= 8;
}
}  // namespace detail

template <class T>
void attention(cudaStream_t stream, matrix<const T> q, matrix<const T> k, matrix<const T> v, mask_arg mask, index batch,
               index queries, index keys, index heads, float scale, matrix<T> out) {
  using S = detail::storage_t<T>;
  const index head_dim = q.cols / heads;
  if (head_dim > detail::attention_max_head_dim)
    throw invalid_argument("CUDA attention: head dimension " + std::to_string(head_dim) + " is over " +
                           std::to_string(detail::attention_max_head_dim));
  if (batch == 0 || queries == 0) return;
  if constexpr (!std::is_same_v<T, float>) {
    static const bool tensor_cores = detail::device_has_wmma_bf16();
    if (tensor_cores) {
      static const bool configured = [] {  // the largest tile set (dp = 128) needs more than the default 48 KB
        return cudaFuncSetAttribute(flash_attention_kernel<S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(detail::flash_shared_bytes(detail::attention_max_head_dim))) == cudaSuccess;
      }();
      if (!configured) throw error("CUDA: cannot give flash_attention_kernel its shared memory");
      const index dp = detail::padded_head_dim(head_dim);
      const dim3 grid(static_cast<unsigned>((queries + detail::flash_queries - 1) / detail::flash_queries),
                      static_cast<unsigned>(heads), static_cast<unsigned>(batch));
      flash_attention_kernel<S><<<grid, detail::flash_warps * 32, detail::flash_shared_bytes(dp), stream>>>(
          detail::device(q), detail::device(k), detail::device(v), mask, queries, keys, head_dim, dp, scale, detail::device(out));
      detail::check_launch("flash_attention_kernel");
      return;
    }
  }
  const dim3 grid(static_cast<unsigned>((queries + detail::attention_warps - 1) / detail::attention_warps),
                  static_cast<unsigned>(heads), static_cast<unsigned>(batch));
  const std::size_t bytes = detail::attention_shared_bytes(head_dim);
  auto launch = [&](auto kernel) {
    kernel<<<grid, detail::attention_warps * 32, bytes, stream>>>(detail::device(q), detail::device(k), detail::device(v), mask,
                                                                  queries, keys, head_dim, scale, detail::device(out));
  };
  switch ((head_dim + 31) / 32) {
    case 1: launch(attention_kernel<S, 1>); break;
    case 2: launch(attention_kernel<S, 2>); break;
    case 3: launch(attention_kernel<S, 3>); break;
    default: launch(attention_kernel<S, 4>); break;
  }
  detail::check_launch("attention_kernel");
}

// ---------------------------------------------------------------------------------------------------------------

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
