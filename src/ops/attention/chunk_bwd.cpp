// Tiled backward of softmax attention (algorithms.md §4.11 c) from the forward's o and lse. Every
// (query tile i, key tile j) pair recomputes P = e^{scale Q K^T - lse} and
// dS = P ⊙ (dO V^T - D), D = rowsum(dO ⊙ O) (chunk.cpp: tile_gradients), then
//   dV_j += P^T dO_i,  dK_j += dS^T (scale Q_i),  dQ_i += scale dS K_j.
// Every work item owns what it writes (no atomics), in one of two partitions:
//   fused, with at least as many (sequence, kv head) items as threads: one sweep per item over
//     (query head of the group, query tile, key tile), 5 tile products per pair;
//   two passes otherwise (few sequences and kv heads: more items than that are needed to use the
//     threads): A. per (key tile, kv head) dK_j, dV_j; B. per (query tile, head) dQ_i, which
//     recomputes P and dS: 7 products per pair.
// Both visit the same pairs with the same tile shapes and add into each gradient in the same
// order (dK_j, dV_j over head then query tile, dQ_i over key tiles), so they give the same bits
// and the thread count changes none.
#include <algorithm>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "kernels/gemm.hpp"
#include "ops/attention/chunk.hpp"
#include "ops/common/rows.hpp"

