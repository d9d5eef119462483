#pragma once
/// \file
/// qformer's own CUDA kernels (nvcc only; included by <qformer/cuda.hpp> under __CUDACC__), one file per family
/// in kernels/: common, norms, elementwise, gemv, attention, instantiate. One kernel per op, each launched by the
/// function of the same name declared in launch.hpp. Arithmetic is in float whatever the storage type, as the
/// CPU backend does, so fp32 results agree with it to rounding.

#ifndef __CUDACC__
#error "kernels.cuh is CUDA C++: include <qformer/cuda.hpp> from a .cu file compiled by nvcc"
#endif

#include "kernels/attention.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/gemv.cuh"
#include "kernels/instantiate.cuh"
#include "kernels/norms.cuh"
