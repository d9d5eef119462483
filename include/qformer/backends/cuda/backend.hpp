#pragma once
/// \file
/// backend<cuda>: the CUDA implementation of every op in ops/ops.hpp. linear goes through cuBLASLt (bf16 / fp16
/// / fp32 inputs, fp32 accumulation, bias fused as the matmul epilogue; the algorithm chosen once per shape and
/// kept), except for up to 8 rows of x (decoding steps), which qformer's GEMV kernel streams; the other ops are
/// qformer's kernels (launch.hpp declares them, kernels.cuh defines them for nvcc).
/// Only C headers of the toolkit are included, so this file compiles under g++; a program that runs the
/// kernels includes <qformer/cuda.hpp> from one .cu file. Every op is asynchronous on the context's stream.

#include "../../core/context.hpp"
#include "../../ops/ops.hpp"
#include "device.hpp"
#include "launch.hpp"

#include <cublasLt.h>

#include <array>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

namespace qformer {

namespace cuda_detail {
inline void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw error(std::string("cuBLAS: ") + what + " failed with status " + std::to_string(int(status)));
}

template <class T>
constexpr cudaDataType_t data_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, fp16>) return CUDA_R_16F;
  else if constexpr (std::is_same_v<T, bf16>) return CUDA_R_16BF;
  else static_assert(sizeof(T) == 0, "no CUDA data type for this element type");
}

/// RAII for cuBLASLt descriptors.
struct matmul_desc {
  cublasLtMatmulDesc_t d = nullptr;
  ~matmul_desc() { if (d) cublasLtMatmulDescDestroy(d); }
};
struct layout_desc {
  cublasLtMatrixLayout_t d = nullptr;
  ~layout_desc() { if (d) cublasLtMatrixLayoutDestroy(d); }
};
struct preference_desc {
  cublasLtMatmulPreference_t d = nullptr;
  ~preference_desc() { if (d) cublasLtMatmulPreferenceDestroy(d); }
};
/// Everything cuBLASLt needs for one linear shape, made once: y^T (out, N) = W (in, out)^T x^T (in, N), all
/// column-major views of the row-major tensors; the bias pointer is set per call.
struct gemm_plan {
  matmul_desc op;
  layout_desc w, x, y;
  cublasLtMatmulAlgo_t algorithm{};
};

/// key: (data type, N, in, out, stride of W, stride of x, stride of y, bias 0/1).
inline std::unique_ptr<gemm_plan> make_gemm_plan(cublasLtHandle_t lt, const std::array<std::int64_t, 8>& key, std::size_t workspace_bytes) {
  const auto type = static_cast<cudaDataType_t>(key[0]);
  const auto N = static_cast<std::uint64_t>(key[1]), in = static_cast<std::uint64_t>(key[2]), out = static_cast<std::uint64_t>(key[3]);
  auto plan = std::make_unique<gemm_plan>();
  check(cublasLtMatmulDescCreate(&plan->op.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(plan->op.d, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose), "set TRANSA");
  check(cublasLtMatmulDescSetAttribute(plan->op.d, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof none), "set TRANSB");
  if (key[7]) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    check(cublasLtMatmulDescSetAttribute(plan->op.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue), "set EPILOGUE");
    check(cublasLtMatmulDescSetAttribute(plan->op.d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &type, sizeof type), "set BIAS_DATA_TYPE");
  }
  check(cublasLtMatrixLayoutCreate(&plan->w.d, type, in, out, key[4]), "layout W");
  check(cublasLtMatrixLayoutCreate(&plan->x.d, type, in, N, key[5]), "layout x");
  check(cublasLtMatrixLayoutCreate(&plan->y.d, type, out, N, key[6]), "layout y");
  preference_desc pref;
  check(cublasLtMatmulPreferenceCreate(&pref.d), "cublasLtMatmulPreferenceCreate");
  check(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof workspace_bytes),
        "set workspace");
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  check(cublasLtMatmulAlgoGetHeuristic(lt, plan->op.d, plan->w.d, plan->x.d, plan->y.d, plan->y.d, pref.d, 1, &heuristic, &found),
        "cublasLtMatmulAlgoGetHeuristic");
  if (found == 0)
    throw error("cuBLAS: no matmul algorithm for a (" + std::to_string(N) + ", " + std::to_string(in) + ") x (" + std::to_string(in) +
                ", " + std::to_string(out) + ") linear");
  plan->algorithm = heuristic.algo;
  return plan;
}
}  // namespace cuda_detail

