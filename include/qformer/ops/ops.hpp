#pragma once
/// \file
/// The device-agnostic op API. Each op checks its shapes, then forwards to backend<D>. Output views come last;
/// T and D are deduced from the output, so mutable views pass where read-only ones are asked for.
/// Ops are the only code that knows about devices: layers call these and nothing below them.

#include "../core/context.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

#include <string>
#include <type_traits>

namespace qformer {
template <class D>
struct backend;
}

namespace qformer::ops {

template <class T, class D>
using in = std::type_identity_t<view<const T, D>>;

namespace detail {
[[noreturn]] inline void fail(const char* op, const std::string& what) {
  throw shape_error(std::string("ops::") + op + ": " + what);
}
inline void same_matrix(const char* op, const shape& a, const shape& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) fail(op, "shapes " + a.str() + " and " + b.str() + " differ");
}
}  // namespace detail

/// y (N, out) = x (N, in) W^T + b. w is (out, in) as PyTorch stores Linear.weight; b is (out) or empty.
/// y must not overlap x.
template <class T, class D>
void linear(context<D>& ctx, in<T, D> x, in<T, D> w, in<T, D> b, view<T, D> y) {
  if (x.cols() != w.cols()) detail::fail("linear", "input " + x.shape().str() + " vs weight " + w.shape().str());
  if (y.rows() != x.rows() || y.cols() != w.rows())
    detail::fail("linear", "output " + y.shape().str() + " for input " + x.shape().str() + " and weight " + w.shape().str());
  if (!b.empty() && b.numel() != w.rows()) detail::fail("linear", "bias " + b.shape().str() + " vs weight " + w.shape().str());
  backend<D>::template linear<T>(ctx, x, w, b, y);
}

/// nn.LayerNorm over the last dimension: y = (x - mean) / sqrt(var + eps) * w + b. y may alias x.
template <class T, class D>
void layer_norm(context<D>& ctx, in<T, D> x, in<T, D> w, in<T, D> b, float eps, view<T, D> y) {
  detail::same_matrix("layer_norm", x.shape(), y.shape());
  if (w.numel() != x.cols() || b.numel() != x.cols())
    detail::fail("layer_norm", "weight " + w.shape().str() + " / bias " + b.shape().str() + " for input " + x.shape().str());
  backend<D>::template layer_norm<T>(ctx, x, w, b, eps, y);
}

/// Exact GELU, 0.5 x (1 + erf(x / sqrt 2)), elementwise. y may alias x.
template <class T, class D>
void gelu_erf(context<D>& ctx, in<T, D> x, view<T, D> y) {
  detail::same_matrix("gelu_erf", x.shape(), y.shape());
  backend<D>::template gelu_erf<T>(ctx, x, y);
}

/// max(x, 0) elementwise. y may alias x.
template <class T, class D>
void relu(context<D>& ctx, in<T, D> x, view<T, D> y) {
  detail::same_matrix("relu", x.shape(), y.shape());
  backend<D>::template relu<T>(ctx, x, y);
}

/// y = a + b elementwise (the residual connection). y may alias a or b.
template <class T, class D>
void add(context<D>& ctx, in<T, D> a, in<T, D> b, view<T, D> y) {
  detail::same_matrix("add", a.shape(), b.shape());
  detail::same_matrix("add", a.shape(), y.shape());
  backend<D>::template add<T>(ctx, a, b, y);
}

/// dst = src for two matrices of equal rows and columns (strides may differ). Gathers and scatters row blocks.
template <class T, class D>
void copy(context<D>& ctx, in<T, D> src, view<T, D> dst) {
  detail::same_matrix("copy", src.shape(), dst.shape());
  backend<D>::template copy<T>(ctx, src, dst);
}

/// Multi-head scaled dot-product attention, heads side by side in the last dimension:
/// q (B, Lq, H*dh), k and v (B, Lk, H*dh), mask additive float (B, 1 | Lq, Lk) or empty, out (B, Lq, H*dh);
/// out_h = softmax(q_h k_h^T * scale + mask) v_h. out must not overlap the inputs.
template <class T, class D>
void attention(context<D>& ctx, in<T, D> q, in<T, D> k, in<T, D> v, std::type_identity_t<view<const float, D>> mask,
               index_t heads, float scale, view<T, D> out) {
  if (q.rank() != 3 || k.rank() != 3 || v.rank() != 3 || out.rank() != 3) detail::fail("attention", "q, k, v, out must be rank 3");
  if (k.shape() != v.shape() || k.dim(0) != q.dim(0) || k.dim(2) != q.dim(2))
    detail::fail("attention", "q " + q.shape().str() + ", k " + k.shape().str() + ", v " + v.shape().str());
  if (out.shape() != q.shape()) detail::fail("attention", "out " + out.shape().str() + " vs q " + q.shape().str());
  if (heads <= 0 || q.dim(2) % heads != 0)
    detail::fail("attention", std::to_string(heads) + " heads do not divide width " + std::to_string(q.dim(2)));
  if (!mask.empty() && (mask.rank() != 3 || mask.dim(0) != q.dim(0) || (mask.dim(1) != 1 && mask.dim(1) != q.dim(1)) ||
                        mask.dim(2) != k.dim(1)))
    detail::fail("attention", "mask " + mask.shape().str() + " for q " + q.shape().str() + ", k " + k.shape().str());
  backend<D>::template attention<T>(ctx, q, k, v, mask, heads, scale, out);
}

/// im2col of a stride-p, kernel-p Conv2d: pixels (B, C, H, W) float -> patches (B, (H/p)(W/p), C p p), patches
/// row-major over the grid, features ordered (channel, ky, kx) like the flattened Conv2d weight.
template <class T, class D>
void patchify(context<D>& ctx, std::type_identity_t<view<const float, D>> pixels, index_t patch, view<T, D> patches) {
  if (pixels.rank() != 4 || !pixels.contiguous()) detail::fail("patchify", "pixels must be contiguous (B, C, H, W)");
  const index_t B = pixels.dim(0), C = pixels.dim(1), H = pixels.dim(2), W = pixels.dim(3);
  if (patch <= 0 || H % patch || W % patch)
    detail::fail("patchify", "image " + pixels.shape().str() + " is not a whole number of " + std::to_string(patch) + " px patches");
  if (patches.rank() != 3 || patches.dim(0) != B || patches.dim(1) != (H / patch) * (W / patch) ||
      patches.dim(2) != C * patch * patch)
    detail::fail("patchify", "patches " + patches.shape().str() + " for pixels " + pixels.shape().str());
  backend<D>::template patchify<T>(ctx, pixels, patch, patches);
}

}  // namespace qformer::ops
