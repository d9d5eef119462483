#pragma once
/// \file
/// Embedding: a (rows, C) table looked up by token id, mirroring torch.nn.Embedding.

#include "../ops/ops.hpp"
#include "concepts.hpp"

#include <span>

namespace qformer {

template <class T, class D = cpu>
class Embedding {
 public:
  Embedding() = default;
  Embedding(index_t rows, index_t width) : rows_(rows), width_(width) {}

  index_t rows() const noexcept { return rows_; }
  index_t width() const noexcept { return width_; }
  view<const T, D> table() const noexcept { return table_.get(); }

  /// "<s>.weight" (rows, C).
  void load(const weight_scope& s) { table_ = s.load<T, D>("weight", {rows_, width_}); }

  /// ids (N) on the host -> out (N, C).
  void forward(context<D>& ctx, std::span<const std::int64_t> ids, view<T, D> out) const {
    ops::embedding<T, D>(ctx, table_.get(), ids, out);
  }
  /// ids (N) already on the device (checked by the caller: ops::embedding_of_device_ids) -> out (N, C).
  void forward(context<D>& ctx, view<const std::int64_t, D> ids, view<T, D> out) const {
    ops::embedding_of_device_ids<T, D>(ctx, table_.get(), ids, out);
  }
  view<T, D> operator()(context<D>& ctx, std::span<const std::int64_t> ids) const {
    view<T, D> out = ctx.template alloc<T>({static_cast<index_t>(ids.size()), width_});
    forward(ctx, ids, out);
    return out;
  }

 private:
  index_t rows_ = 0, width_ = 0;
  tensor<T, D> table_;
};

}  // namespace qformer
