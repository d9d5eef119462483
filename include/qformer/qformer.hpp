#pragma once
/// \file
/// qformer: BLIP-2 and the Q-Former in header-only C++ on Eigen. The umbrella header for CPU users:
/// core types, ops with the CPU backend, layers, models and checkpoint / config loading. Nothing of CUDA is
/// reached from here; CUDA users include <qformer/cuda.hpp> as well.

#include "core/context.hpp"
#include "core/device.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "core/recorded_pass.hpp"
#include "core/tensor.hpp"

#include "backends/cpu/backend.hpp"
#include "ops/ops.hpp"

#include "generate/generation_config.hpp"
#include "generate/logits_processors.hpp"
#include "generate/options.hpp"
#include "generate/search.hpp"

#include "layers/attention.hpp"
#include "layers/cached_attention.hpp"
#include "layers/embedding.hpp"
#include "layers/kv_cache.hpp"
#include "layers/concepts.hpp"
#include "layers/layer_norm.hpp"
#include "layers/linear.hpp"
#include "layers/mlp.hpp"
#include "layers/opt_block.hpp"
#include "layers/rms_norm.hpp"
#include "layers/t5_block.hpp"
#include "layers/qformer_block.hpp"
#include "layers/vit_block.hpp"

#include "io/checkpoint.hpp"
#include "io/safetensors.hpp"

#include "models/blip2.hpp"
#include "models/config.hpp"
#include "models/opt.hpp"
#include "models/qformer.hpp"
#include "models/retrieval.hpp"
#include "models/t5.hpp"
#include "models/vision_encoder.hpp"

#define QFORMER_VERSION_MAJOR 0
#define QFORMER_VERSION_MINOR 1
#define QFORMER_VERSION_PATCH 0
