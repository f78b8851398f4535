// Fused recurrent form of dplr_delta_rule (algorithms.md §4.8a): decode, and the forward of the
// chunk form too at RWKV-7's head sizes (chunk.hpp's forward_runs_recurrent). Per token per value
// head on the K x V fp32 state:
//     sa = S^T a                                     (the state before the token's decay)
//     S  = diag(e^{gk}) S + b sa^T + k v^T,   o = scale S^T q
// Every value column of S evolves on its own (sa, v and o are per column), so the state is
// walked in blocks of columns that stay in L1 across a tile of tokens, and one pass per token
// over a block both writes the new rows and accumulates o and the next token's sa = S^T a_{t+1}
// from them: the state is read and written once per token (5 multiply-adds per element); only a
// sequence's first token reads its block once more for its sa (a decode step reads the old
// state, writes the new one, no copy). A tile's rows are loaded for a range of heads at once
// (one span per token in fla's layout, decays exponentiated, q scaled) and shared by the heads'
// column blocks. Work units are (sequence, range of value heads, range of columns); columns and
// heads do not interact, so results do not depend on the split or the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/elementwise.hpp"
#include "ops/common/forms.hpp"
#include "ops/common/rows.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/dplr/recurrent.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#ifndef LINATTN_DPLR_RECURRENT_TYPES
#define LINATTN_DPLR_RECURRENT_TYPES
namespace linattn::dplr {

// One head's part of a tile of tokens as the state pass reads it: rows of K `ld` apart (w =
// e^{gk}, b, k, scale q) for tokens [0, n), a for tokens [0, n] (row n is the next tile's first
// token, zeros at the end), v rows `ld_v` apart; o rows are written `ld_o` apart.
struct TokenRows {
  int64_t n = 0;
  const float *w = nullptr, *b = nullptr, *k = nullptr, *q = nullptr, *a = nullptr;
  int64_t ld = 0;
  const float* v = nullptr;
  int64_t ld_v = 0;
  float* o = nullptr;
  int64_t ld_o = 0;
};


// Where the state of a tile's columns comes from and goes: the first token reads `src` (rows
// ld_src apart); every token writes the working rows, kept per column block of `width` columns
// with each block's K rows contiguous (rows a stride of V floats apart would fall in a fraction
// of L1's sets), or, when `final_rows` is given (a single token), straight into those rows (V
// apart). Later tokens update the working rows in place. sa[c] holds column c's sa of the
// tile's first token on entry (computed from src when `first`) and of the next tile's first
// token on return.
struct TileState {
  const float* src;
  int64_t ld_src;
  float* work;
  float* final_rows;
  int64_t V;
  float* sa;
  bool first;
};

// One column block's view of a TileState.
struct BlockState {
  const float* src;
  int64_t ld_src;
  float* S;
  int64_t ld_s;
  float* sa;
  bool first;
};

}  // namespace linattn::dplr
#endif

