// Shared facts of one LLA call (algorithms.md §4.9), validated once by api.cpp: sizes, the
// sequences, the regulariser of each query, and the forms' entry points.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "core/dtype.hpp"
#include "linattn/lla.hpp"
#include "ops/common/rows.hpp"

namespace linattn::lla {

// One independent sequence: batch row `batch`; its keys are rows [key0, key0 + keys) and its
// queries rows [query0, query0 + queries) of q, the last `queries` positions of the keys.
struct Sequence {
  int64_t batch, key0, keys, query0, queries;
  int64_t offset() const { return keys - queries; }  // query r sees keys [0, offset() + r]
};

struct Problem {
  const Args* a;
  int64_t B, Tq, T, H, K, V;
  double scale;
  std::vector<Sequence> sequences;

  int64_t N() const { return static_cast<int64_t>(sequences.size()); }
  // lambda_i of query row `row` (a q row) of batch `batch`, head `h`.
  double lambda(int64_t batch, int64_t row, int64_t h) const {
    const TensorView& t = a->ridge_lambda_per_token;
    return t.given() ? load_as_double(t.data, t.dtype, row_offset(t, batch, row, h)) : a->ridge_lambda;
  }
};

Problem make_problem(const Args& args);

// Adds n to a counter of Args::stats, if given (from any thread).
inline void count(const Problem& p, int64_t Stats::*counter, int64_t n) {
  if (p.a->stats) std::atomic_ref<int64_t>(p.a->stats->*counter).fetch_add(n);
}

// delta + eps sign(delta), sign(0) = +1 (the authors' kernels).
inline double shifted_delta(double delta, double eps) { return delta + (delta >= 0 ? eps : -eps); }

void reference_forward(const Problem& p, const TensorView& o);
void reference_backward(const Problem& p, const TensorView& d_o, const Grads& grads);
void chunk_forward(const Problem& p, const TensorView& o);
void chunk_backward(const Problem& p, const TensorView& d_o, const Grads& grads);
void recurrent_forward(const Problem& p, const TensorView& o);

}  // namespace linattn::lla
