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
// no sum depends on the thread count. With time chunks (chunk.hpp), both sweeps run in two
// passes: the forward one sets the chunks' start checkpoints, the reverse one carries dh
// (dh_in = exp(A ΣΔ) ⊙ dh_out + the chunk's dh from zero: §4.10 (b) in reverse); dA, dD and
// ddelta_bias are summed per chunk, then over an item's chunks from the last.
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
// dB, dC lane sums [rows][N]; dA [N][kLanes] and dD [kLanes] accumulated. local: null, or a
// time chunk's local chain of dh (from zero, chunk.hpp) advanced with the same decays.
void ReverseTile(int64_t N, int64_t rows, const float* HWY_RESTRICT At, const float* HWY_RESTRICT Dv,
                 const float* HWY_RESTRICT u, const float* HWY_RESTRICT dt, const float* HWY_RESTRICT B,
                 const float* HWY_RESTRICT C, const float* HWY_RESTRICT states,
                 const float* HWY_RESTRICT h0, const float* HWY_RESTRICT g, float* HWY_RESTRICT dh,
                 float* HWY_RESTRICT local, float* HWY_RESTRICT du, float* HWY_RESTRICT ddt, float* HWY_RESTRICT dB,
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
        const Decay<Df> decay(d, hn::Mul(dv, Av));
        const auto dha = decay(dhv);  // dh a
        if (local) hn::StoreU(decay(hn::MulAdd(Cn, gv, hn::LoadU(d, local + s))), d, local + s);
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

// The local chain alone over one tile (the first pass of a split backward sweep): as in
// ReverseTile, local = a (local + C ỹ) per token from the last row.
void LocalTile(int64_t N, int64_t rows, const float* HWY_RESTRICT At, const float* HWY_RESTRICT dt,
               const float* HWY_RESTRICT C, const float* HWY_RESTRICT g, float* HWY_RESTRICT local) {
  const Df d;
  const int64_t L = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r = rows - 1; r >= 0; --r)
    for (int64_t n = 0; n < N; ++n) {
      const auto Cn = hn::Set(d, C[r * N + n]);
      for (int64_t c = 0; c < kLanes; c += L) {
        const int64_t s = n * kLanes + c;
        const Decay<Df> decay(d, hn::Mul(hn::LoadU(d, dt + r * kLanes + c), hn::LoadU(d, At + s)));
        hn::StoreU(decay(hn::MulAdd(Cn, hn::LoadU(d, g + r * kLanes + c), hn::LoadU(d, local + s))), d, local + s);
      }
    }
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::scan
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn::scan {

HWY_EXPORT(ReverseTile);
HWY_EXPORT(LocalTile);

namespace {

constexpr int kSlot = 1;        // ScratchArena slot of this file's tiles (chunk_fwd.cpp uses 0, 3)
constexpr int kStateSlot = 2;   // and of the tile checkpoints of an item run on one thread

// Lane sums of dB and dC per (block of a group, token row, group, n), and per-chunk dA, dD,
// ddelta_bias: every chunk writes only its own slots.
struct Partials {
  int64_t rows_total, G, N;
  std::unique_ptr<float[]> dB, dC;  // [block][B*T][G][N]
  std::vector<double> params;       // [piece][(N + 2) * kLanes]: dA, dD, ddelta_bias
  float* slot(float* base, int64_t block, int64_t row, int64_t g) const {
    return base + ((block * rows_total + row) * G + g) * N;
  }
};

// The states before every tile of each item ([tiles + 1][N][kLanes], chunk.hpp): with time
// chunks, threads share an item's checkpoints, so they live here per item; otherwise an item
// runs on one thread and keeps them in that thread's scratch.
struct Checkpoints {
  std::vector<int64_t> offset;  // [items + 1] in floats; empty: thread scratch
  std::vector<float> states;
  Checkpoints(const Problem& p, const Chunks& ch) {
    if (!ch.split()) return;
    const int64_t per_seq = p.G * blocks_per_group(p);
    offset.assign(ch.items() + 1, 0);
    for (int64_t i = 0; i < ch.items(); ++i)
      offset[i + 1] = offset[i] + ((p.sequences[i / per_seq].length + kTile - 1) / kTile + 1) * p.N * kLanes;
    states.resize(offset.back());
  }
  float* of(const Problem& p, const Sequence& s, int64_t item) {
    if (!offset.empty()) return &states[offset[item]];
    return ScratchArena::local().get<float>(kStateSlot, ((s.length + kTile - 1) / kTile + 1) * p.N * kLanes);
  }
};

// Everything a backward chunk needs.
struct Backward {
  const Problem& p;
  const ScanArgs& a;
  const ScanGradOutputs& go;
  const ScanGrads& gr;
  Chunks& ch;
  Checkpoints& ckpt;
  Partials& part;
};

// ỹ = dy · silu(z) of a tile into g; with y (before the gate) non-null, y becomes dz.
void gate_gradient(const Backward& b, const Item& it, const Tile& tile, int64_t t0, int64_t rows, float* g,
                   float* y, float* sg) {
  std::fill(g, g + rows * kLanes, 0.0f);
  load_tile(b.go.dy, it.s->batch, it.s->start + t0, rows, it.d0, it.width, g, kLanes);
  if (!b.a.z.given()) return;  // ỹ = dy z σ(z); dz = dy y σ(z) (1 + z (1 - σ(z)))
  kernels::sigmoid(rows * kLanes, tile.z, sg);
  for (int64_t j = 0; j < rows * kLanes; ++j) {
    const float zj = tile.z[j], sj = sg[j];
    if (y) y[j] *= g[j] * sj * (1.0f + zj * (1.0f - sj));
    g[j] *= zj * sj;
  }
}

// Chunk j (in time order) of the forward sweep: the true chain stores the checkpoints of the
// chunk's tiles after the first (after chunk 0 also chunk 1's start), the local chain its end
// state and Σ Δ. Chunk j's start is checkpoint ch.span / kTile * j.
void forward_chunk(const Backward& b, int64_t index, int64_t j, bool true_chain, bool local_chain) {
  const Problem& p = b.p;
  const int64_t NL = p.N * kLanes;
  float* scratch = ScratchArena::local().get<float>(
      kSlot, Item::scratch_size(p) + Tile::scratch_size(p) + 2 * NL + kTile * kLanes);
  const Item it(p, b.a, index, scratch);
  Tile tile(p, scratch + Item::scratch_size(p));
  float* h = true_chain ? scratch + Item::scratch_size(p) + Tile::scratch_size(p) : nullptr;
  float* local = local_chain ? scratch + Item::scratch_size(p) + Tile::scratch_size(p) + NL : nullptr;
  float* y = scratch + Item::scratch_size(p) + Tile::scratch_size(p) + 2 * NL;
  float* ckpt = b.ckpt.of(p, *it.s, index);
  const int64_t piece = b.ch.first[index] + j, tiles_per_chunk = b.ch.span / kTile;
  if (h && j == 0) load_initial_state(p, b.a, it, ckpt);
  if (h) std::copy(ckpt + j * tiles_per_chunk * NL, ckpt + (j * tiles_per_chunk + 1) * NL, h);
  if (local) std::fill(local, local + NL, 0.0f);
  double* sums = local ? b.ch.sums_of(piece) : nullptr;
  if (sums) std::fill(sums, sums + kLanes, 0.0);
  const int64_t end = std::min(it.s->length, (j + 1) * b.ch.span);
  for (int64_t t0 = j * b.ch.span; t0 < end; t0 += kTile) {
    const int64_t rows = std::min(kTile, end - t0);
    if (h && t0 > j * b.ch.span) std::copy(h, h + NL, ckpt + t0 / kTile * NL);
    tile.load(p, b.a, it, t0, rows);
    scan_tile(p, it, tile, rows, h, local, y, nullptr);
    if (sums) add_deltas(tile, rows, sums);
  }
  if (local) std::copy(local, local + NL, b.ch.local_of(piece));
  if (h && j == 0 && b.ch.count(index) > 1) std::copy(h, h + NL, ckpt + tiles_per_chunk * NL);
}

void forward_carry(const Backward& b, int64_t index, int64_t j) {
  const Problem& p = b.p;
  const int64_t NL = p.N * kLanes, piece = b.ch.first[index] + j, tiles_per_chunk = b.ch.span / kTile;
  const Item it(p, b.a, index, ScratchArena::local().get<float>(kSlot, Item::scratch_size(p)));
  float* ckpt = b.ckpt.of(p, *it.s, index);
  carry_state(p, it, b.ch.sums_of(piece), ckpt + j * tiles_per_chunk * NL, b.ch.local_of(piece),
              ckpt + (j + 1) * tiles_per_chunk * NL);
}

// Chunk j of the reverse sweep, chunk c = count - 1 - j in time: the true chain carries dh from
// the chunk's end (dfinal_state for the last chunk, else the carried gradient in ch.start) and
// writes the gradients of its tokens and its partial parameter gradients (and dinitial_state
// after chunk 0; after the last chunk, the carried gradient of the one before); the local
// chain carries dh from zero into ch.local.
void reverse_chunk(const Backward& b, int64_t index, int64_t j, bool true_chain, bool local_chain) {
  const Problem& p = b.p;
  const ScanArgs& a = b.a;
  const ScanGrads& gr = b.gr;
  const int64_t N = p.N, NL = N * kLanes, TL = kTile * kLanes;
  float* scratch = ScratchArena::local().get<float>(
      kSlot, Item::scratch_size(p) + Tile::scratch_size(p) + kTile * NL + 5 * TL + 2 * kTile * N + 4 * NL + kLanes);
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
  float* dh = true_chain ? h + NL : nullptr;  // [N][kLanes]
  float* local = local_chain ? h + 2 * NL : nullptr;
  float* dA = h + 3 * NL;          // [N][kLanes]
  float* dD = dA + NL;             // [kLanes]

  const Sequence& s = *it.s;
  const int64_t count = b.ch.count(index), c = count - 1 - j, piece = b.ch.first[index] + c;
  const float* ckpt = b.ckpt.of(p, s, index);
  if (local) std::fill(local, local + NL, 0.0f);
  if (dh && j > 0) std::copy(b.ch.start_of(piece), b.ch.start_of(piece) + NL, dh);
  if (dh && j == 0) {
    std::fill(dh, dh + NL, 0.0f);
    if (b.go.dfinal_state.given())
      for (int64_t k = 0; k < it.width; ++k)
        for (int64_t n = 0; n < N; ++n)
          dh[n * kLanes + k] = static_cast<float>(load_as_double(
              b.go.dfinal_state.data, b.go.dfinal_state.dtype, at3(b.go.dfinal_state, it.seq, it.d0 + k, n)));
  }
  // dA, dD, ddelta_bias: fp32 sums per tile, added up over the chunk's tiles in fp64.
  double* params = dh ? &b.part.params[piece * (N + 2) * kLanes] : nullptr;
  if (params) std::fill(params, params + (N + 2) * kLanes, 0.0);
  const int64_t block = (it.d0 - it.g * p.group_size()) / kLanes;
  auto out_block = [&](const TensorView& t) { return channel_block(t, it.d0, it.width); };

  const int64_t begin = c * b.ch.span, end = std::min(s.length, begin + b.ch.span);
  for (int64_t i = (end - 1) / kTile; end > begin && i >= begin / kTile; --i) {
    const int64_t t0 = i * kTile, rows = std::min(kTile, end - t0), row0 = s.start + t0;
    tile.load(p, a, it, t0, rows);
    if (!dh) {
      gate_gradient(b, it, tile, t0, rows, g, nullptr, sg);
      HWY_DYNAMIC_DISPATCH(LocalTile)(N, rows, it.At, tile.dt, tile.C, g, local);
      continue;
    }
    std::copy(ckpt + i * NL, ckpt + (i + 1) * NL, h);  // scan_tile advances h
    scan_tile(p, it, tile, rows, h, nullptr, y, states);
    gate_gradient(b, it, tile, t0, rows, g, y, sg);
    if (a.z.given() && gr.dz.given()) store_rows(out_block(gr.dz), s.batch, row0, rows, 0, y, kLanes);
    std::fill(dA, dA + NL + kLanes, 0.0f);  // dA, dD of this tile
    HWY_DYNAMIC_DISPATCH(ReverseTile)(N, rows, it.At, it.Dv, tile.u, tile.dt, tile.B, tile.C, states,
                                      ckpt + i * NL, g, dh, local, du, ddt, dBr, dCr, dA, dD);
    if (p.softplus) {  // dΔ/d(delta) = σ(delta + bias)
      kernels::sigmoid(rows * kLanes, tile.raw, sg);
      for (int64_t k = 0; k < rows * kLanes; ++k) ddt[k] *= sg[k];
    }
    double* dbias = params + NL + kLanes;
    for (int64_t k = 0; k < NL + kLanes; ++k) params[k] += dA[k];  // dA, then dD
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < kLanes; ++k) dbias[k] += ddt[r * kLanes + k];
    if (gr.du.given()) store_rows(out_block(gr.du), s.batch, row0, rows, 0, du, kLanes);
    if (gr.ddelta.given()) store_rows(out_block(gr.ddelta), s.batch, row0, rows, 0, ddt, kLanes);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = s.batch * p.T + row0 + r;
      if (b.part.dB) std::copy(dBr + r * N, dBr + (r + 1) * N, b.part.slot(b.part.dB.get(), block, row, it.g));
      if (b.part.dC) std::copy(dCr + r * N, dCr + (r + 1) * N, b.part.slot(b.part.dC.get(), block, row, it.g));
    }
  }

  if (local) std::copy(local, local + NL, b.ch.local_of(piece));
  if (dh && j == 0 && count > 1) std::copy(dh, dh + NL, b.ch.start_of(piece - 1));
  if (dh && c == 0 && gr.dinitial_state.given())
    for (int64_t k = 0; k < it.width; ++k)
      for (int64_t n = 0; n < N; ++n)
        store_from_double(gr.dinitial_state.data, gr.dinitial_state.dtype,
                          at3(gr.dinitial_state, it.seq, it.d0 + k, n), dh[n * kLanes + k]);
}

// The gradient carried into chunk j + 1 of the reverse sweep (the chunk before in time).
void reverse_carry(const Backward& b, int64_t index, int64_t j) {
  const Problem& p = b.p;
  const int64_t piece = b.ch.first[index] + b.ch.count(index) - 1 - j;
  const Item it(p, b.a, index, ScratchArena::local().get<float>(kSlot, Item::scratch_size(p)));
  carry_state(p, it, b.ch.sums_of(piece), b.ch.start_of(piece), b.ch.local_of(piece), b.ch.start_of(piece - 1));
}

}  // namespace

