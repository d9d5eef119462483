#pragma once
/// \file
/// Decoder self-attention over a KV cache: the new positions' keys and values are appended to the layer's
/// cache, then the new queries attend to every cached position. Shared by the OPT and T5 decoders.

#include "../ops/ops.hpp"

namespace qformer {

/// q, k, v (B, L, C) of the L new positions; cache_k / cache_v (B, capacity, C) with `past` positions filled;
/// mask additive (B | 1, H | 1, L, past + L) or empty; out (B, L, C).
template <class T, class D>
void cached_attention(context<D>& ctx, view<const T, D> q, view<const T, D> k, view<const T, D> v, view<T, D> cache_k,
                      view<T, D> cache_v, index_t past, view<const float, D> mask, index_t heads, float scale, view<T, D> out) {
  const index_t B = q.dim(0), L = q.dim(1), total = past + L;
  if (total > cache_k.dim(1)) throw invalid_argument("KV cache capacity " + std::to_string(cache_k.dim(1)) + " < " + std::to_string(total) + " positions");
  for (index_t b = 0; b < B; ++b) {
    ops::copy<T, D>(ctx, k[b], cache_k[b].slice(past, L));
    ops::copy<T, D>(ctx, v[b], cache_v[b].slice(past, L));
  }
  for (index_t b = 0; b < B; ++b) {
    view<const float, D> mask_b;
    if (!mask.empty()) mask_b = mask.dim(0) == 1 ? mask : mask.slice(b, 1);
    ops::attention<T, D>(ctx, q[b].unsqueeze(), view<const T, D>(cache_k[b].slice(0, total)).unsqueeze(),
                         view<const T, D>(cache_v[b].slice(0, total)).unsqueeze(), mask_b, heads, scale, out[b].unsqueeze());
  }
}

}  // namespace qformer
