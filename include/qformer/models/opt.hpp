#pragma once
/// \file
/// OPTForCausalLM (the language model of blip2-opt-*), decoding over a KV cache.
///   h = project_in(embed_tokens(ids) or inputs_embeds) + embed_positions(position + 2)
///   h = OPTBlock_i(h);  h = project_out(final_layer_norm(h));  logits = h lm_head^T
/// Positions follow the attention mask: position = cumsum(mask) * mask - 1 (pads get -1, so left padding is
/// right by construction), offset by 2 rows in the table. The head is tied to embed_tokens when the checkpoint
/// has no lm_head.weight.

#include "../layers/embedding.hpp"
#include "../layers/kv_cache.hpp"
#include "../layers/layer_norm.hpp"
#include "../layers/linear.hpp"
#include "../layers/opt_block.hpp"
#include "config.hpp"

#include <limits>
#include <optional>
#include <span>
#include <vector>

namespace qformer {

/// Additive mask value for blocked positions: torch.finfo(float32).min, as transformers uses.
inline constexpr float masked_out = std::numeric_limits<float>::lowest();

/// Logits (N, V) as float whatever T is.
template <class T, class D>
view<float, D> logits_as_float(context<D>& ctx, view<const T, D> logits) {
  if constexpr (std::is_same_v<T, float>) {
    return view<float, D>(const_cast<float*>(logits.data()), logits.shape(), logits.row_stride());
  } else {
    view<float, D> f = ctx.template alloc<float>(logits.shape());
    ops::cast<T, float, D>(ctx, logits, f);
    return f;
  }
}

template <class T, class D = cpu>
class OPTForCausalLM {
 public:
  explicit OPTForCausalLM(const OPTConfig& c)
      : cfg_(c), embed_tokens_(c.vocab_size, c.word_embed_proj_dim), embed_positions_(c.max_position_embeddings + position_offset, c.hidden_size),
        final_ln_(c.hidden_size, 1e-5f) {
    if (c.word_embed_proj_dim != c.hidden_size) {
      project_in_.emplace(c.word_embed_proj_dim, c.hidden_size, false);
      project_out_.emplace(c.hidden_size, c.word_embed_proj_dim, false);
    }
    for (index_t i = 0; i < c.num_hidden_layers; ++i) blocks_.emplace_back(c);
  }

  static constexpr index_t position_offset = 2;

  const OPTConfig& config() const noexcept { return cfg_; }
  index_t width() const noexcept { return cfg_.hidden_size; }
  index_t vocab_size() const noexcept { return cfg_.vocab_size; }
  index_t max_positions() const noexcept { return cfg_.max_position_embeddings; }

  /// OPTForCausalLM naming under "language_model".
  void load(const weight_scope& s) {
    const weight_scope dec = s / "model.decoder";
    embed_tokens_.load(dec / "embed_tokens");
    embed_positions_.load(dec / "embed_positions");
    if (project_in_) project_in_->load(dec / "project_in");
    if (project_out_) project_out_->load(dec / "project_out");
    for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].load(dec / "layers" / static_cast<index_t>(i));
    if (cfg_.has_final_layer_norm()) final_ln_.load(dec / "final_layer_norm");
    if (s.has("lm_head.weight")) lm_head_ = s.load<T, D>("lm_head.weight", {cfg_.vocab_size, cfg_.word_embed_proj_dim});
  }

  /// int8 weights for every Linear of the decoder and for the head (a quantised copy when it is tied to the
  /// token embeddings, which stay T for the lookup): see Linear::quantize_int8. CPU only.
  void quantize_int8()
    requires std::is_same_v<D, cpu>
  {
    if (project_in_) project_in_->quantize_int8();
    if (project_out_) project_out_->quantize_int8();
    for (auto& b : blocks_) b.quantize_int8();
    if (!head_int8_) head_int8_ = int8_weights::quantize<T>(head());
    lm_head_ = tensor<T, D>();
  }
  bool quantized() const noexcept { return head_int8_.has_value(); }

  /// The KV cache for `batch` sequences of up to `capacity` positions.
  KVCache<T, D> make_cache(index_t batch, index_t capacity) const {
    if (capacity > cfg_.max_position_embeddings)
      throw invalid_argument("sequence of " + std::to_string(capacity) + " positions exceeds the language model's " +
                             std::to_string(cfg_.max_position_embeddings) + " (max_position_embeddings)");
    return KVCache<T, D>(cfg_.num_hidden_layers, batch, capacity, cfg_.hidden_size);
  }

