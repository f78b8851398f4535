// Shared pieces of the chunk-parallel forward and backward of the gated (Hebbian) family:
// linear_attn, retention, simple_gla (scalar log decay) and gla (per-key-channel log decay).
// One chunk of one (sequence, value head) is loaded into fp32 buffers together with its gate
// factors and its masked, decayed intra-chunk score matrix (algorithms.md §3.2, §4.1-4.4).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/gemm_bf16.hpp"
#include "ops/common/channel_gate.hpp"
#include "ops/common/problem.hpp"

namespace linattn::gla {

inline constexpr int64_t kChunk = 64;

enum class Gate { none, scalar, vector };
Gate gate_of(const Problem& p);

// A (sequence, value head) pair and the q/k head it reads.
struct Item {
  const Problem& p;
  const OpArgs& a;
  const Sequence& s;
  int64_t n, hv, hq;
  Gate gate;
};

// One chunk's working set; the buffers come from the calling thread's scratch arena.
struct Chunk {
  int64_t t0 = 0, rows = 0;  // tokens [t0, t0 + rows) of the sequence
  float* q = nullptr;        // [C, K] raw queries (scale lives in the factors)
  float* k = nullptr;        // [C, K]
  float* v = nullptr;        // [C, V]
  float* q_factor = nullptr; // scalar: [C] scale e^{b_i};   vector: [C, K] scale e^{B_i}
  float* k_factor = nullptr; // scalar: [C] e^{b_last-b_j}; vector: [C, K] e^{B_last-B_j}
  float* state_decay = nullptr;  // scalar: [1] e^{b_last}; vector: [K] e^{B_last}
  float* A = nullptr;        // [C, C] scale * (intra scores ⊙ decay), zero above the diagonal
  float* decay = nullptr;    // scalar gates: [C, C] e^{b_i - b_j} for j <= i (A's decay, kept for
                             // the backward's dA so that it is exponentiated once per chunk)
  // Per-channel gates only (§3.3 S5 with the reference at the middle row m): when the chunk's
  // decay span allows, A = scale q~ k~^T with q~ = q e^{B-B_m}, k~ = k e^{B_m-B}; the backward
  // reuses them. `factored` false means A was formed pair by pair (extreme decays).
  bool factored = false;
  float* ratio = nullptr;    // [C, K] e^{B - B_m}
  float* inverse_ratio = nullptr;  // [C, K] e^{B_m - B} = 1 / ratio
  float* q_tilde = nullptr;  // [C, K]
  float* k_tilde = nullptr;  // [C, K]
  double* B = nullptr;       // [C, K] (vector) or [C] (scalar) chunk-local cumulative log decay
  // Products::bf16 (the forward with bf16 inputs): the chunk's GEMMs take bf16 operands, q, k, v
  // as given (q16, k16, v16 [C, K|V] bf16 bits; v is then not loaded as fp32) and the fp32
  // operands (factors applied, scores, state) rounded, with fp32 sums.
  kernels::Products products = kernels::Products::f32;
  uint16_t* q16 = nullptr;
  uint16_t* k16 = nullptr;
  uint16_t* v16 = nullptr;
};

// The chunk's per-channel gate factors (ratio, inverse_ratio, factored) as channel_gate sees them.
inline channel_gate::Factors factors_of(const Chunk& c, int64_t K) {
  return {c.rows, K, c.B, c.factored, c.ratio, c.inverse_ratio};
}

// How much of a Chunk to prepare: the state pass needs k, v, k_factor and the state decay;
// the state-gradient pass also q and q_factor; outputs and gradients also the scores A.
enum class Need { state, queries, scores };

// Which way the caller walks the chunks: prepare_chunk prefetches the rows of the chunk it will
// ask for next (the forward passes go up, the backward's reverse pass down).
enum class Walk { up, down };

// Loads tokens [t0, t0 + rows) of the item and computes what `need` asks of Chunk with
// `products` precision (the backward and dplr always use fp32).
void prepare_chunk(const Item& it, int64_t t0, int64_t rows, Chunk& c, Need need,
                   kernels::Products products = kernels::Products::f32, Walk walk = Walk::up);

// The tokens [t0, t0 + rows) of the chunk after the one at t0 (of `rows` tokens) in direction
// `walk`; rows = 0 at the end of the sequence.
struct Span {
  int64_t t0, rows;
};
Span next_chunk(const Item& it, int64_t t0, int64_t rows, Walk walk);

// dst[r, :] = x[r, :] * factor (factor per row for scalar gates, per element for vector gates).
void apply_factor(Gate gate, int64_t rows, int64_t K, const float* x, const float* factor, float* dst);

// next = diag(decay) prev + next, in place (decay a scalar or a K-vector): one step of the
// state scans, S_[n+1] = e^{B_last} S_[n] + H_n and dS_[n] = e^{B_last} dS_[n+1] + G_n, with
// next holding H_n (G_n) on entry. One pass over memory, one rounding per element.
void scan_step(Gate gate, int64_t K, int64_t V, const float* decay, const float* prev, float* next);

// The state entering every chunk of one (sequence, value head) (phases A and B of the chunk
// form): S[n * K*V ...] for n = 0..n_chunks (the last is the final state), and for normalize the
// key sums before each chunk.
struct ChunkStates {
  int64_t n_chunks = 0;
  float* S = nullptr;  // (n_chunks + 1) * K * V floats in the calling thread's arena (kSlotStates)
  std::vector<double> z_start;
};
ChunkStates chunk_states(const Item& it, kernels::Products products = kernels::Products::f32);

// One chunk's unnormalised output O = A V + (Q ⊙ q_factor) S  (rows x V), in c.products.
void chunk_output(const Item& it, const Chunk& c, const float* S, float* O);

// normalize: den_r = scale q_r . z_r + 1e-10 with z_r = z_start + the chunk's keys up to r;
// divides O's rows by it (if O) and stores it in den (if den).
void normalise_rows(const Chunk& c, int64_t K, int64_t V, double scale, const double* z_start,
                      float* O, double* den);

// Scratch slots of this family (core/scratch.hpp).
enum Slot : int {
  kSlotQ, kSlotK, kSlotV, kSlotQFactor, kSlotKFactor, kSlotDecay, kSlotA, kSlotQTilde,
  kSlotKTilde, kSlotB, kSlotWork0, kSlotWork1, kSlotWork2, kSlotStates, kSlotGrads,
  kSlotStateGrads, kSlotDecays, kSlotRatio, kSlotInverseRatio, kSlotGroupGrads, kSlotBf16Rows,
  kSlotDecayMatrix,
};

}  // namespace linattn::gla
