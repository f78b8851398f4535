// The shared GEMM microkernels (src/kernels/gemm.cpp) against a naive product in double, on
// sizes that exercise full tiles, row tails and masked column tails, with and without
// accumulation, on every SIMD target of this CPU (simd_targets.hpp): the 512-bit targets' 8-row
// tile and the narrower targets' 4-row tile both run.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/gemm.hpp"
#include "simd_targets.hpp"

namespace linattn::kernels {
namespace {

std::vector<float> random(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// want[i, j] = (acc ? C0[i, j] : 0) + sum_p A[i, p] B[p, j] in double (A m x k, B k x n).
std::vector<double> naive(int64_t m, int64_t n, int64_t k, const std::vector<float>& A,
                          const std::vector<float>& B, const std::vector<float>& C0, bool acc) {
  std::vector<double> want(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = acc ? C0[i * n + j] : 0.0;
      for (int64_t p = 0; p < k; ++p) s += double(A[i * k + p]) * B[p * n + j];
      want[i * n + j] = s;
    }
  return want;
}

// fp32 sums of k normal products: a few roundings of 2^-24 times sqrt(k)-sized partial sums.
double tolerance(int64_t k) { return 1e-5 * (1.0 + std::sqrt(double(k))); }

class Gemm : public PerTarget {};
HWY_TARGET_INSTANTIATE_TEST_SUITE_P(Gemm);

TEST_P(Gemm, VariantsMatchNaiveProduct) {
  std::mt19937 rng(3);
  for (int64_t m : {1, 3, 8, 13, 64}) {
    for (int64_t n : {1, 5, 16, 33, 128}) {
      for (int64_t k : {1, 7, 64}) {
        const auto A = random(m * k, rng), B = random(k * n, rng), C0 = random(m * n, rng);
        std::vector<float> At(k * m), Bt(n * k);
        transpose(m, k, A.data(), k, At.data(), m);
        transpose(k, n, B.data(), n, Bt.data(), k);
        for (bool acc : {false, true}) {
          const auto want = naive(m, n, k, A, B, C0, acc);
          const Accumulate mode = acc ? Accumulate::yes : Accumulate::no;
          std::vector<float> nn = C0, nt = C0, tn = C0;
          gemm_nn(m, n, k, A.data(), k, B.data(), n, nn.data(), n, mode);
          gemm_nt(m, n, k, A.data(), k, Bt.data(), k, nt.data(), n, mode);
          gemm_tn(m, n, k, At.data(), m, B.data(), n, tn.data(), n, mode);
          for (int64_t i = 0; i < m * n; ++i) {
            ASSERT_NEAR(nn[i], want[i], tolerance(k)) << m << "x" << n << "x" << k << " nn acc=" << acc;
            ASSERT_NEAR(nt[i], want[i], tolerance(k)) << m << "x" << n << "x" << k << " nt acc=" << acc;
            ASSERT_NEAR(tn[i], want[i], tolerance(k)) << m << "x" << n << "x" << k << " tn acc=" << acc;
          }
        }
      }
    }
  }
}

// The lower-triangular products skip the blocks of zeros above the diagonal blocks; the result
// is the full product with the triangle's zeros (nn, tn), and lower_gemm_nt fills the lower block
// triangle only, leaving the blocks above untouched.
TEST_P(Gemm, TriangularVariantsMatchNaiveProduct) {
  std::mt19937 rng(11);
  for (int64_t m : {1, 5, 16, 17, 33, 64}) {
    for (int64_t n : {1, 7, 32, 65}) {
      auto L = random(m * m, rng);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = i + 1; j < m; ++j) L[i * m + j] = 0.0f;
      std::vector<float> Lt(m * m);
      transpose(m, m, L.data(), m, Lt.data(), m);
      const auto B = random(m * n, rng), C0 = random(m * n, rng);
      for (bool acc : {false, true}) {
        const Accumulate mode = acc ? Accumulate::yes : Accumulate::no;
        std::vector<float> nn = C0, tn = C0;
        lower_gemm_nn(m, n, L.data(), m, B.data(), n, nn.data(), n, mode);
        lower_gemm_tn(m, n, L.data(), m, B.data(), n, tn.data(), n, mode);
        const auto want_nn = naive(m, n, m, L, B, C0, acc), want_tn = naive(m, n, m, Lt, B, C0, acc);
        for (int64_t i = 0; i < m * n; ++i) {
          ASSERT_NEAR(nn[i], want_nn[i], tolerance(m)) << m << "x" << n << " lower nn acc=" << acc;
          ASSERT_NEAR(tn[i], want_tn[i], tolerance(m)) << m << "x" << n << " lower tn acc=" << acc;
        }
      }
      // X Y^T's lower block triangle, X and Y m x n.
      const auto X = random(m * n, rng), Y = random(m * n, rng);
      std::vector<float> Yt(n * m);
      transpose(m, n, Y.data(), n, Yt.data(), m);
      const auto want = naive(m, m, n, X, Yt, std::vector<float>(m * m), false);
      constexpr float kUntouched = 12345.0f;
      std::vector<float> S(m * m, kUntouched);
      lower_gemm_nt(m, n, X.data(), n, Y.data(), n, S.data(), m);
      for (int64_t i = 0; i < m; ++i) {
        const int64_t end = (i / kTriangleBlock + 1) * kTriangleBlock;
        for (int64_t j = 0; j < m; ++j) {
          if (j >= end) ASSERT_EQ(S[i * m + j], kUntouched) << i << "," << j;
          else ASSERT_NEAR(S[i * m + j], want[i * m + j], tolerance(n)) << i << "," << j;
        }
      }
    }
  }
}

}  // namespace
}  // namespace linattn::kernels
