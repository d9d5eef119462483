// Replays the fuzzers' seeds (fuzz/corpus/<target>/) and every input a fuzzer once failed on
// (fuzz/regressions/<target>/) through the fuzz targets' own bodies, in the ordinary build: each must end in
// success or a qformer::error, never in another exception or a crash (ASan/UBSan builds check memory too).
#include "../fuzz/fuzz_targets.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> inputs_of(const std::string& target) {
  std::vector<fs::path> files;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = fs::path(QFORMER_FUZZ_DIR) / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void replay(const std::string& target, const std::function<void(const std::uint8_t*, std::size_t)>& body) {
  const auto files = inputs_of(target);
  CHECK_MESSAGE(files.size() >= 2, "fuzz/corpus/" << target << " should hold seeds");
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO("input " << f.string());
    CHECK_NOTHROW(body(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
  }
}

}  // namespace

TEST_CASE("fuzz replay: safetensors") { replay("safetensors", qformer::fuzz::safetensors_bytes); }

TEST_CASE("fuzz replay: checkpoint index") {
  const qformer::fuzz::index_folder folder(QFORMER_TEST_DATA);
  replay("checkpoint_index", [&](const std::uint8_t* d, std::size_t n) { folder.run(d, n); });
}

TEST_CASE("fuzz replay: config.json and preprocessor_config.json") { replay("config", qformer::fuzz::config_text); }

TEST_CASE("fuzz replay: tokenizer") {
  const qformer::fuzz::tokenizer_target target(QFORMER_TEST_DATA);
  replay("tokenizer", [&](const std::uint8_t* d, std::size_t n) { target.run(d, n); });
}

TEST_CASE("fuzz replay: image decoding and preprocessing") { replay("image", qformer::fuzz::image_bytes); }
