// Chunk-parallel backward of dplr_delta_rule (algorithms.md §4.8c, the §4.6c pattern). Per
// (sequence, q/k head), for each value head of its group: rerun the forward keeping the state
// entering every chunk, then walk the chunks backwards with dS' = dS_[n+1] (dfinal_state, or
// zero, at the end), recomputing each chunk (chunk.cpp) and SA = U + W S_[n]:
//   dSA = A_qb^T dO + Bd dS'                     (Bd = B ⊙ e^{G_C - G}, Kd, Qf likewise)
//   dS_[n] = e^{G_C} ⊙ dS' + Qf^T dO + W^T dSA   (the reverse state scan; dS_0 at n = 0)
//   dQf = dO S^T   dKd = V dS'^T   dBd = SA dS'^T   dW = dSA S^T
//   dT = dSA X^T + dW Ae^T   dX = T^T dSA   dAe = T^T dW          (Ae = A ⊙ e^Ḡ, X = A_ak V)
//   dA_ab = (T^T dT T^T) ⊙ M⁻   dA_ak = (dX V^T) ⊙ M⁻   dA_qk = (dO V^T) ⊙ M   dA_qb = (dO SA^T) ⊙ M
//   dV = A_qk^T dO + A_ak^T dX + Kd dS'
// and the four gated pair products back to q, k, a, b (chunk.cpp pair_backward). Gate
// gradients by the product rule of §3.4 on the chunk-local cumulative decays: dG (inclusive)
// and dḠ (exclusive) per channel, then dgk_t = Σ_{r>=t} dG_r + Σ_{r>t} dḠ_r + Σ_{j<t} (the
// key-to-end factors' terms) + the state decay's term e^{G_C} ⊙ rowsum(S ⊙ dS'), shared by all t.
// q, k, a, b gradients sum over the group's value heads in a fixed order: results do not
// depend on the thread count.
#include <algorithm>
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/chunk_windows.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/dplr/chunk.hpp"

