// Fast forward of the selective scan (algorithms.md §4.10 (a), (b)): per item (chunk.hpp) and
// tile of tokens, for each token and state n, over the item's channels in SIMD lanes:
//     a = exp(Δ A[n]),  h[n] = a h[n] + (Δ u) B[n],  y += C[n] h[n]
// then y = (y + D u) · silu(z). The N exps per channel and token dominate (§4.10 (d)); they run
// as Highway's vector Exp (decay-inl.h). States are fp32. Few items also split their sequences
// into time chunks (chunk.hpp): the two-pass scan of §4.10 (b).
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "ops/scan/chunk.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/scan/chunk_fwd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

HWY_BEFORE_NAMESPACE();
namespace linattn::scan {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using Df = hn::ScalableTag<float>;

#include "ops/scan/decay-inl.h"

// One instance per choice of chains, so that the inner loop has no branches.
template <bool kTrue, bool kLocal>
HWY_INLINE void ScanChains(int64_t N, int64_t rows, const float* HWY_RESTRICT At, const float* HWY_RESTRICT Dv,
                           const float* HWY_RESTRICT u, const float* HWY_RESTRICT dt, const float* HWY_RESTRICT B,
                           const float* HWY_RESTRICT C, float* HWY_RESTRICT h, float* HWY_RESTRICT local,
                           float* HWY_RESTRICT y, float* HWY_RESTRICT states) {
  const Df d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = 0; r < rows; ++r) {
    const float* ur = u + r * kLanes;
    const float* dr = dt + r * kLanes;
    for (int64_t c = 0; c < kLanes; c += L) {
      const auto uv = hn::LoadU(d, ur + c), dv = hn::LoadU(d, dr + c);
      const auto xbar = hn::Mul(dv, uv);
      auto acc = hn::Mul(hn::LoadU(d, Dv + c), uv);
      for (int64_t n = 0; n < N; ++n) {
        const int64_t s = n * kLanes + c;
        const auto Bn = hn::Set(d, B[r * N + n]);
        const Decay<Df> decay(d, hn::Mul(dv, hn::LoadU(d, At + s)));
        if constexpr (kLocal) hn::StoreU(hn::MulAdd(xbar, Bn, decay(hn::LoadU(d, local + s))), d, local + s);
        if constexpr (!kTrue) continue;
        const auto hv = hn::MulAdd(xbar, Bn, decay(hn::LoadU(d, h + s)));
        hn::StoreU(hv, d, h + s);
        if (states) hn::StoreU(hv, d, states + r * N * kLanes + s);
        acc = hn::MulAdd(hn::Set(d, C[r * N + n]), hv, acc);
      }
      if constexpr (kTrue) hn::StoreU(acc, d, y + r * kLanes + c);
    }
  }
}

void ScanTile(int64_t N, int64_t rows, const float* HWY_RESTRICT At, const float* HWY_RESTRICT Dv,
              const float* HWY_RESTRICT u, const float* HWY_RESTRICT dt, const float* HWY_RESTRICT B,
              const float* HWY_RESTRICT C, float* HWY_RESTRICT h, float* HWY_RESTRICT local,
              float* HWY_RESTRICT y, float* HWY_RESTRICT states) {
  if (h && local)
    ScanChains<true, true>(N, rows, At, Dv, u, dt, B, C, h, local, y, states);
  else if (h)
    ScanChains<true, false>(N, rows, At, Dv, u, dt, B, C, h, local, y, states);
  else
    ScanChains<false, true>(N, rows, At, Dv, u, dt, B, C, h, local, y, states);
}

