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

float ExpShiftedSum(float* HWY_RESTRICT x, int64_t n, float shift) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto vshift = hn::Set(d, shift);
  auto sum = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), vshift));
    hn::StoreU(e, d, x + i);
    sum = hn::Add(sum, e);
  }
  if (i < n) {  // tail through a full-width buffer padded with -inf (exp -> 0)
    HWY_ALIGN float tail[HWY_MAX_BYTES / sizeof(float)];
    std::fill(tail, tail + N, -INFINITY);
    std::copy(x + i, x + n, tail);
    const auto e = hn::Exp(d, hn::Sub(hn::Load(d, tail), vshift));
    hn::Store(e, d, tail);
    sum = hn::Add(sum, e);
    std::copy(tail, tail + (n - i), x + i);
  }
  return hn::GetLane(hn::SumOfLanes(d, sum));
}

float Dot(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t n) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto sum0 = hn::Zero(d), sum1 = hn::Zero(d);  // two chains: FMA latency
  int64_t i = 0;
  for (; i + 2 * N <= n; i += 2 * N) {
    sum0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), sum0);
    sum1 = hn::MulAdd(hn::LoadU(d, a + i + N), hn::LoadU(d, b + i + N), sum1);
  }
  for (; i + N <= n; i += N) sum0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), sum0);
  float out = hn::GetLane(hn::SumOfLanes(d, hn::Add(sum0, sum1)));
  for (; i < n; ++i) out = std::fma(a[i], b[i], out);
  return out;
}

float MaxOf(const float* HWY_RESTRICT x, int64_t n) {
  const D d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  auto best = hn::Set(d, -INFINITY);
  int64_t i = 0;
  for (; i + N <= n; i += N) best = hn::Max(best, hn::LoadU(d, x + i));
  float out = hn::GetLane(hn::MaxOfLanes(d, best));
  for (; i < n; ++i) out = std::max(out, x[i]);
  return out;
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
HWY_EXPORT(MulAdd);
HWY_EXPORT(Sigmoid);
HWY_EXPORT(SoftplusInplace);
HWY_EXPORT(ExpShiftedSum);
HWY_EXPORT(MaxOf);
HWY_EXPORT(Dot);

float exp_shifted_sum(float* x, int64_t n, float shift) {
  return HWY_DYNAMIC_DISPATCH(ExpShiftedSum)(x, n, shift);
}
float max_of(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(MaxOf)(x, n); }
HWY_EXPORT(ExpSplit);
float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }

void exp_inplace(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(ExpInplace)(x, n); }
void axpy(int64_t n, float a, const float* x, float* y) { HWY_DYNAMIC_DISPATCH(Axpy)(n, a, x, y); }
void mul_add(int64_t n, const float* a, const float* x, float* y) {
  HWY_DYNAMIC_DISPATCH(MulAdd)(n, a, x, y);
}
void sigmoid(int64_t n, const float* x, float* s) { HWY_DYNAMIC_DISPATCH(Sigmoid)(n, x, s); }
void softplus_inplace(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(SoftplusInplace)(x, n); }

void exp_split(const float* x, float* e, float* lo, float* hi, int64_t n) {
  HWY_DYNAMIC_DISPATCH(ExpSplit)(x, e, lo, hi, n);
}

}  // namespace linattn::kernels
#endif  // HWY_ONCE
