#pragma once
// What `qformer bench` is asked for and what it measures, shared by the CPU run (bench_command.hpp) and the CUDA
// run (bench_cuda.cu, compiled by nvcc when the build has QFORMER_CUDA): no nlohmann, no stb here.

#include <qformer/generate/options.hpp>
#include <qformer/models/config.hpp>
#include <qformer/models/opt.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace bench_command {

struct settings {
  std::vector<std::string> stages{"vision", "qformer", "decode", "caption"};
  std::vector<qformer::index_t> batches{1, 8};
  std::vector<std::string> dtypes{"f32", "bf16"};
  int repeats = 3;
  int threads = 1;
  qformer::index_t new_tokens = 30;
  bool json = false;
  std::string device = "cpu";  // or "cuda"
};

struct result {
  std::string stage, dtype;
  qformer::index_t batch = 0;
  std::vector<double> seconds;
  double work = 0;           // FLOPs (vision, qformer) or bytes of weights read (decode); 0 for caption
  std::string work_unit;     // "GFLOP/s", "GB/s" or ""
  double peak = 0;           // the probe's figure in the same unit, 0 if none
  double min() const { return *std::min_element(seconds.begin(), seconds.end()); }
  double median() const {
    std::vector<double> s = seconds;
    std::sort(s.begin(), s.end());
    return s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
  }
  double rate() const { return work > 0 ? work / min() * 1e-9 : 0; }
};

/// The caption stage's decoding: greedy, exactly `new_tokens` tokens after BOS, one row per image.
inline qformer::generation_options caption_options(const qformer::Blip2Config& config, qformer::index_t new_tokens) {
  qformer::generation_options options;
  options.max_new_tokens = options.min_new_tokens = new_tokens;
  options.eos_token_ids = {config.text.eos_token_id()};
  options.pad_token_id = config.text.pad_token_id();
  return options;
}
inline qformer::token_batch caption_prompt(const qformer::Blip2Config& config, qformer::index_t batch) {
  return qformer::token_batch::unpadded(batch, 1, std::vector<std::int64_t>(static_cast<std::size_t>(batch), config.text.bos_token_id()));
}

/// The CUDA run (bench_cuda.cu): the stages on the first GPU, bf16 (the Q-Former in fp32, as transformers keeps
/// it). `device` receives the GPU's name. Only in builds with QFORMER_CUDA.
std::vector<result> run_cuda(const settings& s, std::string& device);

}  // namespace bench_command
