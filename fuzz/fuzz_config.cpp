// libFuzzer target: config.json and preprocessor_config.json text (see fuzz_targets.hpp).
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  qformer::fuzz::config_text(data, size);
  return 0;
}
