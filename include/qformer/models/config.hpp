#pragma once
/// \file
/// Typed model configurations parsed from a Hub `config.json`. Absent fields take transformers' class defaults
/// (the Hub stores only non-default values); present fields are type- and range-checked, and every error names
/// the file and the field path ("vision_config.hidden_size").

#include "../core/dtype.hpp"
#include "../core/error.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <string>

namespace qformer {

/// Blip2VisionConfig (EVA ViT-g/14 defaults).
struct VisionConfig {
  index_t hidden_size = 1408;
  index_t intermediate_size = 6144;
  index_t num_hidden_layers = 39;
  index_t num_attention_heads = 16;
  index_t num_channels = 3;
  index_t image_size = 224;
  index_t patch_size = 14;
  float layer_norm_eps = 1e-6f;
  bool qkv_bias = true;
  std::string hidden_act = "gelu";

  index_t head_dim() const { return hidden_size / num_attention_heads; }
  index_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  index_t num_positions() const { return num_patches() + 1; }  // + class token
};

/// Blip2QFormerConfig (BERT-base defaults, cross-attention every 2nd layer).
struct QFormerConfig {
  index_t hidden_size = 768;
  index_t intermediate_size = 3072;
  index_t num_hidden_layers = 12;
  index_t num_attention_heads = 12;
  index_t max_position_embeddings = 512;
  index_t vocab_size = 30522;
  index_t cross_attention_frequency = 2;
  index_t encoder_hidden_size = 1408;  // always the vision width (Blip2Config forces it)
  float layer_norm_eps = 1e-12f;
  bool use_qformer_text_input = false;
  std::string hidden_act = "gelu";

  index_t head_dim() const { return hidden_size / num_attention_heads; }
  bool has_cross_attention(index_t layer) const { return layer % cross_attention_frequency == 0; }
};

/// OPTConfig (transformers' defaults; BLIP-2 OPT checkpoints override width, depth and vocabulary).
struct OPTConfig {
  index_t vocab_size = 50272;
  index_t hidden_size = 768;
  index_t num_hidden_layers = 12;
  index_t ffn_dim = 3072;
  index_t num_attention_heads = 12;
  index_t max_position_embeddings = 2048;
  index_t word_embed_proj_dim = 768;  // = hidden_size unless given; project_in / project_out exist when it differs
  bool do_layer_norm_before = true;   // pre-LN (post-LN only in OPT-350m)
  bool remove_final_layer_norm = false;
  bool enable_bias = true;
  bool layer_norm_elementwise_affine = true;
  bool tie_word_embeddings = true;
  std::string activation_function = "relu";
  std::int64_t bos_token_id = 2, eos_token_id = 2, pad_token_id = 1;

  index_t head_dim() const { return hidden_size / num_attention_heads; }
  bool has_final_layer_norm() const { return do_layer_norm_before && !remove_final_layer_norm; }
};

/// T5Config as Flan-T5 in BLIP-2 uses it (gated GELU, exact erf per `dense_act_fn`).
struct T5Config {
  index_t vocab_size = 32128;
  index_t d_model = 512;
  index_t d_kv = 64;
  index_t d_ff = 2048;
  index_t num_layers = 6;
  index_t num_decoder_layers = 6;
  index_t num_heads = 8;
  index_t relative_attention_num_buckets = 32;
  index_t relative_attention_max_distance = 128;
  float layer_norm_epsilon = 1e-6f;
  bool is_gated_act = false;
  std::string dense_act_fn = "relu";  // "gelu" (exact), "gelu_new" (tanh form) or "relu"
  bool tie_word_embeddings = true;
  bool scale_decoder_outputs = true;  // d_model^-0.5 before a tied head (transformers 5's name for that rule)
  std::int64_t decoder_start_token_id = 0, eos_token_id = 1, pad_token_id = 0;
  std::int64_t bos_token_id = 1;  // what BLIP-2 feeds for an empty prompt (its conversion sets 1, "</s>")

  index_t inner_dim() const { return num_heads * d_kv; }
};

/// The language model's configuration: which kind, its width, and the kind's own fields.
struct TextConfig {
  std::string model_type = "opt";  // "opt" or "t5"
  index_t hidden_size = 768;       // OPT hidden_size / T5 d_model: the width language_projection produces
  OPTConfig opt;
  T5Config t5;

