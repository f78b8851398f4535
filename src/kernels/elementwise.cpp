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

// e = exp(x); lo, hi = (expm1(x), 1) where e >= 1/2, else (e, 0): see exp_split.
template <class V>
HWY_INLINE void SplitVector(V x, V& e, V& lo, V& hi) {
  const D d;
  e = hn::Exp(d, x);
  const auto near_one = hn::Ge(x, hn::Set(d, -0.6931472f));  // log(1/2)
  lo = hn::IfThenElse(near_one, hn::Expm1(d, x), e);
  hi = hn::IfThenElseZero(near_one, hn::Set(d, 1.0f));
}

void ExpSplit(const float* HWY_RESTRICT x, float* HWY_RESTRICT e, float* HWY_RESTRICT lo,
              float* HWY_RESTRICT hi, int64_t n) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  hn::Vec<D> ve, vlo, vhi;
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    SplitVector(hn::LoadU(d, x + i), ve, vlo, vhi);
    hn::StoreU(ve, d, e + i);
    hn::StoreU(vlo, d, lo + i);
    hn::StoreU(vhi, d, hi + i);
  }
  if (i < n) {  // tail through full-width buffers, as ExpInplace
    HWY_ALIGN float tail[4][HWY_MAX_BYTES / sizeof(float)];
    std::fill(tail[0], tail[0] + N, 0.0f);
    std::copy(x + i, x + n, tail[0]);
    SplitVector(hn::Load(d, tail[0]), ve, vlo, vhi);
    hn::Store(ve, d, tail[1]);
    hn::Store(vlo, d, tail[2]);
    hn::Store(vhi, d, tail[3]);
    std::copy(tail[1], tail[1] + (n - i), e + i);
    std::copy(tail[2], tail[2] + (n - i), lo + i);
    std::copy(tail[3], tail[3] + (n - i), hi + i);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn::kernels {

HWY_EXPORT(ExpInplace);
HWY_EXPORT(Axpy);
HWY_EXPORT(ExpSplit);

void exp_inplace(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(ExpInplace)(x, n); }
void axpy(int64_t n, float a, const float* x, float* y) { HWY_DYNAMIC_DISPATCH(Axpy)(n, a, x, y); }

void exp_split(const float* x, float* e, float* lo, float* hi, int64_t n) {
  HWY_DYNAMIC_DISPATCH(ExpSplit)(x, e, lo, hi, n);
}

}  // namespace linattn::kernels
#endif  // HWY_ONCE
