#include "ops/delta/chunk.hpp"

#include <algorithm>
#include <cmath>

#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/rows.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/delta/chunk.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace linattn {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// X = (I + L)^{-1} for L strictly lower triangular: row i of X is e_i - L[i, :i] X[:i, :]
// (forward substitution, §3.5). X is unit lower triangular, zero above (up to column rows).
// The substitution accumulates in double and rounds X to fp32 once: with beta ~ 2 on correlated
// unit keys (reflections, no decay) T0 has large entries, and an fp32 substitution doubled the
// chunk form's worst error in random tests (7.9e-6 vs 3.8e-6 relative, recurrent form 1.1e-6).
// Rows of the double copy are kChunk wide and zero beyond the diagonal, so every update runs
// over whole vectors: C^3/6 multiply-adds per chunk, vectorised over the columns.
void DeltaUnitLowerInverse(int64_t rows, const float* L, float* X) {
  constexpr int64_t kC = linattn::delta::kChunk;
  const hn::ScalableTag<double> d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  alignas(64) double Xd[kC * kC];
  for (int64_t i = 0; i < rows; ++i) {
    double* xi = Xd + i * kC;
    std::fill(xi, xi + kC, 0.0);
    for (int64_t m = 0; m < i; ++m) {
      const double l = L[i * kC + m];
      if (l == 0.0) continue;
      const double* xm = Xd + m * kC;
      const auto lv = hn::Set(d, -l);
      for (int64_t j = 0; j <= m; j += N)  // (columns beyond m of row m are zero)
        hn::StoreU(hn::MulAdd(lv, hn::LoadU(d, xm + j), hn::LoadU(d, xi + j)), d, xi + j);
    }
    xi[i] = 1.0;
    for (int64_t j = 0; j < rows; ++j) X[i * kC + j] = static_cast<float>(xi[j]);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn {
HWY_EXPORT(DeltaUnitLowerInverse);
}  // namespace linattn

namespace linattn::delta {
namespace {

using kernels::Accumulate;

constexpr double kL2NormEps = 1e-6;  // fla's l2norm: x / sqrt(sum x^2 + eps), as the oracle

// x[r, :] *= rstd[r] = 1 / sqrt(|x[r, :]|^2 + eps) when l2norm, else rstd[r] = 1.
void l2norm_rows(bool l2norm, int64_t rows, int64_t D, float* x, float* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    rstd[r] = 1.0f;
    if (!l2norm) continue;
    double sq = 0;
    for (int64_t d = 0; d < D; ++d) sq += static_cast<double>(x[r * D + d]) * x[r * D + d];
    rstd[r] = static_cast<float>(1.0 / std::sqrt(sq + kL2NormEps));
    for (int64_t d = 0; d < D; ++d) x[r * D + d] *= rstd[r];
  }
}

}  // namespace

void prepare_chunk(const Problem& p, const OpArgs& a, const Sequence& s, int64_t hv, int64_t hq,
                   int64_t t0, int64_t rows, Chunk& c) {
  const int64_t K = p.K, V = p.V, C = kChunk, n_h = p.n_h, row0 = s.start * n_h + t0;
  const int64_t CC = C * C, CK = C * K, CV = C * V;
  float* next = ScratchArena::local().get<float>(kSlotChunk, 4 * CC + 6 * CK + 3 * CV + 7 * C);
  auto take = [&](int64_t n) {
    float* ptr = next;
    next += n;
    return ptr;
  };
  c.rows = rows;
  c.KKg = take(CC), c.L = take(CC), c.T0 = take(CC), c.P = take(CC);
  c.q = take(CK), c.k = take(CK), c.Kb = take(CK), c.Qg = take(CK), c.Kd = take(CK), c.W = take(CK);
  c.v = take(CV), c.Vb = take(CV), c.U = take(CV);
  c.G = reinterpret_cast<double*>(take(2 * C));  // (8-byte aligned: every size above is a multiple of C = 64)
  c.q_rstd = take(C), c.k_rstd = take(C), c.beta = take(C), c.eG = take(C), c.eGd = take(C);

  if (n_h == 1) {
    load_rows(a.q, s.batch, row0, rows, hq, c.q, K);
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      if (query_step(t0 + r, n_h))
        load_rows(a.q, s.batch, s.start + (t0 + r) / n_h, 1, hq, c.q + r * K, K);
      else
        std::fill(c.q + r * K, c.q + (r + 1) * K, 0.0f);
    }
  }
  load_rows(a.k, s.batch, row0, rows, hq, c.k, K);
  load_rows(a.v, s.batch, row0, rows, hv, c.v, V);
  l2norm_rows(a.use_qk_l2norm_in_kernel, rows, K, c.q, c.q_rstd);
  l2norm_rows(a.use_qk_l2norm_in_kernel, rows, K, c.k, c.k_rstd);
  const bool gated = a.g.given();
  for (int64_t r = 0; r < rows; ++r) {
    c.beta[r] = load_scalar(a.beta, s.batch, row0 + r, hv);
    const bool gate_here = gated && gate_step(t0 + r, n_h);
    const double g = gate_here ? load_scalar(a.g, s.batch, s.start + (t0 + r) / n_h, hv) : 0.0;
    c.G[r] = (r ? c.G[r - 1] : 0.0) + chunk_log_decay(g);  // chunk-local (S1), in double
  }
  const double G_last = c.G[rows - 1];
  c.decay = static_cast<float>(std::exp(G_last));
  for (int64_t r = 0; r < rows; ++r) {
    c.eG[r] = static_cast<float>(std::exp(c.G[r]));
    c.eGd[r] = static_cast<float>(std::exp(G_last - c.G[r]));
  }

  // KKg, L = diag(β) KKg (strictly lower) and P = scale QK^T ⊙ Γ (lower with the diagonal).
  const float scale = static_cast<float>(p.scale);
  kernels::lower_gemm_nt(rows, K, c.k, K, c.k, K, c.KKg, C);
  kernels::lower_gemm_nt(rows, K, c.q, K, c.k, K, c.P, C);
  for (int64_t i = 0; i < rows; ++i) {
    float *kk = c.KKg + i * C, *li = c.L + i * C, *pi = c.P + i * C;
    for (int64_t j = 0; j <= i; ++j) {
      const float gamma = static_cast<float>(std::exp(c.G[i] - c.G[j]));
      kk[j] = j < i ? kk[j] * gamma : 0.0f;
      li[j] = c.beta[i] * kk[j];
      pi[j] *= scale * gamma;
    }
    std::fill(kk + i + 1, kk + rows, 0.0f);
    std::fill(li + i + 1, li + rows, 0.0f);
    std::fill(pi + i + 1, pi + rows, 0.0f);
  }
  HWY_DYNAMIC_DISPATCH(DeltaUnitLowerInverse)(rows, c.L, c.T0);

  for (int64_t r = 0; r < rows; ++r) {
    const float kb = c.beta[r] * c.eG[r], qg = scale * c.eG[r];
    for (int64_t d = 0; d < K; ++d) {
      c.Kb[r * K + d] = kb * c.k[r * K + d];
      c.Qg[r * K + d] = qg * c.q[r * K + d];
      c.Kd[r * K + d] = c.eGd[r] * c.k[r * K + d];
    }
    for (int64_t e = 0; e < V; ++e) c.Vb[r * V + e] = c.beta[r] * c.v[r * V + e];
  }
  kernels::lower_gemm_nn(rows, K, c.T0, C, c.Kb, K, c.W, K, Accumulate::no);
  kernels::lower_gemm_nn(rows, V, c.T0, C, c.Vb, V, c.U, V, Accumulate::no);
}

}  // namespace linattn::delta
#endif  // HWY_ONCE
