#pragma once
/// \file
/// Blip2ForImageTextRetrieval: the Q-Former as an image-text matcher (blip2-itm-vit-g).
///   text embeddings: word_embeddings(ids) + position_embeddings(0..T-1)  (positions restart after the queries)
///   ITM: Q-Former over [queries; text] (bidirectional, padding masked, queries cross-attend to the image);
///        logits (B, 2) = mean over the Q query outputs of itm_head; softmax[:, 1] = match probability
///   ITC: image features (B, Q, E) = normalize(vision_projection(Q-Former(queries, image)))
///        text features (B, E) = normalize(text_projection(Q-Former(text alone)[:, 0]))
///        logits_per_image (B_i, B_t) = max over the Q queries of the cosine similarities (no temperature)

#include "../io/checkpoint.hpp"
#include "../layers/embedding.hpp"
#include "../layers/linear.hpp"
#include "config.hpp"
#include "pretrained.hpp"
#include "opt.hpp"  // masked_out, token_batch
#include "qformer.hpp"
#include "vision_encoder.hpp"

#include <cmath>
#include <vector>

namespace qformer {

template <class T, class D = cpu>
class Blip2ForImageTextRetrieval {
 public:
  explicit Blip2ForImageTextRetrieval(const Blip2Config& c)
      : cfg_(c), vision_(c.vision), qformer_(with_text_input(c.qformer), c.num_query_tokens),
        word_embeddings_(c.qformer.vocab_size, c.qformer.hidden_size),
        position_embeddings_(c.qformer.max_position_embeddings, c.qformer.hidden_size),
        vision_projection_(c.qformer.hidden_size, c.image_text_hidden_size), text_projection_(c.qformer.hidden_size, c.image_text_hidden_size),
        itm_head_(c.qformer.hidden_size, 2) {}

  /// Reads config.json and the weights of a Hub folder.
  static Blip2ForImageTextRetrieval from_pretrained(const std::string& folder, std::vector<std::string>* unused = nullptr) {
    return load_pretrained<Blip2ForImageTextRetrieval>(folder, unused);
  }

  const Blip2Config& config() const noexcept { return cfg_; }
  const VisionEncoder<T, D>& vision() const noexcept { return vision_; }
  const QFormer<T, D>& qformer() const noexcept { return qformer_; }

  /// Blip2ForImageTextRetrieval naming at the checkpoint root.
  void load(const weight_scope& root) {
    vision_.load(root / "vision_model");
    qformer_.load(root, root / "qformer");
    word_embeddings_.load(root / "embeddings.word_embeddings");
    position_embeddings_.load(root / "embeddings.position_embeddings");
    vision_projection_.load(root / "vision_projection");
    text_projection_.load(root / "text_projection");
    itm_head_.load(root / "itm_head");
  }

  /// The text the Q-Former reads: the processor's ids without the leading image placeholders when the config
  /// has image_token_index (as transformers strips them), else the ids as given.
  token_batch text_part(const token_batch& text) const {
    text.validate();
    if (!cfg_.image_token_index || text.length < cfg_.num_query_tokens) return text;
    const index_t Q = cfg_.num_query_tokens;
    for (index_t b = 0; b < text.batch; ++b)
      if (text.ids[b * text.length] != *cfg_.image_token_index) return text;
    token_batch out{text.batch, text.length - Q, {}, {}};
    for (index_t b = 0; b < text.batch; ++b) {
      out.ids.insert(out.ids.end(), text.ids.begin() + b * text.length + Q, text.ids.begin() + (b + 1) * text.length);
      out.mask.insert(out.mask.end(), text.mask.begin() + b * text.length + Q, text.mask.begin() + (b + 1) * text.length);
    }
    return out;
  }

