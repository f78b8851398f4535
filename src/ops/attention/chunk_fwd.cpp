// Tiled forward of softmax attention (algorithms.md §4.11 b): one work item per (query tile,
// head), each streaming the key tiles it reads through an online softmax (chunk.cpp: attend), so
// no T x T matrix exists. The item owns its rows of o and lse: the result does not depend on the
// thread count. float32 / bfloat16 storage, fp32 arithmetic.
#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "ops/attention/chunk.hpp"
#include "ops/common/rows.hpp"

namespace linattn::attention {

void chunk_forward(const Problem& p, const TensorView& q, const TensorView& k,
                   const TensorView& v, const TensorView& o, const TensorView& lse) {
  const std::vector<Tile> query_tiles = tiles(p, kTileRows);
  const int64_t n_items = static_cast<int64_t>(query_tiles.size()) * p.H;
  // Last tiles first: they read the most key tiles, and the cheap ones fill in behind them.
  parallel_for<Schedule::dynamic>(n_items, [&](int64_t item) {
    const Tile& t = query_tiles[query_tiles.size() - 1 - item / p.H];
    const Span& s = p.spans[t.span];
    const int64_t h = item % p.H;
    ScratchArena& arena = ScratchArena::local();
    float* Q = arena.get<float>(kSlotQ, t.rows * p.K);
    float* O = arena.get<float>(kSlotO, t.rows * p.V);
    float* L = arena.get<float>(kSlotLse, t.rows);
    load_scaled_rows(q, s.qb, s.q0 + t.r0, t.rows, h, static_cast<float>(p.scale), Q);
    attend(p, s, h / p.group(), k, v, Q, t.rows, positions(s.pos0 + t.r0, t.rows), O, L);
    store_rows(o, s.qb, s.q0 + t.r0, t.rows, h, O, p.V);
    if (lse.given()) store_lse(lse, s.qb, s.q0 + t.r0, t.rows, h, L);
  });
}

}  // namespace linattn::attention
