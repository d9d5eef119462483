#pragma once
/// \file
/// Generation defaults of a model folder: the language model's special tokens from config.json
/// (text_config: eos, pad; the Hub's OPT checkpoints stop on "\n", id 50118), then `generation_config.json`'s
/// decoding fields on top. `max_length` / `min_length` are not read: transformers counts the prompt in them,
/// qformer's limits count new tokens only (max_new_tokens / min_new_tokens).

#include "../models/config.hpp"
#include "options.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

namespace qformer {

/// Options for `model` from `folder` (generation_config.json is optional).
inline generation_options load_generation_options(const std::string& folder, const Blip2Config& model) {
  generation_options o;
  const TextConfig& text = model.text;
  o.eos_token_ids = {text.eos_token_id()};
  o.pad_token_id = text.pad_token_id();

  const std::string file = (std::filesystem::path(folder) / "generation_config.json").string();
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return o;
  std::ifstream in(file, std::ios::binary);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& ex) {
    throw config_error(file, "(root)", std::string("not valid JSON: ") + ex.what());
  }
  const detail::json_fields f(j, file, "");
  o.max_new_tokens = f.integer("max_new_tokens", o.max_new_tokens, 0, detail::max_tokens);
  o.min_new_tokens = f.integer("min_new_tokens", o.min_new_tokens, 0, o.max_new_tokens);
  o.num_beams = f.integer("num_beams", o.num_beams, 1, 256);
  o.do_sample = f.boolean("do_sample", o.do_sample);
  o.temperature = f.number("temperature", o.temperature, 0.0, 1e6);
  o.top_k = f.integer("top_k", o.top_k, 0, 1 << 24);
  o.top_p = f.number("top_p", o.top_p, 0.0, 1.0);
  o.repetition_penalty = f.number("repetition_penalty", o.repetition_penalty, 0.0, 1e6);
  o.length_penalty = f.number("length_penalty", o.length_penalty, -1e6, 1e6);
  if (f.has("early_stopping")) {
    if (j["early_stopping"].is_string() && j["early_stopping"] == "never") o.early_stopping = false;
    else o.early_stopping = f.boolean("early_stopping", o.early_stopping);
  }
  if (f.has("eos_token_id")) {
    const auto& e = j["eos_token_id"];
    o.eos_token_ids.clear();
    if (e.is_array()) {
      for (const auto& id : e) {
        if (!id.is_number_integer()) f.fail("eos_token_id", "expected integers");
        o.eos_token_ids.push_back(id.get<std::int64_t>());
      }
    } else {
      o.eos_token_ids.push_back(f.integer("eos_token_id", 0, 0, 1 << 24));
    }
  }
  o.pad_token_id = f.integer("pad_token_id", o.pad_token_id, 0, 1 << 24);
  o.validate();
  return o;
}

}  // namespace qformer
