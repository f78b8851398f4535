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

// Applies f to full vectors of x, and to the tail through a full-width buffer (no access past
// x[n-1] on any target; the tail gets the same vector code as the body).
template <typename F>
HWY_INLINE void Map(int64_t n, const float* x, float* out, F f) {  // x may be out
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(f(d, hn::LoadU(d, x + i)), d, out + i);
  if (i < n) {
    HWY_ALIGN float tail[HWY_MAX_BYTES / sizeof(float)];
    std::fill(tail, tail + N, 0.0f);
    std::copy(x + i, x + n, tail);
    hn::Store(f(d, hn::Load(d, tail)), d, tail);
    std::copy(tail, tail + (n - i), out + i);
  }
}

void ExpInplace(float* x, int64_t n) {
  Map(n, x, x, [](D d, hn::Vec<D> v) { return hn::Exp(d, v); });
}

void Axpy(int64_t n, float a, const float* HWY_RESTRICT x, float* HWY_RESTRICT y) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto va = hn::Set(d, a);
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(hn::MulAdd(va, hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i);
  for (; i < n; ++i) y[i] = std::fma(a, x[i], y[i]);  // one rounding, as the vector body
}

void MulAdd(int64_t n, const float* HWY_RESTRICT a, const float* HWY_RESTRICT x,
            float* HWY_RESTRICT y) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + N <= n; i += N)
    hn::StoreU(hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, x + i), hn::LoadU(d, y + i)), d, y + i);
  for (; i < n; ++i) y[i] = std::fma(a[i], x[i], y[i]);
}

void Sigmoid(int64_t n, const float* HWY_RESTRICT x, float* HWY_RESTRICT s) {
  Map(n, x, s, [](D d, hn::Vec<D> v) {
    const auto one = hn::Set(d, 1.0f);
    return hn::Div(one, hn::Add(one, hn::Exp(d, hn::Neg(v))));
  });
}

void SoftplusInplace(float* x, int64_t n) {
  Map(n, x, x, [](D d, hn::Vec<D> v) {
    // log1p(exp(v)) overflows for large v, where softplus(v) = v to fp32 precision.
    const auto large = hn::Gt(v, hn::Set(d, 20.0f));
    return hn::IfThenElse(large, v, hn::Log1p(d, hn::Exp(d, hn::Min(v, hn::Set(d, 20.0f)))));
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn::kernels {

HWY_EXPORT(ExpInplace);
HWY_EXPORT(Axpy);
HWY_EXPORT(MulAdd);
HWY_EXPORT(Sigmoid);
HWY_EXPORT(SoftplusInplace);

void exp_inplace(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(ExpInplace)(x, n); }
void axpy(int64_t n, float a, const float* x, float* y) { HWY_DYNAMIC_DISPATCH(Axpy)(n, a, x, y); }
void mul_add(int64_t n, const float* a, const float* x, float* y) {
  HWY_DYNAMIC_DISPATCH(MulAdd)(n, a, x, y);
}
void sigmoid(int64_t n, const float* x, float* s) { HWY_DYNAMIC_DISPATCH(Sigmoid)(n, x, s); }
void softplus_inplace(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(SoftplusInplace)(x, n); }

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
