// Chunk-parallel backward of gated_delta_rule and delta_rule (algorithms.md §4.6c; §4.5c is the
// same with g = 0), of delta_product on its expanded sequence (§4.7c, chunk.hpp): dO is zero
// on steps without a query, and dg_t is the gate gradient of step t n_h; and of kda (§4.8c):
// the same with per-channel gates, so every gate factor and dG have one value per channel and
// the pair factors go through pair_gradients_per_channel.
// Per (sequence, q/k head), for each value head of its group: rerun the forward keeping the
// state entering every chunk (the store-states mode of §3.4) and Ṽ = U - W S_[n], then walk the
// chunks backwards with dS = dS_[n+1] (dfinal_state, or zero, at the end), recomputing each
// chunk (chunk.cpp: P = scale QK^T ⊙ Γ, L, T0, W, Qg, Kb, Kd):
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
#include "ops/common/chunk_windows.hpp"
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

// Value columns [e0, e0 + cols) of one chunk's step of the reverse state scan (§4.6c), with c.W
// holding -W (negation is exact, and lets the last product accumulate):
//   dṼ = P^T dO + Kd dS'    dS = e^{G_C} dS' + Qg^T dO + (-W)^T dṼ
// (Ṽ itself was kept by the state pass.) Every matrix has leading dimension V.
void reverse_columns(const delta::Chunk& c, int64_t K, int64_t V, int64_t e0, int64_t cols, const float* dO,
                     const float* dS_next, float* dVt, float* dS) {
  const int64_t rows = c.rows;
  kernels::lower_gemm_tn(rows, cols, c.P, kChunk, dO + e0, V, dVt + e0, V, Accumulate::no);
  kernels::gemm_nn(rows, cols, K, c.Kd, K, dS_next + e0, V, dVt + e0, V, Accumulate::yes);
  delta::decay_state(c, K, cols, V, dS_next + e0, dS + e0);
  kernels::gemm_tn(K, cols, rows, c.Qg, K, dO + e0, V, dS + e0, V, Accumulate::yes);
  kernels::gemm_tn(K, cols, rows, c.W, K, dVt + e0, V, dS + e0, V, Accumulate::yes);
}

// One value head hv of a backward work item (sequence s, q/k head hq) and the item's gradient
// rows of q and k (summed over the group's value heads) with their L2-norm factors.
struct Head {
  const Problem& p;
  const OpArgs& a;
  const OpGradOutputs& go;
  const OpGrads& gr;
  const Sequence& s;
  int64_t hv, hq;
  float *dq_all, *dk_all, *q_rstd, *k_rstd;
};

