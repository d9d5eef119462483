#pragma once
/// \file
/// generation_options: what transformers' GenerationConfig says about decoding, with its defaults.

#include "../core/dtype.hpp"
#include "../core/error.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace qformer {

struct generation_options {
  index_t max_new_tokens = 20;
  index_t min_new_tokens = 0;        // EOS is suppressed until this many tokens exist
  index_t num_beams = 1;             // 1: greedy or sampling
  float length_penalty = 1.0f;       // beam score = sum log p / generated_length ^ length_penalty
  bool early_stopping = false;       // beam search stops once num_beams hypotheses are finished
  bool do_sample = false;
  float temperature = 1.0f;
  index_t top_k = 50;                // 0 disables
  float top_p = 1.0f;                // 1 disables
  float repetition_penalty = 1.0f;   // 1 disables (CTRL-style: logits of seen tokens / p, or * p when negative)
  std::uint64_t seed = 0;            // sampling RNG (std::mt19937_64; not torch's stream)
  std::vector<std::int64_t> eos_token_ids;
  std::int64_t pad_token_id = 0;     // fills finished rows

  /// Throws invalid_argument naming the option when a value is out of range.
  void validate() const {
    auto fail = [](const std::string& name, const std::string& why) { throw invalid_argument("generation option " + name + ": " + why); };
    if (max_new_tokens < 0) fail("max_new_tokens", "must be >= 0");
    if (min_new_tokens < 0 || min_new_tokens > max_new_tokens) fail("min_new_tokens", "must be in [0, max_new_tokens]");
    if (num_beams < 1 || num_beams > 256) fail("num_beams", "must be in [1, 256]");
    if (do_sample && num_beams > 1) fail("num_beams", "beam sampling is not supported; use num_beams 1 with do_sample");
    if (!(temperature > 0.0f)) fail("temperature", "must be > 0");
    if (top_k < 0) fail("top_k", "must be >= 0");
    if (!(top_p > 0.0f && top_p <= 1.0f)) fail("top_p", "must be in (0, 1]");
    if (!(repetition_penalty > 0.0f)) fail("repetition_penalty", "must be > 0");
  }
};

}  // namespace qformer
