// Chunk-parallel forward of the gated family (algorithms.md §3.2, §4.1-4.4 (b)), per chunk:
//   O_n     = A_n V_n + (Q ⊙ scale e^{B}) S_[n]             A_n = scale (Q K^T ⊙ decay) masked
//   S_[n+1] = diag(e^{B_last}) S_[n] + (K ⊙ e^{B_last - B})^T V_n
// normalize (linear_attn, fla semantics): o_t /= scale q_t . sum_{s<=t} k_s + 1e-10.
// Work items are (sequence, q/k head), looping over the value heads of the group, so that the
// result never depends on the thread count.
#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/gla/chunk.hpp"

namespace linattn {

using gla::kChunk;
using kernels::Accumulate;

namespace gla {

// Running key sums of normalised linear attention: den_t = scale q_t . z_t + eps, z_t = sum k.
struct Normaliser {
  std::vector<double> z;
  explicit Normaliser(int64_t K) : z(K, 0.0) {}
  // Divides the chunk's output rows by their denominators (advancing z over the chunk's keys).
  void apply(const Chunk& c, int64_t K, int64_t V, double scale, float* O) {
    for (int64_t r = 0; r < c.rows; ++r) {
      double den = 1e-10;
      for (int64_t d = 0; d < K; ++d) {
        z[d] += c.k[r * K + d];
        den += scale * c.q[r * K + d] * z[d];
      }
      for (int64_t e = 0; e < V; ++e) O[r * V + e] = static_cast<float>(O[r * V + e] / den);
    }
  }
};

// One chunk's unnormalised output O = A V + (Q ⊙ qf) S  (rows x V).
void chunk_output(const Item& it, const Chunk& c, const float* S, float* O) {
  const int64_t K = it.p.K, V = it.p.V;
  float* Qs = ScratchArena::local().get<float>(kSlotWork1, kChunk * K);
  kernels::gemm_nn(c.rows, V, c.rows, c.A, kChunk, c.v, V, O, V, Accumulate::no);
  apply_factor(it.gate, c.rows, K, c.q, c.q_factor, Qs);
  kernels::gemm_nn(c.rows, V, K, Qs, K, S, V, O, V, Accumulate::yes);
}

// S <- diag(e^{B_last}) S + (K ⊙ e^{B_last - B})^T V.
void advance_state(const Item& it, const Chunk& c, float* S) {
  const int64_t K = it.p.K, V = it.p.V;
  ScratchArena& arena = ScratchArena::local();
  float* Kd = arena.get<float>(kSlotWork1, kChunk * K);
  float* H = arena.get<float>(kSlotWork2, K * V);
  apply_factor(it.gate, c.rows, K, c.k, c.k_factor, Kd);
  kernels::gemm_tn(K, V, c.rows, Kd, K, c.v, V, H, V, Accumulate::no);
  decay_and_add(it.gate, K, V, c.state_decay, H, S);
}

}  // namespace gla

void gla_chunk_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  const gla::Gate gate = gla::gate_of(p);
  const int64_t K = p.K, V = p.V;
  parallel_for(p.N() * p.H, [&](int64_t item) {
    const int64_t n = item / p.H, hq = item % p.H;
    const Sequence& s = p.sequences[n];
    for (int64_t hv = hq * p.group(); hv < (hq + 1) * p.group(); ++hv) {
      const gla::Item it{p, a, s, n, hv, hq, gate};
      ScratchArena& arena = ScratchArena::local();
      float* S = arena.get<float>(gla::kSlotStates, K * V);
      float* O = arena.get<float>(gla::kSlotGrads, kChunk * V);
      load_state(a.initial_state, n, hv, K, V, S);
      gla::Normaliser norm(K);
      gla::Chunk c;
      for (int64_t t0 = 0; t0 < s.length; t0 += kChunk) {
        gla::prepare_chunk(it, t0, std::min(kChunk, s.length - t0), c, /*with_scores=*/true);
        gla::chunk_output(it, c, S, O);
        if (a.normalize) norm.apply(c, K, V, p.scale, O);
        store_rows(out.o, s.batch, s.start + t0, c.rows, hv, O, V);
        gla::advance_state(it, c, S);
      }
      if (a.output_final_state) store_state(out.final_state, n, hv, K, V, S);
    }
  });
}

}  // namespace linattn
