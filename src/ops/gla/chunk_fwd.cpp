// Chunk-parallel forward of the gated family (algorithms.md §3.2, §4.1-4.4 (b)) in three phases
// per (sequence, value head):
//   A (parallel over chunks): H_n = (K ⊙ e^{B_last - B})^T V_n and the chunk's decay e^{B_last}
//   B (serial scan):          S_[n+1] = diag(e^{B_last}) S_[n] + H_n
//   C (parallel over chunks): O_n = A_n V_n + (Q ⊙ scale e^{B}) S_[n],  A_n = scale (QK^T ⊙ decay)
// normalize (linear_attn, fla semantics): o_t /= scale q_t . sum_{s<=t} k_s + 1e-10.
// Work items are (sequence, q/k head), looping over the group's value heads. With at least as
// many items as threads the items run in parallel (chunks serially inside); with fewer, each
// item's chunk loops run on all threads. The arithmetic is the same either way, so results are
// bitwise identical for every thread count.
#include <algorithm>
#include <cstring>

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

void chunk_output(const Item& it, const Chunk& c, const float* S, float* O) {
  const int64_t K = it.p.K, V = it.p.V;
  float* Qs = ScratchArena::local().get<float>(kSlotWork1, kChunk * K);
  kernels::lower_gemm_nn(c.rows, V, c.A, kChunk, c.v, V, O, V, Accumulate::no);
  apply_factor(it.gate, c.rows, K, c.q, c.q_factor, Qs);
  kernels::gemm_nn(c.rows, V, K, Qs, K, S, V, O, V, Accumulate::yes);
}

void normalise_rows(const Chunk& c, int64_t K, int64_t V, double scale, const double* z_start,
                      float* O, double* den_out) {
  std::vector<double> z(z_start, z_start + K);
  for (int64_t r = 0; r < c.rows; ++r) {
    double den = 1e-10;
    for (int64_t d = 0; d < K; ++d) den += scale * c.q[r * K + d] * (z[d] += c.k[r * K + d]);
    if (den_out) den_out[r] = den;
    if (O)
      for (int64_t e = 0; e < V; ++e) O[r * V + e] = static_cast<float>(O[r * V + e] / den);
  }
}

ChunkStates chunk_states(const Item& it) {
  const Problem& p = it.p;
  const int64_t K = p.K, V = p.V, KV = K * V, len = it.s.length;
  const int64_t n_chunks = (len + kChunk - 1) / kChunk;
  const int64_t width = it.gate == Gate::vector ? K : 1;
  ChunkStates st;
  st.n_chunks = n_chunks;
  // Slot n+1 first receives H_n (phase A), then becomes S_[n+1] (phase B), in place.
  ScratchArena& arena = ScratchArena::local();
  st.S = arena.get<float>(kSlotStates, (n_chunks + 1) * KV);
  float* decay = arena.get<float>(kSlotDecays, n_chunks * width);
  std::vector<double> key_sums(it.a.normalize ? n_chunks * K : 0);
  // Phase A.
  parallel_for(n_chunks, [&](int64_t ci) {
    Chunk c;
    prepare_chunk(it, ci * kChunk, std::min(kChunk, len - ci * kChunk), c, Need::state);
    float* Kd = ScratchArena::local().get<float>(kSlotWork1, kChunk * K);
    apply_factor(it.gate, c.rows, K, c.k, c.k_factor, Kd);
    kernels::gemm_tn(K, V, c.rows, Kd, K, c.v, V, st.S + (ci + 1) * KV, V, Accumulate::no);
    std::copy(c.state_decay, c.state_decay + width, &decay[ci * width]);
    if (it.a.normalize)
      for (int64_t r = 0; r < c.rows; ++r)
        for (int64_t d = 0; d < K; ++d) key_sums[ci * K + d] += c.k[r * K + d];
  });
  // Phase B.
  load_state(it.a.initial_state, it.n, it.hv, K, V, st.S);
  st.z_start.assign(it.a.normalize ? (n_chunks + 1) * K : 0, 0.0);
  for (int64_t ci = 0; ci < n_chunks; ++ci) {
    scan_step(it.gate, K, V, &decay[ci * width], &st.S[ci * KV], &st.S[(ci + 1) * KV]);
    for (size_t d = 0; d < static_cast<size_t>(it.a.normalize ? K : 0); ++d)
      st.z_start[(ci + 1) * K + d] = st.z_start[ci * K + d] + key_sums[ci * K + d];
  }
  return st;
}

}  // namespace gla

void gla_chunk_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  const gla::Gate gate = gla::gate_of(p);
  const int64_t K = p.K, V = p.V, KV = K * V;
  const int64_t items = p.N() * p.H;
  auto run_item = [&](int64_t item) {
    const int64_t n = item / p.H, hq = item % p.H;
    const Sequence& s = p.sequences[n];
    for (int64_t hv = hq * p.group(); hv < (hq + 1) * p.group(); ++hv) {
      const gla::Item it{p, a, s, n, hv, hq, gate};
      const gla::ChunkStates st = gla::chunk_states(it);
      // Phase C.
      parallel_for(st.n_chunks, [&](int64_t ci) {
        gla::Chunk c;
        gla::prepare_chunk(it, ci * kChunk, std::min(kChunk, s.length - ci * kChunk), c, gla::Need::scores);
        float* O = ScratchArena::local().get<float>(gla::kSlotGrads, kChunk * V);
        gla::chunk_output(it, c, &st.S[ci * KV], O);
        if (a.normalize) gla::normalise_rows(c, K, V, p.scale, &st.z_start[ci * K], O, nullptr);
        store_rows(out.o, s.batch, s.start + ci * kChunk, c.rows, hv, O, V);
      });
      if (a.output_final_state) store_state(out.final_state, n, hv, K, V, &st.S[st.n_chunks * KV]);
    }
  };
  if (items >= max_threads()) {
    parallel_for(items, run_item);
  } else {
    for (int64_t item = 0; item < items; ++item) run_item(item);
  }
}

}  // namespace linattn
