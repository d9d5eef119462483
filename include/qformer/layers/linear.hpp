#pragma once
/// \file
/// Linear: y = x W^T + b, mirroring torch.nn.Linear (weight (out, in) row-major, bias (out)).

#include "../backends/cpu/gemm_int8.hpp"
#include "../ops/ops.hpp"
#include "concepts.hpp"

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <type_traits>
#include <vector>

namespace qformer {

namespace detail {
/// Elements between the starts of two stored weight rows of `in` elements on device D. On the CPU, one cache line
/// more than `in` when a row is a multiple of 2 KiB: such rows all start in the same one or two L1 cache sets (the
/// set index repeats every 4 KiB), so the 12 rows a GEMM micro-tile reads side by side evict one another. ViT-g's
/// fc2 (6144 fp32 = 24 KiB rows) ran at 120 GFLOP/s on one core, 149 with the padding (bench/bench_linear).
template <class T, class D>
index_t weight_row_stride(index_t in) {
  if constexpr (!std::is_same_v<D, cpu>) return in;
  const index_t row_bytes = in * static_cast<index_t>(sizeof(T));
  return row_bytes > 0 && row_bytes % 2048 == 0 ? in + 64 / static_cast<index_t>(sizeof(T)) : in;
}

/// Moves `rows` contiguous rows of `cols` elements at the start of `data` to rows `stride` apart (stride >= cols),
/// in place: the last row first, so no row is overwritten before it moved.
template <class T>
void spread_rows(T* data, index_t rows, index_t cols, index_t stride) {
  if (stride == cols) return;
  for (index_t r = rows; r-- > 0;) {
    std::memmove(data + r * stride, data + r * cols, static_cast<std::size_t>(cols) * sizeof(T));
    std::fill(data + r * stride + cols, data + (r + 1) * stride, T(0.0f));
  }
}
}  // namespace detail

template <class T, class D = cpu>
class Linear {
 public:
  Linear() = default;
  Linear(index_t in_features, index_t out_features, bool bias = true)
      : in_(in_features), out_(out_features), has_bias_(bias) {}

  index_t in_features() const noexcept { return in_; }
  index_t out_features() const noexcept { return out_; }
  /// (out, in); on the CPU its rows may be further apart than `in` (detail::weight_row_stride).
  view<const T, D> weight() const { return weight_.empty() ? view<const T, D>() : weight_.get().columns(0, in_); }
  view<const T, D> bias() const noexcept { return bias_.get(); }

  /// "<s>.weight" (out, in) and, with a bias, "<s>.bias" (out).
  void load(const weight_scope& s) { load_stacked({s}); }

  /// Several PyTorch Linears with the same input, stacked by output rows into this one (fused q/k/v).
  void load_stacked(std::initializer_list<weight_scope> parts) {
    const index_t part_out = out_ / static_cast<index_t>(parts.size());
    if (part_out * static_cast<index_t>(parts.size()) != out_) throw shape_error("Linear::load_stacked: uneven parts");
    for (const weight_scope& p : parts) {  // every part present with its shape before the fused allocation
      p.check("weight", {part_out, in_});
      if (has_bias_) p.check("bias", {part_out});
    }
    const index_t stride = detail::weight_row_stride<T, D>(in_);
    tensor<T> w({out_, stride});  // read contiguously, then spread to the stored stride
    tensor<T> b(has_bias_ ? shape{out_} : shape{});
    index_t row = 0;
    for (const weight_scope& p : parts) {
      p.load_into<T>("weight", {part_out, in_}, w.data() + row * in_);
      if (has_bias_) p.load_into<T>("bias", {part_out}, b.data() + row);
      row += part_out;
    }
    detail::spread_rows(w.data(), out_, in_, stride);
    install(std::move(w), std::move(b));
  }

  /// Installs host weights (w (out, in), b (out) or empty), copying them to device D.
  void set(tensor<T> w, tensor<T> b) {
    if (!(w.shape() == shape{out_, in_})) throw shape_error("Linear::set: weight " + w.shape().str());
    if (has_bias_ && !(b.shape() == shape{out_})) throw shape_error("Linear::set: bias " + b.shape().str());
    const index_t stride = detail::weight_row_stride<T, D>(in_);
    if (stride != in_) {
      tensor<T> padded({out_, stride});
      std::copy(w.data(), w.data() + w.numel(), padded.data());
      detail::spread_rows(padded.data(), out_, in_, stride);
      w = std::move(padded);
    }
    install(std::move(w), std::move(b));
  }

  /// Replaces the weight by its int8 quantisation, one scale per output channel (CPU only; the bias stays T).
  /// forward then quantises x per row and multiplies in integers (backends/cpu/gemm_int8.hpp): a quarter of the
  /// fp32 weight memory, half of bf16's, and that much less to stream per decoded token.
  void quantize_int8()
    requires std::is_same_v<D, cpu>
  {
    if (int8_) return;
    if (weight_.empty()) throw invalid_argument("Linear::quantize_int8: no weight loaded");
    int8_ = int8_weights::quantize<T>(weight());
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
    ops::linear<T, D>(ctx, x, weight(), bias_.get(), y);
  }
  /// y = act(x W^T + b) + residual (act and residual each optional), the epilogue fused into the product where
  /// the backend can (ops::linear_fused). residual has y's shape; y overlaps neither x nor residual.
  void forward(context<D>& ctx, view<const T, D> x, view<T, D> y, std::optional<activation> act, view<const T, D> residual = {}) const {
    if constexpr (std::is_same_v<D, cpu>) {
      if (int8_) {
        cpu_detail::linear_int8<T>(ctx, x, *int8_, bias_.empty() ? nullptr : bias_.get().data(), y);
        return ops::detail::apply_epilogue<T, D>(ctx, act, residual, y);
      }
    }
    ops::linear_fused<T, D>(ctx, x, weight(), bias_.get(), act, residual, y);
  }
  view<T, D> operator()(context<D>& ctx, view<const T, D> x) const {
    view<T, D> y = ctx.template alloc<T>(with_last_dim(x.shape(), out_));
    forward(ctx, x, y);
    return y;
  }

 private:
  index_t in_ = 0, out_ = 0;
  bool has_bias_ = true;
  /// Stored weight: (out, row stride) with the row stride from detail::weight_row_stride, the padding zero.
  tensor<T, D> weight_, bias_;

  void install(tensor<T> w, tensor<T> b) {
    weight_ = to_device<T, D>(std::move(w));
    if (has_bias_) bias_ = to_device<T, D>(std::move(b));
  }
  std::optional<int8_weights> int8_;  // set by quantize_int8(); weight_ is then empty
};

static_assert(Layer<Linear<float, cpu>, float, cpu>);

}  // namespace qformer
