// Fast backward of noncausal_linear_attn (algorithms.md §4.1c without the mask), per (sequence,
// q/k head) item, with Q' = scale Q and KV = K^T [V | 1] recomputed as in the forward:
//   dO' = dO, or with normalize [dO / den, -(dO . num) / den^2] from O = Q' KV (§4.1c)
//   pass 1 (segments): dKV = Q'^T dO' (K x W, summed per segment), dQ = scale dO' KV^T per block
//   pass 2 (blocks):   dK = [V | 1] dKV^T (the ones column adds dz), dV = K dKV[:, :V]
// dQ and dK sum over the group's value heads inside their block, so every row has one owner.
#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/noncausal/chunk.hpp"

namespace linattn {
namespace {

using kernels::Accumulate;
using namespace noncausal;

// dO' of value head hv in a block -> dO [rows, W], given the block's Q' and the head's KV.
void output_grads(const Item& it, const TensorView& d_o, int64_t b, int64_t hv, const float* Q,
                  const float* kv, float* dO) {
  const int64_t rows = it.rows(b), K = it.p.K, V = it.p.V, W = it.W;
  load_rows(d_o, it.s.batch, it.row0(b), rows, hv, dO, W);
  if (!it.a.normalize) return;
  float* O = ScratchArena::local().get<float>(kSlotO, kBlock * W);
  kernels::gemm_nn(rows, W, K, Q, K, kv, W, O, W, Accumulate::no);
  for (int64_t r = 0; r < rows; ++r) {
    const float den = O[r * W + V] + static_cast<float>(kNormalizeEps);
    float dot = 0;
    for (int64_t c = 0; c < V; ++c) {
      dot += dO[r * W + c] * O[r * W + c];
      dO[r * W + c] /= den;
    }
    dO[r * W + V] = -dot / (den * den);
  }
}

}  // namespace

void noncausal_chunk_backward(const Problem& p, const OpArgs& a, const OpGradOutputs& go,
                              const OpGrads& gr) {
  const int64_t K = p.K, G = p.group();
  for_each_item(p, a, [&](const Item& it) {
    const int64_t W = it.W, KW = K * W;
    const std::vector<float> kv = kv_states(it);
    const std::vector<float> dkv = segment_sum(it, G * KW, [&](int64_t b, float* dkv_acc) {
      ScratchArena& arena = ScratchArena::local();
      float* Q = arena.get<float>(kSlotQ, kBlock * K);
      float* dO = arena.get<float>(kSlotDO, kBlock * W);
      float* dQ = arena.get<float>(kSlotDQ, kBlock * K);
      const int64_t rows = it.rows(b);
      load_scaled_q(it, b, Q);
      for (int64_t j = 0; j < G; ++j) {
        output_grads(it, go.d_o, b, it.hv(j), Q, &kv[j * KW], dO);
        kernels::gemm_tn(K, W, rows, Q, K, dO, W, dkv_acc + j * KW, W, Accumulate::yes);
        kernels::gemm_nt(rows, K, W, dO, W, &kv[j * KW], W, dQ, K, Accumulate{j > 0});
      }
      if (!gr.dq.given()) return;
      for (int64_t i = 0; i < rows * K; ++i) dQ[i] *= static_cast<float>(p.scale);
      store_rows(gr.dq, it.s.batch, it.row0(b), rows, it.hq, dQ, K);
    });
    if (!gr.dk.given() && !gr.dv.given()) return;
    parallel_for(it.n_blocks, [&](int64_t b) {
      ScratchArena& arena = ScratchArena::local();
      float* Kb = arena.get<float>(kSlotK, kBlock * K);
      float* Vb = arena.get<float>(kSlotV, kBlock * W);
      float* dV = arena.get<float>(kSlotDO, kBlock * W);
      float* dK = arena.get<float>(kSlotDK, kBlock * K);
      const int64_t rows = it.rows(b);
      load_rows(a.k, it.s.batch, it.row0(b), rows, it.hq, Kb, K);
      for (int64_t j = 0; j < G; ++j) {
        load_values(it, b, it.hv(j), Vb);
        kernels::gemm_nt(rows, K, W, Vb, W, &dkv[j * KW], W, dK, K, Accumulate{j > 0});
        if (!gr.dv.given()) continue;
        kernels::gemm_nn(rows, W, K, Kb, K, &dkv[j * KW], W, dV, W, Accumulate::no);
        store_rows(gr.dv, it.s.batch, it.row0(b), rows, it.hv(j), dV, W);
      }
      if (gr.dk.given()) store_rows(gr.dk, it.s.batch, it.row0(b), rows, it.hq, dK, K);
    });
  });
}

}  // namespace linattn
