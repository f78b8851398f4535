// Chunk-parallel backward of gated_delta_rule and delta_rule (algorithms.md §4.6c; §4.5c is the
// same with g = 0), of delta_product on its expanded sequence (§4.7c, chunk.hpp): dO is zero
// on steps without a query, and dg_t is the gate gradient of step t n_h; and of kda (§4.8c):
// the same with per-channel gates, so every gate factor and dG have one value per channel and
// the pair factors go through pair_gradients_per_channel.
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
#include "kernels/elementwise.hpp"
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

// kda's pair factors (§4.8c: §4.6c with a per-channel Γ): P = scale (Q K^T ⊙ Γ) and
// L = diag(β) (K K^T ⊙ Γ). With E = diag(β) dL: dq = the Γ-weighted product of dP with K,
// dk = that of dP^T with Q plus E with K both ways (dq, dk overwritten); the cumulative gate
// gets x ⊙ dx - y ⊙ dy of each product (channel_gate::scores_backward, the pair factor rule of
// §3.4). The diagonal of P (decay e^0) goes straight to dq, dk and adds nothing to dG, so
// strongly decayed gates keep their precision, as in gla/chunk_bwd.cpp.
void pair_gradients_per_channel(const delta::Chunk& c, int64_t K, float scale, float* dP,
                                const float* dL, float* E, float* dq, float* dk, float* dx,
                                float* dy, float* tmp, double* dG) {
  const int64_t rows = c.rows, C = kChunk;
  std::fill(dq, dq + rows * K, 0.0f);
  std::fill(dk, dk + rows * K, 0.0f);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < rows; ++j) {
      dP[i * C + j] *= scale;
      E[i * C + j] = c.beta[i] * dL[i * C + j];
    }
    const float diagonal = dP[i * C + i];
    kernels::axpy(K, diagonal, c.k + i * K, dq + i * K);
    kernels::axpy(K, diagonal, c.q + i * K, dk + i * K);
    dP[i * C + i] = 0.0f;
  }
  channel_gate::scores_backward(c.gate, dP, C, c.q, c.k, c.q_ratio, c.k_inverse, dx, dy, tmp);
  for (int64_t i = 0; i < rows * K; ++i) {
    dq[i] += dx[i];
    dk[i] += dy[i];
    dG[i] += static_cast<double>(c.q[i]) * dx[i] - static_cast<double>(c.k[i]) * dy[i];
  }
  channel_gate::scores_backward(c.gate, E, C, c.k, c.k, c.k_ratio, c.k_inverse, dx, dy, tmp);
  for (int64_t i = 0; i < rows * K; ++i) {
    dk[i] += dx[i] + dy[i];
    dG[i] += static_cast<double>(c.k[i]) * (static_cast<double>(dx[i]) - dy[i]);
  }
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
    delta::decay_state(c, K, V, S, S_next);
    kernels::gemm_tn(K, V, rows, c.Kd, K, c.U, V, S_next, V, Accumulate::yes);
  }
}

