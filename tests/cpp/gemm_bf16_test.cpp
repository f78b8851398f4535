// The bf16-operand GEMMs against an fp64 product of the bf16-rounded operands, on both pairwise
// dots (native where the CPU has it, and the widening one), every operand type, shapes with row
// tails, column tails and odd k, with and without accumulation; on every SIMD target of this CPU
// (simd_targets.hpp), so the widening dot runs in each target's vectors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/dtype.hpp"
#include "kernels/gemm_bf16.hpp"
#include "simd_targets.hpp"

namespace linattn::kernels {
namespace {

// A matrix as the GEMMs take it (fp32 values or bf16 bits) and as the oracle sees it (the
// bf16-rounded values in fp64).
template <typename T>
struct Operand {
  std::vector<T> data;
  std::vector<double> rounded;
};

template <typename T>
Operand<T> random_operand(int64_t rows, int64_t cols, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  Operand<T> x;
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = normal(rng);
    if constexpr (std::is_same_v<T, float>) x.data.push_back(v);
    else x.data.push_back(f32_to_bf16(v));
    x.rounded.push_back(bf16_to_f32(f32_to_bf16(v)));
  }
  return x;
}

// Runs the test body on every pairwise dot this CPU has.
template <typename Body>
void on_each_dot(Body body) {
  for (bool widening : {false, true}) {
    force_bf16_widening(widening);
    if (!widening && bf16_dot() != Bf16Dot::native) continue;
    SCOPED_TRACE(widening ? "widening dot" : "native dot");
    body();
  }
  force_bf16_widening(false);
}

// |C - want| within fp32 summation error: k roundings of at most 2^-24 of the partial sums,
// bounded by the sum of |products| (products of bf16 values are exact in fp32).
void expect_close(const std::vector<float>& C, const std::vector<double>& want,
                  const std::vector<double>& magnitude, int64_t k, const char* what) {
  for (size_t i = 0; i < C.size(); ++i) {
    const double tol = 2.0 * (k + 1) * std::ldexp(magnitude[i], -24);
    ASSERT_NEAR(C[i], want[i], tol) << what << " entry " << i;
  }
}

template <typename TA, typename TB>
void check_general_shapes() {
  std::mt19937 rng(5);
  for (int64_t m : {1, 3, 8, 13, 64}) {
    for (int64_t n : {1, 5, 16, 33, 128}) {
      for (int64_t k : {1, 2, 7, 64, 65}) {
        SCOPED_TRACE(testing::Message() << m << "x" << n << "x" << k);
        const auto A = random_operand<TA>(m, k, rng), B = random_operand<TB>(k, n, rng);
        const auto At = random_operand<TA>(k, m, rng);
        std::normal_distribution<float> normal;
        std::vector<float> C0(m * n);
        for (auto& x : C0) x = normal(rng);
        for (bool acc : {false, true}) {
          std::vector<double> nn(m * n), tn(m * n), nn_abs(m * n), tn_abs(m * n);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              double s = acc ? C0[i * n + j] : 0.0, t = s, s_abs = std::abs(s), t_abs = s_abs;
              for (int64_t p = 0; p < k; ++p) {
                s += A.rounded[i * k + p] * B.rounded[p * n + j];
                t += At.rounded[p * m + i] * B.rounded[p * n + j];
                s_abs += std::abs(A.rounded[i * k + p] * B.rounded[p * n + j]);
                t_abs += std::abs(At.rounded[p * m + i] * B.rounded[p * n + j]);
              }
              nn[i * n + j] = s, tn[i * n + j] = t, nn_abs[i * n + j] = s_abs, tn_abs[i * n + j] = t_abs;
            }
          const Accumulate mode = acc ? Accumulate::yes : Accumulate::no;
          std::vector<float> got_nn = C0, got_tn = C0;
          gemm_bf16_nn(m, n, k, A.data.data(), k, B.data.data(), n, got_nn.data(), n, mode);
          gemm_bf16_tn(m, n, k, At.data.data(), m, B.data.data(), n, got_tn.data(), n, mode);
          expect_close(got_nn, nn, nn_abs, k, acc ? "nn acc" : "nn");
          expect_close(got_tn, tn, tn_abs, k, acc ? "tn acc" : "tn");
        }
      }
    }
  }
}

class GemmBf16 : public PerTarget {};
HWY_TARGET_INSTANTIATE_TEST_SUITE_P(GemmBf16);

TEST_P(GemmBf16, GeneralProductsMatchRoundedFp64) {
  on_each_dot([] {
    check_general_shapes<float, float>();
    check_general_shapes<float, uint16_t>();
    check_general_shapes<uint16_t, float>();
    check_general_shapes<uint16_t, uint16_t>();
  });
}

