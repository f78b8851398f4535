// Work items and token tiles of the fast selective scan (chunk_fwd.cpp, chunk_bwd.cpp).
//
// A work item is (sequence, group, block of kLanes channels of the group): its channels sit in
// SIMD lanes, its state h[N][kLanes] stays in L1, and the scan runs over time in tiles of kTile
// tokens (algorithms.md §4.10 (b): the state is tiny, so the sequential scan vectorised over
// channels is the primary CPU path). Items own their y/du/ddelta/dz columns; the partition
// depends only on the problem, never on the thread count.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernels/elementwise.hpp"
#include "ops/common/rows.hpp"
#include "ops/scan/scan.hpp"

namespace linattn::scan {

inline constexpr int64_t kLanes = 32;  // channels per item: 4 AVX2 / 2 AVX-512 vectors
inline constexpr int64_t kTile = 64;   // tokens per tile

inline int64_t blocks_per_group(const Problem& p) { return (p.group_size() + kLanes - 1) / kLanes; }
inline int64_t num_items(const Problem& p) { return p.num_sequences() * p.G * blocks_per_group(p); }

// The per-item constants: which channels, A transposed [N][kLanes], D [kLanes] (padding lanes
// are zero so that they compute zeros).
struct Item {
  int64_t seq, g, d0, width;
  const Sequence* s;
  float* At;  // [N][kLanes]
  float* Dv;  // [kLanes]
  float* bias;  // [kLanes]

  static int64_t scratch_size(const Problem& p) { return (p.N + 2) * kLanes; }
  Item(const Problem& p, const ScanArgs& a, int64_t item, float* scratch) {
    const int64_t bpg = blocks_per_group(p);
    seq = item / (p.G * bpg);
    g = (item / bpg) % p.G;
    d0 = g * p.group_size() + (item % bpg) * kLanes;
    width = std::min(kLanes, (g + 1) * p.group_size() - d0);
    s = &p.sequences[seq];
    At = scratch;
    Dv = At + p.N * kLanes;
    bias = Dv + kLanes;
    std::fill(scratch, scratch + scratch_size(p), 0.0f);
    for (int64_t c = 0; c < width; ++c) {
      const int64_t d = d0 + c;
      for (int64_t n = 0; n < p.N; ++n) At[n * kLanes + c] = load_as_float(a.A.data, a.A.dtype, at2(a.A, d, n));
      if (a.D.given()) Dv[c] = load_as_float(a.D.data, a.D.dtype, d * a.D.strides[0]);
      if (a.delta_bias.given())
        bias[c] = load_as_float(a.delta_bias.data, a.delta_bias.dtype, d * a.delta_bias.strides[0]);
    }
  }
};

// One tile of inputs: tokens [t0, t0 + rows) of the item's sequence, [row][kLanes] channel
// tiles (padding lanes zero) and [row][N] B, C rows.
struct Tile {
  float *u, *raw, *dt, *z, *B, *C;  // raw = delta + bias; dt = Δ

  static int64_t scratch_size(const Problem& p) { return kTile * (4 * kLanes + 2 * p.N); }
  Tile(const Problem& p, float* scratch)
      : u(scratch), raw(u + kTile * kLanes), dt(raw + kTile * kLanes), z(dt + kTile * kLanes),
        B(z + kTile * kLanes), C(B + kTile * p.N) {}

  void load(const Problem& p, const ScanArgs& a, const Item& it, int64_t t0, int64_t rows) {
    const int64_t b = it.s->batch, row0 = it.s->start + t0;
    for (float* t : {u, raw, z}) std::fill(t, t + rows * kLanes, 0.0f);  // padding lanes
    load_tile(a.u, b, row0, rows, it.d0, it.width, u, kLanes);
    load_tile(a.delta, b, row0, rows, it.d0, it.width, raw, kLanes);
    if (a.z.given()) load_tile(a.z, b, row0, rows, it.d0, it.width, z, kLanes);
    load_tile(select_dim2(a.B, it.g), b, row0, rows, 0, p.N, B, p.N);
    load_tile(select_dim2(a.C, it.g), b, row0, rows, 0, p.N, C, p.N);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < kLanes; ++c) raw[r * kLanes + c] += it.bias[c];
    std::copy(raw, raw + rows * kLanes, dt);
    if (p.softplus) kernels::softplus_inplace(dt, rows * kLanes);
  }
};

// Loads the item's initial state into h [N][kLanes] (zeros without one).
inline void load_initial_state(const Problem& p, const ScanArgs& a, const Item& it, float* h) {
  std::fill(h, h + p.N * kLanes, 0.0f);
  if (!a.initial_state.given()) return;
  for (int64_t c = 0; c < it.width; ++c)
    for (int64_t n = 0; n < p.N; ++n)
      h[n * kLanes + c] =
          load_as_float(a.initial_state.data, a.initial_state.dtype, at3(a.initial_state, it.seq, it.d0 + c, n));
}

// The forward scan of one tile (chunk_fwd.cpp): h advances over `rows` tokens; y [row][kLanes]
// gets Σ_n C h + D u (before the gate). With `states` non-null, h after each token is stored
// there ([row][N][kLanes]) for the backward.
void scan_tile(const Problem& p, const Item& it, const Tile& tile, int64_t rows, float* h,
               float* y, float* states);

}  // namespace linattn::scan
