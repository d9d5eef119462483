#pragma once
/// \file
/// T5Block: one block of the Flan-T5 encoder (self-attention, feed-forward) or decoder (self-attention over a
/// KV cache, cross-attention to the encoder output, feed-forward). Every sub-layer is pre-RMSNorm + residual.
/// T5 attention has no 1/sqrt(d) scaling and no biases; the relative position bias and the masks arrive as one
/// additive (B | 1, H, Lq, Lk) tensor. The feed-forward is gated when the config says so:
/// wo(act(wi_0 x) * wi_1 x), else wo(act(wi x)); act is exact GELU, the tanh GELU or ReLU per dense_act_fn.

#include "cached_attention.hpp"
#include "linear.hpp"
#include "mlp.hpp"
#include "rms_norm.hpp"
#include "../models/config.hpp"

#include <optional>

namespace qformer {

template <class T, class D = cpu>
class T5Block {
 public:
  T5Block() = default;
  T5Block(const T5Config& c, bool decoder)
      : c_(c), decoder_(decoder), act_(activation_of(c.dense_act_fn)), self_ln_(c.d_model, c.layer_norm_epsilon), self_qkv_(c.d_model, 3 * c.inner_dim(), false),
        self_o_(c.inner_dim(), c.d_model, false), ffn_ln_(c.d_model, c.layer_norm_epsilon), wi_(c.d_model, c.d_ff, false),
        wo_(c.d_ff, c.d_model, false) {
    if (decoder) {
      cross_ln_.emplace(c.d_model, c.layer_norm_epsilon);
      cross_q_.emplace(c.d_model, c.inner_dim(), false);
      cross_kv_.emplace(c.d_model, 2 * c.inner_dim(), false);
      cross_o_.emplace(c.inner_dim(), c.d_model, false);
    }
    if (c.is_gated_act) wi_gate_.emplace(c.d_model, c.d_ff, false);
  }

  /// The projections to int8 (Linear::quantize_int8) but wo, whose input carries T5's large outlier activations
  /// (transformers keeps it in fp32 for the same reason: _keep_in_fp32_modules); norms stay T.
  void quantize_int8()
    requires std::is_same_v<D, cpu>
  {
    for (Linear<T, D>* l : {&self_qkv_, &self_o_, &wi_}) l->quantize_int8();
    for (std::optional<Linear<T, D>>* l : {&cross_q_, &cross_kv_, &cross_o_, &wi_gate_})
      if (*l) (*l)->quantize_int8();
  }

  /// T5Block naming under "<stack>.block.<i>".
  void load(const weight_scope& s) {
    const weight_scope self = s / "layer.0";
    self_qkv_.load_stacked({self / "SelfAttention.q", self / "SelfAttention.k", self / "SelfAttention.v"});
    self_o_.load(self / "SelfAttention.o");
    self_ln_.load(self / "layer_norm");
    if (decoder_) {
      const weight_scope cross = s / "layer.1";
      cross_q_->load(cross / "EncDecAttention.q");
      cross_kv_->load_stacked({cross / "EncDecAttention.k", cross / "EncDecAttention.v"});
      cross_o_->load(cross / "EncDecAttention.o");
      cross_ln_->load(cross / "layer_norm");
    }
    const weight_scope ff = s / (decoder_ ? "layer.2" : "layer.1");
    if (wi_gate_) {
      wi_gate_->load(ff / "DenseReluDense.wi_0");
      wi_.load(ff / "DenseReluDense.wi_1");
    } else {
      wi_.load(ff / "DenseReluDense.wi");
    }
    wo_.load(ff / "DenseReluDense.wo");
    ffn_ln_.load(ff / "layer_norm");
  }

  /// Encoder block: x (B, L, C), bias additive (B | 1, H, L, L) -> y (B, L, C).
  void encode(context<D>& ctx, view<const T, D> x, view<const float, D> bias, view<T, D> y) const {
    typename context<D>::scope scope(ctx);
    view<T, D> h = ctx.template alloc<T>(x.shape());
    {
      typename context<D>::scope inner(ctx);
      view<T, D> qkv = self_qkv_(ctx, self_ln_(ctx, x));
      view<T, D> heads_out = ctx.template alloc<T>(with_last_dim(x.shape(), c_.inner_dim()));
      const index_t I = c_.inner_dim();
      ops::attention<T, D>(ctx, qkv.columns(0, I), qkv.columns(I, I), qkv.columns(2 * I, I), bias, c_.num_heads, 1.0f, heads_out);
      self_o_.forward(ctx, heads_out, h);
      ops::add<T, D>(ctx, h, x, h);
    }
    feed_forward(ctx, h, y);
  }

