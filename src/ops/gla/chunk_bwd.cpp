// Chunk-parallel backward of the gated family (algorithms.md §3.4, §4.1c, §4.4c).
// Pass 1 replays the forward state pass and keeps the state entering every chunk; pass 2 walks
// the chunks backwards with dS = dS_[n+1] (the gradient of the state leaving the chunk):
//   dA  = scale (dO V^T) ⊙ decay, masked to j <= i
//   dQ  = dA K  (per-channel gates: via q~, k~)  + (dO S_[n]^T) ⊙ q_factor
//   dK  = dA^T Q                                   + (V dS^T) ⊙ k_factor
//   dV  = A^T dO + (K ⊙ k_factor) dS
//   dS_[n] = diag(e^{B_last}) dS + (Q ⊙ q_factor)^T dO
// Gate gradients use the product rule of §3.4 chunk by chunk (gradient of the chunk-local
// cumulative gate B, then a reverse cumulative sum inside the chunk). Unlike the whole-sequence
// identity sum_{s>=t}(q dq - k dk), every term here has the size of the decay it differentiates,
// and the diagonal of A (decay e^0, which cancels exactly) is left out, so strongly decayed
// gates keep their relative precision.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/gla/chunk.hpp"

namespace linattn {

using gla::kChunk;
using kernels::Accumulate;

namespace gla {

namespace {

// Per-chunk buffers of phases A' and C', one set per thread, grown once and then reused (no
// allocation per chunk). Every chunk overwrites what it reads, so nothing is cleared per chunk.
struct Workspace {
  std::vector<float> dO, num, raw, dA, dV, dq, dk, work, dx, dy, tmp, gate_row;
  std::vector<double> dB, pre, column, den, dden, z, dz, state_term, run, before;
  static Workspace& get(int64_t K, int64_t V) {
    thread_local Workspace w;
    const auto grow = [](auto& v, int64_t n) { if (v.size() < static_cast<size_t>(n)) v.resize(n); };
    for (auto* v : {&w.dO, &w.num, &w.dV}) grow(*v, kChunk * V);
    for (auto* v : {&w.raw, &w.dA}) grow(*v, kChunk * kChunk);
    for (auto* v : {&w.dq, &w.dk, &w.dx, &w.dy}) grow(*v, kChunk * K);
    grow(w.work, kChunk * std::max(K, V));
    grow(w.tmp, K);
    grow(w.gate_row, K);
    for (auto* v : {&w.dB, &w.pre}) grow(*v, kChunk * K);
    for (auto* v : {&w.column, &w.den, &w.dden}) grow(*v, kChunk);
    for (auto* v : {&w.z, &w.dz, &w.state_term, &w.run, &w.before}) grow(*v, K);
    return w;
  }
};

// raw = dO V^T; dA = raw ⊙ scale decay, masked to j <= i (the decay kept by prepare_chunk).
void score_gradient(const Item& it, const Chunk& c, Workspace& w) {
  kernels::lower_gemm_nt(c.rows, it.p.V, w.dO.data(), it.p.V, c.v, it.p.V, w.raw.data(), kChunk);
  const float scale = static_cast<float>(it.p.scale);
  for (int64_t i = 0; i < c.rows; ++i) {
    const float* r = w.raw.data() + i * kChunk;
    float* row = w.dA.data() + i * kChunk;
    if (it.gate == Gate::vector) {
      for (int64_t j = 0; j <= i; ++j) row[j] = scale * r[j];
    } else {
      const float* decay = c.decay + i * kChunk;
      for (int64_t j = 0; j <= i; ++j) row[j] = scale * r[j] * decay[j];
    }
    std::fill(row + i + 1, row + c.rows, 0.0f);
  }
}

// Adds the inter-chunk term raw ⊙ factor to the rows of grad (dQ or dK; the factor is per row
// for scalar gates, per element for vector gates) and, if gate_term, writes its product-rule
// term x ⊙ (raw ⊙ factor) of the gate gradient (§3.4): per element for vector gates, summed over
// the row for scalar ones (an fp32 dot of one row; rows and chunks add up in double).
void inter_term(Gate gate, int64_t rows, int64_t K, const float* x, const float* factor, float* raw,
                float* grad, double* gate_term) {
  for (int64_t r = 0; r < rows; ++r) {
    float* t = raw + r * K;
    if (gate != Gate::vector) {
      kernels::axpy(K, factor[r], t, grad + r * K);
      if (gate_term) gate_term[r] = double(factor[r]) * kernels::dot(x + r * K, t, K);
      continue;
    }
    const float* f = factor + r * K;
    for (int64_t d = 0; d < K; ++d) t[d] *= f[d];
    kernels::axpy(K, 1.0f, t, grad + r * K);
    for (int64_t d = 0; gate_term && d < K; ++d) gate_term[r * K + d] = double(x[r * K + d]) * t[d];
  }
}

// Intra-chunk dq, dk for per-channel gates. The strictly lower part goes through q~, k~ (or
// pair by pair for extreme decays) and also feeds the gate gradient; the diagonal (decay e^0)
// goes straight to dq, dk.
void vector_intra(const Item& it, const Chunk& c, Workspace& w, bool want_gate, float* dq, float* dk) {
  const int64_t K = it.p.K, rows = c.rows;
  for (int64_t i = 0; i < rows; ++i) {
    const float d = w.dA[i * kChunk + i];
    kernels::axpy(K, d, c.k + i * K, dq + i * K);
    kernels::axpy(K, d, c.q + i * K, dk + i * K);
    w.dA[i * kChunk + i] = 0.0f;
  }
  channel_gate::scores_backward(factors_of(c, K), w.dA.data(), kChunk, c.q, c.k, c.q_tilde,
                                c.k_tilde, w.dx.data(), w.dy.data(), w.tmp.data());
  kernels::axpy(rows * K, 1.0f, w.dx.data(), dq);
  kernels::axpy(rows * K, 1.0f, w.dy.data(), dk);
  if (want_gate)
    for (int64_t i = 0; i < rows * K; ++i) w.dB[i] += double(c.q[i]) * w.dx[i] - double(c.k[i]) * w.dy[i];
}

// Scalar gates: intra-chunk part of dB from P = A ⊙ (dO V^T), strictly below the diagonal:
// dB_i += sum_j P_ij (an fp32 dot of row i), dB_j -= sum_i P_ij (column sums over the rows, in
// double).
void scalar_intra_gate(const Chunk& c, Workspace& w) {
  double* column = w.column.data();
  std::fill(column, column + c.rows, 0.0);
  for (int64_t i = 0; i < c.rows; ++i) {
    const float* a = c.A + i * kChunk;
    const float* r = w.raw.data() + i * kChunk;
    w.dB[i] += kernels::dot(a, r, i);
    for (int64_t j = 0; j < i; ++j) column[j] += double(a[j]) * r[j];
  }
  for (int64_t j = 0; j < c.rows; ++j) w.dB[j] -= column[j];
}

// normalize: o = num / den. The rest of the backward runs on dnum = dO / den (in place); the
// denominator contributes dden_r = -(dO_r . num_r) / den_r^2, i.e. scale z_r dden_r to dq_r and
// scale q_r dden_r to every dk_{s <= r}. Returns the chunk's own sum of scale q_r dden_r in dz
// and, unless dq and dk are null (the state-gradient pass needs only dnum and dz), adds the
// within-chunk terms and dz_after (the sum over later chunks) to the chunk's rows dq, dk.
void normalised_gradient(const Item& it, const Chunk& c, const ChunkStates& st, int64_t ci,
                         Workspace& w, const double* dz_after, double* dz, float* dq, float* dk) {
  const int64_t K = it.p.K, V = it.p.V;
  const double scale = it.p.scale;
  chunk_output(it, c, &st.S[ci * K * V], w.num.data());
  normalise_rows(c, K, V, scale, &st.z_start[ci * K], nullptr, w.den.data());
  double* z = w.z.data();
  std::copy(&st.z_start[ci * K], &st.z_start[(ci + 1) * K], z);
  std::fill(dz, dz + K, 0.0);
  for (int64_t r = 0; r < c.rows; ++r) {
    double dot = 0;
    for (int64_t e = 0; e < V; ++e) dot += double(w.dO[r * V + e]) * w.num[r * V + e];
    w.dden[r] = -dot / (w.den[r] * w.den[r]);
    for (int64_t e = 0; e < V; ++e) w.dO[r * V + e] = static_cast<float>(w.dO[r * V + e] / w.den[r]);
    for (int64_t d = 0; dq && d < K; ++d) {
      z[d] += c.k[r * K + d];
      dq[r * K + d] += static_cast<float>(scale * z[d] * w.dden[r]);
    }
  }
  for (int64_t r = c.rows - 1; r >= 0; --r)
    for (int64_t d = 0; d < K; ++d) {
      dz[d] += scale * c.q[r * K + d] * w.dden[r];
      if (dk) dk[r * K + d] += static_cast<float>(dz_after[d] + dz[d]);
    }
}

// Gate gradient of the chunk's tokens from dB (the gradient of each row's cumulative gate) and
// pre (the key-to-end terms, which count for every later token): dg_t = sum_{r>=t} dB_r +
// sum_{j<t} pre_j + the state term rowsum(e^{B_last} S_n ⊙ dS) (the decay of S_[n], shared by
// all t; per state row an fp32 dot, summed in double).
void gate_gradient(const Item& it, const Chunk& c, Workspace& w, const float* Sn, const float* dSn,
                   const TensorView& dgate) {
  const int64_t K = it.p.K, V = it.p.V, rows = c.rows, row0 = it.s.start + c.t0;
  const bool vector = it.gate == Gate::vector;
  const int64_t width = vector ? K : 1;
  double *state_term = w.state_term.data(), *run = w.run.data(), *before = w.before.data();
  std::fill(state_term, state_term + width, 0.0);
  std::fill(run, run + width, 0.0);
  std::fill(before, before + width, 0.0);
  for (int64_t d = 0; d < K; ++d)
    state_term[vector ? d : 0] += double(kernels::dot(Sn + d * V, dSn + d * V, V)) * c.state_decay[vector ? d : 0];
  for (int64_t r = 0; r < rows; ++r)  // pre becomes its exclusive prefix sum
    for (int64_t d = 0; d < width; ++d) {
      const double own = w.pre[r * width + d];
      w.pre[r * width + d] = before[d];
      before[d] += own;
    }
  for (int64_t r = rows - 1; r >= 0; --r) {
    for (int64_t d = 0; d < width; ++d) {
      run[d] += w.dB[r * width + d];
      w.gate_row[d] = static_cast<float>(run[d] + w.pre[r * width + d] + state_term[d]);
    }
    if (vector) store_rows(dgate, it.s.batch, row0 + r, 1, it.hv, w.gate_row.data(), K);
    else store_scalar(dgate, it.s.batch, row0 + r, it.hv, w.gate_row[0]);
  }
}

}  // namespace
}  // namespace gla

namespace gla {
namespace {

// The gradients that need only chunk ci, the state entering it (Sn) and the gradient of the
// state leaving it (dSn) — phase C' — written to dv, dg/dgk and dq, dk (or, for q/k heads read by
// several value heads, added to the chunk's rows of dq_group, dk_group, which sum over them;
// chunks own disjoint rows); and this chunk's term G = (Q ⊙ qf)^T dnum of the
// state-gradient scan and its decay. Both the phased and the fused backward run exactly this, so
// they agree bit for bit. dz_chunk (normalize) may be null; `walk` is the order of the caller's
// chunks (for prefetching).
void chunk_gradients(const Item& it, const OpGradOutputs& go, const OpGrads& gr,
                     const ChunkStates& st, int64_t ci, const float* Sn, const float* dSn,
                     const double* dz_after, double* dz_chunk, float* dq_group, float* dk_group,
                     float* G, float* decay, Walk walk) {
  const Problem& p = it.p;
  const OpArgs& a = it.a;
  const Sequence& s = it.s;
  const Gate gate = it.gate;
  const bool vector = gate == Gate::vector;
  const int64_t K = p.K, V = p.V, width = vector ? K : 1, hv = it.hv;
  const TensorView& dgate = vector ? gr.dgk : gr.dg;
  const bool want_gate = gate != Gate::none && dgate.given();
  const int64_t t0 = ci * kChunk;
  Chunk c;
  prepare_chunk(it, t0, std::min(kChunk, s.length - t0), c, Need::scores, kernels::Products::f32, walk);
  Workspace& w = Workspace::get(K, V);
  const int64_t rows = c.rows;
  float* work = w.work.data();
  // Without a group the chunk's dq, dk rows are complete here and go to the outputs from a
  // buffer in cache (no item-sized buffer to clear, add to and copy out cold).
  const bool own_rows = dq_group == nullptr;
  float* dq = own_rows ? w.dq.data() : dq_group + t0 * K;
  float* dk = own_rows ? w.dk.data() : dk_group + t0 * K;
  if (own_rows) {
    std::fill(dq, dq + rows * K, 0.0f);
    std::fill(dk, dk + rows * K, 0.0f);
  }
  load_rows(go.d_o, s.batch, s.start + t0, rows, hv, w.dO.data(), V);
  const Span next = next_chunk(it, t0, rows, walk);
  if (next.rows > 0) prefetch_rows(go.d_o, s.batch, s.start + next.t0, next.rows, hv);
  if (a.normalize)
    normalised_gradient(it, c, st, ci, w, dz_after, dz_chunk ? dz_chunk : w.dz.data(), dq, dk);
  // Inter-chunk terms: dQ += (dO S_n^T) ⊙ qf; dK += (V dS^T) ⊙ kf. They also write the first
  // terms of the gate gradient: q ⊙ dQinter in dB (query factor e^{B_r}) and k ⊙ dKinter in pre
  // (key-to-end factor e^{B_last - B_j}).
  kernels::gemm_nt(rows, K, V, w.dO.data(), V, Sn, V, work, K, Accumulate::no);
  inter_term(gate, rows, K, c.q, c.q_factor, work, dq, want_gate ? w.dB.data() : nullptr);
  kernels::gemm_nt(rows, K, V, c.v, V, dSn, V, work, K, Accumulate::no);
  inter_term(gate, rows, K, c.k, c.k_factor, work, dk, want_gate ? w.pre.data() : nullptr);
  // Intra-chunk terms.
  score_gradient(it, c, w);
  if (vector) {
    vector_intra(it, c, w, want_gate, dq, dk);
  } else {
    if (want_gate) scalar_intra_gate(c, w);
    kernels::lower_gemm_nn(rows, K, w.dA.data(), kChunk, c.k, K, dq, K, Accumulate::yes);
    kernels::lower_gemm_tn(rows, K, w.dA.data(), kChunk, c.q, K, dk, K, Accumulate::yes);
  }
  // dV = A^T dO + (K ⊙ kf) dS.
  if (gr.dv.given()) {
    kernels::lower_gemm_tn(rows, V, c.A, kChunk, w.dO.data(), V, w.dV.data(), V, Accumulate::no);
    apply_factor(gate, rows, K, c.k, c.k_factor, work);
    kernels::gemm_nn(rows, V, K, work, K, dSn, V, w.dV.data(), V, Accumulate::yes);
    store_rows(gr.dv, s.batch, s.start + t0, rows, hv, w.dV.data(), V);
  }
  if (want_gate) gate_gradient(it, c, w, Sn, dSn, dgate);
  if (own_rows && gr.dq.given()) store_rows(gr.dq, s.batch, s.start + t0, rows, it.hq, dq, K);
  if (own_rows && gr.dk.given()) store_rows(gr.dk, s.batch, s.start + t0, rows, it.hq, dk, K);
  // This chunk's term of the state-gradient scan (unless the caller has it already).
  if (!G) return;
  apply_factor(gate, rows, K, c.q, c.q_factor, work);
  kernels::gemm_tn(K, V, rows, work, K, w.dO.data(), V, G, V, Accumulate::no);
  std::copy(c.state_decay, c.state_decay + width, decay);
}

}  // namespace
}  // namespace gla

void gla_chunk_backward(const Problem& p, const OpArgs& a, const OpGradOutputs& go,
                        const OpGrads& gr) {
  const gla::Gate gate = gla::gate_of(p);
  const int64_t K = p.K, V = p.V, KV = K * V, width = gate == gla::Gate::vector ? K : 1;
  const int64_t items = p.N() * p.H;
  // As in the forward: one reverse pass per item when items cover the threads, else phases
  // A'-C' with the threads on one item's chunks; the same operations either way.
  const bool fused = items_cover_threads(items);
  auto run_item = [&](int64_t item) {
    const int64_t n = item / p.H, hq = item % p.H;
    const Sequence& s = p.sequences[n];
    const int64_t len = s.length;
    ScratchArena& arena = ScratchArena::local();
    const bool grouped = p.group() > 1;  // dq, dk sum over the group's value heads
    float* dq_group = nullptr;
    float* dk_group = nullptr;
    if (grouped) {
      dq_group = arena.get<float>(gla::kSlotGroupGrads, 2 * len * K);
      dk_group = dq_group + len * K;
      std::fill(dq_group, dq_group + 2 * len * K, 0.0f);
    }

    for (int64_t hv = hq * p.group(); hv < (hq + 1) * p.group(); ++hv) {
      const gla::Item it{p, a, s, n, hv, hq, gate};
      const gla::ChunkStates st = gla::chunk_states(it);  // phases A and B
      const int64_t n_chunks = st.n_chunks;
      std::vector<double> dz(a.normalize ? (n_chunks + 1) * K : 2 * K, 0.0);
      float* dS;  // the gradient of the state entering chunk 0, at the end
      if (fused) {
        // One reverse pass: chunk ci's gradients from dS_[ci+1], then dS_[ci] from its G.
        float* cur = arena.get<float>(gla::kSlotStateGrads, 2 * KV);
        float* prev = cur + KV;
        double* dz_after = dz.data();
        double* dz_chunk = dz.data() + K;
        std::vector<float> decay(width);
        load_state(go.dfinal_state, n, hv, K, V, cur);
        for (int64_t ci = n_chunks - 1; ci >= 0; --ci) {
          gla::chunk_gradients(it, go, gr, st, ci, &st.S[ci * KV], cur, dz_after, dz_chunk,
                               dq_group, dk_group, prev, decay.data(), gla::Walk::down);
          gla::scan_step(gate, K, V, decay.data(), cur, prev);
          std::swap(cur, prev);
          for (int64_t d = 0; d < (a.normalize ? K : 0); ++d) dz_after[d] += dz_chunk[d];
        }
        dS = cur;
      } else {
        // Phase A': each chunk's gradients need dS_[ci+1], which the scan below produces from
        // every later chunk's G; so first the G_n and decays, then the scan, then the rest.
        dS = arena.get<float>(gla::kSlotStateGrads, (n_chunks + 1) * KV);
        std::vector<float> decay(n_chunks * width), G(n_chunks * KV);
        std::vector<double> dz_chunks(a.normalize ? n_chunks * K : 0);
        parallel_for(n_chunks, [&](int64_t ci) {
          gla::Chunk c;
          gla::prepare_chunk(it, ci * kChunk, std::min(kChunk, len - ci * kChunk), c,
                             a.normalize ? gla::Need::scores : gla::Need::queries);
          gla::Workspace& w = gla::Workspace::get(K, V);
          load_rows(go.d_o, s.batch, s.start + ci * kChunk, c.rows, hv, w.dO.data(), V);
          if (a.normalize)
            gla::normalised_gradient(it, c, st, ci, w, nullptr, &dz_chunks[ci * K], nullptr, nullptr);
          gla::apply_factor(gate, c.rows, K, c.q, c.q_factor, w.work.data());
          kernels::gemm_tn(K, V, c.rows, w.work.data(), K, w.dO.data(), V, &G[ci * KV], V, Accumulate::no);
          std::copy(c.state_decay, c.state_decay + width, &decay[ci * width]);
        });
        // Phase B': dS_[n] = diag(e^{B_last}) dS_[n+1] + G_n, from the final state's gradient.
        load_state(go.dfinal_state, n, hv, K, V, dS + n_chunks * KV);
        for (int64_t ci = n_chunks - 1; ci >= 0; --ci) {
          std::copy(&G[ci * KV], &G[(ci + 1) * KV], dS + ci * KV);
          gla::scan_step(gate, K, V, &decay[ci * width], dS + (ci + 1) * KV, dS + ci * KV);
          for (int64_t d = 0; d < (a.normalize ? K : 0); ++d)
            dz[ci * K + d] = dz[(ci + 1) * K + d] + dz_chunks[ci * K + d];
        }
        // Phase C'.
        parallel_for(n_chunks, [&](int64_t ci) {  // (each thread's chunks in ascending order)
          gla::chunk_gradients(it, go, gr, st, ci, &st.S[ci * KV], dS + (ci + 1) * KV,
                               a.normalize ? &dz[(ci + 1) * K] : dz.data(), nullptr, dq_group,
                               dk_group, nullptr, nullptr, gla::Walk::up);  // G_n, decay: from phase A'
        });
      }
      if (gr.dinitial_state.given()) store_state(gr.dinitial_state, n, hv, K, V, dS);
    }
    if (grouped && gr.dq.given()) store_rows(gr.dq, s.batch, s.start, len, hq, dq_group, K);
    if (grouped && gr.dk.given()) store_rows(gr.dk, s.batch, s.start, len, hq, dk_group, K);
  };
  for_each_work_item(items, run_item);
}

}  // namespace linattn
