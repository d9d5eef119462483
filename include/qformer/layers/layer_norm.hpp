#pragma once
/// \file
/// LayerNorm over the last dimension, mirroring torch.nn.LayerNorm(C, eps) with affine weight and bias.

#include "../ops/ops.hpp"
#include "concepts.hpp"

namespace qformer {

template <class T, class D = cpu>
class LayerNorm {
 public:
  LayerNorm() = default;
  LayerNorm(index_t width, float eps) : width_(width), eps_(eps) {}

  index_t width() const noexcept { return width_; }
  float eps() const noexcept { return eps_; }

  /// "<s>.weight" (C), "<s>.bias" (C).
  void load(const weight_scope& s) {
    weight_ = s.load<T, D>("weight", {width_});
    bias_ = s.load<T, D>("bias", {width_});
  }

  /// x (..., C) -> y (..., C); y may alias x.
  void forward(context<D>& ctx, view<const T, D> x, view<T, D> y) const {
    ops::layer_norm<T, D>(ctx, x, weight_.get(), bias_.get(), eps_, y);
  }
  view<T, D> operator()(context<D>& ctx, view<const T, D> x) const {
    view<T, D> y = ctx.template alloc<T>(x.shape());
    forward(ctx, x, y);
    return y;
  }

 private:
  index_t width_ = 0;
  float eps_ = 1e-5f;
  tensor<T, D> weight_, bias_;
};

static_assert(Layer<LayerNorm<float, cpu>, float, cpu>);

}  // namespace qformer
