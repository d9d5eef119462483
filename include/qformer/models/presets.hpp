#pragma once
/// \file
/// Full-size BLIP-2 configurations (for benchmarks and random-weight experiments, no download needed) and the
/// work each stage does, counted the way the benchmarks report it.

#include "config.hpp"

namespace qformer::presets {

/// Salesforce/blip2-opt-2.7b: transformers' vision and Q-Former defaults are exactly its sizes; OPT-2.7b
/// (width 2560, 32 layers, 32 heads, ffn 10240, vocabulary 50304 as in the checkpoint).
inline Blip2Config blip2_opt_2_7b() {
  return parse_blip2_config(R"({"architectures": ["Blip2ForConditionalGeneration"],
    "text_config": {"model_type": "opt", "hidden_size": 2560, "num_attention_heads": 32, "ffn_dim": 10240,
                    "num_hidden_layers": 32, "vocab_size": 50304, "word_embed_proj_dim": 2560}})",
                            "presets::blip2_opt_2_7b");
}

/// FLOPs of one linear layer (rows, in) -> (rows, out).
inline double linear_flops(double rows, double in, double out) { return 2.0 * rows * in * out; }
/// FLOPs of attention scores and the weighted sum: lq queries over lk keys, total width c.
inline double attention_flops(double lq, double lk, double c) { return 4.0 * lq * lk * c; }

/// The vision tower on `batch` images.
inline double vision_flops(const VisionConfig& c, double batch) {
  const double L = double(c.num_positions()), C = double(c.hidden_size), I = double(c.intermediate_size);
  const double per_block = linear_flops(L, C, 3 * C) + attention_flops(L, L, C) + linear_flops(L, C, C) +
                           linear_flops(L, C, I) + linear_flops(L, I, C);
  const double patches = linear_flops(double(c.num_patches()), 3.0 * c.patch_size * c.patch_size, C);
  return batch * (double(c.num_hidden_layers) * per_block + patches);
}

/// The Q-Former's queries on `batch` images of `image_tokens` vision tokens.
inline double qformer_flops(const QFormerConfig& c, double queries, double image_tokens, double batch) {
  const double Q = queries, C = double(c.hidden_size), I = double(c.intermediate_size), M = double(c.encoder_hidden_size);
  double total = 0;
  for (index_t i = 0; i < c.num_hidden_layers; ++i) {
    total += linear_flops(Q, C, 3 * C) + attention_flops(Q, Q, C) + linear_flops(Q, C, C);
    if (c.has_cross_attention(i))
      total += linear_flops(Q, C, C) + linear_flops(image_tokens, M, 2 * C) + attention_flops(Q, image_tokens, C) +
               linear_flops(Q, C, C);
    total += linear_flops(Q, C, I) + linear_flops(Q, I, C);
  }
  return batch * total;
}

/// Parameters of an OPT decoder with its (tied) head: what one decode step reads.
inline double opt_parameters(const OPTConfig& c) {
  const double W = double(c.hidden_size), F = double(c.ffn_dim), V = double(c.vocab_size);
  const double per_layer = 4 * (W * W + W) + (W * F + F) + (F * W + W) + 4 * W;  // attention, ffn, 2 layer norms
  return double(c.num_hidden_layers) * per_layer + V * W + double(c.max_position_embeddings + 2) * W + 2 * W;
}

}  // namespace qformer::presets
