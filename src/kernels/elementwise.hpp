// Vectorised elementwise kernels shared by the chunk-parallel forms.
#pragma once

#include <cstdint>

namespace linattn::kernels {

// x[i] = exp(x[i]); exact 0 below -104, as the decay factors' limit (algorithms.md §3.3 S6).
void exp_inplace(float* x, int64_t n);

// y[i] += a * x[i]
void axpy(int64_t n, float a, const float* x, float* y);

// y[i] += a[i] * x[i]
void mul_add(int64_t n, const float* a, const float* x, float* y);

// s[i] = 1 / (1 + exp(-x[i])) (the logistic sigmoid; SiLU is x s, its derivative s (1 + x (1 - s)))
void sigmoid(int64_t n, const float* x, float* s);

// x[i] = log(1 + exp(x[i])) (softplus), x itself above 20 where the two agree in fp32.
void softplus_inplace(float* x, int64_t n);

}  // namespace linattn::kernels
