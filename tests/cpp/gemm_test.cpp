// The shared GEMM microkernels against a naive triple loop, on sizes that exercise full tiles,
// row tails and masked column tails, with and without accumulation.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/gemm.hpp"

namespace linattn::kernels {
namespace {

std::vector<float> random(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

TEST(Gemm, VariantsMatchNaiveProduct) {
  std::mt19937 rng(3);
  for (int64_t m : {1, 3, 8, 13, 64}) {
    for (int64_t n : {1, 5, 16, 33, 128}) {
      for (int64_t k : {1, 7, 64}) {
        const auto A = random(m * k, rng), B = random(k * n, rng), C0 = random(m * n, rng);
        std::vector<float> At(k * m), Bt(n * k);
        transpose(m, k, A.data(), k, At.data(), m);
        transpose(k, n, B.data(), n, Bt.data(), k);
        for (bool acc : {false, true}) {
          std::vector<double> want(m * n);
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              double s = acc ? C0[i * n + j] : 0.0;
              for (int64_t p = 0; p < k; ++p) s += double(A[i * k + p]) * B[p * n + j];
              want[i * n + j] = s;
            }
          const Accumulate mode = acc ? Accumulate::yes : Accumulate::no;
          std::vector<float> nn = C0, nt = C0, tn = C0;
          gemm_nn(m, n, k, A.data(), k, B.data(), n, nn.data(), n, mode);
          gemm_nt(m, n, k, A.data(), k, Bt.data(), k, nt.data(), n, mode);
          gemm_tn(m, n, k, At.data(), m, B.data(), n, tn.data(), n, mode);
          for (int64_t i = 0; i < m * n; ++i) {
            const double tol = 1e-5 * (1.0 + std::sqrt(double(k)));
            ASSERT_NEAR(nn[i], want[i], tol) << m << "x" << n << "x" << k << " nn acc=" << acc;
            ASSERT_NEAR(nt[i], want[i], tol) << m << "x" << n << "x" << k << " nt acc=" << acc;
            ASSERT_NEAR(tn[i], want[i], tol) << m << "x" << n << "x" << k << " tn acc=" << acc;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace linattn::kernels
