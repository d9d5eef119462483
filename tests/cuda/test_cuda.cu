// The CUDA backend against the CPU backend (every op, every dtype, at BLIP-2 shapes and edge shapes) and against
// transformers' reference tensors (every fixture: image path, language models, generation, retrieval).
// Exits 77 (ctest: skipped) when no GPU is present.
#define DOCTEST_CONFIG_IMPLEMENT
#include "../test_util.hpp"

#include <qformer/cuda.hpp>
#include <qformer/pipeline.hpp>

#include <cstdio>
#include <vector>

using namespace qformer;

namespace {

/// The bound of a dtype for an op whose fp32 bound is `f32`: one rounding of the output, relative to the
/// largest reference value (bf16 keeps 8 significant bits, fp16 11).
template <class T>
double bound(double f32) {
  if constexpr (std::is_same_v<T, bf16>) return 2e-2;
  else if constexpr (std::is_same_v<T, fp16>) return 4e-3;
  else return f32;
}

template <class T>
tensor<T, cuda> up(const tensor<T>& host) {
  return to_device<T, cuda>(host);
}
template <class T>
tensor<T> down(context<cuda>& ctx, view<const T, cuda> dev) {
  tensor<T> host(dev.shape());
  ops::download<T, cuda>(ctx, dev, host.mut());
  return host;
}

/// Expected (CPU backend) against got (CUDA backend).
template <class T>
void check_close(const char* op, const tensor<T>& want, const tensor<T>& got, double f32_bound) {
  const double d = test::relative_max_diff(got.get(), want.get());
  CAPTURE(op);
  CAPTURE(d);
  CHECK(d <= bound<T>(f32_bound));
}

/// cols 1408: the 16-byte vector kernels; an odd width: the element-wise ones; 4100: norms through global memory.
template <class T>
void elementwise_ops(index_t cols) {
  CAPTURE(cols);
  context<cpu> cpu_ctx;
  context<cuda> ctx;
  const index_t rows = 37;
  const tensor<T> x = test::random_tensor<T>({rows, 2 * cols}, 1), y = test::random_tensor<T>({rows, cols}, 2);
  const tensor<T> w = test::random_tensor<T>({cols}, 3), b = test::random_tensor<T>({cols}, 4);
  const tensor<T, cuda> dx = up(x), dy = up(y), dw = up(w), db = up(b);
  const view<const T> xs = x.get().columns(cols, cols);  // strided input
  const view<const T, cuda> dxs = dx.get().columns(cols, cols);

  auto run = [&](const char* op, double f32_bound, auto cpu_op, auto cuda_op) {
    tensor<T> want({rows, cols});
    cpu_op(want.mut());
    tensor<T, cuda> got({rows, cols});
    cuda_op(got.mut());
    check_close<T>(op, want, down<T>(ctx, got.get()), f32_bound);
  };
  run("layer_norm", 1e-5, [&](view<T> o) { ops::layer_norm<T, cpu>(cpu_ctx, xs, w.get(), b.get(), 1e-6f, o); },
      [&](view<T, cuda> o) { ops::layer_norm<T, cuda>(ctx, dxs, dw.get(), db.get(), 1e-6f, o); });
  run("rms_norm", 1e-5, [&](view<T> o) { ops::rms_norm<T, cpu>(cpu_ctx, xs, w.get(), 1e-6f, o); },
      [&](view<T, cuda> o) { ops::rms_norm<T, cuda>(ctx, dxs, dw.get(), 1e-6f, o); });
  run("gelu_erf", 1e-6, [&](view<T> o) { ops::gelu_erf<T, cpu>(cpu_ctx, xs, o); },
      [&](view<T, cuda> o) { ops::gelu_erf<T, cuda>(ctx, dxs, o); });
  run("gelu_tanh", 1e-6, [&](view<T> o) { ops::gelu_tanh<T, cpu>(cpu_ctx, xs, o); },
      [&](view<T, cuda> o) { ops::gelu_tanh<T, cuda>(ctx, dxs, o); });
  run("relu", 0, [&](view<T> o) { ops::relu<T, cpu>(cpu_ctx, xs, o); }, [&](view<T, cuda> o) { ops::relu<T, cuda>(ctx, dxs, o); });
  run("scale", 0, [&](view<T> o) { ops::scale<T, cpu>(cpu_ctx, xs, 0.125f, o); },
      [&](view<T, cuda> o) { ops::scale<T, cuda>(ctx, dxs, 0.125f, o); });
  run("add", 0, [&](view<T> o) { ops::add<T, cpu>(cpu_ctx, xs, y.get(), o); },
      [&](view<T, cuda> o) { ops::add<T, cuda>(ctx, dxs, dy.get(), o); });
  run("mul", 0, [&](view<T> o) { ops::mul<T, cpu>(cpu_ctx, xs, y.get(), o); },
      [&](view<T, cuda> o) { ops::mul<T, cuda>(ctx, dxs, dy.get(), o); });
  run("copy", 0, [&](view<T> o) { ops::copy<T, cpu>(cpu_ctx, xs, o); }, [&](view<T, cuda> o) { ops::copy<T, cuda>(ctx, dxs, o); });

  // In place (y aliases x), as the layers use layer_norm and the activations.
  tensor<T, cuda> inplace = up(y);
  ops::layer_norm<T, cuda>(ctx, inplace.get(), dw.get(), db.get(), 1e-5f, inplace.mut());
  tensor<T> want({rows, cols});
  ops::layer_norm<T, cpu>(cpu_ctx, y.get(), w.get(), b.get(), 1e-5f, want.mut());
  check_close<T>("layer_norm in place", want, down<T>(ctx, inplace.get()), 1e-5);

  // Casts both ways.
  tensor<float> widened({rows, cols}), widened_cpu({rows, cols});
  tensor<float, cuda> dwide({rows, cols});
  ops::cast<T, float, cuda>(ctx, dxs, dwide.mut());
  ops::cast<T, float, cpu>(cpu_ctx, xs, widened_cpu.mut());
  CHECK(test::relative_max_diff(down<float>(ctx, dwide.get()).get(), widened_cpu.get()) == 0.0);
  const tensor<float> f = test::random_tensor<float>({rows, cols}, 9);
  tensor<T> narrowed_cpu({rows, cols});
  tensor<T, cuda> dnarrow({rows, cols});
  ops::cast<float, T, cpu>(cpu_ctx, f.get(), narrowed_cpu.mut());
  ops::cast<float, T, cuda>(ctx, up(f).get(), dnarrow.mut());
  CHECK(test::relative_max_diff(down<T>(ctx, dnarrow.get()).get(), narrowed_cpu.get()) == 0.0);  // same rounding (to nearest even)

  // Embedding rows, upload.
  const std::vector<std::int64_t> ids = {5, 0, 36, 5, 17};
  tensor<T> rows_cpu({5, cols});
  tensor<T, cuda> drows({5, cols});
  ops::embedding<T, cpu>(cpu_ctx, y.get(), ids, rows_cpu.mut());
  ops::embedding<T, cuda>(ctx, dy.get(), ids, drows.mut());
  CHECK(test::relative_max_diff(down<T>(ctx, drows.get()).get(), rows_cpu.get()) == 0.0);
  auto out_of_vocabulary = [&] { ops::embedding<T, cuda>(ctx, dy.get(), std::vector<std::int64_t>{37}, drows.mut().slice(0, 1)); };
  CHECK_THROWS_AS(out_of_vocabulary(), invalid_argument);
  tensor<T, cuda> uploaded({rows, cols});
  ops::upload<T, cuda>(ctx, std::span<const T>(y.data(), static_cast<std::size_t>(y.numel())), uploaded.mut());
  CHECK(test::relative_max_diff(down<T>(ctx, uploaded.get()).get(), y.get()) == 0.0);
}

template <class T>
void linear_ops() {
  context<cpu> cpu_ctx;
  context<cuda> ctx;
  struct gemm_shape {
    index_t n, in, out;
  };
  // Up to 8 rows: the GEMV kernel (odd output counts: a warp's second feature clamped; in = 100 leaves bf16 / fp16
  // rows unaligned: cuBLASLt); more rows: cuBLASLt.
  for (const gemm_shape s : {gemm_shape{33, 72, 40}, gemm_shape{1, 256, 96}, gemm_shape{257, 1408, 4224}, gemm_shape{32, 768, 3072},
                             gemm_shape{1, 2560, 2567}, gemm_shape{3, 10240, 41}, gemm_shape{8, 512, 1000}, gemm_shape{5, 100, 37},
                             gemm_shape{9, 256, 96}}) {
    CAPTURE(s.n);
    CAPTURE(s.in);
    CAPTURE(s.out);
    const tensor<T> x = test::random_tensor<T>({s.n, 2 * s.in}, 1), w = test::random_tensor<T>({s.out, s.in}, 2),
                    b = test::random_tensor<T>({s.out}, 3);
    const tensor<T, cuda> dx = up(x), dw = up(w), db = up(b);
    for (bool with_bias : {true, false}) {
      tensor<T> want({s.n, s.out});
      ops::linear<T, cpu>(cpu_ctx, x.get().columns(s.in, s.in), w.get(), with_bias ? b.get() : view<const T>(), want.mut());
      tensor<T, cuda> got({s.n, s.out});
      ops::linear<T, cuda>(ctx, dx.get().columns(s.in, s.in), dw.get(), with_bias ? db.get() : view<const T, cuda>(), got.mut());
      // Sums of up to 10240 products in a different order: relative to the largest output (~sqrt(in) / 3).
      check_close<T>(with_bias ? "linear with bias" : "linear", want, down<T>(ctx, got.get()), 1e-5);
    }
    if (s.n > 33) continue;
    // The fused epilogue (GEMV: before its one rounding; cuBLASLt: the elementwise kernels after it).
    const tensor<T> residual = test::random_tensor<T>({s.n, s.out}, 4);
    const tensor<T, cuda> d_residual = up(residual);
    for (const std::optional<activation> act : {std::optional<activation>(), std::optional(activation::relu),
                                                std::optional(activation::gelu_erf), std::optional(activation::gelu_tanh)}) {
      CAPTURE(act ? int(*act) : -1);
      tensor<T> want({s.n, s.out});
      ops::linear_fused<T, cpu>(cpu_ctx, x.get().columns(s.in, s.in), w.get(), b.get(), act, residual.get(), want.mut());
      tensor<T, cuda> got({s.n, s.out});
      ops::linear_fused<T, cuda>(ctx, dx.get().columns(s.in, s.in), dw.get(), db.get(), act, d_residual.get(), got.mut());
      check_close<T>("linear_fused", want, down<T>(ctx, got.get()), 1e-5);
    }
  }
}

/// One attention case: (B, Lq, Lk, heads, head_dim) with q / k / v as column slices of fused projections.
struct attention_case {
  index_t batch, queries, keys, heads, head_dim;
  enum { none, per_key, per_query, per_head, fully_masked_rows } mask;
};

template <class T>
void attention_op(const attention_case& a) {
  CAPTURE(a.batch);
  CAPTURE(a.queries);
  CAPTURE(a.keys);
  CAPTURE(a.heads);
  CAPTURE(a.head_dim);
  CAPTURE(int(a.mask));
  context<cpu> cpu_ctx;
  context<cuda> ctx;
  const index_t C = a.heads * a.head_dim;
  const tensor<T> q = test::random_tensor<T>({a.batch, a.queries, 3 * C}, 11), kv = test::random_tensor<T>({a.batch, a.keys, 2 * C}, 12);
  tensor<float> mask;
  if (a.mask != attention_case::none) {
    const shape s = a.mask == attention_case::per_key     ? shape{a.batch, 1, a.keys}
                    : a.mask == attention_case::per_head  ? shape{1, a.heads, a.queries, a.keys}
                                                          : shape{a.batch, a.queries, a.keys};
    mask = tensor<float>(s);
    std::mt19937 rng(5);
    for (index_t i = 0; i < mask.numel(); ++i) mask.data()[i] = (rng() % 4 == 0) ? masked_out : float(rng() % 100) / 50.0f - 1.0f;
    if (a.mask == attention_case::fully_masked_rows)  // left-padded prompts: a padded query sees nothing
      for (index_t j = 0; j < a.keys; ++j) mask.data()[j] = masked_out;
  }
  const tensor<T, cuda> dq = up(q), dkv = up(kv);
  const tensor<float, cuda> dmask = mask.empty() ? tensor<float, cuda>() : up(mask);
  const float scale = 1.0f / std::sqrt(float(a.head_dim));
  tensor<T> want({a.batch, a.queries, C});
  ops::attention<T, cpu>(cpu_ctx, q.get().columns(C, C), kv.get().columns(0, C), kv.get().columns(C, C), mask.get(), a.heads, scale,
                         want.mut());
  tensor<T, cuda> got({a.batch, a.queries, C});
  ops::attention<T, cuda>(ctx, dq.get().columns(C, C), dkv.get().columns(0, C), dkv.get().columns(C, C), dmask.get(), a.heads, scale,
                          got.mut());
  check_close<T>("attention", want, down<T>(ctx, got.get()), 1e-5);
}

template <class T>
void attention_ops() {
  const attention_case cases[] = {
      {1, 257, 257, 16, 88, attention_case::none},           // ViT-g self-attention
      {2, 32, 257, 12, 64, attention_case::none},            // Q-Former cross-attention
      {3, 20, 20, 4, 8, attention_case::per_key},            // text padding mask
      {2, 5, 9, 2, 80, attention_case::per_query},           // causal prefill mask
      {1, 7, 40, 3, 128, attention_case::per_head},          // T5 relative position bias
      {2, 1, 61, 32, 80, attention_case::per_query},         // one decoding step
      {2, 6, 6, 2, 12, attention_case::fully_masked_rows},   // uniform attention where everything is masked
      {1, 3, 70, 5, 33, attention_case::none},               // odd head size, key tiles of 32 + 6
      {3, 1, 300, 4, 33, attention_case::per_key},          // a decoding step over more keys than threads
      {2, 130, 77, 2, 64, attention_case::per_query},       // query tiles of 64 + 2, key tiles of 64 + 13
      {1, 64, 64, 1, 128, attention_case::fully_masked_rows},  // largest head, exact tiles
      {1, 70, 40, 3, 12, attention_case::none}};                // tensor-core path, head too narrow for 16-byte loads
  for (const attention_case& a : cases) attention_op<T>(a);
}

template <class T>
void patchify_op() {
  context<cpu> cpu_ctx;
  context<cuda> ctx;
  const tensor<float> pixels = test::random_tensor<float>({2, 3, 56, 56}, 21);
  tensor<T> want({2, 16, 3 * 14 * 14});
  ops::patchify<T, cpu>(cpu_ctx, pixels.get(), 14, want.mut());
  tensor<T, cuda> got({2, 16, 3 * 14 * 14});
  ops::patchify<T, cuda>(ctx, up(pixels).get(), 14, got.mut());
  CHECK(test::relative_max_diff(down<T>(ctx, got.get()).get(), want.get()) == 0.0);
}

std::vector<std::int64_t> ids_of(const safetensors_file& ref, const std::string& name) {
  const tensor<std::int64_t> t = ref.load<std::int64_t>(name);
  return {t.data(), t.data() + t.numel()};
}

template <class T>
void check_reference(context<cuda>& ctx, const safetensors_file& ref, const std::string& name, view<const T, cuda> got, double b) {
  test::check_against_reference(ref, name, down<T>(ctx, got).get(), b);
}

/// Image path, logits and generated ids of a fixture with the model on the GPU.
template <class T>
void check_fixture(const std::string& name, double image_bound, bool language_model) {
  CAPTURE(name);
  const std::string folder = test::fixture(name);
  const safetensors_file ref(folder + "/reference.safetensors");
  const Blip2<T, cuda> model = Blip2<T, cuda>::from_pretrained(folder);
  const tensor<float, cuda> pixels = up(ref.load<float>("pixel_values"));
  context<cuda> ctx;
  typename context<cuda>::scope scope(ctx);
  const image_features<T, cuda> f = model.encode_image(ctx, pixels.get());
  check_reference<T>(ctx, ref, "vision_last_hidden_state", f.vision_last_hidden_state, image_bound);
  check_reference<T>(ctx, ref, "vision_pooler_output", f.vision_pooler_output, image_bound);
  check_reference<T>(ctx, ref, "qformer_last_hidden_state", f.qformer_last_hidden_state, image_bound);
  check_reference<T>(ctx, ref, "language_projection", f.language_projection, image_bound);
  if (!language_model) return;

  const index_t B = ref.at("pixel_values").dims[0], n_new = ref.at("greedy_ids").dims[1];
  const bool t5 = model.config().text.model_type == "t5";
  generation_options greedy;
  greedy.max_new_tokens = greedy.min_new_tokens = n_new;
  greedy.eos_token_ids = {t5 ? model.config().text.t5.eos_token_id : model.config().text.opt.eos_token_id};
  generation_options beam3 = greedy;
  beam3.num_beams = 3, beam3.early_stopping = true;
  const token_batch prompt = token_batch::unpadded(B, ref.at("prompt_ids").dims[1], ids_of(ref, "prompt_ids"));
  check_reference<float>(ctx, ref, "lm_logits", model.lm_logits(ctx, f.language_projection, prompt), 1e-4);
  CHECK(model.generate(ctx, f.language_projection, prompt, greedy).ids == ids_of(ref, "greedy_ids"));
  CHECK(model.generate(ctx, f.language_projection, prompt, beam3).ids == ids_of(ref, "beam3_ids"));
  if (ref.find("padded_prompt_ids")) {
    const token_batch padded{B, ref.at("padded_prompt_ids").dims[1], ids_of(ref, "padded_prompt_ids"), ids_of(ref, "padded_prompt_mask")};
    if (ref.find("padded_lm_logits"))
      check_reference<float>(ctx, ref, "padded_lm_logits", model.lm_logits(ctx, f.language_projection, padded), 1e-4);
    CHECK(model.generate(ctx, f.language_projection, padded, greedy).ids == ids_of(ref, "padded_greedy_ids"));
  }
}

}  // namespace

