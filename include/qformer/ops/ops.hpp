#pragma once
/// \file
/// The device-agnostic op API. Each op checks its shapes, then forwards to backend<D>. Output views come last;
/// T and D are deduced from the output, so mutable views pass where read-only ones are asked for.
/// Ops are the only code that knows about devices: layers call these and nothing below them.

#include "../core/context.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

namespace qformer {
template <class D>
struct backend;

/// The activations of the feed-forward blocks (ViT / Q-Former GELU, OPT ReLU, T5 ReLU or tanh GELU).
enum class activation { gelu_erf, gelu_tanh, relu };
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
/// Whether two views' memory ranges (first to last element, strides included) overlap.
template <class A, class B>
bool overlap(const A& a, const B& b) {
  if (a.empty() || b.empty() || a.numel() == 0 || b.numel() == 0) return false;
  auto range = [](const auto& v) {
    const char* first = reinterpret_cast<const char*>(v.data());
    const char* end = reinterpret_cast<const char*>(v.data() + (v.rows() - 1) * v.row_stride() + v.cols());
    return std::pair(first, end);
  };
  const auto [a0, a1] = range(a);
  const auto [b0, b1] = range(b);
  return a0 < b1 && b0 < a1;
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

/// T5LayerNorm (RMSNorm): y = w * x / sqrt(mean(x^2) + eps) over the last dimension, no mean, no bias.
/// y may alias x.
template <class T, class D>
void rms_norm(context<D>& ctx, in<T, D> x, in<T, D> w, float eps, view<T, D> y) {
  detail::same_matrix("rms_norm", x.shape(), y.shape());
  if (w.numel() != x.cols()) detail::fail("rms_norm", "weight " + w.shape().str() + " for input " + x.shape().str());
  backend<D>::template rms_norm<T>(ctx, x, w, eps, y);
}

/// The tanh form of GELU ("gelu_new"): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). y may alias x.
template <class T, class D>
void gelu_tanh(context<D>& ctx, in<T, D> x, view<T, D> y) {
  detail::same_matrix("gelu_tanh", x.shape(), y.shape());
  backend<D>::template gelu_tanh<T>(ctx, x, y);
}

/// y = a * b elementwise (gated feed-forwards). y may alias a or b.
template <class T, class D>
void mul(context<D>& ctx, in<T, D> a, in<T, D> b, view<T, D> y) {
  detail::same_matrix("mul", a.shape(), b.shape());
  detail::same_matrix("mul", a.shape(), y.shape());
  backend<D>::template mul<T>(ctx, a, b, y);
}

/// y = x * factor elementwise. y may alias x.
template <class T, class D>
void scale(context<D>& ctx, in<T, D> x, float factor, view<T, D> y) {
  detail::same_matrix("scale", x.shape(), y.shape());
  backend<D>::template scale<T>(ctx, x, factor, y);
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

/// y = act(x) elementwise for one of the feed-forward activations. y may alias x.
template <class T, class D>
void activate(context<D>& ctx, activation act, in<T, D> x, view<T, D> y) {
  switch (act) {
    case activation::gelu_erf: gelu_erf<T, D>(ctx, x, y); break;
    case activation::gelu_tanh: gelu_tanh<T, D>(ctx, x, y); break;
    case activation::relu: relu<T, D>(ctx, x, y); break;
  }
}

namespace detail {
/// linear_fused's epilogue as separate ops on a computed y: the activation in place, then the residual add.
template <class T, class D>
void apply_epilogue(context<D>& ctx, std::optional<activation> act, in<T, D> residual, view<T, D> y) {
  if (act) activate<T, D>(ctx, *act, y, y);
  if (!residual.empty()) add<T, D>(ctx, y, residual, y);
}
/// linear_fused as separate ops: linear, then apply_epilogue.
template <class T, class D>
void linear_then_epilogue(context<D>& ctx, in<T, D> x, in<T, D> w, in<T, D> b, std::optional<activation> act, in<T, D> residual,
                          view<T, D> y) {
  backend<D>::template linear<T>(ctx, x, w, b, y);
  apply_epilogue<T, D>(ctx, act, residual, y);
}
}  // namespace detail

/// y = act(x W^T + b) + residual, each part after the product optional (act: nullopt; residual: empty): linear()
/// with its epilogue fused where the backend can (the CUDA backend's GEMV of decoding steps applies both before
/// its one rounding), else linear() and the elementwise ops. residual has y's shape; y overlaps neither x nor
/// residual (the unfused path writes y before it adds the residual).
template <class T, class D>
void linear_fused(context<D>& ctx, in<T, D> x, in<T, D> w, in<T, D> b, std::optional<activation> act, in<T, D> residual, view<T, D> y) {
  if (x.cols() != w.cols()) detail::fail("linear_fused", "input " + x.shape().str() + " vs weight " + w.shape().str());
  if (y.rows() != x.rows() || y.cols() != w.rows())
    detail::fail("linear_fused", "output " + y.shape().str() + " for input " + x.shape().str() + " and weight " + w.shape().str());
  if (!b.empty() && b.numel() != w.rows()) detail::fail("linear_fused", "bias " + b.shape().str() + " vs weight " + w.shape().str());
  if (!residual.empty()) detail::same_matrix("linear_fused", residual.shape(), y.shape());
  if (detail::overlap(y, x) || detail::overlap(y, residual)) detail::fail("linear_fused", "the output overlaps the input or the residual");
  backend<D>::template linear_fused<T>(ctx, x, w, b, act, residual, y);
}

/// dst = src converted element by element from S to T (round to nearest even when narrowing). Same shapes.
template <class S, class T, class D>
void cast(context<D>& ctx, std::type_identity_t<view<const S, D>> src, view<T, D> dst) {
  detail::same_matrix("cast", src.shape(), dst.shape());
  backend<D>::template cast<S, T>(ctx, src, dst);
}

/// dst = src for two matrices of equal rows and columns (strides may differ). Gathers and scatters row blocks.
template <class T, class D>
void copy(context<D>& ctx, in<T, D> src, view<T, D> dst) {
  detail::same_matrix("copy", src.shape(), dst.shape());
  backend<D>::template copy<T>(ctx, src, dst);
}

/// dst (contiguous, on device D) = values from host memory (masks, positions built on the host). The host
/// memory may be reused as soon as this returns.
template <class T, class D>
void upload(context<D>& ctx, std::span<const T> host, view<T, D> dst) {
  if (!dst.contiguous() || static_cast<index_t>(host.size()) != dst.numel())
    detail::fail("upload", std::to_string(host.size()) + " host values into " + dst.shape().str());
  backend<D>::template upload<T>(ctx, host, dst);
}

/// host (on the CPU) = src (on device D), same rows and columns; returns once the values are on the host.
template <class T, class D>
void download(context<D>& ctx, in<T, D> src, view<T, cpu> host) {
  detail::same_matrix("download", src.shape(), host.shape());
  backend<D>::template download<T>(ctx, src, host);
}

/// A new arena tensor of shape s on device D holding host values (masks and biases built on the host).
template <class T, class D>
view<T, D> uploaded(context<D>& ctx, std::span<const T> host, const shape& s) {
  view<T, D> dst = ctx.template alloc<T>(s);
  upload<T, D>(ctx, host, dst);
  return dst;
}

/// Throws invalid_argument naming the first id outside [0, rows) (a table of `rows` rows).
inline void check_ids(std::span<const std::int64_t> ids, index_t rows) {
  for (std::int64_t id : ids)
    if (id < 0 || id >= rows)
      throw invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(rows) + ")");
}

/// Row gather: out (N, C) row n = table row ids[n] (nn.Embedding). ids live on the host; an id outside
/// [0, rows) is an invalid_argument naming it.
template <class T, class D>
void embedding(context<D>& ctx, in<T, D> table, std::span<const std::int64_t> ids, view<T, D> out) {
  if (out.rows() != static_cast<index_t>(ids.size()) || out.cols() != table.cols())
    detail::fail("embedding", std::to_string(ids.size()) + " ids into " + out.shape().str() + " from table " + table.shape().str());
  check_ids(ids, table.rows());
  backend<D>::template embedding<T>(ctx, table, ids, out);
}

/// embedding() with the ids (N) already on device D, read when the op runs: a decoding step recorded once and
/// replayed (a CUDA graph) reads them from a buffer the host refills before each replay. The caller has checked
/// them (check_ids) before they were uploaded.
template <class T, class D>
void embedding_of_device_ids(context<D>& ctx, in<T, D> table, in<std::int64_t, D> ids, view<T, D> out) {
  if (!ids.contiguous() || out.rows() != ids.numel() || out.cols() != table.cols())
    detail::fail("embedding_of_device_ids", std::to_string(ids.numel()) + " ids into " + out.shape().str() + " from table " +
                                                table.shape().str());
  backend<D>::template embedding_of_device_ids<T>(ctx, table, ids, out);
}

/// A decoding step recorded once and replayed: k_rows and v_rows (B, C), the new position's keys and values, go
/// to position *past of each batch row of cache_k / cache_v (B, capacity, C), past (one value on device D) being
/// read when the op runs, so the same recorded op serves every step. The host checks past < capacity before each
/// replay.
template <class T, class D>
void write_cache_rows(context<D>& ctx, in<T, D> k_rows, in<T, D> v_rows, view<T, D> cache_k, view<T, D> cache_v,
                      in<std::int64_t, D> past) {
  if (cache_k.rank() != 3 || !cache_k.contiguous() || cache_v.shape() != cache_k.shape() || !cache_v.contiguous() ||
      k_rows.rows() != cache_k.dim(0) || k_rows.cols() != cache_k.dim(2) || v_rows.shape() != k_rows.shape() || past.numel() != 1)
    detail::fail("write_cache_rows", "rows " + k_rows.shape().str() + " / " + v_rows.shape().str() + " into caches " +
                                         cache_k.shape().str() + " / " + cache_v.shape().str() + " at " + past.shape().str() +
                                         " past positions");
  backend<D>::template write_cache_rows<T>(ctx, k_rows, v_rows, cache_k, cache_v, past);
}

/// How an additive attention mask broadcasts: mask (Bm, Hm, Qm, Lk) with Bm in {1, B}, Hm in {1, H}, Qm in {1, Lq}
/// (a rank-3 mask is (Bm, Qm, Lk) with Hm = 1). Element (b, h, i, j) is at row offset() of the flattened rows.
struct mask_layout {
  index_t batch = 1, heads = 1, queries = 1;
  /// Flattened row of (b, h, i), broadcasting the dimensions of size 1.
  index_t row(index_t b, index_t h, index_t i) const noexcept {
    return ((batch == 1 ? 0 : b) * heads + (heads == 1 ? 0 : h)) * queries + (queries == 1 ? 0 : i);
  }
  template <class V>
  static mask_layout of(const V& mask) {
    if (mask.rank() == 3) return {mask.dim(0), 1, mask.dim(1)};
    return {mask.dim(0), mask.dim(1), mask.dim(2)};
  }
};

namespace detail {
/// Whether an additive mask (empty, or rank 3 / 4, contiguous) broadcasts over q (B, Lq, C), `heads` and `keys`.
template <class V>
bool mask_fits(const V& mask, const shape& q, index_t heads, index_t keys) {
  if (mask.empty()) return true;
  if ((mask.rank() != 3 && mask.rank() != 4) || !mask.contiguous()) return false;
  const mask_layout m = mask_layout::of(mask);
  auto fits = [](index_t got, index_t full) { return got == 1 || got == full; };
  return fits(m.batch, q[0]) && fits(m.heads, heads) && fits(m.queries, q[1]) && mask.cols() == keys;
}
}  // namespace detail

/// Multi-head scaled dot-product attention, heads side by side in the last dimension:
/// q (B, Lq, H*dh), k and v (B, Lk, H*dh), mask additive float broadcast as in mask_layout or empty,
/// out (B, Lq, H*dh); out_h = softmax(q_h k_h^T * scale + mask) v_h. out must not overlap the inputs.
template <class T, class D>
void attention(context<D>& ctx, in<T, D> q, in<T, D> k, in<T, D> v, std::type_identity_t<view<const float, D>> mask,
               index_t heads, float scale, view<T, D> out) {
  if (q.rank() != 3 || k.rank() != 3 || v.rank() != 3 || out.rank() != 3) detail::fail("attention", "q, k, v, out must be rank 3");
  if (k.shape() != v.shape() || k.dim(0) != q.dim(0) || k.dim(2) != q.dim(2))
    detail::fail("attention", "q " + q.shape().str() + ", k " + k.shape().str() + ", v " + v.shape().str());
  if (out.shape() != q.shape()) detail::fail("attention", "out " + out.shape().str() + " vs q " + q.shape().str());
  if (heads <= 0 || q.dim(2) % heads != 0)
    detail::fail("attention", std::to_string(heads) + " heads do not divide width " + std::to_string(q.dim(2)));
  if (!detail::mask_fits(mask, q.shape(), heads, k.dim(1)))
    detail::fail("attention", "mask " + mask.shape().str() + " for q " + q.shape().str() + ", k " + k.shape().str() + ", " +
                                  std::to_string(heads) + " heads");
  backend<D>::template attention<T>(ctx, q, k, v, mask, heads, scale, out);
}

/// attention() of q (B, Lq, H*dh) over the first `keys` positions of each batch row of a KV cache k_cache,
/// v_cache (B, capacity, H*dh), for the whole batch in one call. mask as in attention() with Lk = keys.
/// past_on_device, when given (one value on device D; then Lq = 1: a decoding step recorded once and replayed),
/// makes the keys attended *past_on_device + 1, read when the op runs; `keys` is then their upper bound and the
/// mask's row length.
template <class T, class D>
void attention_over_cache(context<D>& ctx, in<T, D> q, in<T, D> k_cache, in<T, D> v_cache, index_t keys,
                          std::type_identity_t<view<const float, D>> mask, index_t heads, float scale, view<T, D> out,
                          in<std::int64_t, D> past_on_device = {}) {
  if (k_cache.rank() != 3 || k_cache.shape() != v_cache.shape() || !k_cache.contiguous() || !v_cache.contiguous() ||
      k_cache.dim(0) != q.dim(0) || k_cache.dim(2) != q.dim(2) || keys < 1 || keys > k_cache.dim(1))
    detail::fail("attention_over_cache", "q " + q.shape().str() + ", caches " + k_cache.shape().str() + " / " + v_cache.shape().str() +
                                             ", " + std::to_string(keys) + " keys");
  // The remaining checks are attention()'s, on the first batch row's prefix.
  if (q.rank() != 3 || out.shape() != q.shape()) detail::fail("attention_over_cache", "q " + q.shape().str() + ", out " + out.shape().str());
  if (heads <= 0 || q.dim(2) % heads != 0)
    detail::fail("attention_over_cache", std::to_string(heads) + " heads do not divide width " + std::to_string(q.dim(2)));
  if (!detail::mask_fits(mask, q.shape(), heads, keys))
    detail::fail("attention_over_cache", "mask " + mask.shape().str() + " for q " + q.shape().str() + ", " + std::to_string(keys) + " keys");
  if (!past_on_device.empty() && (past_on_device.numel() != 1 || q.dim(1) != 1 ||
                                  (!mask.empty() && mask.numel() > mask.dim(0) * keys)))
    detail::fail("attention_over_cache", "past on the device " + past_on_device.shape().str() + " for q " + q.shape().str() +
                                             " and mask " + mask.shape().str() +
                                             " (one value, one query position, one mask row per batch row)");
  backend<D>::template attention_over_cache<T>(ctx, q, k_cache, v_cache, keys, mask, heads, scale, out, past_on_device);
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