  bool is_t5() const noexcept { return model_type == "t5"; }
  /// The special tokens of whichever language model this is.
  std::int64_t bos_token_id() const noexcept { return is_t5() ? t5.bos_token_id : opt.bos_token_id; }
  std::int64_t eos_token_id() const noexcept { return is_t5() ? t5.eos_token_id : opt.eos_token_id; }
  std::int64_t pad_token_id() const noexcept { return is_t5() ? t5.pad_token_id : opt.pad_token_id; }
};

/// Blip2Config: the three towers plus the glue.
struct Blip2Config {
  std::string architecture;  // architectures[0], e.g. "Blip2ForConditionalGeneration"
  VisionConfig vision;
  QFormerConfig qformer;
  TextConfig text;
  index_t num_query_tokens = 32;
  index_t image_text_hidden_size = 256;
  std::optional<index_t> image_token_index;
  bool use_decoder_only_language_model = true;
};

namespace detail {

/// Reads typed fields of one JSON object, naming `file` and the dotted field path in every error.
class json_fields {
 public:
  json_fields(const nlohmann::json& obj, std::string file, std::string path)
      : obj_(obj), file_(std::move(file)), path_(std::move(path)) {
    if (!obj_.is_object()) throw config_error(file_, path_.empty() ? "(root)" : path_, "is not a JSON object");
  }

