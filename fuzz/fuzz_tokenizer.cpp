// libFuzzer target: tokenizer.json loading, and encoding arbitrary bytes with the fixture tokenizers
// (see fuzz_targets.hpp).
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const qformer::fuzz::tokenizer_target target(QFORMER_TEST_DATA);
  target.run(data, size);
  return 0;
}
