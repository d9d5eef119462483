// libFuzzer target: image decoding plus BLIP-2 preprocessing (see fuzz_targets.hpp).
#include "fuzz_targets.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  qformer::fuzz::image_bytes(data, size);
  return 0;
}