namespace linattn::attention {
namespace {

using kernels::Accumulate;

struct Inputs {
  const TensorView &q, &k, &v, &o, &lse, &d_o;
};

// What the backward needs of query rows [r0, r0 + rows) of head h: Q pre-scaled, dO, lse and D.
struct QueryRows {
  float *Q, *dO, *lse, *D;
  const int64_t* pos;
};
QueryRows load_query_rows(const Problem& p, const Inputs& in, const Span& s, int64_t r0,
                          int64_t rows, int64_t h) {
  ScratchArena& arena = ScratchArena::local();
  QueryRows x{arena.get<float>(kSlotQ, rows * p.K), arena.get<float>(kSlotDO, rows * p.V),
              arena.get<float>(kSlotStats, 2 * rows), nullptr, positions(s.pos0 + r0, rows)};
  x.D = x.lse + rows;
  float* O = arena.get<float>(kSlotO, rows * p.V);
  load_scaled_rows(in.q, s.qb, s.q0 + r0, rows, h, static_cast<float>(p.scale), x.Q);
  load_rows(in.d_o, s.qb, s.q0 + r0, rows, h, x.dO, p.V);
  load_rows(in.o, s.qb, s.q0 + r0, rows, h, O, p.V);
  load_lse(in.lse, s.qb, s.q0 + r0, rows, h, x.lse);
  for (int64_t r = 0; r < rows; ++r) {
    float d = 0.0f;
    for (int64_t c = 0; c < p.V; ++c) d += x.dO[r * p.V + c] * O[r * p.V + c];
    x.D[r] = d;
  }
  return x;
}

// Key rows [j0, j0 + n) of kv head hkv, as rows (Kj, contiguous: rows of the caller's tensors
// are H*K apart, which maps them onto a few cache sets) and transposed (Kt, Vt: n columns).
struct KeyTile {
  float *Kj, *Kt, *Vt;
};
KeyTile load_key_tile(const Problem& p, const Inputs& in, const Span& s, int64_t j0, int64_t n,
                      int64_t hkv) {
  ScratchArena& arena = ScratchArena::local();
  const KeyTile t{arena.get<float>(kSlotK, n * p.K), arena.get<float>(kSlotKt, p.K * n),
                  arena.get<float>(kSlotVt, p.V * n)};
  float* Vj = arena.get<float>(kSlotV, n * p.V);
  load_rows(in.k, s.kb, s.kv0 + j0, n, hkv, t.Kj, p.K);
  load_rows(in.v, s.kb, s.kv0 + j0, n, hkv, Vj, p.V);
  kernels::transpose(n, p.K, t.Kj, p.K, t.Kt, n);
  kernels::transpose(n, p.V, Vj, p.V, t.Vt, n);
  return t;
}

// The first key tile read by the query tile starting at row i0 of a training span (pos0 = 0).
int64_t first_key_tile(const Problem& p, const Span& s, int64_t i0) {
  return p.first_key(s.pos0 + i0) / kTileKeys * kTileKeys;
}

// Pass A: dK, dV of one key tile of one kv head.
void key_tile_grads(const Problem& p, const Inputs& in, const Tile& t, int64_t hkv,
                    const TensorView& dk, const TensorView& dv) {
  const Span& s = p.spans[t.span];
  const int64_t j0 = t.r0, n = t.rows, K = p.K, V = p.V;
  ScratchArena& arena = ScratchArena::local();
  float* P = arena.get<float>(kSlotS, kTileRows * n);
  float* dS = arena.get<float>(kSlotDS, kTileRows * n);
  float* dK = arena.get<float>(kSlotDK, n * K);
  float* dV = arena.get<float>(kSlotDV, n * V);
  std::fill(dK, dK + n * K, 0.0f);
  std::fill(dV, dV + n * V, 0.0f);
  const KeyTile kt = load_key_tile(p, in, s, j0, n, hkv);
  // Queries at positions [j0, last] read some key of the tile (training spans: pos0 = 0).
  const int64_t last = p.window > 0 ? std::min(s.rows - 1, j0 + n - 1 + p.window - 1) : s.rows - 1;
  for (int64_t h = hkv * p.group(); h < (hkv + 1) * p.group(); ++h)
    for (int64_t i0 = j0 / kTileRows * kTileRows; i0 <= last; i0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, s.rows - i0);
      const QueryRows x = load_query_rows(p, in, s, i0, rows, h);
      tile_gradients(p, x.pos, rows, j0, n, x.Q, x.dO, x.lse, x.D, kt.Kt, kt.Vt, P, dS);
      kernels::gemm_tn(n, V, rows, P, n, x.dO, V, dV, V, Accumulate::yes);
      kernels::gemm_tn(n, K, rows, dS, n, x.Q, K, dK, K, Accumulate::yes);
    }
  if (dk.given()) store_rows(dk, s.kb, s.kv0 + j0, n, hkv, dK, K);
  if (dv.given()) store_rows(dv, s.kb, s.kv0 + j0, n, hkv, dV, V);
}

// Pass B: dQ of one query tile of one head.
void query_tile_grads(const Problem& p, const Inputs& in, const Tile& t, int64_t h,
                      const TensorView& dq) {
  const Span& s = p.spans[t.span];
  const int64_t rows = t.rows, K = p.K;
  ScratchArena& arena = ScratchArena::local();
  float* P = arena.get<float>(kSlotS, rows * kTileKeys);
  float* dS = arena.get<float>(kSlotDS, rows * kTileKeys);
  float* dQ = arena.get<float>(kSlotDQ, rows * K);
  std::fill(dQ, dQ + rows * K, 0.0f);
  const QueryRows x = load_query_rows(p, in, s, t.r0, rows, h);
  for (int64_t j0 = first_key_tile(p, s, t.r0); j0 <= t.r0 + rows - 1; j0 += kTileKeys) {
    const int64_t n = std::min(kTileKeys, s.rows - j0);
    const KeyTile kt = load_key_tile(p, in, s, j0, n, h / p.group());
    tile_gradients(p, x.pos, rows, j0, n, x.Q, x.dO, x.lse, x.D, kt.Kt, kt.Vt, P, dS);
    kernels::gemm_nn(rows, K, n, dS, n, kt.Kj, K, dQ, K, Accumulate::yes);
  }
  for (int64_t i = 0; i < rows * K; ++i) dQ[i] *= static_cast<float>(p.scale);
  store_rows(dq, s.qb, s.q0 + t.r0, rows, h, dQ, K);
}

// Fused: dK, dV of kv head hkv and dQ of its query heads over one span.
void fused_grads(const Problem& p, const Inputs& in, const Span& s, int64_t hkv,
                 const TensorView& dq, const TensorView& dk, const TensorView& dv) {
  const int64_t K = p.K, V = p.V;
  ScratchArena& arena = ScratchArena::local();
  float* P = arena.get<float>(kSlotS, kTileRows * kTileKeys);
  float* dS = arena.get<float>(kSlotDS, kTileRows * kTileKeys);
  float* dQ = arena.get<float>(kSlotDQ, kTileRows * K);
  float* dK = arena.get<float>(kSlotDK, s.rows * K);
  float* dV = arena.get<float>(kSlotDV, s.rows * V);
  std::fill(dK, dK + s.rows * K, 0.0f);
  std::fill(dV, dV + s.rows * V, 0.0f);
  for (int64_t h = hkv * p.group(); h < (hkv + 1) * p.group(); ++h)
    for (int64_t i0 = 0; i0 < s.rows; i0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, s.rows - i0);
      const QueryRows x = load_query_rows(p, in, s, i0, rows, h);
      std::fill(dQ, dQ + rows * K, 0.0f);
      for (int64_t j0 = first_key_tile(p, s, i0); j0 <= i0 + rows - 1; j0 += kTileKeys) {
        const int64_t n = std::min(kTileKeys, s.rows - j0);
        const KeyTile kt = load_key_tile(p, in, s, j0, n, hkv);
        tile_gradients(p, x.pos, rows, j0, n, x.Q, x.dO, x.lse, x.D, kt.Kt, kt.Vt, P, dS);
        kernels::gemm_tn(n, V, rows, P, n, x.dO, V, dV + j0 * V, V, Accumulate::yes);
        kernels::gemm_tn(n, K, rows, dS, n, x.Q, K, dK + j0 * K, K, Accumulate::yes);
        kernels::gemm_nn(rows, K, n, dS, n, kt.Kj, K, dQ, K, Accumulate::yes);
      }
      for (int64_t e = 0; e < rows * K; ++e) dQ[e] *= static_cast<float>(p.scale);
      if (dq.given()) store_rows(dq, s.qb, s.q0 + i0, rows, h, dQ, K);
    }
  if (dk.given()) store_rows(dk, s.kb, s.kv0, s.rows, hkv, dK, K);
  if (dv.given()) store_rows(dv, s.kb, s.kv0, s.rows, hkv, dV, V);
}

}  // namespace

