// Shared facts of one LLA call (algorithms.md §4.9), validated once by api.cpp: sizes, the
// sequences, the regulariser of each query, and the forms' entry points.
#pragma once

#include <atomic>
#include <cmath>
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

// In place: the lower triangle of A (n x n, SPD) becomes L with A = L L^T (the reference in
// double, the direct solver of the fast forms in float).
template <typename Real>
void cholesky(int64_t n, Real* A) {
  for (int64_t j = 0; j < n; ++j) {
    Real d = A[j * n + j];
    for (int64_t p = 0; p < j; ++p) d -= A[j * n + p] * A[j * n + p];
    A[j * n + j] = std::sqrt(d);
    for (int64_t i = j + 1; i < n; ++i) {
      Real s = A[i * n + j];
      for (int64_t p = 0; p < j; ++p) s -= A[i * n + p] * A[j * n + p];
      A[i * n + j] = s / A[j * n + j];
    }
  }
}
// x = (L L^T)^-1 b.
template <typename Real>
void cholesky_solve(int64_t n, const Real* L, const Real* b, Real* x) {
  for (int64_t i = 0; i < n; ++i) {
    Real s = b[i];
    for (int64_t p = 0; p < i; ++p) s -= L[i * n + p] * x[p];
    x[i] = s / L[i * n + i];
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    Real s = x[i];
    for (int64_t p = i + 1; p < n; ++p) s -= L[p * n + i] * x[p];
    x[i] = s / L[i * n + i];
  }
}

void reference_forward(const Problem& p, const TensorView& o);
void reference_backward(const Problem& p, const TensorView& d_o, const Grads& grads);
void chunk_forward(const Problem& p, const TensorView& o);
void chunk_backward(const Problem& p, const TensorView& d_o, const Grads& grads);
void recurrent_forward(const Problem& p, const TensorView& o);

}  // namespace linattn::lla
