// Chunk-parallel backward of gated_delta_rule and delta_rule (algorithms.md §4.6c; §4.5c is the
// same with g = 0), and of delta_product on its expanded sequence (§4.7c, chunk.hpp): dO is zero
// on steps without a query, and dg_t is the gate gradient of step t n_h.
// Per (sequence, q/k head), for each value head of its group: rerun the forward keeping the
// state entering every chunk (the store-states mode of §3.4), then walk the chunks backwards
// with dS = dS_[n+1] (dfinal_state, or zero, at the end), recomputing each chunk (chunk.cpp:
// P = scale QK^T ⊙ Γ, L, T0, W, U, Qg, Kb, Kd) and Ṽ = U - W S_[n]:
//   dṼ = P^T dO + Kd dS'      dP = (dO Ṽ^T) ⊙ M      dQg = dO S^T      dKd = Ṽ dS'^T
//   dS_[n] = e^{G_C} dS' + Qg^T dO - W^T dṼ           (the reverse state scan; dS_0 at n = 0)
//   dW = -dṼ S^T     dT0 = dṼ Vb^T + dW Kb^T     dVb = T0^T dṼ     dKb = T0^T dW
//   dL = -(T0^T dT0 T0^T) ⊙ M⁻                   E = dL ⊙ β_i Γ_ij
//   dq = scale (dP ⊙ Γ) K + scale e^G dQg
//   dk = scale (dP ⊙ Γ)^T Q + E K + E^T K + β e^G dKb + e^{G_C - G} dKd
//   dv = β dVb       dβ_i = Σ_j dL_ij (k_i.k_j) Γ_ij + <dVb_i, v_i> + e^{G_i} <dKb_i, k_i>
//   dG by the product rule (§3.4) on P, L, Qg, Kb, Kd and e^{G_C} S_[n]; dg = its reverse
//   cumsum inside the chunk.
// dq and dk sum over the group's value heads in a fixed order, then go through the backward of
// the in-kernel L2 norm, dx = rstd (dy - y (y . dy)). Results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/delta/chunk.hpp"

