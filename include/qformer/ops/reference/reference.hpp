#pragma once
/// \file
/// Plain scalar ops in the llm.c style: one loop nest per op, double accumulation, no SIMD, no library.
/// They are the oracle every backend is tested against, not something to run models with.

#include "../../core/tensor.hpp"
#include "../ops.hpp"

#include <cmath>
#include <vector>

namespace qformer::reference {

/// y (N, out) = x (N, in) W^T (out, in) + b (out). PyTorch nn.Linear.
template <class T>
void linear(view<const T> x, view<const T> w, view<const T> b, view<T> y) {
  for (index_t n = 0; n < x.rows(); ++n)
    for (index_t o = 0; o < w.rows(); ++o) {
      double acc = b.empty() ? 0.0 : to_float(b.data()[o]);
      for (index_t i = 0; i < x.cols(); ++i) acc += double(to_float(x.row(n)[i])) * to_float(w.row(o)[i]);
      y.row(n)[o] = from_float<T>(float(acc));
    }
}

/// y = (x - mean) / sqrt(var + eps) * w + b over the last dimension. PyTorch nn.LayerNorm (biased variance).
template <class T>
void layer_norm(view<const T> x, view<const T> w, view<const T> b, float eps, view<T> y) {
  const index_t C = x.cols();
  for (index_t n = 0; n < x.rows(); ++n) {
    double mean = 0, var = 0;
    for (index_t c = 0; c < C; ++c) mean += to_float(x.row(n)[c]);
    mean /= double(C);
    for (index_t c = 0; c < C; ++c) var += (to_float(x.row(n)[c]) - mean) * (to_float(x.row(n)[c]) - mean);
    var /= double(C);
    const double inv = 1.0 / std::sqrt(var + eps);
    for (index_t c = 0; c < C; ++c)
      y.row(n)[c] = from_float<T>(float((to_float(x.row(n)[c]) - mean) * inv * to_float(w.data()[c]) +
                                        to_float(b.data()[c])));
  }
}

/// y = 0.5 x (1 + erf(x / sqrt 2)). PyTorch nn.GELU() / ACT2FN["gelu"].
template <class T>
void gelu_erf(view<const T> x, view<T> y) {
  for (index_t n = 0; n < x.rows(); ++n)
    for (index_t c = 0; c < x.cols(); ++c) {
      const double v = to_float(x.row(n)[c]);
      y.row(n)[c] = from_float<T>(float(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)))));
    }
}

/// y = w * x / sqrt(mean(x^2) + eps). T5LayerNorm.
template <class T>
void rms_norm(view<const T> x, view<const T> w, float eps, view<T> y) {
  for (index_t n = 0; n < x.rows(); ++n) {
    double ms = 0;
    for (index_t c = 0; c < x.cols(); ++c) ms += double(to_float(x.row(n)[c])) * to_float(x.row(n)[c]);
    const double inv = 1.0 / std::sqrt(ms / double(x.cols()) + eps);
    for (index_t c = 0; c < x.cols(); ++c) y.row(n)[c] = from_float<T>(float(to_float(x.row(n)[c]) * inv * to_float(w.data()[c])));
  }
}

/// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). ACT2FN["gelu_new"].
template <class T>
void gelu_tanh(view<const T> x, view<T> y) {
  for (index_t n = 0; n < x.rows(); ++n)
    for (index_t c = 0; c < x.cols(); ++c) {
      const double v = to_float(x.row(n)[c]);
      y.row(n)[c] = from_float<T>(float(0.5 * v * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v)))));
    }
}

/// y = a * b.
template <class T>
void mul(view<const T> a, view<const T> b, view<T> y) {
  for (index_t n = 0; n < a.rows(); ++n)
    for (index_t c = 0; c < a.cols(); ++c) y.row(n)[c] = from_float<T>(to_float(a.row(n)[c]) * to_float(b.row(n)[c]));
}

