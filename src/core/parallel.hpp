// Threading over OpenMP with a deterministic partition: work item i is always computed by the
// same code with the same reduction order, whatever the thread count, so results are bitwise
// reproducible across runs and thread counts.
#pragma once

#include <cstdint>

#include <omp.h>

#include "core/float_mode.hpp"

namespace linattn {

inline int max_threads() { return omp_get_max_threads(); }

// How parallel_for hands out items: in equal contiguous blocks (fixed), or one at a time as
// threads free up (dynamic: for items of very different cost, such as the tiles of causal
// attention, and so that a thread descheduled by another process does not hold the others up at
// the barrier). Each item owns its outputs either way, so the schedule changes no bit.
enum class Schedule { fixed, dynamic };

// Runs body(i) for i in [0, n) on the OpenMP team. Items must not write shared memory that
// another item writes; each item owns its outputs (e.g. one (sequence, head) pair).
template <Schedule schedule = Schedule::fixed, typename Body>
void parallel_for(int64_t n, Body&& body) {
  if (n <= 0) return;
  if (n == 1 || omp_get_max_threads() == 1 || omp_in_parallel()) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  // Every thread of the team computes in the calling thread's floating-point mode (FTZ | DAZ
  // in the fast forms: core/float_mode.hpp) and goes back to its own afterwards.
  const unsigned mode = float_mode();
#pragma omp parallel
  {
    const ScopedFloatMode thread_mode(mode);
    if constexpr (schedule == Schedule::dynamic) {
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < n; ++i) body(i);
    } else {
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) body(i);
    }
  }
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

// parallel_for over n items when the call does at least kParallelWork multiply-adds in all:
// a parallel region costs more than a tiny call (a decode step, the finite-difference checks'
// forwards), and oversubscribed machines make it far worse. Items own their outputs either way.
inline constexpr int64_t kParallelWork = 1 << 14;
template <typename Body>
void parallel_for_work(int64_t n, int64_t work, Body&& body) {
  if (work >= kParallelWork) {
    parallel_for(n, body);
  } else {
    for (int64_t i = 0; i < n; ++i) body(i);
  }
}

}  // namespace linattn
