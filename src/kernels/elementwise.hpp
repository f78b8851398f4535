// Vectorised elementwise kernels shared by the chunk-parallel forms.
#pragma once

#include <cstdint>

namespace linattn::kernels {

// x[i] = exp(x[i]); exact 0 below -104, as the decay factors' limit (algorithms.md §3.3 S6).
void exp_inplace(float* x, int64_t n);

// y[i] += a * x[i]
void axpy(int64_t n, float a, const float* x, float* y);

}  // namespace linattn::kernels
