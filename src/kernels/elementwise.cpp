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

}  // namespace HWY_NAMESPACE
}  // namespace linattn::kernels
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn::kernels {

HWY_EXPORT(ExpInplace);
HWY_EXPORT(Axpy);
HWY_EXPORT(ExpShiftedSum);
HWY_EXPORT(MaxOf);
HWY_EXPORT(Dot);

float exp_shifted_sum(float* x, int64_t n, float shift) {
  return HWY_DYNAMIC_DISPATCH(ExpShiftedSum)(x, n, shift);
}
float max_of(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(MaxOf)(x, n); }
float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }

void exp_inplace(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(ExpInplace)(x, n); }
void axpy(int64_t n, float a, const float* x, float* y) { HWY_DYNAMIC_DISPATCH(Axpy)(n, a, x, y); }

}  // namespace linattn::kernels
#endif  // HWY_ONCE
