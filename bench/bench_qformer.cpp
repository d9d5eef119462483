// The Q-Former at full BLIP-2 size (12 layers, 32 queries, width 768, cross-attention to 257 x 1408 image
// tokens every 2nd layer) with random weights, at batch 1 and 8. Reports time and GFLOP/s.

#include "bench_common.hpp"

namespace {

using namespace qformer;

template <class T>
void BM_qformer(benchmark::State& state) {
  const Blip2Config c = bench::blip2_opt_2_7b();
  QFormer<T> qformer(c.qformer, c.num_query_tokens);
  random_weights weights(2);
  qformer.load(weight_scope(weights), weight_scope(weights) / "qformer");
  const index_t batch = state.range(0), image_tokens = c.vision.num_positions();
  tensor<T> image = tensor<T>({batch, image_tokens, c.vision.hidden_size});
  for (index_t i = 0; i < image.numel(); ++i) image.data()[i] = from_float<T>(float((i * 7919) % 255) / 127.5f - 1.0f);
  context<cpu> ctx;
  {
    typename context<cpu>::scope scope(ctx);
    bench::require_sane<T>(qformer(ctx, image.get()), "qformer");
  }
  for (auto _ : state) {
    typename context<cpu>::scope scope(ctx);
    benchmark::DoNotOptimize(qformer(ctx, image.get()).data());
  }
  bench::report_flops<T>(state, presets::qformer_flops(c.qformer, double(c.num_query_tokens), double(image_tokens), double(batch)));
}

BENCHMARK(BM_qformer<float>)->Name("qformer/f32")->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond)->Repetitions(3);
BENCHMARK(BM_qformer<bf16>)->Name("qformer/bf16")->Arg(1)->Unit(benchmark::kMillisecond)->Repetitions(2);

}  // namespace

BENCHMARK_MAIN();
