// A custom Q-Former variant built from qformer's layers that loads stock BLIP-2 weights: an early-exit
// Q-Former that runs only the first k blocks. Usage: custom_qformer MODEL_DIR [k]
#include <qformer/qformer.hpp>

#include <cstdio>

using namespace qformer;

template <class T, class D>
struct EarlyExitQFormer {
  tensor<T, D> queries;            // "query_tokens" (1, Q, C)
  LayerNorm<T, D> ln;              // "qformer.layernorm"
  std::vector<QFormerBlock<T, D>> blocks;

  EarlyExitQFormer(const Blip2Config& c, index_t k) : ln(c.qformer.hidden_size, c.qformer.layer_norm_eps) {
    for (index_t i = 0; i < k; ++i) blocks.emplace_back(QFormer<T, D>::block_options(c.qformer, i));
    queries = tensor<T, D>({1, c.num_query_tokens, c.qformer.hidden_size});
  }
  void load(const weight_scope& root) {
    queries = root.load<T, D>("query_tokens", queries.shape());
    ln.load(root / "qformer.layernorm");
    for (std::size_t i = 0; i < blocks.size(); ++i) blocks[i].load(root / "qformer.encoder.layer" / index_t(i));
  }
  view<T, D> operator()(context<D>& ctx, view<const T, D> image_embeds) const {  // (B, Li, Cv) -> (B, Q, C)
    view<const T, D> q = queries.get().reshape({queries.shape()[1], queries.shape()[2]});
    view<T, D> x = ctx.template alloc<T>({image_embeds.dim(0), q.dim(0), q.dim(1)});
    for (index_t b = 0; b < x.dim(0); ++b) ops::copy<T, D>(ctx, q, x[b]);
    ln.forward(ctx, x, x);
    for (const auto& block : blocks) x = block(ctx, x, image_embeds);
    return x;
  }
};

int main(int argc, char** argv) {
  if (argc < 2) return std::fprintf(stderr, "usage: custom_qformer MODEL_DIR [k]\n"), 2;
  try {
    const std::string folder = argv[1];
    const Blip2Config config = load_blip2_config(folder);
    checkpoint weights(folder);
    VisionEncoder<float, cpu> vision(config.vision);
    vision.load(weight_scope(weights) / "vision_model");
    EarlyExitQFormer<float, cpu> qformer(config, argc > 2 ? std::atoi(argv[2]) : 1);
    qformer.load(weight_scope(weights));

    tensor<float> pixels({1, 3, config.vision.image_size, config.vision.image_size});
    std::fill_n(pixels.data(), pixels.numel(), 0.5f);
    context<cpu> ctx;
    view<float> out = qformer(ctx, vision(ctx, pixels.get()));
    std::printf("early-exit Q-Former (%zu blocks): output %s, first value %.6f\n", qformer.blocks.size(),
                out.shape().str().c_str(), double(out.data()[0]));
  } catch (const qformer::error& e) {
    return std::fprintf(stderr, "custom_qformer: %s\n", e.what()), 1;
  }
}