// to = exp(x) ⊙ from + local over `count` floats (carry_state).
void DecayAdd(int64_t count, const float* HWY_RESTRICT x, const float* HWY_RESTRICT from,
              const float* HWY_RESTRICT local, float* HWY_RESTRICT to) {
  const Df d;
  for (int64_t i = 0; i < count; i += hn::Lanes(d))
    hn::StoreU(hn::Add(Decayed(d, hn::LoadU(d, x + i), hn::LoadU(d, from + i)), hn::LoadU(d, local + i)), d,
               to + i);
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::scan
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn::scan {

HWY_EXPORT(ScanTile);
HWY_EXPORT(DecayAdd);

static_assert(kLanes * sizeof(float) % 64 == 0, "kLanes must fill whole vectors on every target");

void scan_tile(const Problem& p, const Item& it, const Tile& tile, int64_t rows, float* h, float* local,
               float* y, float* states) {
  HWY_DYNAMIC_DISPATCH(ScanTile)(p.N, rows, it.At, it.Dv, tile.u, tile.dt, tile.B, tile.C, h, local, y, states);
}

namespace {

constexpr int kSlot = 0;       // ScratchArena slot of this file
constexpr int kCarrySlot = 3;  // and of carry_state (chunk_bwd.cpp uses 1 and 2)

// Chunk j of an item (Chunks): the true chain writes y (and the final state after the last
// chunk; after chunk 0 it is chunk 1's start), the local chain its end state and Σ Δ.
void forward_chunk(const Problem& p, const ScanArgs& a, const ScanOutputs& out, Chunks& ch, int64_t index,
                   int64_t j, bool true_chain, bool local_chain) {
  const int64_t NL = p.N * kLanes;
  float* scratch = ScratchArena::local().get<float>(
      kSlot, Item::scratch_size(p) + Tile::scratch_size(p) + 2 * NL + 2 * kTile * kLanes);
  const Item it(p, a, index, scratch);
  Tile tile(p, scratch + Item::scratch_size(p));
  float* h = true_chain ? scratch + Item::scratch_size(p) + Tile::scratch_size(p) : nullptr;
  float* local = local_chain ? scratch + Item::scratch_size(p) + Tile::scratch_size(p) + NL : nullptr;
  float* y = scratch + Item::scratch_size(p) + Tile::scratch_size(p) + 2 * NL;
  float* sg = y + kTile * kLanes;
  const int64_t piece = ch.first[index] + j, last = ch.count(index) - 1;
  if (h && j == 0) load_initial_state(p, a, it, h);
  if (h && j > 0) std::copy(ch.start_of(piece), ch.start_of(piece) + NL, h);
  if (local) std::fill(local, local + NL, 0.0f);
  double* sums = local ? ch.sums_of(piece) : nullptr;
  if (sums) std::fill(sums, sums + kLanes, 0.0);
  const TensorView yb = channel_block(out.y, it.d0, it.width);
  const int64_t end = std::min(it.s->length, (j + 1) * ch.span);
  for (int64_t t0 = j * ch.span; t0 < end; t0 += kTile) {
    const int64_t rows = std::min(kTile, end - t0);
    tile.load(p, a, it, t0, rows);
    scan_tile(p, it, tile, rows, h, local, y, nullptr);
    if (sums) add_deltas(tile, rows, sums);
    if (!h) continue;
    if (a.z.given()) {  // y · silu(z) = y z sigmoid(z)
      kernels::sigmoid(rows * kLanes, tile.z, sg);
      for (int64_t i = 0; i < rows * kLanes; ++i) y[i] *= tile.z[i] * sg[i];
    }
    store_rows(yb, it.s->batch, it.s->start + t0, rows, 0, y, kLanes);
  }
  if (local) std::copy(local, local + NL, ch.local_of(piece));
  if (h && j == 0 && last > 0) std::copy(h, h + NL, ch.start_of(piece + 1));
  if (h && j == last && a.output_final_state) {
    const TensorView& f = out.final_state;
    for (int64_t c = 0; c < it.width; ++c)
      for (int64_t n = 0; n < p.N; ++n) {
        const int64_t o = at3(f, it.seq, it.d0 + c, n);
        if (f.dtype == DType::f32)
          static_cast<float*>(f.data)[o] = h[n * kLanes + c];
        else
          store_from_double(f.data, f.dtype, o, h[n * kLanes + c]);
      }
  }
}

}  // namespace

void carry_state(const Problem& p, const Item& it, const double* sums, const float* from, const float* local,
                 float* to) {
  float* x = ScratchArena::local().get<float>(kCarrySlot, p.N * kLanes);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t c = 0; c < kLanes; ++c)
      x[n * kLanes + c] = static_cast<float>(static_cast<double>(it.At[n * kLanes + c]) * sums[c]);
  HWY_DYNAMIC_DISPATCH(DecayAdd)(p.N * kLanes, x, from, local, to);
}

void fast_forward(const Problem& p, const ScanArgs& a, const ScanOutputs& out) {
  Chunks ch(p);
  auto carry = [&](int64_t index, int64_t j) {
    const int64_t piece = ch.first[index] + j;
    const Item it(p, a, index, ScratchArena::local().get<float>(kSlot, Item::scratch_size(p)));
    carry_state(p, it, ch.sums_of(piece), ch.start_of(piece), ch.local_of(piece), ch.start_of(piece + 1));
  };
  run_sweeps(ch, p.B * p.T * p.D * p.N,
             {{[&](int64_t index, int64_t j, bool true_chain, bool local_chain) {
                 forward_chunk(p, a, out, ch, index, j, true_chain, local_chain);
               },
               carry, 0.8}});  // the local chain skips y
}

}  // namespace linattn::scan
#endif  // HWY_ONCE
