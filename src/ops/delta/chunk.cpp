#include "ops/delta/chunk.hpp"

#include <algorithm>
#include <cmath>

#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
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

void unit_lower_inverse(int64_t rows, const float* L, float* X) {
  HWY_DYNAMIC_DISPATCH(DeltaUnitLowerInverse)(rows, L, X);
}

namespace {

using kernels::Accumulate;

constexpr double kL2NormEps = 1e-6;  // fla's l2norm: x / sqrt(sum x^2 + eps), as the oracle

// x[r, :] *= rstd[r] = 1 / sqrt(|x[r, :]|^2 + eps) when l2norm, else rstd[r] = 1.
void l2norm_rows(bool l2norm, int64_t rows, int64_t D, float* x, float* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    rstd[r] = 1.0f;
    if (!l2norm) continue;
    // Eight partial sums: one chain of dependent adds made this loop a third of the chunk
    // preparation at K = 128.
    double part[8] = {};
    int64_t d = 0;
    for (; d + 8 <= D; d += 8)
      for (int l = 0; l < 8; ++l) part[l] += static_cast<double>(x[r * D + d + l]) * x[r * D + d + l];
    for (; d < D; ++d) part[0] += static_cast<double>(x[r * D + d]) * x[r * D + d];
    const double sq = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
    rstd[r] = static_cast<float>(1.0 / std::sqrt(sq + kL2NormEps));
    for (int64_t d = 0; d < D; ++d) x[r * D + d] *= rstd[r];
  }
}

// The state decay e^{G_C} of channel (or scalar gate) w, and its split lo + hi as
// kernels::exp_split makes it, from the fp64 cumulative gate.
void set_state_decay(Chunk& c, int64_t w, double G_last) {
  const double e = std::exp(G_last);
  const bool near_one = e >= 0.5;
  c.decay[w] = static_cast<float>(e);
  c.decay_lo[w] = static_cast<float>(near_one ? std::expm1(G_last) : e);
  c.decay_hi[w] = near_one ? 1.0f : 0.0f;
}

}  // namespace

void decay_state(const Chunk& c, int64_t K, int64_t cols, int64_t ld, const float* S, float* out) {
  for (int64_t r = 0; r < K; ++r) {
    const float lo = c.decay_lo[c.width == 1 ? 0 : r], hi = c.decay_hi[c.width == 1 ? 0 : r];
    // (hi S is exact: hi is 0 or 1. No std::fma: outside the Highway targets it is a call.)
    for (int64_t e = 0; e < cols; ++e) out[r * ld + e] = lo * S[r * ld + e] + hi * S[r * ld + e];
  }
}

void advance_columns(const Chunk& c, int64_t K, int64_t V, int64_t e0, int64_t cols, const float* S,
                     float* S_out, float* O, float* work) {
  const int64_t rows = c.rows;
  float* Vt = c.U + e0;  // Ṽ = U - W S, in place
  kernels::gemm_nn(rows, cols, K, c.W, K, S + e0, V, work, cols, Accumulate::no);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t e = 0; e < cols; ++e) Vt[r * V + e] -= work[r * cols + e];
  if (O) {
    kernels::lower_gemm_nn(rows, cols, c.P, kChunk, Vt, V, O + e0, V, Accumulate::no);
    kernels::gemm_nn(rows, cols, K, c.Qg, K, S + e0, V, O + e0, V, Accumulate::yes);
  }
  decay_state(c, K, cols, V, S + e0, S_out + e0);
  kernels::gemm_tn(K, cols, rows, c.Kd, K, Vt, V, S_out + e0, V, Accumulate::yes);
}

int64_t chunk_floats(const Problem& p) {
  const int64_t K = p.K, V = p.V, C = kChunk, width = p.spec->takes_gk ? K : 1;
  // (Every size but the last is a multiple of C = 64 floats, so G stays 8-byte aligned; the
  // total is rounded to 64 bytes so that chunks laid out one after another stay aligned.)
  const int64_t floats = 5 * C * C + 6 * C * K + 3 * C * V + 4 * C * width + 3 * C + (p.spec->takes_gk ? 5 * C * K : 0) + 3 * width;
  return (floats + 15) / 16 * 16;
}

