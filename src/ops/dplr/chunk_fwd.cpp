// Chunk-parallel forward of dplr_delta_rule (algorithms.md §4.8b), chunk 64. Per chunk
// (chunk.cpp prepares A_qk, A_qb, A_ab, A_ak, T = (I - A_ab)^{-1}, W, U = T A_ak V):
//   SA = U + W S                                   (row i = sa_i of the recurrence)
//   O  = A_qk V + A_qb SA + (Q ⊙ scale e^G) S      (scale inside A_qk, A_qb)
//   S' = diag(e^{G_C}) S + (K ⊙ e^{G_C - G})^T V + (B ⊙ e^{G_C - G})^T SA
// Work items are (sequence, value head). Inside an item the chunks go by in windows
// (ops/common/chunk_windows.hpp): each window's chunks are prepared (in parallel when items are
// fewer than threads), then the state runs through them in blocks of value columns (in parallel
// likewise), writing O. Both ways give the same bits for every thread count.
// At RWKV-7's head sizes the forward is the recurrent form's (forward_runs_recurrent, chunk.hpp).
#include <algorithm>
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/chunk_windows.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/dplr/chunk.hpp"

namespace linattn {

using dplr::kChunk;
using kernels::Accumulate;

namespace dplr {

void advance_columns(const Step& st, int64_t K, int64_t V, int64_t e0, int64_t cols, const float* S,
                     float* S_out, float* O) {
  const int64_t rows = st.rows;
  float* SA = st.SA + e0;
  S += e0;
  S_out += e0;
  kernels::gemm_nn(rows, cols, K, st.W, K, S, V, SA, V, Accumulate::yes);
  if (O) {
    O += e0;
    kernels::lower_gemm_nn(rows, cols, st.Aqk, kChunk, st.v + e0, V, O, V, Accumulate::no);
    kernels::lower_gemm_nn(rows, cols, st.Aqb, kChunk, SA, V, O, V, Accumulate::yes);
    kernels::gemm_nn(rows, cols, K, st.Qf, K, S, V, O, V, Accumulate::yes);
  }
  for (int64_t r = 0; r < K; ++r)
    for (int64_t e = 0; e < cols; ++e) S_out[r * V + e] = S[r * V + e] * st.decay[r];
  kernels::gemm_tn(K, cols, rows, st.Kd, K, st.v + e0, V, S_out, V, Accumulate::yes);
  kernels::gemm_tn(K, cols, rows, st.Bd, K, SA, V, S_out, V, Accumulate::yes);
}

}  // namespace dplr

bool dplr::forward_runs_recurrent(const Problem& p) { return p.K <= kRecurrentMaxKey; }

void dplr_chunk_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  if (dplr::forward_runs_recurrent(p)) return dplr_recurrent_forward(p, a, out);
  const int64_t items = p.N() * p.HV, K = p.K, V = p.V;
  const ChunkWindows windows = chunk_windows(items, V);
  for_each_work_item(items, [&](int64_t item) {
    const int64_t n = item / p.HV, hv = item % p.HV;
    const Sequence& s = p.sequences[n];
    const gla::Item it{p, a, s, n, hv, hv / p.group(), gla::Gate::vector};
    const int64_t n_chunks = (s.length + kChunk - 1) / kChunk;
    const int64_t count = std::max<int64_t>(1, std::min(windows.chunks, n_chunks));
    const int64_t stride = dplr::step_floats(K, V) + kChunk * V;  // a chunk's Step and outputs
    std::vector<float> memory(count * stride), S(K * V);
    std::vector<dplr::Step> steps(count);
    load_state(a.initial_state, n, hv, K, V, S.data());
    for (int64_t w0 = 0; w0 < n_chunks; w0 += count) {
      const int64_t in_window = std::min(count, n_chunks - w0);
      parallel_for(in_window, [&](int64_t i) {
        const int64_t t0 = (w0 + i) * kChunk;
        dplr::Chunk c;
        dplr::prepare_chunk(it, t0, std::min(kChunk, s.length - t0), c);
        dplr::keep_step(c, K, V, &memory[i * stride], steps[i]);
      });
      windows.for_each_column_block(V, [&](int64_t e0, int64_t cols) {
        for (int64_t i = 0; i < in_window; ++i)
          dplr::advance_columns(steps[i], K, V, e0, cols, S.data(), S.data(), &memory[i * stride + stride - kChunk * V]);
      });
      parallel_for(in_window, [&](int64_t i) {
        store_rows(out.o, s.batch, s.start + (w0 + i) * kChunk, steps[i].rows, hv,
                   &memory[i * stride + stride - kChunk * V], V);
      });
    }
    if (a.output_final_state) store_state(out.final_state, n, hv, K, V, S.data());
  });
}

}  // namespace linattn
