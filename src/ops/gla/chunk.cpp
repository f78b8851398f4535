#include "ops/gla/chunk.hpp"

#include <algorithm>
#include <cmath>

#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/gemm.hpp"
#include "kernels/gemm_bf16.hpp"
#include "ops/common/rows.hpp"

namespace linattn::gla {
namespace {

using kernels::Accumulate;

// decay[i, j] = exp(b_i - b_j) for j <= i, and row i of A times scale decay[i, :], 0 beyond.
// The exponent is formed in double from chunk-local sums (S1, S3), so a large early decay cannot
// swamp later small ones.
void decay_scalar_scores(const Chunk& c, double scale) {
  for (int64_t i = 0; i < c.rows; ++i) {
    float* decay = c.decay + i * kChunk;
    for (int64_t j = 0; j <= i; ++j) decay[j] = static_cast<float>(c.B[i] - c.B[j]);
    kernels::exp_inplace(decay, i + 1);
    float* row = c.A + i * kChunk;
    for (int64_t j = 0; j <= i; ++j) row[j] *= static_cast<float>(scale) * decay[j];
    std::fill(row + i + 1, row + c.rows, 0.0f);
  }
}

}  // namespace

Gate gate_of(const Problem& p) {
  if (p.spec->takes_gk) return Gate::vector;
  if (p.spec->takes_g || p.spec->fixed_decay) return Gate::scalar;
  return Gate::none;
}

void apply_factor(Gate gate, int64_t rows, int64_t K, const float* x, const float* factor, float* dst) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < K; ++d)
      dst[r * K + d] = x[r * K + d] * (gate == Gate::vector ? factor[r * K + d] : factor[r]);
}

void scan_step(Gate gate, int64_t K, int64_t V, const float* decay, const float* prev, float* next) {
  for (int64_t r = 0; r < K; ++r)
    kernels::axpy(V, gate == Gate::vector ? decay[r] : decay[0], prev + r * V, next + r * V);
}

Span next_chunk(const Item& it, int64_t t0, int64_t rows, Walk walk) {
  if (walk == Walk::down) return {std::max<int64_t>(t0 - kChunk, 0), std::min(kChunk, t0)};
  return {t0 + rows, std::min(kChunk, it.s.length - (t0 + rows))};
}