TEST_CASE("CUDA elementwise ops, norms, casts, embedding and upload match the CPU backend") {
  for (index_t cols : {1408, 37, 4100}) {  // 4100: wider than a row held in registers by the norms
    elementwise_ops<float>(cols);
    elementwise_ops<fp16>(cols);
    elementwise_ops<bf16>(cols);
  }
}

TEST_CASE("CUDA linear (cuBLASLt, GEMV up to 8 rows) matches the CPU backend at BLIP-2 shapes, strided input, with and without bias") {
  linear_ops<float>();
  linear_ops<fp16>();
  linear_ops<bf16>();
}

TEST_CASE("CUDA attention matches the CPU backend: ViT, Q-Former, masks of every broadcast, decode, odd head sizes") {
  attention_ops<float>();
  attention_ops<fp16>();
  attention_ops<bf16>();
}

TEST_CASE("CUDA patchify matches the CPU backend") {
  patchify_op<float>();
  patchify_op<bf16>();
}

TEST_CASE("CUDA: every fixture matches transformers in fp32 (image path, logits, greedy, beam, left padding)") {
  check_fixture<float>("tiny-opt", 1e-4, true);
  check_fixture<float>("tiny-opt-hub-layout", 1e-4, true);
  check_fixture<float>("tiny-opt-sharded", 1e-4, true);
  check_fixture<float>("tiny-t5", 1e-4, true);
  check_fixture<float>("tiny-t5-seed7", 1e-4, true);
}

