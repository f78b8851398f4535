// Shared pieces of the chunk-parallel forward and backward of delta_rule (algorithms.md §4.5b),
// gated_delta_rule (§4.6b) and delta_product (§4.7b): one chunk of one (sequence, value head)
// loaded into fp32 buffers with its chunk-local gates and the UT-transform quantities (§3.5).
// kda (§4.8b) is gated_delta_rule with per-key-channel decays: G, e^{G}, e^{G_C - G} and the
// state decay get one value per channel, and the pair factors exp(G_i - G_j) of K K^T and Q K^T
// go through channel_gate (the middle-row factored form, or pair by pair for extreme decays).
// delta_product runs on the expanded sequence of n_h * T steps: step e = t n_h + j carries
// (k, v, beta) row e, the gate g_t at j = 0 (0 elsewhere) and the query q_t at j = n_h - 1 (0
// elsewhere); o_t is the expanded output of step t n_h + n_h - 1. For n_h = 1 steps are tokens.
#pragma once

#include <cstdint>

#include "ops/common/channel_gate.hpp"
#include "ops/common/problem.hpp"

namespace linattn::delta {

inline constexpr int64_t kChunk = 64;

// One chunk's working set (buffers from the calling thread's scratch arena, slots kSlotChunk..).
// C x C matrices have leading dimension kChunk and hold zeros outside their triangle.
struct Chunk {
  int64_t rows = 0;        // steps [t0, t0 + rows) of the expanded sequence
  float* q = nullptr;     // [C, K] queries (0 on steps without one), L2-normalised if asked
  float* k = nullptr;     // [C, K] keys, likewise
  float* v = nullptr;     // [C, V]
  float* q_rstd = nullptr;  // [C] 1 / sqrt(|q|^2 + eps) (1 without l2norm)
  float* k_rstd = nullptr;  // [C]
  float* beta = nullptr;  // [C]
  int64_t width = 1;      // gate values per step: 1 (scalar g) or K (kda's per-channel gk)
  double* G = nullptr;    // [C, width] chunk-local inclusive cumulative log gate
  float* eG = nullptr;    // [C, width] e^{G_r}
  float* eGd = nullptr;   // [C, width] e^{G_C - G_r}
  float* decay = nullptr; // [width] e^{G_C}
  float* decay_lo = nullptr;  // [width] e^{G_C} = lo + hi, hi in {0, 1} (as kernels::exp_split)
  float* decay_hi = nullptr;  // [width]
  channel_gate::Factors gate;  // per-channel gates: middle-row factors of G
  float* q_ratio = nullptr;    // [C, K] Q ⊙ e^{G - G_m}   (per-channel gates, factored form)
  float* k_ratio = nullptr;    // [C, K] K ⊙ e^{G - G_m}
  float* k_inverse = nullptr;  // [C, K] K ⊙ e^{G_m - G}
  float* KKg = nullptr;   // [C, C] (k_i . k_j) Γ_ij, strictly lower
  float* L = nullptr;     // [C, C] β_i KKg_ij, strictly lower
  float* T0 = nullptr;    // [C, C] (I + L)^{-1}, unit lower
  float* P = nullptr;     // [C, C] scale (q_i . k_j) Γ_ij, lower with the diagonal
  float* Gamma = nullptr; // [C, C] Γ_ij = e^{G_i - G_j}, lower with the diagonal (scalar gates;
                          // the backward's pair factors reuse it instead of recomputing exps)
  float* Kb = nullptr;    // [C, K] β ⊙ K ⊙ e^{G}
  float* Vb = nullptr;    // [C, V] β ⊙ V
  float* Qg = nullptr;    // [C, K] scale Q ⊙ e^{G}
  float* Kd = nullptr;    // [C, K] K ⊙ e^{G_C - G}
  float* W = nullptr;     // [C, K] T0 Kb
  float* U = nullptr;     // [C, V] T0 Vb
};

// What prepare_chunk computes: every field (forward); what the backward's state pass reads
// (T0, W, U, Kd and the decay: no queries, P or Qg); what its reverse sweep reads (all but U,
// as it keeps Ṽ = U - W S from the state pass).
enum class Need { all, state, reverse };

// True when expanded step e (counted from the sequence start) carries a query / a gate.
inline bool query_step(int64_t e, int64_t n_h) { return e % n_h == n_h - 1; }
inline bool gate_step(int64_t e, int64_t n_h) { return e % n_h == 0; }

// Loads expanded steps [t0, t0 + rows) of sequence s for value head hv (q/k head hq) and
// computes what `need` asks of c, in `memory` (chunk_floats(p) floats, a multiple of 16) or, if
// null, in the calling thread's scratch arena (slot kSlotChunk).
void prepare_chunk(const Problem& p, const OpArgs& a, const Sequence& s, int64_t hv, int64_t hq,
                   int64_t t0, int64_t rows, Chunk& c, float* memory = nullptr, Need need = Need::all);
int64_t chunk_floats(const Problem& p);

// out = diag(e^{G_C}) S for K rows of `cols` columns of a state with leading dimension ld (out
// may be S), as lo S + hi S (kernels::exp_split): the state carries this factor through every
// chunk, and e^{G_C} rounded to fp32 would put a relative error of up to 2^-25 into it each
// time, always the same way for a constant gate (for e^{-1e-6}: 3% of its distance from 1).
void decay_state(const Chunk& c, int64_t K, int64_t cols, int64_t ld, const float* S, float* out);

// Value columns [e0, e0 + cols) of one chunk's forward step (§4.6b; every matrix has leading
// dimension V, and the columns evolve independently, ops/common/chunk_windows.hpp):
//   Ṽ = U - W S (in place in c.U),  O = P Ṽ + Qg S (if O),  S_out = e^{G_C} S + Kd^T Ṽ.
// S_out may be S; work holds rows x cols floats.
void advance_columns(const Chunk& c, int64_t K, int64_t V, int64_t e0, int64_t cols, const float* S,
                     float* S_out, float* O, float* work);

// The factor of element d of step r: e.g. factor(c.eG, r, d) = e^{G_r} (channel d of it).
inline float factor(const Chunk& c, const float* f, int64_t r, int64_t d) {
  return c.width == 1 ? f[r] : f[r * c.width + d];
}

// X = (I + L)^{-1} for L strictly lower triangular (rows x rows, leading dimension kChunk) by
// forward substitution accumulated in double (§3.5); X is unit lower triangular, zero above the
// diagonal. X may be L itself (row i of L is read before row i of X is written). Shared with
// the dplr family, whose (I - A_ab)^{-1} is this with L = -A_ab (§4.8b).
void unit_lower_inverse(int64_t rows, const float* L, float* X);

// Scratch slots (core/scratch.hpp); slot kSlotChunk onwards holds the Chunk.
// kSlotWindow holds a window's chunks and outputs (ops/common/chunk_windows.hpp); the backward
// keeps a work item's chunk states, Ṽ and q/k gradient rows in kSlotStates and kSlotItem.
enum Slot : int {
  kSlotChunk = 0, kSlotWork = 1, kSlotStates = 2, kSlotWindow = 3, kSlotGrads = 4, kSlotGateGrads = 5,
  kSlotItem = 6
};

}  // namespace linattn::delta
