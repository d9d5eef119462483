#pragma once
/// \file
/// T5ForConditionalGeneration (Flan-T5 in blip2-flan-t5-*): the encoder reads [queries; prompt], the decoder
/// generates from decoder_start_token_id over a KV cache.
///   encoder: h = embeds; h = T5Block_i(h, bias_enc + mask); enc = final_layer_norm(h)
///   decoder: h = shared(ids); h = T5Block_i(h, bias_dec + causal, enc); h = final_layer_norm(h)
///            logits = (h * d_model^-0.5 if scale_decoder_outputs) lm_head^T   (lm_head = shared when absent)
/// The relative position bias lives in block 0 of each stack and serves every block of that stack.

#include "../layers/embedding.hpp"
#include "../layers/kv_cache.hpp"
#include "../layers/rms_norm.hpp"
#include "../layers/t5_block.hpp"
#include "config.hpp"
#include "opt.hpp"  // masked_out, logits_as_float, token_batch

#include <cmath>
#include <span>
#include <vector>

namespace qformer {

/// T5's bucket of a relative position (key - query), as transformers' _relative_position_bucket computes it
/// (float32 logarithm, truncation).
inline index_t t5_relative_position_bucket(index_t relative_position, bool bidirectional, index_t num_buckets, index_t max_distance) {
  index_t bucket = 0;
  if (bidirectional) {
    num_buckets /= 2;
    if (relative_position > 0) bucket += num_buckets;
    relative_position = relative_position < 0 ? -relative_position : relative_position;
  } else {
    relative_position = relative_position < 0 ? -relative_position : 0;
  }
  const index_t max_exact = num_buckets / 2;
  if (relative_position < max_exact) return bucket + relative_position;
  const float scaled = std::log(float(relative_position) / float(max_exact)) / float(std::log(double(max_distance) / double(max_exact))) *
                       float(num_buckets - max_exact);
  const index_t large = std::min<index_t>(max_exact + static_cast<index_t>(scaled), num_buckets - 1);
  return bucket + large;
}

template <class T, class D = cpu>
class T5ForConditionalGeneration {
 public:
  explicit T5ForConditionalGeneration(const T5Config& c)
      : cfg_(c), shared_(c.vocab_size, c.d_model), encoder_ln_(c.d_model, c.layer_norm_epsilon), decoder_ln_(c.d_model, c.layer_norm_epsilon) {
    for (index_t i = 0; i < c.num_layers; ++i) encoder_.emplace_back(c, false);
    for (index_t i = 0; i < c.num_decoder_layers; ++i) decoder_.emplace_back(c, true);
  }

  const T5Config& config() const noexcept { return cfg_; }
  index_t vocab_size() const noexcept { return cfg_.vocab_size; }
  index_t num_decoder_layers() const noexcept { return cfg_.num_decoder_layers; }
  const std::vector<T5Block<T, D>>& decoder_blocks() const noexcept { return decoder_; }

  /// T5ForConditionalGeneration naming under "language_model".
  void load(const weight_scope& s) {
    shared_.load(s / "shared");
    const shape bias_shape{cfg_.relative_attention_num_buckets, cfg_.num_heads};
    encoder_bias_ = s.load<float>("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", bias_shape);
    decoder_bias_ = s.load<float>("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", bias_shape);
    for (std::size_t i = 0; i < encoder_.size(); ++i) encoder_[i].load(s / "encoder.block" / static_cast<index_t>(i));
    for (std::size_t i = 0; i < decoder_.size(); ++i) decoder_[i].load(s / "decoder.block" / static_cast<index_t>(i));
    encoder_ln_.load(s / "encoder.final_layer_norm");
    decoder_ln_.load(s / "decoder.final_layer_norm");
    if (s.has("lm_head.weight")) lm_head_ = s.load<T, D>("lm_head.weight", {cfg_.vocab_size, cfg_.d_model});
  }

  /// int8 weights for every Linear of both stacks and for the head (a quantised copy when it is tied to the shared
  /// embeddings): see Linear::quantize_int8. CPU only.
  void quantize_int8()
    requires std::is_same_v<D, cpu>
  {
    for (auto& b : encoder_) b.quantize_int8();
    for (auto& b : decoder_) b.quantize_int8();
    if (!head_int8_) head_int8_ = int8_weights::quantize<T>(lm_head_.empty() ? shared_.table() : view<const T, D>(lm_head_.get()));
    lm_head_ = tensor<T, D>();
  }

