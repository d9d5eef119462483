// The README's API example: load a Hub-style BLIP-2 folder, run the image path, print what comes out.
// Usage: image_features MODEL_DIR INPUTS.safetensors   (INPUTS holds pixel_values F32 [B, 3, H, W])
#include <qformer/qformer.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 3) return std::fprintf(stderr, "usage: image_features MODEL_DIR INPUTS.safetensors\n"), 2;
  try {
    using namespace qformer;
    const auto model = Blip2<float>::from_pretrained(argv[1]);      // config.json + (sharded) safetensors
    const auto pixels = safetensors_file(argv[2]).load<float>("pixel_values");

    context<cpu> ctx;                                               // workspace arena: one per thread
    const auto f = model.encode_image(ctx, pixels.get());           // views into ctx's arena
    std::printf("vision   %s\n", f.vision_last_hidden_state.shape().str().c_str());
    std::printf("qformer  %s\n", f.qformer_last_hidden_state.shape().str().c_str());
    std::printf("projected %s, first value %.6f\n", f.language_projection.shape().str().c_str(),
                double(f.language_projection.data()[0]));
  } catch (const qformer::error& e) {
    return std::fprintf(stderr, "image_features: %s\n", e.what()), 1;
  }
}
