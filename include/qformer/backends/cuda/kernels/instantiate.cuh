#pragma once
/// \file
/// QFORMER_CUDA_INSTANTIATE_KERNELS: explicit instantiations of every launcher.

#include "attention.cuh"
#include "elementwise.cuh"
#include "gemv.cuh"
#include "norms.cuh"

// ---------------------------------------------------------------------------------------------------------------
// QFORMER_CUDA_INSTANTIATE_KERNELS: defined in exactly one .cu file of a program (before including
// <qformer/cuda.hpp>), it instantiates every launcher for float, fp16 and bf16 there, so the program's g++
// translation units can run the CUDA ops (and whole models) through the declarations of launch.hpp.
#if defined(QFORMER_CUDA_INSTANTIATE_KERNELS)
namespace qformer::cuda_kernels {
#define QFORMER_CUDA_INSTANTIATE_FOR(T)                                                                                         \
  template void layer_norm<T>(cudaStream_t, matrix<const T>, const T*, const T*, float, matrix<T>);                            \
  template bool small_batch_linear<T>(cudaStream_t, matrix<const T>, matrix<const T>, const T*, matrix<T>, epilogue<T>);      \
  template void rms_norm<T>(cudaStream_t, matrix<const T>, const T*, float, matrix<T>);                                        \
  template void unary<T>(cudaStream_t, unary_op, float, matrix<const T>, matrix<T>);                                           \
  template void binary<T>(cudaStream_t, binary_op, matrix<const T>, matrix<const T>, matrix<T>);                               \
  template void embedding<T>(cudaStream_t, matrix<const T>, const std::int64_t*, matrix<T>);                                   \
  template void attention<T>(cudaStream_t, matrix<const T>, matrix<const T>, matrix<const T>, mask_arg, index, index, index,   \
                             index, index, float, matrix<T>, const std::int64_t*);                                              \
  template void write_cache_rows<T>(cudaStream_t, matrix<const T>, matrix<const T>, T*, T*, index, const std::int64_t*);       \
  template void patchify<T>(cudaStream_t, const float*, index, index, index, index, index, matrix<T>);                         \
  template void cast<T, float>(cudaStream_t, matrix<const T>, matrix<float>);                                                  \
  template void cast<T, fp16>(cudaStream_t, matrix<const T>, matrix<fp16>);                                                    \
  template void cast<T, bf16>(cudaStream_t, matrix<const T>, matrix<bf16>);
QFORMER_CUDA_INSTANTIATE_FOR(float)
QFORMER_CUDA_INSTANTIATE_FOR(fp16)
QFORMER_CUDA_INSTANTIATE_FOR(bf16)
#undef QFORMER_CUDA_INSTANTIATE_FOR
}  // namespace qformer::cuda_kernels
#endif