  /// Token embeddings (no scaling in T5): ids (N) -> (N, C).
  view<T, D> embed(context<D>& ctx, std::span<const std::int64_t> ids) const { return shared_(ctx, ids); }

  /// Encoder: embeds (B, L, C), mask (B, L) 0/1 -> encoder output (B, L, C).
  view<T, D> encode(context<D>& ctx, view<const T, D> embeds, std::span<const std::int64_t> mask) const {
    const index_t B = embeds.dim(0), L = embeds.dim(1), H = cfg_.num_heads;
    if (static_cast<index_t>(mask.size()) != B * L) throw shape_error("T5 encoder: mask does not match the embeddings " + embeds.shape().str());
    view<T, D> out = ctx.template alloc<T>(embeds.shape());
    typename context<D>::scope scope(ctx);
    std::vector<float> bias_host(static_cast<std::size_t>(B * H * L * L));
    const std::vector<index_t> bucket = buckets(-(L - 1), true);  // relative position key - query, from -(L-1)
    for (index_t b = 0; b < B; ++b)
      for (index_t h = 0; h < H; ++h)
        for (index_t i = 0; i < L; ++i) {
          float* row = bias_host.data() + ((b * H + h) * L + i) * L;
          for (index_t j = 0; j < L; ++j)
            row[j] = relative_bias(encoder_bias_, bucket[j - i + L - 1], h) + (mask[b * L + j] ? 0.0f : masked_out);
        }
    const view<float, D> bias = ops::uploaded<float, D>(ctx, bias_host, {B, H, L, L});
    view<T, D> h = ctx.template alloc<T>(embeds.shape()), spare = ctx.template alloc<T>(embeds.shape());
    ops::copy<T, D>(ctx, embeds, h);
    for (const auto& block : encoder_) {
      block.encode(ctx, h, bias, spare);
      std::swap(h, spare);
    }
    encoder_ln_.forward(ctx, h, out);
    return out;
  }

  /// Decoder over L new positions given the cross-attention keys / values of the encoder output.
  /// ids (B * L), self cache, cross cache (keys / values per layer, length Le), cross mask (B, 1, Le)
  /// -> logits (B * L, V).
  view<float, D> decode(context<D>& ctx, std::span<const std::int64_t> ids, index_t L, KVCache<T, D>& self_cache,
                        KVCache<T, D>& cross_cache, view<const float, D> cross_mask) const {
    const index_t B = self_cache.batch(), past = self_cache.length(), total = past + L, H = cfg_.num_heads;
    view<T, D> x = shared_(ctx, ids).reshape({B, L, cfg_.d_model});
    std::vector<float> bias_host(static_cast<std::size_t>(H * L * total));
    const std::vector<index_t> bucket = buckets(-(total - 1), false);  // key - query, from -(total-1); > 0 is masked
    for (index_t h = 0; h < H; ++h)
      for (index_t i = 0; i < L; ++i) {
        float* row = bias_host.data() + (h * L + i) * total;
        for (index_t j = 0; j < total; ++j)
          row[j] = j <= past + i ? relative_bias(decoder_bias_, bucket[j - (past + i) + total - 1], h) : masked_out;
      }
    const view<float, D> bias = ops::uploaded<float, D>(ctx, bias_host, {1, H, L, total});
    view<T, D> spare = ctx.template alloc<T>(x.shape());
    for (std::size_t l = 0; l < decoder_.size(); ++l) {
      const index_t li = static_cast<index_t>(l);
      view<const T, D> ck = cross_cache.keys(li).slice(0, B), cv = cross_cache.values(li).slice(0, B);
      decoder_[l].decode(ctx, x, self_cache.keys(li), self_cache.values(li), past, bias, ck, cv, cross_mask, spare);
      std::swap(x, spare);
    }
    self_cache.advance(L);
    decoder_ln_.forward(ctx, x, x);
    if (cfg_.scale_decoder_outputs) ops::scale<T, D>(ctx, x, 1.0f / std::sqrt(float(cfg_.d_model)), x);
    view<T, D> logits = ctx.template alloc<T>({B * L, cfg_.vocab_size});
    const view<const T, D> flat = x.reshape({B * L, cfg_.d_model});
    if constexpr (std::is_same_v<D, cpu>) {
      if (head_int8_) {
        cpu_detail::linear_int8<T>(ctx, flat, *head_int8_, nullptr, logits);
        return logits_as_float<T, D>(ctx, logits);
      }
    }
    ops::linear<T, D>(ctx, flat, lm_head_.empty() ? shared_.table() : lm_head_.get(), {}, logits);
    return logits_as_float<T, D>(ctx, logits);
  }

