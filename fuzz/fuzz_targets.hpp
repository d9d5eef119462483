#pragma once
/// \file
/// The bodies of qformer's fuzz targets, one function per parser. Each takes arbitrary bytes and must either
/// succeed or throw a qformer::error (typed, with a message); anything else -- a crash, a sanitizer report, an
/// exception of another type, a hang -- is a bug. They are compiled twice:
///   - fuzz/fuzz_<name>.cpp wraps one in LLVMFuzzerTestOneInput for clang's libFuzzer (+ ASan, UBSan);
///   - tests/test_fuzz_replay.cpp replays every committed seed and every input a fuzzer once crashed on
///     (fuzz/corpus/<name>/, fuzz/regressions/<name>/) through the same functions in the ordinary test build.
///
/// `data_dir` is tests/data (fixtures the targets need: valid tokenizers, shards for the index target).

#include <qformer/io/checkpoint.hpp>
#include <qformer/io/image.hpp>
#include <qformer/io/image_processor.hpp>
#include <qformer/io/safetensors.hpp>
#include <qformer/io/tokenizer.hpp>
#include <qformer/models/config.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unistd.h>
#include <vector>

namespace qformer::fuzz {

/// Runs `body`, letting qformer's typed errors through as the expected outcome of bad input.
template <class F>
void expect_typed_errors(F&& body) {
  try {
    body();
  } catch (const qformer::error&) {
  }
}

/// A safetensors file from memory: parse the header, then convert every tensor to f32 (and to its own dtype).
inline void safetensors_bytes(const std::uint8_t* data, std::size_t size) {
  expect_typed_errors([&] {
    const safetensors_file file(std::span(reinterpret_cast<const std::byte*>(data), size), "fuzz.safetensors");
    for (const tensor_entry& e : file.entries()) {
      std::vector<float> f32(static_cast<std::size_t>(e.dims.numel()));
      expect_typed_errors([&] { file.read(e, dtype::f32, f32.data()); });
      std::vector<std::byte> same(static_cast<std::size_t>(e.dims.numel()) * dtype_size(e.type));
      expect_typed_errors([&] { file.read(e, e.type, same.data()); });
    }
  });
}

/// A model folder whose model.safetensors.index.json is the input, beside the three valid shards of
/// tests/data/tiny-opt-sharded: open the checkpoint, then read every tensor it lists.
class index_folder {
 public:
  explicit index_folder(const std::string& data_dir) {
    namespace fs = std::filesystem;
    folder_ = fs::temp_directory_path() / ("qformer-fuzz-index-" + std::to_string(::getpid()));
    fs::create_directories(folder_);
    for (const auto& entry : fs::directory_iterator(fs::path(data_dir) / "tiny-opt-sharded"))
      if (entry.path().filename().string().starts_with("model-"))
        fs::copy_file(entry.path(), folder_ / entry.path().filename(), fs::copy_options::overwrite_existing);
  }
  index_folder(const index_folder&) = delete;
  index_folder& operator=(const index_folder&) = delete;
  ~index_folder() {
    std::error_code ec;
    std::filesystem::remove_all(folder_, ec);
  }

  void run(const std::uint8_t* data, std::size_t size) const {
    {
      std::ofstream out(folder_ / "model.safetensors.index.json", std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    }
    expect_typed_errors([&] {
      const checkpoint ck(folder_.string());
      for (const std::string& name : ck.names()) {
        const tensor_entry& e = ck.entry(name);
        std::vector<float> values(static_cast<std::size_t>(e.dims.numel()));
        ck.read(name, e.dims, dtype::f32, values.data());
      }
    });
  }

 private:
  std::filesystem::path folder_;
};

/// config.json (BLIP-2, every sub-config validated) and, from the same bytes, preprocessor_config.json.
inline void config_text(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  expect_typed_errors([&] { (void)parse_blip2_config(text, "config.json"); });
  expect_typed_errors([&] {
    const image_processor_config config = parse_image_processor_config(text, "preprocessor_config.json");
    if (config.do_resize && config.width * config.height <= 64 * 64) {  // small sizes only: keep runs fast
      const BlipImageProcessor processor(config);
      (void)processor(rgb_image(5, 3));
    }
  });
}

/// Tokenizers. First byte even: the rest is text, encoded (with and without special tokens) and the ids decoded
/// by one of the fixture tokenizers (chosen by the second byte). Odd: the rest is a tokenizer.json, loaded and,
/// if valid, used to encode and decode a few fixed strings.
class tokenizer_target {
 public:
  explicit tokenizer_target(const std::string& data_dir) {
    for (const char* name : {"bert", "bpe", "opt", "t5", "t5_legacy", "unigram", "wordlevel", "wordpiece",
                             "llama_byte_fallback", "metaspace_first", "split_regex"})
      fixtures_.push_back(tokenizer::from_file(data_dir + "/tokenizer/" + name + "_tokenizer.json"));
  }

  void run(const std::uint8_t* data, std::size_t size) const {
    if (size < 2) return;
    if (data[0] % 2 == 0) {
      const tokenizer& t = fixtures_[data[1] % fixtures_.size()];
      const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
      expect_typed_errors([&] {
        const std::vector<std::int64_t> ids = t.encode(text, true);
        (void)t.decode(ids, false);
        (void)t.decode(ids, true);
        (void)t.encode(text, false);
      });
      return;
    }
    const std::string json(reinterpret_cast<const char*>(data + 1), size - 1);
    expect_typed_errors([&] {
      const tokenizer t = tokenizer::from_json(json, "fuzz_tokenizer.json");
      for (const char* text : {"", "a red circle and a blue square", "Hello, World! 123  tabs\tand\nnewlines",
                               "h\xc3\xa9llo \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80 <image> [CLS]"}) {
        expect_typed_errors([&] {
          const std::vector<std::int64_t> ids = t.encode(text, true);
          (void)t.decode(ids, false);
        });
      }
      // ids outside the vocabulary must be refused, not read out of bounds
      const std::int64_t odd_ids[] = {-1, 0, 1, 1 << 30};
      expect_typed_errors([&] { (void)t.decode(odd_ids, false); });
    });
  }

 private:
  std::vector<tokenizer> fixtures_;
};

/// Image decoding (PNG, JPEG, BMP, GIF, ... through stb, at most 4 M pixels here to keep runs fast) followed by
/// BLIP-2 preprocessing to 16 x 16 with both resize backends.
inline void image_bytes(const std::uint8_t* data, std::size_t size) {
  expect_typed_errors([&] {
    decode_options options;
    options.max_pixels = std::int64_t(1) << 22;
    const rgb_image image = decode_image(data, size, "fuzz-image", options);
    image_processor_config config;
    config.width = config.height = 16;
    for (resize_backend backend : {resize_backend::torchvision, resize_backend::pil}) {
      config.backend = backend;
      (void)BlipImageProcessor(config)(image);
    }
  });
}

}  // namespace qformer::fuzz