void prepare_chunk(const Problem& p, const OpArgs& a, const Sequence& s, int64_t hv, int64_t hq,
                   int64_t t0, int64_t rows, Chunk& c, float* memory, Need need) {
  const int64_t K = p.K, V = p.V, C = kChunk, n_h = p.n_h, row0 = s.start * n_h + t0;
  const bool vector = p.spec->takes_gk, queries = need != Need::state;
  const int64_t width = vector ? K : 1, CC = C * C, CK = C * K, CV = C * V, CW = C * width;
  float* next = memory ? memory : ScratchArena::local().get<float>(kSlotChunk, chunk_floats(p));
  auto take = [&](int64_t n) {
    float* ptr = next;
    next += n;
    return ptr;
  };
  c.rows = rows;
  c.width = width;
  c.KKg = take(CC), c.L = take(CC), c.T0 = take(CC), c.P = take(CC), c.Gamma = take(CC);
  c.q = take(CK), c.k = take(CK), c.Kb = take(CK), c.Qg = take(CK), c.Kd = take(CK), c.W = take(CK);
  c.v = take(CV), c.Vb = take(CV), c.U = take(CV);
  c.G = reinterpret_cast<double*>(take(2 * CW));
  c.eG = take(CW), c.eGd = take(CW);
  c.q_rstd = take(C), c.k_rstd = take(C), c.beta = take(C);
  if (vector) {
    c.gate.ratio = take(CK), c.gate.inverse = take(CK);
    c.q_ratio = take(CK), c.k_ratio = take(CK), c.k_inverse = take(CK);
  }
  c.decay = take(width), c.decay_lo = take(width), c.decay_hi = take(width);

  if (!queries) {
  } else if (n_h == 1) {
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
  // The next chunk's rows, a page or more apart in fla's layout, ahead of use (rows.hpp).
  const int64_t ahead = std::min(C, s.length * n_h - (t0 + rows));
  if (ahead > 0) {
    const int64_t next_token = s.start + (t0 + rows) / n_h, tokens = (ahead + n_h - 1) / n_h;
    prefetch_rows(a.q, s.batch, next_token, tokens, hq);
    prefetch_rows(a.k, s.batch, row0 + rows, ahead, hq);
    prefetch_rows(a.v, s.batch, row0 + rows, ahead, hv);
    if (vector) prefetch_rows(a.gk, s.batch, next_token, tokens, hv);
  }
  if (queries) l2norm_rows(a.use_qk_l2norm_in_kernel, rows, K, c.q, c.q_rstd);
  l2norm_rows(a.use_qk_l2norm_in_kernel, rows, K, c.k, c.k_rstd);
  for (int64_t r = 0; r < rows; ++r) c.beta[r] = load_scalar(a.beta, s.batch, row0 + r, hv);
  const float scale = static_cast<float>(p.scale);
  if (vector) {
    // Per-channel gates (kda, n_h = 1): chunk-local cumulative sums in double (S1), then every
    // factor as exp of a non-positive fp32 exponent (S2), as gla/chunk.cpp.
    load_rows(a.gk, s.batch, row0, rows, hv, c.eG, K);
    for (int64_t i = 0; i < rows * K; ++i) c.G[i] = (i >= K ? c.G[i - K] : 0.0) + finite_log_decay(c.eG[i]);
    const double* last = c.G + (rows - 1) * K;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < K; ++d) {
        c.eG[r * K + d] = static_cast<float>(c.G[r * K + d]);
        c.eGd[r * K + d] = static_cast<float>(last[d] - c.G[r * K + d]);
      }
    for (int64_t d = 0; d < K; ++d) set_state_decay(c, d, last[d]);
    kernels::exp_inplace(c.eG, rows * K);
    kernels::exp_inplace(c.eGd, rows * K);

    // KKg (strictly lower) and P = scale (Q K^T ⊙ Γ) (lower with the diagonal), Γ per channel.
    c.gate.rows = rows, c.gate.K = K, c.gate.B = c.G;
    channel_gate::prepare(c.gate);
    if (c.gate.factored) {
      if (queries) channel_gate::times_ratio(c.gate, c.q, c.q_ratio);
      channel_gate::times_ratio(c.gate, c.k, c.k_ratio);
      channel_gate::times_inverse(c.gate, c.k, c.k_inverse);
    }
    float* tmp = c.Kb;  // (K floats; Kb is filled below)
    channel_gate::scores(c.gate, c.k, c.k, c.k_ratio, c.k_inverse, 1.0f, c.KKg, C, tmp);
    if (queries) channel_gate::scores(c.gate, c.q, c.k, c.q_ratio, c.k_inverse, scale, c.P, C, tmp);
    for (int64_t i = 0; i < rows; ++i) {
      c.KKg[i * C + i] = 0.0f;
      for (int64_t j = 0; j < rows; ++j) c.L[i * C + j] = c.beta[i] * c.KKg[i * C + j];
    }
  } else {
    const bool gated = a.g.given();
    for (int64_t r = 0; r < rows; ++r) {
      const bool gate_here = gated && gate_step(t0 + r, n_h);
      const double g = gate_here ? load_scalar(a.g, s.batch, s.start + (t0 + r) / n_h, hv) : 0.0;
      c.G[r] = (r ? c.G[r - 1] : 0.0) + finite_log_decay(g);  // chunk-local (S1), in double
    }
    const double G_last = c.G[rows - 1];
    set_state_decay(c, 0, G_last);
    for (int64_t r = 0; r < rows; ++r) {
      c.eG[r] = static_cast<float>(std::exp(c.G[r]));
      c.eGd[r] = static_cast<float>(std::exp(G_last - c.G[r]));
    }

    // KKg, L = diag(β) KKg (strictly lower) and P = scale QK^T ⊙ Γ (lower with the diagonal).
    kernels::lower_gemm_nt(rows, K, c.k, K, c.k, K, c.KKg, C);
    if (queries) kernels::lower_gemm_nt(rows, K, c.q, K, c.k, K, c.P, C);
    for (int64_t i = 0; i < rows; ++i) {
      float *kk = c.KKg + i * C, *li = c.L + i * C, *pi = c.P + i * C, *gi = c.Gamma + i * C;
      // (Without a gate G = 0 and Γ = e^0 = 1 exactly: no exps.)
      if (gated)
        for (int64_t j = 0; j <= i; ++j) gi[j] = static_cast<float>(std::exp(c.G[i] - c.G[j]));
      else
        std::fill(gi, gi + i + 1, 1.0f);
      for (int64_t j = 0; j <= i; ++j) {
        kk[j] = j < i ? kk[j] * gi[j] : 0.0f;
        li[j] = c.beta[i] * kk[j];
      }
      std::fill(kk + i + 1, kk + rows, 0.0f);
      std::fill(li + i + 1, li + rows, 0.0f);
      std::fill(gi + i + 1, gi + rows, 0.0f);
      if (!queries) continue;
      for (int64_t j = 0; j <= i; ++j) pi[j] *= scale * gi[j];
      std::fill(pi + i + 1, pi + rows, 0.0f);
    }
  }
  unit_lower_inverse(rows, c.L, c.T0);

  // eg(r, d), egd(r, d): the factors e^{G} and e^{G_C - G} of element d of step r (a lambda per
  // gate kind, so that each loop vectorises).
  auto scale_rows = [&](auto eg, auto egd) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t d = 0; d < K; ++d) {
        c.Kb[r * K + d] = c.beta[r] * eg(r, d) * c.k[r * K + d];
        c.Kd[r * K + d] = egd(r, d) * c.k[r * K + d];
      }
      if (queries)
        for (int64_t d = 0; d < K; ++d) c.Qg[r * K + d] = scale * eg(r, d) * c.q[r * K + d];
      for (int64_t e = 0; e < V; ++e) c.Vb[r * V + e] = c.beta[r] * c.v[r * V + e];
    }
  };
  if (vector)
    scale_rows([&](int64_t r, int64_t d) { return c.eG[r * K + d]; },
               [&](int64_t r, int64_t d) { return c.eGd[r * K + d]; });
  else
    scale_rows([&](int64_t r, int64_t) { return c.eG[r]; }, [&](int64_t r, int64_t) { return c.eGd[r]; });
  kernels::lower_gemm_nn(rows, K, c.T0, C, c.Kb, K, c.W, K, Accumulate::no);
  if (need != Need::reverse) kernels::lower_gemm_nn(rows, V, c.T0, C, c.Vb, V, c.U, V, Accumulate::no);
}

}  // namespace linattn::delta
#endif  // HWY_ONCE