namespace linattn {
namespace {

using dplr::kChunk;
using kernels::Accumulate;

// dst[i] = x[i] * y[i]
void multiply(int64_t n, const float* x, const float* y, float* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = x[i] * y[i];
}

// Per-chunk buffers of one work item.
struct Workspace {
  std::vector<float> dV, dX;                                   // [C, V]
  std::vector<float> Qf, Kd, Bd, Ae, dQf, dKd, dBd, dW, dAe;   // [C, K]
  std::vector<float> dq, dk, da, db, dw;                       // [C, K]
  std::vector<float> dMqk, dMqb, dT, dAab, dAak, tmp;          // [C, C]
  std::vector<double> dG, dGx, key_end;                        // [C, K]
  std::vector<double> run, before;                             // [K]
  Workspace(int64_t K, int64_t V) : run(K), before(K) {
    const int64_t C = kChunk;
    for (auto* b : {&dV, &dX}) b->resize(C * V);
    for (auto* b : {&Qf, &Kd, &Bd, &Ae, &dQf, &dKd, &dBd, &dW, &dAe, &dq, &dk, &da, &db, &dw}) b->resize(C * K);
    for (auto* b : {&dMqk, &dMqb, &dT, &dAab, &dAak, &tmp}) b->resize(C * C);
    for (auto* b : {&dG, &dGx, &key_end}) b->resize(C * K);
  }
};

// Keeps the triangle of M (j <= i, or j < i when strict), zero elsewhere up to `rows`.
void keep_triangle(int64_t rows, bool strict, float* M) {
  for (int64_t i = 0; i < rows; ++i) std::fill(M + i * kChunk + (strict ? i : i + 1), M + i * kChunk + rows, 0.0f);
}

// The entries of a pair product whose decay is e^0 whatever the gates: the diagonal (i, i) of
// A_qk, A_qb (e^{G_i - G_i}) and the subdiagonal (i, i-1) of A_ab, A_ak (e^{Ḡ_i - G_{i-1}}).
// They go straight to dx, dy and are zeroed before pair_backward, leaving the gate out: their
// two terms of dgk cancel exactly, and in fp32 would leave rounding noise as large as the
// entries next to a gradient that strong decays make tiny.
void undecayed(int64_t rows, int64_t K, int64_t below, float scale, float* dM, const float* x,
               const float* y, float* dx, float* dy) {
  for (int64_t i = below; i < rows; ++i) {
    const int64_t j = i - below;
    const float d = scale * dM[i * kChunk + j];
    kernels::axpy(K, d, y + j * K, dx + i * K);
    kernels::axpy(K, d, x + i * K, dy + j * K);
    dM[i * kChunk + j] = 0.0f;
  }
}

// Σ_e x[r, e] y[r, e] as a double per row r.
double row_dot(int64_t n, const float* x, const float* y) {
  double acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += double(x[i]) * y[i];
  return acc;
}

// Value columns [e0, e0 + cols) of one chunk's step of the reverse scan (leading dimension V):
//   SA = U + W S (in place in st.SA)   dSA = A_qb^T dO + Bd dS'   dS = e^{G_C} ⊙ dS' + Qf^T dO + W^T dSA
void reverse_columns(const dplr::Step& st, int64_t K, int64_t V, int64_t e0, int64_t cols, const float* S,
                     const float* dO, const float* dS_next, float* dSA, float* dS) {
  const int64_t rows = st.rows;
  S += e0, dO += e0, dS_next += e0, dSA += e0, dS += e0;
  kernels::gemm_nn(rows, cols, K, st.W, K, S, V, st.SA + e0, V, Accumulate::yes);
  kernels::lower_gemm_tn(rows, cols, st.Aqb, kChunk, dO, V, dSA, V, Accumulate::no);
  kernels::gemm_nn(rows, cols, K, st.Bd, K, dS_next, V, dSA, V, Accumulate::yes);
  for (int64_t r = 0; r < K; ++r)
    for (int64_t e = 0; e < cols; ++e) dS[r * V + e] = st.decay[r] * dS_next[r * V + e];
  kernels::gemm_tn(K, cols, rows, st.Qf, K, dO, V, dS, V, Accumulate::yes);
  kernels::gemm_tn(K, cols, rows, st.W, K, dSA, V, dS, V, Accumulate::yes);
}

// The gradients of chunk c (tokens t0..) given the state S entering it, dS' = the gradient of
// the state leaving it, dO and dSA (reverse_columns; c.SA holds U + W S): everything that
// reduces over V, on whole rows, one chunk per call.
void chunk_gradients(const gla::Item& it, const OpGrads& gr, const dplr::Chunk& c, int64_t t0,
                     const float* S, const float* dS, const float* dO, const float* dSA, Workspace& w,
                     float* dq_all, float* dk_all, float* da_all, float* db_all) {
  const Problem& p = it.p;
  const Sequence& s = it.s;
  const int64_t K = p.K, V = p.V, C = kChunk, rows = c.g.rows, RK = rows * K;
  const float scale = static_cast<float>(p.scale);
  const bool want_gate = gr.dgk.given();
  const float* kf = c.g.k_factor;
  multiply(RK, c.g.q, c.g.q_factor, w.Qf.data());
  multiply(RK, c.g.k, kf, w.Kd.data());
  multiply(RK, c.b, kf, w.Bd.data());
  multiply(RK, c.a, c.ea, w.Ae.data());

  // Row-factor gradients (before the factors' own product rule).
  kernels::gemm_nt(rows, K, V, dO, V, S, V, w.dQf.data(), K, Accumulate::no);
  kernels::gemm_nt(rows, K, V, c.g.v, V, dS, V, w.dKd.data(), K, Accumulate::no);
  kernels::gemm_nt(rows, K, V, c.SA, V, dS, V, w.dBd.data(), K, Accumulate::no);
  kernels::gemm_nt(rows, K, V, dSA, V, S, V, w.dW.data(), K, Accumulate::no);

  // The triangular solve: W = T Ae, U = T X.
  kernels::gemm_nt(rows, rows, V, dSA, V, c.X, V, w.dT.data(), C, Accumulate::no);
  kernels::gemm_nt(rows, rows, K, w.dW.data(), K, w.Ae.data(), K, w.dT.data(), C, Accumulate::yes);
  kernels::gemm_tn(rows, V, rows, c.T, C, dSA, V, w.dX.data(), V, Accumulate::no);
  kernels::gemm_tn(rows, K, rows, c.T, C, w.dW.data(), K, w.dAe.data(), K, Accumulate::no);
  kernels::gemm_tn(rows, rows, rows, c.T, C, w.dT.data(), C, w.tmp.data(), C, Accumulate::no);
  kernels::gemm_nt(rows, rows, rows, w.tmp.data(), C, c.T, C, w.dAab.data(), C, Accumulate::no);
  keep_triangle(rows, true, w.dAab.data());
  kernels::gemm_nt(rows, rows, V, w.dX.data(), V, c.g.v, V, w.dAak.data(), C, Accumulate::no);
  keep_triangle(rows, true, w.dAak.data());
  kernels::gemm_nt(rows, rows, V, dO, V, c.g.v, V, w.dMqk.data(), C, Accumulate::no);
  keep_triangle(rows, false, w.dMqk.data());
  kernels::gemm_nt(rows, rows, V, dO, V, c.SA, V, w.dMqb.data(), C, Accumulate::no);
  keep_triangle(rows, false, w.dMqb.data());

  // dV = A_qk^T dO + A_ak^T dX + Kd dS'.
  kernels::lower_gemm_tn(rows, V, c.g.A, C, dO, V, w.dV.data(), V, Accumulate::no);
  kernels::lower_gemm_tn(rows, V, c.Aak, C, w.dX.data(), V, w.dV.data(), V, Accumulate::yes);
  kernels::gemm_nn(rows, V, K, w.Kd.data(), K, dS, V, w.dV.data(), V, Accumulate::yes);
  if (gr.dv.given()) store_rows(gr.dv, s.batch, s.start + t0, rows, it.hv, w.dV.data(), V);

  // q, k, a, b: row factors, then the pair products.
  multiply(RK, w.dQf.data(), c.g.q_factor, w.dq.data());
  multiply(RK, w.dKd.data(), kf, w.dk.data());
  multiply(RK, w.dBd.data(), kf, w.db.data());
  multiply(RK, w.dAe.data(), c.ea, w.da.data());
  std::fill(w.dG.begin(), w.dG.begin() + RK, 0.0);
  std::fill(w.dGx.begin(), w.dGx.begin() + RK, 0.0);
  double* dG = want_gate ? w.dG.data() : nullptr;
  double* dGx = want_gate ? w.dGx.data() : nullptr;
  if (want_gate)
    for (int64_t i = 0; i < RK; ++i) {
      w.dG[i] += double(w.Qf[i]) * w.dQf[i];   // query factor e^{G_r}
      w.dGx[i] += double(w.Ae[i]) * w.dAe[i];  // e^{Ḡ_r} of a_r
      w.key_end[i] = double(w.Kd[i]) * w.dKd[i] + double(w.Bd[i]) * w.dBd[i];  // e^{G_C - G_j}
    }
  undecayed(rows, K, 0, scale, w.dMqk.data(), c.g.q, c.g.k, w.dq.data(), w.dk.data());
  undecayed(rows, K, 0, scale, w.dMqb.data(), c.g.q, c.b, w.dq.data(), w.db.data());
  undecayed(rows, K, 1, 1.0f, w.dAab.data(), c.a, c.b, w.da.data(), w.db.data());
  undecayed(rows, K, 1, 1.0f, w.dAak.data(), c.a, c.g.k, w.da.data(), w.dk.data());
  dplr::pair_backward(c, K, w.dMqk.data(), scale, dplr::left_q(c), dplr::right_k(c), w.dq.data(), w.dk.data(), dG, dG);
  dplr::pair_backward(c, K, w.dMqb.data(), scale, dplr::left_q(c), dplr::right_b(c), w.dq.data(), w.db.data(), dG, dG);
  dplr::pair_backward(c, K, w.dAab.data(), 1.0f, dplr::left_a(c), dplr::right_b(c), w.da.data(), w.db.data(), dGx, dG);
  dplr::pair_backward(c, K, w.dAak.data(), 1.0f, dplr::left_a(c), dplr::right_k(c), w.da.data(), w.dk.data(), dGx, dG);
  kernels::axpy(RK, 1.0f, w.dq.data(), dq_all + t0 * K);
  kernels::axpy(RK, 1.0f, w.dk.data(), dk_all + t0 * K);
  kernels::axpy(RK, 1.0f, w.da.data(), da_all + t0 * K);
  kernels::axpy(RK, 1.0f, w.db.data(), db_all + t0 * K);

  if (!want_gate) return;
  // dgk_t = Σ_{r>=t} dG_r + Σ_{r>t} dḠ_r + Σ_{j<t} key_end_j + e^{G_C} rowsum(S ⊙ dS').
  std::vector<double>& run = w.run;
  std::vector<double>& before = w.before;
  std::fill(before.begin(), before.end(), 0.0);
  for (int64_t d = 0; d < K; ++d) run[d] = c.g.state_decay[d] * row_dot(V, S + d * V, dS + d * V);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < K; ++d) {
      const double key_end = w.key_end[r * K + d];
      w.key_end[r * K + d] = before[d];  // now the prefix sum over j < r
      before[d] += key_end;
    }
  for (int64_t r = rows - 1; r >= 0; --r)
    for (int64_t d = 0; d < K; ++d) {
      run[d] += w.dG[r * K + d];
      w.dw[r * K + d] = static_cast<float>(run[d] + w.key_end[r * K + d]);
      run[d] += w.dGx[r * K + d];  // dḠ_r counts for t < r only
    }
  store_rows(gr.dgk, s.batch, s.start + t0, rows, it.hv, w.dw.data(), K);
}

// Per (sequence, q/k head), for each value head of its group: the forward state pass keeping the
// state entering every chunk, then the reverse pass, both window by window (chunk_windows.hpp):
// the window's chunks prepared in parallel, the state (or state gradient) scan in parallel over
// blocks of value columns, and (reverse) the chunks' gradients in parallel, each chunk prepared
// again there (a window keeps only what the scans read).
void run_item(const Problem& p, const OpArgs& a, const OpGradOutputs& go, const OpGrads& gr,
              const ChunkWindows& windows, int64_t n, int64_t hq) {
  const int64_t K = p.K, V = p.V, KV = K * V, C = kChunk;
  const Sequence& s = p.sequences[n];
  const int64_t len = s.length, n_chunks = (len + C - 1) / C;
  std::vector<float> grads(4 * len * K, 0.0f);  // dq, dk, da, db of the group
  float *dq_all = grads.data(), *dk_all = dq_all + len * K, *da_all = dk_all + len * K, *db_all = da_all + len * K;
  std::vector<float> states((n_chunks + 1) * KV), dS_carry(KV);
  // The window: each chunk's Step, dO and dSA, then the state gradients around the chunks.
  const int64_t count = std::max<int64_t>(1, std::min(windows.chunks, n_chunks));
  const int64_t stride = dplr::step_floats(K, V) + 2 * C * V;
  std::vector<float> memory(count * stride + (count + 1) * KV);
  float* dS_all = memory.data() + count * stride;
  auto dO_of = [&](int64_t i) { return &memory[i * stride + stride - 2 * C * V]; };
  auto dSA_of = [&](int64_t i) { return &memory[i * stride + stride - C * V]; };
  std::vector<dplr::Step> steps(count);
  auto rows_of = [&](int64_t ci) { return std::min(C, len - ci * C); };
  for (int64_t hv = hq * p.group(); hv < (hq + 1) * p.group(); ++hv) {
    const gla::Item it{p, a, s, n, hv, hq, gla::Gate::vector};
    auto prepare = [&](int64_t ci, int64_t i) {
      dplr::Chunk c;
      dplr::prepare_chunk(it, ci * C, rows_of(ci), c);
      dplr::keep_step(c, K, V, &memory[i * stride], steps[i]);
    };
    load_state(a.initial_state, n, hv, K, V, states.data());
    for (int64_t w0 = 0; w0 < n_chunks; w0 += count) {
      const int64_t in_window = std::min(count, n_chunks - w0);
      parallel_for(in_window, [&](int64_t i) { prepare(w0 + i, i); });
      windows.for_each_column_block(V, [&](int64_t e0, int64_t cols) {
        for (int64_t i = 0; i < in_window; ++i)
          dplr::advance_columns(steps[i], K, V, e0, cols, &states[(w0 + i) * KV], &states[(w0 + i + 1) * KV], nullptr);
      });
    }

    load_state(go.dfinal_state, n, hv, K, V, dS_carry.data());
    for (int64_t w0 = (n_chunks - 1) / count * count; w0 >= 0; w0 -= count) {
      const int64_t in_window = std::min(count, n_chunks - w0);
      parallel_for(in_window, [&](int64_t i) {
        prepare(w0 + i, i);
        load_rows(go.d_o, s.batch, s.start + (w0 + i) * C, steps[i].rows, hv, dO_of(i), V);
      });
      std::copy(dS_carry.begin(), dS_carry.end(), dS_all + in_window * KV);
      windows.for_each_column_block(V, [&](int64_t e0, int64_t cols) {
        for (int64_t i = in_window - 1; i >= 0; --i)
          reverse_columns(steps[i], K, V, e0, cols, &states[(w0 + i) * KV], dO_of(i), dS_all + (i + 1) * KV,
                          dSA_of(i), dS_all + i * KV);
      });
      parallel_for(in_window, [&](int64_t i) {
        const int64_t ci = w0 + i;
        dplr::Chunk c;
        dplr::prepare_chunk(it, ci * C, rows_of(ci), c);
        std::copy(steps[i].SA, steps[i].SA + c.g.rows * V, c.SA);  // U + W S
        Workspace w(K, V);
        chunk_gradients(it, gr, c, ci * C, &states[ci * KV], dS_all + (i + 1) * KV, dO_of(i), dSA_of(i), w,
                        dq_all, dk_all, da_all, db_all);
      });
      std::copy(dS_all, dS_all + KV, dS_carry.begin());
    }
    if (gr.dinitial_state.given()) store_state(gr.dinitial_state, n, hv, K, V, dS_carry.data());
  }
  for (auto [grad, rows] : {std::pair{&gr.dq, dq_all}, {&gr.dk, dk_all}, {&gr.da, da_all}, {&gr.db, db_all}})
    if (grad->given()) store_rows(*grad, s.batch, s.start, len, hq, rows, K);
}

}  // namespace

void dplr_chunk_backward(const Problem& p, const OpArgs& a, const OpGradOutputs& go,
                         const OpGrads& gr) {
  const int64_t items = p.N() * p.H;
  const ChunkWindows windows = chunk_windows(items, p.V);
  for_each_work_item(items, [&](int64_t item) { run_item(p, a, go, gr, windows, item / p.H, item % p.H); });
}

}  // namespace linattn
