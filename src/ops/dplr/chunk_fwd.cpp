// Chunk-parallel forward of dplr_delta_rule (algorithms.md §4.8b), chunk 64. Per chunk
// (chunk.cpp prepares A_qk, A_qb, A_ab, A_ak, T = (I - A_ab)^{-1}, W, U = T A_ak V):
//   SA = U + W S                                   (row i = sa_i of the recurrence)
//   O  = A_qk V + A_qb SA + (Q ⊙ scale e^G) S      (scale inside A_qk, A_qb)
//   S' = diag(e^{G_C}) S + (K ⊙ e^{G_C - G})^T V + (B ⊙ e^{G_C - G})^T SA
// Work items are (sequence, value head); the chunks of an item run in order with the state in
// cache, so results do not depend on the thread count.
#include <algorithm>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/dplr/chunk.hpp"

namespace linattn {

using dplr::kChunk;
using kernels::Accumulate;

namespace dplr {

// S' = diag(e^{G_C}) S + (K ⊙ e^{G_C - G})^T V + (B ⊙ e^{G_C - G})^T SA, in place.
void advance_state(const Chunk& c, int64_t K, int64_t V, float* S) {
  const int64_t rows = c.g.rows;
  for (int64_t r = 0; r < K; ++r)
    for (int64_t e = 0; e < V; ++e) S[r * V + e] *= c.g.state_decay[r];
  gla::apply_factor(gla::Gate::vector, rows, K, c.g.k, c.g.k_factor, c.work);
  kernels::gemm_tn(K, V, rows, c.work, K, c.g.v, V, S, V, Accumulate::yes);
  gla::apply_factor(gla::Gate::vector, rows, K, c.b, c.g.k_factor, c.work);
  kernels::gemm_tn(K, V, rows, c.work, K, c.SA, V, S, V, Accumulate::yes);
}

}  // namespace dplr

void dplr_chunk_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  parallel_for(p.N() * p.HV, [&](int64_t item) {
    const int64_t n = item / p.HV, hv = item % p.HV, K = p.K, V = p.V;
    const Sequence& s = p.sequences[n];
    const gla::Item it{p, a, s, n, hv, hv / p.group(), gla::Gate::vector};
    float* S = ScratchArena::local().get<float>(dplr::kSlotStates, K * V + kChunk * V);
    float* O = S + K * V;
    load_state(a.initial_state, n, hv, K, V, S);
    dplr::Chunk c;
    for (int64_t t0 = 0; t0 < s.length; t0 += kChunk) {
      const int64_t rows = std::min(kChunk, s.length - t0);
      dplr::prepare_chunk(it, t0, rows, c);
      dplr::read_state(c, K, V, S);
      kernels::lower_gemm_nn(rows, V, c.g.A, kChunk, c.g.v, V, O, V, Accumulate::no);
      kernels::lower_gemm_nn(rows, V, c.Aqb, kChunk, c.SA, V, O, V, Accumulate::yes);
      gla::apply_factor(gla::Gate::vector, rows, K, c.g.q, c.g.q_factor, c.work);
      kernels::gemm_nn(rows, V, K, c.work, K, S, V, O, V, Accumulate::yes);
      store_rows(out.o, s.batch, s.start + t0, rows, hv, O, V);
      dplr::advance_state(c, K, V, S);
    }
    if (a.output_final_state) store_state(out.final_state, n, hv, K, V, S);
  });
}

}  // namespace linattn
