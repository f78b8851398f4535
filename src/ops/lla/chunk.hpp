// The query tile of the blockwise LLA forms (algorithms.md §4.9b): up to kQueryTile queries of
// one (sequence, head) and every key they see, widened to fp32, with the per-pair weights
// W = exp(scale Q K^T - m) kept for the whole key range (rows x keys floats, never T x T), so
// that the CG iterations and the later passes re-read them instead of recomputing exponentials.
// Products run over blocks of kKeyBlock keys (L2-sized operands) with the GEMMs of
// kernels/gemm.hpp. The chunk forms use tiles of kQueryTile rows, the decode form tiles of one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/parallel.hpp"
#include "ops/lla/lla.hpp"

namespace linattn::lla {

inline constexpr int64_t kQueryTile = 64;
inline constexpr int64_t kKeyBlock = 256;
inline constexpr int kFirstCallerSlot = 11;
inline constexpr int64_t kDirectMaxK = 0;  // Solver::automatic: direct up to this K (measured)  // scratch slots below belong to the tile

inline float dot(int64_t n, const float* x, const float* y) {
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

class Tile {
 public:
  // Queries [query0 + r0, + rows) of sequence s, head h; loads them and their keys (and values
  // if with_values), then pass 1: W, omega, mu~ and mu = mu~ - omega q (and the Jacobi diagonal).
  Tile(const Problem& p, const Sequence& s, int64_t h, int64_t r0, int64_t rows, bool with_values);

  // CG for Sigma_i x_i = rhs_i, every row of the tile in lock-step, each stopping on its own
  // test ||r||^2 <= rtol max(atol, ||r_0||^2) (preconditioned: r.z); x starts at 0. Counts
  // its work in Args::stats.
  void solve(const float* rhs, float* x) const;

  // out (rows x n) = (X K^T)[:, keys] - (X.q) for each row: x.z_ij over a key block.
  void project(const float* X, int64_t key0, int64_t n, float* out) const;

  // The (rows x n) block of W that starts at key key0 (leading dimension keys()).
  const float* weights(int64_t key0) const { return W_ + key0; }
  int64_t keys() const { return nk_; }
  int64_t rows() const { return rows_; }
  int64_t row(int64_t r) const { return s_.query0 + r0_ + r; }  // the q row of tile row r

  const Problem& p;
  const float *Q, *Kmat, *Vmat;   // rows x K, keys x K, keys x V (null without values)
  const float *omega, *mu, *lambda, *shift;  // per row (shift: m_i, the row max); mu rows x K
  int64_t pairs() const { return rows_ * nk_; }

 private:
  void apply(const float* P, float* SP) const;  // SP = Sigma_i p_i for each row
  void factor() const;                           // the direct solver's Cholesky factors

  const Sequence& s_;
  int64_t r0_, rows_, nk_;
  float *W_, *Kt_, *diag_;
  bool direct_;
  mutable float* factors_ = nullptr;  // rows x K x K, made by the first direct solve
};

// The forward over query tiles of tile_rows rows (chunk: kQueryTile, recurrent: 1).
void tile_forward(const Problem& p, int64_t tile_rows, const TensorView& o);

enum class Along { queries, keys };

// Runs body(sequence, head, start, size) for every block of `block` queries (or keys) of every
// (sequence, head), in parallel, the costliest first (query blocks late in a sequence see the
// most keys, key blocks early in it the most queries). Each block owns its rows of the outputs,
// so no result depends on the thread that ran it.
template <typename Body>
void for_each_block(const Problem& p, Along along, int64_t block, Body&& body) {
  struct Item {
    int64_t seq, h, start, cost;
  };
  std::vector<Item> items;
  for (int64_t n = 0; n < p.N(); ++n) {
    const Sequence& s = p.sequences[n];
    const int64_t count = along == Along::queries ? s.queries : s.keys;
    for (int64_t start = 0; start < count; start += block) {
      const int64_t cost = along == Along::queries ? s.offset() + start : s.keys - start;
      for (int64_t h = 0; h < p.H; ++h) items.push_back({n, h, start, cost});
    }
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  parallel_for<Schedule::dynamic>(static_cast<int64_t>(items.size()), [&](int64_t i) {
    const Item& it = items[i];
    const Sequence& s = p.sequences[it.seq];
    const int64_t count = along == Along::queries ? s.queries : s.keys;
    body(s, it.h, it.start, std::min(block, count - it.start));
  });
}

}  // namespace linattn::lla
