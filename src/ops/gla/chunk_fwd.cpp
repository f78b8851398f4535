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
#include "kernels/gemm_bf16.hpp"
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
  apply_factor(it.gate, c.rows, K, c.q, c.q_factor, Qs);
  if (c.products == kernels::Products::bf16) {
    kernels::lower_gemm_bf16_nn(c.rows, V, c.A, kChunk, c.v16, V, O, V, Accumulate::no);
    kernels::gemm_bf16_nn(c.rows, V, K, Qs, K, S, V, O, V, Accumulate::yes);
    return;
  }
  kernels::lower_gemm_nn(c.rows, V, c.A, kChunk, c.v, V, O, V, Accumulate::no);
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

namespace {

// Chunk n's own part of the state pass: H_n = (K ⊙ k_factor)^T V into H, its decay, and (for
// normalize) its key sum. The fused and the phased forward both use exactly this.
void state_contribution(const Item& it, const Chunk& c, float* H, float* decay, double* key_sum) {
  const int64_t K = it.p.K, V = it.p.V;
  float* Kd = ScratchArena::local().get<float>(kSlotWork1, kChunk * K);
  apply_factor(it.gate, c.rows, K, c.k, c.k_factor, Kd);
  if (c.products == kernels::Products::bf16) kernels::gemm_bf16_tn(K, V, c.rows, Kd, K, c.v16, V, H, V, Accumulate::no);
  else kernels::gemm_tn(K, V, c.rows, Kd, K, c.v, V, H, V, Accumulate::no);
  std::copy(c.state_decay, c.state_decay + (it.gate == Gate::vector ? K : 1), decay);
  if (it.a.normalize) {
    std::fill(key_sum, key_sum + K, 0.0);
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t d = 0; d < K; ++d) key_sum[d] += c.k[r * K + d];
  }
}

// Chunk n's output rows from the state entering it.
void write_output(const Item& it, const Chunk& c, const float* S, const double* z_start,
                  const TensorView& o) {
  float* O = ScratchArena::local().get<float>(kSlotGrads, kChunk * it.p.V);
  chunk_output(it, c, S, O);
  if (it.a.normalize) normalise_rows(c, it.p.K, it.p.V, it.p.scale, z_start, O, nullptr);
  store_rows(o, it.s.batch, it.s.start + c.t0, c.rows, it.hv, O, it.p.V);
}

int64_t chunk_rows(const Item& it, int64_t ci) { return std::min(kChunk, it.s.length - ci * kChunk); }

}  // namespace

ChunkStates chunk_states(const Item& it, kernels::Products products) {
  const int64_t K = it.p.K, V = it.p.V, KV = K * V;
  const int64_t n_chunks = (it.s.length + kChunk - 1) / kChunk;
  const int64_t width = it.gate == Gate::vector ? K : 1;
  ChunkStates st;
  st.n_chunks = n_chunks;
  // Slot n+1 first receives H_n (phase A), then becomes S_[n+1] (phase B), in place.
  ScratchArena& arena = ScratchArena::local();
  st.S = arena.get<float>(kSlotStates, (n_chunks + 1) * KV);
  float* decay = arena.get<float>(kSlotDecays, n_chunks * width);
  std::vector<double> key_sums(it.a.normalize ? n_chunks * K : 0);
  parallel_for(n_chunks, [&](int64_t ci) {  // phase A
    Chunk c;
    prepare_chunk(it, ci * kChunk, chunk_rows(it, ci), c, Need::state, products);
    state_contribution(it, c, st.S + (ci + 1) * KV, &decay[ci * width], key_sums.data() + ci * K);
  });
  load_state(it.a.initial_state, it.n, it.hv, K, V, st.S);  // phase B
  st.z_start.assign(it.a.normalize ? (n_chunks + 1) * K : 0, 0.0);
  for (int64_t ci = 0; ci < n_chunks; ++ci) {
    scan_step(it.gate, K, V, &decay[ci * width], &st.S[ci * KV], &st.S[(ci + 1) * KV]);
    for (int64_t d = 0; d < (it.a.normalize ? K : 0); ++d)
      st.z_start[(ci + 1) * K + d] = st.z_start[ci * K + d] + key_sums[ci * K + d];
  }
  return st;
}

}  // namespace gla

void gla_chunk_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  const gla::Gate gate = gla::gate_of(p);
  const int64_t K = p.K, V = p.V, KV = K * V, width = gate == gla::Gate::vector ? K : 1;
  const int64_t items = p.N() * p.H;
  // Enough items for every thread: one pass per item, the state carried chunk to chunk in
  // cache. Fewer: phases A-C with every thread on each item's chunks. Both do the same
  // operations on the same values, so the choice (made by the thread count) changes no bit.
  const bool fused = items_cover_threads(items);
  // bf16 q, k, v: bf16 products with fp32 sums (fla's tensor-core dots) where the CPU has a
  // native bf16 dot, fp32 products otherwise (kernels::chunk_products); fp32 state.
  const bool bf16 = a.q.dtype == DType::bf16 && a.k.dtype == DType::bf16 && a.v.dtype == DType::bf16;
  const kernels::Products products = kernels::chunk_products(bf16);
  auto run_item = [&](int64_t item) {
    const int64_t n = item / p.H, hq = item % p.H;
    const Sequence& s = p.sequences[n];
    for (int64_t hv = hq * p.group(); hv < (hq + 1) * p.group(); ++hv) {
      const gla::Item it{p, a, s, n, hv, hq, gate};
      const float* final_state = nullptr;
      gla::ChunkStates st;
      if (fused) {
        ScratchArena& arena = ScratchArena::local();
        float* S = arena.get<float>(gla::kSlotStates, 2 * KV);
        float* next = S + KV;
        float* decay = arena.get<float>(gla::kSlotDecays, width);
        std::vector<double> z(a.normalize ? K : 0, 0.0), key_sum(z.size());
        load_state(a.initial_state, n, hv, K, V, S);
        for (int64_t ci = 0; ci * kChunk < s.length; ++ci) {
          gla::Chunk c;
          gla::prepare_chunk(it, ci * kChunk, gla::chunk_rows(it, ci), c, gla::Need::scores, products);
          gla::write_output(it, c, S, z.data(), out.o);
          gla::state_contribution(it, c, next, decay, key_sum.data());
          gla::scan_step(gate, K, V, decay, S, next);
          std::swap(S, next);
          for (size_t d = 0; d < z.size(); ++d) z[d] += key_sum[d];
        }
        final_state = S;
      } else {
        st = gla::chunk_states(it, products);
        parallel_for(st.n_chunks, [&](int64_t ci) {  // phase C
          gla::Chunk c;
          gla::prepare_chunk(it, ci * kChunk, gla::chunk_rows(it, ci), c, gla::Need::scores, products);
          gla::write_output(it, c, &st.S[ci * KV], a.normalize ? &st.z_start[ci * K] : nullptr, out.o);
        });
        final_state = &st.S[st.n_chunks * KV];
      }
      if (a.output_final_state) store_state(out.final_state, n, hv, K, V, final_state);
    }
  };
  for_each_work_item(items, run_item);
}

}  // namespace linattn
