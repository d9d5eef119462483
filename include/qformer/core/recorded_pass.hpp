#pragma once
/// \file
/// recorded_pass<D>: a pass recorded once and replayed many times, reading its varying inputs from device buffers
/// that the caller refills before each replay (OPTSession's decoding steps). On the CPU the pass itself is kept and
/// run again at each replay; backends/cuda/graph.hpp specialises it for CUDA as a captured graph, where a replay
/// is one launch instead of the pass's few hundred kernels.
///
/// record() does not run the pass. Run it once first (so that the arena it allocates from has reached its size
/// and every one-time choice, such as cuBLASLt's algorithms, is made), then record, then replay.

#include "context.hpp"

#include <functional>
#include <utility>

namespace qformer {

template <class D>
class recorded_pass {
 public:
  bool recorded() const noexcept { return static_cast<bool>(pass_); }
  template <class Pass>
  void record(context<D>&, Pass&& pass) {
    pass_ = std::forward<Pass>(pass);
  }
  void replay(context<D>& ctx) const { pass_(ctx); }
  void reset() noexcept { pass_ = nullptr; }

 private:
  std::function<void(context<D>&)> pass_;
};

}  // namespace qformer
