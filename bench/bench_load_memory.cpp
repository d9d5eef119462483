// Peak resident memory while loading a full-size BLIP-2 OPT-2.7b checkpoint (random weights, F32 on disk,
// ~15 GB, 4 shards + index, as on the Hub), in fp32 and in bf16.
//
//   bench_load_memory --make DIR          write the checkpoint (not committed; ~15 GB of disk)
//   bench_load_memory DIR [f32|bf16]      load it, print seconds, weight bytes and peak RSS
//
// Loading maps each shard and converts tensor by tensor, releasing the file pages it has read, so peak RSS
// should stay near the size of the converted weights rather than twice the checkpoint.

#include <qformer/qformer.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include <sys/resource.h>

namespace {

using namespace qformer;

constexpr const char* config_json = R"({
  "architectures": ["Blip2ForConditionalGeneration"], "model_type": "blip-2", "num_query_tokens": 32,
  "vision_config": {}, "qformer_config": {},
  "text_config": {"model_type": "opt", "hidden_size": 2560, "ffn_dim": 10240, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "vocab_size": 50304, "word_embed_proj_dim": 2560, "eos_token_id": 50118}
})";

/// Every tensor of Salesforce/blip2-opt-2.7b (blip2-spec.md section 7), in order.
std::vector<std::pair<std::string, shape>> blip2_opt_2_7b_tensors() {
  std::vector<std::pair<std::string, shape>> t;
  const index_t V = 1408, I = 6144, Q = 768, QI = 3072, O = 2560, OF = 10240;
  t.push_back({"vision_model.embeddings.class_embedding", {1, 1, V}});
  t.push_back({"vision_model.embeddings.position_embedding", {1, 257, V}});
  t.push_back({"vision_model.embeddings.patch_embedding.weight", {V, 3, 14, 14}});
  t.push_back({"vision_model.embeddings.patch_embedding.bias", {V}});
  for (int i = 0; i < 39; ++i) {
    const std::string p = "vision_model.encoder.layers." + std::to_string(i) + ".";
    for (const char* ln : {"layer_norm1", "layer_norm2"}) t.push_back({p + ln + ".weight", {V}}), t.push_back({p + ln + ".bias", {V}});
    t.push_back({p + "self_attn.qkv.weight", {3 * V, V}}), t.push_back({p + "self_attn.qkv.bias", {3 * V}});
    t.push_back({p + "self_attn.projection.weight", {V, V}}), t.push_back({p + "self_attn.projection.bias", {V}});
    t.push_back({p + "mlp.fc1.weight", {I, V}}), t.push_back({p + "mlp.fc1.bias", {I}});
    t.push_back({p + "mlp.fc2.weight", {V, I}}), t.push_back({p + "mlp.fc2.bias", {V}});
  }
  t.push_back({"vision_model.post_layernorm.weight", {V}}), t.push_back({"vision_model.post_layernorm.bias", {V}});
  t.push_back({"query_tokens", {1, 32, Q}});
  t.push_back({"qformer.layernorm.weight", {Q}}), t.push_back({"qformer.layernorm.bias", {Q}});
  auto linear = [&](const std::string& p, index_t out, index_t in) { t.push_back({p + ".weight", {out, in}}), t.push_back({p + ".bias", {out}}); };
  auto norm = [&](const std::string& p, index_t n) { t.push_back({p + ".weight", {n}}), t.push_back({p + ".bias", {n}}); };
  for (int i = 0; i < 12; ++i) {
    const std::string p = "qformer.encoder.layer." + std::to_string(i) + ".";
    for (const char* n : {"query", "key", "value"}) linear(p + "attention.attention." + n, Q, Q);
    linear(p + "attention.output.dense", Q, Q), norm(p + "attention.output.LayerNorm", Q);
    if (i % 2 == 0) {
      linear(p + "crossattention.attention.query", Q, Q);
      linear(p + "crossattention.attention.key", Q, V), linear(p + "crossattention.attention.value", Q, V);
      linear(p + "crossattention.output.dense", Q, Q), norm(p + "crossattention.output.LayerNorm", Q);
    }
    linear(p + "intermediate_query.dense", QI, Q), linear(p + "output_query.dense", Q, QI), norm(p + "output_query.LayerNorm", Q);
  }
  linear("language_projection", O, Q);
  t.push_back({"language_model.model.decoder.embed_tokens.weight", {50304, O}});
  t.push_back({"language_model.model.decoder.embed_positions.weight", {2050, O}});
  for (int i = 0; i < 32; ++i) {
    const std::string p = "language_model.model.decoder.layers." + std::to_string(i) + ".";
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) linear(p + "self_attn." + n, O, O);
    norm(p + "self_attn_layer_norm", O), norm(p + "final_layer_norm", O);
    linear(p + "fc1", OF, O), linear(p + "fc2", O, OF);
  }
  norm("language_model.model.decoder.final_layer_norm", O);
  return t;
}

int make(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << config_json;
  const auto tensors = blip2_opt_2_7b_tensors();
  const std::size_t shard_bytes = std::size_t{4} << 30;
  std::vector<std::vector<std::size_t>> shards(1);
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::size_t b = static_cast<std::size_t>(tensors[i].second.numel()) * 4;
    if (bytes + b > shard_bytes && !shards.back().empty()) shards.emplace_back(), bytes = 0;
    shards.back().push_back(i), bytes += b;
  }
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::size_t total = 0;
  for (std::size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    std::vector<std::vector<float>> data;
    std::vector<tensor_record> records;
    for (std::size_t i : shards[s]) {
      auto& v = data.emplace_back(static_cast<std::size_t>(tensors[i].second.numel()));
      for (float& x : v) x = normal(rng);
      records.push_back({tensors[i].first, dtype::f32, tensors[i].second, v.data()});
      index["weight_map"][tensors[i].first] = name;
      total += v.size() * 4;
    }
    write_safetensors((dir / name).string(), records);
    std::printf("wrote %s (%zu tensors)\n", name, records.size());
  }
  index["metadata"]["total_size"] = total;
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(1);
  std::printf("%zu tensors, %.2f GB\n", tensors.size(), double(total) / 1e9);
  return 0;
}

template <class T>
int load(const std::string& dir) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::string> unused;
  const Blip2<T> model = Blip2<T>::from_pretrained(dir, &unused);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::size_t file_bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") file_bytes += e.file_size();
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const double peak_gb = double(usage.ru_maxrss) * 1024.0 / 1e9;
  std::printf("dtype %s: loaded in %.1f s, checkpoint %.2f GB on disk, peak RSS %.2f GB (%.2fx the checkpoint), %zu tensors unused\n",
              dtype_traits<T>::name, seconds, double(file_bytes) / 1e9, peak_gb, peak_gb * 1e9 / double(file_bytes), unused.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc == 3 && std::string(argv[1]) == "--make") return make(argv[2]);
    if (argc >= 2) {
      const std::string dt = argc > 2 ? argv[2] : "f32";
      if (dt == "bf16") return load<bf16>(argv[1]);
      if (dt == "f32") return load<float>(argv[1]);
    }
    std::fprintf(stderr, "usage: bench_load_memory --make DIR | bench_load_memory DIR [f32|bf16]\n");
    return 2;
  } catch (const qformer::error& e) {
    std::fprintf(stderr, "bench_load_memory: %s\n", e.what());
    return 1;
  }
}
