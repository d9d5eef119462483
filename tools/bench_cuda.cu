// `qformer bench --device cuda`: the stages of bench_command.hpp on the first GPU, blip2-opt-2.7b shapes with
// random weights made in process. bf16 (the Q-Former in fp32, as transformers keeps it; --dtypes f32 runs
// everything in fp32). Each stage: one untimed run, then --repeats timed runs, each ended by a stream
// synchronisation; vision and qformer are also timed as a replayed CUDA graph (stages "vision_graph",
// "qformer_graph"), which removes the launch gaps of their few hundred kernels, and a decoding step both with
// every kernel launched ("decode") and replayed from the OPT session's recorded step ("decode_graph", what
// generation uses on the GPU); "qformer_T_graph" is the
// Q-Former run in the dtype itself (bf16), for comparison only: BLIP-2 keeps it fp32.

// This file is also where the CLI's CUDA kernels live: `qformer caption / vqa --device cuda` (qformer.cpp, g++)
// runs Blip2Pipeline<T, cuda> through the launchers instantiated here.
#define QFORMER_CUDA_INSTANTIATE_KERNELS
#include "bench_results.hpp"

#include <qformer/cuda.hpp>
#include <qformer/models/presets.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>

namespace bench_command {

namespace {

using namespace qformer;

std::vector<double> time_runs(context<cuda>& ctx, int repeats, const std::function<void()>& run) {
  run();
  ctx.backend().synchronize();
  std::vector<double> out;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    ctx.backend().synchronize();
    out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return out;
}

/// Throws unless every value of a device tensor is finite (the benchmark's output check).
template <class U>
void require_finite(context<cuda>& ctx, view<U, cuda> v, const std::string& what) {
  using T = std::remove_const_t<U>;
  tensor<T> host(v.shape());
  ops::download<T, cuda>(ctx, v, host.mut());
  for (index_t i = 0; i < host.numel(); ++i)
    if (!std::isfinite(to_float(host.data()[i]))) throw error(std::string("bench: ") + what + " gave a non-finite value");
}

template <class T>
tensor<T, cuda> pattern(const shape& s, float scale, float offset) {
  tensor<T> host(s);
  for (index_t i = 0; i < host.numel(); ++i) host.data()[i] = from_float<T>(float((i * 7919) % 255) * scale + offset);
  return to_device<T, cuda>(host);
}

template <class T>
void run_dtype(const settings& s, const std::string& dtype_name, std::vector<result>& results) {
  const Blip2Config config = presets::blip2_opt_2_7b();
  auto want = [&](const char* stage) { return std::find(s.stages.begin(), s.stages.end(), stage) != s.stages.end(); };
  const auto t0 = std::chrono::steady_clock::now();
  random_weights weights(7);
  const weight_scope root(weights);
  // The whole model when captions are timed; otherwise only the parts the stages need.
  std::optional<Blip2<T, cuda>> model;
  std::optional<VisionEncoder<T, cuda>> own_vision;
  std::optional<QFormer<float, cuda>> own_qformer;
  std::optional<OPTForCausalLM<T, cuda>> own_lm;
  if (want("caption")) {
    model.emplace(config);
    model->load(root);
  } else {
    if (want("vision")) own_vision.emplace(config.vision), own_vision->load(root / "vision_model");
    if (want("qformer")) own_qformer.emplace(config.qformer, config.num_query_tokens), own_qformer->load(root, root / "qformer");
    if (want("decode")) own_lm.emplace(config.text.opt), own_lm->load(root / "language_model");
  }
  const VisionEncoder<T, cuda>* vision = model ? &model->vision() : own_vision ? &*own_vision : nullptr;
  const QFormer<float, cuda>* qformer = model ? &model->qformer() : own_qformer ? &*own_qformer : nullptr;
  const OPTForCausalLM<T, cuda>* lm = model ? model->opt() : own_lm ? &*own_lm : nullptr;
  std::fprintf(stderr, "bench: blip2-opt-2.7b %s on the GPU, random weights made and copied in %.1f s\n", dtype_name.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  const double lm_bytes = presets::opt_parameters(config.text.opt) * double(sizeof(T));
  context<cuda> ctx;

  for (const index_t B : s.batches) {
    auto add = [&](const std::string& stage, std::vector<double> seconds, double work, const char* unit) {
      result r{stage, dtype_name, B, std::move(seconds), work, unit, 0.0};
      std::fprintf(stderr, "bench: %-14s %-4s batch %lld: min %.3f ms, median %.3f ms\n", stage.c_str(), dtype_name.c_str(), (long long)B,
                   r.min() * 1e3, r.median() * 1e3);
      results.push_back(std::move(r));
    };
    // pass() eagerly (timed as `stage` when time_eager, else run once: the arena reaches its size), then recorded
    // once and replayed as a CUDA graph (`stage`_graph); the replayed output is checked.
    auto eager_then_graph = [&](const std::string& stage, auto pass, double flops, bool time_eager) {
      auto eager = [&] {
        typename context<cuda>::scope scope(ctx);
        pass();
      };
      if (time_eager) add(stage, time_runs(ctx, s.repeats, eager), flops, "GFLOP/s");
      else eager();
      typename context<cuda>::scope scope(ctx);
      decltype(pass()) out;
      const cuda_graph graph = cuda_graph::capture(ctx, [&] { out = pass(); });
      add(stage + "_graph", time_runs(ctx, s.repeats, [&] { graph.replay(ctx); }), flops, "GFLOP/s");
      require_finite(ctx, out, stage);
    };
    const tensor<float, cuda> pixels = pattern<float>({B, 3, config.vision.image_size, config.vision.image_size}, 1.0f / 127.5f, -1.0f);
    if (want("vision"))
      eager_then_graph("vision", [&] { return (*vision)(ctx, pixels.get()); }, presets::vision_flops(config.vision, double(B)), true);
    if (want("qformer")) {
      const double flops = presets::qformer_flops(config.qformer, double(config.num_query_tokens),
                                                  double(config.vision.num_positions()), double(B));
      const tensor<float, cuda> image = pattern<float>({B, config.vision.num_positions(), config.vision.hidden_size}, 1.0f / 127.5f, -1.0f);
      eager_then_graph("qformer", [&] { return (*qformer)(ctx, image.get()); }, flops, true);
      if constexpr (!std::is_same_v<T, float>) {  // for comparison: the Q-Former itself in T (not what BLIP-2 runs)
        QFormer<T, cuda> reduced(config.qformer, config.num_query_tokens);
        reduced.load(root, root / "qformer");
        const tensor<T, cuda> image_t = pattern<T>(image.shape(), 1.0f / 127.5f, -1.0f);
        eager_then_graph("qformer_T", [&] { return reduced(ctx, image_t.get()); }, flops, false);
      }
    }
    if (want("decode")) {
      const index_t prompt = config.num_query_tokens + 8, W = config.text.hidden_size;
      const tensor<T, cuda> embeds = pattern<T>({B, prompt, W}, 1.0f / 2550.0f, -0.05f);
      const std::vector<std::int64_t> mask(static_cast<std::size_t>(B * prompt), 1);
      const std::vector<std::int64_t> tokens(static_cast<std::size_t>(B), 2);
      for (const bool recorded : {false, true}) {  // "decode": every kernel launched; "decode_graph": replayed steps
        OPTSession<T, cuda> session(*lm, B, prompt + s.repeats + 2);
        session.record_steps(recorded);
        {
          typename context<cuda>::scope scope(ctx);
          session.prefill(ctx, embeds.get(), mask);
        }
        add(recorded ? "decode_graph" : "decode", time_runs(ctx, s.repeats, [&] {
              typename context<cuda>::scope scope(ctx);
              session.step(ctx, tokens);
            }), lm_bytes, "GB/s");
      }
    }
    if (want("caption")) {
      const generation_options options = caption_options(config, s.new_tokens);
      const token_batch prompt = caption_prompt(config, B);
      add("caption", time_runs(ctx, s.repeats, [&] {
            typename context<cuda>::scope scope(ctx);
            const image_features<T, cuda> f = model->encode_image(ctx, pixels.get());
            const generation_result g = model->generate(ctx, f.language_projection, prompt, options);
            if (g.length != s.new_tokens) throw error("bench: the caption has " + std::to_string(g.length) + " tokens");
          }), 0, "");
    }
  }
}

}  // namespace

std::vector<result> run_cuda(const settings& s, std::string& device) {
  if (!cuda_available()) throw error("bench --device cuda: no CUDA device is visible");
  cudaDeviceProp prop{};
  cuda_detail::check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  device = prop.name;
  std::vector<result> results;
  for (const std::string& d : s.dtypes) {
    if (d == "f32") run_dtype<float>(s, d, results);
    else if (d == "bf16") run_dtype<bf16>(s, d, results);
    else throw error("bench --device cuda: dtype '" + d + "' is not supported on the GPU (f32, bf16)");
  }
  return results;
}

}  // namespace bench_command
