// The README's example: caption an image and answer a question about it with a Hub-shaped BLIP-2 folder.
// Usage: caption MODEL_DIR IMAGE [QUESTION]
#include <qformer/pipeline.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 3) return std::fprintf(stderr, "usage: caption MODEL_DIR IMAGE [QUESTION]\n"), 2;
  try {
    // config.json, (sharded) safetensors, tokenizer, image processor and generation defaults of one folder
    const auto pipe = qformer::Blip2Pipeline<float>::from_pretrained(argv[1]);
    qformer::context<qformer::cpu> ctx;                              // workspace arena, one per thread
    const qformer::rgb_image image = qformer::load_image(argv[2]);
    std::puts(pipe.caption(ctx, image).c_str());                     // the folder's generation defaults
    if (argc > 3) {
      qformer::generation_options beams = pipe.defaults();
      beams.num_beams = 5, beams.max_new_tokens = 30;
      const auto answer = pipe.generate(ctx, {&image, 1}, pipe.vqa_prompt(argv[3]), beams);
      std::puts(answer.front().text.c_str());
    }
  } catch (const qformer::error& e) {
    return std::fprintf(stderr, "caption: %s\n", e.what()), 1;
  }
}