TEST_CASE("CUDA: image path in bf16 / fp16 stays near fp32 (the CPU tests' bounds)") {
  check_fixture<fp16>("tiny-opt", 1e-2, false);
  check_fixture<bf16>("tiny-opt", 6e-2, false);
}

TEST_CASE("CUDA: image-text retrieval matches transformers") {
  const std::string folder = test::fixture("tiny-retrieval");
  const safetensors_file ref(folder + "/reference.safetensors");
  const auto model = Blip2ForImageTextRetrieval<float, cuda>::from_pretrained(folder);
  context<cuda> ctx;
  typename context<cuda>::scope scope(ctx);
  const tensor<float, cuda> pixels = up(ref.load<float>("pixel_values"));
  view<float, cuda> image = model.vision()(ctx, pixels.get());
  const index_t B = ref.at("input_ids").dims[0], T = ref.at("input_ids").dims[1];
  const token_batch text{B, T, ids_of(ref, "input_ids"), ids_of(ref, "attention_mask")};
  check_reference<float>(ctx, ref, "itm_logits", model.itm_logits(ctx, image, text), 1e-4);
  view<float, cuda> image_feats = model.image_features(ctx, image), text_feats = model.text_features(ctx, text);
  check_reference<float>(ctx, ref, "itc_image_embeds", image_feats, 1e-4);
  check_reference<float>(ctx, ref, "itc_text_embeds", text_feats, 1e-4);
  check_reference<float>(ctx, ref, "itc_logits_per_image", model.similarity(ctx, image_feats, text_feats), 1e-4);
}

