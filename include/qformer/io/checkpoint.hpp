#pragma once
/// \file
/// Where weights come from. `weight_source` is the interface layers load through (via `weight_scope`);
/// `checkpoint` implements it over a Hub folder (single `model.safetensors` or a sharded folder driven by
/// `model.safetensors.index.json`); `random_weights` implements it with seeded noise for benchmarks.

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "safetensors.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace qformer {

/// Anything layers can read named tensors from.
class weight_source {
 public:
  virtual ~weight_source() = default;
  virtual bool contains(const std::string& name) const = 0;
  /// Reads `name`, converted to `target`, into dst (expected.numel() elements). Throws shape_error naming the
  /// file, the tensor and both shapes when the stored shape is not `expected`; load_error when it is missing.
  virtual void read(const std::string& name, const shape& expected, dtype target, void* dst) const = 0;
  /// Throws as read() would for a missing tensor or a wrong stored shape, without reading. Loaders call it
  /// before allocating, so a config that claims absurd sizes fails on the first tensor, not in the allocator.
  virtual void check(const std::string& name, const shape& expected) const = 0;
};

/// Loads a layer's tensors under a name prefix: `scope / "layers" / 3` names "layers.3".
class weight_scope {
 public:
  weight_scope(const weight_source& source, std::string prefix = {}) : source_(&source), prefix_(std::move(prefix)) {}

  weight_scope operator/(const std::string& child) const { return weight_scope(*source_, name(child)); }
  weight_scope operator/(index_t index) const { return *this / std::to_string(index); }

  /// Full tensor name of a leaf in this scope.
  std::string name(const std::string& leaf) const { return prefix_.empty() ? leaf : prefix_ + "." + leaf; }
  const std::string& prefix() const noexcept { return prefix_; }
  bool has(const std::string& leaf) const { return source_->contains(name(leaf)); }
  /// Throws (load_error / shape_error) unless leaf is stored with shape `expected`; reads nothing.
  void check(const std::string& leaf, const shape& expected) const { source_->check(name(leaf), expected); }

  /// Reads leaf into a new tensor on device D, checking its stored shape.
  template <class T, class D = cpu>
  tensor<T, D> load(const std::string& leaf, const shape& expected) const {
    source_->check(name(leaf), expected);
    tensor<T, cpu> host(expected);
    source_->read(name(leaf), expected, safetensors_file::tag_of<T>(), host.data());
    return to_device<T, D>(std::move(host));
  }
  /// Reads leaf into existing host memory (expected.numel() elements of T).
  template <class T>
  void load_into(const std::string& leaf, const shape& expected, T* dst) const {
    source_->read(name(leaf), expected, safetensors_file::tag_of<T>(), dst);
  }

 private:
  const weight_source* source_;
  std::string prefix_;
};

