#pragma once
/// \file
/// Blip2: the BLIP-2 image path as Blip2ForConditionalGeneration computes it —
///   pixels -> VisionEncoder -> QFormer (queries cross-attend to all image tokens) -> language_projection.
/// The language models (OPT, Flan-T5) and generation come on top of this (issue B).

#include "../io/checkpoint.hpp"
#include "../layers/linear.hpp"
#include "config.hpp"
#include "qformer.hpp"
#include "vision_encoder.hpp"

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

template <class T, class D = cpu>
class Blip2 {
 public:
  explicit Blip2(const Blip2Config& c)
      : cfg_(c), vision_(c.vision), qformer_(c.qformer, c.num_query_tokens), projection_(c.qformer.hidden_size, c.text.hidden_size) {}

  /// Reads config.json and the weights of a Hub folder. `unused`, when given, receives the checkpoint tensors
  /// this model did not read (the language model's, until issue B loads them).
  static Blip2 from_pretrained(const std::string& folder, std::vector<std::string>* unused = nullptr) {
    Blip2 model(load_blip2_config(folder));
    checkpoint ckpt(folder);
    model.load(weight_scope(ckpt));
    if (unused) *unused = ckpt.unused();
    return model;
  }

  const Blip2Config& config() const noexcept { return cfg_; }
  const VisionEncoder<T, D>& vision() const noexcept { return vision_; }
  const QFormer<T, D>& qformer() const noexcept { return qformer_; }
  const Linear<T, D>& language_projection() const noexcept { return projection_; }
  /// Retrieval checkpoints (Blip2ForImageTextRetrieval) have no language model and no projection.
  bool has_language_projection() const noexcept { return cfg_.architecture != "Blip2ForImageTextRetrieval"; }

  /// Blip2ForConditionalGeneration naming at the checkpoint root.
  void load(const weight_scope& root) {
    vision_.load(root / "vision_model");
    qformer_.load(root, root / "qformer");
    if (has_language_projection()) projection_.load(root / "language_projection");
  }

  /// pixels (B, C_img, H, W) float, already preprocessed -> every image-path tensor.
  image_features<T, D> encode_image(context<D>& ctx, view<const float, D> pixels) const {
    image_features<T, D> f;
    f.vision_last_hidden_state = vision_(ctx, pixels);
    f.vision_pooler_output = vision_.pooler(ctx, f.vision_last_hidden_state);
    f.qformer_last_hidden_state = qformer_(ctx, f.vision_last_hidden_state);
    if (has_language_projection()) f.language_projection = projection_(ctx, f.qformer_last_hidden_state);
    return f;
  }

 private:
  Blip2Config cfg_;
  VisionEncoder<T, D> vision_;
  QFormer<T, D> qformer_;
  Linear<T, D> projection_;
};

}  // namespace qformer
