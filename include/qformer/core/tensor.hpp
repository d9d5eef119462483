#pragma once
/// \file
/// `shape`, `view<T, D>` (non-owning) and `tensor<T, D>` (owning). Row-major, rank <= 4.
///
/// A view is a batch of rows: all dimensions but the last are flattened into rows, and consecutive rows are
/// `row_stride()` elements apart (>= the last dimension). That one stride is all the slicing the models need:
/// the Q, K and V column blocks of a fused qkv projection are views of the same buffer.

#include "device.hpp"
#include "dtype.hpp"
#include "error.hpp"

#include <array>
#include <cassert>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>

namespace qformer {

inline constexpr int max_rank = 4;

/// Dimensions of a tensor, outermost first.
class shape {
 public:
  constexpr shape() = default;
  constexpr shape(std::initializer_list<index_t> dims) {
    if (dims.size() > max_rank) throw shape_error("shape: rank " + std::to_string(dims.size()) + " > 4");
    for (index_t d : dims) {
      if (d < 0) throw shape_error("shape: negative dimension " + std::to_string(d));
      dims_[rank_++] = d;
    }
  }
  constexpr int rank() const noexcept { return rank_; }
  constexpr index_t operator[](int i) const noexcept { return dims_[static_cast<std::size_t>(i)]; }
  constexpr index_t& operator[](int i) noexcept { return dims_[static_cast<std::size_t>(i)]; }
  /// Last dimension (1 for a scalar).
  constexpr index_t cols() const noexcept { return rank_ ? dims_[rank_ - 1] : 1; }
  /// Product of all dimensions but the last.
  constexpr index_t rows() const noexcept {
    index_t r = 1;
    for (int i = 0; i + 1 < rank_; ++i) r *= dims_[i];
    return r;
  }
  constexpr index_t numel() const noexcept { return rows() * cols(); }
  /// Appends a dimension (used by parsers; checks rank and sign).
  constexpr void push_back(index_t d) {
    if (rank_ == max_rank) throw shape_error("shape: rank > 4");
    if (d < 0) throw shape_error("shape: negative dimension " + std::to_string(d));
    dims_[rank_++] = d;
  }
  friend constexpr bool operator==(const shape& a, const shape& b) noexcept {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.dims_[i] != b.dims_[i]) return false;
    return true;
  }
  std::string str() const {
    std::string s = "[";
    for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
    return s + "]";
  }

 private:
  std::array<index_t, max_rank> dims_{};
  int rank_ = 0;
};

/// Non-owning view of device memory: pointer, shape, row stride. `view<const T, D>` is the read-only form.
template <class T, class D = cpu>
class view {
 public:
  using element_type = T;
  using value_type = std::remove_const_t<T>;
  using device_type = D;

  constexpr view() = default;
  view(T* data, const qformer::shape& s) : data_(data), shape_(s), row_stride_(s.cols()) {}
  view(T* data, const qformer::shape& s, index_t row_stride) : data_(data), shape_(s), row_stride_(row_stride) {
    if (row_stride < s.cols()) throw shape_error("view: row stride " + std::to_string(row_stride) + " < columns");
  }
  /// A mutable view converts to a read-only one, never the reverse.
  template <class U>
    requires(std::is_const_v<T> && std::is_same_v<const U, T>)
  view(const view<U, D>& other) : data_(other.data()), shape_(other.shape()), row_stride_(other.row_stride()) {}

