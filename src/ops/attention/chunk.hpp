// The tiles of the flash-style forms (algorithms.md §4.11 b, c), shared by chunk_fwd.cpp,
// chunk_bwd.cpp and recurrent.cpp: query tiles of kTileRows rows against key tiles of kTileKeys
// keys, all fp32 in thread-local scratch, products through kernels/gemm.hpp.
#pragma once

#include <cstdint>
#include <vector>

#include "linattn/tensor.hpp"
#include "ops/attention/attention.hpp"

namespace linattn::attention {

// Query rows x keys of a tile. The forward streams wider key tiles: fewer rescales of O and
// calls per row (measured: 128 x 256 beats 128 x 128 by ~5% at T = 2048, K = V = 128).
inline constexpr int64_t kTileRows = 128;
inline constexpr int64_t kTileKeys = 128;
inline constexpr int64_t kForwardKeys = 256;
inline constexpr int64_t kFewRows = 4;  // up to this many rows: dot products instead of a GEMM

// Scratch slots (core/scratch.hpp) of the attention kernels.
enum Slot : int {
  kSlotQ, kSlotO, kSlotDO, kSlotS, kSlotDS, kSlotK, kSlotV, kSlotKt, kSlotVt, kSlotStats,
  kSlotDQ, kSlotDK, kSlotDV, kSlotPos, kSlotLse,
};

// Rows [r0, r0 + rows) of span `span` (a query tile, or a key tile of a training span).
struct Tile {
  int64_t span, r0, rows;
};
std::vector<Tile> tiles(const Problem& p, int64_t size);

// dst = scale * t[b, row0 + r, head, :] for r < rows (K columns, ld K).
void load_scaled_rows(const TensorView& t, int64_t b, int64_t row0, int64_t rows, int64_t head,
                      float scale, float* dst);

// lse[b, row0 + r, head] (a [B, T, H] view) as fp32, both ways.
void store_lse(const TensorView& lse, int64_t b, int64_t row0, int64_t rows, int64_t head,
               const float* values);
void load_lse(const TensorView& lse, int64_t b, int64_t row0, int64_t rows, int64_t head,
              float* dst);

// pos[r] = pos0 + r for r < rows, in scratch.
const int64_t* positions(int64_t pos0, int64_t rows);

// Online-softmax forward (§4.11 b) of `rows` query rows, Q (rows x K, pre-scaled) at positions
// pos[r], against the keys of span s and kv head hkv: O (rows x V) normalised, lse (rows).
void attend(const Problem& p, const Span& s, int64_t hkv, const TensorView& k,
            const TensorView& v, const float* Q, int64_t rows, const int64_t* pos, float* O,
            float* lse);

// One (query tile, key tile) pair of the backward (§4.11 c), keys [j0, j0 + n): from Q
// (pre-scaled), dO, lse and D = rowsum(dO ⊙ O) of the query rows and the transposed key and value
// tiles Kt (K x n), Vt (V x n): P = e^{Q Kt - lse} (masked) and dS = P ⊙ (dO Vt - D), rows x n.
void tile_gradients(const Problem& p, const int64_t* pos, int64_t rows, int64_t j0, int64_t n,
                    const float* Q, const float* dO, const float* lse, const float* D,
                    const float* Kt, const float* Vt, float* P, float* dS);

}  // namespace linattn::attention
