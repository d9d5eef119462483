# The CUDA backend's build: nvcc for the .cu tests and programs, cuBLAS for GEMM.
# CMake 3.25.1 cannot set CUDA_STANDARD 20, so .cu files are compiled as C++17 (the CUDA headers of qformer
# are written for it); nvcc's host compiler is taken from CUDAHOSTCXX.
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "QFORMER_CUDA=ON but no CUDA compiler was found (put nvcc on PATH or set CUDACXX)")
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
add_library(qformer_cuda INTERFACE)
add_library(qformer::cuda ALIAS qformer_cuda)
target_link_libraries(qformer_cuda INTERFACE qformer CUDA::cublas CUDA::cublasLt CUDA::cudart)
target_compile_options(qformer_cuda INTERFACE
  $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr -diag-suppress=20011,20012,20013,20014,20015>)
