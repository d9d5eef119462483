#pragma once
/// \file
/// Linear: y = x W^T + b, mirroring torch.nn.Linear (weight (out, in) row-major, bias (out)).

#include "../backends/cpu/gemm_int8.hpp"
#include "../ops/ops.hpp"
#include "concepts.hpp"

#include <initializer_list>
#include <optional>
#include <type_traits>
#include <vector>

namespace qformer {

template <class T, class D = cpu>
class Linear {
 public:
  Linear() = default;
  Linear(index_t in_features, index_t out_features, bool bias = true)
      : in_(in_features), out_(out_features), has_bias_(bias) {}

  index_t in_features() const noexcept { return in_; }
  index_t out_features() const noexcept { return out_; }
  view<const T, D> weight() const noexcept { return weight_.get(); }
  view<const T, D> bias() const noexcept { return bias_.get(); }

  /// "<s>.weight" (out, in) and, with a bias, "<s>.bias" (out).
  void load(const weight_scope& s) {
    tensor<T> w = s.load<T>("weight", {out_, in_});
    tensor<T> b;
    if (has_bias_) b = s.load<T>("bias", {out_});
    set(std::move(w), std::move(b));
  }

  /// Several PyTorch Linears with the same input, stacked by output rows into this one (fused q/k/v).
  void load_stacked(std::initializer_list<weight_scope> parts) {
    const index_t part_out = out_ / static_cast<index_t>(parts.size());
    if (part_out * static_cast<index_t>(parts.size()) != out_) throw shape_error("Linear::load_stacked: uneven parts");
    for (const weight_scope& p : parts) {  // every part present with its shape before the fused allocation
      p.check("weight", {part_out, in_});
      if (has_bias_) p.check("bias", {part_out});
    }
    tensor<T> w({out_, in_});
    tensor<T> b(has_bias_ ? shape{out_} : shape{});
    index_t row = 0;
    for (const weight_scope& p : parts) {
      p.load_into<T>("weight", {part_out, in_}, w.data() + row * in_);
      if (has_bias_) p.load_into<T>("bias", {part_out}, b.data() + row);
      row += part_out;
    }
    set(std::move(w), std::move(b));
  }

  /// Installs host weights (w (out, in), b (out) or empty), copying them to device D.
  void set(tensor<T> w, tensor<T> b) {
    if (!(w.shape() == shape{out_, in_})) throw shape_error("Linear::set: weight " + w.shape().str());
    if (has_bias_ && !(b.shape() == shape{out_})) throw shape_error("Linear::set: bias " + b.shape().str());
    weight_ = to_device<T, D>(std::move(w));
    if (has_bias_) bias_ = to_device<T, D>(std::move(b));
  }

  /// Replaces the weight by its int8 quantisation, one scale per output channel (CPU only; the bias stays T).
  /// forward then quantises x per row and multiplies in integers (backends/cpu/gemm_int8.hpp): a quarter of the
  /// fp32 weight memory, half of bf16's, and that much less to stream per decoded token.
  void quantize_int8()
    requires std::is_same_v<D, cpu>
  {
    if (int8_) return;
    if (weight_.empty()) throw invalid_argument("Linear::quantize_int8: no weight loaded");
    int8_ = int8_weights::quantize<T>(weight_.get());
    weight_ = tensor<T, D>();
  }
  bool quantized() const noexcept { return int8_.has_value(); }
  /// Bytes the weights take now (int8 values, scales and offsets once quantised), bias included.
  std::size_t weight_bytes() const noexcept {
    return (int8_ ? int8_->bytes() : static_cast<std::size_t>(weight_.numel()) * sizeof(T)) +
           static_cast<std::size_t>(bias_.numel()) * sizeof(T);
  }

  /// x (..., in) -> y (..., out). y must not overlap x.
  void forward(context<D>& ctx, view<const T, D> x, view<T, D> y) const {
    if constexpr (std::is_same_v<D, cpu>) {
      if (int8_) return cpu_detail::linear_int8<T>(ctx, x, *int8_, bias_.empty() ? nullptr : bias_.get().data(), y);
    }
    ops::linear<T, D>(ctx, x, weight_.get(), bias_.get(), y);
  }
  view<T, D> operator()(context<D>& ctx, view<const T, D> x) const {
    view<T, D> y = ctx.template alloc<T>(with_last_dim(x.shape(), out_));
    forward(ctx, x, y);
    return y;
  }

 private:
  index_t in_ = 0, out_ = 0;
  bool has_bias_ = true;
  tensor<T, D> weight_, bias_;
  std::optional<int8_weights> int8_;  // set by quantize_int8(); weight_ is then empty
};

static_assert(Layer<Linear<float, cpu>, float, cpu>);

}  // namespace qformer
