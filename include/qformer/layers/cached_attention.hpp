#pragma once
/// \file
/// Decoder self-attention over a KV cache: the new positions' keys and values are appended to the layer's
/// cache, then the new queries attend to every cached position. Shared by the OPT and T5 decoders.

#include "../ops/ops.hpp"

namespace qformer {

/// q, k, v (B, L, C) of the L new positions; cache_k / cache_v (B, capacity, C) with `past` positions filled;
/// mask additive (B | 1, H | 1, L, past + L) or empty; out (B, L, C).
/// past_on_device, when given (L = 1: a decoding step recorded once and replayed), holds `past` on the device and
/// is what the cache write and the attention read when they run; the mask is then (B | 1, 1, capacity).
template <class T, class D>
void cached_attention(context<D>& ctx, view<const T, D> q, view<const T, D> k, view<const T, D> v, view<T, D> cache_k,
                      view<T, D> cache_v, index_t past, view<const float, D> mask, index_t heads, float scale, view<T, D> out,
                      view<const std::int64_t, D> past_on_device = {}) {
  const index_t B = q.dim(0), L = q.dim(1), total = past + L, C = q.dim(2);
  if (total > cache_k.dim(1)) throw invalid_argument("KV cache capacity " + std::to_string(cache_k.dim(1)) + " < " + std::to_string(total) + " positions");
  if (!cache_k.contiguous() || !cache_v.contiguous()) throw shape_error("cached_attention: the caches must be contiguous");
  if (!past_on_device.empty() && L != 1)
    throw shape_error("cached_attention: a step with its position on the device takes one position, not " + std::to_string(L));
  if (L == 1) {  // a decoding step: row b goes to cache row b * capacity + past, one write for the batch
    const view<const T, D> k_rows(k.data(), {B, C}, k.row_stride()), v_rows(v.data(), {B, C}, v.row_stride());
    if (!past_on_device.empty()) {
      ops::write_cache_rows<T, D>(ctx, k_rows, v_rows, cache_k, cache_v, past_on_device);
      ops::attention_over_cache<T, D>(ctx, q, cache_k, cache_v, cache_k.dim(1), mask, heads, scale, out, past_on_device);
      return;
    }
    const index_t stride = cache_k.dim(1) * C;
    ops::copy<T, D>(ctx, k_rows, view<T, D>(cache_k.data() + past * C, {B, C}, stride));
    ops::copy<T, D>(ctx, v_rows, view<T, D>(cache_v.data() + past * C, {B, C}, stride));
  } else {
    for (index_t b = 0; b < B; ++b) {
      ops::copy<T, D>(ctx, k[b], cache_k[b].slice(past, L));
      ops::copy<T, D>(ctx, v[b], cache_v[b].slice(past, L));
    }
  }
  ops::attention_over_cache<T, D>(ctx, q, cache_k, cache_v, total, mask, heads, scale, out);
}

}  // namespace qformer