  /// Token embeddings, as inputs_embeds: ids (N) -> (N, C) (project_in applied when the widths differ).
  view<T, D> embed(context<D>& ctx, std::span<const std::int64_t> ids) const {
    view<T, D> e = embed_tokens_(ctx, ids);
    return project_in_ ? (*project_in_)(ctx, e) : e;
  }

  /// Runs L new positions. embeds (B, L, C); mask (B, past + L) host 0/1 over every position so far, where
  /// past = cache.length(). Appends to the cache and returns the final hidden states (B, L, W).
  view<T, D> decode(context<D>& ctx, view<const T, D> embeds, std::span<const std::int64_t> mask, KVCache<T, D>& cache) const {
    const index_t B = embeds.dim(0), L = embeds.dim(1), past = cache.length(), total = past + L;
    if (embeds.rank() != 3 || embeds.dim(2) != cfg_.hidden_size || cache.batch() != B)
      throw shape_error("OPT: inputs_embeds " + embeds.shape().str() + " for a cache of batch " + std::to_string(cache.batch()) +
                        " and width " + std::to_string(cfg_.hidden_size));
    if (static_cast<index_t>(mask.size()) != B * total)
      throw shape_error("OPT: attention mask of " + std::to_string(mask.size()) + " entries for (" + std::to_string(B) + ", " +
                        std::to_string(total) + ")");
    view<T, D> out = ctx.template alloc<T>({B, L, cfg_.word_embed_proj_dim});
    typename context<D>::scope scope(ctx);

    // Positions of the new tokens and the causal + padding mask (B, L, total).
    std::vector<std::int64_t> position_rows(static_cast<std::size_t>(B * L));
    std::vector<float> additive_host(static_cast<std::size_t>(B * L * total));
    for (index_t b = 0; b < B; ++b) {
      const std::int64_t* m = mask.data() + b * total;
      std::int64_t cumsum = 0;
      for (index_t j = 0; j < total; ++j) {
        cumsum += m[j] != 0;
        if (j >= past) position_rows[static_cast<std::size_t>(b * L + j - past)] = (m[j] != 0 ? cumsum - 1 : -1) + position_offset;
      }
      for (index_t i = 0; i < L; ++i)
        for (index_t j = 0; j < total; ++j)
          additive_host[static_cast<std::size_t>((b * L + i) * total + j)] = (j <= past + i && m[j] != 0) ? 0.0f : masked_out;
    }
    const view<float, D> additive = ops::uploaded<float, D>(ctx, additive_host, {B, L, total});
    view<T, D> h = ctx.template alloc<T>(embeds.shape());
    embed_positions_.forward(ctx, position_rows, h.reshape({B * L, cfg_.hidden_size}));
    ops::add<T, D>(ctx, h, embeds, h);

    view<T, D> spare = ctx.template alloc<T>(embeds.shape());
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      blocks_[i].forward(ctx, h, cache.keys(static_cast<index_t>(i)), cache.values(static_cast<index_t>(i)), past, additive, spare);
      std::swap(h, spare);
    }
    if (cfg_.has_final_layer_norm()) final_ln_.forward(ctx, h, h);
    if (project_out_) project_out_->forward(ctx, h, out);
    else ops::copy<T, D>(ctx, h, out);
    cache.advance(L);
    return out;
  }

  /// hidden (N, W) -> logits (N, V) as float.
  view<float, D> logits(context<D>& ctx, view<const T, D> hidden) const {
    view<T, D> l = ctx.template alloc<T>({hidden.rows(), cfg_.vocab_size});
    if constexpr (std::is_same_v<D, cpu>) {
      if (head_int8_) {
        cpu_detail::linear_int8<T>(ctx, hidden.reshape({hidden.rows(), hidden.cols()}), *head_int8_, nullptr, l);
        return logits_as_float<T, D>(ctx, l);
      }
    }
    ops::linear<T, D>(ctx, hidden.reshape({hidden.rows(), hidden.cols()}), head(), {}, l);
    return logits_as_float<T, D>(ctx, l);
  }

 private:
  view<const T, D> head() const noexcept { return lm_head_.empty() ? embed_tokens_.table() : lm_head_.get(); }

  OPTConfig cfg_;
  Embedding<T, D> embed_tokens_, embed_positions_;
  std::optional<Linear<T, D>> project_in_, project_out_;
  std::vector<OPTBlock<T, D>> blocks_;
  LayerNorm<T, D> final_ln_;
  tensor<T, D> lm_head_;
  std::optional<int8_weights> head_int8_;  // quantize_int8()'s head; lm_head_ is then released
};

}  // namespace qformer

