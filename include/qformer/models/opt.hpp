#pragma once
/// \file
/// OPTForCausalLM (the language model of blip2-opt-*), decoding over a KV cache.
///   h = project_in(embed_tokens(ids) or inputs_embeds) + embed_positions(position + 2)
///   h = OPTBlock_i(h);  h = project_out(final_layer_norm(h));  logits = h lm_head^T
/// Positions follow the attention mask: position = cumsum(mask) * mask - 1 (pads get -1, so left padding is
/// right by construction), offset by 2 rows in the table. The head is tied to embed_tokens when the checkpoint
/// has no lm_head.weight.

#include "../core/recorded_pass.hpp"
#include "../layers/embedding.hpp"
#include "../layers/kv_cache.hpp"
#include "../layers/layer_norm.hpp"
#include "../layers/linear.hpp"
#include "../layers/opt_block.hpp"
#include "config.hpp"

#include <algorithm>
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
    run_blocks(ctx, h, cache, past, additive, {}, out);
    cache.advance(L);
    return out;
  }

  /// A decoding step whose varying inputs are read on device D when it runs, so that it can be recorded once and
  /// replayed (OPTSession's recorded steps). inputs (2B + 1): the new tokens' ids (B, checked by the caller),
  /// their rows of the position table (B: position + position_offset) and the cache length before the step (1);
  /// mask (B, 1, capacity) additive over every cache position (those after the step are not read). The cache is
  /// not advanced: the caller does that once the step has run. -> final hidden states (B, 1, W).
  view<T, D> decode_step_on_device(context<D>& ctx, view<const std::int64_t, D> inputs, view<const float, D> mask,
                                   KVCache<T, D>& cache) const {
    const index_t B = cache.batch(), C = cfg_.hidden_size;
    if (inputs.numel() != 2 * B + 1 || !inputs.contiguous())
      throw shape_error("OPT: step inputs " + inputs.shape().str() + " for a batch of " + std::to_string(B));
    view<T, D> out = ctx.template alloc<T>({B, 1, cfg_.word_embed_proj_dim});
    typename context<D>::scope scope(ctx);
    auto part = [&](index_t begin, index_t count) { return view<const std::int64_t, D>(inputs.data() + begin, {count}); };
    view<T, D> tokens = ctx.template alloc<T>({B, cfg_.word_embed_proj_dim});
    embed_tokens_.forward(ctx, part(0, B), tokens);
    const view<const T, D> embeds = project_in_ ? view<const T, D>((*project_in_)(ctx, tokens)) : view<const T, D>(tokens);
    view<T, D> h = ctx.template alloc<T>({B, 1, C});
    embed_positions_.forward(ctx, part(B, B), h.reshape({B, C}));
    ops::add<T, D>(ctx, h, embeds, h);
    run_blocks(ctx, h, cache, cache.length(), mask, part(2 * B, 1), out);
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

  /// h (B, L, C), embeddings plus positions (overwritten) -> out (B, L, W): every block, the final norm and
  /// project_out. past_on_device: see cached_attention.
  void run_blocks(context<D>& ctx, view<T, D> h, KVCache<T, D>& cache, index_t past, view<const float, D> mask,
                  view<const std::int64_t, D> past_on_device, view<T, D> out) const {
    view<T, D> spare = ctx.template alloc<T>(h.shape());
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      blocks_[i].forward(ctx, h, cache.keys(static_cast<index_t>(i)), cache.values(static_cast<index_t>(i)), past, mask, spare,
                         past_on_device);
      std::swap(h, spare);
    }
    if (cfg_.has_final_layer_norm()) final_ln_.forward(ctx, h, h);
    if (project_out_) project_out_->forward(ctx, h, out);
    else ops::copy<T, D>(ctx, h, out);
  }

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
///
/// Recorded steps (on by default on every device but the CPU): a step's varying inputs (ids, positions, cache
/// length) are uploaded into a buffer of the session and the step reads them on the device, so the step is
/// recorded once (recorded_pass: a CUDA graph) and replayed at every later step, one launch instead of a few
/// hundred. The recorded step keeps its scratch in an arena of its own and writes its logits to a tensor of the
/// session. select() (beam search moves the cache rows) turns recording off for the rest of the session.
template <class T, class D = cpu>
class OPTSession {
 public:
  OPTSession(const OPTForCausalLM<T, D>& lm, index_t batch, index_t capacity) : lm_(&lm), cache_(lm.make_cache(batch, capacity)) {
    mask_.resize(static_cast<std::size_t>(batch));
  }

