// libFuzzer target: safetensors bytes (see fuzz_targets.hpp).
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  qformer::fuzz::safetensors_bytes(data, size);
  return 0;
}
