#pragma once
/// \file
/// Blip2Pipeline: a Hub-shaped BLIP-2 folder ready to caption and answer questions — the model, its tokenizer
/// (tokenizer.json, or vocab.json + merges.txt / vocab.txt), its image processor (preprocessor_config.json) and
/// its generation defaults (config.json + generation_config.json). Includes stb (image decoding): include it
/// where you need it, not everywhere.
///
///   auto pipe = qformer::Blip2Pipeline<>::from_pretrained("blip2-opt-2.7b");
///   qformer::context<qformer::cpu> ctx;
///   std::string caption = pipe.caption(ctx, qformer::load_image("cat.jpg"));
///
/// Blip2Pipeline<T, cuda> (with <qformer/cuda.hpp>, from a .cu file) runs the model on the GPU: images are
/// decoded, resized and tokenised on the host, the pixels copied to the device, the tokens read back.

#include "io/image.hpp"
#include "io/image_processor.hpp"
#include "io/tokenizer.hpp"
#include "qformer.hpp"

#include <span>
#include <string>
#include <vector>

namespace qformer {

/// One generated answer: the text (special tokens skipped, whitespace trimmed) and its token ids (EOS and
/// padding removed).
struct generated_text {
  std::string text;
  std::vector<std::int64_t> ids;
};

template <class T = float, class D = cpu>
class Blip2Pipeline {
 public:
  Blip2Pipeline(Blip2<T, D> model, tokenizer tok, BlipImageProcessor processor, generation_options defaults)
      : model_(std::move(model)), tokenizer_(std::move(tok)), processor_(std::move(processor)), defaults_(std::move(defaults)) {}

  /// Loads everything from one folder. Throws load_error / config_error naming the file that is missing or bad.
  static Blip2Pipeline from_pretrained(const std::string& folder) {
    Blip2<T, D> model = Blip2<T, D>::from_pretrained(folder);
    if (!model.has_language_projection())
      throw invalid_argument(folder + ": a retrieval checkpoint (" + model.config().architecture + ") has no language model to generate with");
    generation_options defaults = load_generation_options(folder, model.config());
    return Blip2Pipeline(std::move(model), tokenizer::from_folder(folder), BlipImageProcessor::from_pretrained(folder), defaults);
  }

  const Blip2<T, D>& model() const noexcept { return model_; }
  /// The language model in int8 (Blip2::quantize_language_model_int8; CPU only).
  void quantize_language_model_int8()
    requires std::is_same_v<D, cpu>
  {
    model_.quantize_language_model_int8();
  }
  const tokenizer& text_tokenizer() const noexcept { return tokenizer_; }
  const BlipImageProcessor& image_processor() const noexcept { return processor_; }
  /// Decoding settings from the folder (special tokens, generation_config.json); copy and adjust per call.
  const generation_options& defaults() const noexcept { return defaults_; }

  /// The language model's prompt ids for `batch` copies of `prompt`: the tokenizer's encoding with its special
  /// tokens (OPT prepends "</s>", T5 appends it), or the text model's BOS alone for an empty prompt; with
  /// image_token_index set, preceded by one placeholder per query as transformers' processor does.
  token_batch prompt_ids(const std::string& prompt, index_t batch) const {
    std::vector<std::int64_t> ids = tokenizer_.encode(prompt, true);
    const TextConfig& text = model_.config().text;
    if (ids.empty()) ids.push_back(text.bos_token_id());
    if (const auto image_token = model_.config().image_token_index)
      ids.insert(ids.begin(), static_cast<std::size_t>(model_.config().num_query_tokens), *image_token);
    std::vector<std::int64_t> all;
    for (index_t b = 0; b < batch; ++b) all.insert(all.end(), ids.begin(), ids.end());
    return token_batch::unpadded(batch, static_cast<index_t>(ids.size()), std::move(all));
  }

  /// Generates for every image with the same prompt (empty: plain captioning), as one batch.
  std::vector<generated_text> generate(context<D>& ctx, std::span<const rgb_image> images, const std::string& prompt,
                                       const generation_options& options) const {
    if (images.empty()) return {};
    typename context<D>::scope scope(ctx);
    tensor<float> pixels = processor_(images);  // (B, 3, S, S), on the host
    tensor<float, D> on_device;
    if constexpr (!std::is_same_v<D, cpu>) on_device = to_device<float, D>(pixels);
    view<const float, D> input;
    if constexpr (std::is_same_v<D, cpu>) input = pixels.get();
    else input = on_device.get();
    const image_features<T, D> f = model_.encode_image(ctx, input);
    const generation_result r = model_.generate(ctx, f.language_projection, prompt_ids(prompt, pixels.shape()[0]), options);
    std::vector<generated_text> out;
    for (index_t b = 0; b < r.batch; ++b) {
      generated_text g;
      for (std::int64_t id : r.row(b)) {
        if (std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), id) != options.eos_token_ids.end()) break;
        g.ids.push_back(id);
      }
      g.text = trim(tokenizer_.decode(g.ids, true));
      out.push_back(std::move(g));
    }
    return out;
  }

  /// The caption of one image (optionally continuing `prompt`, e.g. "a photo of"), with the folder's defaults.
  std::string caption(context<D>& ctx, const rgb_image& image, const std::string& prompt = "") const {
    return generate(ctx, std::span<const rgb_image>(&image, 1), prompt, defaults_).front().text;
  }

  /// BLIP-2's zero-shot VQA prompt.
  static std::string vqa_prompt(const std::string& question) { return "Question: " + question + " Answer:"; }

 private:
  static std::string trim(const std::string& s) {
    const auto begin = s.find_first_not_of(" \t\r\n");
    if (begin == std::string::npos) return {};
    return s.substr(begin, s.find_last_not_of(" \t\r\n") - begin + 1);
  }

  Blip2<T, D> model_;
  tokenizer tokenizer_;
  BlipImageProcessor processor_;
  generation_options defaults_;
};

