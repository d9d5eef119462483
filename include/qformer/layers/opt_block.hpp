#pragma once
/// \file
/// OPTBlock: one OPTDecoderLayer. Pre-LN (do_layer_norm_before, every BLIP-2 OPT):
///   h = x + out_proj(attn(self_attn_layer_norm(x)));  y = h + fc2(relu(fc1(final_layer_norm(h))))
/// Post-LN (OPT-350m): the norms move after each residual. Attention is causal over a KV cache; q is scaled
/// by head_dim^-0.5.

#include "attention.hpp"
#include "cached_attention.hpp"
#include "layer_norm.hpp"
#include "mlp.hpp"
#include "../models/config.hpp"

namespace qformer {

template <class T, class D = cpu>
class OPTBlock {
 public:
  OPTBlock() = default;
  explicit OPTBlock(const OPTConfig& c)
      : width_(c.hidden_size), heads_(c.num_attention_heads), pre_ln_(c.do_layer_norm_before), qkv_(c.hidden_size, 3 * c.hidden_size),
        out_(c.hidden_size, c.hidden_size), attn_ln_(c.hidden_size, 1e-5f), ffn_ln_(c.hidden_size, 1e-5f),
        ffn_(c.hidden_size, c.ffn_dim, c.activation_function == "gelu" ? activation::gelu_erf : activation::relu) {}

  /// OPTDecoderLayer naming under "language_model.model.decoder.layers.<i>".
  void load(const weight_scope& s) {
    qkv_.load_stacked({s / "self_attn.q_proj", s / "self_attn.k_proj", s / "self_attn.v_proj"});
    out_.load(s / "self_attn.out_proj");
    attn_ln_.load(s / "self_attn_layer_norm");
    ffn_.load(s / "fc1", s / "fc2");
    ffn_ln_.load(s / "final_layer_norm");
  }

  /// Every projection to int8 (Linear::quantize_int8); the norms stay T.
  void quantize_int8()
    requires std::is_same_v<D, cpu>
  {
    qkv_.quantize_int8();
    out_.quantize_int8();
    ffn_.quantize_int8();
  }

  /// x (B, L, C) at positions [past, past + L); cache_k / cache_v this layer's (B, capacity, C);
  /// mask additive (B, L, past + L) -> y (B, L, C). past_on_device: see cached_attention (mask (B, 1, capacity)).
  void forward(context<D>& ctx, view<const T, D> x, view<T, D> cache_k, view<T, D> cache_v, index_t past,
               view<const float, D> mask, view<T, D> y, view<const std::int64_t, D> past_on_device = {}) const {
    typename context<D>::scope scope(ctx);
    view<T, D> h = ctx.template alloc<T>(x.shape());
    {
      typename context<D>::scope inner(ctx);
      view<const T, D> a_in = pre_ln_ ? view<const T, D>(attn_ln_(ctx, x)) : x;
      view<T, D> qkv = qkv_(ctx, a_in);  // (B, L, 3C)
      view<T, D> heads_out = ctx.template alloc<T>(x.shape());
      cached_attention<T, D>(ctx, qkv.columns(0, width_), qkv.columns(width_, width_), qkv.columns(2 * width_, width_), cache_k,
                             cache_v, past, mask, heads_, 1.0f / std::sqrt(float(width_ / heads_)), heads_out, past_on_device);
      out_.forward(ctx, heads_out, h, std::nullopt, x);  // h = x + out_proj(...)
      if (!pre_ln_) attn_ln_.forward(ctx, h, h);
    }
    view<const T, D> f_in = pre_ln_ ? view<const T, D>(ffn_ln_(ctx, h)) : view<const T, D>(h);
    ffn_.forward_add(ctx, f_in, h, y);  // y = h + fc2(act(fc1(f_in)))
    if (!pre_ln_) ffn_ln_.forward(ctx, y, y);
  }

 private:
  index_t width_ = 0, heads_ = 1;
  bool pre_ln_ = true;
  Linear<T, D> qkv_, out_;
  LayerNorm<T, D> attn_ln_, ffn_ln_;
  MLP<T, D> ffn_;
};

}  // namespace qformer