HWY_BEFORE_NAMESPACE();
namespace linattn::dplr {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using D = hn::ScalableTag<float>;
using Vf = hn::Vec<D>;

// NV vectors of columns from column c of the tile's v and o rows: v, sa, o and the next sa in
// registers (5 NV of them: the next sa in two halves) while the K rows stream by.
template <int NV>
HWY_INLINE void Columns(int64_t K, const TokenRows& t, int64_t c, const BlockState& st) {
  const D d;
  const size_t N = hn::Lanes(d);
  Vf sa[NV];
  if (st.first) {  // even and odd rows summed apart: two chains of multiply-adds, not one
    Vf odd[NV];
    for (int i = 0; i < NV; ++i) sa[i] = odd[i] = hn::Zero(d);
    int64_t r = 0;
    for (; r + 1 < K; r += 2) {
      const Vf ar = hn::Set(d, t.a[r]), ar1 = hn::Set(d, t.a[r + 1]);
      for (int i = 0; i < NV; ++i) {
        sa[i] = hn::MulAdd(ar, hn::LoadU(d, st.src + r * st.ld_src + i * N), sa[i]);
        odd[i] = hn::MulAdd(ar1, hn::LoadU(d, st.src + (r + 1) * st.ld_src + i * N), odd[i]);
      }
    }
    if (r < K)
      for (int i = 0; i < NV; ++i) sa[i] = hn::MulAdd(hn::Set(d, t.a[r]), hn::LoadU(d, st.src + r * st.ld_src + i * N), sa[i]);
    for (int i = 0; i < NV; ++i) sa[i] = hn::Add(sa[i], odd[i]);
  } else {
    for (int i = 0; i < NV; ++i) sa[i] = hn::LoadU(d, st.sa + i * N);
  }
  const float* from = st.src;
  int64_t ld_from = st.ld_src;
  for (int64_t j = 0; j < t.n; ++j) {
    const float *w = t.w + j * t.ld, *b = t.b + j * t.ld, *k = t.k + j * t.ld, *q = t.q + j * t.ld;
    const float* a_next = t.a + (j + 1) * t.ld;
    Vf v[NV], o[NV], next[NV], odd[NV];  // next: the even rows' part of the next sa
    for (int i = 0; i < NV; ++i) {
      v[i] = hn::LoadU(d, t.v + j * t.ld_v + c + i * N);
      o[i] = next[i] = odd[i] = hn::Zero(d);
    }
    auto row = [&](int64_t r, Vf (&sum)[NV]) {
      const Vf wr = hn::Set(d, w[r]), br = hn::Set(d, b[r]), kr = hn::Set(d, k[r]);
      const Vf qr = hn::Set(d, q[r]), ar = hn::Set(d, a_next[r]);
      // from and S may be the same rows: each element is read before it is written.
      const float* s_row = from + r * ld_from;
      float* d_row = st.S + r * st.ld_s;
      for (int i = 0; i < NV; ++i) {
        const Vf write = hn::MulAdd(br, sa[i], hn::Mul(kr, v[i]));
        const Vf s = hn::MulAdd(wr, hn::LoadU(d, s_row + i * N), write);
        hn::StoreU(s, d, d_row + i * N);
        o[i] = hn::MulAdd(qr, s, o[i]);
        sum[i] = hn::MulAdd(ar, s, sum[i]);
      }
    };
    // The next sa as the first token's: even and odd rows apart, then added (the same bits
    // whether a sequence comes in one call or token by token).
    int64_t r = 0;
    for (; r + 1 < K; r += 2) {
      row(r, next);
      row(r + 1, odd);
    }
    if (r < K) row(r, next);
    for (int i = 0; i < NV; ++i) next[i] = hn::Add(next[i], odd[i]);
    for (int i = 0; i < NV; ++i) {
      hn::StoreU(o[i], d, t.o + j * t.ld_o + c + i * N);
      sa[i] = next[i];
    }
    from = st.S;
    ld_from = st.ld_s;
  }
  for (int i = 0; i < NV; ++i) hn::StoreU(sa[i], d, st.sa + i * N);
}

// The same arithmetic one column at a time, in the order of the vector lanes (same bits).
void ScalarColumn(int64_t K, const TokenRows& t, int64_t c, const BlockState& st) {
  float sa = 0.0f;
  if (st.first) {
    float odd = 0.0f;
    for (int64_t r = 0; r < K; ++r) {
      float& sum = r % 2 ? odd : sa;
      sum = std::fma(t.a[r], st.src[r * st.ld_src], sum);
    }
    sa += odd;
  } else {
    sa = *st.sa;
  }
  const float* from = st.src;
  int64_t ld_from = st.ld_src;
  for (int64_t j = 0; j < t.n; ++j) {
    const float *w = t.w + j * t.ld, *b = t.b + j * t.ld, *k = t.k + j * t.ld, *q = t.q + j * t.ld;
    const float* a_next = t.a + (j + 1) * t.ld;
    const float v = t.v[j * t.ld_v + c];
    float o = 0.0f, next = 0.0f, odd = 0.0f;
    for (int64_t r = 0; r < K; ++r) {
      const float s = std::fma(w[r], from[r * ld_from], std::fma(b[r], sa, k[r] * v));
      st.S[r * st.ld_s] = s;
      o = std::fma(q[r], s, o);
      float& sum = r % 2 ? odd : next;
      sum = std::fma(a_next[r], s, sum);
    }
    t.o[j * t.ld_o + c] = o;
    sa = next + odd;
    from = st.S;
    ld_from = st.ld_s;
  }
  *st.sa = sa;
}

// Columns [c, end) of the tile as blocks of NV vectors and then narrower ones (so V = 64 on a
// 512-bit target is one 4-vector block), the last (end - c) % lanes columns one at a time.
template <int NV, typename Block>
HWY_INLINE void Blocks(int64_t K, const TokenRows& t, int64_t c, int64_t end, const Block& block) {
  const int64_t width = NV * static_cast<int64_t>(hn::Lanes(D()));
  for (; c + width <= end; c += width) Columns<NV>(K, t, c, block(c));
  if constexpr (NV > 1) {
    Blocks<NV / 2>(K, t, c, end, block);
  } else {
    for (; c < end; ++c) ScalarColumn(K, t, c, block(c));
  }
}

// 5 NV vectors live plus 5 broadcasts: NV = 4 on 512-bit targets (32 registers), 2 below.
constexpr int kWide = HWY_MAX_BYTES >= 64 ? 4 : 2;

int64_t BlockWidth() { return kWide * static_cast<int64_t>(hn::Lanes(D())); }

// Columns [0, cols) of one tile (t.v and t.o hold just these columns).
void RunTile(int64_t K, const TokenRows& t, int64_t cols, const TileState& ts) {
  const int64_t width = BlockWidth();
  Blocks<kWide>(K, t, 0, cols, [&](int64_t c) {
    const int64_t start = c / width * width, ld = std::min(width, cols - start);
    float* S = ts.final_rows ? ts.final_rows + c : ts.work + start * K + (c - start);
    const int64_t ld_s = ts.final_rows ? ts.V : ld;
    if (ts.first) return BlockState{ts.src + c, ts.ld_src, S, ld_s, ts.sa + c, true};
    return BlockState{S, ld_s, S, ld_s, ts.sa + c, false};
  });
}

}  // namespace HWY_NAMESPACE
}  // namespace linattn::dplr
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace linattn {
namespace dplr {
namespace {

HWY_EXPORT(BlockWidth);
HWY_EXPORT(RunTile);

constexpr int kStateSlot = 0;  // ScratchArena slot: states, tile rows

// Tile rows (all inputs of a unit's heads) kept within about this many bytes, so that they and
// the heads' states stay in L2 between tiles.
constexpr int64_t kTileBytes = 256 << 10;
constexpr int64_t kMaxTile = 64;

// The [..., cols] view of columns [c0, c0 + cols) of the last dimension of a view.
TensorView columns_of(const TensorView& t, int64_t c0, int64_t cols) {
  TensorView v = t;
  v.data = static_cast<char*>(t.data) + c0 * t.strides[3] * static_cast<int64_t>(dtype_size(t.dtype));
  v.shape[3] = cols;
  return v;
}

// Heads [h0, h0 + nh) of a [B, T, H, D] view as one [B, T, 1, nh D] view when they are
// adjacent in memory (then one token's rows are read or written as one span; a head's rows
// alone are a page or more apart in fla's layout, which the hardware prefetcher does not follow).
bool merge_heads(const TensorView& t, int64_t h0, int64_t nh, TensorView& merged) {
  if (t.strides[3] != 1 || (nh > 1 && t.strides[2] != t.shape[3])) return false;
  merged = t;
  merged.data = static_cast<char*>(t.data) + h0 * t.strides[2] * static_cast<int64_t>(dtype_size(t.dtype));
  merged.shape[2] = 1;
  merged.shape[3] = nh * t.shape[3];
  return true;
}

// dst[(r nh + i) D + d] = t[b, row0 + r, (h0 + i) / group, d] for r < rows, i < nh.
void load_heads(const TensorView& t, int64_t b, int64_t row0, int64_t rows, int64_t h0, int64_t nh,
                int64_t group, float* dst) {
  const int64_t D = t.shape[3];
  TensorView merged;
  if (group == 1 && merge_heads(t, h0, nh, merged)) return load_rows(merged, b, row0, rows, 0, dst, nh * D);
  for (int64_t i = 0; i < nh; ++i) load_rows(t, b, row0, rows, (h0 + i) / group, dst + i * D, nh * D);
}

// t[b, row0 + r, h0 + i, d] = src[(r nh + i) D + d].
void store_heads(const TensorView& t, int64_t b, int64_t row0, int64_t rows, int64_t h0, int64_t nh,
                 const float* src) {
  const int64_t D = t.shape[3];
  TensorView merged;
  if (merge_heads(t, h0, nh, merged)) return store_rows(merged, b, row0, rows, 0, src, nh * D);
  for (int64_t i = 0; i < nh; ++i) store_rows(t, b, row0, rows, h0 + i, src + i * D, nh * D);
}

// Value heads [h0, h0 + nh) of sequence n, columns [c0, c0 + cols), over all its tokens: tile
// by tile, each tile's rows loaded for all the heads at once, then each head's state pass.
void run_unit(const Problem& p, const OpArgs& args, const OpOutputs& out, int64_t n, int64_t h0,
              int64_t nh, int64_t c0, int64_t cols) {
  const int64_t K = p.K, V = p.V, g = p.group();
  const Sequence& s = p.sequences[n];
  const int64_t per_token = nh * (5 * K + 2 * cols) * static_cast<int64_t>(sizeof(float));
  const int64_t tile = std::clamp<int64_t>(kTileBytes / per_token, 1, std::min(kMaxTile, std::max<int64_t>(s.length, 1)));
  const int64_t ld = nh * K, ld_v = nh * cols;
  float* mem = ScratchArena::local().get<float>(
      kStateSlot, nh * (K * V + K * cols + cols) + (5 * tile + 1) * ld + 2 * tile * ld_v);
  float *initial = mem, *work = initial + nh * K * V, *sa = work + nh * K * cols;
  float *w = sa + nh * cols, *b = w + tile * ld, *k = b + tile * ld, *q = k + tile * ld, *a = q + tile * ld;
  float *v = a + (tile + 1) * ld, *o = v + tile * ld_v;

  std::vector<DecodeState> io(nh);
  for (int64_t i = 0; i < nh; ++i)
    io[i] = decode_state(args.initial_state, out.final_state, args.output_final_state, n, h0 + i, K, V,
                         initial + i * K * V);
  // One token goes from the initial rows straight to the final ones.
  const bool direct = s.length == 1 && io[0].final_rows;
  const TensorView vs = columns_of(args.v, c0, cols), os = columns_of(out.o, c0, cols);
  const float scale = static_cast<float>(p.scale);
  for (int64_t t0 = 0; t0 < s.length; t0 += tile) {
    const int64_t rows = std::min(tile, s.length - t0), row0 = s.start + t0;
    load_heads(args.gk, s.batch, row0, rows, h0, nh, 1, w);
    kernels::exp_inplace(w, rows * ld);
    load_heads(args.b, s.batch, row0, rows, h0, nh, g, b);
    load_heads(args.k, s.batch, row0, rows, h0, nh, g, k);
    load_heads(args.q, s.batch, row0, rows, h0, nh, g, q);
    for (int64_t i = 0; i < rows * ld; ++i) q[i] *= scale;
    const bool more = t0 + rows < s.length;  // then row `rows` of a is the next tile's first
    load_heads(args.a, s.batch, row0, rows + (more ? 1 : 0), h0, nh, g, a);
    if (!more) std::fill(a + rows * ld, a + (rows + 1) * ld, 0.0f);
    load_heads(vs, s.batch, row0, rows, h0, nh, 1, v);
    for (int64_t i = 0; i < nh; ++i) {
      const int64_t x = i * K, y = i * cols;
      const TokenRows tr{rows, w + x, b + x, k + x, q + x, a + x, ld, v + y, ld_v, o + y, ld_v};
      const TileState ts{io[i].src + c0, io[i].ld_src, work + i * K * cols,
                         direct ? io[i].final_rows + c0 : nullptr, V, sa + y, t0 == 0};
      HWY_DYNAMIC_DISPATCH(RunTile)(K, tr, cols, ts);
    }
    store_heads(os, s.batch, row0, rows, h0, nh, o);
  }
  if (!args.output_final_state || direct) return;
  // The final states from the work blocks (or the initial rows for an empty sequence).
  const int64_t width = HWY_DYNAMIC_DISPATCH(BlockWidth)();
  for (int64_t i = 0; i < nh; ++i) {
    float* rows_out = initial + i * K * V;  // (no longer read once the work blocks exist)
    const float* blocks = work + i * K * cols;
    for (int64_t r = 0; r < K; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t start = c / width * width, ld_blk = std::min(width, cols - start);
        rows_out[r * cols + c] = s.length ? blocks[start * K + r * ld_blk + (c - start)]
                                          : io[i].src[r * io[i].ld_src + c0 + c];
      }
    store_state(columns_of(out.final_state, c0, cols), n, h0 + i, K, cols, rows_out);
  }
}

}  // namespace
}  // namespace dplr

void dplr_recurrent_forward(const Problem& p, const OpArgs& args, const OpOutputs& out) {
  // Units of (sequence, range of value heads, range of columns): whole sequences' heads when
  // there are as many sequences as threads, else the heads split, and the columns (in whole
  // blocks) when there are fewer heads in all than threads. Columns and heads do not interact,
  // so the split changes no bit.
  const int64_t threads = max_threads(), N = p.N(), HV = p.HV;
  const int64_t head_ranges = std::clamp<int64_t>((threads + N - 1) / N, 1, HV);
  const int64_t heads = (HV + head_ranges - 1) / head_ranges;
  const int64_t width = HWY_DYNAMIC_DISPATCH(dplr::BlockWidth)(), blocks = (p.V + width - 1) / width;
  const int64_t col_ranges = std::clamp<int64_t>((threads + N * HV - 1) / (N * HV), 1, blocks);
  const int64_t cols = (blocks + col_ranges - 1) / col_ranges * width;
  parallel_for(N * head_ranges * col_ranges, [&](int64_t unit) {
    const int64_t n = unit / (head_ranges * col_ranges), h0 = unit / col_ranges % head_ranges * heads;
    const int64_t c0 = unit % col_ranges * cols;
    if (h0 < HV && c0 < p.V) dplr::run_unit(p, args, out, n, h0, std::min(heads, HV - h0), c0, std::min(cols, p.V - c0));
  });
}

}  // namespace linattn
#endif  // HWY_ONCE