// The gradients of chunk c (steps t0..) given Ṽ (rows x V), and once the reverse scan has given
// dṼ and the gradient dS' of the state leaving it: everything that reduces over V, so it runs
// on whole rows, one chunk per call. Buffers from the calling thread's arena (kSlotGrads).
void chunk_gradients(const Head& h, const delta::Chunk& c, int64_t t0, const float* S, const float* dS,
                     const float* Vt, const float* dO, const float* dVt) {
  const Problem& p = h.p;
  const OpGrads& gr = h.gr;
  const Sequence& s = h.s;
  const int64_t K = p.K, V = p.V, KV = K * V, C = kChunk, n_h = p.n_h, rows = c.rows;
  const int64_t row0 = s.start * n_h + t0, hv = h.hv;
  const bool vector = p.spec->takes_gk;  // kda: per-channel gates
  const int64_t width = vector ? K : 1;
  const TensorView& dgate = vector ? gr.dgk : gr.dg;
  const bool want_gate = (vector || h.a.g.given()) && dgate.given();
  ScratchArena& arena = ScratchArena::local();
  float* dVb = arena.get<float>(delta::kSlotGrads, 2 * C * V + 8 * C * K + 5 * C * C + K);
  float *dv_rows = dVb + C * V, *dKd = dv_rows + C * V, *dQg = dKd + C * K, *dW = dQg + C * K;
  float *dKb = dW + C * K, *dq = dKb + C * K, *dk = dq + C * K, *dx = dk + C * K, *dy = dx + C * K;
  float *dP = dy + C * K, *dT = dP + C * C, *tmpC = dT + C * C, *dL = tmpC + C * C, *E = dL + C * C;
  float* gate_row = E + C * C;
  double* dG = arena.get<double>(delta::kSlotGateGrads, C * width + 2 * width);
  double *dG_last = dG + C * width, *run = dG_last + width;
  std::copy(c.q_rstd, c.q_rstd + rows, h.q_rstd + t0);
  std::copy(c.k_rstd, c.k_rstd + rows, h.k_rstd + t0);

  // Gradients that read dS' = dS_[n+1], S and Ṽ.
  kernels::gemm_nt(rows, K, V, Vt, V, dS, V, dKd, K, Accumulate::no);
  // State decay e^{G_C} S (per state row for per-channel gates).
  for (int64_t w = 0; want_gate && w < width; ++w) {
    const int64_t span = KV / width;
    dG_last[w] = c.decay[w] * dot(span, S + w * span, dS + w * span);
  }
  kernels::gemm_nt(rows, K, V, dO, V, S, V, dQg, K, Accumulate::no);
  kernels::lower_gemm_nt(rows, V, dO, V, Vt, V, dP, C);  // (masked below)
  kernels::gemm_nt(rows, K, V, dVt, V, S, V, dW, K, Accumulate::no);
  for (int64_t i = 0; i < rows * K; ++i) dW[i] = -dW[i];

  // UT transform backward.
  kernels::gemm_nt(rows, rows, V, dVt, V, c.Vb, V, dT, C, Accumulate::no);
  kernels::gemm_nt(rows, rows, K, dW, K, c.Kb, K, dT, C, Accumulate::yes);
  kernels::lower_gemm_tn(rows, V, c.T0, C, dVt, V, dVb, V, Accumulate::no);
  kernels::lower_gemm_tn(rows, K, c.T0, C, dW, K, dKb, K, Accumulate::no);
  kernels::lower_gemm_tn(rows, rows, c.T0, C, dT, C, tmpC, C, Accumulate::no);
  kernels::gemm_nt(rows, rows, rows, tmpC, C, c.T0, C, dL, C, Accumulate::no);

  // Masks: dP lower with the diagonal, dL strictly lower (and negated).
  std::fill(dG, dG + rows * width, 0.0);
  const float scale = static_cast<float>(p.scale);
  for (int64_t i = 0; i < rows; ++i) {
    std::fill(dP + i * C + i + 1, dP + i * C + rows, 0.0f);
    for (int64_t j = 0; j < i; ++j) dL[i * C + j] = -dL[i * C + j];
    std::fill(dL + i * C + i, dL + i * C + rows, 0.0f);
  }
  if (vector) {
    pair_gradients_per_channel(c, K, scale, dP, dL, E, dq, dk, dx, dy, gate_row, dG);
  } else {
    // Gate gradients of the pair factors (only with a gate); E = dL ⊙ β_i Γ_ij (the K K^T part
    // of L); dq = dP' K, dk = dP'^T Q + E K + E^T K with dP' = dP ⊙ scale Γ (Γ kept by
    // prepare_chunk, zero above the diagonal).
    for (int64_t i = 0; want_gate && i < rows; ++i) {
      for (int64_t j = 0; j <= i; ++j) {
        const double x = static_cast<double>(c.P[i * C + j]) * dP[i * C + j] +
                         static_cast<double>(c.L[i * C + j]) * dL[i * C + j];
        dG[i] += x;
        dG[j] -= x;
      }
    }
    for (int64_t i = 0; i < rows; ++i) {
      const float* gamma = c.Gamma + i * C;
      for (int64_t j = 0; j < rows; ++j) {
        dP[i * C + j] *= scale * gamma[j];
        E[i * C + j] = dL[i * C + j] * c.beta[i] * gamma[j];
      }
    }
    kernels::lower_gemm_nn(rows, K, dP, C, c.k, K, dq, K, Accumulate::no);
    kernels::lower_gemm_tn(rows, K, dP, C, c.q, K, dk, K, Accumulate::no);
    kernels::lower_gemm_nn(rows, K, E, C, c.k, K, dk, K, Accumulate::yes);
    kernels::lower_gemm_tn(rows, K, E, C, c.k, K, dk, K, Accumulate::yes);
  }
  // Row factors e^{G_r} (Qg, Kb) and key-to-end factors e^{G_C - G_r} (Kd):
  // dq += scale e^G dQg; dk += β e^G dKb + e^{G_C-G} dKd; dG by the product rule.
  auto row_factors = [&](auto eg, auto egd) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < K; ++d) {
        const int64_t i = r * K + d;
        dq[i] += scale * eg(r, d) * dQg[i];
        dk[i] += c.beta[r] * eg(r, d) * dKb[i] + egd(r, d) * dKd[i];
      }
  };
  if (vector)
    row_factors([&](int64_t r, int64_t d) { return c.eG[r * K + d]; },
                [&](int64_t r, int64_t d) { return c.eGd[r * K + d]; });
  else
    row_factors([&](int64_t r, int64_t) { return c.eG[r]; }, [&](int64_t r, int64_t) { return c.eGd[r]; });
  for (int64_t r = 0; want_gate && r < rows; ++r) {
    if (vector) {
      for (int64_t d = 0; d < K; ++d) {
        const int64_t i = r * K + d;
        const double kd = static_cast<double>(c.Kd[i]) * dKd[i];
        dG[i] += static_cast<double>(c.Qg[i]) * dQg[i] + static_cast<double>(c.Kb[i]) * dKb[i] - kd;
        dG_last[d] += kd;
      }
      continue;
    }
    const double kd = dot(K, c.Kd + r * K, dKd + r * K);
    dG[r] += dot(K, c.Qg + r * K, dQg + r * K) + dot(K, c.Kb + r * K, dKb + r * K) - kd;
    dG_last[0] += kd;
  }
  for (int64_t w = 0; want_gate && w < width; ++w) dG[(rows - 1) * width + w] += dG_last[w];
  for (int64_t i = 0; i < rows * K; ++i) {
    h.dq_all[t0 * K + i] += dq[i];
    h.dk_all[t0 * K + i] += dk[i];
  }
  if (gr.dv.given()) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t e = 0; e < V; ++e) dv_rows[r * V + e] = c.beta[r] * dVb[r * V + e];
    store_rows(gr.dv, s.batch, row0, rows, hv, dv_rows, V);
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
    std::fill(run, run + width, 0.0);
    for (int64_t r = rows - 1; r >= 0; --r) {
      for (int64_t w = 0; w < width; ++w) run[w] += dG[r * width + w];
      if (!delta::gate_step(t0 + r, n_h)) continue;
      const int64_t token = s.start + (t0 + r) / n_h;
      if (vector) {
        for (int64_t d = 0; d < K; ++d) gate_row[d] = static_cast<float>(run[d]);
        store_rows(dgate, s.batch, token, 1, hv, gate_row, K);
      } else {
        store_scalar(dgate, s.batch, token, hv, run[0]);
      }
    }
  }
}

