#pragma once
/// \file
/// from_pretrained for any model class: config.json -> Model(config), then its weights from the folder's
/// (single or sharded) safetensors. Reports the checkpoint tensors the model did not read.

#include "../io/checkpoint.hpp"
#include "config.hpp"

#include <string>
#include <vector>

namespace qformer {

/// Builds `Model` from `<folder>/config.json` and loads it from the folder's weights. `unused`, when given,
/// receives the names of checkpoint tensors nothing read.
template <class Model>
Model load_pretrained(const std::string& folder, std::vector<std::string>* unused = nullptr) {
  Model model(load_blip2_config(folder));
  checkpoint weights(folder);
  model.load(weight_scope(weights));
  if (unused) *unused = weights.unused();
  return model;
}

}  // namespace qformer
