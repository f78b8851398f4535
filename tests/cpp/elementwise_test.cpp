// The vectorised elementwise kernels (src/kernels/elementwise.cpp) against the C library in
// double, on lengths with and without a vector tail, on every SIMD target of this CPU
// (simd_targets.hpp). Highway's exp/expm1/log1p are accurate to a few ulp: tolerances are a few
// fp32 ulp relative, plus fp32 summation error for the reductions.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/elementwise.hpp"
#include "simd_targets.hpp"

namespace linattn::kernels {
namespace {

constexpr double kUlp = 1.0 / (1 << 23);  // fp32 ulp at 1
const int64_t kLengths[] = {1, 3, 8, 16, 17, 31, 64, 100};

std::vector<float> uniform(int64_t n, float lo, float hi, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

void expect_relative(float got, double want, double ulps, const char* what, int64_t i) {
  ASSERT_NEAR(got, want, ulps * kUlp * std::abs(want)) << what << " entry " << i;
}

class Elementwise : public PerTarget {};
HWY_TARGET_INSTANTIATE_TEST_SUITE_P(Elementwise);

TEST_P(Elementwise, ExpMatchesLibmAndUnderflowsToZero) {
  std::mt19937 rng(1);
  for (int64_t n : kLengths) {
    const auto x = uniform(n, -80.0f, 10.0f, rng);
    auto e = x;
    exp_inplace(e.data(), n);
    for (int64_t i = 0; i < n; ++i) expect_relative(e[i], std::exp(double(x[i])), 4, "exp", i);
  }
  // Below -104 the decay factors' limit, exactly 0 (algorithms.md §3.3 S6), in body and tail.
  std::vector<float> deep(19, -104.5f);
  deep[3] = -1e30f, deep[18] = -INFINITY;
  exp_inplace(deep.data(), 19);
  for (float v : deep) ASSERT_EQ(v, 0.0f);
}

// e = lo + hi exactly, hi in {0, 1}; where e >= 1/2, lo is expm1(x) to a few ulp of itself (the
// precision of a decay near 1 that the split exists for), else lo = e.
TEST_P(Elementwise, ExpSplitKeepsTheDistanceFromOne) {
  std::mt19937 rng(2);
  for (int64_t n : kLengths) {
    auto x = uniform(n, -3.0f, 0.0f, rng);
    for (int64_t i = 0; i < n; i += 3) x[i] = -std::ldexp(1.0f, -20 - int(i % 7));  // near 1
    std::vector<float> e(n), lo(n), hi(n);
    exp_split(x.data(), e.data(), lo.data(), hi.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      expect_relative(e[i], std::exp(double(x[i])), 4, "exp_split e", i);
      const bool near_one = double(x[i]) >= std::log(0.5);
      ASSERT_EQ(hi[i], near_one ? 1.0f : 0.0f) << i;
      if (near_one) expect_relative(lo[i], std::expm1(double(x[i])), 8, "exp_split lo", i);
      else ASSERT_EQ(lo[i], e[i]) << i;
    }
  }
}

TEST_P(Elementwise, ExpShiftedSumReturnsTheSumOfWhatItWrites) {
  std::mt19937 rng(3);
  for (int64_t n : kLengths) {
    const auto x = uniform(n, -30.0f, 5.0f, rng);
    const float shift = 5.0f;
    auto e = x;
    const float sum = exp_shifted_sum(e.data(), n, shift);
    double want_sum = 0.0, written = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double want = std::exp(double(x[i] - shift));  // the kernel's fp32 argument
      expect_relative(e[i], want, 4, "exp_shifted_sum", i);
      want_sum += want, written += e[i];
    }
    ASSERT_NEAR(sum, want_sum, (4 + n) * kUlp * want_sum);
    ASSERT_NEAR(sum, written, n * kUlp * written);
  }
}

TEST_P(Elementwise, ReductionsAndUpdatesMatchDouble) {
  std::mt19937 rng(4);
  for (int64_t n : kLengths) {
    const auto a = uniform(n, -2.0f, 2.0f, rng), b = uniform(n, -2.0f, 2.0f, rng);
    const auto y0 = uniform(n, -2.0f, 2.0f, rng);
    double want_dot = 0.0, magnitude = 0.0, want_max = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
      want_dot += double(a[i]) * b[i], magnitude += std::abs(double(a[i]) * b[i]);
      want_max = std::max(want_max, double(a[i]));
    }
    ASSERT_NEAR(dot(a.data(), b.data(), n), want_dot, 2 * n * kUlp * magnitude) << "dot n=" << n;
    ASSERT_EQ(max_of(a.data(), n), want_max) << "max_of n=" << n;

    auto y = y0, z = y0;
    axpy(n, 0.75f, a.data(), y.data());
    mul_add(n, a.data(), b.data(), z.data());
    // One rounding on targets with FMA (AVX2 and up), two without (SSE4 and below).
    auto within_two_roundings = [](float got, float a, float x, float y) {
      const double magnitude = std::abs(double(a) * x) + std::abs(double(y));
      return std::abs(got - (double(a) * x + y)) <= 2 * std::ldexp(magnitude, -24);
    };
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(within_two_roundings(y[i], 0.75f, a[i], y0[i])) << "axpy " << i;
      ASSERT_TRUE(within_two_roundings(z[i], a[i], b[i], y0[i])) << "mul_add " << i;
    }
  }
  ASSERT_EQ(max_of(nullptr, 0), -INFINITY);
}

TEST_P(Elementwise, SigmoidAndSoftplusMatchLibm) {
  std::mt19937 rng(5);
  for (int64_t n : kLengths) {
    auto x = uniform(n, -15.0f, 15.0f, rng);
    x[0] = 40.0f;  // softplus(x) = x above 20
    std::vector<float> s(n);
    sigmoid(n, x.data(), s.data());
    auto sp = x;
    softplus_inplace(sp.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double xi = x[i];
      expect_relative(s[i], 1.0 / (1.0 + std::exp(-xi)), 6, "sigmoid", i);
      expect_relative(sp[i], std::log1p(std::exp(xi)), 6, "softplus", i);
    }
  }
}

}  // namespace
}  // namespace linattn::kernels
