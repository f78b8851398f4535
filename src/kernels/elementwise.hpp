// Vectorised elementwise kernels shared by the chunk-parallel forms.
#pragma once

#include <cstdint>

namespace linattn::kernels {

// x[i] = exp(x[i]); exact 0 below -104, as the decay factors' limit (algorithms.md §3.3 S6).
void exp_inplace(float* x, int64_t n);

// x[i] = exp(x[i] - shift); returns the sum of the new x[i] (lanes added in a fixed order, so
// the result does not depend on the caller's thread). The softmax rows of attention (§4.11).
float exp_shifted_sum(float* x, int64_t n, float shift);

// sum_i a[i] b[i] (lanes added in a fixed order).
float dot(const float* a, const float* b, int64_t n);

// max_i x[i]; -inf for n = 0.
float max_of(const float* x, int64_t n);

// y[i] += a * x[i]
void axpy(int64_t n, float a, const float* x, float* y);

}  // namespace linattn::kernels
