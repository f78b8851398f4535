#include "ops/common/channel_gate.hpp"

#include <algorithm>
#include <vector>

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

// Extreme decays go by blocks of kBlock rows. A pair of blocks J < I is factored about the last
// row b of J: e^{B_i - B_j} = e^{B_i - B_b} e^{B_b - B_j}, both exponents <= 0 (the cumulative
// decay only falls along the chunk), so nothing overflows, and a factor that underflows bounds a
// product that is below fp32's range too. Each block J is then one GEMM against every later row;
// only the diagonal blocks go pair by pair (kBlock^2 / 2 pairs each instead of rows^2 / 2).
constexpr int64_t kBlock = 8;

// The factors of block [j0, j1) against rows [j1, rows): later[(i - j1) * K + d] =
// e^{B_id - B_bd} for i >= j1, own[(j - j0) * K + d] = e^{B_bd - B_jd} for j in the block.
struct BlockFactors {
  std::vector<float> later, own;
  void fill(const Factors& f, int64_t j0, int64_t j1) {
    const int64_t K = f.K, b = j1 - 1, n_later = (f.rows - j1) * K;
    later.resize(std::max<int64_t>(n_later, 1));
    own.resize((j1 - j0) * K);
    for (int64_t i = j1; i < f.rows; ++i)
      for (int64_t d = 0; d < K; ++d) later[(i - j1) * K + d] = static_cast<float>(f.B[i * K + d] - f.B[b * K + d]);
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t d = 0; d < K; ++d) own[(j - j0) * K + d] = static_cast<float>(f.B[b * K + d] - f.B[j * K + d]);
    kernels::exp_inplace(later.data(), n_later);
    kernels::exp_inplace(own.data(), (j1 - j0) * K);
  }
};

// Per-thread working space of the blocked form (a few rows x K floats).
struct Blocked {
  BlockFactors factors;
  std::vector<float> x, y, out;
  static Blocked& local() {
    thread_local Blocked b;
    return b;
  }
};

// dst[r * K + d] = src[r * K + d] * factor[r * K + d] over n rows.
void scale_rows(int64_t n, int64_t K, const float* src, const float* factor, float* dst) {
  for (int64_t i = 0; i < n * K; ++i) dst[i] = src[i] * factor[i];
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
  Blocked& w = Blocked::local();
  for (int64_t i = 0; i < rows; ++i) std::fill(X + i * ldx, X + i * ldx + rows, 0.0f);
  for (int64_t j0 = 0; j0 < rows; j0 += kBlock) {
    const int64_t j1 = std::min(rows, j0 + kBlock), later = rows - j1;
    for (int64_t i = j0; i < j1; ++i)  // the diagonal block, pair by pair
      for (int64_t j = j0; j <= i; ++j) {
        pair_decay(f, i, j, tmp);
        for (int64_t d = 0; d < K; ++d) tmp[d] *= y[j * K + d];
        X[i * ldx + j] = scale * kernels::dot(x + i * K, tmp, K);
      }
    if (later == 0) continue;
    w.factors.fill(f, j0, j1);
    w.x.resize(later * K);
    w.y.resize((j1 - j0) * K);
    scale_rows(later, K, x + j1 * K, w.factors.later.data(), w.x.data());
    scale_rows(j1 - j0, K, y + j0 * K, w.factors.own.data(), w.y.data());
    kernels::gemm_nt(later, j1 - j0, K, w.x.data(), K, w.y.data(), K, X + j1 * ldx + j0, ldx,
                     Accumulate::no);
    for (int64_t i = j1; i < rows; ++i)
      for (int64_t j = j0; j < j1; ++j) X[i * ldx + j] *= scale;
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
  Blocked& w = Blocked::local();
  for (int64_t j0 = 0; j0 < rows; j0 += kBlock) {
    const int64_t j1 = std::min(rows, j0 + kBlock), later = rows - j1, n = j1 - j0;
    for (int64_t i = j0; i < j1; ++i)  // the diagonal block, pair by pair
      for (int64_t j = j0; j < i; ++j) {
        const float a = dX[i * ldx + j];
        if (a == 0.0f) continue;
        pair_decay(f, i, j, tmp);
        for (int64_t d = 0; d < K; ++d) {
          dx[i * K + d] += a * y[j * K + d] * tmp[d];
          dy[j * K + d] += a * x[i * K + d] * tmp[d];
        }
      }
    if (later == 0) continue;
    // Rows i >= j1 against block J, through the factors of the forward's blocked form:
    // dx_i += e^{B_i - B_b} (dX_iJ y~_J), dy_J += e^{B_b - B_J} (dX_iJ^T x~).
    w.factors.fill(f, j0, j1);
    w.x.resize(later * K);
    w.y.resize(n * K);
    w.out.resize(std::max(later, n) * K);
    scale_rows(later, K, x + j1 * K, w.factors.later.data(), w.x.data());
    scale_rows(n, K, y + j0 * K, w.factors.own.data(), w.y.data());
    const float* dX_block = dX + j1 * ldx + j0;
    kernels::gemm_nn(later, K, n, dX_block, ldx, w.y.data(), K, w.out.data(), K, Accumulate::no);
    for (int64_t i = 0; i < later * K; ++i) dx[j1 * K + i] += w.factors.later[i] * w.out[i];
    kernels::gemm_tn(n, K, later, dX_block, ldx, w.x.data(), K, w.out.data(), K, Accumulate::no);
    for (int64_t i = 0; i < n * K; ++i) dy[j0 * K + i] += w.factors.own[i] * w.out[i];
  }
}

}  // namespace linattn::channel_gate