// dq (query steps only) or dk of a work item through the backward of the in-kernel L2 norm,
// dx = rstd (dy - y (y . dy)), stored; rows are independent, so chunks of them run in parallel.
void store_qk_gradient(const Head& h, bool keys, int64_t steps) {
  const TensorView& grad = keys ? h.gr.dk : h.gr.dq;
  if (!grad.given()) return;
  const Problem& p = h.p;
  const int64_t K = p.K, n_h = p.n_h, count = keys ? steps : h.s.length;
  const TensorView& x = keys ? h.a.k : h.a.q;
  float* dy_all = keys ? h.dk_all : h.dq_all;
  const float* rstd = keys ? h.k_rstd : h.q_rstd;
  parallel_for((count + kChunk - 1) / kChunk, [&](int64_t block) {
    std::vector<float> raw(K);
    for (int64_t i = block * kChunk; i < std::min(count, (block + 1) * kChunk); ++i) {
      const int64_t e = keys ? i : i * n_h + n_h - 1;  // expanded step
      const int64_t row = keys ? h.s.start * n_h + i : h.s.start + i;
      float* g = dy_all + e * K;
      if (h.a.use_qk_l2norm_in_kernel) {
        load_rows(x, h.s.batch, row, 1, h.hq, raw.data(), K);
        const float rs = rstd[e];
        for (int64_t d = 0; d < K; ++d) raw[d] *= rs;
        const float yg = static_cast<float>(dot(K, raw.data(), g));
        for (int64_t d = 0; d < K; ++d) g[d] = rs * (g[d] - raw[d] * yg);
      }
      store_rows(grad, h.s.batch, row, 1, h.hq, g, K);
    }
  });
}

