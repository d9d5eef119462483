#pragma once
/// \file
/// Launchers of qformer's own CUDA kernels, declared for any C++ compiler: plain pointers, sizes and a stream,
/// no CUDA C++ types (design: "no __nv_bfloat16 in public signatures"). T is float, fp16 or bf16 (the host
/// types; the kernels reinterpret them as float, __half, __nv_bfloat16, which have the same bits).
/// Their definitions are in kernels.cuh, which <qformer/cuda.hpp> includes when compiled by nvcc: include
/// <qformer/cuda.hpp> from at least one .cu file of the program.
/// Every matrix is `rows` rows of `cols` elements, row r starting at ptr + r * stride (elements).

#include <cuda_runtime_api.h>

#include <cstdint>

namespace qformer::cuda_kernels {

using index = std::int64_t;

/// A strided row-major matrix on the device, as the kernels take it.
template <class T>
struct matrix {
  T* data;
  index rows, cols, stride;
};

/// y = (x - mean) / sqrt(var + eps) * w + b per row (nn.LayerNorm). w, b contiguous (cols). y may alias x.
template <class T>
void layer_norm(cudaStream_t stream, matrix<const T> x, const T* w, const T* b, float eps, matrix<T> y);

/// y = x / sqrt(mean(x^2) + eps) * w per row (T5LayerNorm). y may alias x.
template <class T>
void rms_norm(cudaStream_t stream, matrix<const T> x, const T* w, float eps, matrix<T> y);

enum class unary_op : int { gelu_erf, gelu_tanh, relu, scale };
/// y = op(x) elementwise (`factor` for scale). y may alias x.
template <class T>
void unary(cudaStream_t stream, unary_op op, float factor, matrix<const T> x, matrix<T> y);

/// What small_batch_linear applies to x W^T + b before its one rounding: the activation `op` when `activate`,
/// then the residual when residual.data is not null (y's rows and columns).
template <class T>
struct epilogue {
  bool activate = false;
  unary_op op = unary_op::relu;
  matrix<const T> residual{nullptr, 0, 0, 0};
};

/// y (N, out) = x (N, in) W^T + b (W (out, in); b contiguous or null), then `after`, for N <= 8, the rows of a
/// decoding step, streaming W at memory bandwidth; fp32 sums. Returns false, launching nothing, where it does not
/// apply (more rows, or rows not 16-byte aligned): the caller then runs cuBLASLt and the elementwise kernels.
template <class T>
bool small_batch_linear(cudaStream_t stream, matrix<const T> x, matrix<const T> w, const T* bias, matrix<T> y, epilogue<T> after);

enum class binary_op : int { add, mul };
/// y = a op b elementwise. y may alias a or b.
template <class T>
void binary(cudaStream_t stream, binary_op op, matrix<const T> a, matrix<const T> b, matrix<T> y);

/// dst = src converted from S to T (round to nearest even when narrowing).
template <class S, class T>
void cast(cudaStream_t stream, matrix<const S> src, matrix<T> dst);

/// out row n = table row ids[n]; ids are on the device and already range-checked.
template <class T>
void embedding(cudaStream_t stream, matrix<const T> table, const std::int64_t* ids, matrix<T> out);

/// Additive attention mask broadcast like ops::mask_layout: element (b, h, i, j) at
/// data[row(b, h, i) * keys + j]. data is null when there is no mask.
struct mask_arg {
  const float* data;
  index batch, heads, queries;
};

/// out_h = softmax(q_h k_h^T * scale + mask) v_h for every batch row b and head h. q / out (B * Lq, H * dh)
/// rows; batch row b's keys and values are rows [b * key_batch_rows, b * key_batch_rows + keys) of k / v
/// (key_batch_rows = keys for plain attention, the capacity for a KV cache); head_dim at most 128. out must not
/// overlap the inputs. past_on_device, when not null (then queries = 1: a decoding step recorded once and
/// replayed), makes the keys attended *past_on_device + 1, read by the kernel; `keys` is then their upper bound
/// and the mask's row length.
template <class T>
void attention(cudaStream_t stream, matrix<const T> q, matrix<const T> k, matrix<const T> v, mask_arg mask, index batch,
               index queries, index keys, index key_batch_rows, index heads, float scale, matrix<T> out,
               const std::int64_t* past_on_device = nullptr);

/// Row b of k_rows / v_rows (B rows each) to row *past of batch row b of the contiguous caches (B, capacity,
/// cols), both in one launch; past is read by the kernel (a recorded decoding step) and below the capacity (the
/// host checked it).
template <class T>
void write_cache_rows(cudaStream_t stream, matrix<const T> k_rows, matrix<const T> v_rows, T* cache_k, T* cache_v, index capacity,
                      const std::int64_t* past);

/// im2col of a stride-p Conv2d: pixels (B, C, H, W) float contiguous -> patches (B * (H/p)(W/p), C p p).
template <class T>
void patchify(cudaStream_t stream, const float* pixels, index batch, index channels, index height, index width, index patch,
              matrix<T> patches);

}  // namespace qformer::cuda_kernels
