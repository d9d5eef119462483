#pragma once
/// \file
/// Activations and the two-layer feed-forward block fc2(act(fc1(x))) (ViT `mlp`, BERT intermediate + output
/// dense, OPT fc1/fc2). The activation is a runtime choice, like every size.

#include "../ops/ops.hpp"
#include "concepts.hpp"
#include "linear.hpp"

namespace qformer {

template <class T, class D = cpu>
class MLP {
 public:
  MLP() = default;
  MLP(index_t width, index_t hidden, activation act) : fc1_(width, hidden), fc2_(hidden, width), act_(act) {}

  /// Loads the two Linears from their own scopes (their HF names differ per model).
  void load(const weight_scope& fc1, const weight_scope& fc2) {
    fc1_.load(fc1);
    fc2_.load(fc2);
  }
  /// ViT naming: "<s>.fc1", "<s>.fc2".
  void load(const weight_scope& s) { load(s / "fc1", s / "fc2"); }

  /// Both Linears to int8 (Linear::quantize_int8).
  void quantize_int8()
    requires std::is_same_v<D, cpu>
  {
    fc1_.quantize_int8();
    fc2_.quantize_int8();
  }

  /// x (..., C) -> y (..., C). y must not overlap x.
  void forward(context<D>& ctx, view<const T, D> x, view<T, D> y) const { forward_add(ctx, x, {}, y); }
  /// y = residual + forward(x) (residual may be empty), the activation fused into fc1 and the add into fc2 where
  /// the backend can. y overlaps neither x nor residual.
  void forward_add(context<D>& ctx, view<const T, D> x, view<const T, D> residual, view<T, D> y) const {
    typename context<D>::scope scope(ctx);
    view<T, D> h = ctx.template alloc<T>(with_last_dim(x.shape(), fc1_.out_features()));  // (..., hidden)
    fc1_.forward(ctx, x, h, act_);
    fc2_.forward(ctx, h, y, std::nullopt, residual);
  }
  view<T, D> operator()(context<D>& ctx, view<const T, D> x) const {
    view<T, D> y = ctx.template alloc<T>(x.shape());
    forward(ctx, x, y);
    return y;
  }

 private:
  Linear<T, D> fc1_, fc2_;
  activation act_ = activation::gelu_erf;
};

static_assert(Layer<MLP<float, cpu>, float, cpu>);

}  // namespace qformer