/// The CUDA context's state: one stream, one cuBLASLt handle, one cuBLASLt workspace, a pinned upload buffer, and
/// a GEMM plan per linear shape seen (descriptors and the heuristic's algorithm, made once: a forward pass costs
/// one cublasLtMatmul call per linear, and a CUDA graph captured later replays the same algorithms).
template <>
struct backend_state<cuda> {
  /// (data type, N, in, out, stride of W, stride of x, stride of y, bias) of one linear.
  using gemm_key = std::array<std::int64_t, 8>;

  static constexpr std::size_t workspace_bytes = std::size_t{32} << 20;

  static constexpr std::size_t staging_bytes = std::size_t{4} << 20;

  backend_state() {
    cuda_detail::check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    cuda_detail::check(cublasLtCreate(&lt), "cublasLtCreate");
    workspace = device_traits<cuda>::allocate(workspace_bytes);
    cuda_detail::check(cudaMallocHost(&staging, staging_bytes), "cudaMallocHost (upload staging)");
  }
  backend_state(const backend_state&) = delete;
  backend_state& operator=(const backend_state&) = delete;
  ~backend_state() {
    cudaStreamSynchronize(stream);
    cudaFreeHost(staging);
    device_traits<cuda>::deallocate(workspace);
    cublasLtDestroy(lt);
    cudaStreamDestroy(stream);
  }
  /// Waits for everything enqueued so far; the upload staging buffer is free again afterwards.
  void synchronize() {
    cuda_detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    staging_used = 0;
  }

  /// Pinned host memory for `bytes` of upload (masks, ids: host values copied to the device on the stream
  /// without waiting for it, which pageable memory would force). Wraps around after a synchronisation; null when
  /// the request is larger than the buffer (the caller then copies from pageable memory).
  void* stage(std::size_t bytes) {
    bytes = (bytes + 255) & ~std::size_t{255};
    if (bytes > staging_bytes) return nullptr;
    if (staging_used + bytes > staging_bytes) synchronize();  // earlier uploads may still read the buffer
    void* p = static_cast<char*>(staging) + staging_used;
    staging_used += bytes;
    return p;
  }

  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
  void* staging = nullptr;  // pinned, staging_bytes
  std::size_t staging_used = 0;
  std::map<gemm_key, std::unique_ptr<cuda_detail::gemm_plan>> plans;

  /// The plan of one linear shape, made on first use (descriptors, layouts, the heuristic's algorithm).
  const cuda_detail::gemm_plan& plan(const gemm_key& key) {
    auto known = plans.find(key);
    if (known == plans.end()) known = plans.emplace(key, cuda_detail::make_gemm_plan(lt, key, workspace_bytes)).first;
    return *known->second;
  }
};

template <class D>
struct backend;