  T* data() const noexcept { return data_; }
  const qformer::shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return shape_.rank(); }
  index_t dim(int i) const noexcept { return shape_[i]; }
  index_t rows() const noexcept { return shape_.rows(); }
  index_t cols() const noexcept { return shape_.cols(); }
  index_t numel() const noexcept { return shape_.numel(); }
  index_t row_stride() const noexcept { return row_stride_; }
  bool contiguous() const noexcept { return row_stride_ == shape_.cols(); }
  bool empty() const noexcept { return data_ == nullptr; }
  /// Pointer to the first element of flattened row r.
  T* row(index_t r) const noexcept { return data_ + r * row_stride_; }

  /// The same memory with another shape of equal element count (contiguous views only).
  view reshape(const qformer::shape& s) const {
    if (!contiguous() || s.numel() != numel())
      throw shape_error("view::reshape: " + shape_.str() + " -> " + s.str());
    return view(data_, s);
  }
  /// Columns [begin, begin + count) of every row; keeps the row stride.
  view columns(index_t begin, index_t count) const {
    if (begin < 0 || count < 0 || begin + count > cols()) throw shape_error("view::columns out of range");
    qformer::shape s = shape_;
    s[s.rank() - 1] = count;
    return view(data_ + begin, s, row_stride_);
  }
  /// Entries [begin, begin + count) of the outermost dimension.
  view slice(index_t begin, index_t count) const {
    if (rank() < 2 || begin < 0 || count < 0 || begin + count > shape_[0])
      throw shape_error("view::slice out of range on " + shape_.str());
    qformer::shape s = shape_;
    s[0] = count;
    index_t rows_per_entry = shape_.rows() / (shape_[0] ? shape_[0] : 1);
    return view(data_ + begin * rows_per_entry * row_stride_, s, row_stride_);
  }
  /// The same rows with a leading dimension of 1 added: (..., C) -> (1, ..., C). Keeps the row stride.
  view unsqueeze() const {
    if (rank() == max_rank) throw shape_error("view::unsqueeze: rank 4 already");
    qformer::shape s{1};
    for (int d = 0; d < rank(); ++d) s.push_back(shape_[d]);
    return view(data_, s, row_stride_);
  }
  /// Entry i of the outermost dimension, one rank lower.
  view operator[](index_t i) const {
    if (rank() < 2 || i < 0 || i >= shape_[0]) throw shape_error("view[]: index out of range on " + shape_.str());
    qformer::shape s;
    for (int d = 1; d < rank(); ++d) s.push_back(shape_[d]);
    index_t rows_per_entry = shape_.rows() / shape_[0];
    return view(data_ + i * rows_per_entry * row_stride_, s, row_stride_);
  }

 private:
  T* data_ = nullptr;
  qformer::shape shape_;
  index_t row_stride_ = 0;
};

template <class T, class D = cpu>
using const_view = view<const T, D>;

/// Owning, contiguous tensor on device D.
template <class T, class D = cpu>
class tensor {
 public:
  tensor() = default;
  explicit tensor(const qformer::shape& s) : shape_(s) {
    const index_t n = s.numel();
    if (n > 0) {
      if (static_cast<std::size_t>(n) > std::numeric_limits<std::size_t>::max() / sizeof(T))
        throw shape_error("tensor: " + s.str() + " is too large");
      data_.reset(static_cast<T*>(device_traits<D>::allocate(static_cast<std::size_t>(n) * sizeof(T))));
    }
  }
  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  const qformer::shape& shape() const noexcept { return shape_; }
  index_t numel() const noexcept { return shape_.numel(); }
  std::size_t size_bytes() const noexcept { return static_cast<std::size_t>(numel()) * sizeof(T); }
  bool empty() const noexcept { return !data_; }

  view<T, D> mut() noexcept { return view<T, D>(data(), shape_); }
  view<const T, D> get() const noexcept { return view<const T, D>(data(), shape_); }
  operator view<const T, D>() const noexcept { return get(); }

 private:
  struct deleter {
    void operator()(T* p) const noexcept { device_traits<D>::deallocate(p); }
  };
  qformer::shape shape_;
  std::unique_ptr<T, deleter> data_;
};

/// Copies a contiguous host tensor to device D (a plain copy when D is cpu).
template <class T, class D>
tensor<T, D> to_device(const tensor<T, cpu>& host) {
  tensor<T, D> out(host.shape());
  if constexpr (std::is_same_v<D, cpu>) {
    device_traits<cpu>::copy(out.data(), host.data(), host.size_bytes());
  } else {
    device_traits<D>::copy_to_device(out.data(), host.data(), host.size_bytes());
  }
  return out;
}

/// Moves a host tensor to device D: on the CPU it is the same tensor, elsewhere a copy.
template <class T, class D>
tensor<T, D> to_device(tensor<T, cpu>&& host) {
  if constexpr (std::is_same_v<D, cpu>) return std::move(host);
  else return to_device<T, D>(static_cast<const tensor<T, cpu>&>(host));
}

}  // namespace qformer
