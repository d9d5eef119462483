#pragma once
/// \file
/// The umbrella for CUDA users: everything of qformer.hpp plus the cuda device policy (device memory, a context
/// with stream and cuBLASLt handle, backend<cuda>). Link qformer::cuda. CPU-only users never include this.
/// The kernels of the ops (kernels.cuh) are defined where nvcc compiles it: run the ops from .cu files. Under
/// g++ it still declares everything, and cuBLASLt's linear works.

#include "qformer.hpp"

#include "backends/cuda/backend.hpp"
#include "backends/cuda/device.hpp"
#include "backends/cuda/graph.hpp"
#if defined(__CUDACC__)
#include "backends/cuda/kernels.cuh"
#endif
