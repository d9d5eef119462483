#pragma once
/// \file
/// The umbrella for CUDA users: everything of qformer.hpp plus the cuda device policy (device memory, a context
/// with stream and cuBLASLt handle, backend<cuda>). Link qformer::cuda. CPU-only users never include this.
/// The kernels of the ops (kernels.cuh) are defined where nvcc compiles it: run the ops from .cu files, or define
/// QFORMER_CUDA_INSTANTIATE_KERNELS in one .cu file of the program (before this include) and use the CUDA ops and
/// models from g++ translation units too (they include this header and link that file's object).

#include "qformer.hpp"

#include "backends/cuda/backend.hpp"
#include "backends/cuda/device.hpp"
#include "backends/cuda/graph.hpp"
#if defined(__CUDACC__)
#include "backends/cuda/kernels.cuh"
#endif