TEST_CASE("CUDA: a second pass allocates nothing; a captured graph of the image path replays the same outputs") {
  const std::string folder = test::fixture("tiny-opt");
  const Blip2<float, cuda> model = Blip2<float, cuda>::from_pretrained(folder);
  const tensor<float, cuda> pixels = up(safetensors_file(folder + "/reference.safetensors").load<float>("pixel_values"));
  context<cuda> ctx;
  tensor<float> eager;
  {
    typename context<cuda>::scope scope(ctx);
    eager = down<float>(ctx, model.encode_image(ctx, pixels.get()).language_projection);
  }
  const std::size_t allocations = ctx.arena().device_allocations();
  typename context<cuda>::scope scope(ctx);
  view<float, cuda> out;
  cuda_graph graph = cuda_graph::capture(ctx, [&] { out = model.encode_image(ctx, pixels.get()).language_projection; });
  CHECK(ctx.arena().device_allocations() == allocations);
  ops::upload<float, cuda>(ctx, std::vector<float>(static_cast<std::size_t>(out.numel()), -7.0f), out);  // poison
  graph.replay(ctx);
  CHECK(test::relative_max_diff(down<float>(ctx, out).get(), eager.get()) == 0.0);
}

/// OPT decoding steps recorded as a CUDA graph (the default) against the same steps run eagerly: the same
/// kernels and cuBLASLt algorithms, so the same logits to the bit, left padding included.
template <class T>
void recorded_steps_match_eager() {
  const Blip2<T, cuda> model = Blip2<T, cuda>::from_pretrained(test::fixture("tiny-opt"));
  const OPTForCausalLM<T, cuda>& lm = *model.opt();
  const index_t B = 3, L = 5, steps = 6, C = lm.width();
  const tensor<T, cuda> embeds = up(test::random_tensor<T>({B, L, C}, 7));
  std::vector<std::int64_t> mask(static_cast<std::size_t>(B * L), 1);
  mask[static_cast<std::size_t>(L)] = mask[static_cast<std::size_t>(L) + 1] = mask[static_cast<std::size_t>(2 * L)] = 0;
  context<cuda> ctx;
  typename context<cuda>::scope scope(ctx);
  OPTSession<T, cuda> recorded(lm, B, L + steps), eager(lm, B, L + steps);
  CHECK(recorded.records_steps());
  eager.record_steps(false);
  recorded.prefill(ctx, embeds.get(), mask);
  eager.prefill(ctx, embeds.get(), mask);
  for (index_t s = 0; s < steps; ++s) {
    CAPTURE(s);
    const std::vector<std::int64_t> tokens = {4 + s, 17 * s % lm.vocab_size(), lm.vocab_size() - 1 - s};
    typename context<cuda>::scope step_scope(ctx);
    const tensor<float> want = down<float>(ctx, eager.step(ctx, tokens));
    const tensor<float> got = down<float>(ctx, recorded.step(ctx, tokens));
    CHECK(test::relative_max_diff(got.get(), want.get()) == 0.0);
  }
}

