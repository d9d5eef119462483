// Loads a BLIP-2 folder through the installed headers and prints the Q-Former output's shape.
#include <qformer/qformer.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string folder = argv[1];
  const auto model = qformer::Blip2<float>::from_pretrained(folder);
  const auto inputs = qformer::safetensors_file(folder + "/reference.safetensors");
  const auto pixels = inputs.load<float>("pixel_values");
  qformer::context<qformer::cpu> ctx;
  const auto features = model.encode_image(ctx, pixels.get());
  std::printf("qformer_last_hidden_state %s\n", features.qformer_last_hidden_state.shape().str().c_str());
  return 0;
}
