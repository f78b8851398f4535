// Peak-FMA probe: the fp32 FMA throughput this machine reaches from registers, the ceiling every
// "% of peak" figure in docs/performance.md is measured against.
//
// Each thread runs kChains independent dependency chains acc_i = acc_i * m + a, one vector FMA
// each per iteration. FMA latency is about 4 cycles with up to 2 FMA pipes, so at least 8 chains
// are needed to keep the pipes full; 12 leaves margin and still fits AVX2's 16 vector registers
// together with the two constant operands. m < 1 makes every chain converge to a / (1 - m), so
// values stay normal (no denormal or overflow slow paths). The chains are summed into a volatile
// sink after the loop, so the compiler must perform every FMA.
//
// Compiled once per x86 target by Highway (foreach_target.h); HWY_DYNAMIC_DISPATCH picks the best
// target the CPU supports at run time, so the binary stays portable (no -march flags).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include <omp.h>

#include "linattn/bench.hpp"
#include "linattn/error.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/peak_fma.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace linattn {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Runs `iters` iterations of 12 independent vector FMAs; returns the flops done (2 per lane per
// FMA) and stores the sum of the accumulators in *sink.
int64_t FmaBurst(int64_t iters, float seed, float* sink) {
  constexpr int kChains = 12;
  const hn::ScalableTag<float> d;
  const auto m = hn::Set(d, 0.999f);
  const auto a = hn::Set(d, seed);
  auto x0 = hn::Set(d, seed * 1.0f), x1 = hn::Set(d, seed * 2.0f), x2 = hn::Set(d, seed * 3.0f);
  auto x3 = hn::Set(d, seed * 4.0f), x4 = hn::Set(d, seed * 5.0f), x5 = hn::Set(d, seed * 6.0f);
  auto x6 = hn::Set(d, seed * 7.0f), x7 = hn::Set(d, seed * 8.0f), x8 = hn::Set(d, seed * 9.0f);
  auto x9 = hn::Set(d, seed * 10.0f), x10 = hn::Set(d, seed * 11.0f);
  auto x11 = hn::Set(d, seed * 12.0f);
  for (int64_t i = 0; i < iters; ++i) {
    x0 = hn::MulAdd(x0, m, a);
    x1 = hn::MulAdd(x1, m, a);
    x2 = hn::MulAdd(x2, m, a);
    x3 = hn::MulAdd(x3, m, a);
    x4 = hn::MulAdd(x4, m, a);
    x5 = hn::MulAdd(x5, m, a);
    x6 = hn::MulAdd(x6, m, a);
    x7 = hn::MulAdd(x7, m, a);
    x8 = hn::MulAdd(x8, m, a);
    x9 = hn::MulAdd(x9, m, a);
    x10 = hn::MulAdd(x10, m, a);
    x11 = hn::MulAdd(x11, m, a);
  }
  const auto s0 = hn::Add(hn::Add(hn::Add(x0, x1), hn::Add(x2, x3)),
                          hn::Add(hn::Add(x4, x5), hn::Add(x6, x7)));
  const auto s1 = hn::Add(hn::Add(x8, x9), hn::Add(x10, x11));
  *sink = hn::GetLane(hn::SumOfLanes(d, hn::Add(s0, s1)));
  return iters * kChains * static_cast<int64_t>(hn::Lanes(d)) * 2;
}

const char* ChosenTargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace linattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn {

HWY_EXPORT(FmaBurst);
HWY_EXPORT(ChosenTargetName);

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

volatile float g_sink = 0.0f;     // where every burst's result ends up
volatile float g_seed = 1e-3f;    // read at run time so the chains cannot be constant-folded

}  // namespace

const char* simd_target_name() { return HWY_DYNAMIC_DISPATCH(ChosenTargetName)(); }

double peak_fma_gflops(int threads, double seconds) {
  if (threads < 1) fail("peak_fma_gflops: threads must be >= 1, got ", threads);
  if (!(seconds > 0.0)) fail("peak_fma_gflops: seconds must be > 0, got ", seconds);
  const float seed = g_seed;

  // Calibration, which is also the warm-up: double the burst until it takes >= 10 ms on this
  // thread, then size one trial so that each trial lasts about seconds / kTrials.
  constexpr int kTrials = 3;
  int64_t iters = 1 << 12;
  double elapsed = 0.0;
  for (;;) {
    float s = 0.0f;
    const auto start = Clock::now();
    HWY_DYNAMIC_DISPATCH(FmaBurst)(iters, seed, &s);
    elapsed = seconds_since(start);
    g_sink = g_sink + s;
    if (elapsed >= 0.01 || iters >= (int64_t{1} << 40)) break;
    iters *= 2;
  }
  const int64_t trial_iters =
      std::max<int64_t>(1, static_cast<int64_t>(iters * (seconds / kTrials) / elapsed));

  // Trials: all threads start together after a barrier; the wall time runs from the barrier
  // until the last thread is done, and the flops of every thread are summed.
  double best = 0.0;
  std::vector<int64_t> flops(static_cast<size_t>(threads));
  std::vector<float> sinks(static_cast<size_t>(threads));
  for (int trial = 0; trial < kTrials; ++trial) {
    std::fill(flops.begin(), flops.end(), 0);
    Clock::time_point start, stop;
#pragma omp parallel num_threads(threads)
    {
      const int id = omp_get_thread_num();
#pragma omp barrier
#pragma omp master
      start = Clock::now();
#pragma omp barrier
      flops[id] = HWY_DYNAMIC_DISPATCH(FmaBurst)(trial_iters, seed, &sinks[id]);
#pragma omp barrier
#pragma omp master
      stop = Clock::now();
    }
    int64_t total = 0;
    for (int t = 0; t < threads; ++t) {
      total += flops[t];
      g_sink = g_sink + sinks[t];
    }
    const double wall = std::chrono::duration<double>(stop - start).count();
    if (wall > 0.0) best = std::max(best, static_cast<double>(total) / wall * 1e-9);
  }
  return best;
}

}  // namespace linattn
#endif  // HWY_ONCE
