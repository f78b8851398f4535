// Pair products under per-key-channel decays inside one chunk, shared by GLA's scores
// (algorithms.md §4.4b) and KDA's two score matrices (§4.8b):
//   X_ij = scale Σ_d x_id y_jd exp(B_id - B_jd),   j <= i,
// with B the chunk-local cumulative log decay [rows, K]. When the chunk's decays stay within
// e^{±80} of its middle row m (§3.3 S5), X = scale x~ y~^T with x~ = x e^{B - B_m} and
// y~ = y e^{B_m - B}: one GEMM. Otherwise (extreme decays) by blocks of 8 rows: one GEMM per
// block against every later row, factored about the block's last row (every exponent <= 0), and
// pair by pair inside the diagonal blocks (§4.4b's secondary chunking).
#pragma once

#include <cstdint>

#include "kernels/gemm_bf16.hpp"

namespace linattn::channel_gate {

// The middle-row factors of one chunk. `factored` false: the decays are too strong and
// ratio/inverse are not filled.
struct Factors {
  int64_t rows = 0, K = 0;
  const double* B = nullptr;  // [rows, K] chunk-local inclusive cumulative log decay
  bool factored = false;
  float* ratio = nullptr;     // [rows, K] e^{B - B_m}
  float* inverse = nullptr;   // [rows, K] e^{B_m - B} = 1 / ratio
};

// Decides whether the factored form applies to B and, if so, fills f.ratio and f.inverse
// (caller-provided buffers of rows * K floats).
void prepare(Factors& f);

// dst[i] = x[i] * f.ratio[i] (x~) or x[i] * f.inverse[i] (y~) over rows * K elements.
void times_ratio(const Factors& f, const float* x, float* dst);
void times_inverse(const Factors& f, const float* x, float* dst);

// X[i * ldx + j] = scale Σ_d x_id y_jd exp(B_id - B_jd) for j <= i, 0 for i < j < rows. With
// f.factored, x_tilde and y_tilde are x~ and y~ (x and y are then not read); otherwise x and y
// are read and tmp holds K floats. Products::bf16 rounds x~ and y~ to bf16 for the factored
// GEMM (the forward with bf16 inputs); the blocked form is fp32 either way.
void scores(const Factors& f, const float* x, const float* y, const float* x_tilde,
            const float* y_tilde, float scale, float* X, int64_t ldx, float* tmp,
            kernels::Products products = kernels::Products::f32);

// The backward of scores() for the strictly lower part of dX (the caller handles the diagonal,
// whose decay is e^0): dx_i = Σ_{j<i} dX_ij y_j e^{B_i - B_j}, dy_j = Σ_{i>j} dX_ij x_i
// e^{B_i - B_j} (both overwritten, rows x K). The gate gradient follows from them: the
// cumulative decay B gets x ⊙ dx - y ⊙ dy (§3.4, pair factor rule).
void scores_backward(const Factors& f, const float* dX, int64_t ldx, const float* x,
                     const float* y, const float* x_tilde, const float* y_tilde, float* dx,
                     float* dy, float* tmp);

}  // namespace linattn::channel_gate
