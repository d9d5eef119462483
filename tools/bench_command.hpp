#pragma once
// `qformer bench`: BLIP-2 at full size (blip2-opt-2.7b shapes) with random weights made in process. Stages:
//   vision   the ViT-g/14 tower on B 224 px images
//   qformer  the Q-Former's 32 queries over B images' 257 x 1408 vision tokens
//   decode   one OPT-2.7b decode step for B rows after a prompt of the 32 queries + 8 tokens
//   caption  the whole caption of B images: vision, Q-Former, projection, 30 new tokens (min = max = 30)
// Each prints min / median ms over --repeats timed runs (after one untimed run that also checks the output is
// finite), GFLOP/s or GB/s, and the fraction of this machine's peak measured in the same run (peak_probe.hpp).

#include "bench_results.hpp"

#include <qformer/backends/cpu/peak_probe.hpp>
#include <qformer/models/presets.hpp>
#include <qformer/qformer.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace bench_command {

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

template <class T>
void require_finite(qformer::view<const T> v, const char* what) {
  for (qformer::index_t r = 0; r < v.rows(); ++r)
    for (qformer::index_t c = 0; c < v.cols(); ++c)
      if (!std::isfinite(qformer::to_float(v.row(r)[c])))
        throw qformer::error(std::string("bench: ") + what + " gave a non-finite value");
}