  /// ITM logits (B, 2) of image b with text b. image_embeds: the vision tower's output (B, Li, C_vision).
  view<float, D> itm_logits(context<D>& ctx, view<const T, D> image_embeds, const token_batch& text_ids) const {
    const token_batch text = text_part(text_ids);
    const index_t B = image_embeds.dim(0), Q = cfg_.num_query_tokens, T_ = text.length, L = Q + T_, C = cfg_.qformer.hidden_size;
    if (text.batch != B) throw shape_error("ITM: " + std::to_string(text.batch) + " texts for " + std::to_string(B) + " images");
    view<float, D> logits = ctx.template alloc<float>({B, 2});
    typename context<D>::scope scope(ctx);
    view<T, D> embeds = ctx.template alloc<T>({B, L, C});
    view<const T, D> q = qformer_.query_tokens().reshape({Q, C});
    for (index_t b = 0; b < B; ++b) ops::copy<T, D>(ctx, q, embeds[b].slice(0, Q));
    if (T_ > 0) write_text_embeddings(ctx, text, embeds, Q);
    std::vector<float> mask_host(static_cast<std::size_t>(B * L));
    for (index_t b = 0; b < B; ++b)
      for (index_t j = 0; j < L; ++j) mask_host[static_cast<std::size_t>(b * L + j)] = (j < Q || text.mask[b * T_ + j - Q]) ? 0.0f : masked_out;
    const view<float, D> mask = ops::uploaded<float, D>(ctx, mask_host, {B, 1, L});
    view<T, D> out = ctx.template alloc<T>({B, L, C});
    qformer_.encode(ctx, embeds, Q, mask, image_embeds, out);
    view<T, D> queries = ctx.template alloc<T>({B, Q, C});
    for (index_t b = 0; b < B; ++b) ops::copy<T, D>(ctx, out[b].slice(0, Q), queries[b]);
    const tensor<T> per_query = host_copy<T>(ctx, itm_head_(ctx, queries));  // (B, Q, 2)
    std::vector<float> mean(static_cast<std::size_t>(B * 2));
    for (index_t b = 0; b < B; ++b)
      for (index_t k = 0; k < 2; ++k) {
        double sum = 0;
        for (index_t i = 0; i < Q; ++i) sum += to_float(per_query.data()[(b * Q + i) * 2 + k]);
        mean[static_cast<std::size_t>(b * 2 + k)] = float(sum / double(Q));
      }
    ops::upload<float, D>(ctx, mean, logits);
    return logits;
  }

  /// ITC image features (B, Q, E): normalised vision projections of the Q-Former's query outputs.
  view<T, D> image_features(context<D>& ctx, view<const T, D> image_embeds) const {
    view<T, D> features = ctx.template alloc<T>({image_embeds.dim(0), cfg_.num_query_tokens, cfg_.image_text_hidden_size});
    typename context<D>::scope scope(ctx);
    vision_projection_.forward(ctx, qformer_(ctx, image_embeds), features);
    normalize_rows(ctx, features);
    return features;
  }

  /// ITC text features (B, E): normalised text projection of the text-only Q-Former pass at position 0 ([CLS]).
  view<T, D> text_features(context<D>& ctx, const token_batch& text_ids) const {
    const token_batch text = text_part(text_ids);
    const index_t B = text.batch, L = text.length, C = cfg_.qformer.hidden_size;
    if (L == 0) throw invalid_argument("ITC: empty text");
    view<T, D> features = ctx.template alloc<T>({B, cfg_.image_text_hidden_size});
    typename context<D>::scope scope(ctx);
    view<T, D> embeds = ctx.template alloc<T>({B, L, C});
    write_text_embeddings(ctx, text, embeds, 0);
    std::vector<float> mask_host(static_cast<std::size_t>(B * L));
    for (index_t i = 0; i < B * L; ++i) mask_host[static_cast<std::size_t>(i)] = text.mask[static_cast<std::size_t>(i)] ? 0.0f : masked_out;
    const view<float, D> mask = ops::uploaded<float, D>(ctx, mask_host, {B, 1, L});
    view<T, D> out = ctx.template alloc<T>({B, L, C});
    qformer_.encode(ctx, embeds, 0, mask, {}, out);
    view<T, D> cls = ctx.template alloc<T>({B, C});
    for (index_t b = 0; b < B; ++b) ops::copy<T, D>(ctx, out[b].slice(0, 1), cls.slice(b, 1));
    text_projection_.forward(ctx, cls, features);
    normalize_rows(ctx, features);
    return features;
  }

