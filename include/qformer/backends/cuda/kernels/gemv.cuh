#pragma once
/// \file
/// small_batch_linear: y (N, out) = x (N, in) W^T + b, then an activation and a residual add (the epilogue), for a
/// few rows of x (a decoding step: N = the batch), where the work is reading W once. cuBLASLt's kernels for N = 1
/// reached about half the memory bandwidth; this one streams each weight row 16 bytes per lane with eight loads
/// in flight, and each warp computes two output features for every row of x, so one read of an x vector (from
/// L1) serves two weight rows.

#include "common.cuh"
#include "elementwise.cuh"  // apply(): the activations

namespace qformer::cuda_kernels {

namespace detail {
constexpr int gemv_warps = 4, gemv_features = 2 /* per warp */, gemv_unroll = 4 /* 16-byte loads per feature */;
constexpr index gemv_max_rows = 8;
}  // namespace detail

/// Warp w of block b: output features f0 = (b * gemv_warps + w) * gemv_features, f0 + 1 (the last one clamped:
/// read twice, stored once). Lane l reads 16-byte chunks l, l + 32, ... of the weight rows and of each x row;
/// fp32 sums reduced across the warp; bias, activation and residual applied in fp32; one rounding to S.
template <class S, int N>
__global__ void __launch_bounds__(detail::gemv_warps * 32)
    gemv_kernel(matrix<const S> x, matrix<const S> w, const S* bias, matrix<S> y, bool activate, unary_op op, matrix<const S> residual) {
  using vec = detail::vec16<S>;
  constexpr int F = detail::gemv_features, U = detail::gemv_unroll, per = vec::size;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const index f0 = (static_cast<index>(blockIdx.x) * detail::gemv_warps + warp) * F;
  if (f0 >= w.rows) return;
  const S* rows[F];
#pragma unroll
  for (int f = 0; f < F; ++f) rows[f] = w.data + (f0 + f < w.rows ? f0 + f : w.rows - 1) * w.stride;
  const int chunks = static_cast<int>(x.cols) / per;

  float acc[F][N];
#pragma unroll
  for (int f = 0; f < F; ++f)
#pragma unroll
    for (int n = 0; n < N; ++n) acc[f][n] = 0.0f;

  for (int c0 = lane; c0 < chunks; c0 += 32 * U) {
    vec wv[F][U];  // every weight load of the step issued before the first product
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int f = 0; f < F; ++f)
        if (c0 + 32 * u < chunks) wv[f][u].bits = __ldcs(reinterpret_cast<const uint4*>(rows[f] + (c0 + 32 * u) * per));
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
#pragma unroll
      for (int n = 0; n < N; ++n) {
        vec xv;
        xv.bits = __ldg(reinterpret_cast<const uint4*>(x.data + n * x.stride + c * per));
#pragma unroll
        for (int e = 0; e < per; ++e) {
          const float xe = detail::to_float(xv.values[e]);
#pragma unroll
          for (int f = 0; f < F; ++f) acc[f][n] += detail::to_float(wv[f][u].values[e]) * xe;
        }
      }
    }
  }
#pragma unroll
  for (int f = 0; f < F; ++f) {
    if (f0 + f >= w.rows) break;
    const float b = bias ? detail::to_float(bias[f0 + f]) : 0.0f;
#pragma unroll
    for (int n = 0; n < N; ++n) {
      float out = detail::warp_sum(acc[f][n]) + b;
      if (lane == 0) {
        if (activate) out = apply(op, 0.0f, out);
        if (residual.data) out += detail::to_float(residual.data[n * residual.stride + f0 + f]);
        y.data[n * y.stride + f0 + f] = detail::from_float<S>(out);
      }
    }
  }
}

template <class T>
bool small_batch_linear(cudaStream_t stream, matrix<const T> x, matrix<const T> w, const T* bias, matrix<T> y, epilogue<T> after) {
  using S = detail::storage_t<T>;
  if (x.rows > detail::gemv_max_rows || !detail::vectorisable<T>(x.cols, {{x.data, x.stride}, {w.data, w.stride}})) return false;
  if (x.rows == 0 || w.rows == 0) return true;
  const unsigned blocks = static_cast<unsigned>((w.rows + detail::gemv_warps * detail::gemv_features - 1) /
                                                (detail::gemv_warps * detail::gemv_features));
  const matrix<const S> xs = detail::device(x), ws = detail::device(w);
  const S* b = reinterpret_cast<const S*>(bias);
  const matrix<S> ys = detail::device(y);
  const matrix<const S> residual = detail::device(after.residual);
  auto launch = [&](auto rows) {
    gemv_kernel<S, decltype(rows)::value><<<blocks, detail::gemv_warps * 32, 0, stream>>>(xs, ws, b, ys, after.activate, after.op, residual);
  };
  switch (x.rows) {
    case 1: launch(std::integral_constant<int, 1>{}); break;
    case 2: launch(std::integral_constant<int, 2>{}); break;
    case 3: launch(std::integral_constant<int, 3>{}); break;
    case 4: launch(std::integral_constant<int, 4>{}); break;
    case 5: launch(std::integral_constant<int, 5>{}); break;
    case 6: launch(std::integral_constant<int, 6>{}); break;
    case 7: launch(std::integral_constant<int, 7>{}); break;
    default: launch(std::integral_constant<int, 8>{}); break;
  }
  detail::check_launch("gemv_kernel");
  return true;
}

}  // namespace qformer::cuda_kernels
