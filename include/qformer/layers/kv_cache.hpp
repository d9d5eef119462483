#pragma once
/// \file
/// KVCache: the keys and values of every past position, per layer, so a decoding step attends to them without
/// recomputing them. Storage is allocated once per (batch, capacity) and reused; `select` rebuilds the batch
/// from chosen rows (beam search's reorder, or expanding each sequence into beams).

#include "../ops/ops.hpp"

#include <span>
#include <vector>

namespace qformer {

template <class T, class D = cpu>
class KVCache {
 public:
  KVCache() = default;
  /// layers x (batch, capacity, width) keys and values.
  KVCache(index_t layers, index_t batch, index_t capacity, index_t width)
      : layers_(layers), batch_(batch), capacity_(capacity), width_(width) {
    allocate(keys_, values_);
  }

  index_t batch() const noexcept { return batch_; }
  index_t capacity() const noexcept { return capacity_; }
  index_t length() const noexcept { return length_; }
  index_t width() const noexcept { return width_; }

  /// Keys / values of layer l: (batch, capacity, width); positions [0, length) are filled.
  view<T, D> keys(index_t layer) noexcept { return keys_[static_cast<std::size_t>(layer)].mut(); }
  view<T, D> values(index_t layer) noexcept { return values_[static_cast<std::size_t>(layer)].mut(); }

  /// Marks `count` more positions as filled (after every layer wrote them).
  void advance(index_t count) {
    if (length_ + count > capacity_)
      throw invalid_argument("KV cache full: " + std::to_string(length_ + count) + " positions, capacity " + std::to_string(capacity_));
    length_ += count;
  }

  /// New batch row r = old row rows[r] (rows may repeat and change the batch size).
  void select(context<D>& ctx, std::span<const index_t> rows) {
    const index_t new_batch = static_cast<index_t>(rows.size());
    if (spare_keys_.empty() || spare_batch_ != new_batch) {
      spare_keys_.clear(), spare_values_.clear();
      const index_t keep = batch_;
      batch_ = new_batch;
      allocate(spare_keys_, spare_values_);
      batch_ = keep;
      spare_batch_ = new_batch;
    }
    for (index_t l = 0; l < layers_; ++l)
      for (index_t r = 0; r < new_batch; ++r) {
        const index_t from = rows[static_cast<std::size_t>(r)];
        if (from < 0 || from >= batch_) throw invalid_argument("KVCache::select: row " + std::to_string(from));
        if (length_ == 0) continue;
        ops::copy<T, D>(ctx, keys(l)[from].slice(0, length_), spare_keys_[l].mut()[r].slice(0, length_));
        ops::copy<T, D>(ctx, values(l)[from].slice(0, length_), spare_values_[l].mut()[r].slice(0, length_));
      }
    std::swap(keys_, spare_keys_);
    std::swap(values_, spare_values_);
    std::swap(batch_, spare_batch_);
  }

 private:
  void allocate(std::vector<tensor<T, D>>& k, std::vector<tensor<T, D>>& v) const {
    for (index_t l = 0; l < layers_; ++l) {
      k.emplace_back(shape{batch_, capacity_, width_});
      v.emplace_back(shape{batch_, capacity_, width_});
    }
  }

  index_t layers_ = 0, batch_ = 0, capacity_ = 0, width_ = 0, length_ = 0;
  std::vector<tensor<T, D>> keys_, values_;
  std::vector<tensor<T, D>> spare_keys_, spare_values_;
  index_t spare_batch_ = 0;
};

}  // namespace qformer