void prepare_chunk(const Item& it, int64_t t0, int64_t rows, Chunk& c, Need need,
                   kernels::Products products, Walk walk) {
  const bool with_queries = need != Need::state, with_scores = need == Need::scores;
  const bool bf16 = products == kernels::Products::bf16;
  const Problem& p = it.p;
  const int64_t K = p.K, V = p.V, b = it.s.batch, row0 = it.s.start + t0;
  ScratchArena& arena = ScratchArena::local();
  c.t0 = t0;
  c.rows = rows;
  c.products = products;
  c.q = arena.get<float>(kSlotQ, kChunk * K);
  c.k = arena.get<float>(kSlotK, kChunk * K);
  if (with_queries) load_rows(it.a.q, b, row0, rows, it.hq, c.q, K);
  load_rows(it.a.k, b, row0, rows, it.hq, c.k, K);
  if (bf16) {  // q and k stay in fp32 too, for the factors, the scores' fp64 form and normalize
    c.q16 = arena.get<uint16_t>(kSlotBf16Rows, kChunk * (2 * K + V));
    c.k16 = c.q16 + kChunk * K;
    c.v16 = c.k16 + kChunk * K;
    if (with_queries) load_rows_bf16(it.a.q, b, row0, rows, it.hq, c.q16, K);
    load_rows_bf16(it.a.k, b, row0, rows, it.hq, c.k16, K);
    load_rows_bf16(it.a.v, b, row0, rows, it.hv, c.v16, V);
  } else {
    c.v = arena.get<float>(kSlotV, kChunk * V);
    load_rows(it.a.v, b, row0, rows, it.hv, c.v, V);
  }
  const Span next = next_chunk(it, t0, rows, walk);
  if (next.rows > 0) {
    const int64_t next0 = it.s.start + next.t0;
    if (with_queries) prefetch_rows(it.a.q, b, next0, next.rows, it.hq);
    prefetch_rows(it.a.k, b, next0, next.rows, it.hq);
    prefetch_rows(it.a.v, b, next0, next.rows, it.hv);
    if (it.gate == Gate::vector) prefetch_rows(it.a.gk, b, next0, next.rows, it.hv);
  }
  c.A = arena.get<float>(kSlotA, kChunk * kChunk);
  float* tmp = arena.get<float>(kSlotWork0, std::max(kChunk, K));
  const bool vector = it.gate == Gate::vector;
  const int64_t width = vector ? K : 1;  // gate values per row
  c.B = arena.get<double>(kSlotB, kChunk * width);
  c.q_factor = arena.get<float>(kSlotQFactor, kChunk * width);
  c.k_factor = arena.get<float>(kSlotKFactor, kChunk * width);
  c.state_decay = arena.get<float>(kSlotDecay, width);

  // Chunk-local inclusive cumulative log decays (S1), in double.
  if (vector) {
    float* g = arena.get<float>(kSlotWork2, kChunk * K);
    load_rows(it.a.gk, b, row0, rows, it.hv, g, K);
    for (int64_t d = 0; d < K; ++d) c.B[d] = finite_log_decay(g[d]);
    for (int64_t i = K; i < rows * K; ++i) c.B[i] = c.B[i - K] + finite_log_decay(g[i]);
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      double g = 0;
      if (it.a.g.given()) g = load_scalar(it.a.g, b, row0 + r, it.hv);
      if (p.spec->fixed_decay) g = retention_log_decay(it.hv);
      c.B[r] = (r ? c.B[r - 1] : 0.0) + finite_log_decay(g);
    }
  }
  const double* last = c.B + (rows - 1) * width;
  for (int64_t d = 0; d < width; ++d) c.state_decay[d] = static_cast<float>(last[d]);
  kernels::exp_inplace(c.state_decay, width);

  // Per-channel gates whose decays within the chunk allow it use the factored form (§3.3 S5,
  // reference row m in the middle): ratio = e^{B - B_m} within e^{±80}, then every factor is a
  // product with a per-channel constant instead of its own exponential.
  c.factored = false;
  const int64_t m = rows / 2;
  if (vector) {
    c.ratio = arena.get<float>(kSlotRatio, kChunk * K);
    c.inverse_ratio = arena.get<float>(kSlotInverseRatio, kChunk * K);
    channel_gate::Factors f = factors_of(c, K);
    channel_gate::prepare(f);
    c.factored = f.factored;
  }
  if (c.factored) {
    float* column = arena.get<float>(kSlotWork2, 2 * K);  // e^{B_m}, e^{B_last - B_m}
    const double* Bm = c.B + m * K;
    for (int64_t d = 0; d < K; ++d) {
      column[d] = static_cast<float>(Bm[d]);
      column[K + d] = static_cast<float>(last[d] - Bm[d]);
    }
    kernels::exp_inplace(column, 2 * K);
    const float scale = static_cast<float>(p.scale);
    for (int64_t r = 0; r < rows; ++r) {
      const float* ratio = c.ratio + r * K;
      const float* inverse = c.inverse_ratio + r * K;
      float* kf = c.k_factor + r * K;
      for (int64_t d = 0; d < K; ++d) kf[d] = column[K + d] * inverse[d];
      if (!with_queries) continue;
      float* qf = c.q_factor + r * K;
      for (int64_t d = 0; d < K; ++d) qf[d] = scale * column[d] * ratio[d];
    }
  } else {
    // Factors with every exponent <= 0 (S2): queries e^{B_i}, keys-to-end e^{B_last - B_j}.
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t d = 0; d < width; ++d) {
        c.q_factor[r * width + d] = static_cast<float>(c.B[r * width + d]);
        c.k_factor[r * width + d] = static_cast<float>(last[d] - c.B[r * width + d]);
      }
    kernels::exp_inplace(c.k_factor, rows * width);
    if (with_queries) {
      kernels::exp_inplace(c.q_factor, rows * width);
      for (int64_t i = 0; i < rows * width; ++i) c.q_factor[i] *= static_cast<float>(p.scale);
    }
  }
  if (!with_scores) return;

  // Intra-chunk scores.
  if (!vector) {
    if (bf16) kernels::lower_gemm_bf16_nt(rows, K, c.q16, K, c.k16, K, c.A, kChunk);
    else kernels::lower_gemm_nt(rows, K, c.q, K, c.k, K, c.A, kChunk);
    c.decay = arena.get<float>(kSlotDecayMatrix, kChunk * kChunk);
    decay_scalar_scores(c, p.scale);
    return;
  }
  const channel_gate::Factors f = factors_of(c, K);
  if (c.factored) {
    c.q_tilde = arena.get<float>(kSlotQTilde, kChunk * K);
    c.k_tilde = arena.get<float>(kSlotKTilde, kChunk * K);
    channel_gate::times_ratio(f, c.q, c.q_tilde);
    channel_gate::times_inverse(f, c.k, c.k_tilde);
  }
  channel_gate::scores(f, c.q, c.k, c.q_tilde, c.k_tilde, static_cast<float>(p.scale), c.A, kChunk, tmp,
                       products);
}

}  // namespace linattn::gla
