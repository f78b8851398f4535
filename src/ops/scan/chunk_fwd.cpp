// Fast forward of the selective scan (algorithms.md §4.10 (a), (b)): per item (chunk.hpp) and
// tile of tokens, for each token and state n, over the item's channels in SIMD lanes:
//     a = exp(Δ A[n]),  h[n] = a h[n] + (Δ u) B[n],  y += C[n] h[n]
// then y = (y + D u) · silu(z). The N exps per channel and token dominate (§4.10 (d)); they run
// as Highway's vector Exp (decay-inl.h). States are fp32.
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

void ScanTile(int64_t N, int64_t rows, const float* HWY_RESTRICT At, const float* HWY_RESTRICT Dv,
              const float* HWY_RESTRICT u, const float* HWY_RESTRICT dt, const float* HWY_RESTRICT B,
              const float* HWY_RESTRICT C, float* HWY_RESTRICT h, float* HWY_RESTRICT y,
              float* HWY_RESTRICT states) {
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
        float* hn_ = h + n * kLanes + c;
        const auto decayed = Decayed(d, hn::Mul(dv, hn::LoadU(d, At + n * kLanes + c)), hn::LoadU(d, hn_));
        const auto hv = hn::MulAdd(xbar, hn::Set(d, B[r * N + n]), decayed);
        hn::StoreU(hv, d, hn_);
        if (states) hn::StoreU(hv, d, states + (r * N + n) * kLanes + c);
        acc = hn::MulAdd(hn::Set(d, C[r * N + n]), hv, acc);
      }
      hn::StoreU(acc, d, y + r * kLanes + c);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::scan
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn::scan {

HWY_EXPORT(ScanTile);

static_assert(kLanes * sizeof(float) % 64 == 0, "kLanes must fill whole vectors on every target");

void scan_tile(const Problem& p, const Item& it, const Tile& tile, int64_t rows, float* h, float* y,
               float* states) {
  HWY_DYNAMIC_DISPATCH(ScanTile)(p.N, rows, it.At, it.Dv, tile.u, tile.dt, tile.B, tile.C, h, y, states);
}

namespace {

constexpr int kSlot = 0;  // ScratchArena slot of this file

void forward_item(const Problem& p, const ScanArgs& a, const ScanOutputs& out, int64_t index) {
  float* scratch = ScratchArena::local().get<float>(
      kSlot, Item::scratch_size(p) + Tile::scratch_size(p) + (p.N + 2 * kTile) * kLanes);
  const Item it(p, a, index, scratch);
  Tile tile(p, scratch + Item::scratch_size(p));
  float* h = scratch + Item::scratch_size(p) + Tile::scratch_size(p);
  float* y = h + p.N * kLanes;
  float* sg = y + kTile * kLanes;
  load_initial_state(p, a, it, h);
  const TensorView yb = channel_block(out.y, it.d0, it.width);
  for (int64_t t0 = 0; t0 < it.s->length; t0 += kTile) {
    const int64_t rows = std::min(kTile, it.s->length - t0);
    tile.load(p, a, it, t0, rows);
    scan_tile(p, it, tile, rows, h, y, nullptr);
    if (a.z.given()) {  // y · silu(z) = y z sigmoid(z)
      kernels::sigmoid(rows * kLanes, tile.z, sg);
      for (int64_t i = 0; i < rows * kLanes; ++i) y[i] *= tile.z[i] * sg[i];
    }
    store_rows(yb, it.s->batch, it.s->start + t0, rows, 0, y, kLanes);
  }
  if (a.output_final_state) {
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

void fast_forward(const Problem& p, const ScanArgs& a, const ScanOutputs& out) {
  parallel_for_work(num_items(p), p.B * p.T * p.D * p.N,
                    [&](int64_t item) { forward_item(p, a, out, item); });
}

}  // namespace linattn::scan
#endif  // HWY_ONCE
