#pragma once
/// \file
/// Activations and the two-layer feed-forward block fc2(act(fc1(x))) (ViT `mlp`, BERT intermediate + output
/// dense, OPT fc1/fc2). The activation is a runtime choice, like every size.

#include "../ops/ops.hpp"
#include "concepts.hpp"
#include "linear.hpp"

namespace qformer {

enum class activation { gelu_erf, gelu_tanh, relu };

/// Applies `act` elementwise; y may alias x.
template <class T, class D>
void apply_activation(context<D>& ctx, activation act, view<const T, D> x, view<T, D> y) {
  switch (act) {
    case activation::gelu_erf: ops::gelu_erf<T, D>(ctx, x, y); break;
    case activation::gelu_tanh: ops::gelu_tanh<T, D>(ctx, x, y); break;
    case activation::relu: ops::relu<T, D>(ctx, x, y); break;
  }
}

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
  void forward(context<D>& ctx, view<const T, D> x, view<T, D> y) const {
    typename context<D>::scope scope(ctx);
    view<T, D> h = fc1_(ctx, x);  // (..., hidden)
    apply_activation<T, D>(ctx, act_, h, h);
    fc2_.forward(ctx, h, y);
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
