// One loaded model shared by several threads, each with its own context, gives what one thread gives.
// Its own program (qformer_thread_tests) so that CI also builds and runs it under ThreadSanitizer
// (-DQFORMER_SANITIZE=thread -DQFORMER_OPENMP=OFF: libgomp is not TSan-instrumented).

#include "shapes_world.hpp"
#include "test_util.hpp"

#include <qformer/io/image.hpp>
#include <qformer/pipeline.hpp>

#include <thread>

namespace {

constexpr int thread_count = 4;

struct caption_outputs {
  std::vector<std::string> greedy;
  std::vector<std::vector<std::int64_t>> beam_ids;
};

/// What a thread computes with the shared captioner: greedy captions of its scenes and beam-3 ids of the first.
caption_outputs caption_all(const qformer::Blip2Pipeline<float>& pipe, const std::vector<qformer::rgb_image>& images) {
  qformer::context<qformer::cpu> ctx;  // per thread
  caption_outputs out;
  for (const auto& image : images) out.greedy.push_back(pipe.caption(ctx, image));
  qformer::generation_options beams = pipe.defaults();
  beams.num_beams = 3;
  for (const auto& g : pipe.generate(ctx, std::span<const qformer::rgb_image>(images.data(), 2), "", beams))
    out.beam_ids.push_back(g.ids);
  return out;
}

std::vector<qformer::rgb_image> scenes(std::uint64_t seed, int count) {
  shapes::scene_sampler sample(seed);
  std::vector<qformer::rgb_image> out;
  for (int i = 0; i < count; ++i) out.push_back(shapes::render(sample()));
  return out;
}

}  // namespace

TEST_CASE("threads: one captioner, four threads with their own contexts, the outputs of one thread") {
  const auto pipe = qformer::Blip2Pipeline<float>::from_pretrained(QFORMER_MODELS_DIR "/shapes-captioner");
  std::vector<std::vector<qformer::rgb_image>> inputs;
  std::vector<caption_outputs> alone;
  for (int t = 0; t < thread_count; ++t) {
    inputs.push_back(scenes(100 + static_cast<std::uint64_t>(t), 4));
    alone.push_back(caption_all(pipe, inputs.back()));
  }
  std::vector<caption_outputs> together(thread_count);
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t)
    threads.emplace_back([&, t] { together[static_cast<std::size_t>(t)] = caption_all(pipe, inputs[static_cast<std::size_t>(t)]); });
  for (auto& th : threads) th.join();
  for (int t = 0; t < thread_count; ++t) {
    CAPTURE(t);
    CHECK(together[static_cast<std::size_t>(t)].greedy == alone[static_cast<std::size_t>(t)].greedy);
    CHECK(together[static_cast<std::size_t>(t)].beam_ids == alone[static_cast<std::size_t>(t)].beam_ids);
  }
}

TEST_CASE("threads: one retrieval model and tokenizer shared by four threads") {
  const auto pipe = qformer::Blip2RetrievalPipeline<float>::from_pretrained(QFORMER_MODELS_DIR "/shapes-retrieval");
  const std::vector<std::string> texts = {"a red circle", "a blue square and a green triangle", "a yellow triangle",
                                          "a green circle and a red square"};
  auto run = [&](const std::vector<qformer::rgb_image>& images) {
    qformer::context<qformer::cpu> ctx;
    return pipe.similarity(ctx, images, texts);
  };
  std::vector<std::vector<qformer::rgb_image>> inputs;
  std::vector<std::vector<float>> alone;
  for (int t = 0; t < thread_count; ++t) {
    inputs.push_back(scenes(200 + static_cast<std::uint64_t>(t), 3));
    alone.push_back(run(inputs.back()));
  }
  std::vector<std::vector<float>> together(thread_count);
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t)
    threads.emplace_back([&, t] { together[static_cast<std::size_t>(t)] = run(inputs[static_cast<std::size_t>(t)]); });
  for (auto& th : threads) th.join();
  for (int t = 0; t < thread_count; ++t) {
    CAPTURE(t);
    CHECK(together[static_cast<std::size_t>(t)] == alone[static_cast<std::size_t>(t)]);  // same code, same bits
  }
}

TEST_CASE("threads: images decoded and preprocessed on four threads at once") {
  const qformer::BlipImageProcessor processor;
  const std::vector<std::string> files = {test::fixture("preprocess/progressive.jpg"), test::fixture("preprocess/rgba.png"),
                                          test::fixture("preprocess/gray16.png"), test::fixture("preprocess/cmyk.jpg")};
  std::vector<std::vector<float>> alone;
  for (const auto& f : files) {
    const auto px = processor(qformer::load_image(f));
    alone.emplace_back(px.data(), px.data() + px.numel());
  }
  std::vector<std::vector<float>> together(files.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < files.size(); ++i)
    threads.emplace_back([&, i] {
      const auto px = processor(qformer::load_image(files[i]));
      together[i].assign(px.data(), px.data() + px.numel());
    });
  for (auto& th : threads) th.join();
  CHECK(together == alone);
}
