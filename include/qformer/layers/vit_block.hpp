#pragma once
/// \file
/// ViTBlock: the pre-LN EVA / Blip2EncoderLayer.
///   h = x + proj(attn(layer_norm1(x)));  y = h + fc2(gelu(fc1(layer_norm2(h))))

#include "attention.hpp"
#include "layer_norm.hpp"
#include "mlp.hpp"

namespace qformer {

template <class T, class D = cpu>
class ViTBlock {
 public:
  ViTBlock() = default;
  ViTBlock(index_t width, index_t heads, index_t mlp_hidden, float eps, bool qkv_bias = true)
      : width_(width), ln1_(width, eps), attn_(width, heads, true), ln2_(width, eps), mlp_(width, mlp_hidden, activation::gelu_erf),
        qkv_bias_(qkv_bias) {}

  /// Blip2EncoderLayer naming under "vision_model.encoder.layers.<i>". The attention bias comes fused
  /// ("self_attn.qkv.bias", transformers 5) or as "self_attn.q_bias" + "self_attn.v_bias" with a zero key bias
  /// (older and LAVIS checkpoints); with qkv_bias false there is none (zeros).
  void load(const weight_scope& s) {
    ln1_.load(s / "layer_norm1");
    ln2_.load(s / "layer_norm2");
    mlp_.load(s / "mlp");
    const weight_scope attn = s / "self_attn";
    attn_.out_projection().load(attn / "projection");
    tensor<T> w = (attn / "qkv").template load<T>("weight", {3 * width_, width_});
    tensor<T> b({3 * width_});
    std::fill_n(b.data(), b.numel(), from_float<T>(0.0f));
    if (attn.has("qkv.bias")) {
      (attn / "qkv").template load_into<T>("bias", {3 * width_}, b.data());
    } else if (attn.has("q_bias") || attn.has("v_bias")) {
      attn.template load_into<T>("q_bias", {width_}, b.data());
      attn.template load_into<T>("v_bias", {width_}, b.data() + 2 * width_);
    } else if (qkv_bias_) {
      throw load_error(s.name("self_attn"), "no attention bias: neither 'qkv.bias' nor 'q_bias' + 'v_bias' found");
    }
    attn_.qkv_projection().set(std::move(w), std::move(b));
  }

  /// x (B, L, C) -> y (B, L, C). y must not overlap x.
  void forward(context<D>& ctx, view<const T, D> x, view<T, D> y) const {
    typename context<D>::scope scope(ctx);
    view<T, D> h = ctx.template alloc<T>(x.shape());
    {
      typename context<D>::scope inner(ctx);
      view<T, D> a = attn_(ctx, ln1_(ctx, x));
      ops::add<T, D>(ctx, x, a, h);
    }
    mlp_.forward(ctx, ln2_(ctx, h), y);
    ops::add<T, D>(ctx, y, h, y);
  }
  view<T, D> operator()(context<D>& ctx, view<const T, D> x) const {
    view<T, D> y = ctx.template alloc<T>(x.shape());
    forward(ctx, x, y);
    return y;
  }

 private:
  index_t width_ = 0;
  LayerNorm<T, D> ln1_;
  MultiHeadAttention<T, D> attn_;
  LayerNorm<T, D> ln2_;
  MLP<T, D> mlp_;
  bool qkv_bias_ = true;
};

static_assert(Layer<ViTBlock<float, cpu>, float, cpu>);

}  // namespace qformer
