#pragma once
/// \file
/// QFormerBlock: one post-LN BERT layer of the Q-Former (Blip2QFormerLayer). Every sub-block is
/// "sublayer -> + residual -> LayerNorm":
///   a = LN_self(self_attn(x, mask) + x)                                  over all L positions
///   q = LN_cross(cross_attn(a[:, :Q], image) + a[:, :Q])                 only in layers with cross-attention
///   y[:, :Q] = LN_query(ffn_query(q) + q)                                query positions: their own FFN
///   y[:, Q:] = LN_text(ffn_text(a[:, Q:]) + a[:, Q:])                    text positions: the text FFN
/// Q is `query_length` (0 for a text-only pass, L for an image-only pass).

#include "attention.hpp"
#include "layer_norm.hpp"
#include "mlp.hpp"

#include <optional>

namespace qformer {

template <class T, class D = cpu>
class QFormerBlock {
 public:
  /// Sizes of one block; `memory_width` is the image features' width (the vision hidden size).
  struct options {
    index_t width = 768, heads = 12, ffn_hidden = 3072, memory_width = 1408;
    float eps = 1e-12f;
    bool cross_attention = true;  // layers i with i % cross_attention_frequency == 0
    bool text_ffn = false;        // use_qformer_text_input (retrieval checkpoints)
  };

  QFormerBlock() = default;
  explicit QFormerBlock(const options& o)
      : opt_(o), self_attn_(o.width, o.heads), self_ln_(o.width, o.eps), query_ffn_(o.width, o.ffn_hidden, activation::gelu_erf),
        query_ln_(o.width, o.eps) {
    if (o.cross_attention) {
      cross_attn_.emplace(o.width, o.memory_width, o.heads);
      cross_ln_.emplace(o.width, o.eps);
    }
    if (o.text_ffn) {
      text_ffn_.emplace(o.width, o.ffn_hidden, activation::gelu_erf);
      text_ln_.emplace(o.width, o.eps);
    }
  }

  const options& config() const noexcept { return opt_; }

  /// Blip2QFormerLayer naming under "qformer.encoder.layer.<i>".
  void load(const weight_scope& s) {
    self_attn_.qkv_projection().load_stacked({s / "attention.attention.query", s / "attention.attention.key",
                                              s / "attention.attention.value"});
    self_attn_.out_projection().load(s / "attention.output.dense");
    self_ln_.load(s / "attention.output.LayerNorm");
    if (cross_attn_) {
      cross_attn_->q_projection().load(s / "crossattention.attention.query");
      cross_attn_->kv_projection().load_stacked({s / "crossattention.attention.key", s / "crossattention.attention.value"});
      cross_attn_->out_projection().load(s / "crossattention.output.dense");
      cross_ln_->load(s / "crossattention.output.LayerNorm");
    }
    query_ffn_.load(s / "intermediate_query.dense", s / "output_query.dense");
    query_ln_.load(s / "output_query.LayerNorm");
    if (text_ffn_) {
      text_ffn_->load(s / "intermediate.dense", s / "output.dense");
      text_ln_->load(s / "output.LayerNorm");
    }
  }

  /// x (B, L, C); image (B, Li, C_mem) (read only when this block cross-attends and query_length > 0);
  /// self_mask additive float (B, 1 | L, L) or empty -> y (B, L, C). y must not overlap x.
  void forward(context<D>& ctx, view<const T, D> x, view<const T, D> image, index_t query_length,
               view<const float, D> self_mask, view<T, D> y) const {
    const index_t L = x.dim(1), Q = query_length;
    if (Q < 0 || Q > L) throw shape_error("QFormerBlock: query_length " + std::to_string(Q) + " for " + x.shape().str());
    if (L > Q && !text_ffn_) throw shape_error("QFormerBlock: text positions given but this block has no text feed-forward");
    typename context<D>::scope scope(ctx);
    view<T, D> a = self_attn_(ctx, x, self_mask);  // (B, L, C)
    ops::add<T, D>(ctx, a, x, a);
    self_ln_.forward(ctx, a, a);

    if (Q > 0) {
      view<T, D> q = rows(ctx, a, 0, Q);  // (B, Q, C)
      if (cross_attn_) {
        view<T, D> c = (*cross_attn_)(ctx, q, image);
        ops::add<T, D>(ctx, c, q, c);
        cross_ln_->forward(ctx, c, c);
        q = c;
      }
      feed_forward(ctx, query_ffn_, query_ln_, q, y, 0, Q);
    }
    if (L > Q) feed_forward(ctx, *text_ffn_, *text_ln_, rows(ctx, a, Q, L - Q), y, Q, L - Q);
  }
  view<T, D> operator()(context<D>& ctx, view<const T, D> x, view<const T, D> image, index_t query_length,
                        view<const float, D> self_mask = {}) const {
    view<T, D> y = ctx.template alloc<T>(x.shape());
    forward(ctx, x, image, query_length, self_mask, y);
    return y;
  }
  /// Image-only pass: every position is a query.
  view<T, D> operator()(context<D>& ctx, view<const T, D> x, view<const T, D> image) const {
    return (*this)(ctx, x, image, x.dim(1));
  }

 private:
  /// Positions [begin, begin + count) of every sequence of a (B, L, C) as a contiguous (B, count, C) view
  /// (the same memory when they are all of it).
  static view<T, D> rows(context<D>& ctx, view<T, D> a, index_t begin, index_t count) {
    const index_t B = a.dim(0), L = a.dim(1);
    if (begin == 0 && count == L) return a;
    view<T, D> out = ctx.template alloc<T>({B, count, a.dim(2)});
    for (index_t b = 0; b < B; ++b) ops::copy<T, D>(ctx, a[b].slice(begin, count), out[b]);
    return out;
  }

  /// y[:, begin:begin+count] = LN(ffn(h) + h) for h (B, count, C).
  static void feed_forward(context<D>& ctx, const MLP<T, D>& ffn, const LayerNorm<T, D>& ln, view<T, D> h, view<T, D> y,
                           index_t begin, index_t count) {
    typename context<D>::scope scope(ctx);
    view<T, D> f = ffn(ctx, h);
    ops::add<T, D>(ctx, f, h, f);
    ln.forward(ctx, f, f);
    if (count == y.dim(1)) {
      ops::copy<T, D>(ctx, f, y);
    } else {
      for (index_t b = 0; b < y.dim(0); ++b) ops::copy<T, D>(ctx, f[b], y[b].slice(begin, count));
    }
  }

  options opt_;
  MultiHeadAttention<T, D> self_attn_;
  LayerNorm<T, D> self_ln_;
  std::optional<CrossAttention<T, D>> cross_attn_;
  std::optional<LayerNorm<T, D>> cross_ln_;
  MLP<T, D> query_ffn_;
  LayerNorm<T, D> query_ln_;
  std::optional<MLP<T, D>> text_ffn_;
  std::optional<LayerNorm<T, D>> text_ln_;
};

static_assert(CrossLayer<QFormerBlock<float, cpu>, float, cpu>);

}  // namespace qformer
