#pragma once
/// \file
/// How the CPU backend splits work across threads (OpenMP), in one place.
///
/// A split of one thread runs inline and never enters the OpenMP runtime, and a kernel called inside a team stays
/// on its thread. A one-thread OpenMP region is an inactive level, so a kernel inside one may open a nested team,
/// whose threads libgomp creates and ends every time: the decode step's attention (one query: its heads in a
/// one-thread region, each head's two GEMVs in a nested two-thread team) made 2,048 threads per OPT-2.7b step, a
/// third of the step's time, and 12x under OMP_WAIT_POLICY=ACTIVE.

#include "../../core/tensor.hpp"

#include <Eigen/Core>

#include <algorithm>
#if defined(_OPENMP)
#include <omp.h>
#endif

namespace qformer::cpu_detail {

/// Threads for `work_items` independent items: Eigen's setting (the qformer program's --threads sets it), at most
/// one per item, and 1 inside a parallel region (the caller's team already owns the cores).
inline int kernel_threads(index_t work_items) {
#if defined(_OPENMP)
  if (omp_in_parallel()) return 1;
  return static_cast<int>(std::max<index_t>(1, std::min<index_t>(Eigen::nbThreads(), work_items)));
#else
  (void)work_items;
  return 1;
#endif
}

/// fn(i, slot) for every i in [0, n), split statically across `threads` threads; slot in [0, threads) names the
/// calling thread (for per-thread scratch). threads <= 1 runs inline on the caller with slot 0.
template <class Fn>
void parallel_for(index_t n, int threads, Fn&& fn) {
#if defined(_OPENMP)
  if (threads > 1 && n > 1) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (index_t i = 0; i < n; ++i) fn(i, static_cast<index_t>(omp_get_thread_num()));
    return;
  }
#endif
  (void)threads;
  for (index_t i = 0; i < n; ++i) fn(i, index_t{0});
}

/// Two loops in one team (a barrier between them, so the second may read what the first wrote): first(i) for i
/// in [0, n1), then second(j) for j in [0, n2), each split statically. Saves a region per call.
template <class First, class Second>
void parallel_for_then(int threads, index_t n1, First&& first, index_t n2, Second&& second) {
#if defined(_OPENMP)
  if (threads > 1) {
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
      for (index_t i = 0; i < n1; ++i) first(i);
#pragma omp for schedule(static)
      for (index_t j = 0; j < n2; ++j) second(j);
    }
    return;
  }
#endif
  (void)threads;
  for (index_t i = 0; i < n1; ++i) first(i);
  for (index_t j = 0; j < n2; ++j) second(j);
}

}  // namespace qformer::cpu_detail
