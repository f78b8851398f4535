// Shared pieces of the chunk-parallel forward and backward of dplr_delta_rule (algorithms.md
// §4.8b). One chunk of one (sequence, value head) is loaded with the gated family's preparation
// (src/ops/gla/chunk.hpp: q, k, v, the per-channel cumulative decay G, the factors scale e^G and
// e^{G_C - G}, and A_qk) and extended by the low-rank pieces: a, b, the exclusive cumulative
// decay Ḡ, the gated score matrices A_qb, A_ab, A_ak, T = (I - A_ab)^{-1}, W = T (a ⊙ e^Ḡ) and
// X = A_ak V. Every C x C matrix has leading dimension kChunk and zeros outside its triangle.
#pragma once

#include <cstdint>

#include "core/scratch.hpp"
#include "ops/gla/chunk.hpp"

namespace linattn::dplr {

using gla::kChunk;

struct Chunk {
  gla::Chunk g;           // q, k, v, B = G (double), q_factor = scale e^G, k_factor = e^{G_C-G},
                          // state_decay = e^{G_C}, A = scale A_qk (lower with the diagonal)
  float* a = nullptr;     // [C, K]
  float* b = nullptr;     // [C, K]
  double* Gx = nullptr;   // [C, K] exclusive cumulative log decay Ḡ (row 0 is 0)
  float* ea = nullptr;    // [C, K] e^{Ḡ}
  float* Aqb = nullptr;   // [C, C] scale Σ_d q_id b_jd e^{G_id - G_jd}, j <= i
  float* Aab = nullptr;   // [C, C] Σ_d a_id b_jd e^{Ḡ_id - G_jd}, j < i
  float* Aak = nullptr;   // [C, C] Σ_d a_id k_jd e^{Ḡ_id - G_jd}, j < i
  float* T = nullptr;     // [C, C] (I - A_ab)^{-1}, unit lower
  float* W = nullptr;     // [C, K] T (a ⊙ e^Ḡ)
  float* X = nullptr;     // [C, V] A_ak V
  float* SA = nullptr;    // [C, V] T X after prepare_chunk; U + W S once read_state has run
  // Factored form (§3.3 S5, middle row m as reference) when every factor stays within e^{±80};
  // else the matrices are formed pair by pair.
  bool factored = false;
  float* a_ratio = nullptr;  // [C, K] e^{Ḡ - G_m}
  float* a_tilde = nullptr;  // [C, K] a ⊙ e^{Ḡ - G_m}
  float* b_tilde = nullptr;  // [C, K] b ⊙ e^{G_m - G}
  float* work = nullptr;     // [C, max(K, V)] scratch (prepare_chunk and advance_state overwrite it)
};

// Loads tokens [t0, t0 + rows) of the item and computes every field but the state read.
void prepare_chunk(const gla::Item& it, int64_t t0, int64_t rows, Chunk& c);

// What the state pass reads of one chunk (§4.8b), copied out of the Chunk so that a window of
// chunks can be kept (ops/common/chunk_windows.hpp): W, SA (U, then U + W S once the state has
// passed), v, A_qk, A_qb, Qf = Q ⊙ scale e^G, Kd = K ⊙ e^{G_C - G}, Bd = B ⊙ e^{G_C - G}, e^{G_C}.
struct Step {
  int64_t rows = 0;
  float *W = nullptr, *Qf = nullptr, *Kd = nullptr, *Bd = nullptr;  // [C, K]
  float *SA = nullptr, *v = nullptr;                                // [C, V]
  float *Aqk = nullptr, *Aqb = nullptr;                             // [C, C]
  float* decay = nullptr;                                           // [K]
};
int64_t step_floats(int64_t K, int64_t V);  // a multiple of 16 floats
void keep_step(const Chunk& c, int64_t K, int64_t V, float* memory, Step& st);

// Value columns [e0, e0 + cols) of one chunk's forward step (every matrix has leading dimension
// V; the columns evolve independently):
//   SA = U + W S (in place in st.SA; row i is the sa_i of the recurrence)
//   O  = A_qk V + A_qb SA + Qf S (if O)
//   S_out = diag(e^{G_C}) S + Kd^T V + Bd^T SA (S_out may be S)
void advance_columns(const Step& st, int64_t K, int64_t V, int64_t e0, int64_t cols, const float* S,
                     float* S_out, float* O);

// One side of a gated pair product M_ij = Σ_d x_id y_jd e^{E_id - G_jd}: the raw rows, their
// exponents (G or Ḡ, double) and, in the factored form, the rows times e^{±(E - G_m)} and that
// factor.
struct Side {
  const float* raw;
  const double* exponent;
  const float* tilde;
  const float* ratio;
};
Side left_q(const Chunk& c);
Side left_a(const Chunk& c);
Side right_k(const Chunk& c);
Side right_b(const Chunk& c);

// The gradient of M = scale mask(x y^T ⊙ decay) given dM (strictly lower: the caller has
// handled and zeroed the entries whose decay is e^0): dx += the x-part, dy += the y-part; with dE, dG given, the
// decay's product rule dE_i += x_i ⊙ (dx part)_i, dG_j -= y_j ⊙ (dy part)_j (§3.4).
void pair_backward(const Chunk& c, int64_t K, const float* dM, float scale, Side x, Side y,
                   float* dx, float* dy, double* dE, double* dG);

// Whether the chunk form's forward hands the call to the recurrent form (recurrent.cpp). At these
// key sizes the chunk form does about as many multiply-adds per token as the token loop (4KV for
// the state plus its chunk-local matrices, against the loop's 5KV), while the loop runs from L1
// with no window of chunks to keep: it measured 1.9-2.8x faster at K = V = 64, 128, 192 and 256
// (docs/performance.md, RWKV-7 vs ggml). Larger keys (not measured) keep the chunked forward.
inline constexpr int64_t kRecurrentMaxKey = 256;
bool forward_runs_recurrent(const Problem& p);

// Scratch slot of this family (core/scratch.hpp): the first after gla::prepare_chunk's, which
// dplr calls too; the GEMMs own the last two.
inline constexpr int kSlotChunk = gla::kSlotDecayMatrix + 1;
static_assert(kSlotChunk < ScratchArena::kGemmSlot - 1, "dplr's slot collides with the GEMMs'");

}  // namespace linattn::dplr
