// libFuzzer target: model.safetensors.index.json beside three valid shards (see fuzz_targets.hpp).
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const qformer::fuzz::index_folder folder(QFORMER_TEST_DATA);
  folder.run(data, size);
  return 0;
}
