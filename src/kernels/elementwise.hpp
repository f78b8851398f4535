// Vectorised elementwise kernels shared by the chunk-parallel forms.
#pragma once

#include <cstdint>

namespace linattn::kernels {

// x[i] = exp(x[i]); exact 0 below -104, as the decay factors' limit (algorithms.md §3.3 S6).
void exp_inplace(float* x, int64_t n);

// e[i] = exp(x[i]) for x[i] <= 0, also split as e = lo + hi with hi in {0, 1}: hi = 1 and
// lo = expm1(x) (Highway's, a few ulp) when e >= 1/2, hi = 0 and lo = e below. A state
// multiplied by e over many steps carries e's rounding each step: e rounded to fp32 is off by up
// to 2^-25, 3% of its distance from 1 for e^-1e-6. lo S + hi S keeps fp32's relative precision
// of the decay near 1 and near 0 alike (algorithms.md §3.3 S6).
void exp_split(const float* x, float* e, float* lo, float* hi, int64_t n);

// x[i] = exp(x[i] - shift); returns the sum of the new x[i] (lanes added in a fixed order, so
// the result does not depend on the caller's thread). The softmax rows of attention (§4.11).
float exp_shifted_sum(float* x, int64_t n, float shift);

// sum_i a[i] b[i] (lanes added in a fixed order).
float dot(const float* a, const float* b, int64_t n);

// max_i x[i]; -inf for n = 0.
float max_of(const float* x, int64_t n);

// y[i] += a * x[i]
void axpy(int64_t n, float a, const float* x, float* y);

// y[i] += a[i] * x[i]
void mul_add(int64_t n, const float* a, const float* x, float* y);

// s[i] = 1 / (1 + exp(-x[i])) (the logistic sigmoid; SiLU is x s, its derivative s (1 + x (1 - s)))
void sigmoid(int64_t n, const float* x, float* s);

// x[i] = log(1 + exp(x[i])) (softplus), x itself above 20 where the two agree in fp32.
void softplus_inplace(float* x, int64_t n);

}  // namespace linattn::kernels
