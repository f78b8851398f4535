#include "ops/gla/chunk.hpp"

#include <algorithm>
#include <cmath>

#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "kernels/gemm.hpp"
#include "ops/common/rows.hpp"

namespace linattn::gla {
namespace {

using kernels::Accumulate;

// Largest exponent a factored per-channel factor may carry: e^80 stays far from fp32's
// overflow at e^88, and products q~ k~ of kept (j <= i) entries are ordinary-sized.
constexpr double kMaxFactorExponent = 80.0;

// Row i of A: A[i, j] *= scale * exp(b_i - b_j) for j <= i, 0 beyond. The exponent is formed in
// double from chunk-local sums (S1, S3), so a large early decay cannot swamp later small ones.
void decay_scalar_scores(const Chunk& c, double scale, float* tmp) {
  for (int64_t i = 0; i < c.rows; ++i) {
    for (int64_t j = 0; j <= i; ++j) tmp[j] = static_cast<float>(c.B[i] - c.B[j]);
    kernels::exp_inplace(tmp, i + 1);
    float* row = c.A + i * kChunk;
    for (int64_t j = 0; j <= i; ++j) row[j] *= static_cast<float>(scale) * tmp[j];
    std::fill(row + i + 1, row + c.rows, 0.0f);
  }
}

// Per-channel decays, pair by pair (§4.4b diagonal-block formula for the whole chunk): used only
// when a chunk's decays are too strong for the factored form.
void vector_scores_pairwise(const Chunk& c, int64_t K, double scale, float* tmp) {
  for (int64_t i = 0; i < c.rows; ++i) {
    float* row = c.A + i * kChunk;
    for (int64_t j = 0; j <= i; ++j) {
      for (int64_t d = 0; d < K; ++d) tmp[d] = static_cast<float>(c.B[i * K + d] - c.B[j * K + d]);
      kernels::exp_inplace(tmp, K);
      double acc = 0;
      for (int64_t d = 0; d < K; ++d) acc += double(c.q[i * K + d]) * c.k[j * K + d] * tmp[d];
      row[j] = static_cast<float>(scale * acc);
    }
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

void decay_and_add(Gate gate, int64_t K, int64_t V, const float* decay, const float* H, float* S) {
  for (int64_t r = 0; r < K; ++r)
    kernels::scale_add(V, gate == Gate::vector ? decay[r] : decay[0], H + r * V, S + r * V);
}

void prepare_chunk(const Item& it, int64_t t0, int64_t rows, Chunk& c, bool with_scores) {
  const Problem& p = it.p;
  const int64_t K = p.K, V = p.V, b = it.s.batch, row0 = it.s.start + t0;
  ScratchArena& arena = ScratchArena::local();
  c.t0 = t0;
  c.rows = rows;
  c.q = arena.get<float>(kSlotQ, kChunk * K);
  c.k = arena.get<float>(kSlotK, kChunk * K);
  c.v = arena.get<float>(kSlotV, kChunk * V);
  load_rows(it.a.q, b, row0, rows, it.hq, c.q, K);
  load_rows(it.a.k, b, row0, rows, it.hq, c.k, K);
  load_rows(it.a.v, b, row0, rows, it.hv, c.v, V);
  c.A = arena.get<float>(kSlotA, kChunk * kChunk);
  float* tmp = arena.get<float>(kSlotWork0, std::max(kChunk, K));
  const bool vector = it.gate == Gate::vector;
  const int64_t width = vector ? K : 1;  // gate values per row
  c.B = arena.get<double>(kSlotB, kChunk * width);
  c.q_factor = arena.get<float>(kSlotQFactor, kChunk * width);
  c.k_factor = arena.get<float>(kSlotKFactor, kChunk * width);
  c.state_decay = arena.get<float>(kSlotDecay, width);

  // Chunk-local inclusive cumulative log decays (S1), in double.
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t d = 0; d < width; ++d) {
      double g = 0;
      if (vector) {
        g = load_as_double(it.a.gk.data, it.a.gk.dtype,
                           row_offset(it.a.gk, b, row0 + r, it.hv) + d * it.a.gk.strides[3]);
      } else if (it.a.g.given()) {
        g = load_scalar(it.a.g, b, row0 + r, it.hv);
      } else if (p.spec->fixed_decay) {
        g = retention_log_decay(it.hv);
      }
      c.B[r * width + d] = (r ? c.B[(r - 1) * width + d] : 0.0) + g;
    }
  }
  // Factors, every exponent <= 0 (S2): queries e^{B_i}, keys-to-end e^{B_last - B_j}, state e^{B_last}.
  const double* last = c.B + (rows - 1) * width;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < width; ++d) {
      c.q_factor[r * width + d] = static_cast<float>(c.B[r * width + d]);
      c.k_factor[r * width + d] = static_cast<float>(last[d] - c.B[r * width + d]);
    }
  for (int64_t d = 0; d < width; ++d) c.state_decay[d] = static_cast<float>(last[d]);
  kernels::exp_inplace(c.q_factor, rows * width);
  kernels::exp_inplace(c.k_factor, rows * width);
  kernels::exp_inplace(c.state_decay, width);
  for (int64_t i = 0; i < rows * width; ++i) c.q_factor[i] *= static_cast<float>(p.scale);

  // Intra-chunk scores.
  c.factored = false;
  if (!with_scores) return;
  if (!vector) {
    kernels::gemm_nt(rows, rows, K, c.q, K, c.k, K, c.A, kChunk, Accumulate::no);
    decay_scalar_scores(c, p.scale, tmp);
    return;
  }
  const int64_t m = rows / 2;
  double before = 0, after = 0;  // largest decay from row 0 to m, and from m to the last row
  for (int64_t d = 0; d < K; ++d) {
    before = std::max(before, c.B[d] - c.B[m * K + d]);
    after = std::max(after, c.B[m * K + d] - last[d]);
  }
  if (before > kMaxFactorExponent || after > kMaxFactorExponent) {
    vector_scores_pairwise(c, K, p.scale, tmp);
    return;
  }
  c.factored = true;
  c.q_tilde = arena.get<float>(kSlotQTilde, kChunk * K);
  c.k_tilde = arena.get<float>(kSlotKTilde, kChunk * K);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t d = 0; d < K; ++d) {
      c.q_tilde[r * K + d] = static_cast<float>(c.B[r * K + d] - c.B[m * K + d]);
      c.k_tilde[r * K + d] = static_cast<float>(c.B[m * K + d] - c.B[r * K + d]);
    }
  kernels::exp_inplace(c.q_tilde, rows * K);
  kernels::exp_inplace(c.k_tilde, rows * K);
  for (int64_t i = 0; i < rows * K; ++i) {
    c.q_tilde[i] *= c.q[i];
    c.k_tilde[i] *= c.k[i];
  }
  kernels::gemm_nt(rows, rows, K, c.q_tilde, K, c.k_tilde, K, c.A, kChunk, Accumulate::no);
  for (int64_t i = 0; i < rows; ++i) {
    float* row = c.A + i * kChunk;
    for (int64_t j = 0; j <= i; ++j) row[j] *= static_cast<float>(p.scale);
    std::fill(row + i + 1, row + rows, 0.0f);  // entries above the diagonal may be huge: drop
  }
}

}  // namespace linattn::gla
