#pragma once
/// \file
/// The umbrella for CUDA users: everything of qformer.hpp plus the cuda device policy (device memory, a context
/// with stream and cuBLASLt handle, backend<cuda>). Link qformer::cuda. CPU-only users never include this.

#include "qformer.hpp"

#include "backends/cuda/backend.hpp"
#include "backends/cuda/device.hpp"
