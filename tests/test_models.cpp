// The BLIP-2 image path against transformers' activations (tests/data/*/reference.safetensors), per fixture.

#include "test_util.hpp"

#include <qformer/ops/reference/reference.hpp>
#include <qformer/qformer.hpp>

#include <fstream>
#include <map>
#include <memory>

using namespace qformer;

namespace {

/// Runs the image path of `folder` on its reference pixels and checks all four outputs within `bound`.
template <class T>
void check_image_path(const std::string& folder, double bound) {
  const safetensors_file ref(folder + "/reference.safetensors");
  std::vector<std::string> unused;
  const Blip2<T> model = Blip2<T>::from_pretrained(folder, &unused);
  const tensor<float> pixels = ref.load<float>("pixel_values");
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  const image_features<T, cpu> f = model.encode_image(ctx, pixels.get());
  test::check_against_reference(ref, "vision_last_hidden_state", f.vision_last_hidden_state, bound);
  test::check_against_reference(ref, "vision_pooler_output", f.vision_pooler_output, bound);
  test::check_against_reference(ref, "qformer_last_hidden_state", f.qformer_last_hidden_state, bound);
  test::check_against_reference(ref, "language_projection", f.language_projection, bound);
  // Only the language model (issue B) is left unread.
  for (const auto& name : unused) CHECK_MESSAGE(name.rfind("language_model.", 0) == 0, name);
}

}  // namespace

TEST_CASE("image path matches transformers: tiny-opt (fused qkv.bias, cross-attention every 2nd layer)") {
  check_image_path<float>(test::fixture("tiny-opt"), 1e-4);
}

TEST_CASE("image path matches transformers: tiny-opt-hub-layout (q_bias + v_bias)") {
  check_image_path<float>(test::fixture("tiny-opt-hub-layout"), 1e-4);
}

TEST_CASE("image path matches transformers: tiny-t5 (cross-attention every layer)") {
  check_image_path<float>(test::fixture("tiny-t5"), 1e-4);
}

TEST_CASE("image path matches transformers: tiny-opt split into 3 shards") {
  check_image_path<float>(test::fixture("tiny-opt-sharded"), 1e-4);
}

namespace {

std::vector<std::int64_t> ids_of(const safetensors_file& ref, const std::string& name) {
  const tensor<std::int64_t> t = ref.load<std::int64_t>(name);
  return {t.data(), t.data() + t.numel()};
}

/// lm_logits, greedy and beam-3 ids (and their left-padded variants) of a generation fixture.
void check_language_model(const std::string& folder) {
  const safetensors_file ref(folder + "/reference.safetensors");
  const Blip2<float> model = Blip2<float>::from_pretrained(folder);
  const tensor<float> pixels = ref.load<float>("pixel_values");
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  const auto f = model.encode_image(ctx, pixels.get());
  const index_t B = pixels.shape()[0], n_new = ref.at("greedy_ids").dims[1];
  const bool t5 = model.config().text.model_type == "t5";

  generation_options greedy;  // exactly n_new tokens, as the fixtures were made
  greedy.max_new_tokens = greedy.min_new_tokens = n_new;
  greedy.eos_token_ids = {t5 ? model.config().text.t5.eos_token_id : model.config().text.opt.eos_token_id};
  generation_options beam3 = greedy;
  beam3.num_beams = 3, beam3.early_stopping = true;

  const tensor_entry& p = ref.at("prompt_ids");
  const token_batch prompt = token_batch::unpadded(B, p.dims[1], ids_of(ref, "prompt_ids"));
  test::check_against_reference(ref, "lm_logits", model.lm_logits(ctx, f.language_projection, prompt));
  CHECK(model.generate(ctx, f.language_projection, prompt, greedy).ids == ids_of(ref, "greedy_ids"));
  CHECK(model.generate(ctx, f.language_projection, prompt, beam3).ids == ids_of(ref, "beam3_ids"));
  if (ref.find("padded_prompt_ids")) {
    const token_batch padded{B, ref.at("padded_prompt_ids").dims[1], ids_of(ref, "padded_prompt_ids"), ids_of(ref, "padded_prompt_mask")};
    if (ref.find("padded_lm_logits")) test::check_against_reference(ref, "padded_lm_logits", model.lm_logits(ctx, f.language_projection, padded));
    CHECK(model.generate(ctx, f.language_projection, padded, greedy).ids == ids_of(ref, "padded_greedy_ids"));
  }
}

}  // namespace

