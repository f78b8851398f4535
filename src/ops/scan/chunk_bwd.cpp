// Fast backward of the selective scan (algorithms.md §4.10 (c)): per item (chunk.hpp), a
// forward sweep keeps the state at the start of every tile (checkpoints, as the CUDA kernel's
// chunk states); then the tiles go by in reverse: recompute the tile's states from its
// checkpoint, and run the reverse scan over its tokens with the channels in SIMD lanes:
//     dh[n] += C[n] ỹ;  dC[n] = Σ_lanes ỹ h_t[n];  a = exp(Δ A[n]);  q = dh[n] h_{t-1}[n] a
//     dΔ += q A[n] + dh[n] B[n] u;  dA[n] += q Δ;  du += dh[n] B[n] Δ;  dB[n] = Σ_lanes dh[n] Δ u
//     dh[n] *= a
// with ỹ = dy · silu(z) and du += D ỹ. dB and dC sum over the channels of a group, which span
// several items: each item writes its lane sums per token to its own slot, and the slots are
// added in item order afterwards. dA, dD and ddelta_bias sum over sequences the same way. So
// no sum depends on the thread count.
#include <memory>
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "ops/scan/chunk.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/scan/chunk_bwd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

HWY_BEFORE_NAMESPACE();
namespace linattn::scan {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using Df = hn::ScalableTag<float>;

#include "ops/scan/decay-inl.h"

// The reverse scan over one tile's tokens. states: h_t per row [rows][N][kLanes]; h0: the
// state before the tile; g: ỹ; dh [N][kLanes] carried in and out; du, ddt written per row;
// dB, dC lane sums [rows][N]; dA [N][kLanes] and dD [kLanes] accumulated.
void ReverseTile(int64_t N, int64_t rows, const float* HWY_RESTRICT At, const float* HWY_RESTRICT Dv,
                 const float* HWY_RESTRICT u, const float* HWY_RESTRICT dt, const float* HWY_RESTRICT B,
                 const float* HWY_RESTRICT C, const float* HWY_RESTRICT states,
                 const float* HWY_RESTRICT h0, const float* HWY_RESTRICT g, float* HWY_RESTRICT dh,
                 float* HWY_RESTRICT du, float* HWY_RESTRICT ddt, float* HWY_RESTRICT dB,
                 float* HWY_RESTRICT dC, float* HWY_RESTRICT dA, float* HWY_RESTRICT dD) {
  const Df d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = rows - 1; r >= 0; --r) {
    const float* prev = r > 0 ? states + (r - 1) * N * kLanes : h0;
    const float* cur = states + r * N * kLanes;
    const int64_t o = r * kLanes;
    for (int64_t c = 0; c < kLanes; c += L) {
      const auto uv = hn::LoadU(d, u + o + c), gv = hn::LoadU(d, g + o + c);
      hn::StoreU(hn::Mul(hn::LoadU(d, Dv + c), gv), d, du + o + c);
      hn::StoreU(hn::Zero(d), d, ddt + o + c);
      hn::StoreU(hn::MulAdd(gv, uv, hn::LoadU(d, dD + c)), d, dD + c);
    }
    // States outermost, so that dB and dC (sums over the channels) take one horizontal sum
    // per state and token; du and dΔ accumulate in their L1-resident rows.
    for (int64_t n = 0; n < N; ++n) {
      const auto Bn = hn::Set(d, B[r * N + n]), Cn = hn::Set(d, C[r * N + n]);
      auto sumB = hn::Zero(d), sumC = hn::Zero(d);
      for (int64_t c = 0; c < kLanes; c += L) {
        const int64_t s = n * kLanes + c;
        const auto uv = hn::LoadU(d, u + o + c), dv = hn::LoadU(d, dt + o + c), gv = hn::LoadU(d, g + o + c);
        const auto Av = hn::LoadU(d, At + s);
        sumC = hn::MulAdd(gv, hn::LoadU(d, cur + s), sumC);
        const auto dhv = hn::MulAdd(Cn, gv, hn::LoadU(d, dh + s));
        const auto dha = Decayed(d, hn::Mul(dv, Av), dhv);  // dh a
        const auto q = hn::Mul(dha, hn::LoadU(d, prev + s));
        const auto dhB = hn::Mul(dhv, Bn);
        hn::StoreU(hn::MulAdd(q, Av, hn::MulAdd(dhB, uv, hn::LoadU(d, ddt + o + c))), d, ddt + o + c);
        hn::StoreU(hn::MulAdd(q, dv, hn::LoadU(d, dA + s)), d, dA + s);
        hn::StoreU(hn::MulAdd(dhB, dv, hn::LoadU(d, du + o + c)), d, du + o + c);
        sumB = hn::MulAdd(dhv, hn::Mul(dv, uv), sumB);
        hn::StoreU(dha, d, dh + s);
      }
      dB[r * N + n] = hn::GetLane(hn::SumOfLanes(d, sumB));
      dC[r * N + n] = hn::GetLane(hn::SumOfLanes(d, sumC));
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::scan
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn::scan {

HWY_EXPORT(ReverseTile);

namespace {

constexpr int kSlot = 1;        // ScratchArena slot of this file's tiles (chunk_fwd.cpp uses 0)
constexpr int kStateSlot = 2;   // and of the tile checkpoints

// Lane sums of dB and dC per (block of a group, token row, group, n), and per-item dA, dD,
// ddelta_bias: every item writes only its own slots.
struct Partials {
  int64_t rows_total, G, N;
  std::unique_ptr<float[]> dB, dC;  // [block][B*T][G][N]
  std::vector<double> params;       // [item][(N + 2) * kLanes]: dA, dD, ddelta_bias
  float* slot(float* base, int64_t block, int64_t row, int64_t g) const {
    return base + ((block * rows_total + row) * G + g) * N;
  }
};

void backward_item(const Problem& p, const ScanArgs& a, const ScanGradOutputs& go, const ScanGrads& gr,
                   Partials& part, int64_t index) {
  const int64_t N = p.N, NL = N * kLanes;
  const int64_t TL = kTile * kLanes;
  float* scratch = ScratchArena::local().get<float>(
      kSlot, Item::scratch_size(p) + Tile::scratch_size(p) + kTile * NL + 5 * TL + 2 * kTile * N + 3 * NL + kLanes);
  const Item it(p, a, index, scratch);
  Tile tile(p, scratch + Item::scratch_size(p));
  float* states = scratch + Item::scratch_size(p) + Tile::scratch_size(p);  // [kTile][N][kLanes]
  float* y = states + kTile * NL;  // [kTile][kLanes]: y before the gate, then dz
  float* g = y + TL;               // ỹ
  float* sg = g + TL;              // sigmoids
  float* du = sg + TL;
  float* ddt = du + TL;
  float* dBr = ddt + TL;           // [kTile][N] lane sums
  float* dCr = dBr + kTile * N;
  float* h = dCr + kTile * N;      // [N][kLanes]: the tile's running state
  float* dh = h + NL;              // [N][kLanes]
  float* dA = dh + NL;             // [N][kLanes]
  float* dD = dA + NL;             // [kLanes]

  const Sequence& s = *it.s;
  const int64_t tiles = (s.length + kTile - 1) / kTile;
  float* ckpt = ScratchArena::local().get<float>(kStateSlot, (tiles + 1) * NL);  // state before tile i
  load_initial_state(p, a, it, ckpt);
  for (int64_t i = 0; i < tiles; ++i) {
    const int64_t t0 = i * kTile, rows = std::min(kTile, s.length - t0);
    tile.load(p, a, it, t0, rows);
    std::copy(ckpt + i * NL, ckpt + (i + 1) * NL, ckpt + (i + 1) * NL);
    scan_tile(p, it, tile, rows, ckpt + (i + 1) * NL, y, nullptr);
  }

  std::fill(dh, dh + NL, 0.0f);
  if (go.dfinal_state.given())
    for (int64_t c = 0; c < it.width; ++c)
      for (int64_t n = 0; n < N; ++n)
        dh[n * kLanes + c] = static_cast<float>(load_as_double(
            go.dfinal_state.data, go.dfinal_state.dtype, at3(go.dfinal_state, it.seq, it.d0 + c, n)));
  // dA, dD, ddelta_bias: fp32 sums per tile, added up over the tiles in fp64.
  double* params = &part.params[index * (N + 2) * kLanes];
  std::fill(params, params + (N + 2) * kLanes, 0.0);
  double* dbias = params + NL + kLanes;
  const int64_t block = (it.d0 - it.g * p.group_size()) / kLanes;
  auto out_block = [&](const TensorView& t) { return channel_block(t, it.d0, it.width); };

  for (int64_t i = tiles - 1; i >= 0; --i) {
    const int64_t t0 = i * kTile, rows = std::min(kTile, s.length - t0), row0 = s.start + t0;
    tile.load(p, a, it, t0, rows);
    std::copy(ckpt + i * NL, ckpt + (i + 1) * NL, h);  // scan_tile advances h
    scan_tile(p, it, tile, rows, h, y, states);
    std::fill(g, g + rows * kLanes, 0.0f);
    load_tile(go.dy, s.batch, row0, rows, it.d0, it.width, g, kLanes);
    if (a.z.given()) {  // ỹ = dy z σ(z); dz = dy y σ(z) (1 + z (1 - σ(z)))
      kernels::sigmoid(rows * kLanes, tile.z, sg);
      for (int64_t j = 0; j < rows * kLanes; ++j) {
        const float zj = tile.z[j], sj = sg[j];
        y[j] *= g[j] * sj * (1.0f + zj * (1.0f - sj));  // y now holds dz
        g[j] *= zj * sj;
      }
      if (gr.dz.given()) store_rows(out_block(gr.dz), s.batch, row0, rows, 0, y, kLanes);
    }
    std::fill(dA, dA + NL + kLanes, 0.0f);  // dA, dD of this tile
    HWY_DYNAMIC_DISPATCH(ReverseTile)(N, rows, it.At, it.Dv, tile.u, tile.dt, tile.B, tile.C, states,
                                      ckpt + i * NL, g, dh, du, ddt, dBr, dCr, dA, dD);
    if (p.softplus) {  // dΔ/d(delta) = σ(delta + bias)
      kernels::sigmoid(rows * kLanes, tile.raw, sg);
      for (int64_t j = 0; j < rows * kLanes; ++j) ddt[j] *= sg[j];
    }
    for (int64_t j = 0; j < NL + kLanes; ++j) params[j] += dA[j];  // dA, then dD
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < kLanes; ++c) dbias[c] += ddt[r * kLanes + c];
    if (gr.du.given()) store_rows(out_block(gr.du), s.batch, row0, rows, 0, du, kLanes);
    if (gr.ddelta.given()) store_rows(out_block(gr.ddelta), s.batch, row0, rows, 0, ddt, kLanes);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = s.batch * p.T + row0 + r;
      if (part.dB) std::copy(dBr + r * N, dBr + (r + 1) * N, part.slot(part.dB.get(), block, row, it.g));
      if (part.dC) std::copy(dCr + r * N, dCr + (r + 1) * N, part.slot(part.dC.get(), block, row, it.g));
    }
  }

  if (gr.dinitial_state.given())
    for (int64_t c = 0; c < it.width; ++c)
      for (int64_t n = 0; n < N; ++n)
        store_from_double(gr.dinitial_state.data, gr.dinitial_state.dtype,
                          at3(gr.dinitial_state, it.seq, it.d0 + c, n), dh[n * kLanes + c]);
}

}  // namespace

void fast_backward(const Problem& p, const ScanArgs& a, const ScanGradOutputs& go, const ScanGrads& gr) {
  const int64_t items = num_items(p), bpg = blocks_per_group(p), rows_total = p.B * p.T;
  Partials part{rows_total, p.G, p.N, nullptr, nullptr, std::vector<double>(items * (p.N + 2) * kLanes)};
  const int64_t slots = bpg * rows_total * p.G * p.N;  // every slot is written by its item
  if (gr.dB.given()) part.dB.reset(new float[slots]);
  if (gr.dC.given()) part.dC.reset(new float[slots]);
  parallel_for_work(items, p.B * p.T * p.D * p.N,
                    [&](int64_t item) { backward_item(p, a, go, gr, part, item); });

  // dB, dC: the blocks of each group in order.
  parallel_for_work(rows_total, rows_total * p.G * p.N * bpg, [&](int64_t row) {
    const int64_t b = row / p.T, t = row % p.T;
    for (int64_t g = 0; g < p.G; ++g)
      for (auto [sums, grad] : {std::pair{part.dB.get(), &gr.dB}, {part.dC.get(), &gr.dC}}) {
        if (!sums) continue;
        for (int64_t n = 0; n < p.N; ++n) {
          float total = 0.0f;
          for (int64_t blk = 0; blk < bpg; ++blk) total += part.slot(sums, blk, row, g)[n];
          store_from_double(grad->data, grad->dtype, at4(*grad, b, t, g, n), total);
        }
      }
  });
  // dA, dD, ddelta_bias: the sequences in order.
  const int64_t per_seq = p.G * bpg, NL = p.N * kLanes;
  for (int64_t k = 0; k < per_seq; ++k) {
    const Item first(p, a, k, ScratchArena::local().get<float>(kSlot, Item::scratch_size(p)));
    for (int64_t c = 0; c < first.width; ++c) {
      const int64_t d = first.d0 + c;
      std::vector<double> sum(p.N + 2, 0.0);
      for (int64_t seq = 0; seq < p.num_sequences(); ++seq) {
        const double* params = &part.params[(seq * per_seq + k) * (p.N + 2) * kLanes];
        for (int64_t n = 0; n < p.N; ++n) sum[n] += params[n * kLanes + c];
        sum[p.N] += params[NL + c];
        sum[p.N + 1] += params[NL + kLanes + c];
      }
      if (gr.dA.given())
        for (int64_t n = 0; n < p.N; ++n) store_from_double(gr.dA.data, gr.dA.dtype, at2(gr.dA, d, n), sum[n]);
      if (gr.dD.given()) store_from_double(gr.dD.data, gr.dD.dtype, d * gr.dD.strides[0], sum[p.N]);
      if (gr.ddelta_bias.given())
        store_from_double(gr.ddelta_bias.data, gr.ddelta_bias.dtype, d * gr.ddelta_bias.strides[0], sum[p.N + 1]);
    }
  }
}

}  // namespace linattn::scan
#endif  // HWY_ONCE