TEST_CASE("CUDA: OPT decoding steps replayed from a CUDA graph give the eager steps' logits (f32, bf16)") {
  recorded_steps_match_eager<float>();
  recorded_steps_match_eager<bf16>();
}

TEST_CASE("CUDA: the pipeline captions the demo image as the CPU pipeline does (f32, bf16)") {
  const char* from_environment = std::getenv("QFORMER_MODELS_DIR");
  const std::string models = from_environment && *from_environment ? from_environment : QFORMER_MODELS_DIR;
  const rgb_image image = load_image(models + "/../examples/images/red_circle_and_blue_square.png");
  const std::string folder = models + "/shapes-captioner";
  context<cpu> cpu_ctx;
  context<cuda> ctx;
  const std::string f32 = Blip2Pipeline<float>::from_pretrained(folder).caption(cpu_ctx, image);
  CHECK(Blip2Pipeline<float, cuda>::from_pretrained(folder).caption(ctx, image) == f32);
  const std::string reduced = Blip2Pipeline<bf16>::from_pretrained(folder).caption(cpu_ctx, image);
  CHECK(Blip2Pipeline<bf16, cuda>::from_pretrained(folder).caption(ctx, image) == reduced);
}

int main(int argc, char** argv) {
  if (!cuda_available()) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  doctest::Context context(argc, argv);
  return context.run();
}
