// The bundled shapes captioner (issue D): the C++ shapes world renders Python's pixels, and the model in
// models/shapes-captioner captions fresh C++-rendered scenes through the public API.

#include "shapes_world.hpp"
#include "test_util.hpp"

#include <qformer/io/image.hpp>
#include <qformer/metrics/caption_metrics.hpp>
#include <qformer/pipeline.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace {

std::string models_dir() { return QFORMER_MODELS_DIR; }
std::string captioner_dir() { return models_dir() + "/shapes-captioner"; }

const qformer::Blip2Pipeline<float>& captioner() {
  static const auto pipe = qformer::Blip2Pipeline<float>::from_pretrained(captioner_dir());
  return pipe;
}

}  // namespace

TEST_CASE("the C++ shapes world renders the pixels of tools/shapes/shapes_world.py") {
  std::ifstream in(test::fixture("shapes/render_reference.json"));
  REQUIRE(in);
  const auto ref = nlohmann::json::parse(in);
  REQUIRE(ref.at("size").get<int>() == shapes::image_size);
  REQUIRE(ref.at("cases").size() >= 50);
  for (const auto& c : ref.at("cases")) {
    std::vector<shapes::shape> scene;
    for (const auto& p : c.at("shapes"))
      scene.push_back({shapes::parse_kind(p[0]), shapes::parse_colour(p[1]), p[2].get<int>(), p[3].get<int>(), p[4].get<int>()});
    CAPTURE(c.dump());
    const qformer::rgb_image image = shapes::render(scene);
    int painted = 0;
    for (qformer::index_t i = 0; i < image.width * image.height; ++i)
      painted += image.pixels[3 * i] != 255 || image.pixels[3 * i + 1] != 255 || image.pixels[3 * i + 2] != 255;
    CHECK(painted == c.at("painted").get<int>());
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(shapes::fnv1a64(image)));
    CHECK(std::string(hex) == c.at("fnv1a64").get<std::string>());
    CHECK(shapes::caption(scene) == c.at("caption").get<std::string>());
  }
}

TEST_CASE("the C++ scene sampler stays inside the world") {
  shapes::scene_sampler sample(3);
  int two = 0;
  for (int i = 0; i < 2000; ++i) {
    const auto scene = sample();
    REQUIRE((scene.size() == 1 || scene.size() == 2));
    two += scene.size() == 2;
    for (std::size_t k = 0; k < scene.size(); ++k) {
      const auto& sh = scene[k];
      CHECK(sh.s >= shapes::min_side);
      CHECK(sh.s <= shapes::max_side);
      CHECK(sh.y0 >= 0);
      CHECK(sh.y0 + sh.s <= shapes::image_size);
      const int lo = scene.size() == 2 && k == 1 ? shapes::half : 0;
      const int hi = scene.size() == 2 && k == 0 ? shapes::half : shapes::image_size;
      CHECK(sh.x0 >= lo);
      CHECK(sh.x0 + sh.s <= hi);
    }
  }
  CHECK(two > 900);
  CHECK(two < 1100);
}

TEST_CASE("the bundled shapes captioner captions 50 fresh C++-rendered scenes") {
  const auto& pipe = captioner();
  shapes::scene_sampler sample(2024);
  std::vector<qformer::rgb_image> images;
  std::vector<std::string> truths;
  for (int i = 0; i < 50; ++i) {
    const auto scene = sample();
    images.push_back(shapes::render(scene));
    truths.push_back(shapes::caption(scene));
  }
  qformer::context<qformer::cpu> ctx;
  std::vector<std::string> predictions;
  for (std::size_t b = 0; b < images.size(); b += 10) {
    const auto out = pipe.generate(ctx, std::span<const qformer::rgb_image>(images.data() + b, 10), "", pipe.defaults());
    for (const auto& g : out) predictions.push_back(g.text);
  }
  REQUIRE(predictions.size() == truths.size());
  int exact = 0;
  qformer::metrics::reference_lists references;
  for (std::size_t i = 0; i < truths.size(); ++i) {
    exact += predictions[i] == truths[i];
    if (predictions[i] != truths[i]) MESSAGE("scene " << i << ": '" << predictions[i] << "', truth '" << truths[i] << "'");
    references.push_back({truths[i]});
  }
  const auto bleu = qformer::metrics::corpus_bleu(predictions, references);
  const auto rouge = qformer::metrics::rouge_l(predictions, references);
  MESSAGE("shapes captioner on 50 fresh C++ scenes: " << exact << "/50 exact, BLEU-4 " << bleu.score << ", ROUGE-L "
                                                      << 100 * rouge.fmeasure);
  CHECK(exact >= 45);
}

TEST_CASE("the bundled example images get their captions") {
  const std::string folder = models_dir() + "/../examples/images";
  std::ifstream list(folder + "/captions.txt");
  REQUIRE(list);
  const auto& pipe = captioner();
  qformer::context<qformer::cpu> ctx;
  std::string line;
  int count = 0;
  while (std::getline(list, line)) {
    if (line.empty()) continue;
    const auto tab = line.find('\t');
    REQUIRE(tab != std::string::npos);
    const std::string name = line.substr(0, tab), truth = line.substr(tab + 1);
    CAPTURE(name);
    CHECK(pipe.caption(ctx, qformer::load_image(folder + "/" + name)) == truth);
    ++count;
  }
  CHECK(count >= 4);
}

