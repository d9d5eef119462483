#pragma once
/// \file
/// Blip2: the BLIP-2 image path as Blip2ForConditionalGeneration computes it —
///   pixels -> VisionEncoder -> QFormer (queries cross-attend to all image tokens) -> language_projection.
/// The language models (OPT, Flan-T5) and generation come on top of this (issue B).

#include "../generate/search.hpp"
#include "../io/checkpoint.hpp"
#include "../layers/linear.hpp"
#include "config.hpp"
#include "pretrained.hpp"
#include "opt.hpp"
#include "qformer.hpp"
#include "t5.hpp"
#include "vision_encoder.hpp"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

namespace qformer {

/// Everything the image path produces, in the caller's arena (valid until the caller's scope ends).
template <class T, class D>
struct image_features {
  view<T, D> vision_last_hidden_state;   // (B, 1 + N, C_vision)
  view<T, D> vision_pooler_output;       // (B, C_vision)
  view<T, D> qformer_last_hidden_state;  // (B, Q, C_qformer)
  view<T, D> language_projection;        // (B, Q, C_text): the soft visual prompt (empty for retrieval models)
};

/// A decoding session on device D seen from the host: `step` returns the logits copied into the host context's
/// arena, so the decoding strategies, which read logits on the CPU, drive a model that runs elsewhere.
template <class Session, class D>
class host_logits_session {
 public:
  host_logits_session(context<D>& device_ctx, Session& session) : ctx_(&device_ctx), session_(&session) {}
  index_t batch() const { return session_->batch(); }
  view<float> step(context<cpu>& host, std::span<const std::int64_t> tokens) {
    typename context<D>::scope scope(*ctx_);
    view<float, D> logits = session_->step(*ctx_, tokens);
    view<float> out = host.alloc<float>(logits.shape());
    ops::download<float, D>(*ctx_, logits, out);
    return out;
  }
  void select(context<cpu>&, std::span<const index_t> rows) { session_->select(*ctx_, rows); }

 private:
  context<D>* ctx_;
  Session* session_;
};

template <class T, class D = cpu>
class Blip2 {
 public:
  explicit Blip2(const Blip2Config& c)
      : cfg_(c), vision_(c.vision), qformer_(c.qformer, c.num_query_tokens), projection_(c.qformer.hidden_size, c.text.hidden_size) {
    if (has_language_projection() && c.text.model_type == "opt") {
      if (c.text.opt.word_embed_proj_dim != c.text.opt.hidden_size)
        throw config_error("config.json", "text_config.word_embed_proj_dim", "BLIP-2 needs it equal to hidden_size");
      opt_.emplace(c.text.opt);
    }
    if (has_language_projection() && c.text.model_type == "t5") t5_.emplace(c.text.t5);
  }

  /// Reads config.json and the weights of a Hub folder. `unused`, when given, receives the checkpoint tensors
  /// this model did not read.
  static Blip2 from_pretrained(const std::string& folder, std::vector<std::string>* unused = nullptr) {
    return load_pretrained<Blip2>(folder, unused);
  }

  const Blip2Config& config() const noexcept { return cfg_; }
  const VisionEncoder<T, D>& vision() const noexcept { return vision_; }
  /// The Q-Former and its queries stay fp32 whatever T is, as transformers keeps them
  /// (`_keep_in_fp32_modules = ["query_tokens", "qformer"]`); its input and output are cast at the boundary.
  const QFormer<float, D>& qformer() const noexcept { return qformer_; }
  const Linear<T, D>& language_projection() const noexcept { return projection_; }
  /// Retrieval checkpoints (Blip2ForImageTextRetrieval) have no language model and no projection.
  bool has_language_projection() const noexcept { return cfg_.architecture != "Blip2ForImageTextRetrieval"; }

  /// Blip2ForConditionalGeneration naming at the checkpoint root.
  void load(const weight_scope& root) {
    vision_.load(root / "vision_model");
    qformer_.load(root, root / "qformer");
    if (has_language_projection()) projection_.load(root / "language_projection");
    if (opt_) opt_->load(root / "language_model");
    if (t5_) t5_->load(root / "language_model");
  }

  /// The language model's Linears and head to int8 (per-channel weights, activations quantised per row at run
  /// time; OPTForCausalLM / T5ForConditionalGeneration::quantize_int8). Vision, Q-Former and projection keep T.
  void quantize_language_model_int8()
    requires std::is_same_v<D, cpu>
  {
    if (opt_) opt_->quantize_int8();
    if (t5_) t5_->quantize_int8();
  }