TEST_CASE("OPT language model matches transformers: logits, greedy, left-padded batch, beam search") {
  check_language_model(test::fixture("tiny-opt"));
  check_language_model(test::fixture("tiny-opt-hub-layout"));
  check_language_model(test::fixture("tiny-opt-sharded"));
}

TEST_CASE("Flan-T5 language model matches transformers: first-step logits, greedy, right-padded batch, beam search") {
  check_language_model(test::fixture("tiny-t5"));
  check_language_model(test::fixture("tiny-t5-seed7"));
}

TEST_CASE("int8 language models stay near fp32: OPT and T5 logits") {
  // Every Linear of the language model and its head in int8 (per-channel weights, activations per row; T5's wo
  // stays fp32); vision, Q-Former and projection fp32. Bounds, relative to the largest logit: OPT 5e-2 (measured
  // 2.0e-2); T5 2.5e-1 (measured 1.7e-1: this random T5 is 40 wide, so each dot product has 40-72 terms for the
  // 8-bit rounding errors to average over, through 4 layers of which both stacks contribute about half).
  const std::pair<const char*, double> cases[] = {{"tiny-opt", 5e-2}, {"tiny-t5", 2.5e-1}};
  for (const auto& c : cases) {  // no structured bindings: clang 14 cannot capture them in CAPTURE
    const std::string name = c.first;
    const double bound = c.second;
    CAPTURE(name);
    const std::string folder = test::fixture(name);
    const safetensors_file ref(folder + "/reference.safetensors");
    const Blip2<float> model = Blip2<float>::from_pretrained(folder);
    Blip2<float> quantized = Blip2<float>::from_pretrained(folder);
    quantized.quantize_language_model_int8();
    const tensor<float> pixels = ref.load<float>("pixel_values");
    context<cpu> ctx;
    typename context<cpu>::scope scope(ctx);
    const auto f = model.encode_image(ctx, pixels.get());
    const tensor_entry& p = ref.at("prompt_ids");
    const token_batch prompt = token_batch::unpadded(pixels.shape()[0], p.dims[1], ids_of(ref, "prompt_ids"));
    const view<const float> want = model.lm_logits(ctx, f.language_projection, prompt);
    const view<const float> got = quantized.lm_logits(ctx, f.language_projection, prompt);
    const double d = test::relative_max_diff(got, want);
    MESSAGE(name << ": int8 logits within " << d << " of fp32 (relative to the largest)");
    CHECK(d > 0.0);  // the int8 path ran
    CHECK(d <= bound);
  }
}