/// A retrieval folder (blip2-itm-vit-g-shaped) ready to score image-text pairs: model, BERT tokenizer, image
/// processor.
template <class T = float>
class Blip2RetrievalPipeline {
 public:
  /// One image-text pair's scores: ITM match probability (softmax of the two logits, index 1) and ITC cosine.
  struct match_scores {
    float itm_probability, itm_logit_no, itm_logit_yes, itc_score;
  };

  Blip2RetrievalPipeline(Blip2ForImageTextRetrieval<T> model, tokenizer tok, BlipImageProcessor processor)
      : model_(std::move(model)), tokenizer_(std::move(tok)), processor_(std::move(processor)) {}

  static Blip2RetrievalPipeline from_pretrained(const std::string& folder) {
    return Blip2RetrievalPipeline(Blip2ForImageTextRetrieval<T>::from_pretrained(folder), tokenizer::from_folder(folder),
                                  BlipImageProcessor::from_pretrained(folder));
  }

  const Blip2ForImageTextRetrieval<T>& model() const noexcept { return model_; }
  const tokenizer& text_tokenizer() const noexcept { return tokenizer_; }

  /// Texts as one right-padded batch of the tokenizer's ids ([CLS] ... [SEP]); mask 0 on padding.
  token_batch encode_texts(std::span<const std::string> texts) const {
    std::vector<std::vector<std::int64_t>> rows;
    index_t length = 0;
    for (const std::string& t : texts) {
      rows.push_back(tokenizer_.encode(t, true));
      length = std::max<index_t>(length, static_cast<index_t>(rows.back().size()));
    }
    token_batch batch{static_cast<index_t>(texts.size()), length, {}, {}};
    const std::int64_t pad = tokenizer_.pad_token_id().value_or(0);
    for (const auto& r : rows) {
      batch.ids.insert(batch.ids.end(), r.begin(), r.end());
      batch.ids.insert(batch.ids.end(), static_cast<std::size_t>(length) - r.size(), pad);
      batch.mask.insert(batch.mask.end(), r.size(), 1);
      batch.mask.insert(batch.mask.end(), static_cast<std::size_t>(length) - r.size(), 0);
    }
    return batch;
  }

  /// ITM and ITC scores of one image with each text.
  std::vector<match_scores> match(context<cpu>& ctx, const rgb_image& image, std::span<const std::string> texts) const {
    typename context<cpu>::scope scope(ctx);
    const tensor<float> pixels = processor_(image);
    view<T> vision = model_.vision()(ctx, pixels.get());
    view<T> image_feats = model_.image_features(ctx, vision);
    std::vector<match_scores> out;
    for (const std::string& text : texts) {
      typename context<cpu>::scope inner(ctx);
      const token_batch ids = encode_texts({&text, 1});
      view<float> itm = model_.itm_logits(ctx, vision, ids);
      view<float> itc = model_.similarity(ctx, image_feats, model_.text_features(ctx, ids));
      const float no = itm.row(0)[0], yes = itm.row(0)[1];
      const float p_yes = 1.0f / (1.0f + std::exp(no - yes));
      out.push_back({p_yes, no, yes, itc.row(0)[0]});
    }
    return out;
  }

  /// ITC similarity (images, texts), row-major.
  std::vector<float> similarity(context<cpu>& ctx, std::span<const rgb_image> images, std::span<const std::string> texts) const {
    typename context<cpu>::scope scope(ctx);
    const tensor<float> pixels = processor_(images);
    view<T> image_feats = model_.image_features(ctx, model_.vision()(ctx, pixels.get()));
    view<T> text_feats = model_.text_features(ctx, encode_texts(texts));
    view<float> sim = model_.similarity(ctx, image_feats, text_feats);
    return std::vector<float>(sim.data(), sim.data() + sim.numel());
  }

 private:
  Blip2ForImageTextRetrieval<T> model_;
  tokenizer tokenizer_;
  BlipImageProcessor processor_;
};

}  // namespace qformer
