#pragma once
/// \file
/// What a layer must offer. Built-in layers static_assert it; a user's custom layer that misses a piece gets
/// one readable error instead of a page of template noise.

#include "../core/context.hpp"
#include "../core/tensor.hpp"
#include "../io/checkpoint.hpp"

#include <concepts>

namespace qformer {

/// A layer maps one sequence to another: `layer(ctx, x)` returns its output in ctx's arena, and `load(scope)`
/// reads its weights from a checkpoint scope.
template <class L, class T, class D>
concept Layer = requires(const L& layer, L& mutable_layer, context<D>& ctx, view<const T, D> x, const weight_scope& s) {
  { layer(ctx, x) } -> std::convertible_to<view<T, D>>;
  { mutable_layer.load(s) };
};

/// A layer that also reads a second sequence (cross-attention to image features).
template <class L, class T, class D>
concept CrossLayer = requires(const L& layer, L& mutable_layer, context<D>& ctx, view<const T, D> x,
                              view<const T, D> memory, const weight_scope& s) {
  { layer(ctx, x, memory) } -> std::convertible_to<view<T, D>>;
  { mutable_layer.load(s) };
};

/// Output shape of a layer that changes only the last dimension.
inline shape with_last_dim(shape s, index_t last) {
  s[s.rank() - 1] = last;
  return s;
}

}  // namespace qformer