  index_t batch() const noexcept { return cache_.batch(); }

  /// Whether steps are recorded and replayed (see the class comment); takes effect from the next step.
  void record_steps(bool on) {
    record_steps_ = on;
    recorded_.reset();
  }
  bool records_steps() const noexcept { return record_steps_; }

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
  /// One new token per row -> logits (B, V). Recorded steps return the session's logits tensor, valid until the
  /// next step.
  view<float, D> step(context<D>& ctx, std::span<const std::int64_t> tokens) {
    const index_t B = batch();
    if (static_cast<index_t>(tokens.size()) != B) throw shape_error("OPTSession::step: one token per row expected");
    if (record_steps_) return recorded_step(ctx, tokens);
    for (auto& m : mask_) m.push_back(1);
    view<T, D> e = lm_->embed(ctx, tokens);
    view<T, D> h = lm_->decode(ctx, e.reshape({B, 1, e.cols()}), flat_mask(), cache_);
    return lm_->logits(ctx, h.reshape({B, h.cols()}));
  }

  void select(context<D>& ctx, std::span<const index_t> rows) {
    record_steps(false);  // the recorded step knows the cache's buffers and batch
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

  /// step() through the recorded pass: the inputs uploaded, then the step run once eagerly and recorded (first
  /// recorded step), or replayed.
  view<float, D> recorded_step(context<D>& ctx, std::span<const std::int64_t> tokens) {
    const index_t B = batch(), past = cache_.length(), capacity = cache_.capacity();
    if (past >= capacity)
      throw invalid_argument("KV cache full: " + std::to_string(past + 1) + " positions, capacity " + std::to_string(capacity));
    ops::check_ids(tokens, lm_->vocab_size());
    for (auto& m : mask_) m.push_back(1);
    // (ids (B), position table rows (B), past): the new token's position counts the row's unmasked positions.
    std::vector<std::int64_t> inputs(tokens.begin(), tokens.end());
    for (const auto& m : mask_)
      inputs.push_back(static_cast<std::int64_t>(std::count_if(m.begin(), m.end(), [](std::int64_t v) { return v != 0; })) - 1 +
                       OPTForCausalLM<T, D>::position_offset);
    inputs.push_back(past);
    if (!recorded_.recorded()) {
      step_inputs_ = tensor<std::int64_t, D>(shape{2 * B + 1});
      step_logits_ = tensor<float, D>(shape{B, lm_->vocab_size()});
      // Every cache position: the past as its mask says, the positions still to come attended (not read before).
      std::vector<float> mask(static_cast<std::size_t>(B * capacity), 0.0f);
      for (index_t b = 0; b < B; ++b)
        for (index_t j = 0; j <= past; ++j)
          if (mask_[static_cast<std::size_t>(b)][static_cast<std::size_t>(j)] == 0) mask[static_cast<std::size_t>(b * capacity + j)] = masked_out;
      step_mask_ = tensor<float, D>(shape{B, 1, capacity});
      ops::upload<float, D>(ctx, mask, step_mask_.mut());
    }
    ops::upload<std::int64_t, D>(ctx, inputs, step_inputs_.mut());
    auto pass = [this](context<D>& c) {
      typename context<D>::arena_swap own(c, step_arena_);
      typename context<D>::scope scope(c);
      view<T, D> h = lm_->decode_step_on_device(c, step_inputs_.get(), step_mask_.get(), cache_);
      ops::copy<float, D>(c, lm_->logits(c, h.reshape({h.dim(0), h.dim(2)})), step_logits_.mut());
    };
    if (recorded_.recorded()) {
      recorded_.replay(ctx);
    } else {
      pass(ctx);  // sizes the step's arena and makes every one-time choice before the recording
      recorded_.record(ctx, pass);
    }
    cache_.advance(1);
    return step_logits_.mut();
  }

  const OPTForCausalLM<T, D>* lm_;
  KVCache<T, D> cache_;
  std::vector<std::vector<std::int64_t>> mask_;  // per row, every position so far
  bool record_steps_ = !std::is_same_v<D, cpu>;
  recorded_pass<D> recorded_;
  workspace_arena<D> step_arena_;         // the recorded step's scratch
  tensor<std::int64_t, D> step_inputs_;  // (2B + 1): ids, position table rows, past
  tensor<float, D> step_mask_;           // (B, 1, capacity)
  tensor<float, D> step_logits_;         // (B, V)
};

}  // namespace qformer