// Per (sequence, q/k head), for each value head of its group: the forward state pass keeping the
// state entering every chunk and Ṽ = U - W S (O(T V), like v; the reverse sweep would otherwise
// redo W S), then the reverse pass, both window by window (chunk_windows.hpp): the window's
// chunks prepared in parallel (each pass only what it reads, delta::Need), the state (or state
// gradient) scan in parallel over blocks of value columns, and (reverse) the chunks' gradients
// in parallel. Per-item buffers come from the scratch arena: no page faults per call.
void run_item(const Problem& p, const OpArgs& a, const OpGradOutputs& go, const OpGrads& gr,
              const ChunkWindows& windows, int64_t n, int64_t hq) {
  const int64_t K = p.K, V = p.V, KV = K * V, C = kChunk;
  const Sequence& s = p.sequences[n];
  const int64_t n_h = p.n_h, steps = s.length * n_h, n_chunks = (steps + C - 1) / C;
  ScratchArena& arena = ScratchArena::local();
  float* states = arena.get<float>(delta::kSlotStates, (n_chunks + 1) * KV);
  float* dq_all = arena.get<float>(delta::kSlotItem, steps * (2 * K + 2 + V) + KV);
  float *dk_all = dq_all + steps * K, *q_rstd = dk_all + steps * K, *k_rstd = q_rstd + steps;
  float *Vt_all = k_rstd + steps, *dS_carry = Vt_all + steps * V;
  std::fill(dq_all, dq_all + 2 * steps * K, 0.0f);
  // The window: its chunks, their dO and dṼ, and the state gradients around them.
  const int64_t stride = delta::chunk_floats(p), count = std::max<int64_t>(1, std::min(windows.chunks, n_chunks));
  float* memory = arena.get<float>(delta::kSlotWindow, count * (stride + 2 * C * V) + (count + 1) * KV);
  float *dO_all = memory + count * stride, *dVt_all = dO_all + count * C * V, *dS_all = dVt_all + count * C * V;
  std::vector<delta::Chunk> chunks(count);
  auto prepare = [&](int64_t hv, int64_t w0, int64_t i, delta::Need need) {
    const int64_t t0 = (w0 + i) * C;
    delta::prepare_chunk(p, a, s, hv, hq, t0, std::min(C, steps - t0), chunks[i], memory + i * stride, need);
  };

  for (int64_t hv = hq * p.group(); hv < (hq + 1) * p.group(); ++hv) {
    const Head h{p, a, go, gr, s, hv, hq, dq_all, dk_all, q_rstd, k_rstd};
    load_state(a.initial_state, n, hv, K, V, states);
    for (int64_t w0 = 0; w0 < n_chunks; w0 += count) {
      const int64_t in_window = std::min(count, n_chunks - w0);
      parallel_for(in_window, [&](int64_t i) { prepare(hv, w0, i, delta::Need::state); });
      windows.for_each_column_block(V, [&](int64_t e0, int64_t cols) {
        float* work = ScratchArena::local().get<float>(delta::kSlotWork, C * cols);
        for (int64_t i = 0; i < in_window; ++i) {
          const delta::Chunk& c = chunks[i];
          const float* S = &states[(w0 + i) * KV];
          delta::advance_columns(c, K, V, e0, cols, S, &states[(w0 + i + 1) * KV], nullptr, work);
          for (int64_t r = 0; r < c.rows; ++r)  // (Ṽ, left in c.U)
            std::copy(c.U + r * V + e0, c.U + r * V + e0 + cols, Vt_all + ((w0 + i) * C + r) * V + e0);
        }
      });
    }

    if (go.dfinal_state.given())
      load_state(go.dfinal_state, n, hv, K, V, dS_carry);
    else
      std::fill(dS_carry, dS_carry + KV, 0.0f);
    for (int64_t w0 = (n_chunks - 1) / count * count; w0 >= 0; w0 -= count) {
      const int64_t in_window = std::min(count, n_chunks - w0);
      parallel_for(in_window, [&](int64_t i) {
        prepare(hv, w0, i, delta::Need::reverse);
        delta::Chunk& c = chunks[i];
        for (int64_t j = 0; j < c.rows * K; ++j) c.W[j] = -c.W[j];  // (reverse_columns)
        const int64_t t0 = (w0 + i) * C;
        float* dO = dO_all + i * C * V;
        if (n_h == 1) {
          load_rows(go.d_o, s.batch, s.start + t0, c.rows, hv, dO, V);
          return;
        }
        for (int64_t r = 0; r < c.rows; ++r) {  // dO of the query steps, zero elsewhere
          if (delta::query_step(t0 + r, n_h))
            load_rows(go.d_o, s.batch, s.start + (t0 + r) / n_h, 1, hv, dO + r * V, V);
          else
            std::fill(dO + r * V, dO + (r + 1) * V, 0.0f);
        }
      });
      std::copy(dS_carry, dS_carry + KV, dS_all + in_window * KV);
      windows.for_each_column_block(V, [&](int64_t e0, int64_t cols) {
        for (int64_t i = in_window - 1; i >= 0; --i)
          reverse_columns(chunks[i], K, V, e0, cols, dO_all + i * C * V, dS_all + (i + 1) * KV,
                          dVt_all + i * C * V, dS_all + i * KV);
      });
      parallel_for(in_window, [&](int64_t i) {
        const int64_t t0 = (w0 + i) * C;
        chunk_gradients(h, chunks[i], t0, &states[(w0 + i) * KV], dS_all + (i + 1) * KV, Vt_all + t0 * V,
                        dO_all + i * C * V, dVt_all + i * C * V);
      });
      std::copy(dS_all, dS_all + KV, dS_carry);
    }
    if (gr.dinitial_state.given()) store_state(gr.dinitial_state, n, hv, K, V, dS_carry);
  }
  const Head h{p, a, go, gr, s, hq * p.group(), hq, dq_all, dk_all, q_rstd, k_rstd};
  store_qk_gradient(h, false, steps);
  store_qk_gradient(h, true, steps);
}

}  // namespace
void delta_chunk_backward(const Problem& p, const OpArgs& a, const OpGradOutputs& go,
                         const OpGrads& gr) {
  const int64_t items = p.N() * p.H;
  const ChunkWindows windows = chunk_windows(items, p.V);
  for_each_work_item(items, [&](int64_t item) { run_item(p, a, go, gr, windows, item / p.H, item % p.H); });
}

}  // namespace linattn