  /// ITC logits_per_image (B_i, B_t) = max over queries of image_features (B_i, Q, E) . text_features (B_t, E).
  view<float, D> similarity(context<D>& ctx, view<const T, D> image_feats, view<const T, D> text_feats) const {
    const index_t Bi = image_feats.dim(0), Q = image_feats.dim(1), Bt = text_feats.dim(0);
    view<float, D> logits = ctx.template alloc<float>({Bi, Bt});
    typename context<D>::scope scope(ctx);
    view<T, D> scores = ctx.template alloc<T>({Bi * Q, Bt});
    ops::linear<T, D>(ctx, image_feats.reshape({Bi * Q, image_feats.dim(2)}), text_feats, {}, scores);
    const tensor<T> host_scores = host_copy<T>(ctx, scores);
    std::vector<float> best(static_cast<std::size_t>(Bi * Bt), -INFINITY);
    for (index_t i = 0; i < Bi; ++i)
      for (index_t t = 0; t < Bt; ++t)
        for (index_t q = 0; q < Q; ++q)
          best[static_cast<std::size_t>(i * Bt + t)] = std::max(best[static_cast<std::size_t>(i * Bt + t)], to_float(host_scores.data()[(i * Q + q) * Bt + t]));
    ops::upload<float, D>(ctx, best, logits);
    return logits;
  }

 private:
  static QFormerConfig with_text_input(QFormerConfig c) {
    c.use_qformer_text_input = true;  // the retrieval model always has the text feed-forward
    return c;
  }

  /// embeds[b, offset + t] = word(ids[b, t]) + position(t).
  void write_text_embeddings(context<D>& ctx, const token_batch& text, view<T, D> embeds, index_t offset) const {
    const index_t B = text.batch, L = text.length;
    if (L > cfg_.qformer.max_position_embeddings)
      throw invalid_argument("text of " + std::to_string(L) + " tokens exceeds the Q-Former's " +
                             std::to_string(cfg_.qformer.max_position_embeddings) + " positions (max_position_embeddings)");
    typename context<D>::scope scope(ctx);
    std::vector<std::int64_t> positions(static_cast<std::size_t>(L));
    for (index_t t = 0; t < L; ++t) positions[static_cast<std::size_t>(t)] = t;
    view<T, D> pos = position_embeddings_(ctx, positions);  // (L, C)
    for (index_t b = 0; b < B; ++b) {
      view<T, D> words = word_embeddings_(ctx, text.row(b));
      ops::add<T, D>(ctx, words, pos, embeds[b].slice(offset, L));
    }
  }

  /// A contiguous host copy of x (the heads' reductions over a few rows run on the host on every device).
  template <class U>
  static tensor<U> host_copy(context<D>& ctx, view<const U, D> x) {
    tensor<U> h(x.shape());
    ops::download<U, D>(ctx, x, h.mut());
    return h;
  }

  /// x / max(||x||, 1e-12) per row (torch.nn.functional.normalize); x contiguous.
  static void normalize_rows(context<D>& ctx, view<T, D> x) {
    tensor<T> h = host_copy<T>(ctx, x);
    const index_t C = x.cols();
    for (index_t r = 0; r < x.rows(); ++r) {
      T* row = h.data() + r * C;
      double ss = 0;
      for (index_t c = 0; c < C; ++c) ss += double(to_float(row[c])) * to_float(row[c]);
      const float inv = 1.0f / std::max(float(std::sqrt(ss)), 1e-12f);
      for (index_t c = 0; c < C; ++c) row[c] = from_float<T>(to_float(row[c]) * inv);
    }
    ops::upload<T, D>(ctx, std::span<const T>(h.data(), static_cast<std::size_t>(h.numel())), x);
  }

  Blip2Config cfg_;
  VisionEncoder<T, D> vision_;
  QFormer<T, D> qformer_;
  Embedding<T, D> word_embeddings_, position_embeddings_;
  Linear<T, D> vision_projection_, text_projection_, itm_head_;
};

}  // namespace qformer
