#pragma once
/// \file
/// QFormer: Blip2QFormerModel with its learned queries (Blip2Model.query_tokens).
///   x = layernorm(query_tokens broadcast to B)     (B, Q, C)  (queries get no position embedding)
///   x = QFormerBlock_i(x, image_embeds)            cross-attention in layers i % frequency == 0
/// The image attention mask is all ones (every image token is visible), so no mask is applied.

#include "../layers/layer_norm.hpp"
#include "../layers/qformer_block.hpp"
#include "config.hpp"

#include <vector>

namespace qformer {

template <class T, class D = cpu>
class QFormer {
 public:
  QFormer() = default;
  QFormer(const QFormerConfig& c, index_t num_queries) : cfg_(c), num_queries_(num_queries), ln_(c.hidden_size, c.layer_norm_eps) {
    blocks_.reserve(static_cast<std::size_t>(c.num_hidden_layers));
    for (index_t i = 0; i < c.num_hidden_layers; ++i) blocks_.emplace_back(block_options(c, i));
  }

  const QFormerConfig& config() const noexcept { return cfg_; }
  index_t num_queries() const noexcept { return num_queries_; }
  const std::vector<QFormerBlock<T, D>>& blocks() const noexcept { return blocks_; }
  const LayerNorm<T, D>& input_layer_norm() const noexcept { return ln_; }
  view<const T, D> query_tokens() const noexcept { return queries_.get(); }

  /// Options of block i for a configuration (exposed so custom variants build the same blocks).
  static typename QFormerBlock<T, D>::options block_options(const QFormerConfig& c, index_t i) {
    typename QFormerBlock<T, D>::options o;
    o.width = c.hidden_size;
    o.heads = c.num_attention_heads;
    o.ffn_hidden = c.intermediate_size;
    o.memory_width = c.encoder_hidden_size;
    o.eps = c.layer_norm_eps;
    o.cross_attention = c.has_cross_attention(i);
    o.text_ffn = c.use_qformer_text_input;
    return o;
  }

  /// `queries` names query_tokens (1, Q, C); `s` is the "qformer" scope.
  void load(const weight_scope& queries, const weight_scope& s) {
    queries_ = queries.template load<T, D>("query_tokens", {1, num_queries_, cfg_.hidden_size});
    ln_.load(s / "layernorm");
    for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].load(s / "encoder.layer" / static_cast<index_t>(i));
  }

  /// image_embeds (B, Li, C_vision) -> last_hidden_state (B, Q, C): the learned queries alone.
  void forward(context<D>& ctx, view<const T, D> image_embeds, view<T, D> out) const {
    if (image_embeds.rank() != 3 || image_embeds.dim(2) != cfg_.encoder_hidden_size)
      throw shape_error("QFormer: image embeddings " + image_embeds.shape().str() + " must be (B, L, " +
                        std::to_string(cfg_.encoder_hidden_size) + ")");
    const index_t B = image_embeds.dim(0);
    if (!(out.shape() == shape{B, num_queries_, cfg_.hidden_size})) throw shape_error("QFormer: output " + out.shape().str());
    typename context<D>::scope scope(ctx);
    view<T, D> x = ctx.template alloc<T>(out.shape());
    view<const T, D> q = queries_.get().reshape({num_queries_, cfg_.hidden_size});
    for (index_t b = 0; b < B; ++b) ops::copy<T, D>(ctx, q, x[b]);
    encode(ctx, x, num_queries_, {}, image_embeds, out);
  }

  /// The general Q-Former pass (Blip2QFormerModel.forward): embeddings (B, L, C) — queries first, then text —
  /// go through the input layer norm and every block. The first `query_length` positions cross-attend to
  /// `image_embeds` (B, Li, C_vision; may be empty when query_length is 0); `self_mask` is additive float
  /// (B, 1 | L, L) or empty. -> out (B, L, C). out may not overlap embeddings.
  void encode(context<D>& ctx, view<const T, D> embeddings, index_t query_length, view<const float, D> self_mask,
              view<const T, D> image_embeds, view<T, D> out) const {
    if (embeddings.rank() != 3 || embeddings.dim(2) != cfg_.hidden_size || !(out.shape() == embeddings.shape()))
      throw shape_error("QFormer: embeddings " + embeddings.shape().str() + " / output " + out.shape().str());
    typename context<D>::scope scope(ctx);
    view<T, D> x = ctx.template alloc<T>(embeddings.shape());
    ln_.forward(ctx, embeddings, x);
    view<T, D> spare = ctx.template alloc<T>(embeddings.shape());
    view<T, D> cur = x;
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      view<T, D> next = (i + 1 == blocks_.size()) ? out : (cur.data() == x.data() ? spare : x);
      blocks_[i].forward(ctx, cur, image_embeds, query_length, self_mask, next);
      cur = next;
    }
    if (blocks_.empty()) ops::copy<T, D>(ctx, x, out);
  }

  view<T, D> operator()(context<D>& ctx, view<const T, D> image_embeds) const {
    view<T, D> out = ctx.template alloc<T>({image_embeds.dim(0), num_queries_, cfg_.hidden_size});
    forward(ctx, image_embeds, out);
    return out;
  }

 private:
  QFormerConfig cfg_;
  index_t num_queries_ = 32;
  tensor<T, D> queries_;
  LayerNorm<T, D> ln_;
  std::vector<QFormerBlock<T, D>> blocks_;
};

}  // namespace qformer
