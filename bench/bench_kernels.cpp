// Shared microkernels at the sizes one chunk of the chunk-parallel forms uses (C = 64,
// K = V = 128), single thread, in GFLOP/s; compare with BM_PeakFMA of bench_reference.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "kernels/gemm.hpp"

namespace {

using linattn::kernels::Accumulate;

template <typename Fn>
void run_gemm(benchmark::State& state, Fn gemm) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> A(m * k), B(k * n), C(m * n);
  for (auto& x : A) x = normal(rng);
  for (auto& x : B) x = normal(rng);
  for (auto _ : state) {
    gemm(m, n, k, A.data(), B.data(), C.data());
    benchmark::DoNotOptimize(C.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_GemmNN(benchmark::State& state) {
  run_gemm(state, [](int64_t m, int64_t n, int64_t k, const float* A, const float* B, float* C) {
    linattn::kernels::gemm_nn(m, n, k, A, k, B, n, C, n, Accumulate::no);
  });
}
void BM_GemmNT(benchmark::State& state) {
  run_gemm(state, [](int64_t m, int64_t n, int64_t k, const float* A, const float* B, float* C) {
    linattn::kernels::gemm_nt(m, n, k, A, k, B, k, C, n, Accumulate::no);
  });
}
void BM_GemmTN(benchmark::State& state) {
  run_gemm(state, [](int64_t m, int64_t n, int64_t k, const float* A, const float* B, float* C) {
    linattn::kernels::gemm_tn(m, n, k, A, m, B, n, C, n, Accumulate::no);
  });
}

// (m, n, k): Q S (64x128x128), A V (64x128x64), Q K^T (64x64x128), K^T V (128x128x64).
#define CHUNK_SHAPES ->Args({64, 128, 128})->Args({64, 128, 64})->Args({64, 64, 128})->Args({128, 128, 64})
BENCHMARK(BM_GemmNN) CHUNK_SHAPES;
BENCHMARK(BM_GemmNT) CHUNK_SHAPES;
BENCHMARK(BM_GemmTN) CHUNK_SHAPES;

}  // namespace

BENCHMARK_MAIN();