 private:
  /// The bucket of every relative position from `lowest` to -lowest, indexed by relative_position - lowest:
  /// each distinct distance is bucketed once per pass, not once per (batch, head, query, key).
  std::vector<index_t> buckets(index_t lowest, bool bidirectional) const {
    std::vector<index_t> out;
    for (index_t r = lowest; r <= -lowest; ++r)
      out.push_back(t5_relative_position_bucket(r, bidirectional, cfg_.relative_attention_num_buckets, cfg_.relative_attention_max_distance));
    return out;
  }

  float relative_bias(const tensor<float>& table, index_t bucket, index_t head) const {
    return table.data()[bucket * cfg_.num_heads + head];
  }

  T5Config cfg_;
  Embedding<T, D> shared_;
  tensor<float> encoder_bias_, decoder_bias_;  // (buckets, heads), host: they only shape the additive masks
  std::vector<T5Block<T, D>> encoder_, decoder_;
  RMSNorm<T, D> encoder_ln_, decoder_ln_;
  tensor<T, D> lm_head_;
  std::optional<int8_weights> head_int8_;  // quantize_int8()'s head; lm_head_ is then released
};

/// A T5 decoding in progress (a decoding_session): self-attention cache, the encoder output's cross-attention
/// keys / values per layer, and the encoder mask per row.
template <class T, class D = cpu>
class T5Session {
 public:
  /// enc (B, Le, C) with mask (B, Le); room for `max_decoder_length` decoder positions.
  T5Session(context<D>& ctx, const T5ForConditionalGeneration<T, D>& lm, view<const T, D> enc, std::span<const std::int64_t> mask,
            index_t max_decoder_length)
      : lm_(&lm), B_(enc.dim(0)), Le_(enc.dim(1)),
        self_(lm.num_decoder_layers(), B_, max_decoder_length, lm.config().inner_dim()),
        cross_(lm.num_decoder_layers(), B_, Le_, lm.config().inner_dim()),
        mask_(mask.begin(), mask.end()) {
    for (index_t l = 0; l < lm.num_decoder_layers(); ++l)
      lm.decoder_blocks()[static_cast<std::size_t>(l)].cross_keys_values(ctx, enc, cross_.keys(l), cross_.values(l));
    cross_.advance(Le_);
  }

  index_t batch() const noexcept { return B_; }

  /// One token per row -> logits (B, V).
  view<float, D> step(context<D>& ctx, std::span<const std::int64_t> tokens) {
    if (static_cast<index_t>(tokens.size()) != B_) throw shape_error("T5Session::step: one token per row expected");
    std::vector<float> cross_mask_host(static_cast<std::size_t>(B_ * Le_));
    for (index_t i = 0; i < B_ * Le_; ++i) cross_mask_host[static_cast<std::size_t>(i)] = mask_[static_cast<std::size_t>(i)] ? 0.0f : masked_out;
    const view<float, D> cross_mask = ops::uploaded<float, D>(ctx, cross_mask_host, {B_, 1, Le_});
    return lm_->decode(ctx, tokens, 1, self_, cross_, cross_mask);
  }

  void select(context<D>& ctx, std::span<const index_t> rows) {
    self_.select(ctx, rows);
    cross_.select(ctx, rows);
    std::vector<std::int64_t> m;
    for (index_t r : rows) m.insert(m.end(), mask_.begin() + r * Le_, mask_.begin() + (r + 1) * Le_);
    mask_.swap(m);
    B_ = static_cast<index_t>(rows.size());
  }

 private:
  const T5ForConditionalGeneration<T, D>* lm_;
  index_t B_, Le_;
  KVCache<T, D> self_, cross_;
  std::vector<std::int64_t> mask_;  // (B, Le)
};

}  // namespace qformer