/// y = max(x, 0).
template <class T>
void relu(view<const T> x, view<T> y) {
  for (index_t n = 0; n < x.rows(); ++n)
    for (index_t c = 0; c < x.cols(); ++c) {
      const float v = to_float(x.row(n)[c]);
      y.row(n)[c] = from_float<T>(v > 0 ? v : 0.0f);
    }
}

/// y = a + b (same shapes).
template <class T>
void add(view<const T> a, view<const T> b, view<T> y) {
  for (index_t n = 0; n < a.rows(); ++n)
    for (index_t c = 0; c < a.cols(); ++c)
      y.row(n)[c] = from_float<T>(to_float(a.row(n)[c]) + to_float(b.row(n)[c]));
}

/// Multi-head scaled dot-product attention.
/// q (B, Lq, H*dh), k and v (B, Lk, H*dh), mask additive (see ops::mask_layout) or empty, out (B, Lq, H*dh):
/// out_h = softmax(q_h k_h^T * scale + mask) v_h for each head h (columns h*dh .. h*dh+dh-1).
template <class T>
void attention(view<const T> q, view<const T> k, view<const T> v, view<const float> mask, index_t heads,
               float scale, view<T> out) {
  const index_t B = q.dim(0), Lq = q.dim(1), Lk = k.dim(1), dh = q.dim(2) / heads;
  std::vector<double> p(static_cast<std::size_t>(Lk));
  const ops::mask_layout m = mask.empty() ? ops::mask_layout{} : ops::mask_layout::of(mask);
  for (index_t b = 0; b < B; ++b)
    for (index_t h = 0; h < heads; ++h)
      for (index_t i = 0; i < Lq; ++i) {
        const T* qi = q.row(b * Lq + i) + h * dh;
        double mx = -INFINITY;
        for (index_t j = 0; j < Lk; ++j) {
          const T* kj = k.row(b * Lk + j) + h * dh;
          double s = 0;
          for (index_t d = 0; d < dh; ++d) s += double(to_float(qi[d])) * to_float(kj[d]);
          s *= scale;
          if (!mask.empty()) s += mask.row(m.row(b, h, i))[j];
          p[j] = s;
          mx = std::max(mx, s);
        }
        double sum = 0;
        for (index_t j = 0; j < Lk; ++j) sum += (p[j] = std::exp(p[j] - mx));
        for (index_t d = 0; d < dh; ++d) {
          double acc = 0;
          for (index_t j = 0; j < Lk; ++j) acc += p[j] / sum * to_float(v.row(b * Lk + j)[h * dh + d]);
          out.row(b * Lq + i)[h * dh + d] = from_float<T>(float(acc));
        }
      }
}

/// Cuts images into non-overlapping patches, the im2col of a stride-p, kernel-p Conv2d.
/// pixels (B, C, H, W) -> patches (B, (H/p)*(W/p), C*p*p); patches row-major over the grid, features ordered
/// (channel, ky, kx) as a Conv2d weight (out, C, p, p) flattens.
template <class T>
void patchify(view<const float> pixels, index_t patch, view<T> patches) {
  const index_t B = pixels.dim(0), C = pixels.dim(1), H = pixels.dim(2), W = pixels.dim(3);
  const index_t gh = H / patch, gw = W / patch;
  for (index_t b = 0; b < B; ++b)
    for (index_t py = 0; py < gh; ++py)
      for (index_t px = 0; px < gw; ++px) {
        T* dst = patches.row(b * gh * gw + py * gw + px);
        for (index_t c = 0; c < C; ++c)
          for (index_t ky = 0; ky < patch; ++ky)
            for (index_t kx = 0; kx < patch; ++kx)
              dst[(c * patch + ky) * patch + kx] =
                  from_float<T>(pixels.data()[((b * C + c) * H + py * patch + ky) * W + px * patch + kx]);
      }
}

}  // namespace qformer::reference
