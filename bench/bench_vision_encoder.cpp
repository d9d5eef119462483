// The ViT-g/14 vision tower at full BLIP-2 size (39 blocks, 257 tokens, width 1408) with random weights.
// Reports time per batch and GFLOP/s (one image takes seconds on 2 cores: few iterations).

#include "bench_common.hpp"

namespace {

using namespace qformer;

template <class T>
void BM_vision_encoder(benchmark::State& state) {
  const VisionConfig c = bench::blip2_opt_2_7b().vision;
  VisionEncoder<T> vision(c);
  random_weights weights(1);
  vision.load(weight_scope(weights) / "vision_model");
  const index_t batch = state.range(0);
  tensor<float> pixels({batch, 3, c.image_size, c.image_size});
  for (index_t i = 0; i < pixels.numel(); ++i) pixels.data()[i] = float((i * 7919) % 255) / 127.5f - 1.0f;
  context<cpu> ctx;
  {
    typename context<cpu>::scope scope(ctx);
    bench::require_sane<T>(vision(ctx, pixels.get()), "vision encoder");
  }
  for (auto _ : state) {
    typename context<cpu>::scope scope(ctx);
    benchmark::DoNotOptimize(vision(ctx, pixels.get()).data());
  }
  bench::report_flops<T>(state, presets::vision_flops(c, double(batch)));
  state.counters["images/s"] = benchmark::Counter(double(batch), benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_vision_encoder<float>)->Name("vision_encoder/f32")->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(2)->Repetitions(3)->ReportAggregatesOnly(false);
BENCHMARK(BM_vision_encoder<bf16>)->Name("vision_encoder/bf16")->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(1)->Repetitions(2);

}  // namespace

BENCHMARK_MAIN();