  const OPTForCausalLM<T, D>* opt() const noexcept { return opt_ ? &*opt_ : nullptr; }
  const T5ForConditionalGeneration<T, D>* t5() const noexcept { return t5_ ? &*t5_ : nullptr; }

  /// The language model's input for a prompt, in either of transformers' two ways:
  ///  - the prompt holds `image_token_index` placeholders (processor-style ids, configs that set the index):
  ///    each row's Q placeholders receive that row's Q projected queries, in order (masked_scatter);
  ///  - otherwise (original BLIP-2): embeds = [projected queries; embed(prompt)], mask = [ones; prompt mask].
  /// Returns embeds (B, L, C) and mask (B, L).
  std::pair<view<T, D>, std::vector<std::int64_t>> language_model_inputs(context<D>& ctx, view<const T, D> projected,
                                                                          const token_batch& prompt) const {
    prompt.validate();
    const index_t B = projected.dim(0), Q = projected.dim(1), C = projected.dim(2);
    if (prompt.batch != B) throw shape_error("prompt batch " + std::to_string(prompt.batch) + " != image batch " + std::to_string(B));
    const std::optional<index_t> image_token = cfg_.image_token_index;
    const bool placeholders = image_token && std::find(prompt.ids.begin(), prompt.ids.end(), *image_token) != prompt.ids.end();
    const index_t L = placeholders ? prompt.length : Q + prompt.length;
    view<T, D> embeds = ctx.template alloc<T>({B, L, C});
    std::vector<std::int64_t> mask(static_cast<std::size_t>(B * L), 1);
    for (index_t b = 0; b < B; ++b) {
      if (placeholders) {
        {
          typename context<D>::scope scope(ctx);
          ops::copy<T, D>(ctx, embed_tokens(ctx, prompt.row(b)), embeds[b]);
        }
        index_t q = 0;
        for (index_t t = 0; t < prompt.length; ++t)
          if (prompt.ids[b * prompt.length + t] == *image_token) {
            if (q == Q) break;
            ops::copy<T, D>(ctx, projected[b].slice(q++, 1), embeds[b].slice(t, 1));
          }
        const auto placed = std::count(prompt.row(b).begin(), prompt.row(b).end(), *image_token);
        if (placed != Q)
          throw invalid_argument("prompt row " + std::to_string(b) + " has " + std::to_string(placed) + " image placeholder tokens (id " +
                                 std::to_string(*image_token) + "), the model has " + std::to_string(Q) + " queries");
        std::copy_n(prompt.mask.begin() + b * prompt.length, prompt.length, mask.begin() + b * L);
        continue;
      }
      ops::copy<T, D>(ctx, projected[b], embeds[b].slice(0, Q));
      if (prompt.length > 0) {
        typename context<D>::scope scope(ctx);
        ops::copy<T, D>(ctx, embed_tokens(ctx, prompt.row(b)), embeds[b].slice(Q, prompt.length));
      }
      std::copy_n(prompt.mask.begin() + b * prompt.length, prompt.length, mask.begin() + b * L + Q);
    }
    return {embeds, std::move(mask)};
  }

  /// OPT: logits (B, L, V) of every position of the language model's input (L = Q + T when queries are prepended).
  /// T5: logits (B, 1, V) of the decoder's first step (from decoder_start_token_id) with [queries; prompt] encoded.
  view<float, D> lm_logits(context<D>& ctx, view<const T, D> projected, const token_batch& prompt) const {
    auto [embeds, mask] = language_model_inputs(ctx, projected, prompt);
    const index_t B = embeds.dim(0);
    if (t5_) {
      T5Session<T, D> session(ctx, *t5_, t5_->encode(ctx, embeds, mask), mask, 1);
      const std::vector<std::int64_t> start(static_cast<std::size_t>(B), t5_->config().decoder_start_token_id);
      return session.step(ctx, start).reshape({B, 1, t5_->vocab_size()});
    }
    OPTSession<T, D> session(opt_model(), B, embeds.dim(1));
    view<T, D> hidden = session.prefill(ctx, embeds, mask);
    return opt_model().logits(ctx, hidden.reshape({hidden.rows(), hidden.cols()})).reshape({B, embeds.dim(1), opt_model().vocab_size()});
  }