template <>
struct backend<cuda> {
  /// y (N, out) = x (N, in) W^T + b. Row-major y is column-major y^T (out, N) = W (out, in) x^T, so cuBLAS sees
  /// A = W stored column-major as (in, out) and transposed, B = x stored column-major as (in, N).
  template <class T>
  static void linear(context<cuda>& ctx, view<const T, cuda> x, view<const T, cuda> w, view<const T, cuda> b, view<T, cuda> y) {
    using namespace cuda_detail;
    backend_state<cuda>& s = ctx.backend();
    if (cuda_kernels::small_batch_linear<T>(s.stream, matrix(x), matrix(w), b.empty() ? nullptr : b.data(), matrix(y), {})) return;
    constexpr cudaDataType_t type = data_type<T>();
    const gemm_plan& plan = s.plan({std::int64_t(type), x.rows(), x.cols(), w.rows(), w.row_stride(), x.row_stride(), y.row_stride(),
                                    std::int64_t(!b.empty())});
    if (!b.empty()) {
      const void* bias = b.data();
      check(cublasLtMatmulDescSetAttribute(plan.op.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "set BIAS_POINTER");
    }
    const float alpha = 1.0f, beta = 0.0f;
    check(cublasLtMatmul(s.lt, plan.op.d, &alpha, w.data(), plan.w.d, x.data(), plan.x.d, &beta, y.data(), plan.y.d, y.data(), plan.y.d,
                         &plan.algorithm, s.workspace, backend_state<cuda>::workspace_bytes, s.stream),
          "cublasLtMatmul");
  }

  /// The GEMV of up to 8 rows applies the activation and the residual before its one rounding; otherwise
  /// cuBLASLt, then the elementwise kernels.
  template <class T>
  static void linear_fused(context<cuda>& ctx, view<const T, cuda> x, view<const T, cuda> w, view<const T, cuda> b,
                           std::optional<activation> act, view<const T, cuda> residual, view<T, cuda> y) {
    cuda_kernels::epilogue<T> after;
    if (act) after.activate = true, after.op = unary_of(*act);
    if (!residual.empty()) after.residual = matrix(residual);
    if (cuda_kernels::small_batch_linear<T>(stream(ctx), matrix(x), matrix(w), b.empty() ? nullptr : b.data(), matrix(y), after)) return;
    ops::detail::linear_then_epilogue<T, cuda>(ctx, x, w, b, act, residual, y);
  }

  template <class T>
  static void layer_norm(context<cuda>& ctx, view<const T, cuda> x, view<const T, cuda> w, view<const T, cuda> b, float eps,
                         view<T, cuda> y) {
    cuda_kernels::layer_norm<T>(stream(ctx), matrix(x), w.data(), b.data(), eps, matrix(y));
  }
  template <class T>
  static void rms_norm(context<cuda>& ctx, view<const T, cuda> x, view<const T, cuda> w, float eps, view<T, cuda> y) {
    cuda_kernels::rms_norm<T>(stream(ctx), matrix(x), w.data(), eps, matrix(y));
  }
  template <class T>
  static void gelu_erf(context<cuda>& ctx, view<const T, cuda> x, view<T, cuda> y) {
    cuda_kernels::unary<T>(stream(ctx), cuda_kernels::unary_op::gelu_erf, 0.0f, matrix(x), matrix(y));
  }
  template <class T>
  static void gelu_tanh(context<cuda>& ctx, view<const T, cuda> x, view<T, cuda> y) {
    cuda_kernels::unary<T>(stream(ctx), cuda_kernels::unary_op::gelu_tanh, 0.0f, matrix(x), matrix(y));
  }
  template <class T>
  static void relu(context<cuda>& ctx, view<const T, cuda> x, view<T, cuda> y) {
    cuda_kernels::unary<T>(stream(ctx), cuda_kernels::unary_op::relu, 0.0f, matrix(x), matrix(y));
  }
  template <class T>
  static void scale(context<cuda>& ctx, view<const T, cuda> x, float factor, view<T, cuda> y) {
    cuda_kernels::unary<T>(stream(ctx), cuda_kernels::unary_op::scale, factor, matrix(x), matrix(y));
  }
  template <class T>
  static void add(context<cuda>& ctx, view<const T, cuda> a, view<const T, cuda> b, view<T, cuda> y) {
    cuda_kernels::binary<T>(stream(ctx), cuda_kernels::binary_op::add, matrix(a), matrix(b), matrix(y));
  }
  template <class T>
  static void mul(context<cuda>& ctx, view<const T, cuda> a, view<const T, cuda> b, view<T, cuda> y) {
    cuda_kernels::binary<T>(stream(ctx), cuda_kernels::binary_op::mul, matrix(a), matrix(b), matrix(y));
  }
  template <class S, class T>
  static void cast(context<cuda>& ctx, view<const S, cuda> src, view<T, cuda> dst) {
    cuda_kernels::cast<S, T>(stream(ctx), matrix(src), matrix(dst));
  }

  /// A strided 2-D copy on the stream (cudaMemcpy2DAsync).
  template <class T>
  static void copy(context<cuda>& ctx, view<const T, cuda> src, view<T, cuda> dst) {
    copy_rows(ctx, src, dst.data(), dst.row_stride(), cudaMemcpyDeviceToDevice, "copy");
  }

  /// dst (contiguous) = host values, copied on the stream through the context's pinned staging buffer, so the
  /// host does not wait for the GPU. The caller's memory may be reused once this returns.
  template <class T>
  static void upload(context<cuda>& ctx, std::span<const T> host, view<T, cuda> dst) {
    if (host.empty()) return;
    const void* from = host.data();
    if (void* pinned = ctx.backend().stage(host.size_bytes())) {
      std::memcpy(pinned, host.data(), host.size_bytes());
      from = pinned;
    }  // else pageable: cudaMemcpyAsync returns once the values have left the caller's buffer
    cuda_detail::check(cudaMemcpyAsync(dst.data(), from, host.size_bytes(), cudaMemcpyHostToDevice, stream(ctx)), "upload");
  }

  /// A strided device-to-host copy; waits for the stream (so for every op before it).
  template <class T>
  static void download(context<cuda>& ctx, view<const T, cuda> src, view<T, cpu> host) {
    copy_rows(ctx, src, host.data(), host.row_stride(), cudaMemcpyDeviceToHost, "download");
    ctx.backend().synchronize();
  }

  /// ids (host) are copied into the arena, then rows are gathered on the device.
  template <class T>
  static void embedding(context<cuda>& ctx, view<const T, cuda> table, std::span<const std::int64_t> ids, view<T, cuda> out) {
    typename context<cuda>::scope scope(ctx);
    view<std::int64_t, cuda> device_ids = ctx.alloc<std::int64_t>({static_cast<index_t>(ids.size())});
    upload<std::int64_t>(ctx, ids, device_ids);
    cuda_kernels::embedding<T>(stream(ctx), matrix(table), device_ids.data(), matrix(out));
  }

  template <class T>
  static void embedding_of_device_ids(context<cuda>& ctx, view<const T, cuda> table, view<const std::int64_t, cuda> ids,
                                      view<T, cuda> out) {
    cuda_kernels::embedding<T>(stream(ctx), matrix(table), ids.data(), matrix(out));
  }

  template <class T>
  static void write_cache_rows(context<cuda>& ctx, view<const T, cuda> k_rows, view<const T, cuda> v_rows, view<T, cuda> cache_k,
                               view<T, cuda> cache_v, view<const std::int64_t, cuda> past) {
    cuda_kernels::write_cache_rows<T>(stream(ctx), matrix(k_rows), matrix(v_rows), cache_k.data(), cache_v.data(), cache_k.dim(1),
                                      past.data());
  }

  template <class T>
  static void attention(context<cuda>& ctx, view<const T, cuda> q, view<const T, cuda> k, view<const T, cuda> v,
                        view<const float, cuda> mask, index_t heads, float scale, view<T, cuda> out) {
    cuda_kernels::attention<T>(stream(ctx), matrix(q), matrix(k), matrix(v), mask_argument(mask), q.dim(0), q.dim(1), k.dim(1),
                               k.dim(1), heads, scale, matrix(out));
  }

  /// One launch for the whole batch: the kernel steps from one batch row's keys to the next by the capacity.
  template <class T>
  static void attention_over_cache(context<cuda>& ctx, view<const T, cuda> q, view<const T, cuda> k_cache, view<const T, cuda> v_cache,
                                   index_t keys, view<const float, cuda> mask, index_t heads, float scale, view<T, cuda> out,
                                   view<const std::int64_t, cuda> past_on_device) {
    cuda_kernels::attention<T>(stream(ctx), matrix(q), matrix(k_cache), matrix(v_cache), mask_argument(mask), q.dim(0), q.dim(1), keys,
                               k_cache.dim(1), heads, scale, matrix(out), past_on_device.empty() ? nullptr : past_on_device.data());
  }

  template <class T>
  static void patchify(context<cuda>& ctx, view<const float, cuda> pixels, index_t patch, view<T, cuda> patches) {
    cuda_kernels::patchify<T>(stream(ctx), pixels.data(), pixels.dim(0), pixels.dim(1), pixels.dim(2), pixels.dim(3), patch,
                              matrix(patches));
  }

 private:
  static cudaStream_t stream(context<cuda>& ctx) { return ctx.backend().stream; }
  /// The kernels' code of a feed-forward activation.
  static cuda_kernels::unary_op unary_of(activation act) {
    switch (act) {
      case activation::gelu_erf: return cuda_kernels::unary_op::gelu_erf;
      case activation::gelu_tanh: return cuda_kernels::unary_op::gelu_tanh;
      case activation::relu: break;
    }
    return cuda_kernels::unary_op::relu;
  }
  template <class T>
  static cuda_kernels::matrix<T> matrix(view<T, cuda> v) {
    return {v.data(), v.rows(), v.cols(), v.row_stride()};
  }
  /// The kernels' form of an additive mask (ops::mask_layout's broadcast), or none.
  static cuda_kernels::mask_arg mask_argument(view<const float, cuda> mask) {
    if (mask.empty()) return {nullptr, 1, 1, 1};
    const ops::mask_layout layout = ops::mask_layout::of(mask);
    return {mask.data(), layout.batch, layout.heads, layout.queries};
  }
  /// src's rows to `dst` (rows dst_stride elements apart) on the stream: device to device or to the host.
  template <class T>
  static void copy_rows(context<cuda>& ctx, view<const T, cuda> src, T* dst, index_t dst_stride, cudaMemcpyKind kind, const char* what) {
    if (src.rows() == 0 || src.cols() == 0) return;
    cuda_detail::check(cudaMemcpy2DAsync(dst, sizeof(T) * dst_stride, src.data(), sizeof(T) * src.row_stride(), sizeof(T) * src.cols(),
                                         src.rows(), kind, stream(ctx)),
                       what);
  }
};

}  // namespace qformer