namespace qformer {

/// A batch of token sequences with their attention mask, both (batch, length) row-major; mask 0 = padding.
struct token_batch {
  index_t batch = 0, length = 0;
  std::vector<std::int64_t> ids, mask;

  /// Every row unpadded.
  static token_batch unpadded(index_t batch, index_t length, std::vector<std::int64_t> ids) {
    if (static_cast<index_t>(ids.size()) != batch * length) throw shape_error("token_batch: ids do not fill (batch, length)");
    token_batch t{batch, length, std::move(ids), {}};
    t.mask.assign(t.ids.size(), 1);
    return t;
  }
  std::span<const std::int64_t> row(index_t b) const { return {ids.data() + b * length, static_cast<std::size_t>(length)}; }
  void validate() const {
    if (static_cast<index_t>(ids.size()) != batch * length || mask.size() != ids.size())
      throw shape_error("token_batch: ids / mask do not match (" + std::to_string(batch) + ", " + std::to_string(length) + ")");
  }
};

/// An OPT decoding in progress: KV cache plus the attention mask of every position so far (a decoding_session).
template <class T, class D = cpu>
class OPTSession {
 public:
  OPTSession(const OPTForCausalLM<T, D>& lm, index_t batch, index_t capacity) : lm_(&lm), cache_(lm.make_cache(batch, capacity)) {
    mask_.resize(static_cast<std::size_t>(batch));
  }

  index_t batch() const noexcept { return cache_.batch(); }

  /// The prompt: embeds (B, L, C) with mask (B, L) -> final hidden states (B, L, W).
  view<T, D> prefill(context<D>& ctx, view<const T, D> embeds, std::span<const std::int64_t> mask) {
    const index_t B = batch(), L = embeds.dim(1);
    if (static_cast<index_t>(mask.size()) != B * L) throw shape_error("OPTSession::prefill: mask does not match the embeddings");
    for (index_t b = 0; b < B; ++b) mask_[b].insert(mask_[b].end(), mask.begin() + b * L, mask.begin() + (b + 1) * L);
    return lm_->decode(ctx, embeds, flat_mask(), cache_);
  }

  /// Logits (B, V) of the last position of hidden (B, L, W).
  view<float, D> last_logits(context<D>& ctx, view<const T, D> hidden) const {
    const index_t B = hidden.dim(0), L = hidden.dim(1);
    view<T, D> last = ctx.template alloc<T>({B, hidden.dim(2)});
    for (index_t b = 0; b < B; ++b) ops::copy<T, D>(ctx, hidden[b].slice(L - 1, 1), last.slice(b, 1));
    return lm_->logits(ctx, last);
  }

  /// One new token per row -> logits (B, V).
  view<float, D> step(context<D>& ctx, std::span<const std::int64_t> tokens) {
    const index_t B = batch();
    if (static_cast<index_t>(tokens.size()) != B) throw shape_error("OPTSession::step: one token per row expected");
    for (auto& m : mask_) m.push_back(1);
    view<T, D> e = lm_->embed(ctx, tokens);
    view<T, D> h = lm_->decode(ctx, e.reshape({B, 1, e.cols()}), flat_mask(), cache_);
    return lm_->logits(ctx, h.reshape({B, h.cols()}));
  }

  void select(context<D>& ctx, std::span<const index_t> rows) {
    cache_.select(ctx, rows);
    std::vector<std::vector<std::int64_t>> m;
    for (index_t r : rows) m.push_back(mask_[static_cast<std::size_t>(r)]);
    mask_.swap(m);
  }

 private:
  std::vector<std::int64_t> flat_mask() const {
    std::vector<std::int64_t> flat;
    for (const auto& m : mask_) flat.insert(flat.end(), m.begin(), m.end());
    return flat;
  }

  const OPTForCausalLM<T, D>* lm_;
  KVCache<T, D> cache_;
  std::vector<std::vector<std::int64_t>> mask_;  // per row, every position so far
};

}  // namespace qformer