void fast_backward(const Problem& p, const ScanArgs& a, const ScanGradOutputs& go, const ScanGrads& gr) {
  const int64_t bpg = blocks_per_group(p), rows_total = p.B * p.T;
  Chunks ch(p);
  Checkpoints ckpt(p, ch);
  Partials part{rows_total, p.G, p.N, nullptr, nullptr, std::vector<double>(ch.pieces() * (p.N + 2) * kLanes)};
  const int64_t slots = bpg * rows_total * p.G * p.N;  // every slot is written by its item
  if (gr.dB.given()) part.dB.reset(new float[slots]);
  if (gr.dC.given()) part.dC.reset(new float[slots]);
  const Backward b{p, a, go, gr, ch, ckpt, part};
  run_sweeps(ch, p.B * p.T * p.D * p.N,
             {{[&](int64_t i, int64_t j, bool t, bool l) { forward_chunk(b, i, j, t, l); },
               [&](int64_t i, int64_t j) { forward_carry(b, i, j); }, 0.8},
              {[&](int64_t i, int64_t j, bool t, bool l) { reverse_chunk(b, i, j, t, l); },
               [&](int64_t i, int64_t j) { reverse_carry(b, i, j); },
               0.35}});  // the true chain rescans the states too, and has far more to compute
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
  // dA, dD, ddelta_bias: the sequences in order, each one's chunks from the last.
  const int64_t per_seq = p.G * bpg, NL = p.N * kLanes;
  for (int64_t k = 0; k < per_seq; ++k) {
    const Item first(p, a, k, ScratchArena::local().get<float>(kSlot, Item::scratch_size(p)));
    for (int64_t c = 0; c < first.width; ++c) {
      const int64_t d = first.d0 + c;
      std::vector<double> sum(p.N + 2, 0.0);
      for (int64_t seq = 0; seq < p.num_sequences(); ++seq) {
        const int64_t item = seq * per_seq + k;
        for (int64_t piece = ch.first[item + 1] - 1; piece >= ch.first[item]; --piece) {
          const double* params = &part.params[piece * (p.N + 2) * kLanes];
          for (int64_t n = 0; n < p.N; ++n) sum[n] += params[n * kLanes + c];
          sum[p.N] += params[NL + c];
          sum[p.N + 1] += params[NL + kLanes + c];
        }
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
