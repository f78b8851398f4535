// Threading over OpenMP with a deterministic partition: work item i is always computed by the
// same code with the same reduction order, whatever the thread count, so results are bitwise
// reproducible across runs and thread counts.
#pragma once

#include <cstdint>

#include <omp.h>

namespace linattn {

inline int max_threads() { return omp_get_max_threads(); }

// Runs body(i) for i in [0, n) on the OpenMP team. Items must not write shared memory that
// another item writes; each item owns its outputs (e.g. one (sequence, head) pair).
template <typename Body>
void parallel_for(int64_t n, Body&& body) {
  if (n <= 0) return;
  if (n == 1 || omp_get_max_threads() == 1 || omp_in_parallel()) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// parallel_for for items of very different cost (the tiles of causal attention): items are
// handed out one at a time as threads free up. Each item still owns its outputs, so which
// thread runs it changes no bit of the result.
template <typename Body>
void parallel_for_dynamic(int64_t n, Body&& body) {
  if (n <= 0) return;
  if (n == 1 || omp_get_max_threads() == 1 || omp_in_parallel()) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// The two-level partition of the chunk kernels: with at least as many work items as threads,
// the items run in parallel and each item's inner parallel_for loops run serially; with fewer,
// the items run one after another and their inner loops get every thread. Kernels keep the
// arithmetic of both ways identical, so the thread count changes no bit of the result.
inline bool items_cover_threads(int64_t items) { return items >= omp_get_max_threads(); }

template <typename Body>
void for_each_work_item(int64_t items, Body&& body) {
  if (items_cover_threads(items)) {
    parallel_for(items, body);
  } else {
    for (int64_t i = 0; i < items; ++i) body(i);
  }
}

}  // namespace linattn