TEST_CASE("generation with EOS, length penalties, early stopping and repetition penalty matches transformers") {
  // tests/data/generation/cases.json: the language model's generate() on [queries; prompt] embeddings
  // (tools/make_generation_reference.py). Given only inputs_embeds, a decoder-only generate() counts no prompt
  // tokens for the repetition penalty, so the OPT cases run the session with an empty history.
  std::ifstream in(test::fixture("generation/cases.json"));
  const nlohmann::json all = nlohmann::json::parse(in);
  std::map<std::string, std::unique_ptr<Blip2<float>>> models;
  int checked = 0;
  for (const auto& c : all["cases"]) {
    const std::string folder = c["folder"].get<std::string>();
    if (!models.count(folder)) models[folder] = std::make_unique<Blip2<float>>(Blip2<float>::from_pretrained(test::fixture(folder)));
    const Blip2<float>& model = *models[folder];
    const safetensors_file ref(test::fixture(folder) + "/reference.safetensors");
    const auto& o = c["options"];
    generation_options g;
    g.max_new_tokens = o["max_new_tokens"].get<index_t>();
    g.min_new_tokens = o.value("min_new_tokens", index_t{0});
    g.num_beams = o["num_beams"].get<index_t>();
    g.length_penalty = o.value("length_penalty", 1.0f);
    g.early_stopping = o.value("early_stopping", false);
    g.repetition_penalty = o.value("repetition_penalty", 1.0f);
    g.eos_token_ids = {o["eos_token_id"].get<std::int64_t>()};
    g.pad_token_id = o["pad_token_id"].get<std::int64_t>();
    std::vector<std::int64_t> prompt_ids;
    for (const auto& row : c["prompt_ids"]) for (const auto& t : row) prompt_ids.push_back(t.get<std::int64_t>());
    const index_t B = static_cast<index_t>(c["prompt_ids"].size());
    const token_batch prompt = token_batch::unpadded(B, static_cast<index_t>(prompt_ids.size()) / B, prompt_ids);

    context<cpu> ctx;
    typename context<cpu>::scope scope(ctx);
    const auto f = model.encode_image(ctx, ref.load<float>("pixel_values").get());
    generation_result got;
    if (model.opt()) {
      auto [embeds, mask] = model.language_model_inputs(ctx, f.language_projection, prompt);
      OPTSession<float> session(*model.opt(), B, embeds.dim(1) + g.max_new_tokens);
      view<float> first = session.last_logits(ctx, session.prefill(ctx, embeds, mask));
      got = generate(ctx, session, first, {}, g);
    } else {
      got = model.generate(ctx, f.language_projection, prompt, g);
    }
    std::vector<std::int64_t> want;
    for (const auto& row : c["expected"]) for (const auto& t : row) want.push_back(t.get<std::int64_t>());
    auto str = [](const std::vector<std::int64_t>& v) {
      std::string out;
      for (auto x : v) out += std::to_string(x) + " ";
      return out;
    };
    CAPTURE(folder);
    CAPTURE(o.dump());
    CHECK_MESSAGE(got.ids == want, "got " << str(got.ids) << " (length " << got.length << "), want " << str(want));
    ++checked;
  }
  CHECK(checked >= 50);
}

TEST_CASE("queries written into <image> placeholders equal queries prepended (image_token_index configs)") {
  test::temp_dir dir;
  std::filesystem::copy(test::fixture("tiny-opt"), dir.path, std::filesystem::copy_options::recursive);
  std::ifstream in(dir.file("config.json"));
  nlohmann::json config = nlohmann::json::parse(in);
  config["image_token_index"] = 299;  // the last row of the tiny vocabulary stands in for <image>
  test::write_bytes(dir.file("config.json"), config.dump());
  const Blip2<float> model = Blip2<float>::from_pretrained(dir.path.string());
  const safetensors_file ref(test::fixture("tiny-opt") + "/reference.safetensors");
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  const auto f = model.encode_image(ctx, ref.load<float>("pixel_values").get());
  // Processor-style ids: 6 placeholders, then the prompt.
  std::vector<std::int64_t> ids;
  const std::vector<std::int64_t> prompt_ids = ids_of(ref, "prompt_ids");
  for (index_t b = 0; b < 2; ++b) {
    ids.insert(ids.end(), 6, 299);
    ids.insert(ids.end(), prompt_ids.begin() + b * 4, prompt_ids.begin() + (b + 1) * 4);
  }
  test::check_against_reference(ref, "lm_logits", model.lm_logits(ctx, f.language_projection, token_batch::unpadded(2, 10, ids)));
  ids[3] = 17;  // row 0 now has 5 placeholders for 6 queries
  CHECK_THROWS_AS(model.lm_logits(ctx, f.language_projection, token_batch::unpadded(2, 10, ids)), invalid_argument);
}

