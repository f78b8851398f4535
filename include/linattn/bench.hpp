// Benchmark foundation: the peak-FMA probe every GFLOP/s figure is compared with, the SIMD
// target chosen at run time, and the timing utility shared by the C++ benchmark programs and
// the CLI's bench. See docs/performance.md for how the numbers are read.
#pragma once

#include <functional>

namespace linattn {

// Measured fp32 FMA throughput in GFLOP/s (one FMA = 2 flops), summed over `threads` OpenMP
// threads running at the same time. Each thread runs a register-only loop of independent
// vector FMA chains (no memory traffic) in the widest SIMD target Highway picks at run time.
// `seconds` is the measuring time (split into a few trials; the best trial is reported), plus a
// short calibration/warm-up. Throws Error if threads < 1 or seconds is not positive.
double peak_fma_gflops(int threads, double seconds = 0.2);

// Name of the Highway target chosen by dynamic dispatch on this machine, e.g. "AVX3", "AVX2".
const char* simd_target_name();

struct Timing {
  double median_s = 0.0;  // median wall time of one call, seconds
  double min_s = 0.0;     // fastest call, seconds
  int reps = 0;           // timed calls (the warm-up call is not counted)
};

// Calls fn once to warm up, then times single calls until at least min_seconds of timed calls
// and at least min_reps calls have run. Meant for calls of a microsecond or more (each call is
// timed on its own with a steady clock). Throws Error if fn is empty, min_seconds is negative
// or NaN, or min_reps < 1.
Timing time_it(const std::function<void()>& fn, double min_seconds = 0.3, int min_reps = 3);

}  // namespace linattn