  /// Generates after [queries; prompt]: OPT continues the sequence, T5 decodes from decoder_start_token_id with
  /// it encoded. Returns the new tokens only.
  generation_result generate(context<D>& ctx, view<const T, D> projected, const token_batch& prompt,
                             const generation_options& options) const {
    options.validate();
    typename context<D>::scope scope(ctx);
    auto [embeds, mask] = language_model_inputs(ctx, projected, prompt);
    const index_t B = embeds.dim(0);
    if (t5_) {
      T5Session<T, D> session(ctx, *t5_, t5_->encode(ctx, embeds, mask), mask, options.max_new_tokens + 1);
      const std::int64_t start_id = t5_->config().decoder_start_token_id;
      const std::vector<std::int64_t> start(static_cast<std::size_t>(B), start_id);
      view<float, D> first = session.step(ctx, start);
      return search(ctx, session, first, std::vector<std::vector<std::int64_t>>(static_cast<std::size_t>(B), {start_id}), options);
    }
    OPTSession<T, D> session(opt_model(), B, embeds.dim(1) + options.max_new_tokens);
    view<float, D> first = session.last_logits(ctx, session.prefill(ctx, embeds, mask));
    std::vector<std::vector<std::int64_t>> history(static_cast<std::size_t>(B));
    for (index_t b = 0; b < B; ++b)
      for (index_t t = 0; t < prompt.length; ++t)
        if (prompt.mask[b * prompt.length + t]) history[b].push_back(prompt.ids[b * prompt.length + t]);
    return search(ctx, session, first, history, options);
  }

  /// pixels (B, C_img, H, W) float, already preprocessed -> every image-path tensor.
  image_features<T, D> encode_image(context<D>& ctx, view<const float, D> pixels) const {
    image_features<T, D> f;
    f.vision_last_hidden_state = vision_(ctx, pixels);
    f.vision_pooler_output = vision_.pooler(ctx, f.vision_last_hidden_state);
    f.qformer_last_hidden_state = run_qformer(ctx, f.vision_last_hidden_state);
    if (has_language_projection()) f.language_projection = projection_(ctx, f.qformer_last_hidden_state);
    return f;
  }

 private:
  Blip2Config cfg_;
  VisionEncoder<T, D> vision_;
  QFormer<float, D> qformer_;
  Linear<T, D> projection_;
  std::optional<OPTForCausalLM<T, D>> opt_;

  std::optional<T5ForConditionalGeneration<T, D>> t5_;

  /// The fp32 Q-Former on T image features, its output cast back to T (B, Q, C).
  view<T, D> run_qformer(context<D>& ctx, view<const T, D> image_embeds) const {
    if constexpr (std::is_same_v<T, float>) {
      return qformer_(ctx, image_embeds);
    } else {
      view<T, D> out = ctx.template alloc<T>({image_embeds.dim(0), qformer_.num_queries(), cfg_.qformer.hidden_size});
      typename context<D>::scope scope(ctx);
      view<float, D> image = ctx.template alloc<float>(image_embeds.shape());
      ops::cast<T, float, D>(ctx, image_embeds, image);
      ops::cast<float, T, D>(ctx, qformer_(ctx, image), out);
      return out;
    }
  }

  /// The decoding strategies (generate/search.hpp) on a session. They read logits on the host: on a device other
  /// than the CPU each step's logits are downloaded (host_logits_session), the model stays on the device.
  template <class Session>
  static generation_result search(context<D>& ctx, Session& session, view<const float, D> first,
                                  const std::vector<std::vector<std::int64_t>>& history, const generation_options& options) {
    if constexpr (std::is_same_v<D, cpu>) {
      return qformer::generate(ctx, session, first, history, options);
    } else {
      context<cpu> host;
      tensor<float> first_host(first.shape());
      ops::download<float, D>(ctx, first, first_host.mut());
      host_logits_session<Session, D> on_host(ctx, session);
      return qformer::generate(host, on_host, first_host.get(), history, options);
    }
  }

  const OPTForCausalLM<T, D>& opt_model() const {
    if (!opt_) throw invalid_argument("this model has no language model (architecture '" + cfg_.architecture + "')");
    return *opt_;
  }
  /// The language model's token embeddings.
  view<T, D> embed_tokens(context<D>& ctx, std::span<const std::int64_t> ids) const {
    return t5_ ? t5_->embed(ctx, ids) : opt_model().embed(ctx, ids);
  }
};

}  // namespace qformer