namespace linattn {
namespace {

using delta::kChunk;
using kernels::Accumulate;

double dot(int64_t n, const float* x, const float* y) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(x[i]) * y[i];
  return acc;
}

// The states entering every chunk of (sequence s, value head hv): states[ci * K * V].
void chunk_states(const Problem& p, const OpArgs& a, const Sequence& s, int64_t n, int64_t hv,
                  int64_t hq, float* states, float* work) {
  const int64_t K = p.K, V = p.V, KV = K * V;
  load_state(a.initial_state, n, hv, K, V, states);
  delta::Chunk c;
  for (int64_t ci = 0, t0 = 0; t0 < s.length * p.n_h; ++ci, t0 += kChunk) {
    const int64_t rows = std::min(kChunk, s.length * p.n_h - t0);
    delta::prepare_chunk(p, a, s, hv, hq, t0, rows, c);
    const float* S = states + ci * KV;
    float* S_next = states + (ci + 1) * KV;
    kernels::gemm_nn(rows, V, K, c.W, K, S, V, work, V, Accumulate::no);
    for (int64_t i = 0; i < rows * V; ++i) c.U[i] -= work[i];  // Ṽ
    for (int64_t i = 0; i < KV; ++i) S_next[i] = c.decay * S[i];
    kernels::gemm_tn(K, V, rows, c.Kd, K, c.U, V, S_next, V, Accumulate::yes);
  }
}

void run_item(const Problem& p, const OpArgs& a, const OpGradOutputs& go, const OpGrads& gr,
              int64_t n, int64_t hq) {
  const int64_t K = p.K, V = p.V, KV = K * V, C = kChunk;
  const Sequence& s = p.sequences[n];
  const int64_t n_h = p.n_h, steps = s.length * n_h, n_chunks = (steps + C - 1) / C;
  const bool gated = a.g.given();
  std::vector<float> dq_all(steps * K, 0.0f), dk_all(steps * K, 0.0f);
  std::vector<float> q_rstd(steps), k_rstd(steps);
  std::vector<float> states((n_chunks + 1) * KV), dS(KV);
  // Per-chunk work: [C, V] x 4, [C, K] x 6, [C, C] x 5.
  std::vector<float> work(4 * C * V + 6 * C * K + 5 * C * C);
  float* dO = work.data();
  float *dVt = dO + C * V, *dVb = dVt + C * V, *tmpV = dVb + C * V;
  float *dQg = tmpV + C * V, *dKd = dQg + C * K, *dW = dKd + C * K, *dKb = dW + C * K;
  float *dq = dKb + C * K, *dk = dq + C * K;
  float *dP = dk + C * K, *dT = dP + C * C, *tmpC = dT + C * C, *dL = tmpC + C * C, *E = dL + C * C;
  std::vector<double> dG(C);
  std::vector<float> dv_rows(C * V);

  for (int64_t hv = hq * p.group(); hv < (hq + 1) * p.group(); ++hv) {
    chunk_states(p, a, s, n, hv, hq, states.data(), tmpV);
    if (go.dfinal_state.given())
      load_state(go.dfinal_state, n, hv, K, V, dS.data());
    else
      std::fill(dS.begin(), dS.end(), 0.0f);
    delta::Chunk c;
    for (int64_t ci = n_chunks - 1; ci >= 0; --ci) {
      const int64_t t0 = ci * C, rows = std::min(C, steps - t0), row0 = s.start * n_h + t0;
      delta::prepare_chunk(p, a, s, hv, hq, t0, rows, c);
      std::copy(c.q_rstd, c.q_rstd + rows, q_rstd.begin() + t0);
      std::copy(c.k_rstd, c.k_rstd + rows, k_rstd.begin() + t0);
      const float* S = &states[ci * KV];
      float* Vt = c.U;  // Ṽ = U - W S
      kernels::gemm_nn(rows, V, K, c.W, K, S, V, tmpV, V, Accumulate::no);
      for (int64_t i = 0; i < rows * V; ++i) Vt[i] -= tmpV[i];
      if (n_h == 1) {
        load_rows(go.d_o, s.batch, row0, rows, hv, dO, V);
      } else {  // dO of the query steps, zero elsewhere
        for (int64_t r = 0; r < rows; ++r) {
          if (delta::query_step(t0 + r, n_h))
            load_rows(go.d_o, s.batch, s.start + (t0 + r) / n_h, 1, hv, dO + r * V, V);
          else
            std::fill(dO + r * V, dO + (r + 1) * V, 0.0f);
        }
      }

      // Gradients that read dS' = dS_[n+1].
      kernels::gemm_tn(rows, V, rows, c.P, C, dO, V, dVt, V, Accumulate::no);
      kernels::gemm_nn(rows, V, K, c.Kd, K, dS.data(), V, dVt, V, Accumulate::yes);
      kernels::gemm_nt(rows, K, V, Vt, V, dS.data(), V, dKd, K, Accumulate::no);
      double dG_last = c.decay * dot(KV, S, dS.data());  // state decay e^{G_C} S
      kernels::gemm_nt(rows, K, V, dO, V, S, V, dQg, K, Accumulate::no);
      kernels::gemm_nt(rows, rows, V, dO, V, Vt, V, dP, C, Accumulate::no);
      kernels::gemm_nt(rows, K, V, dVt, V, S, V, dW, K, Accumulate::no);
      for (int64_t i = 0; i < rows * K; ++i) dW[i] = -dW[i];
      // dS_[n] = e^{G_C} dS' + Qg^T dO - W^T dṼ.
      for (int64_t i = 0; i < KV; ++i) dS[i] *= c.decay;
      kernels::gemm_tn(K, V, rows, c.Qg, K, dO, V, dS.data(), V, Accumulate::yes);
      for (int64_t i = 0; i < rows * K; ++i) c.W[i] = -c.W[i];
      kernels::gemm_tn(K, V, rows, c.W, K, dVt, V, dS.data(), V, Accumulate::yes);
      for (int64_t i = 0; i < rows * K; ++i) c.W[i] = -c.W[i];

      // UT transform backward.
      kernels::gemm_nt(rows, rows, V, dVt, V, c.Vb, V, dT, C, Accumulate::no);
      kernels::gemm_nt(rows, rows, K, dW, K, c.Kb, K, dT, C, Accumulate::yes);
      kernels::gemm_tn(rows, V, rows, c.T0, C, dVt, V, dVb, V, Accumulate::no);
      kernels::gemm_tn(rows, K, rows, c.T0, C, dW, K, dKb, K, Accumulate::no);
      kernels::gemm_tn(rows, rows, rows, c.T0, C, dT, C, tmpC, C, Accumulate::no);
      kernels::gemm_nt(rows, rows, rows, tmpC, C, c.T0, C, dL, C, Accumulate::no);

      // Masks; gate gradients of the pair factors; E = dL ⊙ β_i Γ_ij (the K K^T part of L).
      std::fill(dG.begin(), dG.begin() + rows, 0.0);
      const float scale = static_cast<float>(p.scale);
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t j = 0; j < rows; ++j) {
          float& dp = dP[i * C + j];
          float& dl = dL[i * C + j];
          if (j > i) dp = 0.0f;
          if (j >= i) dl = 0.0f; else dl = -dl;
          const double xp = static_cast<double>(c.P[i * C + j]) * dp;
          const double xl = static_cast<double>(c.L[i * C + j]) * dl;
          dG[i] += xp + xl;
          dG[j] -= xp + xl;
          // dP ⊙ (P / (q.k)) = dP * scale Γ: recompute Γ from G.
          const float gamma = j <= i ? static_cast<float>(std::exp(c.G[i] - c.G[j])) : 0.0f;
          dp *= scale * gamma;
          E[i * C + j] = dl * c.beta[i] * gamma;
        }
      }
      // dq = dP' K + scale e^G dQg; dk = dP'^T Q + E K + E^T K + β e^G dKb + e^{G_C-G} dKd.
      kernels::gemm_nn(rows, K, rows, dP, C, c.k, K, dq, K, Accumulate::no);
      kernels::gemm_tn(rows, K, rows, dP, C, c.q, K, dk, K, Accumulate::no);
      kernels::gemm_nn(rows, K, rows, E, C, c.k, K, dk, K, Accumulate::yes);
      kernels::gemm_tn(rows, K, rows, E, C, c.k, K, dk, K, Accumulate::yes);
      for (int64_t r = 0; r < rows; ++r) {
        const float qf = scale * c.eG[r], kf = c.beta[r] * c.eG[r];
        for (int64_t d = 0; d < K; ++d) {
          dq[r * K + d] += qf * dQg[r * K + d];
          dk[r * K + d] += kf * dKb[r * K + d] + c.eGd[r] * dKd[r * K + d];
        }
        // Row factors e^{G_r} (Qg, Kb) and key-to-end factors e^{G_C - G_r} (Kd).
        const double kd = dot(K, c.Kd + r * K, dKd + r * K);
        dG[r] += dot(K, c.Qg + r * K, dQg + r * K) + dot(K, c.Kb + r * K, dKb + r * K) - kd;
        dG_last += kd;
      }
      dG[rows - 1] += dG_last;
      for (int64_t i = 0; i < rows * K; ++i) {
        dq_all[t0 * K + i] += dq[i];
        dk_all[t0 * K + i] += dk[i];
      }
      if (gr.dv.given()) {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t e = 0; e < V; ++e) dv_rows[r * V + e] = c.beta[r] * dVb[r * V + e];
        store_rows(gr.dv, s.batch, row0, rows, hv, dv_rows.data(), V);
      }
      if (gr.dbeta.given()) {
        for (int64_t i = 0; i < rows; ++i) {
          double db = dot(V, dVb + i * V, c.v + i * V) + c.eG[i] * dot(K, dKb + i * K, c.k + i * K);
          for (int64_t j = 0; j < i; ++j) db += static_cast<double>(dL[i * C + j]) * c.KKg[i * C + j];
          store_scalar(gr.dbeta, s.batch, row0 + i, hv, db);
        }
      }
      if (gated && gr.dg.given()) {
        double acc = 0;  // dg_t = sum of dG_r over the steps r >= t n_h in the chunk
        for (int64_t r = rows - 1; r >= 0; --r) {
          acc += dG[r];
          if (delta::gate_step(t0 + r, n_h)) store_scalar(gr.dg, s.batch, s.start + (t0 + r) / n_h, hv, acc);
        }
      }
    }
    if (gr.dinitial_state.given()) store_state(gr.dinitial_state, n, hv, K, V, dS.data());
  }

  // dq (query steps only), dk: through the backward of the in-kernel L2 norm,
  // dx = rstd (dy - y (y . dy)).
  std::vector<float> raw(K);
  for (int which = 0; which < 2; ++which) {
    const TensorView& grad = which ? gr.dk : gr.dq;
    if (!grad.given()) continue;
    const TensorView& x = which ? a.k : a.q;
    float* dy_all = which ? dk_all.data() : dq_all.data();
    const float* rstd = which ? k_rstd.data() : q_rstd.data();
    for (int64_t i = 0, count = which ? steps : s.length; i < count; ++i) {
      const int64_t e = which ? i : i * n_h + n_h - 1;  // expanded step
      const int64_t row = which ? s.start * n_h + i : s.start + i;
      float* g = dy_all + e * K;
      if (a.use_qk_l2norm_in_kernel) {
        load_rows(x, s.batch, row, 1, hq, raw.data(), K);
        const float rs = rstd[e];
        for (int64_t d = 0; d < K; ++d) raw[d] *= rs;
        const float yg = static_cast<float>(dot(K, raw.data(), g));
        for (int64_t d = 0; d < K; ++d) g[d] = rs * (g[d] - raw[d] * yg);
      }
      store_rows(grad, s.batch, row, 1, hq, g, K);
    }
  }
}

}  // namespace
void delta_chunk_backward(const Problem& p, const OpArgs& a, const OpGradOutputs& go,
                         const OpGrads& gr) {
  parallel_for(p.N() * p.H, [&](int64_t item) { run_item(p, a, go, gr, item / p.H, item % p.H); });
}

}  // namespace linattn