  std::string field(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  /// An integer in [lo, hi]; `fallback` when absent or null.
  index_t integer(const std::string& key, index_t fallback, index_t lo, index_t hi) const {
    const nlohmann::json* v = find(key);
    if (!v) return fallback;
    if (!v->is_number_integer()) throw config_error(file_, field(key), "expected an integer, found " + std::string(v->type_name()));
    if (v->is_number_unsigned() && v->get<std::uint64_t>() > static_cast<std::uint64_t>(hi))
      throw config_error(file_, field(key), "value " + v->dump() + " is above the limit " + std::to_string(hi));
    const index_t x = v->get<index_t>();
    if (x < lo || x > hi)
      throw config_error(file_, field(key), "value " + std::to_string(x) + " is outside [" + std::to_string(lo) + ", " +
                                                std::to_string(hi) + "]");
    return x;
  }
  std::optional<index_t> optional_integer(const std::string& key, index_t lo, index_t hi) const {
    if (!find(key)) return std::nullopt;
    return integer(key, 0, lo, hi);
  }
  /// A finite number in (lo, hi]; integers are accepted.
  float number(const std::string& key, float fallback, double lo, double hi) const {
    const nlohmann::json* v = find(key);
    if (!v) return fallback;
    if (!v->is_number()) throw config_error(file_, field(key), "expected a number, found " + std::string(v->type_name()));
    const double x = v->get<double>();
    if (!(x > lo && x <= hi)) throw config_error(file_, field(key), "value " + v->dump() + " is out of range");
    return static_cast<float>(x);
  }
  bool boolean(const std::string& key, bool fallback) const {
    const nlohmann::json* v = find(key);
    if (!v) return fallback;
    if (!v->is_boolean()) throw config_error(file_, field(key), "expected true or false, found " + std::string(v->type_name()));
    return v->get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    const nlohmann::json* v = find(key);
    if (!v) return fallback;
    if (!v->is_string()) throw config_error(file_, field(key), "expected a string, found " + std::string(v->type_name()));
    return v->get<std::string>();
  }
  /// A nested object; an empty one when absent or null.
  json_fields child(const std::string& key) const {
    const nlohmann::json* v = find(key);
    static const nlohmann::json empty = nlohmann::json::object();
    return json_fields(v ? *v : empty, file_, field(key));
  }
  bool has(const std::string& key) const { return find(key) != nullptr; }
  [[noreturn]] void fail(const std::string& key, const std::string& what) const { throw config_error(file_, field(key), what); }
  const nlohmann::json& json() const noexcept { return obj_; }

 private:
  const nlohmann::json* find(const std::string& key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  const nlohmann::json& obj_;
  std::string file_, path_;
};

/// Sizes beyond these are refused before anything is allocated (a billion layers is a lie, not a model).
inline constexpr index_t max_width = 1 << 16;
inline constexpr index_t max_layers = 1024;
inline constexpr index_t max_tokens = 1 << 20;

inline void require_divides(const json_fields& f, const std::string& heads_key, index_t heads, index_t width) {
  if (width % heads != 0)
    f.fail(heads_key, std::to_string(heads) + " heads do not divide the width " + std::to_string(width));
}

inline void require_gelu(const json_fields& f, const std::string& act) {
  if (act != "gelu") f.fail("hidden_act", "activation '" + act + "' is not supported (BLIP-2 uses exact \"gelu\")");
}

inline VisionConfig parse_vision_config(const json_fields& f) {
  VisionConfig c;
  c.hidden_size = f.integer("hidden_size", c.hidden_size, 1, max_width);
  c.intermediate_size = f.integer("intermediate_size", c.intermediate_size, 1, 4 * max_width);
  c.num_hidden_layers = f.integer("num_hidden_layers", c.num_hidden_layers, 0, max_layers);
  c.num_attention_heads = f.integer("num_attention_heads", c.num_attention_heads, 1, c.hidden_size);
  c.num_channels = f.integer("num_channels", c.num_channels, 1, 4);
  c.image_size = f.integer("image_size", c.image_size, 1, 4096);
  c.patch_size = f.integer("patch_size", c.patch_size, 1, c.image_size);
  c.layer_norm_eps = f.number("layer_norm_eps", c.layer_norm_eps, 0.0, 1.0);
  c.qkv_bias = f.boolean("qkv_bias", c.qkv_bias);
  c.hidden_act = f.string("hidden_act", c.hidden_act);
  require_divides(f, "num_attention_heads", c.num_attention_heads, c.hidden_size);
  require_gelu(f, c.hidden_act);
  if (c.image_size % c.patch_size != 0)
    f.fail("patch_size", std::to_string(c.patch_size) + " does not divide image_size " + std::to_string(c.image_size));
  return c;
}

inline QFormerConfig parse_qformer_config(const json_fields& f) {
  QFormerConfig c;
  c.hidden_size = f.integer("hidden_size", c.hidden_size, 1, max_width);
  c.intermediate_size = f.integer("intermediate_size", c.intermediate_size, 1, 4 * max_width);
  c.num_hidden_layers = f.integer("num_hidden_layers", c.num_hidden_layers, 0, max_layers);
  c.num_attention_heads = f.integer("num_attention_heads", c.num_attention_heads, 1, c.hidden_size);
  c.max_position_embeddings = f.integer("max_position_embeddings", c.max_position_embeddings, 1, max_tokens);
  c.vocab_size = f.integer("vocab_size", c.vocab_size, 1, 1 << 24);
  c.cross_attention_frequency = f.integer("cross_attention_frequency", c.cross_attention_frequency, 1, max_layers);
  c.encoder_hidden_size = f.integer("encoder_hidden_size", c.encoder_hidden_size, 1, max_width);
  c.layer_norm_eps = f.number("layer_norm_eps", c.layer_norm_eps, 0.0, 1.0);
  c.use_qformer_text_input = f.boolean("use_qformer_text_input", c.use_qformer_text_input);
  c.hidden_act = f.string("hidden_act", c.hidden_act);
  require_divides(f, "num_attention_heads", c.num_attention_heads, c.hidden_size);
  require_gelu(f, c.hidden_act);
  return c;
}

inline OPTConfig parse_opt_config(const json_fields& f) {
  OPTConfig c;
  c.vocab_size = f.integer("vocab_size", c.vocab_size, 1, 1 << 24);
  c.hidden_size = f.integer("hidden_size", c.hidden_size, 1, max_width);
  c.num_hidden_layers = f.integer("num_hidden_layers", c.num_hidden_layers, 0, max_layers);
  c.ffn_dim = f.integer("ffn_dim", c.ffn_dim, 1, 8 * max_width);
  c.num_attention_heads = f.integer("num_attention_heads", c.num_attention_heads, 1, c.hidden_size);
  c.max_position_embeddings = f.integer("max_position_embeddings", c.max_position_embeddings, 1, max_tokens);
  c.word_embed_proj_dim = f.integer("word_embed_proj_dim", c.hidden_size, 1, max_width);
  c.do_layer_norm_before = f.boolean("do_layer_norm_before", c.do_layer_norm_before);
  c.remove_final_layer_norm = f.boolean("_remove_final_layer_norm", c.remove_final_layer_norm);
  c.enable_bias = f.boolean("enable_bias", c.enable_bias);
  c.layer_norm_elementwise_affine = f.boolean("layer_norm_elementwise_affine", c.layer_norm_elementwise_affine);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", c.tie_word_embeddings);
  c.activation_function = f.string("activation_function", c.activation_function);
  c.bos_token_id = f.integer("bos_token_id", c.bos_token_id, 0, c.vocab_size - 1);
  c.eos_token_id = f.integer("eos_token_id", c.eos_token_id, 0, c.vocab_size - 1);
  c.pad_token_id = f.integer("pad_token_id", c.pad_token_id, 0, c.vocab_size - 1);
  require_divides(f, "num_attention_heads", c.num_attention_heads, c.hidden_size);
  if (c.activation_function != "relu" && c.activation_function != "gelu")
    f.fail("activation_function", "'" + c.activation_function + "' is not supported (\"relu\" or \"gelu\")");
  if (!c.enable_bias) f.fail("enable_bias", "bias-free OPT is not supported");
  if (!c.layer_norm_elementwise_affine) f.fail("layer_norm_elementwise_affine", "non-affine layer norms are not supported");
  return c;
}

inline T5Config parse_t5_config(const json_fields& f) {
  T5Config c;
  c.vocab_size = f.integer("vocab_size", c.vocab_size, 1, 1 << 24);
  c.d_model = f.integer("d_model", c.d_model, 1, max_width);
  c.d_kv = f.integer("d_kv", c.d_kv, 1, max_width);
  c.d_ff = f.integer("d_ff", c.d_ff, 1, 8 * max_width);
  c.num_layers = f.integer("num_layers", c.num_layers, 0, max_layers);
  c.num_decoder_layers = f.integer("num_decoder_layers", c.num_layers, 0, max_layers);
  c.num_heads = f.integer("num_heads", c.num_heads, 1, max_width);
  c.relative_attention_num_buckets = f.integer("relative_attention_num_buckets", c.relative_attention_num_buckets, 2, 4096);
  c.relative_attention_max_distance = f.integer("relative_attention_max_distance", c.relative_attention_max_distance, 1, max_tokens);
  c.layer_norm_epsilon = f.number("layer_norm_epsilon", c.layer_norm_epsilon, 0.0, 1.0);
  // feed_forward_proj "gated-gelu" / "relu"; dense_act_fn, when present, names the activation itself.
  const std::string proj = f.string("feed_forward_proj", "relu");
  c.is_gated_act = proj.rfind("gated-", 0) == 0;
  const std::string derived = c.is_gated_act ? proj.substr(6) : proj;
  c.dense_act_fn = f.string("dense_act_fn", derived == "gelu" ? "gelu_new" : derived);
  if (c.dense_act_fn != "gelu" && c.dense_act_fn != "gelu_new" && c.dense_act_fn != "relu")
    f.fail("dense_act_fn", "'" + c.dense_act_fn + "' is not supported (\"gelu\", \"gelu_new\" or \"relu\")");
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", c.tie_word_embeddings);
  c.scale_decoder_outputs = f.boolean("scale_decoder_outputs", c.tie_word_embeddings);
  c.decoder_start_token_id = f.integer("decoder_start_token_id", c.decoder_start_token_id, 0, c.vocab_size - 1);
  c.eos_token_id = f.integer("eos_token_id", c.eos_token_id, 0, c.vocab_size - 1);
  c.pad_token_id = f.integer("pad_token_id", c.pad_token_id, 0, c.vocab_size - 1);
  c.bos_token_id = f.integer("bos_token_id", c.eos_token_id, 0, c.vocab_size - 1);
  return c;
}

inline TextConfig parse_text_config(const json_fields& f) {
  TextConfig c;
  c.model_type = f.string("model_type", c.model_type);
  if (c.model_type == "opt") {
    c.opt = parse_opt_config(f);
    c.hidden_size = c.opt.hidden_size;
  } else if (c.model_type == "t5") {
    c.t5 = parse_t5_config(f);
    c.hidden_size = c.t5.d_model;
  } else {
    f.fail("model_type", "unknown language model type '" + c.model_type + "' (supported: \"opt\", \"t5\")");
  }
  return c;
}

}  // namespace detail

/// Parses a Blip2Config from JSON text; `file` names the source in errors.
inline Blip2Config parse_blip2_config(const std::string& text, const std::string& file) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& ex) {
    throw config_error(file, "(root)", std::string("not valid JSON: ") + ex.what());
  }
  const detail::json_fields root(j, file, "");
  Blip2Config c;
  if (root.has("architectures")) {
    const auto& a = j["architectures"];
    if (!a.is_array() || (!a.empty() && !a[0].is_string())) root.fail("architectures", "expected an array of strings");
    if (!a.empty()) c.architecture = a[0].get<std::string>();
  }
  const std::string model_type = root.string("model_type", "blip-2");
  if (model_type != "blip-2") root.fail("model_type", "expected \"blip-2\", found \"" + model_type + "\"");
  c.vision = detail::parse_vision_config(root.child("vision_config"));
  c.qformer = detail::parse_qformer_config(root.child("qformer_config"));
  c.qformer.encoder_hidden_size = c.vision.hidden_size;  // as Blip2Config.__init__ does
  c.text = detail::parse_text_config(root.child("text_config"));
  c.num_query_tokens = root.integer("num_query_tokens", c.num_query_tokens, 1, detail::max_tokens);
  c.image_text_hidden_size = root.integer("image_text_hidden_size", c.image_text_hidden_size, 1, detail::max_width);
  c.image_token_index = root.optional_integer("image_token_index", 0, std::numeric_limits<std::int32_t>::max());
  if (!c.image_token_index) c.image_token_index = root.optional_integer("image_token_id", 0, std::numeric_limits<std::int32_t>::max());
  c.use_decoder_only_language_model =
      root.boolean("use_decoder_only_language_model", c.text.model_type == "opt");
  return c;
}

/// Reads and parses `<folder>/config.json` (or a config file path).
inline Blip2Config load_blip2_config(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const std::string file = fs::is_directory(path, ec) ? (fs::path(path) / "config.json").string() : path;
  std::ifstream in(file, std::ios::binary);
  if (!in) throw load_error(file, "cannot open config");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return parse_blip2_config(text, file);
}

}  // namespace qformer