  /// Keys and values of the encoder output for this block's cross-attention: enc (B, Le, C) -> k, v (B, Le, inner).
  void cross_keys_values(context<D>& ctx, view<const T, D> enc, view<T, D> k, view<T, D> v) const {
    typename context<D>::scope scope(ctx);
    view<T, D> kv = (*cross_kv_)(ctx, enc);
    ops::copy<T, D>(ctx, kv.columns(0, c_.inner_dim()), k);
    ops::copy<T, D>(ctx, kv.columns(c_.inner_dim(), c_.inner_dim()), v);
  }

  /// Decoder block over L new positions: x (B, L, C); self cache (B, capacity, inner) with `past` filled;
  /// self_bias (1 | B, H, L, past + L) (relative bias + causal mask); cross_k / cross_v (B, Le, inner);
  /// cross_mask (B, 1, Le) -> y (B, L, C).
  void decode(context<D>& ctx, view<const T, D> x, view<T, D> cache_k, view<T, D> cache_v, index_t past,
              view<const float, D> self_bias, view<const T, D> cross_k, view<const T, D> cross_v, view<const float, D> cross_mask,
              view<T, D> y) const {
    typename context<D>::scope scope(ctx);
    const index_t I = c_.inner_dim();
    view<T, D> h = ctx.template alloc<T>(x.shape());
    {
      typename context<D>::scope inner(ctx);
      view<T, D> qkv = self_qkv_(ctx, self_ln_(ctx, x));
      view<T, D> heads_out = ctx.template alloc<T>(with_last_dim(x.shape(), I));
      cached_attention<T, D>(ctx, qkv.columns(0, I), qkv.columns(I, I), qkv.columns(2 * I, I), cache_k, cache_v, past, self_bias,
                             c_.num_heads, 1.0f, heads_out);
      self_o_.forward(ctx, heads_out, h);
      ops::add<T, D>(ctx, h, x, h);
    }
    view<T, D> h2 = ctx.template alloc<T>(x.shape());
    {
      typename context<D>::scope inner(ctx);
      view<T, D> q = (*cross_q_)(ctx, (*cross_ln_)(ctx, h));
      view<T, D> heads_out = ctx.template alloc<T>(with_last_dim(x.shape(), I));
      ops::attention<T, D>(ctx, q, cross_k, cross_v, cross_mask, c_.num_heads, 1.0f, heads_out);
      cross_o_->forward(ctx, heads_out, h2);
      ops::add<T, D>(ctx, h2, h, h2);
    }
    feed_forward(ctx, h2, y);
  }

 private:
  /// y = h + FF(RMSNorm(h)).
  void feed_forward(context<D>& ctx, view<const T, D> h, view<T, D> y) const {
    typename context<D>::scope scope(ctx);
    view<T, D> n = ffn_ln_(ctx, h);
    view<T, D> up = wi_(ctx, n);  // (.., d_ff): wi, or wi_1 when gated
    if (wi_gate_) {
      view<T, D> gate = (*wi_gate_)(ctx, n);
      activate(ctx, gate);
      ops::mul<T, D>(ctx, gate, up, up);
    } else {
      activate(ctx, up);
    }
    wo_.forward(ctx, up, y);
    ops::add<T, D>(ctx, y, h, y);
  }

  void activate(context<D>& ctx, view<T, D> x) const { ops::activate<T, D>(ctx, act_, x, x); }

  /// transformers' ACT2FN names: "gelu" (exact), "gelu_new" (tanh form), "relu".
  static activation activation_of(const std::string& name) {
    return name == "gelu" ? activation::gelu_erf : name == "gelu_new" ? activation::gelu_tanh : activation::relu;
  }

  T5Config c_;
  bool decoder_ = false;
  activation act_ = activation::relu;
  RMSNorm<T, D> self_ln_;
  Linear<T, D> self_qkv_, self_o_;
  std::optional<RMSNorm<T, D>> cross_ln_;
  std::optional<Linear<T, D>> cross_q_, cross_kv_, cross_o_;
  RMSNorm<T, D> ffn_ln_;
  Linear<T, D> wi_;
  std::optional<Linear<T, D>> wi_gate_;
  Linear<T, D> wo_;
};

}  // namespace qformer
