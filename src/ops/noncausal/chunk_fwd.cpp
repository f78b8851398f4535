// Fast forward of noncausal_linear_attn (algorithms.md §4.1, no causal mask), per (sequence,
// q/k head) item and each value head of its group:
//   KV = K^T [V | 1]    (gemm_tn per block of kBlock rows, summed per segment, chunk.hpp)
//   O  = (scale Q) KV   (gemm_nn per block), then with normalize o = O[:, :V] / (O[:, V] + 1e-10).
// float32 or bfloat16 storage, fp32 arithmetic; float64 inputs run the oracle (registry.cpp).
#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"
#include "ops/noncausal/chunk.hpp"

namespace linattn {
namespace noncausal {

void load_scaled_q(const Item& it, int64_t block, float* dst) {
  const int64_t K = it.p.K, n = it.rows(block) * K;
  load_rows(it.a.q, it.s.batch, it.row0(block), it.rows(block), it.hq, dst, K);
  for (int64_t i = 0; i < n; ++i) dst[i] *= static_cast<float>(it.p.scale);
}

void load_values(const Item& it, int64_t block, int64_t hv, float* dst) {
  load_rows(it.a.v, it.s.batch, it.row0(block), it.rows(block), hv, dst, it.W);
  if (it.a.normalize)
    for (int64_t r = 0; r < it.rows(block); ++r) dst[r * it.W + it.p.V] = 1.0f;
}

std::vector<float> kv_states(const Item& it) {
  const int64_t K = it.p.K, W = it.W, KW = K * W;
  return segment_sum(it, it.p.group() * KW, [&](int64_t b, float* kv) {
    ScratchArena& arena = ScratchArena::local();
    float* Kb = arena.get<float>(kSlotK, kBlock * K);
    float* Vb = arena.get<float>(kSlotV, kBlock * W);
    load_rows(it.a.k, it.s.batch, it.row0(b), it.rows(b), it.hq, Kb, K);
    for (int64_t j = 0; j < it.p.group(); ++j) {
      load_values(it, b, it.hv(j), Vb);
      kernels::gemm_tn(K, W, it.rows(b), Kb, K, Vb, W, kv + j * KW, W, kernels::Accumulate::yes);
    }
  });
}

}  // namespace noncausal

void noncausal_chunk_forward(const Problem& p, const OpArgs& a, const OpOutputs& out) {
  using namespace noncausal;
  const int64_t K = p.K, V = p.V;
  for_each_item(p, a, [&](const Item& it) {
    const int64_t W = it.W;
    const std::vector<float> kv = kv_states(it);
    parallel_for(it.n_blocks, [&](int64_t b) {
      ScratchArena& arena = ScratchArena::local();
      float* Q = arena.get<float>(kSlotQ, kBlock * K);
      float* O = arena.get<float>(kSlotO, kBlock * W);
      const int64_t rows = it.rows(b);
      load_scaled_q(it, b, Q);
      for (int64_t j = 0; j < p.group(); ++j) {
        kernels::gemm_nn(rows, W, K, Q, K, &kv[j * K * W], W, O, W, kernels::Accumulate::no);
        for (int64_t r = 0; r < rows && a.normalize; ++r) {
          const float den = O[r * W + V] + static_cast<float>(kNormalizeEps);
          for (int64_t c = 0; c < V; ++c) O[r * W + c] /= den;
        }
        store_rows(out.o, it.s.batch, it.row0(b), rows, it.hv(j), O, W);
      }
    });
  });
}

}  // namespace linattn
