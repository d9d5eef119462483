#pragma once
/// \file
/// `context<D>`: what a forward pass needs besides weights — a workspace arena (so a pass does not allocate once
/// the arena has grown to its high-water mark) and, per device, backend state (threads; on CUDA a stream and
/// cuBLAS handle). One context per thread; a loaded model is shared read-only between contexts.

#include "device.hpp"
#include "tensor.hpp"

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

namespace qformer {

/// Stack allocator over device memory. Allocations are released in LIFO order through `scope`s. When the arena
/// is empty again and the last pass needed more than one block, the blocks are merged into one of the combined
/// size, so from the second pass on a forward pass makes no device allocation at all.
template <class D>
class workspace_arena {
 public:
  workspace_arena() = default;
  workspace_arena(const workspace_arena&) = delete;
  workspace_arena& operator=(const workspace_arena&) = delete;
  ~workspace_arena() { free_blocks(); }

  /// A position in the arena to return to.
  struct mark {
    std::size_t block = 0, used = 0;
  };

  void* allocate(std::size_t bytes) {
    bytes = round_up(std::max<std::size_t>(bytes, 1));
    while (current_ < blocks_.size()) {
      block& b = blocks_[current_];
      if (b.capacity - b.used >= bytes) {
        void* p = static_cast<char*>(b.data) + b.used;
        b.used += bytes;
        return p;
      }
      if (current_ + 1 == blocks_.size()) break;
      ++current_;  // later blocks are empty (LIFO): move on
    }
    const std::size_t last = blocks_.empty() ? 0 : blocks_.back().capacity;
    const std::size_t capacity = std::max({bytes, 2 * last, min_block_bytes});
    blocks_.push_back({device_traits<D>::allocate(capacity), capacity, bytes});
    current_ = blocks_.size() - 1;
    ++device_allocations_;
    return blocks_.back().data;
  }

  mark position() const noexcept {
    if (blocks_.empty()) return {};
    return {current_, blocks_[current_].used};
  }

  void release(mark m) noexcept {
    if (blocks_.empty()) return;
    for (std::size_t i = m.block + 1; i < blocks_.size(); ++i) blocks_[i].used = 0;
    blocks_[m.block].used = m.used;
    current_ = m.block;
    if (m.block == 0 && m.used == 0 && blocks_.size() > 1) merge_blocks();
  }

  /// Number of device allocations made so far (tests use it to prove a pass allocates nothing).
  std::size_t device_allocations() const noexcept { return device_allocations_; }
  std::size_t capacity() const noexcept {
    std::size_t c = 0;
    for (const block& b : blocks_) c += b.capacity;
    return c;
  }

 private:
  struct block {
    void* data;
    std::size_t capacity, used;
  };
  static constexpr std::size_t min_block_bytes = std::size_t{1} << 20;
  static std::size_t round_up(std::size_t n) noexcept { return (n + 63) & ~std::size_t{63}; }

  void merge_blocks() noexcept {
    const std::size_t total = capacity();
    free_blocks();
    try {
      blocks_.push_back({device_traits<D>::allocate(total), total, 0});
      ++device_allocations_;
    } catch (...) {  // out of memory: stay empty, the next pass grows again
    }
  }
  void free_blocks() noexcept {
    for (block& b : blocks_) device_traits<D>::deallocate(b.data);
    blocks_.clear();
    current_ = 0;
  }

  std::vector<block> blocks_;
  std::size_t current_ = 0;
  std::size_t device_allocations_ = 0;
};

/// Per-device state a backend keeps in the context (empty on CPU; stream and handles on CUDA).
template <class D>
struct backend_state {};

/// Everything a forward pass needs besides the weights. Not thread-safe: one per thread.
template <class D>
class context {
 public:
  context() = default;
  context(const context&) = delete;
  context& operator=(const context&) = delete;

  /// Temporary storage from the arena, valid until the enclosing `scope` ends.
  template <class T>
  view<T, D> alloc(const shape& s) {
    const index_t n = s.numel();
    return view<T, D>(static_cast<T*>(arena_->allocate(static_cast<std::size_t>(n) * sizeof(T))), s);
  }

  /// RAII: everything allocated after its construction is released at its destruction.
  class scope {
   public:
    explicit scope(context& ctx) : arena_(*ctx.arena_), mark_(ctx.arena_->position()) {}
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;
    ~scope() { arena_.release(mark_); }

   private:
    workspace_arena<D>& arena_;
    typename workspace_arena<D>::mark mark_;
  };

  /// RAII: the context allocates from `other` instead of its arena until this ends. A pass recorded once and
  /// replayed (recorded_pass) keeps its scratch in an arena of its own, where the caller's passes can neither
  /// reuse nor move it between replays.
  class arena_swap {
   public:
    arena_swap(context& ctx, workspace_arena<D>& other) : ctx_(ctx), previous_(std::exchange(ctx.arena_, &other)) {}
    arena_swap(const arena_swap&) = delete;
    arena_swap& operator=(const arena_swap&) = delete;
    ~arena_swap() { ctx_.arena_ = previous_; }

   private:
    context& ctx_;
    workspace_arena<D>* previous_;
  };

  workspace_arena<D>& arena() noexcept { return *arena_; }
  backend_state<D>& backend() noexcept { return backend_; }

 private:
  workspace_arena<D> own_arena_;
  workspace_arena<D>* arena_ = &own_arena_;
  backend_state<D> backend_;
};

}  // namespace qformer
