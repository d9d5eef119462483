// A Linear layer alone at the shapes BLIP-2's image path runs (random operands): the GEMM that bounds the vision tower
// and the Q-Former. Reports GFLOP/s and the fraction of the FMA (fp32) or dot-product (bf16) peak probed in the
// same run; the target for fp32 is 80 % of that peak at the ViT shapes.

#include "bench_common.hpp"

namespace {

using namespace qformer;

/// y (rows, out) = x (rows, in) W^T + b with W (out, in).
template <class T, bool Int8 = false>
void BM_linear(benchmark::State& state) {
  const index_t rows = state.range(0), in = state.range(1), out = state.range(2);
  tensor<T> x({rows, in}), w({out, in}), b({out}), y({rows, out});
  auto fill = [](tensor<T>& t, unsigned seed) {
    for (index_t i = 0; i < t.numel(); ++i) t.data()[i] = T(float(int((i * 2654435761u + seed) % 2001u) - 1000) * 1e-3f);
  };
  fill(x, 1), fill(w, 2), fill(b, 3);
  Linear<T> layer(in, out);  // the layer, not ops::linear on a bare tensor: it stores the weight as models do
  layer.set(std::move(w), std::move(b));
  if constexpr (Int8) layer.quantize_int8();
  context<cpu> ctx;
  layer.forward(ctx, x.get(), y.mut());
  bench::require_sane<T>(y.get(), "linear");
  for (auto _ : state) {
    layer.forward(ctx, x.get(), y.mut());
    benchmark::DoNotOptimize(y.data());
  }
  const double ops = 2.0 * double(rows) * double(in) * double(out);
  if constexpr (Int8) {  // integer operations, and the weight bytes streamed (one per parameter)
    state.counters["GOP/s"] = benchmark::Counter(ops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["weights_GB/s"] = benchmark::Counter(double(in) * double(out) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  } else {
    bench::report_flops<T>(state, ops);
    state.counters["weights_GB/s"] =  // what bounds a GEMV
        benchmark::Counter(double(in) * double(out) * sizeof(T) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  }
}

/// ViT-g/14 at one image (257 tokens, width 1408, MLP 6144): qkv, attention output, fc1, fc2; then the Q-Former's
/// cross-attention key/value projection of the image (257 x 1408 -> 768) and a query-side projection (32 x 768).
void vit_and_qformer_shapes(benchmark::internal::Benchmark* b) {
  b->Args({257, 1408, 4224})->Args({257, 1408, 1408})->Args({257, 1408, 6144})->Args({257, 6144, 1408});
  b->Args({257, 1408, 768})->Args({32, 768, 768})->Args({32, 768, 3072});
  b->ArgNames({"rows", "in", "out"});
}

/// OPT-2.7b's Linears (width 2560, MLP 10240) at a caption's prefill (32 query tokens + BOS) and at a decoding
/// step of 8 captions and of one: the bf16 and int8 language models' GEMMs (AMX tiles where the CPU has them, else
/// avx512_bf16 / VNNI), bound by the weights streamed from memory.
void opt_shapes(benchmark::internal::Benchmark* b) {
  for (int rows : {33, 8, 1}) b->Args({rows, 2560, 2560})->Args({rows, 2560, 10240})->Args({rows, 10240, 2560});
  b->ArgNames({"rows", "in", "out"});
}

/// Weights far larger than the last-level cache (8 fc1s side by side: 210 M parameters), as a decoding step streams
/// OPT-2.7b's 2.65 G: the GEMV's bytes per second from memory, which the smaller shapes above partly read from L3.
void streamed_shapes(benchmark::internal::Benchmark* b) {
  for (int rows : {1, 4, 8}) b->Args({rows, 2560, 8 * 10240});
  b->ArgNames({"rows", "in", "out"});
}

BENCHMARK(BM_linear<float>)->Name("linear/f32")->Apply(vit_and_qformer_shapes)->Unit(benchmark::kMillisecond)->MinTime(0.5);
BENCHMARK(BM_linear<bf16>)->Name("linear/bf16")->Apply(vit_and_qformer_shapes)->Unit(benchmark::kMillisecond)->MinTime(0.5);
BENCHMARK(BM_linear<bf16>)->Name("linear/bf16")->Apply(opt_shapes)->Unit(benchmark::kMillisecond)->MinTime(0.5);
BENCHMARK(BM_linear<bf16, true>)->Name("linear/int8")->Apply(opt_shapes)->Unit(benchmark::kMillisecond)->MinTime(0.5);
BENCHMARK(BM_linear<bf16>)->Name("linear/bf16")->Apply(streamed_shapes)->Unit(benchmark::kMillisecond)->MinTime(0.5);
BENCHMARK(BM_linear<bf16, true>)->Name("linear/int8")->Apply(streamed_shapes)->Unit(benchmark::kMillisecond)->MinTime(0.5);

}  // namespace

BENCHMARK_MAIN();