/// A Hub model folder's weights (or one .safetensors file), memory-mapped. Records which tensors were read so
/// that loaders can report the ones nothing used.
class checkpoint final : public weight_source {
 public:
  /// `path`: a folder with model.safetensors.index.json or model.safetensors, or a .safetensors file.
  explicit checkpoint(const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      const fs::path index = fs::path(path) / "model.safetensors.index.json";
      const fs::path single = fs::path(path) / "model.safetensors";
      if (fs::exists(index, ec)) open_index(index.string());
      else if (fs::exists(single, ec)) add_file(single.string(), nullptr);
      else throw load_error(path, "no model.safetensors or model.safetensors.index.json in this folder");
    } else if (fs::exists(path, ec)) {
      add_file(path, nullptr);
    } else {
      throw load_error(path, "no such file or folder");
    }
  }

  bool contains(const std::string& name) const override { return by_name_.count(name) != 0; }

  void read(const std::string& name, const shape& expected, dtype target, void* dst) const override {
    check(name, expected);
    const auto& [file, entry] = locate(name);
    file->read(*entry, target, dst);
    used_.insert(name);
  }

  void check(const std::string& name, const shape& expected) const override {
    const auto& [file, entry] = locate(name);
    if (!(entry->dims == expected))
      throw shape_error(file->path() + ": tensor '" + name + "' has shape " + entry->dims.str() + ", expected " +
                        expected.str());
  }

  /// The stored entry of a tensor (dtype, shape, offsets) and the file holding it.
  const tensor_entry& entry(const std::string& name) const { return *locate(name).second; }
  const std::string& file_of(const std::string& name) const { return locate(name).first->path(); }

  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& [n, _] : by_name_) out.push_back(n);
    std::sort(out.begin(), out.end());
    return out;
  }
  /// Tensors nobody has read so far, sorted.
  std::vector<std::string> unused() const {
    std::vector<std::string> out;
    for (const auto& n : names())
      if (!used_.count(n)) out.push_back(n);
    return out;
  }
  const std::vector<std::unique_ptr<safetensors_file>>& files() const noexcept { return files_; }

 private:
  using location = std::pair<const safetensors_file*, const tensor_entry*>;

  const location& locate(const std::string& name) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) {
      std::string where = files_.size() == 1 ? files_[0]->path() : index_path_;
      throw load_error(where, "tensor '" + name + "' is missing");
    }
    return it->second;
  }

  void add_file(const std::string& path, const std::set<std::string>* only) {
    files_.push_back(std::make_unique<safetensors_file>(path));
    const safetensors_file* f = files_.back().get();
    for (const auto& e : f->entries())
      if (!only || only->count(e.name)) by_name_[e.name] = {f, &e};
  }

  void open_index(const std::string& index_path) {
    namespace fs = std::filesystem;
    index_path_ = index_path;
    nlohmann::json j;
    {
      std::ifstream in(index_path, std::ios::binary);
      if (!in) throw load_error(index_path, "cannot open");
      try {
        j = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& ex) {
        throw load_error(index_path, std::string("not valid JSON: ") + ex.what());
      }
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw load_error(index_path, "no 'weight_map' object");
    std::map<std::string, std::set<std::string>> by_shard;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it->is_string()) throw load_error(index_path, "weight_map entry '" + it.key() + "' is not a file name");
      const std::string shard = it->get<std::string>();
      // Shards are plain file names beside the index: nothing may reach outside the model folder.
      if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
          shard == "." || shard == "..")
        throw load_error(index_path, "weight_map entry '" + it.key() + "' names shard '" + shard +
                                         "', which is not a plain file name in the model folder");
      by_shard[shard].insert(it.key());
    }
    const fs::path folder = fs::path(index_path).parent_path();
    for (const auto& [shard, tensors] : by_shard) {
      const std::string shard_path = (folder / shard).string();
      std::error_code ec;
      if (!fs::exists(shard_path, ec))
        throw load_error(index_path, "shard '" + shard + "' (named for tensor '" + *tensors.begin() + "') does not exist");
      add_file(shard_path, &tensors);
      for (const auto& t : tensors)
        if (!files_.back()->find(t))
          throw load_error(shard_path, "tensor '" + t + "' is listed in " + index_path + " but missing from this shard");
    }
  }

  std::vector<std::unique_ptr<safetensors_file>> files_;
  std::string index_path_;
  std::unordered_map<std::string, location> by_name_;
  mutable std::set<std::string> used_;
};

/// Seeded Gaussian weights of whatever shape is asked for: full-size models for benchmarks, no file needed.
/// Names ending in "LayerNorm.weight", "layernorm.weight" or "layer_norm*.weight" get 1 + noise.
class random_weights final : public weight_source {
 public:
  explicit random_weights(std::uint64_t seed = 0, float stddev = 0.02f) : seed_(seed), stddev_(stddev) {}
  bool contains(const std::string& name) const override {
    return name.find("q_bias") == std::string::npos && name.find("v_bias") == std::string::npos;  // fused qkv.bias
  }
  /// Uniform noise of standard deviation `stddev` (norm weights: around 1), counter-based (splitmix64 of the
  /// seed, the name and the index), so full-size models fill fast and in any order; converted in chunks.
  void read(const std::string& name, const shape& expected, dtype target, void* dst) const override {
    const std::uint64_t stream = seed_ ^ (std::hash<std::string>{}(name) * 0x9E3779B97F4A7C15ull);
    const bool norm_weight = (name.find("orm") != std::string::npos) && name.ends_with(".weight");
    const float half_width = stddev_ * 1.7320508f, centre = norm_weight ? 1.0f : 0.0f;  // uniform: sd = w / sqrt(3)
    const std::size_t n = static_cast<std::size_t>(expected.numel()), chunk = std::size_t{1} << 16;
    std::vector<float> values(std::min(n, chunk));
    for (std::size_t begin = 0; begin < n; begin += chunk) {
      const std::size_t count = std::min(chunk, n - begin);
      for (std::size_t i = 0; i < count; ++i) {
        std::uint64_t z = stream + (begin + i + 1) * 0x9E3779B97F4A7C15ull;  // splitmix64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        const float unit = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        values[i] = centre + half_width * (2.0f * unit - 1.0f);
      }
      detail::convert_elements(reinterpret_cast<const std::byte*>(values.data()), dtype::f32,
                               static_cast<std::byte*>(dst) + begin * dtype_size(target), target, count, "random", name);
    }
  }
  void check(const std::string&, const shape&) const override {}  // any name, any shape

 private:
  std::uint64_t seed_;
  float stddev_;
};

}  // namespace qformer
