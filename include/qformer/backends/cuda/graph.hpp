#pragma once
/// \file
/// cuda_graph: a forward pass recorded once on the context's stream and replayed as one launch (cudaGraph), so a
/// pass of a few hundred small kernels (the Q-Former at batch 1) costs one launch instead of hundreds.
///
/// Rules of use: run the pass once eagerly first, so that the context's arena has reached its size (a capture
/// must not allocate device memory) and cuBLASLt has chosen its algorithms; inputs and outputs live at the
/// addresses the capture saw (copy new inputs into the same buffers before a replay, read outputs after it,
/// before anything else uses that arena memory). A pass that uploads host values (masks, token ids: the
/// language models) cannot be captured: the upload would be recorded with the values of the capture.

#include "../../core/recorded_pass.hpp"
#include "backend.hpp"

#include <utility>

namespace qformer {

class cuda_graph {
 public:
  cuda_graph() = default;
  cuda_graph(const cuda_graph&) = delete;
  cuda_graph& operator=(const cuda_graph&) = delete;
  cuda_graph(cuda_graph&& o) noexcept : graph_(std::exchange(o.graph_, nullptr)), exec_(std::exchange(o.exec_, nullptr)) {}
  cuda_graph& operator=(cuda_graph&& o) noexcept {
    std::swap(graph_, o.graph_);
    std::swap(exec_, o.exec_);
    return *this;
  }
  ~cuda_graph() {
    if (exec_) cudaGraphExecDestroy(exec_);
    if (graph_) cudaGraphDestroy(graph_);
  }

  /// Whether nothing was captured.
  bool empty() const noexcept { return exec_ == nullptr; }

  /// Records everything `pass()` enqueues on ctx's stream (nothing runs while recording).
  template <class Pass>
  static cuda_graph capture(context<cuda>& ctx, Pass&& pass) {
    cudaStream_t stream = ctx.backend().stream;
    cuda_detail::check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    cuda_graph g;
    try {
      pass();
    } catch (...) {
      cudaGraph_t broken = nullptr;
      cudaStreamEndCapture(stream, &broken);
      if (broken) cudaGraphDestroy(broken);
      throw;
    }
    cuda_detail::check(cudaStreamEndCapture(stream, &g.graph_), "cudaStreamEndCapture");
    cuda_detail::check(cudaGraphInstantiate(&g.exec_, g.graph_, 0), "cudaGraphInstantiate");
    return g;
  }

  /// Enqueues the recorded pass on ctx's stream.
  void replay(context<cuda>& ctx) const {
    if (!exec_) throw invalid_argument("cuda_graph::replay: nothing was captured");
    cuda_detail::check(cudaGraphLaunch(exec_, ctx.backend().stream), "cudaGraphLaunch");
  }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

/// recorded_pass on CUDA: the pass captured as a graph (core/recorded_pass.hpp says how to use it).
template <>
class recorded_pass<cuda> {
 public:
  bool recorded() const noexcept { return !graph_.empty(); }
  template <class Pass>
  void record(context<cuda>& ctx, Pass&& pass) {
    graph_ = cuda_graph::capture(ctx, [&] { pass(ctx); });
  }
  void replay(context<cuda>& ctx) const { graph_.replay(ctx); }
  void reset() noexcept { graph_ = cuda_graph(); }

 private:
  cuda_graph graph_;
};

}  // namespace qformer
