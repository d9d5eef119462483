#pragma once
/// \file
/// RMSNorm, mirroring T5LayerNorm: y = w * x / sqrt(mean(x^2) + eps), no mean subtraction, no bias.

#include "../ops/ops.hpp"
#include "concepts.hpp"

namespace qformer {

template <class T, class D = cpu>
class RMSNorm {
 public:
  RMSNorm() = default;
  RMSNorm(index_t width, float eps) : width_(width), eps_(eps) {}

  /// "<s>.weight" (C).
  void load(const weight_scope& s) { weight_ = s.load<T, D>("weight", {width_}); }

  /// x (..., C) -> y (..., C); y may alias x.
  void forward(context<D>& ctx, view<const T, D> x, view<T, D> y) const { ops::rms_norm<T, D>(ctx, x, weight_.get(), eps_, y); }
  view<T, D> operator()(context<D>& ctx, view<const T, D> x) const {
    view<T, D> y = ctx.template alloc<T>(x.shape());
    forward(ctx, x, y);
    return y;
  }

 private:
  index_t width_ = 0;
  float eps_ = 1e-6f;
  tensor<T, D> weight_;
};

static_assert(Layer<RMSNorm<float, cpu>, float, cpu>);

}  // namespace qformer
