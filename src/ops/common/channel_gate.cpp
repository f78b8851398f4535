#include "ops/common/channel_gate.hpp"

#include <algorithm>

#include "kernels/elementwise.hpp"
#include "kernels/gemm.hpp"

namespace linattn::channel_gate {
namespace {

using kernels::Accumulate;

// Largest exponent a factored factor may carry: e^80 stays far from fp32's overflow at e^88, and
// products x~ y~ of kept (j <= i) entries are ordinary-sized.
constexpr double kMaxFactorExponent = 80.0;

// tmp[d] = exp(B_id - B_jd) for j <= i (every exponent <= 0).
void pair_decay(const Factors& f, int64_t i, int64_t j, float* tmp) {
  for (int64_t d = 0; d < f.K; ++d) tmp[d] = static_cast<float>(f.B[i * f.K + d] - f.B[j * f.K + d]);
  kernels::exp_inplace(tmp, f.K);
}

}  // namespace

void prepare(Factors& f) {
  const int64_t K = f.K, m = f.rows / 2;
  const double* Bm = f.B + m * K;
  const double* last = f.B + (f.rows - 1) * K;
  double before = 0, after = 0;  // largest decay from row 0 to m, and from m to the last row
  for (int64_t d = 0; d < K; ++d) {
    before = std::max(before, f.B[d] - Bm[d]);
    after = std::max(after, Bm[d] - last[d]);
  }
  f.factored = before <= kMaxFactorExponent && after <= kMaxFactorExponent;
  if (!f.factored) return;
  for (int64_t r = 0; r < f.rows; ++r)
    for (int64_t d = 0; d < K; ++d) f.ratio[r * K + d] = static_cast<float>(f.B[r * K + d] - Bm[d]);
  kernels::exp_inplace(f.ratio, f.rows * K);
  for (int64_t i = 0; i < f.rows * K; ++i) f.inverse[i] = 1.0f / f.ratio[i];
}

void times_ratio(const Factors& f, const float* x, float* dst) {
  for (int64_t i = 0; i < f.rows * f.K; ++i) dst[i] = x[i] * f.ratio[i];
}

void times_inverse(const Factors& f, const float* x, float* dst) {
  for (int64_t i = 0; i < f.rows * f.K; ++i) dst[i] = x[i] * f.inverse[i];
}

void scores(const Factors& f, const float* x, const float* y, const float* x_tilde,
            const float* y_tilde, float scale, float* X, int64_t ldx, float* tmp,
            kernels::Products products) {
  const int64_t K = f.K, rows = f.rows;
  if (f.factored) {
    if (products == kernels::Products::bf16) kernels::lower_gemm_bf16_nt(rows, K, x_tilde, K, y_tilde, K, X, ldx);
    else kernels::lower_gemm_nt(rows, K, x_tilde, K, y_tilde, K, X, ldx);
    for (int64_t i = 0; i < rows; ++i) {
      float* row = X + i * ldx;
      for (int64_t j = 0; j <= i; ++j) row[j] *= scale;
      std::fill(row + i + 1, row + rows, 0.0f);  // entries above the diagonal may be huge: drop
    }
    return;
  }
  for (int64_t i = 0; i < rows; ++i) {
    float* row = X + i * ldx;
    for (int64_t j = 0; j <= i; ++j) {
      pair_decay(f, i, j, tmp);
      double acc = 0;
      for (int64_t d = 0; d < K; ++d) acc += double(x[i * K + d]) * y[j * K + d] * tmp[d];
      row[j] = static_cast<float>(scale * acc);
    }
    std::fill(row + i + 1, row + rows, 0.0f);
  }
}

void scores_backward(const Factors& f, const float* dX, int64_t ldx, const float* x,
                     const float* y, const float* x_tilde, const float* y_tilde, float* dx,
                     float* dy, float* tmp) {
  const int64_t K = f.K, rows = f.rows;
  if (f.factored) {  // (dX is zero on and above its diagonal)
    kernels::lower_gemm_nn(rows, K, dX, ldx, y_tilde, K, dx, K, Accumulate::no);
    kernels::lower_gemm_tn(rows, K, dX, ldx, x_tilde, K, dy, K, Accumulate::no);
    // Back from x~ (y~) to x (y): multiply by e^{B - B_m} (by e^{B_m - B}).
    for (int64_t i = 0; i < rows * K; ++i) {
      dx[i] *= f.ratio[i];
      dy[i] *= f.inverse[i];
    }
    return;
  }
  std::fill(dx, dx + rows * K, 0.0f);
  std::fill(dy, dy + rows * K, 0.0f);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < i; ++j) {
      const float a = dX[i * ldx + j];
      if (a == 0.0f) continue;
      pair_decay(f, i, j, tmp);
      for (int64_t d = 0; d < K; ++d) {
        dx[i * K + d] += a * y[j * K + d] * tmp[d];
        dy[j * K + d] += a * x[i * K + d] * tmp[d];
      }
    }
}

}  // namespace linattn::channel_gate