namespace {

/// Every caption of the world with `count` shapes, in tools/shapes/shapes_world.py's all_captions() order.
std::vector<std::string> captions_with(std::size_t count) {
  std::vector<std::string> ones;
  for (const char* c : shapes::colour_names)
    for (const char* k : shapes::kind_names) ones.push_back(std::string("a ") + c + " " + k);
  if (count == 1) return ones;
  std::vector<std::string> twos;
  for (const auto& a : ones)
    for (const auto& b : ones) twos.push_back(a + " and " + b);
  return twos;
}

}  // namespace

TEST_CASE("the bundled shapes retrieval model ranks the right caption first for 100 fresh C++-rendered scenes") {
  // Every caption of the scene's kind (12 one-shape, 144 two-shape captions) ranked by ITC similarity, as
  // `qformer rank` does; issue D asks for the right one first on at least 95 % of fresh scenes.
  const auto pipe = qformer::Blip2RetrievalPipeline<float>::from_pretrained(QFORMER_MODELS_DIR "/shapes-retrieval");
  shapes::scene_sampler sample(4096);
  std::vector<qformer::rgb_image> images[3];
  std::vector<std::string> truths[3];
  for (int i = 0; i < 100; ++i) {
    const auto scene = sample();
    images[scene.size()].push_back(shapes::render(scene));
    truths[scene.size()].push_back(shapes::caption(scene));
  }
  qformer::context<qformer::cpu> ctx;
  int right = 0, total = 0;
  for (std::size_t n = 1; n <= 2; ++n) {
    if (images[n].empty()) continue;
    const std::vector<std::string> candidates = captions_with(n);
    REQUIRE(candidates.size() == (n == 1 ? 12u : 144u));
    const std::vector<float> sim = pipe.similarity(ctx, images[n], candidates);
    REQUIRE(sim.size() == images[n].size() * candidates.size());
    for (std::size_t i = 0; i < images[n].size(); ++i) {
      const auto row = sim.begin() + static_cast<std::ptrdiff_t>(i * candidates.size());
      const auto best = static_cast<std::size_t>(std::max_element(row, row + static_cast<std::ptrdiff_t>(candidates.size())) - row);
      ++total;
      if (candidates[best] == truths[n][i]) ++right;
      else MESSAGE("'" << truths[n][i] << "' ranked '" << candidates[best] << "' first");
    }
  }
  MESSAGE("shapes retrieval on 100 fresh C++ scenes: top-1 right for " << right << "/" << total);
  REQUIRE(total == 100);
  CHECK(right >= 95);
}

TEST_CASE("reduced precision: the shapes captioner in bf16 and fp16 captions 50 fresh scenes as in fp32") {
  // bf16 runs the vision tower, projection and OPT in bf16 (the AVX-512 bf16 kernels where the CPU has them) with
  // the Q-Former in fp32, as transformers does; the demo model's captions must not change.
  shapes::scene_sampler sample(777);
  std::vector<qformer::rgb_image> images;
  for (int i = 0; i < 50; ++i) images.push_back(shapes::render(sample()));
  qformer::context<qformer::cpu> ctx;
  std::vector<std::string> fp32;
  for (const auto& image : images) fp32.push_back(captioner().caption(ctx, image));
  const auto bf16 = qformer::Blip2Pipeline<qformer::bf16>::from_pretrained(captioner_dir());
  const auto fp16 = qformer::Blip2Pipeline<qformer::fp16>::from_pretrained(captioner_dir());
  int same_bf16 = 0, same_fp16 = 0;
  for (std::size_t i = 0; i < images.size(); ++i) {
    const std::string b = bf16.caption(ctx, images[i]), h = fp16.caption(ctx, images[i]);
    same_bf16 += b == fp32[i];
    same_fp16 += h == fp32[i];
    if (b != fp32[i]) MESSAGE("scene " << i << ": bf16 '" << b << "', fp32 '" << fp32[i] << "'");
  }
  MESSAGE("captions equal to fp32's: bf16 " << same_bf16 << "/50, fp16 " << same_fp16 << "/50");
  CHECK(same_bf16 == 50);
  CHECK(same_fp16 == 50);
}

TEST_CASE("int8 language model: the shapes captioner captions 50 fresh scenes as in fp32") {
  shapes::scene_sampler sample(778);
  std::vector<qformer::rgb_image> images;
  for (int i = 0; i < 50; ++i) images.push_back(shapes::render(sample()));
  qformer::context<qformer::cpu> ctx;
  auto int8 = qformer::Blip2Pipeline<qformer::bf16>::from_pretrained(captioner_dir());
  int8.quantize_language_model_int8();
  int same = 0;
  for (std::size_t i = 0; i < images.size(); ++i) {
    const std::string want = captioner().caption(ctx, images[i]), got = int8.caption(ctx, images[i]);
    same += got == want;
    if (got != want) MESSAGE("scene " << i << ": int8 '" << got << "', fp32 '" << want << "'");
  }
  MESSAGE("captions equal to fp32's: bf16 + int8 language model " << same << "/50");
  CHECK(same == 50);
}