TEST_CASE("greedy generation stops rows at EOS and pads them; sampling is seeded") {
  const std::string folder = test::fixture("tiny-opt");
  const safetensors_file ref(folder + "/reference.safetensors");
  const Blip2<float> model = Blip2<float>::from_pretrained(folder);
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  const auto f = model.encode_image(ctx, ref.load<float>("pixel_values").get());
  const token_batch prompt = token_batch::unpadded(2, 4, ids_of(ref, "prompt_ids"));
  const std::vector<std::int64_t> full = ids_of(ref, "greedy_ids");  // (2, 8), no EOS stop
  generation_options o;
  o.max_new_tokens = 8;
  o.pad_token_id = 1;
  o.eos_token_ids = {full[2]};  // row 0's third token ends row 0 there
  const generation_result r = model.generate(ctx, f.language_projection, prompt, o);
  REQUIRE(r.length == 8);
  for (index_t t = 0; t < 8; ++t) CHECK(r.ids[t] == (t < 3 ? full[t] : 1));
  // Row 1 runs on unless it meets that token itself.
  const auto stop = std::find(full.begin() + 8, full.end(), full[2]);
  for (index_t t = 0; t < 8; ++t)
    if (full.begin() + 8 + t <= stop) CHECK(r.ids[8 + t] == full[8 + t]);

  generation_options s;
  s.max_new_tokens = 6, s.do_sample = true, s.top_k = 5, s.top_p = 0.9f, s.temperature = 0.7f, s.seed = 42;
  const auto a = model.generate(ctx, f.language_projection, prompt, s), b = model.generate(ctx, f.language_projection, prompt, s);
  CHECK(a.ids == b.ids);
  generation_options bad = s;
  bad.top_p = 0.0f;
  CHECK_THROWS_AS(model.generate(ctx, f.language_projection, prompt, bad), invalid_argument);
}

TEST_CASE("prompts longer than the model's positions and unknown token ids are refused") {
  const Blip2<float> model = Blip2<float>::from_pretrained(test::fixture("tiny-opt"));  // 128 positions
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  tensor<float> projected({1, 6, 40});
  std::fill_n(projected.data(), projected.numel(), 0.1f);
  CHECK_THROWS_AS(model.generate(ctx, projected.get(), token_batch::unpadded(1, 130, std::vector<std::int64_t>(130, 5)), {}),
                  invalid_argument);
  CHECK_THROWS_AS(model.lm_logits(ctx, projected.get(), token_batch::unpadded(1, 1, {300})), invalid_argument);
}

TEST_CASE("image path in reduced precision stays near fp32") {
  // Vision tower, projection and language model in bf16 / fp16 (weights and activations rounded to 8 / 11
  // significant bits, fp32 accumulation); the Q-Former in fp32 as transformers keeps it. The bound is what the
  // rounding of the vision tower's 2 blocks and the casts give on order-one activations.
  check_image_path<fp16>(test::fixture("tiny-opt"), 1e-2);
  check_image_path<bf16>(test::fixture("tiny-opt"), 6e-2);
}

TEST_CASE("retrieval checkpoints load the image path and the Q-Former's text feed-forward") {
  const std::string folder = test::fixture("tiny-retrieval");
  std::vector<std::string> unused;
  const Blip2<float> model = Blip2<float>::from_pretrained(folder, &unused);
  CHECK_FALSE(model.has_language_projection());
  CHECK(model.config().qformer.use_qformer_text_input);
  const tensor<float> pixels = safetensors_file(folder + "/reference.safetensors").load<float>("pixel_values");
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  const auto f = model.encode_image(ctx, pixels.get());
  CHECK(f.qformer_last_hidden_state.shape() == shape{2, 6, 32});
  CHECK(f.language_projection.empty());
  for (const auto& name : unused)  // ITM/ITC heads and text embeddings belong to issue C
    CHECK_MESSAGE((name.rfind("embeddings.", 0) == 0 || name.rfind("itm_head.", 0) == 0 ||
                   name.rfind("vision_projection.", 0) == 0 || name.rfind("text_projection.", 0) == 0),
                  name);
}

