// Work items and token tiles of the fast selective scan (chunk_fwd.cpp, chunk_bwd.cpp).
//
// A work item is (sequence, group, block of kLanes channels of the group): its channels sit in
// SIMD lanes, its state h[N][kLanes] stays in L1, and the scan runs over time in tiles of kTile
// tokens (algorithms.md §4.10 (b): the state is tiny, so the sequential scan vectorised over
// channels is the primary CPU path). Items own their y/du/ddelta/dz columns; the partition
// depends only on the problem, never on the thread count.
//
// Few items cannot fill the threads, so then each sequence is also split into time chunks of
// kSpan tokens, scanned in two passes (algorithms.md §4.10 (b)); see Chunks below.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <vector>

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

// The forward scan of one tile (chunk_fwd.cpp) over `rows` tokens, with either chain or both
// (null to skip): h, the true state, advances and y [row][kLanes] gets Σ_n C h + D u (before the
// gate), with `states` non-null h after each token is stored there ([row][N][kLanes]) for the
// backward; local, a time chunk's state from zero (Chunks), advances with the same decays.
void scan_tile(const Problem& p, const Item& it, const Tile& tile, int64_t rows, float* h, float* local,
               float* y, float* states);

// Σ Δ over a tile's tokens per lane, added to sums [kLanes] in token order (fp64: a time chunk's
// decay is exp(A ΣΔ), so its error is the sum's).
inline void add_deltas(const Tile& tile, int64_t rows, double* sums) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < kLanes; ++c) sums[c] += tile.dt[r * kLanes + c];
}

// to = exp(A ΣΔ) ⊙ from + local over [N][kLanes] (chunk_fwd.cpp): the state (or, in the
// backward, the state gradient) carried across a time chunk whose local chain ended at `local`.
// The decay is the exponential of the summed logarithms, never a product of per-token decays.
void carry_state(const Problem& p, const Item& it, const double* sums, const float* from, const float* local,
                 float* to);

// The time chunks of all items (algorithms.md §4.10 (b)). With fewer than kFewItems items, each
// sequence is cut into chunks of kSpan tokens; otherwise a chunk is a whole sequence. The shape
// alone decides, never the thread count, since the chunked arithmetic rounds differently. A
// sweep visits an item's chunks in order j = 0, 1, ... (the forward from the first chunk, the
// backward's reverse scan from the last): chunk j = 0 starts from a known state; chunk j >= 1
// starts from the state carried from chunk j - 1 (carry_state), which needs chunk j - 1's
// local chain: its scan from zero. So a chunk runs a true chain (from its start state,
// producing outputs) and, for 1 <= j <= count - 2, a local chain. The true chain of chunk
// j >= 1 rescans it from the carried start rather than correcting a local output by
// C·(exp(A Σ_{<=t} Δ) ⊙ start): the correction needs a second exponential per token and state,
// while the rescan's decays are the local chain's, so one thread runs both chains on one
// exponential each.
struct Chunks {
  static constexpr int64_t kSpan = 8 * kTile;  // tokens per time chunk
  static constexpr int64_t kFewItems = 8;

  const Problem& p;
  int64_t span;                   // tokens per chunk
  std::vector<int64_t> first;     // [items + 1]: item i's chunks are pieces first[i] .. first[i+1]-1
  std::vector<float> start;       // [pieces][N][kLanes]: a chunk's start state (or carried gradient)
  std::vector<float> local;       // [pieces][N][kLanes]: the end of its local chain
  std::vector<double> sums;       // [pieces][kLanes]: its Σ Δ

  explicit Chunks(const Problem& p);
  bool split() const { return pieces() > items(); }
  int64_t items() const { return static_cast<int64_t>(first.size()) - 1; }
  int64_t pieces() const { return first.back(); }
  int64_t count(int64_t item) const { return first[item + 1] - first[item]; }
  bool has_local(int64_t item, int64_t j) const { return j >= 1 && j + 1 < count(item); }
  float* start_of(int64_t piece) { return &start[piece * p.N * kLanes]; }
  float* local_of(int64_t piece) { return &local[piece * p.N * kLanes]; }
  double* sums_of(int64_t piece) { return &sums[piece * kLanes]; }
};

// One pass over every item's chunks: chunk(item, j, true_chain, local_chain) runs chunk j of the
// sweep's order; carry(item, j) sets chunk j + 1's start from chunk j's (1 <= j <= count - 2;
// chunk 0's true chain sets chunk 1's start itself). local_cost: the time of a chunk's local
// chain alone over that of its true chain alone (an estimate; it only balances the threads).
struct Sweep {
  std::function<void(int64_t item, int64_t j, bool true_chain, bool local_chain)> chunk;
  std::function<void(int64_t item, int64_t j)> carry;
  double local_cost;
};

// Runs the sweeps (chunk.cpp). With at least as many items as threads (or little work), each
// item runs its sweeps in turn on one thread, chunk after chunk with both chains in one scan
// (they share the exponentials). With fewer, each sweep takes three parallel steps: one thread
// per item runs its first chunks as above while the other threads run the local chains of the
// remaining chunks; the carries into those (serial over an item's chunks, cheap); their true
// chains. The length of the first part balances the first step (it shrinks as threads grow).
// Each chunk's arithmetic is the same either way, so the thread count changes no bit. `work`
// is the multiply-adds of one sweep over all items.
void run_sweeps(const Chunks& chunks, int64_t work, std::initializer_list<Sweep> sweeps);

}  // namespace linattn::scan
