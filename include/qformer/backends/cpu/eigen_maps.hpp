#pragma once
/// \file
/// Eigen maps over qformer views. Every map is RowMajor (PyTorch layout) with the view's row stride.

#include "../../core/context.hpp"
#include "rows_avx512.hpp"

#include <Eigen/Core>

namespace qformer::cpu_detail {

using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using matrix_map = Eigen::Map<row_matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using const_matrix_map = Eigen::Map<const row_matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using const_row_vector_map = Eigen::Map<const Eigen::RowVectorXf>;

/// (rows, cols) float matrix at p with the given row stride.
inline const_matrix_map cmap(const float* p, index_t rows, index_t cols, index_t stride) {
  return const_matrix_map(p, rows, cols, Eigen::OuterStride<>(stride));
}
inline matrix_map map(float* p, index_t rows, index_t cols, index_t stride) {
  return matrix_map(p, rows, cols, Eigen::OuterStride<>(stride));
}
inline const_matrix_map cmap(view<const float> v) { return cmap(v.data(), v.rows(), v.cols(), v.row_stride()); }
inline matrix_map map(view<float> v) { return map(v.data(), v.rows(), v.cols(), v.row_stride()); }

/// One bf16 / fp16 row to float (exact), and float back to T (round to nearest even): AVX-512 for bf16 where
/// the CPU has it, element by element otherwise.
template <class T>
void widen_row(const T* x, index_t n, float* y) {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if constexpr (std::is_same_v<T, bf16>)
    if (host_cpu().has_avx512()) return avx512::widen_bf16_row(x, n, y);
#endif
  for (index_t c = 0; c < n; ++c) y[c] = to_float(x[c]);
}
template <class T>
void narrow_row(const float* x, index_t n, T* y) {
#ifdef QFORMER_HAVE_AVX512_KERNELS
  if constexpr (std::is_same_v<T, bf16>)
    if (host_cpu().has_avx512_bf16()) return avx512::narrow_bf16_row(x, n, y);
#endif
  for (index_t c = 0; c < n; ++c) y[c] = from_float<T>(x[c]);
}

/// A float copy of x (contiguous) in ctx's arena, or x itself when it already is float.
template <class T>
view<const float> as_float(context<cpu>& ctx, view<const T> x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    view<float> f = ctx.alloc<float>(x.shape());
    for (index_t r = 0; r < x.rows(); ++r) widen_row(x.row(r), x.cols(), f.row(r));
    return f;
  }
}

/// Writes the float matrix f into y, converting to T.
template <class T>
void store(view<const float> f, view<T> y) {
  for (index_t r = 0; r < f.rows(); ++r) narrow_row(f.row(r), f.cols(), y.row(r));
}

}  // namespace qformer::cpu_detail
