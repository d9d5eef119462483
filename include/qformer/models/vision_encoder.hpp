#pragma once
/// \file
/// VisionEncoder: Blip2VisionModel (EVA ViT-g/14 in BLIP-2).
///   patches = Conv2d(C_img -> C, k = s = patch)(pixels)          as im2col + Linear
///   h = [class_embedding; patches] + position_embedding           (B, 1 + N, C)
///   h = ViTBlock_i(h) for each layer;  last = post_layernorm(h);  pooler = post_layernorm(last[:, 0])

#include "../layers/layer_norm.hpp"
#include "../layers/linear.hpp"
#include "../layers/vit_block.hpp"
#include "config.hpp"

#include <vector>

namespace qformer {

template <class T, class D = cpu>
class VisionEncoder {
 public:
  VisionEncoder() = default;
  explicit VisionEncoder(const VisionConfig& c)
      : cfg_(c),
        patch_embed_(c.num_channels * c.patch_size * c.patch_size, c.hidden_size),
        post_ln_(c.hidden_size, c.layer_norm_eps) {
    blocks_.reserve(static_cast<std::size_t>(c.num_hidden_layers));
    for (index_t i = 0; i < c.num_hidden_layers; ++i)
      blocks_.emplace_back(c.hidden_size, c.num_attention_heads, c.intermediate_size, c.layer_norm_eps, c.qkv_bias);
  }

  const VisionConfig& config() const noexcept { return cfg_; }
  index_t num_positions() const noexcept { return cfg_.num_positions(); }

  /// Blip2VisionModel naming under "vision_model".
  void load(const weight_scope& s) {
    const VisionConfig& c = cfg_;
    const weight_scope emb = s / "embeddings";
    const index_t patch_features = c.num_channels * c.patch_size * c.patch_size;
    // Conv2d weight (C, C_img, p, p) is, row-major, the Linear weight (C, C_img p p) of the im2col patches.
    (emb / "patch_embedding").check("weight", {c.hidden_size, c.num_channels, c.patch_size, c.patch_size});
    tensor<T> w({c.hidden_size, patch_features});
    (emb / "patch_embedding").template load_into<T>("weight", {c.hidden_size, c.num_channels, c.patch_size, c.patch_size}, w.data());
    patch_embed_.set(std::move(w), (emb / "patch_embedding").template load<T>("bias", {c.hidden_size}));
    class_embedding_ = emb.template load<T, D>("class_embedding", {1, 1, c.hidden_size});
    position_embedding_ = emb.template load<T, D>("position_embedding", {1, c.num_positions(), c.hidden_size});
    for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].load(s / "encoder.layers" / static_cast<index_t>(i));
    post_ln_.load(s / "post_layernorm");
  }

  /// pixels (B, C_img, H, W) float, H = W = image_size -> last_hidden_state (B, 1 + N, C).
  void forward(context<D>& ctx, view<const float, D> pixels, view<T, D> last) const {
    const VisionConfig& c = cfg_;
    if (pixels.rank() != 4 || pixels.dim(1) != c.num_channels || pixels.dim(2) != c.image_size || pixels.dim(3) != c.image_size)
      throw shape_error("VisionEncoder: pixel_values " + pixels.shape().str() + " do not match the model's (B, " +
                        std::to_string(c.num_channels) + ", " + std::to_string(c.image_size) + ", " +
                        std::to_string(c.image_size) + ")");
    const index_t B = pixels.dim(0), P = c.num_positions(), C = c.hidden_size;
    if (!(last.shape() == shape{B, P, C})) throw shape_error("VisionEncoder: output " + last.shape().str());
    typename context<D>::scope scope(ctx);
    view<T, D> h = ctx.template alloc<T>({B, P, C});
    embed(ctx, pixels, h);
    // Ping-pong between h and a second buffer; the last block writes into `last` directly.
    view<T, D> spare = ctx.template alloc<T>({B, P, C});
    view<T, D> cur = h;
    for (std::size_t i = 0; i < blocks_.size(); ++i) {
      view<T, D> next = (i + 1 == blocks_.size()) ? last : (cur.data() == h.data() ? spare : h);
      blocks_[i].forward(ctx, cur, next);
      cur = next;
    }
    if (blocks_.empty()) ops::copy<T, D>(ctx, h, last);
    post_ln_.forward(ctx, last, last);
  }
  view<T, D> operator()(context<D>& ctx, view<const float, D> pixels) const {
    view<T, D> last = ctx.template alloc<T>({pixels.dim(0), cfg_.num_positions(), cfg_.hidden_size});
    forward(ctx, pixels, last);
    return last;
  }

  /// pooler_output (B, C) = post_layernorm(last[:, 0]) — the norm applied a second time, as transformers does.
  view<T, D> pooler(context<D>& ctx, view<const T, D> last) const {
    const index_t B = last.dim(0), C = last.dim(2);
    view<T, D> cls = ctx.template alloc<T>({B, C});
    for (index_t b = 0; b < B; ++b) ops::copy<T, D>(ctx, last[b].slice(0, 1), cls.slice(b, 1));
    post_ln_.forward(ctx, cls, cls);
    return cls;
  }

 private:
  /// h (B, P, C) = [class; patch_embed(patchify(pixels))] + positions.
  void embed(context<D>& ctx, view<const float, D> pixels, view<T, D> h) const {
    const VisionConfig& c = cfg_;
    const index_t B = pixels.dim(0), N = c.num_patches();
    typename context<D>::scope scope(ctx);
    view<T, D> patches = ctx.template alloc<T>({B, N, c.num_channels * c.patch_size * c.patch_size});
    ops::patchify<T, D>(ctx, pixels, c.patch_size, patches);
    view<T, D> embedded = patch_embed_(ctx, patches);  // (B, N, C)
    view<const T, D> pos = position_embedding_.get().reshape({c.num_positions(), c.hidden_size});
    view<const T, D> cls = class_embedding_.get().reshape({1, c.hidden_size});
    for (index_t b = 0; b < B; ++b) {
      ops::add<T, D>(ctx, cls, pos.slice(0, 1), h[b].slice(0, 1));
      ops::add<T, D>(ctx, embedded[b], pos.slice(1, N), h[b].slice(1, N));
    }
  }

  VisionConfig cfg_;
  Linear<T, D> patch_embed_;
  tensor<T, D> class_embedding_, position_embedding_;
  std::vector<ViTBlock<T, D>> blocks_;
  LayerNorm<T, D> post_ln_;
};

}  // namespace qformer