void run_item(const Problem& p, const OpArgs& a, const OpGradOutputs& go, const OpGrads& gr,
              int64_t n, int64_t hq) {
  const int64_t K = p.K, V = p.V, KV = K * V, C = kChunk;
  const Sequence& s = p.sequences[n];
  const int64_t n_h = p.n_h, steps = s.length * n_h, n_chunks = (steps + C - 1) / C;
  const bool vector = p.spec->takes_gk;  // kda: per-channel gates
  const int64_t width = vector ? K : 1;
  const TensorView& dgate = vector ? gr.dgk : gr.dg;
  const bool want_gate = (vector || a.g.given()) && dgate.given();
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
  std::vector<double> dG(C * width), dG_last(width), run(width);
  std::vector<float> dv_rows(C * V), dx(C * K), dy(C * K), gate_row(K);

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
      // State decay e^{G_C} S (per state row for per-channel gates).
      for (int64_t w = 0; w < width; ++w) {
        const int64_t span = KV / width;
        dG_last[w] = c.decay[w] * dot(span, S + w * span, dS.data() + w * span);
      }
      kernels::gemm_nt(rows, K, V, dO, V, S, V, dQg, K, Accumulate::no);
      kernels::gemm_nt(rows, rows, V, dO, V, Vt, V, dP, C, Accumulate::no);
      kernels::gemm_nt(rows, K, V, dVt, V, S, V, dW, K, Accumulate::no);
      for (int64_t i = 0; i < rows * K; ++i) dW[i] = -dW[i];
      // dS_[n] = e^{G_C} dS' + Qg^T dO - W^T dṼ.
      delta::decay_state(c, K, V, dS.data(), dS.data());
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

      // Masks: dP lower with the diagonal, dL strictly lower (and negated).
      std::fill(dG.begin(), dG.begin() + rows * width, 0.0);
      const float scale = static_cast<float>(p.scale);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < rows; ++j) {
          if (j > i) dP[i * C + j] = 0.0f;
          dL[i * C + j] = j >= i ? 0.0f : -dL[i * C + j];
        }
      if (vector) {
        pair_gradients_per_channel(c, K, scale, dP, dL, E, dq, dk, dx.data(), dy.data(), gate_row.data(),
                                   dG.data());
      } else {
        // Gate gradients of the pair factors; E = dL ⊙ β_i Γ_ij (the K K^T part of L);
        // dq = dP' K, dk = dP'^T Q + E K + E^T K with dP' = dP ⊙ scale Γ.
        for (int64_t i = 0; i < rows; ++i) {
          for (int64_t j = 0; j < rows; ++j) {
            float& dp = dP[i * C + j];
            const float dl = dL[i * C + j];
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
        kernels::gemm_nn(rows, K, rows, dP, C, c.k, K, dq, K, Accumulate::no);
        kernels::gemm_tn(rows, K, rows, dP, C, c.q, K, dk, K, Accumulate::no);
        kernels::gemm_nn(rows, K, rows, E, C, c.k, K, dk, K, Accumulate::yes);
        kernels::gemm_tn(rows, K, rows, E, C, c.k, K, dk, K, Accumulate::yes);
      }
      // Row factors e^{G_r} (Qg, Kb) and key-to-end factors e^{G_C - G_r} (Kd):
      // dq += scale e^G dQg; dk += β e^G dKb + e^{G_C-G} dKd; dG by the product rule.
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t d = 0; d < K; ++d) {
          const int64_t i = r * K + d;
          const float eg = delta::factor(c, c.eG, r, d);
          dq[i] += scale * eg * dQg[i];
          dk[i] += c.beta[r] * eg * dKb[i] + delta::factor(c, c.eGd, r, d) * dKd[i];
          if (!vector) continue;
          const double kd = static_cast<double>(c.Kd[i]) * dKd[i];
          dG[i] += static_cast<double>(c.Qg[i]) * dQg[i] + static_cast<double>(c.Kb[i]) * dKb[i] - kd;
          dG_last[d] += kd;
        }
        if (vector) continue;
        const double kd = dot(K, c.Kd + r * K, dKd + r * K);
        dG[r] += dot(K, c.Qg + r * K, dQg + r * K) + dot(K, c.Kb + r * K, dKb + r * K) - kd;
        dG_last[0] += kd;
      }
      for (int64_t w = 0; w < width; ++w) dG[(rows - 1) * width + w] += dG_last[w];
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
          double db = dot(V, dVb + i * V, c.v + i * V);
          for (int64_t d = 0; d < K; ++d)
            db += static_cast<double>(delta::factor(c, c.eG, i, d)) * dKb[i * K + d] * c.k[i * K + d];
          for (int64_t j = 0; j < i; ++j) db += static_cast<double>(dL[i * C + j]) * c.KKg[i * C + j];
          store_scalar(gr.dbeta, s.batch, row0 + i, hv, db);
        }
      }
      if (want_gate) {
        // dg_t = the sum of dG_r over the steps r >= t n_h in the chunk (per channel for kda).
        std::fill(run.begin(), run.end(), 0.0);
        for (int64_t r = rows - 1; r >= 0; --r) {
          for (int64_t w = 0; w < width; ++w) run[w] += dG[r * width + w];
          if (!delta::gate_step(t0 + r, n_h)) continue;
          const int64_t token = s.start + (t0 + r) / n_h;
          if (vector) {
            for (int64_t d = 0; d < K; ++d) gate_row[d] = static_cast<float>(run[d]);
            store_rows(dgate, s.batch, token, 1, hv, gate_row.data(), K);
          } else {
            store_scalar(dgate, s.batch, token, hv, run[0]);
          }
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
