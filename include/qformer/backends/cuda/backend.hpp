#pragma once
/// \file
/// backend<cuda>: the CUDA implementation of the ops. So far: linear through cuBLASLt (bf16 / fp16 / fp32
/// inputs, fp32 accumulation, bias fused as the matmul epilogue). Only C headers of the toolkit are included,
/// so this file compiles under g++; kernels of our own will live in kernels/*.cuh, compiled by nvcc.

#include "../../core/context.hpp"
#include "device.hpp"

#include <cublasLt.h>

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
}  // namespace cuda_detail

/// The CUDA context's state: one stream, one cuBLASLt handle, one cuBLASLt workspace.
template <>
struct backend_state<cuda> {
  static constexpr std::size_t workspace_bytes = std::size_t{32} << 20;

  backend_state() {
    cuda_detail::check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
    cuda_detail::check(cublasLtCreate(&lt), "cublasLtCreate");
    workspace = device_traits<cuda>::allocate(workspace_bytes);
  }
  backend_state(const backend_state&) = delete;
  backend_state& operator=(const backend_state&) = delete;
  ~backend_state() {
    device_traits<cuda>::deallocate(workspace);
    cublasLtDestroy(lt);
    cudaStreamDestroy(stream);
  }
  void synchronize() const { cuda_detail::check(cudaStreamSynchronize(stream), "cudaStreamSynchronize"); }

  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* workspace = nullptr;
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
    const auto N = static_cast<std::uint64_t>(x.rows()), in = static_cast<std::uint64_t>(x.cols()),
               out = static_cast<std::uint64_t>(w.rows());
    constexpr cudaDataType_t type = data_type<T>();
    matmul_desc op;
    check(cublasLtMatmulDescCreate(&op.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
    check(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose), "set TRANSA");
    check(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof none), "set TRANSB");
    if (!b.empty()) {
      const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
      const void* bias = b.data();
      check(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue), "set EPILOGUE");
      check(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "set BIAS_POINTER");
      const cudaDataType_t bias_type = type;
      check(cublasLtMatmulDescSetAttribute(op.d, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type), "set BIAS_DATA_TYPE");
    }
    layout_desc a, bl, c;
    check(cublasLtMatrixLayoutCreate(&a.d, type, in, out, static_cast<std::int64_t>(w.row_stride())), "layout W");
    check(cublasLtMatrixLayoutCreate(&bl.d, type, in, N, static_cast<std::int64_t>(x.row_stride())), "layout x");
    check(cublasLtMatrixLayoutCreate(&c.d, type, out, N, static_cast<std::int64_t>(y.row_stride())), "layout y");
    preference_desc pref;
    check(cublasLtMatmulPreferenceCreate(&pref.d), "cublasLtMatmulPreferenceCreate");
    const std::size_t ws = backend_state<cuda>::workspace_bytes;
    check(cublasLtMatmulPreferenceSetAttribute(pref.d, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws), "set workspace");
    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    check(cublasLtMatmulAlgoGetHeuristic(s.lt, op.d, a.d, bl.d, c.d, c.d, pref.d, 1, &heuristic, &found), "cublasLtMatmulAlgoGetHeuristic");
    if (found == 0) throw error("cuBLAS: no matmul algorithm for a (" + std::to_string(N) + ", " + std::to_string(in) + ") x (" +
                                std::to_string(in) + ", " + std::to_string(out) + ") linear");
    const float alpha = 1.0f, beta = 0.0f;
    check(cublasLtMatmul(s.lt, op.d, &alpha, w.data(), a.d, x.data(), bl.d, &beta, y.data(), c.d, y.data(), c.d,
                         &heuristic.algo, s.workspace, ws, s.stream),
          "cublasLtMatmul");
  }
};

}  // namespace qformer
