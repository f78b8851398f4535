// Shared microkernels at the sizes one chunk of the chunk-parallel forms uses (C = 64,
// K = V = 128), single thread, in GFLOP/s; compare with BM_PeakFMA of bench_reference.
#include <benchmark/benchmark.h>

#include <random>
#include <type_traits>
#include <vector>

#include "core/dtype.hpp"
#include "kernels/gemm.hpp"
#include "kernels/gemm_bf16.hpp"

namespace {

using linattn::kernels::Accumulate;

// T = float, or uint16_t for operands given as bf16 bits.
template <typename T = float, typename Fn>
void run_gemm(benchmark::State& state, Fn gemm) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<T> A(m * k), B(k * n);
  std::vector<float> C(m * n);
  auto draw = [&] {
    if constexpr (std::is_same_v<T, float>) return normal(rng);
    else return linattn::f32_to_bf16(normal(rng));
  };
  for (auto& x : A) x = draw();
  for (auto& x : B) x = draw();
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

// The bf16-operand GEMMs (gemm_bf16.hpp) with bf16 inputs, and with fp32 inputs rounded while
// packed (the forward's gated queries times the state).
void BM_GemmBf16NN(benchmark::State& state) {
  run_gemm<uint16_t>(state, [](int64_t m, int64_t n, int64_t k, const uint16_t* A, const uint16_t* B, float* C) {
    linattn::kernels::gemm_bf16_nn(m, n, k, A, k, B, n, C, n, Accumulate::no);
  });
}
void BM_GemmBf16NNFromF32(benchmark::State& state) {
  run_gemm(state, [](int64_t m, int64_t n, int64_t k, const float* A, const float* B, float* C) {
    linattn::kernels::gemm_bf16_nn(m, n, k, A, k, B, n, C, n, Accumulate::no);
  });
}
void BM_GemmBf16TN(benchmark::State& state) {
  run_gemm<uint16_t>(state, [](int64_t m, int64_t n, int64_t k, const uint16_t* A, const uint16_t* B, float* C) {
    linattn::kernels::gemm_bf16_tn(m, n, k, A, m, B, n, C, n, Accumulate::no);
  });
}

// (m, n, k): Q S (64x128x128), A V (64x128x64), Q K^T (64x64x128), K^T V (128x128x64).
#define CHUNK_SHAPES ->Args({64, 128, 128})->Args({64, 128, 64})->Args({64, 64, 128})->Args({128, 128, 64})
BENCHMARK(BM_GemmNN) CHUNK_SHAPES;
BENCHMARK(BM_GemmNT) CHUNK_SHAPES;
BENCHMARK(BM_GemmTN) CHUNK_SHAPES;
BENCHMARK(BM_GemmBf16NN) CHUNK_SHAPES;
BENCHMARK(BM_GemmBf16NNFromF32) CHUNK_SHAPES;
BENCHMARK(BM_GemmBf16TN) CHUNK_SHAPES;

}  // namespace

BENCHMARK_MAIN();
