#include "kernels/elementwise.hpp"

#include <algorithm>
#include <cmath>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/elementwise.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

HWY_BEFORE_NAMESPACE();
namespace linattn::kernels {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D = hn::ScalableTag<float>;

void ExpInplace(float* HWY_RESTRICT x, int64_t n) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::Exp(d, hn::LoadU(d, x + i)), d, x + i);
  if (i < n) {  // tail through a full-width buffer: no access past x[n-1] on any target
    HWY_ALIGN float tail[HWY_MAX_BYTES / sizeof(float)];
    std::fill(tail, tail + N, 0.0f);
    std::copy(x + i, x + n, tail);
    hn::Store(hn::Exp(d, hn::Load(d, tail)), d, tail);
    std::copy(tail, tail + (n - i), x + i);
  }
}

void Axpy(int64_t n, float a, const float* HWY_RESTRICT x, float* HWY_RESTRICT y) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto va = hn::Set(d, a);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::MulAdd(va, hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i);
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);  // one rounding, as the vector body
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn::kernels {

HWY_EXPORT(ExpInplace);
HWY_EXPORT(Axpy);

void exp_inplace(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(ExpInplace)(x, n); }
void axpy(int64_t n, float a, const float* x, float* y) { HWY_DYNAMIC_DISPATCH(Axpy)(n, a, x, y); }

void exp_split(const float* x, float* e, float* lo, float* hi, int64_t n) {
  std::copy(x, x + n, e);
  exp_inplace(e, n);
  constexpr float kHalf = -0.6931472f;  // log(1/2)
  for (int64_t i = 0; i < n; ++i) {
    const float t = x[i];
    // expm1: near 0 the Taylor series to x^8 / 8! (truncation below 2e-10 relative for
    // |x| <= 1/4); further out e - 1 is at least 0.22 in size and the subtraction loses nothing.
    const float series =
        t * (1.0f + t * (1.0f / 2 + t * (1.0f / 6 + t * (1.0f / 24 + t * (1.0f / 120 +
             t * (1.0f / 720 + t * (1.0f / 5040 + t * (1.0f / 40320))))))));
    const bool near_one = t >= kHalf;
    lo[i] = !near_one ? e[i] : t > -0.25f ? series : e[i] - 1.0f;
    hi[i] = near_one ? 1.0f : 0.0f;
  }
}

}  // namespace linattn::kernels
#endif  // HWY_ONCE
