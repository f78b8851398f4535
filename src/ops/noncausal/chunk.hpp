// Shared pieces of the fast form of noncausal_linear_attn (algorithms.md §4.1 without the causal
// mask). The op has no recurrence, so its "chunk" form is two GEMM passes per (sequence, value
// head): KV = K^T [V | 1] over the whole sequence, then O = (scale Q) KV. With normalize the
// value rows get a column of ones (§4.1b): KV's last column is z = sum_s k_s and O's is the
// denominator scale q . z. Rows move through fp32 buffers in blocks of kBlock. Sums over blocks
// (KV, dKV) are formed per segment of consecutive blocks, the segments in parallel, and reduced
// in segment order; the segments depend only on the sequence length, so the result is bitwise
// identical for every thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/parallel.hpp"
#include "ops/common/problem.hpp"

namespace linattn::noncausal {

inline constexpr int64_t kBlock = 64;
inline constexpr int64_t kMaxSegments = 16;  // partial sums of KV / dKV kept per item
inline constexpr double kNormalizeEps = 1e-10;  // as linear_attn's normalize (fla)

// A (sequence, q/k head) and its group of value heads hq * G .. hq * G + G - 1.
struct Item {
  Item(const Problem& problem, const OpArgs& args, int64_t item)
      : p(problem), a(args), s(problem.sequences[item / problem.H]), hq(item % problem.H),
        W(problem.V + (args.normalize ? 1 : 0)), n_blocks((s.length + kBlock - 1) / kBlock),
        blocks_per_segment((n_blocks + kMaxSegments - 1) / kMaxSegments),
        n_segments((n_blocks + blocks_per_segment - 1) / blocks_per_segment) {}
  const Problem& p;
  const OpArgs& a;
  const Sequence& s;
  int64_t hq;
  int64_t W;  // columns of [V | 1]: V + 1 with normalize, else V
  int64_t n_blocks, blocks_per_segment, n_segments;

  int64_t rows(int64_t block) const { return std::min(kBlock, s.length - block * kBlock); }
  int64_t row0(int64_t block) const { return s.start + block * kBlock; }
  int64_t hv(int64_t j) const { return hq * p.group() + j; }
};

// body(item) for every (sequence, q/k head): the items in parallel when there are enough for
// every thread, else one after the other with their block loops in parallel (parallel_for
// runs nested loops serially, so the arithmetic is the same either way).
template <typename Body>
void for_each_item(const Problem& p, const OpArgs& a, Body&& body) {
  for_each_work_item(p.N() * p.H, [&](int64_t i) { body(Item(p, a, i)); });
}

// sum over blocks of body(block, acc), where body adds its block's terms (size floats) to acc:
// each segment's blocks accumulate in order into the segment's partial, and the partials are
// added in segment order.
template <typename Body>
std::vector<float> segment_sum(const Item& it, int64_t size, Body&& body) {
  std::vector<float> partial(it.n_segments * size, 0.0f);
  parallel_for(it.n_segments, [&](int64_t seg) {
    const int64_t end = std::min(it.n_blocks, (seg + 1) * it.blocks_per_segment);
    for (int64_t b = seg * it.blocks_per_segment; b < end; ++b) body(b, &partial[seg * size]);
  });
  for (int64_t seg = 1; seg < it.n_segments; ++seg)
    for (int64_t i = 0; i < size; ++i) partial[i] += partial[seg * size + i];
  partial.resize(size);
  return partial;
}

// scale * q rows of a block -> dst [rows, K].
void load_scaled_q(const Item& it, int64_t block, float* dst);
// [v | 1] rows of a block of value head hv -> dst [rows, W].
void load_values(const Item& it, int64_t block, int64_t hv, float* dst);
// KV = K^T [V | 1] of every value head of the group: [G, K, W].
std::vector<float> kv_states(const Item& it);

// Scratch slots (core/scratch.hpp).
enum Slot : int { kSlotQ, kSlotK, kSlotV, kSlotO, kSlotDO, kSlotDQ, kSlotDK };

}  // namespace linattn::noncausal