/// One untimed run, then `repeats` timed ones.
inline std::vector<double> time_runs(int repeats, const std::function<void()>& run) {
  run();
  std::vector<double> out;
  for (int i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return out;
}

/// Deterministic pixels in [-1, 1] (the processor's range), (B, 3, H, W).
inline qformer::tensor<float> test_pixels(qformer::index_t batch, qformer::index_t size) {
  qformer::tensor<float> px({batch, 3, size, size});
  for (qformer::index_t i = 0; i < px.numel(); ++i) px.data()[i] = float((i * 7919) % 255) / 127.5f - 1.0f;
  return px;
}

/// T: the activations' and weights' type; int8: the language model's Linears and head quantised (bf16 elsewhere).
template <class T>
void run_dtype(const settings& s, const std::string& dtype_name, const qformer::probe::machine_peaks& peaks,
               std::vector<result>& results, bool int8 = false) {
  using namespace qformer;
  const Blip2Config config = presets::blip2_opt_2_7b();
  auto want = [&](const char* stage) { return std::find(s.stages.begin(), s.stages.end(), stage) != s.stages.end(); };
  // The whole model when captions are timed; otherwise only the parts the stages need (fp32 OPT-2.7b is 10.6 GB).
  const auto t0 = std::chrono::steady_clock::now();
  random_weights weights(7);
  const weight_scope root(weights);
  std::optional<Blip2<T>> model;
  std::optional<VisionEncoder<T>> own_vision;
  std::optional<QFormer<float>> own_qformer;
  std::optional<OPTForCausalLM<T>> own_lm;
  if (want("caption")) {
    model.emplace(config);
    model->load(root);
    if (int8) model->quantize_language_model_int8();
  } else {
    if (want("vision")) own_vision.emplace(config.vision), own_vision->load(root / "vision_model");
    if (want("qformer")) own_qformer.emplace(config.qformer, config.num_query_tokens), own_qformer->load(root, root / "qformer");
    if (want("decode")) {
      own_lm.emplace(config.text.opt);
      own_lm->load(root / "language_model");
      if (int8) own_lm->quantize_int8();
    }
  }
  const VisionEncoder<T>* vision = model ? &model->vision() : own_vision ? &*own_vision : nullptr;
  const QFormer<float>* qformer = model ? &model->qformer() : own_qformer ? &*own_qformer : nullptr;
  const OPTForCausalLM<T>* lm = model ? model->opt() : own_lm ? &*own_lm : nullptr;
  std::fprintf(stderr, "bench: blip2-opt-2.7b %s parts with random weights made in %.1f s\n", dtype_name.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  // The peak of the instruction the GEMMs use: FMA for fp32, AMX tiles for bf16 where the CPU has them.
  const double compute_peak = std::is_same_v<T, float> ? peaks.fp32_gflops
                              : peaks.amx_bf16_gflops > 0 && cpu_detail::use_amx_kernels() ? peaks.amx_bf16_gflops
                                                                                            : peaks.bf16_gflops;
  const double lm_bytes = presets::opt_parameters(config.text.opt) * (int8 ? 1.0 : double(sizeof(T)));
  context<cpu> ctx;

  for (const index_t B : s.batches) {
    const tensor<float> pixels = test_pixels(B, config.vision.image_size);
    auto add = [&](const char* stage, std::vector<double> seconds, double work, const char* unit, double peak) {
      result r{stage, dtype_name, B, std::move(seconds), work, unit, peak};
      std::fprintf(stderr, "bench: %-8s %-4s batch %lld: min %.1f ms, median %.1f ms\n", stage, dtype_name.c_str(),
                   (long long)B, r.min() * 1e3, r.median() * 1e3);
      results.push_back(std::move(r));
    };
    if (want("vision")) {
      auto run = [&] {
        typename context<cpu>::scope scope(ctx);
        require_finite<T>((*vision)(ctx, pixels.get()), "vision");
      };
      add("vision", time_runs(s.repeats, run), presets::vision_flops(config.vision, double(B)), "GFLOP/s", compute_peak);
    }
    if (want("qformer")) {
      // The Q-Former runs in fp32 whatever T is (transformers keeps it fp32): its input is cast at the boundary.
      tensor<float> image({B, config.vision.num_positions(), config.vision.hidden_size});
      for (index_t i = 0; i < image.numel(); ++i) image.data()[i] = float((i * 7919) % 255) / 127.5f - 1.0f;
      auto run = [&] {
        typename context<cpu>::scope scope(ctx);
        require_finite<float>((*qformer)(ctx, image.get()), "qformer");
      };
      add("qformer", time_runs(s.repeats, run),
          presets::qformer_flops(config.qformer, double(config.num_query_tokens), double(config.vision.num_positions()), double(B)),
          "GFLOP/s", peaks.fp32_gflops);
    }
    if (want("decode")) {
      const index_t prompt = config.num_query_tokens + 8, W = config.text.hidden_size;
      tensor<T> embeds({B, prompt, W});
      for (index_t i = 0; i < embeds.numel(); ++i) embeds.data()[i] = from_float<T>(float((i * 7919) % 255) / 2550.0f - 0.05f);
      const std::vector<std::int64_t> mask(static_cast<std::size_t>(B * prompt), 1);
      OPTSession<T> session(*lm, B, prompt + s.repeats + 2);
      {
        typename context<cpu>::scope scope(ctx);
        session.prefill(ctx, embeds.get(), mask);
      }
      const std::vector<std::int64_t> tokens(static_cast<std::size_t>(B), 2);
      auto run = [&] {
        typename context<cpu>::scope scope(ctx);
        require_finite<float>(session.step(ctx, tokens), "decode step");
      };
      add("decode", time_runs(s.repeats, run), lm_bytes, "GB/s", peaks.read_gbps);
    }
    if (want("caption")) {
      const generation_options options = caption_options(config, s.new_tokens);
      const token_batch prompt = caption_prompt(config, B);
      auto run = [&] {
        typename context<cpu>::scope scope(ctx);
        const image_features<T, cpu> f = model->encode_image(ctx, pixels.get());
        const generation_result g = model->generate(ctx, f.language_projection, prompt, options);
        if (g.length != s.new_tokens) throw error("bench: the caption has " + std::to_string(g.length) + " tokens");
      };
      add("caption", time_runs(s.repeats, run), 0, "", 0);
    }
  }
}

/// `--json`: the machine (filled in by the caller), the model and every result, as one document on stdout.
inline void print_json(nlohmann::json& j, const std::vector<result>& results) {
  j["model"] = "blip2-opt-2.7b shapes, random weights";
  j["results"] = nlohmann::json::array();
  for (const result& r : results)
    j["results"].push_back({{"stage", r.stage}, {"dtype", r.dtype}, {"batch", r.batch}, {"seconds", r.seconds},
                            {"min_ms", r.min() * 1e3}, {"median_ms", r.median() * 1e3}, {"rate", r.rate()}, {"rate_unit", r.work_unit},
                            {"fraction_of_peak", r.peak > 0 ? r.rate() / r.peak : 0.0}});
  std::printf("%s\n", j.dump(1).c_str());
}

/// The GPU run's table or JSON (no CPU probes: the rates are absolute).
inline int run_on_gpu(const settings& s) {
#if defined(QFORMER_WITH_CUDA)
  std::string gpu;
  const std::vector<result> results = run_cuda(s, gpu);
  if (s.json) {
    nlohmann::json j;
    j["machine"] = {{"gpu", gpu}, {"device", "cuda"}};
    print_json(j, results);
    return 0;
  }
  std::printf("%s\n%-14s %-5s %5s %11s %11s %14s\n", gpu.c_str(), "stage", "dtype", "batch", "min ms", "median ms", "rate");
  for (const result& r : results) {
    char rate[32] = "";
    if (r.work > 0) std::snprintf(rate, sizeof rate, "%.1f %s", r.rate(), r.work_unit.c_str());
    std::printf("%-14s %-5s %5lld %11.3f %11.3f %14s\n", r.stage.c_str(), r.dtype.c_str(), (long long)r.batch, r.min() * 1e3,
                r.median() * 1e3, rate);
  }
  return 0;
#else
  (void)s;
  throw qformer::invalid_argument("--device cuda: this qformer was built without the CUDA backend (configure with -DQFORMER_CUDA=ON)");
#endif
}

inline int run(const settings& s) {
  if (s.device == "cuda") return run_on_gpu(s);
  qformer::require_compiled_cpu_features();
  const qformer::probe::machine_peaks peaks = qformer::probe::measure(s.threads);
  std::fprintf(stderr, "bench: %s, %d threads: fp32 FMA %.0f GFLOP/s, bf16 dot %.0f GFLOP/s, AMX bf16 %.0f GFLOP/s, read %.1f GB/s\n",
               cpu_model().c_str(), s.threads, peaks.fp32_gflops, peaks.bf16_gflops, peaks.amx_bf16_gflops, peaks.read_gbps);
  std::vector<result> results;
  for (const std::string& d : s.dtypes) {
    if (d == "f32") run_dtype<float>(s, d, peaks, results);
    else if (d == "bf16") run_dtype<qformer::bf16>(s, d, peaks, results);
    else if (d == "int8") run_dtype<qformer::bf16>(s, d, peaks, results, true);
  }
  if (s.json) {
    nlohmann::json j;
    j["machine"] = {{"cpu", cpu_model()}, {"threads", s.threads}, {"features", qformer::host_cpu().describe()},
                    {"fp32_fma_gflops", peaks.fp32_gflops}, {"bf16_dot_gflops", peaks.bf16_gflops}, {"amx_bf16_gflops", peaks.amx_bf16_gflops},
                    {"read_gbps", peaks.read_gbps}};
    print_json(j, results);
    return 0;
  }
  std::printf("%-8s %-5s %5s %11s %11s %12s %9s\n", "stage", "dtype", "batch", "min ms", "median ms", "rate", "of peak");
  for (const result& r : results) {
    char rate[32] = "", frac[16] = "";
    if (r.work > 0) std::snprintf(rate, sizeof rate, "%.1f %s", r.rate(), r.work_unit.c_str());
    if (r.peak > 0) std::snprintf(frac, sizeof frac, "%.0f %%", 100 * r.rate() / r.peak);
    std::printf("%-8s %-5s %5lld %11.1f %11.1f %12s %9s\n", r.stage.c_str(), r.dtype.c_str(), (long long)r.batch,
                r.min() * 1e3, r.median() * 1e3, rate, frac);
  }
  return 0;
}

}  // namespace bench_command
