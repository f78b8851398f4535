// Decode step of softmax attention against a KV cache (algorithms.md §4.11 a): the newest Tq
// tokens of each sequence attend to its cache. One work item per (sequence, kv head) stacks the
// queries of every query head of its group (GQA) and every new token into one tile, so each cache
// row is read once per kv head rather than once per query head; the tile then runs the online
// softmax of the forward (chunk.cpp: attend) with each row's own position.
#include <algorithm>

#include "core/parallel.hpp"
#include "core/scratch.hpp"
#include "ops/attention/chunk.hpp"
#include "ops/common/rows.hpp"

namespace linattn::attention {

void recurrent_decode(const Problem& p, const TensorView& q, const TensorView& k_cache,
                      const TensorView& v_cache, const TensorView& o) {
  const int64_t n_items = static_cast<int64_t>(p.spans.size()) * p.Hkv;
  parallel_for<Schedule::dynamic>(n_items, [&](int64_t item) {
    const Span& s = p.spans[item / p.Hkv];
    const int64_t hkv = item % p.Hkv, stacked = p.group() * s.rows;
    ScratchArena& arena = ScratchArena::local();
    float* Q = arena.get<float>(kSlotQ, kTileRows * p.K);
    float* O = arena.get<float>(kSlotO, kTileRows * p.V);
    float* lse = arena.get<float>(kSlotLse, kTileRows);
    int64_t* pos = arena.get<int64_t>(kSlotPos, kTileRows);
    // Stacked row x is token x % Tq of query head hkv * group + x / Tq.
    const auto head = [&](int64_t x) { return hkv * p.group() + x / s.rows; };
    for (int64_t x0 = 0; x0 < stacked; x0 += kTileRows) {
      const int64_t rows = std::min(kTileRows, stacked - x0);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = (x0 + r) % s.rows;
        load_scaled_rows(q, s.qb, s.q0 + t, 1, head(x0 + r), static_cast<float>(p.scale), Q + r * p.K);
        pos[r] = s.pos0 + t;
      }
      attend(p, s, hkv, k_cache, v_cache, Q, rows, pos, O, lse);
      for (int64_t r = 0; r < rows; ++r)
        store_rows(o, s.qb, s.q0 + (x0 + r) % s.rows, 1, head(x0 + r), O + r * p.V, p.V);
    }
  });
}

}  // namespace linattn::attention
