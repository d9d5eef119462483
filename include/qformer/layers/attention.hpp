#pragma once
/// \file
/// MultiHeadAttention (self-attention, fused q/k/v projection) and CrossAttention (queries from one sequence,
/// keys and values from another sequence of another width). Both end in their output projection; residuals and
/// norms belong to the blocks, whose conventions differ (pre-LN ViT, post-LN BERT).

#include "../ops/ops.hpp"
#include "concepts.hpp"
#include "linear.hpp"

#include <cmath>

namespace qformer {

/// Self-attention: qkv = x W_qkv^T + b (one GEMM, (C) -> (3C) = [Q | K | V]), per-head softmax(Q K^T / sqrt(dh)
/// + mask) V, then the output projection. Mirrors Blip2Attention and BertSelfAttention + BertSelfOutput.dense.
template <class T, class D = cpu>
class MultiHeadAttention {
 public:
  MultiHeadAttention() = default;
  MultiHeadAttention(index_t width, index_t heads, bool qkv_bias = true)
      : width_(width), heads_(heads), qkv_(width, 3 * width, qkv_bias), out_(width, width) {
    if (heads <= 0 || width % heads) throw shape_error("MultiHeadAttention: heads must divide the width");
  }

  index_t width() const noexcept { return width_; }
  index_t heads() const noexcept { return heads_; }
  /// The fused [Q | K | V] projection (3C, C) and the output projection, for loaders with their own naming.
  Linear<T, D>& qkv_projection() noexcept { return qkv_; }
  Linear<T, D>& out_projection() noexcept { return out_; }

  /// Generic naming: "<s>.qkv" (fused) and "<s>.out".
  void load(const weight_scope& s) {
    qkv_.load(s / "qkv");
    out_.load(s / "out");
  }

  /// x (B, L, C), mask additive float (B, 1 | L, L) or empty -> y (B, L, C). y must not overlap x.
  void forward(context<D>& ctx, view<const T, D> x, view<const float, D> mask, view<T, D> y) const {
    typename context<D>::scope scope(ctx);
    view<T, D> qkv = qkv_(ctx, x);  // (B, L, 3C)
    view<T, D> heads_out = ctx.template alloc<T>(x.shape());
    ops::attention<T, D>(ctx, qkv.columns(0, width_), qkv.columns(width_, width_), qkv.columns(2 * width_, width_), mask,
                         heads_, scale(), heads_out);
    out_.forward(ctx, heads_out, y);
  }
  view<T, D> operator()(context<D>& ctx, view<const T, D> x, view<const float, D> mask = {}) const {
    view<T, D> y = ctx.template alloc<T>(x.shape());
    forward(ctx, x, mask, y);
    return y;
  }

 private:
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(width_ / heads_)); }

  index_t width_ = 0, heads_ = 1;
  Linear<T, D> qkv_, out_;
};

/// Cross-attention: Q from x (width C), K and V from `memory` (width C_mem) through one fused (C_mem) -> (2C)
/// projection, per-head softmax(Q K^T / sqrt(dh) + mask) V, output projection. Mirrors the Q-Former's
/// `crossattention.attention` + `crossattention.output.dense`.
template <class T, class D = cpu>
class CrossAttention {
 public:
  CrossAttention() = default;
  CrossAttention(index_t width, index_t memory_width, index_t heads)
      : width_(width), heads_(heads), q_(width, width), kv_(memory_width, 2 * width), out_(width, width) {
    if (heads <= 0 || width % heads) throw shape_error("CrossAttention: heads must divide the width");
  }

  Linear<T, D>& q_projection() noexcept { return q_; }
  Linear<T, D>& kv_projection() noexcept { return kv_; }
  Linear<T, D>& out_projection() noexcept { return out_; }

  /// Generic naming: "<s>.q", "<s>.kv" (fused), "<s>.out".
  void load(const weight_scope& s) {
    q_.load(s / "q");
    kv_.load(s / "kv");
    out_.load(s / "out");
  }

  /// x (B, Lq, C), memory (B, Lk, C_mem), mask additive float (B, 1 | Lq, Lk) or empty -> y (B, Lq, C).
  void forward(context<D>& ctx, view<const T, D> x, view<const T, D> memory, view<const float, D> mask,
               view<T, D> y) const {
    if (memory.rank() != 3 || memory.dim(0) != x.dim(0))
      throw shape_error("CrossAttention: memory " + memory.shape().str() + " for queries " + x.shape().str());
    typename context<D>::scope scope(ctx);
    view<T, D> q = q_(ctx, x);        // (B, Lq, C)
    view<T, D> kv = kv_(ctx, memory);  // (B, Lk, 2C)
    view<T, D> heads_out = ctx.template alloc<T>(x.shape());
    ops::attention<T, D>(ctx, q, kv.columns(0, width_), kv.columns(width_, width_), mask, heads_, scale(), heads_out);
    out_.forward(ctx, heads_out, y);
  }
  view<T, D> operator()(context<D>& ctx, view<const T, D> x, view<const T, D> memory,
                        view<const float, D> mask = {}) const {
    view<T, D> y = ctx.template alloc<T>(x.shape());
    forward(ctx, x, memory, mask, y);
    return y;
  }

 private:
  float scale() const { return 1.0f / std::sqrt(static_cast<float>(width_ / heads_)); }

  index_t width_ = 0, heads_ = 1;
  Linear<T, D> q_, kv_, out_;
};

static_assert(Layer<MultiHeadAttention<float, cpu>, float, cpu>);
static_assert(CrossLayer<CrossAttention<float, cpu>, float, cpu>);

}  // namespace qformer