TEST_CASE("a second forward pass allocates nothing and gives identical outputs") {
  const std::string folder = test::fixture("tiny-opt");
  const Blip2<float> model = Blip2<float>::from_pretrained(folder);
  const tensor<float> pixels = safetensors_file(folder + "/reference.safetensors").load<float>("pixel_values");
  context<cpu> ctx;
  std::vector<float> first;
  {
    typename context<cpu>::scope scope(ctx);
    const auto f = model.encode_image(ctx, pixels.get());
    first.assign(f.language_projection.data(), f.language_projection.data() + f.language_projection.numel());
  }
  const std::size_t allocations = ctx.arena().device_allocations();
  for (int pass = 0; pass < 2; ++pass) {
    typename context<cpu>::scope scope(ctx);
    const auto f = model.encode_image(ctx, pixels.get());
    CHECK(std::equal(first.begin(), first.end(), f.language_projection.data()));
  }
  CHECK(ctx.arena().device_allocations() == allocations);
}

TEST_CASE("checkpoint shapes that disagree with config.json are refused, naming the tensor") {
  test::temp_dir dir;
  std::filesystem::copy(test::fixture("tiny-opt"), dir.path, std::filesystem::copy_options::recursive);
  std::ifstream in(dir.file("config.json"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string from = "\"intermediate_size\": 96", to = "\"intermediate_size\": 97";
  REQUIRE(text.find(from) != std::string::npos);
  text.replace(text.find(from), from.size(), to);
  test::write_bytes(dir.file("config.json"), text);
  try {
    (void)Blip2<float>::from_pretrained(dir.path.string());
    FAIL("accepted a checkpoint that disagrees with its config");
  } catch (const shape_error& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK(msg.find("vision_model.encoder.layers.0.mlp.fc1.weight") != std::string::npos);
    CHECK(msg.find("[96, 48]") != std::string::npos);
    CHECK(msg.find("[97, 48]") != std::string::npos);
  }
  const tensor<float> wrong_pixels({1, 3, 32, 32});
  const Blip2<float> model = Blip2<float>::from_pretrained(test::fixture("tiny-opt"));
  context<cpu> ctx;
  CHECK_THROWS_AS(model.encode_image(ctx, wrong_pixels.get()), shape_error);
}

TEST_CASE("a missing attention bias is an error, not zeros") {
  // random_weights has no q_bias / v_bias and a model asked for qkv.bias gets it; a source with neither throws.
  struct no_bias_source final : weight_source {
    random_weights inner;
    bool contains(const std::string& n) const override { return n.find("qkv.bias") == std::string::npos && inner.contains(n); }
    void read(const std::string& n, const shape& s, dtype t, void* dst) const override {
      if (!contains(n)) throw load_error("test", "tensor '" + n + "' is missing");
      inner.read(n, s, t, dst);
    }
    void check(const std::string& n, const shape&) const override {
      if (!contains(n)) throw load_error("test", "tensor '" + n + "' is missing");
    }
  };
  VisionConfig c;
  c.hidden_size = 16, c.intermediate_size = 32, c.num_hidden_layers = 1, c.num_attention_heads = 2, c.image_size = 8, c.patch_size = 4;
  VisionEncoder<float> vision(c);
  no_bias_source source;
  CHECK_THROWS_AS(vision.load(weight_scope(source) / "vision_model"), load_error);
  random_weights random;
  vision.load(weight_scope(random) / "vision_model");
}

TEST_CASE("generation_config.json supplies decoding defaults; bad fields name the file and field") {
  const Blip2Config c = load_blip2_config(test::fixture("tiny-opt"));
  const generation_options plain = load_generation_options(test::fixture("tiny-opt"), c);
  CHECK(plain.eos_token_ids == std::vector<std::int64_t>{2});
  CHECK(plain.pad_token_id == 1);
  CHECK(plain.num_beams == 1);

  test::temp_dir dir;
  test::write_bytes(dir.file("generation_config.json"),
                    R"({"num_beams": 5, "max_new_tokens": 30, "min_new_tokens": 8, "eos_token_id": [50118, 2], "length_penalty": -1,
                        "early_stopping": "never", "max_length": 20})");
  const generation_options hub = load_generation_options(dir.path.string(), c);
  CHECK(hub.num_beams == 5);
  CHECK(hub.max_new_tokens == 30);
  CHECK(hub.min_new_tokens == 8);
  CHECK(hub.eos_token_ids == std::vector<std::int64_t>{50118, 2});
  CHECK(hub.length_penalty == -1.0f);
  CHECK_FALSE(hub.early_stopping);

  test::write_bytes(dir.file("generation_config.json"), R"({"num_beams": "five"})");
  try {
    (void)load_generation_options(dir.path.string(), c);
    FAIL("accepted a string num_beams");
  } catch (const config_error& e) {
    CHECK(e.field() == "num_beams");
    CHECK(e.file().find("generation_config.json") != std::string::npos);
  }
  test::write_bytes(dir.file("generation_config.json"), "{");
  CHECK_THROWS_AS(load_generation_options(dir.path.string(), c), config_error);
}

TEST_CASE("image-text retrieval matches transformers: ITM logits, ITC similarities and embeddings") {
  const std::string folder = test::fixture("tiny-retrieval");
  const safetensors_file ref(folder + "/reference.safetensors");
  std::vector<std::string> unused;
  const auto model = Blip2ForImageTextRetrieval<float>::from_pretrained(folder, &unused);
  CHECK(unused.empty());
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  view<float> image = model.vision()(ctx, ref.load<float>("pixel_values").get());
  const index_t B = ref.at("input_ids").dims[0], T = ref.at("input_ids").dims[1];
  const token_batch text{B, T, ids_of(ref, "input_ids"), ids_of(ref, "attention_mask")};
  test::check_against_reference(ref, "itm_logits", model.itm_logits(ctx, image, text));
  view<float> image_feats = model.image_features(ctx, image), text_feats = model.text_features(ctx, text);
  test::check_against_reference(ref, "itc_image_embeds", image_feats);
  test::check_against_reference(ref, "itc_text_embeds", text_feats);
  test::check_against_reference(ref, "itc_logits_per_image", model.similarity(ctx, image_feats, text_feats));
}

TEST_CASE("host_logits_session drives generation exactly as the session itself (the GPU path's adapter, on the CPU)") {
  // On CUDA the decoding strategies read each step's logits on the host through this adapter; here both sides
  // are the CPU, so greedy and beam search must give the same ids through it as without it.
  const safetensors_file ref(test::fixture("tiny-opt") + "/reference.safetensors");
  const Blip2<float> model = Blip2<float>::from_pretrained(test::fixture("tiny-opt"));
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  const auto f = model.encode_image(ctx, ref.load<float>("pixel_values").get());
  const index_t B = ref.at("prompt_ids").dims[0];
  const token_batch prompt = token_batch::unpadded(B, ref.at("prompt_ids").dims[1], ids_of(ref, "prompt_ids"));
  auto [embeds, mask] = model.language_model_inputs(ctx, f.language_projection, prompt);
  const std::vector<std::vector<std::int64_t>> history(static_cast<std::size_t>(B));
  for (const index_t beams : {1, 3}) {
    CAPTURE(beams);
    generation_options o;
    o.max_new_tokens = o.min_new_tokens = 6;
    o.num_beams = beams;
    o.eos_token_ids = {model.config().text.opt.eos_token_id};
    OPTSession<float> direct(*model.opt(), B, embeds.dim(1) + 6), adapted(*model.opt(), B, embeds.dim(1) + 6);
    const generation_result want = qformer::generate(ctx, direct, direct.last_logits(ctx, direct.prefill(ctx, embeds, mask)), history, o);
    const view<float> first = adapted.last_logits(ctx, adapted.prefill(ctx, embeds, mask));
    tensor<float> first_host(first.shape());
    ops::download<float, cpu>(ctx, first, first_host.mut());
    context<cpu> host;
    host_logits_session<OPTSession<float>, cpu> on_host(ctx, adapted);
    CHECK(qformer::generate(host, on_host, first_host.get(), history, o).ids == want.ids);
  }
}

TEST_CASE("recorded OPT steps (inputs read on the device, the GPU's CUDA graph path) give the eager steps' logits") {
  // The recorded step reads ids, positions and the cache length from device buffers and a capacity-wide mask;
  // on the CPU the recorded pass is the step itself, run again, so the arithmetic must be the eager step's.
  const Blip2<float> model = Blip2<float>::from_pretrained(test::fixture("tiny-opt"));
  const OPTForCausalLM<float>& lm = *model.opt();
  const index_t L = 5, steps = 6, C = lm.width();
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  for (const index_t B : {1, 3}) {
    CAPTURE(B);
    const tensor<float> embeds = test::random_tensor<float>({B, L, C}, 7);
    std::vector<std::int64_t> mask(static_cast<std::size_t>(B * L), 1);
    if (B == 3) {
      mask[static_cast<std::size_t>(L)] = mask[static_cast<std::size_t>(L) + 1] = 0;  // row 1 left-padded by two
      mask[static_cast<std::size_t>(2 * L)] = 0;                                      // row 2 by one
    }
    OPTSession<float> eager(lm, B, L + steps), recorded(lm, B, L + steps);
    CHECK_FALSE(eager.records_steps());  // the CPU default
    recorded.record_steps(true);
    eager.prefill(ctx, embeds.get(), mask);
    recorded.prefill(ctx, embeds.get(), mask);
    for (index_t s = 0; s < steps; ++s) {
      CAPTURE(s);
      std::vector<std::int64_t> tokens = {4 + s, 17 * s % lm.vocab_size(), lm.vocab_size() - 1 - s};
      tokens.resize(static_cast<std::size_t>(B));
      const view<float> want = eager.step(ctx, tokens);
      const view<float> got = recorded.step(ctx, tokens);
      REQUIRE(got.shape() == want.shape());
      CHECK(test::relative_max_diff(got, want) == 0.0);
    }
    const std::vector<std::int64_t> full(static_cast<std::size_t>(B), 1);
    CHECK_THROWS_AS(recorded.step(ctx, full), invalid_argument);  // the cache is full: nothing written past it
  }
  const index_t B = 3;
  const tensor<float> embeds = test::random_tensor<float>({B, L, C}, 7);
  const std::vector<std::int64_t> mask(static_cast<std::size_t>(B * L), 1);

  OPTSession<float> fresh(lm, B, L + steps);
  fresh.record_steps(true);
  fresh.prefill(ctx, embeds.get(), mask);
  const std::vector<std::int64_t> outside = {1, lm.vocab_size(), 3};
  CHECK_THROWS_AS(fresh.step(ctx, outside), invalid_argument);
  const std::vector<index_t> rows = {2, 0, 1};
  fresh.select(ctx, rows);  // beam search moves the cache rows: recording ends for the session
  CHECK_FALSE(fresh.records_steps());
}

TEST_CASE_TEMPLATE("attention_over_cache: each batch row attends to its cache prefix, as the scalar reference does", T, float, bf16, fp16) {
  // Lq 1 and 2: the decoding-step kernel; Lq 6: attention() per batch row. Masks per query, per head (rank 4) and
  // shared, and a mask row longer than the keys read (a recorded step's mask spans the capacity). The larger
  // shapes are enough work for two threads: one batch row splits its 3 heads into two groups, 3 rows split by row.
  struct case_shape { index_t B, capacity, keys, heads, C; };
  const double bound = std::is_same_v<T, float> ? 1e-6 : std::is_same_v<T, fp16> ? 4e-3 : 3e-2;
  context<cpu> ctx;
  for (const case_shape c : {case_shape{3, 10, 7, 2, 16}, case_shape{1, 120, 100, 3, 192}, case_shape{3, 120, 100, 3, 192}}) {
    const index_t B = c.B, capacity = c.capacity, keys = c.keys, heads = c.heads, C = c.C;
    CAPTURE(B);
    CAPTURE(keys);
    const tensor<T> k = test::random_tensor<T>({B, capacity, C}, 2), v = test::random_tensor<T>({B, capacity, C}, 3);
    for (index_t Lq : {1, 2, 6}) {
      CAPTURE(Lq);
      const tensor<T> q = test::random_tensor<T>({B, Lq, C}, 1);
      tensor<float> per_query({B, Lq, keys}), per_head({B, heads, Lq, keys}), shared({1, Lq, keys}), wide({B, Lq, capacity});
      for (tensor<float>* m : {&per_query, &per_head, &shared, &wide})
        for (index_t i = 0; i < m->numel(); ++i) m->data()[i] = (i % 5 == 0) ? masked_out : 0.1f * float(i % 3);
      for (view<const float> mask : {per_query.get(), per_head.get(), shared.get(), view<const float>(), wide.get()}) {
        const bool wide_rows = !mask.empty() && mask.cols() == capacity;
        tensor<T> got({B, Lq, C});
        if (wide_rows) {
          if (Lq != 1) continue;  // only a one-query step reads a prefix of longer mask rows (past on the device)
          const std::vector<std::int64_t> past = {keys - 1};
          ops::attention_over_cache<T, cpu>(ctx, q.get(), k.get(), v.get(), capacity, mask, heads, 0.25f, got.mut(),
                                            view<const std::int64_t>(past.data(), {1}));
        } else {
          ops::attention_over_cache<T, cpu>(ctx, q.get(), k.get(), v.get(), keys, mask, heads, 0.25f, got.mut());
        }
        for (index_t b = 0; b < B; ++b) {
          tensor<float> mask_b;
          if (!mask.empty()) {  // this row's mask over the first `keys` keys
            const ops::mask_layout m = ops::mask_layout::of(mask);
            mask_b = tensor<float>({1, m.heads, Lq, keys});
            for (index_t h = 0; h < m.heads; ++h)
              for (index_t i = 0; i < Lq; ++i)
                std::copy_n(mask.row(m.row(b, h, i)), keys, mask_b.data() + (h * Lq + i) * keys);
          }
          tensor<T> want({1, Lq, C});
          reference::attention<T>(q.get()[b].unsqueeze(), k.get()[b].slice(0, keys).unsqueeze(), v.get()[b].slice(0, keys).unsqueeze(),
                                  mask_b.get(), heads, 0.25f, want.mut());
          CHECK(test::relative_max_diff(got.get()[b], want.get()[0]) <= bound);
        }
      }
    }
    tensor<T> out({B, 1, C});
    const tensor<T> q1 = test::random_tensor<T>({B, 1, C}, 1);
    auto past_the_capacity = [&] { ops::attention_over_cache<T, cpu>(ctx, q1.get(), k.get(), v.get(), capacity + 1, {}, heads, 0.25f, out.mut()); };
    CHECK_THROWS_AS(past_the_capacity(), shape_error);
  }
}

TEST_CASE("upload / download / uploaded copy host values to and from a device (the CPU here)") {
  context<cpu> ctx;
  typename context<cpu>::scope scope(ctx);
  const std::vector<float> values = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1.0f};
  const view<float> up = ops::uploaded<float, cpu>(ctx, values, {2, 3});
  tensor<float> back({2, 3});
  ops::download<float, cpu>(ctx, up, back.mut());
  CHECK(std::vector<float>(back.data(), back.data() + 6) == values);
  auto wrong_size = [&] { ops::upload<float, cpu>(ctx, values, ctx.alloc<float>({5})); };
  CHECK_THROWS_AS(wrong_size(), shape_error);
}