void chunk_backward(const Problem& p, const TensorView& q, const TensorView& k,
                    const TensorView& v, const TensorView& o, const TensorView& lse,
                    const TensorView& d_o, const TensorView& dq, const TensorView& dk,
                    const TensorView& dv) {
  const Inputs in{q, k, v, o, lse, d_o};
  const int64_t n_items = static_cast<int64_t>(p.spans.size()) * p.Hkv;
  if (items_cover_threads(n_items)) {
    parallel_for<Schedule::dynamic>(n_items, [&](int64_t item) {
      fused_grads(p, in, p.spans[item / p.Hkv], item % p.Hkv, dq, dk, dv);
    });
    return;
  }
  if (dk.given() || dv.given()) {
    const std::vector<Tile> key_tiles = tiles(p, kTileKeys);
    const int64_t n = static_cast<int64_t>(key_tiles.size()) * p.Hkv;
    parallel_for<Schedule::dynamic>(n, [&](int64_t item) {
      key_tile_grads(p, in, key_tiles[item / p.Hkv], item % p.Hkv, dk, dv);
    });
  }
  if (dq.given()) {
    const std::vector<Tile> query_tiles = tiles(p, kTileRows);
    const int64_t n = static_cast<int64_t>(query_tiles.size()) * p.H;
    parallel_for<Schedule::dynamic>(n, [&](int64_t item) {  // most expensive (last) tiles first
      query_tile_grads(p, in, query_tiles[query_tiles.size() - 1 - item / p.H], item % p.H, dq);
    });
  }
}

}  // namespace linattn::attention
