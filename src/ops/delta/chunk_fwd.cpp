// Chunk-parallel forward of gated_delta_rule (algorithms.md §4.6b), delta_rule (§4.5b, the
// same with g = 0), delta_product (§4.7b: the same on the expanded sequence of n_h steps per
// token, chunk.hpp) and kda (§4.8b: per-channel gates, so e^{G} scales each channel and
// e^{G_C} S decays each state row), chunk 64, with the UT transform of §3.5. Per chunk (chunk.cpp
// prepares G, Γ_ij = exp(G_i - G_j), L, T0 = (I + L)^{-1}, W = T0 (β ⊙ K ⊙ e^G), U = T0 (β ⊙ V)):
//   Ṽ  = U - W S                                  (row r = the recurrent u_r)
//   O  = (scale Q ⊙ e^{G}) S + scale ((Q K^T) ⊙ Γ) Ṽ
//   S' = e^{G_C} S + (K ⊙ e^{G_C - G})^T Ṽ
// q and k are L2-normalised first when use_qk_l2norm_in_kernel; grouped value heads read q/k
// head hv / (HV / H). Work items are (sequence, value head) and the chunks of an item run in
// order (phases A, B and C fused per chunk), so results do not depend on the thread count.
#include <algorithm>

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

void run_item(const Problem& p, const OpArgs& a, const OpOutputs& out, int64_t n, int64_t hv) {
  const int64_t K = p.K, V = p.V, hq = hv / p.group(), n_h = p.n_h;
  const Sequence& s = p.sequences[n];
  const int64_t steps = s.length * n_h;
  float* S = ScratchArena::local().get<float>(delta::kSlotStates, K * V);
  float* O = ScratchArena::local().get<float>(delta::kSlotWork, kChunk * V);
  load_state(a.initial_state, n, hv, K, V, S);
  delta::Chunk c;
  for (int64_t t0 = 0; t0 < steps; t0 += kChunk) {
    const int64_t rows = std::min(kChunk, steps - t0);
    delta::prepare_chunk(p, a, s, hv, hq, t0, rows, c);
    float* Vt = c.U;  // Ṽ = U - W S, in place
    kernels::gemm_nn(rows, V, K, c.W, K, S, V, c.Vb, V, Accumulate::no);  // (Vb no longer needed)
    for (int64_t i = 0; i < rows * V; ++i) Vt[i] -= c.Vb[i];
    kernels::lower_gemm_nn(rows, V, c.P, kChunk, Vt, V, O, V, Accumulate::no);
    kernels::gemm_nn(rows, V, K, c.Qg, K, S, V, O, V, Accumulate::yes);
    if (n_h == 1) {
      store_rows(out.o, s.batch, s.start + t0, rows, hv, O, V);
    } else {
      for (int64_t r = 0; r < rows; ++r)
        if (delta::query_step(t0 + r, n_h))
          store_rows(out.o, s.batch, s.start + (t0 + r) / n_h, 1, hv, O + r * V, V);
    }
    delta::decay_state(c, K, V, S, S);
    kernels::gemm_tn(K, V, rows, c.Kd, K, Vt, V, S, V, Accumulate::yes);
  }
  if (a.output_final_state) store_state(out.final_state, n, hv, K, V, S);
}

}  // namespace

void delta_chunk_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  parallel_for(p.N() * p.HV, [&](int64_t item) { run_item(p, a, out, item / p.HV, item % p.HV); });
}

}  // namespace linattn