template <typename TA, typename TB>
void check_triangular_shapes() {
  std::mt19937 rng(7);
  for (int64_t m : {1, 5, 16, 17, 33, 64}) {
    for (int64_t nk : {1, 7, 32, 65, 128}) {
      SCOPED_TRACE(testing::Message() << "m=" << m << " n/k=" << nk);
      // L * B with L lower triangular.
      auto L = random_operand<TA>(m, m, rng);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = i + 1; j < m; ++j) L.data[i * m + j] = 0, L.rounded[i * m + j] = 0;
      const auto B = random_operand<TB>(m, nk, rng);
      std::vector<double> want(m * nk), magnitude(m * nk);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < nk; ++j)
          for (int64_t p = 0; p <= i; ++p) {
            want[i * nk + j] += L.rounded[i * m + p] * B.rounded[p * nk + j];
            magnitude[i * nk + j] += std::abs(L.rounded[i * m + p] * B.rounded[p * nk + j]);
          }
      std::vector<float> got(m * nk);
      lower_gemm_bf16_nn(m, nk, L.data.data(), m, B.data.data(), nk, got.data(), nk, Accumulate::no);
      expect_close(got, want, magnitude, m, "lower nn");

      // The lower block triangle of X Y^T; entries above the diagonal blocks stay untouched.
      const auto X = random_operand<TA>(m, nk, rng);
      const auto Y = random_operand<TB>(m, nk, rng);
      constexpr float kUntouched = 12345.0f;
      std::vector<float> S(m * m, kUntouched);
      lower_gemm_bf16_nt(m, nk, X.data.data(), nk, Y.data.data(), nk, S.data(), m);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t end = (i / kTriangleBlock + 1) * kTriangleBlock;
        for (int64_t j = 0; j < m; ++j) {
          if (j >= end) {
            ASSERT_EQ(S[i * m + j], kUntouched) << i << "," << j;
            continue;
          }
          double s = 0, s_abs = 0;
          for (int64_t p = 0; p < nk; ++p) {
            s += X.rounded[i * nk + p] * Y.rounded[j * nk + p];
            s_abs += std::abs(X.rounded[i * nk + p] * Y.rounded[j * nk + p]);
          }
          ASSERT_NEAR(S[i * m + j], s, 2.0 * (nk + 1) * std::ldexp(s_abs, -24)) << i << "," << j;
        }
      }
    }
  }
}

TEST_P(GemmBf16, TriangularProductsMatchRoundedFp64) {
  on_each_dot([] {
    check_triangular_shapes<float, float>();
    check_triangular_shapes<float, uint16_t>();
    check_triangular_shapes<uint16_t, uint16_t>();
  });
}

// fp32 operands are rounded exactly as f32_to_bf16 (nearest, ties to even), in the vector body
// and the scalar tail of both packings: an identity factor makes C the rounded operand itself.
TEST_P(GemmBf16, RoundsFp32OperandsToNearestEven) {
  const int64_t n = 37;  // a vector body and a tail
  std::vector<float> values;
  for (int64_t j = 0; j < n; ++j) {
    const float tie = std::ldexp(1.0f + std::ldexp(float(2 * j + 1), -8), j % 7 - 3);  // halfway
    values.push_back(j % 3 == 0 ? tie : j % 3 == 1 ? -tie : std::nextafter(tie, 0.0f));
  }
  std::vector<uint16_t> identity(n * n, 0);
  std::vector<float> diagonal(n * n, 0.0f);
  for (int64_t j = 0; j < n; ++j) {
    identity[j * n + j] = f32_to_bf16(1.0f);
    diagonal[j * n + j] = values[j];
  }
  on_each_dot([&] {
    std::vector<float> left(n * n), right(n * n);  // rounded as A, as B
    gemm_bf16_nn(n, n, n, diagonal.data(), n, identity.data(), n, left.data(), n, Accumulate::no);
    gemm_bf16_nn(n, n, n, identity.data(), n, diagonal.data(), n, right.data(), n, Accumulate::no);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const float want = i == j ? bf16_to_f32(f32_to_bf16(values[j])) : 0.0f;
        ASSERT_EQ(left[i * n + j], want) << i << "," << j;
        ASSERT_EQ(right[i * n + j], want) << i << "," << j;
      }
  });
}

// Which bf16 path runs on this CPU (printed), and that the choice follows the CPU: the native
// dot exactly where it has AVX512-BF16; where it lacks it the native dot cannot run and is
// skipped with that reason (the widening dot is tested above either way).
TEST(Bf16Dispatch, NativeDotExactlyWhereTheCpuHasIt) {
#if defined(__x86_64__) && defined(__GNUC__)
  const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
#else
  const bool cpu = false;
#endif
  std::printf("bf16 dot on this CPU: %s; chunk products with bf16 inputs: %s\n",
              bf16_dot() == Bf16Dot::native ? "native (vdpbf16ps)" : "widening",
              chunk_products(true) == Products::bf16 ? "bf16" : "fp32 (rows widened on load)");
  EXPECT_EQ(bf16_dot() == Bf16Dot::native, cpu);
  if (!cpu)
    GTEST_SKIP() << "this CPU lacks AVX512-BF16 (no vdpbf16ps): the native bf16 dot and the "
                    "bf16-product chunk forward cannot run here";
  EXPECT_EQ(chunk_products(true), Products::bf16);
}

// The chunk forms' products: bf16 only for bf16 inputs on the native dot, fp32 otherwise.
TEST(Bf16Dispatch, ChunkProductsFollowTheDot) {
  EXPECT_EQ(chunk_products(false), Products::f32);
  EXPECT_EQ(chunk_products(true), bf16_dot() == Bf16Dot::native ? Products::bf16 : Products::f32);
  force_bf16_widening(true);
  EXPECT_EQ(chunk_products(true), Products::f32);
  force_bf16_widening(false);
}

}  // namespace
}  // namespace linattn::kernels
